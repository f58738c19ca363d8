"""The report's orchestration: refusing to overwrite, atomic writes, one-line errors.

The studies themselves are tested in their own files; here fake studies stand in, so
these tests take milliseconds.
"""

import json
import types

import pytest

from jdrop._src import cli
from jdrop._src import report


def fake_study(name, *, fail=False):
  def run(config, *, progress=None):
    if fail:
      raise RuntimeError(f"{name} failed")
    if progress is not None:
      progress(1, 1, name)
    return {"config": {"size": config}, "value": 1.5}

  def figures(results, out_dir):
    (out_dir / f"{name}.png").write_bytes(b"\x89PNG fake")
    return [f"{name}.png"]

  def section(results, figures):
    return f"## {name}\n\n![{name}]({figures[0]})\n"

  return types.SimpleNamespace(DEFAULT=1, FULL=2, run=run, figures=figures, section=section)


@pytest.fixture
def fakes(monkeypatch):
  studies = {name: fake_study(name) for name in report.STUDIES}
  monkeypatch.setattr(report, "_module", lambda name: studies[name])
  return studies


def test_writes_report_figures_and_results(fakes, tmp_path):
  out = tmp_path / "out"
  path = report.build(out, studies=("variance", "selu_depth"), argv=["report", "--out", "x"])
  assert path == out / "REPORT.md"
  text = path.read_text()
  assert text.startswith("# Dropout before or after the activation?")
  assert "## variance" in text and "## selu_depth" in text and "## Reproducibility" in text
  assert (out / "variance.png").exists() and (out / "selu_depth.png").exists()
  assert json.loads((out / "results" / "variance.json").read_text())["value"] == 1.5
  meta = json.loads((out / "results" / "meta.json").read_text())
  assert meta["command"] == "python -m jdrop report --out x" and "jax" in meta["versions"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind


def test_refuses_a_non_empty_directory_without_force(fakes, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "mine.txt").write_text("keep me")
  with pytest.raises(ValueError, match="not empty; pass --force"):
    report.build(out, studies=("variance",))
  assert (out / "mine.txt").read_text() == "keep me"
  report.build(out, studies=("variance",), force=True)
  assert not (out / "mine.txt").exists() and (out / "REPORT.md").exists()


def test_an_empty_directory_is_fine(fakes, tmp_path):
  (tmp_path / "out").mkdir()
  assert report.build(tmp_path / "out", studies=("variance",)).exists()


def test_a_failing_study_leaves_nothing_half_written(fakes, tmp_path, monkeypatch):
  out = tmp_path / "out"
  out.mkdir()
  (out / "old.txt").write_text("previous report")
  fakes["selu_depth"] = fake_study("selu_depth", fail=True)
  with pytest.raises(RuntimeError, match="selu_depth failed"):
    report.build(out, studies=("variance", "selu_depth"), force=True)
  assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize(
  ("setup", "needle"),
  [
    (lambda tmp: tmp / "a-file", "is not a directory"),
    (lambda tmp: tmp / "missing" / "out", "does not exist"),
  ],
)
def test_bad_output_locations(fakes, tmp_path, setup, needle):
  (tmp_path / "a-file").write_text("x")
  with pytest.raises(ValueError, match=needle):
    report.build(setup(tmp_path), studies=("variance",))


def test_cli_errors_are_one_line(fakes, tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "x").write_text("x")
  assert cli.main(["report", "--out", str(out)]) == 2
  assert cli.main(["report", "--out", str(tmp_path / "new"), "--studies", "nope"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and "not empty" in err[0] and "unknown study 'nope'" in err[1]
  assert cli.main(["report", "--out", str(tmp_path / "new"), "--studies", "variance"]) == 0
  assert "wrote" in capsys.readouterr().out
