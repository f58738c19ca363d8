"""``python -m jdrop mc`` when things go wrong: a process killed at each point of a
multi-process run, JAX's runtime aborting, signals, and every bad argument on one line.

JAX's distributed runtime ends a process with SIGABRT and a C++ stack trace when another
process dies; the CLI runs the computation in a supervised child and reports its fate on
one line. Faults are injected into that child by ``run_mc_fault.py``. Every process is a
subprocess with a hard timeout on 127.0.0.1. Runs in which a process must notice that
another one died wait for JAX's heartbeat timeout (at least 10 s): they are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import process_util
import pytest

from jdrop._src import cli
from jdrop._src import cli_mc
from jdrop._src import montecarlo

# Slow (processes killed and signalled mid-run: 15-120 s each);
# CI runs them, `pytest -m 'not slow'` skips them.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "run_mc_fault.py"
LIMIT = 120  # seconds for any process: a hang fails the test
STUDY = ["tanh", "--rate", "0.5", "--num-masks", "400000000", "--x", "-1", "0.5", "2"]


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def env(tmp_path: Path) -> dict[str, str]:
  out = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), TMPDIR=str(tmp_path))
  out["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
  out["JDROP_TEST_READY"] = str(tmp_path / "ready")
  return out


def start(tmp_path: Path, point: str, *args: str, background: bool = False) -> subprocess.Popen:
  """Runs the helper; ``background``: with SIGINT ignored, as a shell's background job."""
  command = [sys.executable, str(HELPER), point, *args]
  if background:  # exec keeps an ignored signal ignored
    ignore = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN)"
    command = [sys.executable, "-c", f"{ignore}; os.execv(sys.argv[1], sys.argv[1:])", *command]
  return subprocess.Popen(
    command, env=env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
  )


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  return process_util.finish(proc, LIMIT, "a process did not finish")


def one_line(stderr: str) -> str:
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr
  assert lines[0].count("python -m jdrop") == 1, lines[0]
  return lines[0]


def log_of(line: str) -> Path:
  path = Path(line.rsplit("its log is ", 1)[1])
  assert path.exists()
  return path


def distributed(port: int, n: int, i: int) -> list[str]:
  common = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--timeout", "5"]
  return [*STUDY, *common, "--process-id", str(i)]


@pytest.mark.slow
@pytest.mark.parametrize(
  "victim, point",
  [(1, "handshake"), (0, "handshake"), (1, "running"), (0, "running")],
)
def test_a_process_killed_mid_run_leaves_one_line_in_every_other(tmp_path, victim, point):
  port = free_port()
  procs = [
    start(tmp_path, point if i == victim else "none", *distributed(port, 2, i)) for i in (0, 1)
  ]
  results = [finish(p) for p in procs]
  for i, (code, out, err) in enumerate(results):
    line = one_line(err)
    assert code == 1 and out == "", (i, err)
    if i == victim:
      assert f"process {i}'s computation was ended by SIGKILL" in line
    else:  # the survivor: JAX's runtime aborted it, or its own timeout ended it
      assert "JAX's distributed runtime" in line or "within" in line or "DEADLINE" in line, line
    assert "Terminating process" not in err and "@ 0x" not in err  # no C++ stack trace
    if "its log is" in line:  # the victim's is empty: SIGKILL leaves no word
      assert str(tmp_path) in line and (i == victim or log_of(line).read_text())


def test_jax_aborting_the_process_is_one_line_with_its_log(tmp_path):
  # --num-processes 1: the handshake is (almost) nothing, but the runtime still starts.
  code, out, err = finish(start(tmp_path, "abort", *distributed(free_port(), 1, 0)))
  line = one_line(err)
  assert code == 1 and out == ""
  assert "process 0's computation was ended by SIGABRT" in line
  log_of(line)


def test_one_process_through_the_supervisor_prints_the_study(tmp_path):
  path = tmp_path / "one.json"
  args = [*distributed(free_port(), 1, 0), "--num-masks", "5000", "--json", str(path)]
  code, out, err = finish(start(tmp_path, "none", *args))
  assert code == 0 and err == "", err
  assert "5000 masks on 2 device(s) in 1 process(es)" in out
  assert json.loads(path.read_text())["processes"] == 1
  assert list(tmp_path.glob("jdrop-mc-*.log")) == []  # the log goes once the child succeeded


@pytest.mark.parametrize(
  ("processes", "signum", "status", "background"),
  [
    (None, signal.SIGINT, 130, False),
    (None, signal.SIGTERM, 143, False),
    (1, signal.SIGTERM, 143, False),  # JAX's runtime takes SIGTERM in the child: SIGINT it is
    (1, signal.SIGTERM, 143, True),  # the child must not inherit an ignored SIGINT
  ],
)
def test_signals_stop_the_study_and_its_child(tmp_path, signum, status, background, processes):
  args = [*STUDY] if processes is None else distributed(free_port(), processes, 0)
  proc = start(tmp_path, "hang", *args, background=background)
  ready = tmp_path / "ready"
  deadline = time.monotonic() + LIMIT
  while not ready.exists():
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.05)
  computing = int(ready.read_text())
  assert (computing == proc.pid) == (processes is None)  # else the supervised child computes
  proc.send_signal(signum)
  signalled = time.monotonic()
  code, out, err = finish(proc)
  assert time.monotonic() - signalled < cli_mc._STOP_SECONDS - 1  # the child stopped, unkilled
  assert code == status and out == ""
  assert one_line(err) == (
    f"python -m jdrop: interrupted by {signum.name}; nothing half-written was left behind"
  )
  with pytest.raises(ProcessLookupError):
    os.kill(computing, 0)


def test_a_killed_supervisor_takes_its_child_along(tmp_path):
  proc = start(tmp_path, "hang", *distributed(free_port(), 1, 0))
  ready = tmp_path / "ready"
  deadline = time.monotonic() + LIMIT
  while not ready.exists():
    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
    time.sleep(0.05)
  child = int(ready.read_text())
  proc.kill()
  finish(proc)
  deadline = time.monotonic() + 10
  while time.monotonic() < deadline:
    try:
      os.kill(child, 0)
    except ProcessLookupError:
      break
    time.sleep(0.05)
  else:
    os.kill(child, signal.SIGKILL)
    pytest.fail("the child outlived its supervisor")


# ----------------------------------------------------------------------------
# Bad arguments: one line, exit 2, before anything runs.


@pytest.mark.parametrize(
  "argv, needle",
  [
    (["glu"], "raised AssertionError: axis size must be divisible by 2"),
    (["tanh", "--seed", "99999999999999999999999"], "argument --seed: must be an integer"),
    (["tanh", "--seed", "-9223372036854775809"], "argument --seed"),
    (["tanh", "--x", "1e39"], "argument --x: must be a finite float32 number"),
    (["tanh", "--x", "-3.5e38"], "argument --x: must be a finite float32 number"),
    (["tanh", "--x", "inf"], "argument --x"),
    (["tanh", "--rtol", "1e39"], "argument --rtol: must be a number >= 0, finite in float32"),
    (["tanh", "--rtol", "-1"], "argument --rtol"),
    (["tanh", "--timeout", "1e12"], "argument --timeout: must be a number of seconds"),
    (["tanh", "--timeout", "0"], "argument --timeout"),
    (["tanh", "--num-processes", "100000000000000000000"], "argument --num-processes"),
    (["tanh", "--process-id", "-1"], "argument --process-id"),
    (["tanh", "--coordinator", "999:1234"], "'999' is neither a dotted IPv4 address"),
    (["tanh", "--coordinator", "127.1:1234"], "'127.1' is neither"),
    (["tanh", "--coordinator", "0x7f000001:1234"], "is neither"),
    (["tanh", "--coordinator", "::1:1234"], "an IPv6 address goes in brackets"),
    (["tanh", "--coordinator", "[::zz]:1234"], "is not an IPv6 address"),
    (["tanh", "--coordinator", "host_name:1234"], "is not a hostname"),
    (["tanh", "--coordinator", "nohost"], "no port in 1..65535"),
    (["tanh", "--coordinator", "h:0"], "no port in 1..65535"),
    (["tanh", "--coordinator", ":1234"], "no host before the ':'"),
    (["tanh", "--json", "/no/such/folder/x.json"], "the folder /no/such/folder does not exist"),
  ],
)
def test_bad_arguments_are_one_line_with_one_prefix(argv, needle, capsys):
  full = ["mc", *argv, "--rate", "0.5", "--num-masks", "10"]
  try:
    status = cli.main(full)
  except SystemExit as exc:
    status = exc.code
  assert status == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1, err
  assert err.count("python -m jdrop") == 1 and "error: python" not in err, err


def test_json_that_cannot_be_written_is_refused_before_the_study(tmp_path, capsys, monkeypatch):
  ran = []
  monkeypatch.setattr(montecarlo, "compare_orders", lambda *a, **k: ran.append(1))
  folder = tmp_path / "folder"
  folder.mkdir()
  targets = [str(folder), "/proc/jdrop.json", str(tmp_path / "missing" / "x.json")]
  if not Path("/proc/self").is_dir():
    targets.remove("/proc/jdrop.json")
  for target in targets:
    assert cli.main(["mc", "tanh", "--rate", "0.5", "--num-masks", "9", "--json", target]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and target in err, err
  assert ran == [] and list(folder.iterdir()) == []


def test_a_json_file_that_appears_during_the_study_is_kept(tmp_path, capsys, monkeypatch):
  path = tmp_path / "out.json"
  compare_orders = montecarlo.compare_orders

  def racing(*args, **kwargs):
    path.write_text("mine")
    return compare_orders(*args, **kwargs)

  monkeypatch.setattr(montecarlo, "compare_orders", racing)
  argv = ["mc", "tanh", "--rate", "0.5", "--num-masks", "50", "--json", str(path)]
  assert cli.main(argv) == 1
  captured = capsys.readouterr()
  assert "tanh, rate 0.5: 50 masks" in captured.out  # the results were printed
  line = one_line(captured.err)
  assert "appeared while the study ran and was left alone" in line
  kept = Path(line.rsplit(" ", 1)[1])
  assert path.read_text() == "mine" and json.loads(kept.read_text())["num_masks"] == 50
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.json", kept.name])
  path.unlink()
  path.write_text("mine again")
  assert cli.main([*argv, "--force"]) == 0  # --force replaces it, whole
  assert json.loads(path.read_text())["num_masks"] == 50
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_child_that_dies_without_a_word_is_described(tmp_path):
  log = tmp_path / "child.log"
  log.write_text(
    "E1204 coordination_service.cc:1549] [1] Use error polling to propagate the following"
    " error to all tasks: UNAVAILABLE: The following tasks are unhealthy (stopped sending"
    " heartbeats):\n1\nF1204 23:10:56 client.h:80] Terminating process because the JAX"
    " distributed service detected fatal errors. absl::Status: UNAVAILABLE: ...\n"
  )
  line = cli_mc._fate(1, -signal.SIGABRT, log)
  assert line.startswith("process 1's computation was ended by SIGABRT: JAX's distributed")
  assert "(UNAVAILABLE: The following tasks are unhealthy" in line and str(log) in line
  log.write_text("terminate called after ...\n  what():  Bad StatusOr access: overflow\n")
  assert "(Bad StatusOr access: overflow)" in cli_mc._fate(0, -signal.SIGABRT, log)
  log.write_text("")
  assert cli_mc._fate(0, 3, log) == (
    f"process 0's computation was ended with exit status 3; its log is {log}"
  )
