"""The report's orchestration: refusing to overwrite, atomic writes, one-line errors.

The studies themselves are tested in their own files; here fake studies stand in, so
these tests take milliseconds. Every fault is injected: a folder that appears, fills or
changes while the studies run, two runs into one folder, a killed run's leftovers, a
system without ``renameat2``. Signals sent to a real ``python -m jdrop report`` are in
``test_report_signals.py``.
"""

import ctypes
import errno
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from jdrop._src import cli
from jdrop._src import cli_args
from jdrop._src import report


def fake_study(name, *, fail=False, during=None):
  """A study that writes one figure; ``during(config)`` runs in the middle of ``run``."""

  def run(config, *, progress=None):
    if during is not None:
      during(config)
    if fail:
      raise RuntimeError(f"{name} failed")
    if progress is not None:
      progress(1, 1, name)
    return {"config": {"size": config}, "value": 1.5}

  def figures(results, out_dir):
    assert results["value"] == 1.5  # what run returned
    (out_dir / f"{name}.png").write_bytes(b"\x89PNG fake")
    return [f"{name}.png"]

  def section(results, figures):
    assert results["value"] == 1.5
    return f"## {name}\n\n![{name}]({figures[0]})\n"

  def with_data(config, path):
    from jdrop._src.studies import data

    data.load_npz(path)
    return config

  return types.SimpleNamespace(
    DEFAULT=1, FULL=2, run=run, figures=figures, section=section, with_data=with_data
  )


@pytest.fixture
def fakes(monkeypatch):
  studies = {name: fake_study(name) for name in report.STUDIES}
  monkeypatch.setattr(report, "_module", lambda name: studies[name])
  # The literature section reads real studies' results (tested in test_literature.py).
  monkeypatch.setattr(report, "literature", types.SimpleNamespace(section=lambda results: ""))
  return studies


@pytest.fixture(params=["renameat2", "portable"])
def system(request, monkeypatch):
  """Every test of the final step runs with Linux's renameat2 and without it (macOS, BSD)."""
  if request.param == "portable":
    monkeypatch.setattr(report, "_libc", lambda: None)
  elif report._libc() is None:
    pytest.skip("renameat2 is not available here")
  return request.param


def listing(folder: Path) -> list[str]:
  return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def hidden(parent: Path) -> list[str]:
  return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def earlier_report(out: Path) -> list[str]:
  """Writes a report into ``out`` as a previous run would have; returns its listing."""
  report.build(out, studies=("variance", "selu_depth"))
  return listing(out)


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
  assert ".jdrop-build" not in listing(out)  # the build marker does not stay in the report
  assert oct(out.stat().st_mode & 0o777) == "0o755"


def test_refuses_a_non_empty_directory_without_force(fakes, tmp_path):
  out = tmp_path / "out"
  before = earlier_report(out)
  with pytest.raises(ValueError, match="not empty; pass --force"):
    report.build(out, studies=("variance",))
  assert listing(out) == before


@pytest.mark.parametrize(
  "make, needle",
  [
    (lambda out: (out / "thesis.tex").write_text("chapter 1"), "no readable results/meta.json"),
    (lambda out: (out / "mydata" / "x.csv").write_text("1,2"), "no readable results/meta.json"),
    (lambda out: (out / "results" / "meta.json").write_text("{not json"), "no readable"),
    (
      lambda out: (out / "results" / "meta.json").write_text('{"command": "make all"}'),
      "a results/meta.json that jdrop did not write",
    ),
    (lambda out: (out / "results" / "meta.json").write_text("[1, 2]"), "jdrop did not write"),
  ],
)
def test_force_refuses_a_folder_that_is_not_a_report(fakes, tmp_path, make, needle):
  out = tmp_path / "out"
  (out / "results").mkdir(parents=True)
  (out / "mydata").mkdir()
  make(out)
  before = listing(out)
  with pytest.raises(ValueError, match="--force replaces only an earlier jdrop report") as exc:
    report.build(out, studies=("variance",), force=True)
  assert needle in str(exc.value)
  assert listing(out) == before  # nothing touched, nothing run
  assert hidden(tmp_path) == []


@pytest.mark.parametrize(
  "add",
  [
    lambda out: (out / "thesis.tex").write_text("my thesis"),
    lambda out: (out / "results" / "notes.txt").write_text("mine"),
    lambda out: (out / "results" / "deep").mkdir(),
    lambda out: (out / "figures").mkdir(),
    lambda out: (out / "link.png").symlink_to(out / "variance.png"),
    lambda out: (out / "results" / "x.json").symlink_to("/etc/passwd"),
  ],
)
def test_force_refuses_an_earlier_report_with_anything_else_in_it(fakes, tmp_path, add):
  out = tmp_path / "out"
  earlier_report(out)
  add(out)
  before = listing(out)
  with pytest.raises(ValueError, match="holds what a report does not write"):
    report.build(out, studies=("variance",), force=True)
  assert listing(out) == before


def test_force_replaces_an_earlier_report_whole(fakes, tmp_path, system):
  out = tmp_path / "out"
  earlier_report(out)
  (out / ".jdrop-build").write_text("{}")  # the marker a killed run may leave: still a report
  report.build(out, studies=("uncertainty",), force=True)
  expected = ["REPORT.md", "results", "results/meta.json", "results/uncertainty.json"]
  assert listing(out) == sorted([*expected, "uncertainty.png"])
  assert hidden(tmp_path) == []


def test_an_empty_directory_is_fine(fakes, tmp_path, system):
  (tmp_path / "out").mkdir()
  assert report.build(tmp_path / "out", studies=("variance",)).exists()
  assert hidden(tmp_path) == []


def test_a_failing_study_leaves_nothing_half_written(fakes, tmp_path):
  out = tmp_path / "out"
  before = earlier_report(out)
  fakes["selu_depth"] = fake_study("selu_depth", fail=True)
  with pytest.raises(RuntimeError, match="selu_depth failed"):
    report.build(out, studies=("variance", "selu_depth"), force=True)
  assert listing(out) == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupt_removes_the_build_and_exits_with_the_signals_status(fakes, tmp_path, capsys):
  def interrupted(config):
    raise cli_args.Interrupted(signal.SIGTERM)

  fakes["variance"] = fake_study("variance", during=interrupted)
  out = tmp_path / "out"
  assert cli.main(["report", "--out", str(out), "--studies", "variance"]) == 143
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["python -m jdrop: interrupted by SIGTERM; nothing half-written was left behind"]
  assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------
# --out changes while the studies run: it is left alone, the report goes beside it.


def change(fakes, name, what):
  fakes[name] = fake_study(name, during=lambda config: what())


@pytest.mark.parametrize(
  "what, state, reason",
  [
    ("created", None, "something appeared there"),
    ("created empty", None, "something appeared there"),
    ("created as a file", None, "something appeared there"),
    ("filled", "empty", "it is no longer the empty folder it was"),
    ("removed", "empty", "it disappeared"),
    ("written into", "report", "the earlier report in it changed"),
    ("rewritten", "report", "the earlier report in it changed"),
    ("removed", "report", "it disappeared"),
  ],
)
def test_out_that_changed_during_the_run_is_left_alone(
  fakes, tmp_path, system, what, state, reason
):
  out = tmp_path / "out"
  if state == "empty":
    out.mkdir()
  elif state == "report":
    earlier_report(out)

  def act():
    if what == "created":
      out.mkdir()
      (out / "mine.txt").write_text("keep me")
    elif what == "created empty":
      out.mkdir()
    elif what == "created as a file":
      out.write_text("a file")
    elif what == "filled":
      (out / "mine.txt").write_text("keep me")
    elif what == "removed":
      import shutil

      shutil.rmtree(out)
    elif what == "written into":
      (out / "notes.txt").write_text("keep me")
    elif what == "rewritten":
      (out / "REPORT.md").write_text("my edits, keep them")

  change(fakes, "variance", act)
  after = {}

  def snapshot(config):
    after["listing"] = listing(out) if out.is_dir() else out.exists()

  change(fakes, "selu_depth", lambda: snapshot(None))
  with pytest.raises(report.OutputChanged) as exc:
    report.build(out, studies=("variance", "selu_depth"), force=state == "report")
  kept = exc.value.kept
  assert str(kept) in str(exc.value) and "changed while the report was built" in str(exc.value)
  assert kept.parent == tmp_path and kept.name.startswith("out.")
  assert f"changed while the report was built ({reason}), so it was left alone" in str(exc.value)
  assert (kept / "REPORT.md").exists() and (kept / "results" / "meta.json").exists()
  assert ".jdrop-build" not in listing(kept)
  # out is exactly what the change left.
  assert (listing(out) if out.is_dir() else out.exists()) == after["listing"]
  if what in ("created", "filled", "written into"):
    assert "keep me" in (out / ("notes.txt" if what == "written into" else "mine.txt")).read_text()
  if what == "rewritten":
    assert (out / "REPORT.md").read_text() == "my edits, keep them"
  assert hidden(tmp_path) == []


def test_a_report_that_appears_during_the_run_is_not_replaced(fakes, tmp_path, system):
  """Two runs into one folder: the second to finish keeps the first's report."""
  out = tmp_path / "out"
  inner = {}

  def second_run():
    fakes["variance"] = fake_study("variance")  # no recursion in the inner run
    inner["path"] = report.build(out, studies=("variance",))
    inner["listing"] = listing(out)

  change(fakes, "variance", second_run)
  with pytest.raises(report.OutputChanged) as exc:
    report.build(out, studies=("variance", "selu_depth"))
  assert listing(out) == inner["listing"]
  assert "selu_depth.png" in listing(exc.value.kept)


def test_concurrent_runs_into_one_folder_never_clobber_each_other(fakes, tmp_path, system):
  out = tmp_path / "out"
  for _ in range(10):
    barrier = threading.Barrier(2)
    fakes["variance"] = fake_study("variance", during=lambda config, b=barrier: b.wait(10))
    outcomes: list = [None, None]

    def run(i, outcomes=outcomes):
      try:
        outcomes[i] = report.build(out, studies=("variance",), argv=[f"run {i}"])
      except report.OutputChanged as err:
        outcomes[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    for t in threads:
      t.start()
    for t in threads:
      t.join(30)
    placed = [o for o in outcomes if isinstance(o, Path)]
    moved = [o for o in outcomes if isinstance(o, report.OutputChanged)]
    assert len(placed) == 1 and len(moved) == 1, outcomes
    winner = outcomes.index(placed[0])
    meta = json.loads((out / "results" / "meta.json").read_text())
    assert meta["command"] == f"python -m jdrop run {winner}"
    loser = json.loads((moved[0].kept / "results" / "meta.json").read_text())
    assert loser["command"] == f"python -m jdrop run {1 - winner}"
    assert hidden(tmp_path) == []
    import shutil

    shutil.rmtree(out)
    shutil.rmtree(moved[0].kept)


# ----------------------------------------------------------------------------
# Where --out may not point.


@pytest.mark.parametrize(
  ("setup", "needle"),
  [
    (lambda tmp: tmp / "a-file", "is not a directory"),
    (lambda tmp: tmp / "missing" / "out", "does not exist"),
    (lambda tmp: "", "is not the name of a folder of its own"),
    (lambda tmp: ".", "is not the name of a folder of its own"),
    (lambda tmp: "..", "is not the name of a folder of its own"),
    (lambda tmp: tmp / "sub" / "..", "is not the name of a folder of its own"),
    (lambda tmp: tmp / "cwd", "contains the current folder"),
    (lambda tmp: tmp, "contains the current folder"),
    (lambda tmp: "/", "is not the name of a folder of its own"),
    (lambda tmp: tmp / "link", "is a symbolic link"),
  ],
)
def test_bad_output_locations_are_refused_before_anything_runs(
  fakes, tmp_path, monkeypatch, setup, needle
):
  (tmp_path / "a-file").write_text("x")
  (tmp_path / "cwd").mkdir()
  (tmp_path / "cwd" / "work.txt").write_text("mine")
  (tmp_path / "target").mkdir()
  (tmp_path / "link").symlink_to(tmp_path / "target")
  monkeypatch.chdir(tmp_path / "cwd")
  ran = []
  fakes["variance"] = fake_study("variance", during=ran.append)
  before = listing(tmp_path)
  for force in (False, True):
    with pytest.raises(ValueError, match=needle):
      report.build(setup(tmp_path), studies=("variance",), force=force)
  assert ran == [] and listing(tmp_path) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_output_where_no_folder_can_be_made_is_one_line(fakes, capsys):
  assert cli.main(["report", "--out", "/proc/x", "--studies", "variance"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1, err
  assert "cannot create a folder beside --out /proc/x" in err[0] or "cannot write" in err[0]


def test_cli_errors_are_one_line(fakes, tmp_path, capsys):
  out = tmp_path / "out"
  out.mkdir()
  (out / "x").write_text("x")
  assert cli.main(["report", "--out", str(out)]) == 2
  assert cli.main(["report", "--out", str(out), "--force"]) == 2
  assert cli.main(["report", "--out", str(tmp_path / "new"), "--studies", "nope"]) == 2
  assert cli.main(["report", "--out", "", "--force"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 4, err
  assert "not empty" in err[0] and "only an earlier jdrop report" in err[1]
  assert "unknown study 'nope'" in err[2] and "not the name of a folder" in err[3]
  assert (out / "x").read_text() == "x"
  assert cli.main(["report", "--out", str(tmp_path / "new"), "--studies", "variance"]) == 0
  assert "wrote" in capsys.readouterr().out


def test_cli_says_where_the_report_went_when_out_changed(fakes, tmp_path, capsys):
  out = tmp_path / "out"
  change(fakes, "variance", lambda: out.mkdir())
  assert cli.main(["report", "--out", str(out), "--studies", "variance"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "the finished report is in" in err[0], err
  kept = Path(err[0].rsplit(" ", 1)[1])
  assert (kept / "REPORT.md").exists() and list(out.iterdir()) == []


# ----------------------------------------------------------------------------
# --data is checked whichever studies run.


@pytest.mark.parametrize(
  "make, needle",
  [
    (lambda tmp: tmp / "nonexistent.npz", "must be a readable .npz file"),
    (lambda tmp: np.savez(tmp / "d.npz", x_train=np.ones((2, 2))) or tmp / "d.npz", "missing"),
    (
      lambda tmp: np.savez(
        tmp / "d.npz", x_train=np.full((2, 2), np.nan), y_train=[0, 1],
        x_test=np.ones((1, 2)), y_test=[0],
      ) or tmp / "d.npz",
      "must be finite",
    ),
    (
      lambda tmp: np.savez(
        tmp / "d.npz", x_train=np.ones((2, 2)), y_train=[0.5, 1],
        x_test=np.ones((1, 2)), y_test=[0],
      ) or tmp / "d.npz",
      "integer class labels",
    ),
    (lambda tmp: (tmp / "d.npz").write_text("not a zip") or tmp / "d.npz", "readable .npz"),
  ],
)  # fmt: skip
@pytest.mark.parametrize("studies", [("variance",), ("selu_depth", "commutation"), ("training",)])
def test_data_is_checked_before_any_study_runs(fakes, tmp_path, capsys, make, needle, studies):
  path = make(tmp_path)
  ran = []
  for name in report.STUDIES:
    fakes[name] = fake_study(name, during=ran.append)
  argv = ["report", "--out", str(tmp_path / "out"), "--data", str(path), "--studies", *studies]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and needle in err[0], err
  assert ran == [] and not (tmp_path / "out").exists() and hidden(tmp_path) == []


# ----------------------------------------------------------------------------
# Build folders that killed runs left behind.


def dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_stale_build_folders_of_dead_runs_are_removed_and_nothing_else(fakes, tmp_path):
  dead, alive = dead_pid(), os.getpid()
  started = report._started(alive)

  def build_folder(name, marker=None, files=()):
    folder = tmp_path / name
    folder.mkdir()
    if marker is not None:
      (folder / ".jdrop-build").write_text(json.dumps(marker))
    for f in files:
      (folder / f).parent.mkdir(parents=True, exist_ok=True)
      (folder / f).write_text("x")
    return folder

  host = __import__("socket").gethostname()
  gone = [
    build_folder(f".out.jdrop-build-{dead}-a1", {"pid": dead, "host": host}, ["REPORT.md"]),
    build_folder(f".other.jdrop-build-{dead}-b2", {"pid": dead, "host": host, "started": 1}),
    build_folder(f".out.jdrop-build-{dead}-c3"),  # killed before writing its marker
  ]
  if started is not None:  # a reused pid: the process that holds it started at another time
    gone.append(build_folder(f".out.jdrop-build-{alive}-d4", {"pid": alive, "started": -5}))
  old_report = tmp_path / f".out.jdrop-build-{dead}-e5_old"
  report.build(old_report, studies=("variance",))  # an earlier report swapped out, then killed
  gone.append(old_report)
  kept = [
    build_folder(f".out.jdrop-build-{alive}-f6", {"pid": alive, "host": host, "started": started}),
    build_folder(f".out.jdrop-build-{dead}-g7", {"pid": dead, "host": "elsewhere"}),
    build_folder(f".out.jdrop-build-{dead}-h8", None, ["thesis.tex"]),  # unmarked, not a report
    build_folder(f".out.jdrop-build-{dead}", {"pid": dead, "host": host}),  # not the pattern
    build_folder(".out.jdrop-build-x-i9", {"pid": dead, "host": host}),
    build_folder("out.jdrop-build-1-j0", {"pid": dead, "host": host}),  # not hidden
  ]
  link = tmp_path / f".out.jdrop-build-{dead}-k1"
  link.symlink_to(kept[2])
  kept.append(link)
  report.build(tmp_path / "out", studies=("variance",))
  assert [p.name for p in gone if os.path.lexists(p)] == []
  assert [p.name for p in kept if not os.path.lexists(p)] == []
  assert (kept[2] / "thesis.tex").read_text() == "x"


# ----------------------------------------------------------------------------
# The final step runs whole.


def test_signals_wait_until_the_final_step_is_done():
  order = []
  with pytest.raises(cli_args.Interrupted) as exc, cli_args.interrupts():
    with cli_args.deferred():
      os.kill(os.getpid(), signal.SIGTERM)
      os.kill(os.getpid(), signal.SIGINT)  # ignored: one is enough
      order.append("placed")
    order.append("not reached")
  assert order == ["placed"] and exc.value.status == 143


def test_a_deferred_signal_does_not_hide_the_blocks_own_error():
  with pytest.raises(OSError, match="disk full"), cli_args.interrupts():
    with cli_args.deferred():
      os.kill(os.getpid(), signal.SIGINT)
      raise OSError("disk full")


def test_a_second_signal_does_not_interrupt_the_clean_up():
  with pytest.raises(cli_args.Interrupted) as exc, cli_args.interrupts():
    try:
      os.kill(os.getpid(), signal.SIGINT)
    finally:
      os.kill(os.getpid(), signal.SIGINT)  # ignored: the first one is being handled
      cleaned = True
  assert cleaned and exc.value.status == 130


def test_signals_outside_interrupts_keep_their_handlers():
  before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
  with cli_args.interrupts():
    assert signal.getsignal(signal.SIGTERM) is not before[0]
  assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
  with cli_args.deferred():  # without interrupts(): nothing to hold back, nothing raised
    pass


@pytest.mark.skipif(not os.path.ismount("/proc"), reason="needs /proc mounted")
def test_a_mount_point_is_refused(fakes):
  for force in (False, True):
    with pytest.raises(ValueError, match="--out /proc is a mount point"):
      report.build("/proc", studies=("variance",), force=force)


def test_results_json_is_strict_json():
  # Python's json writes NaN and Infinity bare, which no other parser accepts; the results
  # files hold them as strings, and arrays and NumPy scalars as plain lists and numbers.
  value = {
    "nan": np.float32("nan"),
    "array": np.array([1.0, np.inf]),
    "tuple": (float("-inf"), 2),
    "int": np.int64(3),
    "nested": [{"x": float("nan")}],
    "plain": ["x", None, True, 0.5],
  }
  text = json.dumps(report.json_ready(value), allow_nan=False)
  assert json.loads(text) == {
    "nan": "nan",
    "array": [1.0, "inf"],
    "tuple": ["-inf", 2],
    "int": 3,
    "nested": [{"x": "nan"}],
    "plain": ["x", None, True, 0.5],
  }


class Terminal:
  """A stream that says it is a terminal, recording what is written and each flush."""

  def __init__(self, tty: bool = True):
    self.tty, self.text, self.flushes = tty, "", 0

  def isatty(self) -> bool:
    return self.tty

  def write(self, text: str) -> None:
    self.text += text

  def flush(self) -> None:
    self.flushes += 1


def test_progress_bar_draws_on_a_terminal_only(monkeypatch):
  clock = iter([100.0, 142.4, 150.0, 161.0, 170.0])
  monkeypatch.setattr(report.time, "monotonic", lambda: next(clock, 0.0))
  terminal = Terminal()
  bar = report.Progress(terminal)
  bar(0, 4, "commutation")
  assert terminal.text == f"\r[{'.' * 24}] 0/4 {'commutation':<48}    42 s"
  assert terminal.flushes == 1
  terminal.text = ""
  bar(3, 4, "t" * 60)  # 18 of 24 filled; the name is cut to 48 characters
  assert terminal.text == f"\r[{'#' * 18}{'.' * 6}] 3/4 {'t' * 48}    50 s"
  terminal.text = ""
  bar(4, 4, "done")  # the last step ends the line
  assert terminal.text == f"\r[{'#' * 24}] 4/4 {'done':<48}    61 s\n"
  terminal.text = ""
  bar(1, 0, "nothing to do")  # total 0: full, not a division by zero
  assert terminal.text.startswith(f"\r[{'#' * 24}] 1/0 ") and terminal.text.endswith(" s\n")
  assert terminal.flushes == 4
  quiet = Terminal(tty=False)
  report.Progress(quiet)(1, 2, "x")
  assert quiet.text == "" and quiet.flushes == 0
  assert not report.Progress(object()).enabled  # a stream without isatty is not a terminal


def test_studies_are_the_modules_of_jdrop_studies():
  from jdrop._src.studies import stats

  assert report._module("stats") is stats


def test_a_snapshot_sees_a_renamed_entry_and_a_replaced_folder(tmp_path):
  # The snapshot is how a run notices that --out changed under it: a rename that keeps every
  # size and time, and a folder swapped for an identical copy, are both changes.
  out = tmp_path / "out"
  out.mkdir()
  (out / "a.txt").write_text("same")
  before = report._Snapshot.of(out)
  assert before == report._Snapshot.of(out)
  os.rename(out / "a.txt", out / "b.txt")
  renamed = report._Snapshot.of(out)
  assert renamed != before and renamed.entries != before.entries
  twin = tmp_path / "twin"
  shutil.copytree(out, twin, copy_function=shutil.copy2)
  os.utime(
    twin / "b.txt", ns=(os.stat(out / "b.txt").st_atime_ns, os.stat(out / "b.txt").st_mtime_ns)
  )
  assert report._Snapshot.of(twin).entries == renamed.entries
  assert report._Snapshot.of(twin) != renamed  # same entries, another folder
  assert report._Snapshot.of(tmp_path / "missing") is None


def test_free_sibling_is_a_timestamped_name_then_numbered(tmp_path, monkeypatch):
  monkeypatch.setattr(
    report.time, "strftime", lambda fmt: "20261205-061500" if fmt == "%Y%m%d-%H%M%S" else "?"
  )
  out = tmp_path / "report"
  first = report.free_sibling(out)
  assert first == tmp_path / "report.20261205-061500"
  first.mkdir()
  second = report.free_sibling(out)
  assert second == tmp_path / "report.20261205-061500-2"
  second.symlink_to(tmp_path / "nowhere")  # a dangling link is taken too
  assert report.free_sibling(out) == tmp_path / "report.20261205-061500-3"


def test_alive_only_asks_and_tells_a_live_process_from_a_gone_one():
  child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    started = report._started(child.pid)
    assert started is not None
    assert report._alive({"pid": child.pid, "started": started})
    assert report._alive({"pid": child.pid})
    # Asking sent it no signal (not even SIGHUP, whose delivery takes a moment): it still runs.
    with pytest.raises(subprocess.TimeoutExpired):
      child.wait(timeout=0.5)
    assert not report._alive({"pid": child.pid, "started": started + 1})  # a reused pid
    assert report._alive({"pid": child.pid, "host": "another-host"})  # unsure: yes
    assert report._alive({"pid": "not a pid"})
  finally:
    child.kill()
    child.wait(timeout=30)
  assert not report._alive({"pid": child.pid, "started": started})


def test_why_a_folder_is_not_a_report_in_full(tmp_path):
  folder = tmp_path / "out"
  (folder / "results").mkdir(parents=True)
  assert report._not_a_report(folder) == "has no readable results/meta.json"
  (folder / "results" / "meta.json").write_text('{"command": "make all"}')
  assert report._not_a_report(folder) == "has a results/meta.json that jdrop did not write"
  (folder / "results" / "meta.json").write_text('{"command": "python -m jdrop report"}')
  assert report._not_a_report(folder) is None
  for name in ("a.txt", "b.txt", "c.txt"):
    (folder / name).write_text("mine")
  assert report._not_a_report(folder) == "holds what a report does not write (a.txt, b.txt, c.txt)"
  (folder / "d.txt").write_text("mine")
  assert report._not_a_report(folder) == (
    "holds what a report does not write (a.txt, b.txt, c.txt and 1 more)"
  )
  (folder / "results" / "e.txt").write_text("mine")
  assert report._not_a_report(folder) == (
    "holds what a report does not write (a.txt, b.txt, c.txt and 2 more)"
  )


class FakeLibc:
  """A C library whose renameat2 fails with ``code``, recording its arguments."""

  def __init__(self, code: int):
    self.code, self.calls = code, []

  def renameat2(self, *args):
    self.calls.append(args)
    ctypes.set_errno(self.code)
    return -1


def test_rename_passes_renameat2_both_paths_and_the_flag(tmp_path, monkeypatch):
  src, dst = tmp_path / "src", tmp_path / "dst"
  src.mkdir()
  libc = FakeLibc(errno.EPERM)
  monkeypatch.setattr(report, "_libc", lambda: libc)
  with pytest.raises(OSError) as exc:
    report._rename(src, dst, report._RENAME_EXCHANGE)
  assert libc.calls == [(report._AT_FDCWD, os.fsencode(src), report._AT_FDCWD, os.fsencode(dst), 2)]
  err = exc.value
  assert (err.errno, err.strerror) == (errno.EPERM, os.strerror(errno.EPERM))
  assert (err.filename, err.filename2) == (str(src), str(dst))


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EINVAL])
def test_rename_without_renameat2_support_falls_back(tmp_path, monkeypatch, code):
  # ENOSYS (an old kernel) and EINVAL (a file system without the flag) are not errors: the
  # portable way is taken, as when the C library has no renameat2 at all.
  monkeypatch.setattr(report, "_libc", lambda: FakeLibc(code))
  src, dst = tmp_path / "src", tmp_path / "dst"
  src.mkdir()
  assert report._rename(src, dst, report._RENAME_EXCHANGE) is False  # no portable swap
  assert src.is_dir() and not dst.exists()
  assert report._rename(src, dst, report._RENAME_NOREPLACE) is True
  assert dst.is_dir() and not src.exists()
  src.mkdir()
  with pytest.raises(FileExistsError) as exc:
    report._rename(src, dst, report._RENAME_NOREPLACE)
  assert (exc.value.errno, exc.value.strerror) == (errno.EEXIST, os.strerror(errno.EEXIST))
  assert exc.value.filename == str(dst)


def test_rename_with_the_real_renameat2(tmp_path):
  if report._libc() is None:
    pytest.skip("renameat2 is not available here")
  src, dst = tmp_path / "src", tmp_path / "dst"
  src.mkdir()
  assert report._rename(src, dst, report._RENAME_NOREPLACE) is True and dst.is_dir()
  src.mkdir()
  with pytest.raises(OSError) as exc:
    report._rename(src, dst, report._RENAME_NOREPLACE)
  assert exc.value.errno == errno.EEXIST and exc.value.filename2 == str(dst)


def test_place_does_not_need_the_marker(tmp_path):
  # The marker is removed from the placed report if it is there; a build without one is fine.
  build = tmp_path / ".out.jdrop-build-1-x"
  build.mkdir()
  (build / "REPORT.md").write_text("report")
  report._place(build, tmp_path / "out", None)
  assert (tmp_path / "out" / "REPORT.md").read_text() == "report"
  build.mkdir()  # again, but now --out exists where nothing was: the report goes beside it
  (build / "REPORT.md").write_text("second")
  with pytest.raises(report.OutputChanged) as exc:
    report._place(build, tmp_path / "out", None)
  assert (exc.value.kept / "REPORT.md").read_text() == "second"


def test_metadata_names_the_command_the_time_zone_and_the_processor(monkeypatch, tmp_path):
  monkeypatch.setattr(sys, "argv", ["python -m jdrop", "report", "--out", "x"])
  meta = report.metadata(None, {"variance": 1.234}, full=False, data=None)
  assert meta["command"] == "python -m jdrop report --out x"
  assert meta["date"].endswith("+00:00")  # UTC, said so
  assert meta["configuration"] == "default" and meta["seconds"] == {"variance": 1.2}
  assert report.metadata(["a"], {}, full=True, data="d.npz")["configuration"] == "full"


def test_processor_reads_the_model_name_then_falls_back(tmp_path, monkeypatch):
  from jdrop._src import machine

  cpuinfo = tmp_path / "cpuinfo"
  cpuinfo.write_text(
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz: rev 7\n"
    "processor\t: 1\nmodel name\t: Another CPU\n"
  )
  assert machine.processor(cpuinfo) == "Intel(R) Xeon(R) CPU @ 2.20GHz: rev 7"
  monkeypatch.setattr(machine.platform, "processor", lambda: "x86_64")
  cpuinfo.write_text("processor\t: 0\nflags\t: fpu\n")
  assert machine.processor(cpuinfo) == "x86_64"
  monkeypatch.setattr(machine.platform, "processor", lambda: "")
  monkeypatch.setattr(machine.platform, "machine", lambda: "aarch64")
  assert machine.processor(tmp_path / "missing") == "aarch64"
  monkeypatch.setattr(machine.platform, "machine", lambda: "")
  assert machine.processor(tmp_path / "missing") == "unknown processor"


def test_metadata_lists_the_versions_and_the_data():
  import flax
  import jax
  import optax

  import jdrop

  meta = report.metadata([], {}, full=False, data=None)
  assert meta["versions"] == {
    "python": platform.python_version(),
    "jdrop": jdrop.__version__,
    "jax": jax.__version__,
    "flax": flax.__version__,
    "optax": optax.__version__,
    "numpy": np.__version__,
  }
  assert meta["data"] == (
    "scikit-learn digits; MNIST-1D generated by mnist1d.data.make_dataset; modular addition"
    " generated in process"
  )
  assert report.metadata([], {}, full=False, data="mine.npz")["data"] == "mine.npz"


def test_render_gives_the_literature_section_the_results(monkeypatch):
  seen = []

  def section(results):
    seen.append(results)
    return "## What the literature reports\n\nA paragraph."

  monkeypatch.setattr(report, "literature", types.SimpleNamespace(section=section))
  meta = report.metadata(["report"], {}, full=False, data=None)
  results = {"audit": {"rows": []}}
  text = report.render(results, {}, meta)
  assert seen == [results]
  assert "## What the literature reports\n\nA paragraph." in text
  assert ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) in text


def test_ours_is_true_only_for_this_process_marker(tmp_path):
  assert not report._ours(tmp_path)  # no marker
  marker = tmp_path / ".jdrop-build"
  marker.write_text(json.dumps({"pid": os.getpid()}))
  assert report._ours(tmp_path)
  marker.write_text(json.dumps({"pid": os.getpid() + 1}))
  assert not report._ours(tmp_path)
  marker.write_text("[1, 2]")  # not an object
  assert not report._ours(tmp_path)
  marker.write_text("{broken")
  assert not report._ours(tmp_path)


def test_a_build_folder_is_named_and_marked_for_its_process(tmp_path):
  build = report._new_build(tmp_path / "out")
  assert build.parent == tmp_path
  match = report._BUILD_NAME.fullmatch(build.name)
  assert match and build.name.startswith(".out.") and int(match.group(1)) == os.getpid()
  assert build.stat().st_mode & 0o777 == 0o755
  owner = json.loads((build / ".jdrop-build").read_text())
  assert owner == {
    "pid": os.getpid(),
    "host": socket.gethostname(),
    "started": report._started(os.getpid()),
  }
  assert owner["started"] is not None


def test_started_reads_field_22_after_the_last_parenthesis(tmp_path):
  # A process may name itself anything, parentheses and spaces included.
  (tmp_path / "7").mkdir()
  fields = " ".join(str(n) for n in range(3, 23))  # fields 3 .. 22: field 22 is "22"
  (tmp_path / "7" / "stat").write_text(f"7 (a) b (c) d) {fields} 23 24\n")
  assert report._started(7, tmp_path) == 22
  assert report._started(8, tmp_path) is None


def test_stale_build_cleanup_skips_files_and_survives_a_failed_removal(tmp_path, monkeypatch):
  dead = 2**22 + 12345  # above the default pid_max: no such process
  (tmp_path / f".out.jdrop-build-{dead}-file").write_text("not a folder")  # skipped
  stale = tmp_path / f".out.jdrop-build-{dead}-abc"
  stale.mkdir()
  removed = []

  def rmtree(path, ignore_errors=False):
    removed.append(path)
    if not ignore_errors:  # as another process removing it at the same moment would
      raise FileNotFoundError(path)

  monkeypatch.setattr(report.shutil, "rmtree", rmtree)
  report._remove_stale_builds(tmp_path)  # neither the file nor the failure stops it
  assert removed == [stale]
  assert (tmp_path / f".out.jdrop-build-{dead}-file").read_text() == "not a folder"


def test_a_worker_threads_deferred_block_does_not_hold_the_main_threads_signal():
  # Reports built in threads (as a test or a library user may) write their last step in
  # deferred(); that must not make the main thread hold its own SIGINT back.
  inside, release = threading.Event(), threading.Event()

  def worker():
    with cli_args.deferred():
      inside.set()
      release.wait(30)

  thread = threading.Thread(target=worker)
  thread.start()
  try:
    assert inside.wait(30)
    with pytest.raises(cli_args.Interrupted), cli_args.interrupts():
      os.kill(os.getpid(), signal.SIGINT)
  finally:
    release.set()
    thread.join(30)


def test_placing_raises_an_error_it_cannot_explain(tmp_path, monkeypatch):
  # A refused rename (EACCES) where --out does not exist is neither "it disappeared" nor
  # "something appeared there": it propagates, and the build stays where it was.
  tmp, out = tmp_path / ".out.jdrop-build-1-x", tmp_path / "out"
  tmp.mkdir()

  rename = report._rename

  def refuse(src, dst, flags):
    if dst == out:
      raise PermissionError(errno.EACCES, "Permission denied")
    return rename(src, dst, flags)

  monkeypatch.setattr(report, "_rename", refuse)
  with pytest.raises(PermissionError):
    report._place(tmp, out, None)
  assert tmp.is_dir() and not out.exists()


@pytest.mark.parametrize("full", [False, True])
def test_build_runs_each_study_at_its_size_and_reports_progress(fakes, tmp_path, full):
  """What build passes to each study and writes, read back from the files: the configuration
  (DEFAULT is 1, FULL is 2 in the fakes), progress over all studies in thousandths, results
  as indented strict JSON, the metadata and each study's time."""
  calls = []
  out = tmp_path / "out"
  report.build(
    out, studies=("variance", "selu_depth"), full=full, progress=lambda *a: calls.append(a)
  )
  size = 2 if full else 1
  for name in ("variance", "selu_depth"):
    text = (out / "results" / f"{name}.json").read_text()
    assert text == json.dumps({"config": {"size": size}, "value": 1.5}, indent=1)
  # Each fake study reports (1, 1, name) once: study i is then at (i + 1) thousandths of 2000.
  assert calls == [(1000, 2000, "variance"), (2000, 2000, "selu_depth")]
  meta_text = (out / "results" / "meta.json").read_text()
  assert meta_text.startswith('{\n "command": ')
  meta = json.loads(meta_text)
  assert meta["configuration"] == ("full" if full else "default")
  assert list(meta["seconds"]) == ["variance", "selu_depth"]
  assert all(0 <= float(s) < 60 for s in meta["seconds"].values())
  assert not hidden(tmp_path)  # the build folder is gone


def test_check_output_messages_whole(tmp_path, monkeypatch):
  """Each refusal of --out, word for word: what is wrong with it and what to do instead."""

  def refused(out, force=False):
    with pytest.raises(report.ReportError) as caught:
      report.check_output(out, force=force)
    return str(caught.value)

  assert refused(Path("..")) == (
    "report: --out '..' is not the name of a folder of its own (it is the current folder, one"
    " above it, or the root); pass e.g. --out jdrop-report"
  )
  (tmp_path / "inner").mkdir()
  monkeypatch.chdir(tmp_path / "inner")
  assert refused(tmp_path) == (
    f"report: --out {tmp_path} contains the current folder, which cannot be replaced; pass the"
    " name of a new folder, e.g. --out jdrop-report"
  )
  full = tmp_path / "full"
  full.mkdir()
  (full / "notes.txt").write_text("mine")
  assert refused(full) == (
    f"report: --out {full} is not empty; pass --force to replace an earlier report, or pick a"
    " new directory"
  )
  assert refused(full, force=True) == (
    f"report: --force replaces only an earlier jdrop report, and --out {full} has no readable"
    " results/meta.json; move it or pick another --out"
  )
  new = tmp_path / "new"
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # a parent we may not write
  assert refused(new) == f"report: cannot write to {new} (permission denied); pick another --out"


def test_build_refusals_whole(fakes, tmp_path, monkeypatch):
  """build's own refusals, word for word, before any study runs."""
  out = tmp_path / "out"

  def refused(**kwargs):
    with pytest.raises(report.ReportError) as caught:
      report.build(out, **kwargs)
    return str(caught.value)

  choose = ", ".join(report.STUDIES)
  assert refused(studies=("variance", "nope", "x")) == (
    f"report: unknown study 'nope', 'x'; choose from {choose}"
  )
  assert refused(studies=()) == f"report: unknown study (none given); choose from {choose}"
  monkeypatch.setattr(report, "_importable", lambda module: module not in ("mnist1d", "optax"))
  assert refused(studies=("variance",)) == (
    "report: needs the report extra (missing: mnist1d, optax); install it with pip install"
    ' "jdrop[report]"'
  )
  monkeypatch.undo()
  monkeypatch.setattr(report, "_module", lambda name: fakes[name])
  monkeypatch.setattr(report, "literature", types.SimpleNamespace(section=lambda results: ""))

  def refuse(*args, **kwargs):
    raise PermissionError(13, "Permission denied")

  monkeypatch.setattr(report.tempfile, "mkdtemp", refuse)
  assert refused(studies=("variance",)) == (
    f"report: cannot create a folder beside --out {out} (Permission denied); pick another --out"
  )
  assert not out.exists()


@pytest.mark.parametrize("full", [False, True])
def test_build_gives_the_training_study_the_data_at_its_size(fakes, tmp_path, monkeypatch, full):
  seen = []
  monkeypatch.setattr(
    fakes["training"],
    "with_data",
    lambda config, path: seen.append((config, path)) or ("with data", config),
  )
  monkeypatch.setattr(report, "render", lambda results, sections, meta: "text")  # fake results
  out = tmp_path / "out"
  report.build(out, studies=("variance", "training"), full=full, data="data.npz")
  size = 2 if full else 1
  assert seen == [(size, "data.npz")]
  training = json.loads((out / "results" / "training.json").read_text())
  assert training["config"] == {"size": ["with data", size]}
  assert json.loads((out / "results" / "variance.json").read_text())["config"] == {"size": size}
  assert json.loads((out / "results" / "meta.json").read_text())["data"] == "data.npz"


def test_build_runs_the_default_configuration_unless_asked(fakes, tmp_path):
  out = tmp_path / "out"
  assert report.build(out, studies=("variance",)) == out / "REPORT.md"
  assert json.loads((out / "results" / "variance.json").read_text())["config"] == {"size": 1}
  meta = json.loads((out / "results" / "meta.json").read_text())
  assert meta["configuration"] == "default"
