"""How fast ``jdrop.check`` decides the activation registry.

Run from the repository root::

  PYTHONPATH=. python experiments/bench_checker.py [--runs 3] [--rounds 5] [--out PATH.md] [--force]

What is measured, for the registry's shape-preserving activations plus four parametric
variants (38 functions), each decided in both modes (pathwise and in expectation) for every
rate (``rate=None``):

* **cold**: a fresh Python process imports jdrop and decides all of them; the wall time from
  the first ``check`` call to the last (and, separately, including ``import jdrop``). With and
  without the float-level finding (one ``jit`` compilation per function). Median of ``--runs``
  processes.
* **warm**: in one process, after a first pass, the time of ``check(f)`` for each function
  again (the same function objects), median over ``--rounds`` interleaved passes; the table
  gives the median and the maximum over functions.

The goals (issue 3): cold < 10 s for the whole registry on 2 CPU cores; warm < 200 ms per
function. They are evaluated, never assumed.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from experiments import _timing

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import jdrop
from experiments.bench_checker import functions
t1 = time.perf_counter()
float_level = sys.argv[1] == "1"
for name, f in functions():
  v = jdrop.check(f, float_level=float_level)
  assert v.pathwise.status and v.expectation.status
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "decide": t2 - t1}))
"""


def functions():
  """(name, function) pairs: every shape-preserving registry entry, plus parametric ones."""
  import jax

  from jdrop import activations

  out = []
  for name in activations.names():
    if name == "glu":  # halves its input: not a candidate for a shared mask
      continue
    out.append((name, activations.get(name)))
  out += [
    ("relu(max_value=1)", activations.get("relu", max_value=1.0)),
    ("leaky_relu(0.2)", activations.get("leaky_relu", negative_slope=0.2)),
    ("softplus(beta=2)", activations.get("softplus", beta=2.0)),
    ("hard_tanh(-2, 2)", activations.get("hard_tanh", min_val=-2.0, max_val=2.0)),
  ]
  assert all(callable(f) for _, f in out) and jax is not None
  return out


def cold(float_level: bool, runs: int) -> dict[str, float]:
  env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
  samples = []
  for _ in range(runs):
    out = subprocess.run(
      [sys.executable, "-c", _CHILD, "1" if float_level else "0"],
      capture_output=True,
      text=True,
      check=True,
      env=env,
    )
    samples.append(json.loads(out.stdout.strip().splitlines()[-1]))
  return {
    "decide": statistics.median(s["decide"] for s in samples),
    "with_import": statistics.median(s["decide"] + s["import"] for s in samples),
  }


def warm(float_level: bool, rounds: int) -> dict[str, float]:
  import jdrop

  runs = {
    name: functools.partial(jdrop.check, f, float_level=float_level) for name, f in functions()
  }
  times = _timing.interleaved(runs, rounds=rounds, warmup=1)
  medians = {name: statistics.median(ts) for name, ts in times.items()}
  worst = max(medians, key=medians.get)
  return {
    "median": statistics.median(medians.values()),
    "max": medians[worst],
    "max_function": worst,
    "count": len(runs),
  }


def report(results: dict, command: str) -> str:
  import flint
  import jax

  lines = [
    "# jdrop checker speed (cpu)",
    "",
    f"- command: `{command}`",
    f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
    f"- machine: {_timing.processor()}, {os.cpu_count()} cores,"
    f" load average {_timing.load_average()}",
    f"- versions: python {platform.python_version()}, jax {jax.__version__},"
    f" python-flint {flint.__version__}",
    f"- functions: {results['count']} (registry + 4 parametric), both modes, every rate",
    "",
  ]
  rows = []
  for key in ("with", "without"):
    c, w = results[key]["cold"], results[key]["warm"]
    met = c["decide"] < 10 and w["max"] < 0.2
    rows.append(
      [
        key,
        f"{c['decide']:.2f} s",
        f"{c['with_import']:.2f} s",
        f"{1e3 * w['median']:.1f} ms",
        f"{1e3 * w['max']:.1f} ms ({w['max_function']})",
        "yes" if met else "no",
      ]
    )
  lines += _timing.table(
    [
      "float-level finding",
      "cold: decide all",
      "cold: incl. import",
      "warm: median/function",
      "warm: slowest function",
      "goals met",
    ],
    rows,
  )
  lines += [
    "",
    "Goals (issue 3): the whole registry in under 10 s cold on 2 CPU cores; under 200 ms per",
    "function warm. Cold times are medians over fresh processes; warm times are medians over",
    "interleaved passes.",
  ]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3, help="fresh processes for the cold time")
  parser.add_argument("--rounds", type=int, default=5, help="warm passes")
  parser.add_argument("--out", default="experiments/results/checker-cpu.md")
  parser.add_argument("--force", action="store_true", help="overwrite --out")
  args = parser.parse_args(argv)
  out = Path(args.out)
  if _timing.refuse_to_overwrite("bench_checker.py", {"--out": out}, force=args.force):
    return 2
  results = {"count": len(functions())}
  for key, float_level in (("with", True), ("without", False)):
    results[key] = {
      "cold": cold(float_level, args.runs),
      "warm": warm(float_level, args.rounds),
    }
  command = _timing.command_line("experiments/bench_checker.py", argv)
  _timing.write_outputs(out, report(results, command))
  return 0


if __name__ == "__main__":
  sys.exit(main())
