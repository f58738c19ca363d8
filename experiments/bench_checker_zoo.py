"""How decisive, how right and how fast ``jdrop.check`` is on the adversarial zoo.

Run from the repository root::

  PYTHONPATH=.:tests python experiments/bench_checker_zoo.py [--rounds 3] [--out PATH.md] [--force]

``tests/checker_zoo.py`` holds 467 functions with hand-derived truths (``holds``, ``fails`` or
``undefined``) for both questions (pathwise, in expectation), in nine categories. For each
category the table gives:

* **wrong**: "proved" where the truth is ``fails`` or ``undefined``, or "refuted" where it is
  ``holds`` (the goal, issue 11: 0), and **raised**: ``check`` raised (goal: 0);
* **decided**: the share of questions with a definite truth (``holds``/``fails``) that got
  "proved"/"refuted" (goal, issue 11: at least 92% on the testers' held-out set);
* **warm time**: ``check(f, float_level=False)`` again on the same function object, median
  over ``--rounds`` interleaved passes, then the median and the maximum over the category.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

from experiments import _timing

DEFINITE = ("holds", "fails")
WRONG = {"holds": ("refuted",), "fails": ("proved",), "undefined": ("proved",)}


def _judge(case, verdict) -> tuple[int, int, int]:
  """(wrong, decided, definite) question counts for one case."""
  wrong = decided = definite = 0
  for mode in ("pathwise", "expectation"):
    truth, status = getattr(case, mode), getattr(verdict, mode).status
    wrong += status in WRONG[truth]
    if truth in DEFINITE:
      definite += 1
      decided += status in ("proved", "refuted") and status not in WRONG[truth]
  return wrong, decided, definite


def run(rounds: int) -> tuple[dict, list[str]]:
  import checker_zoo

  import jdrop

  stats: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  times: dict[str, list[float]] = collections.defaultdict(list)
  problems = []
  samples: dict[str, list[float]] = collections.defaultdict(list)
  for r in range(rounds + 1):
    for case in checker_zoo.ZOO:
      start = time.perf_counter()
      try:
        verdict = jdrop.check(case.fn, rate=case.rate, shape=case.shape, float_level=False)
      except Exception as e:
        if r == 0:
          stats[case.category]["raised"] += 1
          problems.append(f"{case.name}: raised {type(e).__name__}: {e}")
        continue
      if r == 0:  # the first pass traces and judges; the later ones are timed warm
        wrong, decided, definite = _judge(case, verdict)
        stats[case.category].update(
          cases=1, wrong=wrong, decided=decided, definite=definite, questions=2
        )
        if wrong:
          problems.append(f"{case.name}: wrong ({verdict.pathwise}; {verdict.expectation})")
      else:
        samples[case.name].append(time.perf_counter() - start)
  for case in checker_zoo.ZOO:
    if samples[case.name]:
      times[case.category].append(statistics.median(samples[case.name]))
  return {"stats": stats, "times": times}, problems


def category_table(result: dict) -> str:
  stats, times = result["stats"], result["times"]
  rows = []
  total: collections.Counter = collections.Counter()
  every: list[float] = []
  for name, c in stats.items():
    total.update(c)
    every.extend(times[name])
    rows.append(_row(name, c, times[name]))
  rows.append(_row("**all**", total, every))
  header = ["category", "functions", "wrong", "raised", "decided", "warm median", "warm max"]
  return "\n".join(_timing.table(header, rows, align="lrrrrrr"))


def _row(name: str, c: collections.Counter, t: list[float]) -> list[str]:
  share = c["decided"] / c["definite"] if c["definite"] else float("nan")
  median = statistics.median(t) * 1e3 if t else float("nan")
  peak = max(t) * 1e3 if t else float("nan")
  return [
    name,
    str(c["cases"]),
    str(c["wrong"]),
    str(c["raised"]),
    f"{c['decided']}/{c['definite']} ({share:.1%})",
    f"{median:.0f} ms",
    f"{peak:.0f} ms",
  ]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--out", type=Path, default=None)
  parser.add_argument("--force", action="store_true")
  args = parser.parse_args()
  if _timing.refuse_to_overwrite("bench_checker_zoo.py", {"--out": args.out}, force=args.force):
    sys.exit(1)
  import jax

  import jdrop  # noqa: F401

  result, problems = run(args.rounds)
  text = "\n".join(
    [
      "# jdrop.check on the adversarial zoo (tests/checker_zoo.py)",
      "",
      f"{datetime.date.today()}, {platform.machine()} CPU, {_cores()} cores, Python"
      f" {platform.python_version()}, jax {jax.__version__}, python-flint {_flint()};"
      f" `PYTHONPATH=.:tests python experiments/bench_checker_zoo.py --rounds {args.rounds}`",
      "",
      category_table(result),
      "",
      *(f"- {p}" for p in problems),
    ]
  )
  print(text)
  if args.out is not None:
    args.out.write_text(text + "\n")


def _cores() -> int:
  import os

  return len(os.sched_getaffinity(0))


def _flint() -> str:
  import flint

  return flint.__version__


if __name__ == "__main__":
  main()
