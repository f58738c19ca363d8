"""Benchmarks of jdrop.montecarlo: masks per second, one vmapped call against a Python loop,
and the same study on 1, 2 and 4 devices and on 2 processes.

Run from the repository root::

  PYTHONPATH=. python experiments/bench_montecarlo.py [--quick] [--out PATH.md] [--json PATH]
      [--rounds N] [--force]

What is measured, for ``tanh`` at rate 0.5 on a float32 ``x`` of 4096 elements:

* **engine**: ``jdrop.montecarlo.compare_orders`` at 1024 and 16384 masks in this process.
* **vmapped against a loop** at 1024 masks: ``compare_orders`` (one call: a jitted loop over
  vmapped chunks of masks) against a Python loop of 1024 calls of one jitted function that draws
  mask ``i`` with ``jdrop.keep_mask(fold_in(key, i))``, applies both orders with
  ``jdrop.apply_mask`` and updates running statistics (Welford): the same work, one mask per
  call. Both are checked to give the same statistics before anything is timed.
* **devices and processes**: the same study (16384 masks) in a fresh process with 1, 2 and 4
  forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), and in 2
  processes of 1 and of 2 devices (``jdrop.montecarlo.initialize``: JAX's distributed runtime,
  CPU collectives over gloo, on 127.0.0.1). Every run's statistics are checked against the
  1-device run (1e-5 relative) before its time is reported.
* **10^7 masks**: ``compare_orders`` on the command line's 7-element ``x``, with the peak
  resident memory of the process after 10^5 and after 10^7 masks (memory must not grow).

Timing: after compilation and a warm-up call, contenders in one process run in interleaved
rounds (the starting one rotating); a sample is ``time.perf_counter`` around one call that
blocks until the result is ready. Tables show medians over the rounds; ratios are ratios of
medians. Each device or process configuration runs in its own subprocess (the device count is
fixed when JAX starts), one after the other. The report records the machine, the versions and
the load average: other work on the same cores skews the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

import jdrop
from experiments import _timing
from experiments._timing import table
from jdrop import montecarlo
from jdrop._src.montecarlo import common as mc_common

RATE = 0.5
SIZE = 4096
ACTIVATION = "tanh"
LOOP_MASKS = 1024
SCALE_MASKS = 16384
BIG_MASKS = 10**7
QUICK = dict(loop_masks=128, scale_masks=1024, big_masks=10**5, rounds=2)
DEFAULT_ROUNDS = 7
RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
WORKER_TIMEOUT = 600
CONFIGS = ((1, 1), (2, 1), (4, 1), (1, 2), (2, 2))  # (devices per process, processes)


def inputs() -> tuple[jax.Array, jax.Array]:
  return jax.random.key(0), jax.random.normal(jax.random.key(1), (SIZE,), jnp.float32)


def study(num_masks: int) -> montecarlo.Comparison:
  key, x = inputs()
  return montecarlo.compare_orders(key, ACTIVATION, x, rate=RATE, num_masks=num_masks)


def flat(result: montecarlo.Comparison) -> dict[str, Any]:
  data = {
    f"{order}.{stat}": np.asarray(getattr(getattr(result, order), stat), np.float64).tolist()
    for order in ("pre", "post")
    for stat in ("mean", "var")
  }
  return data | {"mismatch_fraction": result.mismatch_fraction}


# ----------------------------------------------------------------------------
# The Python loop of jitted single-mask calls.


def loop_step():
  key, x = inputs()
  f = jnp.tanh
  rtol = np.float32(montecarlo.default_rtol(jnp.float32))

  @jax.jit
  def step(state, i):
    n, pre_mean, pre_m2, post_mean, post_m2, mismatches = state
    mask = jdrop.keep_mask(jax.random.fold_in(key, i), x.shape, rate=RATE)
    pre = f(jdrop.apply_mask(x, mask, rate=RATE))
    post = jdrop.apply_mask(f(x), mask, rate=RATE)
    n = n + 1
    delta = pre - pre_mean
    pre_mean = pre_mean + delta / n
    pre_m2 = pre_m2 + delta * (pre - pre_mean)
    delta = post - post_mean
    post_mean = post_mean + delta / n
    post_m2 = post_m2 + delta * (post - post_mean)
    bad, _ = mc_common.disagreement(pre[None], post[None], rtol, jnp.ones((1,), bool))
    return n, pre_mean, pre_m2, post_mean, post_m2, mismatches + bad

  def loop(num_masks: int):
    zeros = jnp.zeros((SIZE,), jnp.float32)
    state = (jnp.float32(0), zeros, zeros, zeros, zeros, jnp.int32(0))
    for i in range(num_masks):
      state = step(state, np.uint32(i))
    return jax.block_until_ready(state)

  return loop


def check_loop(loop_state, engine: montecarlo.Comparison, num_masks: int) -> None:
  _, pre_mean, pre_m2, post_mean, post_m2, mismatches = (np.asarray(v) for v in loop_state)
  checks = {
    "pre mean": (pre_mean, engine.pre.mean),
    "pre var": (pre_m2 / (num_masks - 1), engine.pre.var),
    "post mean": (post_mean, engine.post.mean),
    "post var": (post_m2 / (num_masks - 1), engine.post.var),
  }
  for what, (got, want) in checks.items():
    if not np.allclose(got, want, rtol=1e-4, atol=1e-5):
      raise SystemExit(f"bench_montecarlo.py: the loop and the engine differ in {what}")
  if int(mismatches) / num_masks != engine.mismatch_fraction:
    raise SystemExit("bench_montecarlo.py: the loop and the engine count different mismatches")


def bench_loop(num_masks: int, rounds: int) -> dict[str, Any]:
  loop = loop_step()
  check_loop(loop(num_masks), study(num_masks), num_masks)
  samples = _timing.interleaved(
    {"compare_orders (vmapped)": lambda: study(num_masks), "loop": lambda: loop(num_masks)},
    rounds=rounds,
    warmup=1,
  )
  return {"num_masks": num_masks, "samples": samples}


def bench_engine(sizes: Sequence[int], rounds: int) -> dict[str, Any]:
  runs = {str(n): (lambda n=n: study(n)) for n in sizes}
  samples = _timing.interleaved(runs, rounds=rounds, warmup=1)
  return {"samples": samples}


# ----------------------------------------------------------------------------
# Workers: one device/process configuration each, in a subprocess.


def worker(args: argparse.Namespace) -> int:
  if args.coordinator is not None:
    montecarlo.initialize(
      args.coordinator, num_processes=args.num_processes, process_id=args.process_id, timeout=120
    )
  if args.memory:
    small = 10**5 if args.big_masks > 10**5 else 10**3
    key = jax.random.key(0)
    x = jnp.asarray([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    montecarlo.compare_orders(key, ACTIVATION, x, rate=RATE, num_masks=small)
    rss_small = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = montecarlo.compare_orders(key, ACTIVATION, x, rate=RATE, num_masks=args.big_masks)
    seconds = time.perf_counter() - start
    rss_big = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    report = {"small": small, "rss_small_kb": rss_small, "rss_big_kb": rss_big}
    report |= {"seconds": seconds, "num_masks": out.num_masks, "devices": jax.device_count()}
  else:
    result = study(args.masks)  # compile and warm up
    samples, cpu = [], []
    for _ in range(args.rounds):
      wall_start, cpu_start = time.perf_counter(), time.process_time()
      study(args.masks)
      samples.append(time.perf_counter() - wall_start)
      cpu.append(time.process_time() - cpu_start)
    report = {"samples": samples, "cpu_s": median(cpu), "result": flat(result)}
    report |= {"devices": jax.device_count(), "processes": jax.process_count()}
  if jax.process_index() == 0:
    print(json.dumps(report))
  return 0


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def run_workers(devices: int, processes: int, extra: list[str]) -> dict[str, Any]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  command = [sys.executable, str(SCRIPT), "--worker", *extra]
  if processes > 1:
    command += ["--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", str(processes)]
    commands = [[*command, "--process-id", str(i)] for i in range(processes)]
  else:
    commands = [command]
  procs = [
    subprocess.Popen(
      c, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for c in commands
  ]
  outputs = [p.communicate(timeout=WORKER_TIMEOUT) for p in procs]
  for p, (_, err) in zip(procs, outputs, strict=True):
    if p.returncode:
      raise SystemExit(f"bench_montecarlo.py: a worker failed:\n{err}")
  # gloo logs its connections on stdout: the report is the last line.
  return json.loads(outputs[0][0].strip().splitlines()[-1])


def bench_scaling(masks: int, rounds: int) -> list[dict[str, Any]]:
  rows = []
  for devices, processes in CONFIGS:
    print(f"  {devices} device(s) x {processes} process(es)", file=sys.stderr, flush=True)
    extra = ["--masks", str(masks), "--rounds", str(rounds)]
    rows.append(run_workers(devices, processes, extra) | {"per_process": devices})
  base = rows[0]["result"]
  for row in rows:
    for name, value in base.items():
      if not np.allclose(row["result"][name], value, rtol=1e-5, atol=1e-7):
        raise SystemExit(f"bench_montecarlo.py: {row['devices']} devices differ in {name}")
  return rows


# ----------------------------------------------------------------------------
# The report.


def fmt_time(seconds: float) -> str:
  return _timing.fmt_time(seconds, finest="ms")


def render(results: dict[str, Any]) -> str:
  meta = results["meta"]
  lines = [
    "# jdrop.montecarlo benchmarks (cpu)",
    "",
    f"- command: `{meta['command']}`",
    f"- date: {meta['date']}",
    f"- machine: {meta['processor']}; {meta['cpu_count']} CPUs; {meta['uname']}",
    f"- load average (1/5/15 min): {meta['load_start']} at the start, {meta['load_end']} at"
    f" the end; wall time {meta['wall_s']:.0f} s",
    "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    f"- study: {ACTIVATION}, rate {RATE}, float32 x of {SIZE} elements; {meta['rounds']}"
    " interleaved rounds after a warm-up call; medians; ratios of medians",
    "",
    "## One vmapped call against a Python loop of jitted single-mask calls",
    "",
  ]
  loop = results["loop"]
  n = loop["num_masks"]
  vmapped = median(loop["samples"]["compare_orders (vmapped)"])
  looped = median(loop["samples"]["loop"])
  lines += table(
    ["masks", "compare_orders", "loop of jitted calls", "speed-up"],
    [[str(n), fmt_time(vmapped), fmt_time(looped), f"{looped / vmapped:.1f}x"]],
  )
  lines += ["", "## Masks per second (this process, 1 device)", ""]
  engine = results["engine"]["samples"]
  lines += table(
    ["masks", "median", "masks/s"],
    [[k, fmt_time(median(v)), f"{int(k) / median(v):,.0f}"] for k, v in engine.items()],
  )
  lines += ["", "## Devices and processes (forced host devices, one subprocess each)", ""]
  rows = results["scaling"]
  base = median(rows[0]["samples"])
  lines += table(
    ["devices per process", "processes", "devices", "median", "masks/s", "vs 1 device",
     "CPU time / wall (process 0)"],
    [
      [
        str(r["per_process"]),
        str(r["processes"]),
        str(r["devices"]),
        fmt_time(median(r["samples"])),
        f"{results['scale_masks'] / median(r['samples']):,.0f}",
        f"{base / median(r['samples']):.2f}x",
        f"{r['cpu_s'] / median(r['samples']):.2f}",
      ]
      for r in rows
    ],
  )  # fmt: skip
  lines += [
    "",
    f"Every configuration's statistics equal the 1-device run's to 1e-5 relative (checked);"
    f" {results['scale_masks']} masks each. Forced host devices are slices of the same"
    f" {meta['cpu_count']} CPU cores: where one device already keeps every core busy (CPU"
    " time / wall near the core count), more devices or processes only add the cost of"
    " merging and of the collectives; they pay off with more cores or real accelerators.",
    "",
    "## Memory does not grow with the number of masks",
    "",
  ]
  mem = results["memory"]
  lines += table(
    ["masks", "peak RSS after", "time"],
    [
      [f"{mem['small']:,}", f"{mem['rss_small_kb'] / 1024:.0f} MiB", "-"],
      [
        f"{mem['num_masks']:,}",
        f"{mem['rss_big_kb'] / 1024:.0f} MiB",
        f"{fmt_time(mem['seconds'])} ({mem['num_masks'] / mem['seconds']:,.0f} masks/s)",
      ],
    ],
  )
  lines += ["", "## Goals", ""]
  for goal in results["goals"]:
    lines.append(f"- {goal['goal']}: {goal['text']} ({'met' if goal['met'] else '**missed**'})")
  return "\n".join(lines) + "\n"


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
  loop = results["loop"]["samples"]
  speedup = median(loop["loop"]) / median(loop["compare_orders (vmapped)"])
  mem = results["memory"]
  growth = (mem["rss_big_kb"] - mem["rss_small_kb"]) / 1024
  return [
    {
      "goal": "one vmapped call beats a loop of jitted single-mask calls by >= 5x at 1024 masks",
      "met": speedup >= 5,
      "text": f"{speedup:.1f}x",
    },
    {
      "goal": "memory does not grow with num_masks",
      "met": growth < 64,
      "text": f"peak RSS grew by {growth:.0f} MiB from {mem['small']:,} to"
      f" {mem['num_masks']:,} masks",
    },
  ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="experiments/bench_montecarlo.py", description=__doc__)
  _timing.add_report_options(
    parser,
    quick="small sizes, 2 rounds (smoke test)",
    out="experiments/results/montecarlo-cpu.md",
    rounds=DEFAULT_ROUNDS,
  )
  # Internal: one configuration in a subprocess.
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--masks", type=int, default=SCALE_MASKS, help=argparse.SUPPRESS)
  parser.add_argument("--big-masks", type=int, default=BIG_MASKS, help=argparse.SUPPRESS)
  parser.add_argument("--coordinator", help=argparse.SUPPRESS)
  parser.add_argument("--num-processes", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--process-id", type=int, help=argparse.SUPPRESS)
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  if args.worker:
    args.rounds = args.rounds or DEFAULT_ROUNDS
    return worker(args)
  out = args.out or RESULTS_DIR / "montecarlo-cpu.md"
  outputs = {"--out": out, "--json": args.json}
  if _timing.refuse_to_overwrite("bench_montecarlo.py", outputs, force=args.force):
    return 2
  sizes = QUICK if args.quick else {}
  rounds = args.rounds or sizes.get("rounds", DEFAULT_ROUNDS)
  loop_masks = sizes.get("loop_masks", LOOP_MASKS)
  scale_masks = sizes.get("scale_masks", SCALE_MASKS)
  big_masks = sizes.get("big_masks", BIG_MASKS)
  clock = _timing.Stopwatch()
  results: dict[str, Any] = {
    "meta": {
      "command": _timing.command_line("experiments/bench_montecarlo.py", argv),
      **_timing.machine_info(),
      "versions": _timing.versions(jax, jaxlib, np),
      "rounds": rounds,
      "load_start": _timing.load_average(),
    },
    "scale_masks": scale_masks,
  }
  clock.stage(f"vmapped against a loop, {loop_masks} masks")
  results["loop"] = bench_loop(loop_masks, rounds)
  clock.stage("masks per second")
  results["engine"] = bench_engine((loop_masks, scale_masks), rounds)
  clock.stage(f"devices and processes, {scale_masks} masks")
  results["scaling"] = bench_scaling(scale_masks, rounds)
  clock.stage(f"memory, {big_masks:,} masks")
  results["memory"] = run_workers(1, 1, ["--memory", "--big-masks", str(big_masks)])
  results["goals"] = goals(results)
  results["meta"]["load_end"] = _timing.load_average()
  results["meta"]["wall_s"] = clock.elapsed()
  _timing.write_outputs(out, render(results), args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
