"""The command line: the table's content, `check`, and one-line errors."""

import json
import subprocess
import sys

import pytest

from jdrop._src import activations
from jdrop._src import cli


@pytest.fixture(scope="module")
def table_json():
  import contextlib
  import io

  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert cli.main(["table", "--json", "--no-float-level"]) == 0
  return json.loads(out.getvalue())


def test_table_has_every_registry_activation_with_the_checkers_verdicts(table_json):
  rows = {row["activation"]: row for row in table_json["rows"]}
  assert set(rows) == set(activations.names())
  for name in ("relu", "abs", "identity", "leaky_relu", "prelu"):
    v = rows[name]["verdict"]
    assert v["pathwise"]["status"] == "proved" and v["zero_preserving"], name
    assert rows[name]["f0_predicted"] is True
  # f(0) = 0 is not enough: these keep 0 and still do not commute; the prediction fails.
  for name in ("tanh", "gelu", "elu", "relu6", "hard_tanh", "selu", "silu", "mish"):
    v = rows[name]["verdict"]
    assert v["zero_preserving"] and v["pathwise"]["status"] == "refuted", name
    assert v["pathwise"]["counterexample"]["residual"][0] != 0
    assert rows[name]["f0_predicted"] is False
  assert rows["sigmoid"]["verdict"]["zero_preserving"] is False
  assert rows["glu"]["verdict"] is None  # halves its input: no shared mask
  summary = table_json["summary"]
  assert "f(0) = 0 holds for 23 of 34 activations" in summary
  assert "commutes pathwise with 7 of them" in summary


def test_table_text_and_markdown(capsys):
  assert cli.main(["table", "--markdown", "--no-float-level", "--rate", "0.3"]) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("| activation | f(0) | f(0)=0 | pathwise | expectation |")
  tanh = next(line for line in lines if line.startswith("| tanh |"))
  assert "rate=0.3" in tanh and "refuted" in tanh


def test_check_prints_the_verdict_and_json(capsys):
  assert cli.main(["check", "relu6", "--rate", "0.5", "--no-float-level"]) == 0
  out = capsys.readouterr().out
  assert "pathwise: refuted" in out and "x = 6" in out
  assert cli.main(["check", "jax.nn:leaky_relu", "--json", "--no-float-level"]) == 0
  data = json.loads(capsys.readouterr().out)
  assert data["pathwise"]["status"] == "proved" and data["function"] == "jax.nn:leaky_relu"


@pytest.mark.parametrize(
  ("argv", "needle"),
  [
    (["table", "--rate", "1"], "open interval (0, 1)"),
    (["table", "--json", "--markdown"], "not allowed with"),
    (["check", "tanh", "--rate", "nan"], "open interval (0, 1)"),
    (["check", "tanh", "--shape", "0"], "positive integer"),
    (["check"], "required"),
    (["nope"], "invalid choice"),
    ([], "required"),
  ],
)
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(argv)
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
  ("name", "needle"),
  [
    ("tanhh", "Did you mean 'tanh'"),
    ("no_such_module_xyz:f", "cannot be imported"),
    ("jax.nn:no_such_function", "does not have"),
    ("glu", "must keep the input's shape"),
  ],
)
def test_check_errors_are_one_line_and_exit_2(name, needle, capsys):
  assert cli.main(["check", name, "--no-float-level"]) == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1, err


def test_module_entry_point():
  run = subprocess.run(
    [sys.executable, "-m", "jdrop", "check", "abs", "--no-float-level"],
    capture_output=True,
    text=True,
    check=False,
  )
  assert run.returncode == 0 and "pathwise: proved" in run.stdout


@pytest.mark.parametrize("spec", [".cli:main", "..jdrop:check", ".:f", "._src.cli:main"])
def test_a_relative_import_path_is_one_line_before_anything_is_imported(spec, capsys):
  with pytest.raises(SystemExit) as exc:
    cli.main(["check", spec])
  assert exc.value.code == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "an import path must start from a top-level" in err
  assert err.count("python -m jdrop") == 1


def test_check_says_that_it_runs_the_modules_import_time_code(capsys):
  with pytest.raises(SystemExit):
    cli.main(["check", "--help"])
  help_text = " ".join(capsys.readouterr().out.split())
  assert "its import-time code runs" in help_text and "the current folder is on" in help_text


def test_check_imports_a_module_from_the_current_folder_and_runs_its_top_level(tmp_path):
  (tmp_path / "my_acts.py").write_text(
    "import pathlib\npathlib.Path('imported').write_text('yes')\n"
    "import jax\ndef act(x):\n  return jax.nn.relu(x)\n"
  )
  run = subprocess.run(
    [sys.executable, "-m", "jdrop", "check", "my_acts:act", "--no-float-level"],
    capture_output=True, text=True, check=False, cwd=tmp_path, timeout=120,
  )  # fmt: skip
  assert run.returncode == 0 and "pathwise: proved" in run.stdout, run.stderr
  assert (tmp_path / "imported").read_text() == "yes"
