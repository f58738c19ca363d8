"""Smoke test of experiments/benchmarks.py: it runs, writes its report and never overwrites one.

No timing is asserted here: speed claims come from the benchmark's own report, never from a
timed unit test on a shared machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

# Slow (runs the benchmark scripts end to end);
# CI runs them, `pytest -m 'not slow'` skips them.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "experiments" / "benchmarks.py"


@pytest.fixture(scope="module")
def benchmarks() -> ModuleType:
  spec = importlib.util.spec_from_file_location("jdrop_experiments_benchmarks", SCRIPT)
  assert spec is not None and spec.loader is not None
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # dataclasses look their module up here
  with pytest.MonkeyPatch.context() as patch:
    patch.syspath_prepend(str(ROOT))  # it imports experiments._timing, as with PYTHONPATH=.
    spec.loader.exec_module(module)
  return module


def test_quick_run_writes_report_then_refuses_to_overwrite(
  benchmarks: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
  out = tmp_path / "results" / "bench.md"  # the directory does not exist yet
  json_path = tmp_path / "bench.json"
  assert benchmarks.main(["--quick", "--out", str(out), "--json", str(json_path)]) == 0
  text = out.read_text()
  assert text in capsys.readouterr().out  # the table is printed too

  data = json.loads(json_path.read_text())
  contenders = [
    benchmarks.JDROP,
    benchmarks.FAST,
    benchmarks.UNFUSED,
    benchmarks.FLAX,
    benchmarks.BERNOULLI,
    benchmarks.FLOOR,
  ]
  if data["meta"]["torch_skipped"] is None:
    contenders.append(benchmarks.TORCH)
  for exponent in benchmarks.QUICK_SIZES:
    for dtype in ("float32", "bfloat16"):
      assert f"| 2^{exponent} | {dtype} | " in text.split("## Dropout, every contender")[0]
      for name in contenders:
        assert f"| 2^{exponent} | {dtype} | {name} | " in text, (exponent, dtype, name)
  assert len(data["dropout"]) == len(benchmarks.QUICK_SIZES) * 2 * len(contenders)

  count, length = benchmarks.QUICK_MASKS_SHAPE
  assert f"| {count} x {length} | " in text
  for name in benchmarks.DROPOUT_FNS:
    assert f"| {name} | 2^{benchmarks.MEMORY_SIZE} | " in text
  for name in (benchmarks.JDROP, benchmarks.BERNOULLI):
    assert any(row["contender"] == name for row in data["compile"])
  assert "## Goals" in text
  assert "python experiments/benchmarks.py --quick --out " in text

  assert benchmarks.main(["--quick", "--out", str(out)]) != 0
  err = capsys.readouterr().err
  assert "refusing to overwrite" in err and str(out) in err and "--force" in err
  assert out.read_text() == text


def test_existing_json_is_not_overwritten_either(
  benchmarks: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
  json_path = tmp_path / "bench.json"
  json_path.write_text("{}")
  assert benchmarks.main(["--quick", "--out", str(tmp_path / "b.md"), "--json", str(json_path)])
  assert "refusing to overwrite" in capsys.readouterr().err
  assert json_path.read_text() == "{}"
  assert not (tmp_path / "b.md").exists()


@pytest.mark.parametrize("argv", [["--sizes", "0"], ["--sizes", "40"], ["--rounds", "0"]])
def test_bad_arguments_exit_with_usage_error(benchmarks: ModuleType, argv: list[str]) -> None:
  with pytest.raises(SystemExit) as info:
    benchmarks.main(argv)
  assert info.value.code == 2
