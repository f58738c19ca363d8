"""Signals sent to a real ``python -m jdrop report``: one line, exit 128 + the signal, nothing
half-written left behind, and the leftovers of a SIGKILL removed by the next run.

The fake studies of ``run_report_fault.py`` signal readiness through a file, so each
signal lands while a study runs (after JAX is imported and the build folder exists). Every
wait is bounded.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import process_util
import pytest

# Slow (real processes signalled while JAX runs: about 20-60 s each);
# CI runs them, `pytest -m 'not slow'` skips them.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "run_report_fault.py"
LIMIT = 60  # seconds for anything to happen


def start(tmp_path: Path, mode: str, *args: str) -> tuple[subprocess.Popen, Path]:
  ready = tmp_path / f"ready-{time.monotonic_ns()}"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), JDROP_TEST_READY=str(ready))
  proc = subprocess.Popen(
    [sys.executable, str(HELPER), mode, *args],
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  return proc, ready


def wait_for(path: Path, proc: subprocess.Popen) -> None:
  deadline = time.monotonic() + LIMIT
  while not path.exists():
    if proc.poll() is not None or time.monotonic() > deadline:
      proc.kill()
      pytest.fail(f"the study never started: {proc.communicate()}")
    time.sleep(0.05)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  return process_util.finish(proc, LIMIT, "the report did not stop")


def leftovers(parent: Path) -> list[str]:
  return sorted(p.name for p in parent.iterdir() if ".jdrop-build-" in p.name)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("times", [1, 3])
def test_sigint_and_sigterm_give_one_line_and_remove_the_build(tmp_path, signum, status, times):
  out = tmp_path / "out"
  proc, ready = start(tmp_path, "wait", "--out", str(out), "--studies", "variance", "training")
  wait_for(ready, proc)
  assert len(leftovers(tmp_path)) == 1  # the build folder exists while the study runs
  for _ in range(times):  # a second and third signal must not break the clean-up
    proc.send_signal(signum)
  code, stdout, stderr = finish(proc)
  assert code == status, stderr
  assert stderr.splitlines() == [
    f"python -m jdrop: interrupted by {signum.name}; nothing half-written was left behind"
  ]
  assert stdout == "" and not out.exists() and leftovers(tmp_path) == []


def test_an_interrupted_force_run_leaves_the_earlier_report(tmp_path):
  out = tmp_path / "out"
  proc, _ = start(tmp_path, "quick", "--out", str(out), "--studies", "variance")
  assert finish(proc)[0] == 0
  before = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*"))
  proc, ready = start(tmp_path, "wait", "--out", str(out), "--studies", "variance", "--force")
  wait_for(ready, proc)
  proc.send_signal(signal.SIGTERM)
  assert finish(proc)[0] == 143
  assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*")) == before
  assert leftovers(tmp_path) == []


def test_sigkill_leaves_a_build_folder_that_the_next_run_removes(tmp_path):
  out = tmp_path / "out"
  proc, ready = start(tmp_path, "wait", "--out", str(out), "--studies", "variance")
  wait_for(ready, proc)
  proc.kill()
  assert finish(proc)[0] == -signal.SIGKILL
  (stale,) = leftovers(tmp_path)
  assert (tmp_path / stale / ".jdrop-build").exists()
  # A run into another folder of the same parent removes it: its process is gone.
  proc, _ = start(tmp_path, "quick", "--out", str(tmp_path / "other"), "--studies", "variance")
  code, stdout, stderr = finish(proc)
  assert code == 0 and stdout.startswith("wrote") and stderr == ""
  assert leftovers(tmp_path) == [] and not out.exists()


def test_a_running_reports_build_folder_is_not_removed_by_another_run(tmp_path):
  first, ready = start(tmp_path, "wait", "--out", str(tmp_path / "a"), "--studies", "variance")
  wait_for(ready, first)
  second, _ = start(tmp_path, "quick", "--out", str(tmp_path / "b"), "--studies", "variance")
  assert finish(second)[0] == 0
  assert len(leftovers(tmp_path)) == 1  # the first run's, alive
  first.send_signal(signal.SIGINT)
  assert finish(first)[0] == 130 and leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_real_studies_interrupted_while_jax_runs(tmp_path, signum):
  """The whole report with the real variance study, signalled at a random moment of it."""
  out = tmp_path / "out"
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  command = [sys.executable, "-m", "jdrop", "report", "--out", str(out), "--studies", "variance"]
  proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)  # fmt: skip
  deadline = time.monotonic() + LIMIT
  while not leftovers(tmp_path):  # the build folder: imports done, the study starts
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.02)
  time.sleep(random.Random(signum).uniform(0.0, 2.0))
  proc.send_signal(signum)
  code, _, stderr = finish(proc)
  if code == 0:  # the study finished first: nothing to interrupt
    assert (out / "REPORT.md").exists()
  else:
    assert code == 128 + signum, stderr
    assert len(stderr.splitlines()) == 1 and "interrupted by" in stderr, stderr
    assert not out.exists()
  assert leftovers(tmp_path) == []
