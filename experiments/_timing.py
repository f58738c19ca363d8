"""The harness the benchmarks in ``experiments/`` share: timing, the machine, the report.

* Timing: contenders that are already compiled run in interleaved rounds, the starting one
  rotating each round, so that none always runs first or always follows the same other one
  (caches, clock boosts, the allocator); a sample is ``time.perf_counter`` around ``reps``
  back-to-back calls, divided by ``reps``. A benchmark reports medians over the rounds.
* The machine: the date, the processor, the CPU count, ``uname``, the versions and the load
  average (other work on the same cores skews timings), for the report's header.
* The report: times in readable units, Markdown tables, the exact command, output files that
  are never overwritten without ``--force``, and the command-line options the benchmarks share.

Standard library only: a benchmark imports JAX (and blocks on its results) itself.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from jdrop._src import machine

Runner = Callable[[], object]
"""One call of a contender; it returns only when its work is done (``block_until_ready``)."""

# ----------------------------------------------------------------------------
# Timing.


def time_once(run: Runner, reps: int = 1) -> float:
  """Seconds per call of ``run``, over ``reps`` back-to-back calls."""
  start = time.perf_counter()
  for _ in range(reps):
    run()
  return (time.perf_counter() - start) / reps


def calibrate_reps(
  runs: Iterable[Runner], *, warmup: int, min_sample_s: float, max_reps: int
) -> int:
  """Calls per sample, so that a sample of the fastest runner lasts at least ``min_sample_s``.

  Each runner is first called ``warmup`` times (at least once), timed: compilation, allocation
  and caches are paid here, and a runner's fastest call is its time. The answer is in
  ``[1, max_reps]``, so that tiny workloads are not measured at the timer's resolution.
  """
  fastest = min(min(time_once(run) for _ in range(max(warmup, 1))) for run in runs)
  return max(1, min(max_reps, math.ceil(min_sample_s / max(fastest, 1e-9))))


def interleaved(
  runs: Mapping[str, Runner], *, rounds: int, warmup: int = 0, reps: int = 1
) -> dict[str, list[float]]:
  """Seconds per call of each runner, one sample per round, in interleaved rounds.

  Each runner is first called ``warmup`` times, untimed, one runner after the other. In round
  ``r`` the runners run in their order rotated by ``r``; a sample is :func:`time_once` of
  ``reps`` calls.
  """
  names = list(runs)
  for name in names:
    for _ in range(warmup):
      runs[name]()
  samples: dict[str, list[float]] = {name: [] for name in names}
  for r in range(rounds):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      samples[name].append(time_once(runs[name], reps))
  return samples


class Stopwatch:
  """Wall time since the benchmark started, and progress lines stamped with it on stderr."""

  def __init__(self) -> None:
    self.start = time.perf_counter()

  def elapsed(self) -> float:
    """Seconds since this stopwatch was made."""
    return time.perf_counter() - self.start

  def stage(self, text: str) -> None:
    """Prints ``[  12.3 s] text`` to stderr: what the benchmark does now."""
    print(f"[{self.elapsed():6.1f} s] {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# The machine.


def load_average() -> str:
  """The 1/5/15-minute load averages, where the OS reports them, else ``"n/a"``."""
  if not hasattr(os, "getloadavg"):
    return "n/a"
  return " ".join(f"{value:.2f}" for value in os.getloadavg())


def processor() -> str:
  """The CPU's model name (:func:`jdrop._src.machine.processor`)."""
  return machine.processor()


def machine_info() -> dict[str, Any]:
  """When and on what a benchmark runs: the date (UTC), the processor, CPU count, ``uname``."""
  return {
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "processor": processor(),
    "cpu_count": os.cpu_count(),
    "uname": " ".join(platform.uname()),
  }


def versions(*modules: ModuleType) -> dict[str, str]:
  """Python's version, then each module's ``__version__`` under its name, in order."""
  return {"python": platform.python_version()} | {m.__name__: m.__version__ for m in modules}


# ----------------------------------------------------------------------------
# The report.

_UNITS = (("µs", 1e-6), ("ms", 1e-3), ("s", 1.0))


def fmt_time(seconds: float, *, finest: str = "µs") -> str:
  """``seconds`` in the largest unit it reaches, ``finest`` at the least.

  One decimal in ``finest`` and one more in each larger unit: ``"12.3 µs"``, ``"4.56 ms"``,
  ``"7.890 s"``; with ``finest="ms"``: ``"0.1 ms"``, ``"4.6 ms"``, ``"7.89 s"``.
  """
  names = [name for name, _ in _UNITS]
  if finest not in names:
    raise ValueError(f"fmt_time: finest must be one of {names}, got {finest!r}")
  units = _UNITS[names.index(finest) :]
  for digits, ((name, scale), (_, larger)) in enumerate(itertools.pairwise(units), start=1):
    if seconds < larger:
      return f"{seconds / scale:.{digits}f} {name}"
  return f"{seconds:.{len(units)}f} s"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, align: str = "") -> list[str]:
  """A Markdown table, one string a line; ``align`` holds ``l`` or ``r`` per column (left)."""
  if align.strip("lr") or len(align) > len(header):
    raise ValueError(f"table: align must be l/r letters, one per column, got {align!r}")
  rules = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rules) + "|"]
  return lines + ["| " + " | ".join(row) + " |" for row in rows]


def command_line(script: str, argv: Sequence[str]) -> str:
  """The command that reruns this benchmark from the repository root, with its PYTHONPATH."""
  command = shlex.join(["python", script, *argv])
  pythonpath = os.environ.get("PYTHONPATH")
  return f"PYTHONPATH={shlex.quote(pythonpath)} {command}" if pythonpath else command


def refuse_to_overwrite(prog: str, outputs: Mapping[str, Path | None], *, force: bool) -> bool:
  """Whether to stop because an output exists and ``--force`` is not given (said on stderr).

  ``outputs`` maps each option that names an output file to its path (``None``: not written).
  """
  existing = [str(path) for path in outputs.values() if path is not None and path.exists()]
  if not existing or force:
    return False
  print(
    f"{prog}: refusing to overwrite {', '.join(existing)}; pass --force to replace it, or"
    f" {'/'.join(outputs)} to write elsewhere.",
    file=sys.stderr,
  )
  return True


def write_outputs(
  out: Path, markdown: str, json_path: Path | None = None, results: Any = None, *, indent: int = 2
) -> None:
  """Writes the Markdown report (and ``results`` as JSON), making their folders; prints it."""
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(markdown)
  if json_path is not None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=indent) + "\n")
  print(markdown)


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
  return value


def add_report_options(
  parser: argparse.ArgumentParser,
  *,
  quick: str,
  out: str,
  rounds: int,
  json_help: str = "also write the results as JSON here",
) -> None:
  """Adds the options every benchmark takes: ``--quick``, ``--out``, ``--json``, ``--rounds``
  (at least 1; ``None`` when not given) and ``--force``.

  ``quick`` says what ``--quick`` does, ``out`` is the default report's path and ``rounds`` the
  default number of timed rounds, for the help.
  """
  parser.add_argument("--quick", action="store_true", help=quick)
  parser.add_argument("--out", type=Path, help=f"Markdown report (default {out})")
  parser.add_argument("--json", type=Path, help=json_help)
  parser.add_argument("--rounds", type=_positive_int, help=f"timed rounds (default {rounds})")
  parser.add_argument("--force", action="store_true", help="overwrite existing output files")
