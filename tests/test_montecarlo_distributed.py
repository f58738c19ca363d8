"""The same Monte-Carlo study on 1, 2 and 4 devices and on 2 processes gives the same numbers.

Every run is a subprocess with forced host CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=N``, ``JAX_PLATFORMS=cpu``) and a hard
timeout, so a hang fails the test instead of stalling CI. Two processes meet on a free port of
127.0.0.1 through ``jdrop.montecarlo.initialize`` (JAX's distributed runtime, CPU collectives
over gloo). Equality is to 1e-5 relative: the merge order of the chunks differs with the
number of devices (``post``, ``mismatch_fraction`` and ``max_abs_diff`` are exact).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import run_mc_devices

from jdrop import montecarlo

# Slow (several JAX processes over 127.0.0.1: 15-30 s each);
# CI runs them, `pytest -m 'not slow'` skips them.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds for any subprocess: a hang fails the test
# ``python -m jdrop mc`` once cli.py registers the subcommand; the module runs it on its own.
MC = [sys.executable, "-m", "jdrop", "mc"]


def env(devices: int) -> dict[str, str]:
  out = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  out["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return out


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_together(commands: list[list[str]], devices: int) -> list[subprocess.CompletedProcess]:
  """Starts every command at once and waits for all of them, killing all on a timeout."""
  procs = [
    subprocess.Popen(c, env=env(devices), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     text=True)
    for c in commands
  ]  # fmt: skip
  try:
    outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"a process did not finish within {TIMEOUT} s: {commands}")
  return [
    subprocess.CompletedProcess(c, p.returncode, out, err)
    for c, p, (out, err) in zip(commands, procs, outputs, strict=True)
  ]


def assert_same_study(got: dict, want: dict) -> None:
  for key, value in want.items():
    if key.startswith("pre"):
      np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
    else:
      np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_results_do_not_depend_on_the_number_of_devices():
  (done,) = run_together([[sys.executable, str(ROOT / "tests" / "run_mc_devices.py")]], devices=4)
  assert done.returncode == 0, done.stderr
  results = json.loads(done.stdout)
  assert sorted(results) == ["1", "2", "4"]
  for n in ("2", "4"):
    assert_same_study(results[n], results["1"])
  # ... and equal those of this process (one device, or however many it has).
  assert_same_study(run_mc_devices.study(jax.devices()), results["1"])


def study_json(path: Path) -> dict:
  data = json.loads(path.read_text())
  flat = {f"{o}.{s}": data[o][s] for o in ("pre", "post") for s in ("mean", "var", "stderr")}
  return flat | {k: data[k] for k in ("mismatch_fraction", "max_abs_diff")}


ARGS = ["tanh", "--rate", "0.4", "--num-masks", "20000", "--x", "-2", "-0.5", "0", "1", "3"]


def test_two_processes_with_two_devices_each_match_one_process(tmp_path):
  port, path = free_port(), tmp_path / "two.json"
  common = [*MC, *ARGS, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
  first, second = run_together(
    [[*common, "--process-id", "0", "--json", str(path)], [*common, "--process-id", "1"]],
    devices=2,
  )
  assert first.returncode == 0 and second.returncode == 0, (first.stderr, second.stderr)
  assert "20000 masks on 4 device(s) in 2 process(es)" in first.stdout
  assert second.stdout == ""  # only process 0 prints and writes
  data = json.loads(path.read_text())
  assert (data["devices"], data["processes"], data["num_masks"]) == (4, 2, 20000)
  one = montecarlo.compare_orders(
    jax.random.key(0), "tanh", jnp.array([-2.0, -0.5, 0.0, 1.0, 3.0]), rate=0.4, num_masks=20000
  )
  want = {f"{o}.{s}": np.asarray(getattr(getattr(one, o), s)).tolist() for o in ("pre", "post")
          for s in ("mean", "var", "stderr")}  # fmt: skip
  want |= {"mismatch_fraction": one.mismatch_fraction, "max_abs_diff": one.max_abs_diff}
  assert_same_study(study_json(path), want)


def one_line_error(done: subprocess.CompletedProcess) -> str:
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1, done.stderr
  return lines[0]


def test_unreachable_coordinator_exits_1_with_one_line_within_the_timeout():
  port = free_port()
  command = [*MC, *ARGS, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
  (done,) = run_together([[*command, "--process-id", "1", "--timeout", "2"]], devices=2)
  assert done.returncode == 1
  assert f"could not reach the coordinator at 127.0.0.1:{port} within 2 s" in one_line_error(done)


def test_mismatched_process_counts_fail_in_every_process():
  port = free_port()
  common = [*MC, *ARGS, "--coordinator", f"127.0.0.1:{port}", "--timeout", "20"]
  first, second = run_together(
    [
      [*common, "--num-processes", "2", "--process-id", "0"],
      [*common, "--num-processes", "3", "--process-id", "1"],
    ],
    devices=2,
  )
  for done in (first, second):
    assert done.returncode == 2
    assert "mismatched process counts: process 1 was started with num_processes=3" in (
      one_line_error(done)
    )
