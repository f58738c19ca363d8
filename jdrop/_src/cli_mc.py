"""``python -m jdrop mc``: a Monte-Carlo study of both orders of dropout.

``python -m jdrop mc tanh --rate 0.5 --num-masks 1000000 --x -2 -1 0 1 2`` runs
:func:`jdrop.montecarlo.compare_orders` on the given inputs, prints the mean, variance and
standard error of both orders next to the exact values of
:func:`jdrop.montecarlo.exact_moments`, and with ``--json PATH`` writes them as JSON. The
masks are sharded over every device; with ``--coordinator HOST:PORT --num-processes N
--process-id I`` over every device of N processes (see :func:`jdrop.montecarlo.initialize`),
and only process 0 prints and writes. Errors are one line on stderr with exit status 2 (bad
arguments) or 1 (the processes could not meet).

The subcommand is registered in :mod:`jdrop._src.cli` with :func:`add_parser` and
:func:`run`; :func:`main` runs it on its own (``python -m jdrop._src.cli_mc mc ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from typing import TextIO

import jax
import jax.numpy as jnp
import numpy as np

from jdrop._src import activations
from jdrop._src import cli_args
from jdrop._src import montecarlo
from jdrop._src import order

PROG = "python -m jdrop mc"
_PREFIX_COMPARE = "jdrop.montecarlo.compare_orders"
DEFAULT_X = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
DEFAULT_TIMEOUT = 60.0


_num_masks = cli_args.checked(
  int,
  lambda v: 0 < v <= montecarlo.MAX_MASKS,
  f"must be a positive integer of at most {montecarlo.MAX_MASKS}",
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
  """Adds the ``mc`` subcommand to ``subparsers`` (those of ``python -m jdrop``)."""
  mc = subparsers.add_parser(
    "mc",
    help="Monte-Carlo statistics of both orders on the same masks, with exact references",
    description=(
      "Runs pre-activation f(D(x)) and post-activation D(f(x)) dropout on the same masks"
      " and reports per-input means, variances and standard errors, the exact values, and"
      " how often the orders disagree."
    ),
  )
  mc.add_argument("activation", help="a name from jdrop.activations, e.g. tanh")
  mc.add_argument("--rate", type=cli_args.closed_rate, required=True, help="the drop probability")
  mc.add_argument("--num-masks", type=_num_masks, required=True, help="the number of masks")
  mc.add_argument(
    "--x",
    type=cli_args.finite,
    nargs="+",
    default=list(DEFAULT_X),
    metavar="V",
    help="the float32 inputs (default: %(default)s)",
  )
  mc.add_argument("--seed", type=int, default=0, help="seed of the key (default: 0)")
  mc.add_argument(
    "--rtol",
    type=cli_args.non_negative,
    default=None,
    help="relative tolerance for a disagreement (default: 4 float32 epsilons)",
  )
  mc.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
  mc.add_argument("--force", action="store_true", help="overwrite an existing --json file")
  group = mc.add_argument_group(
    "several processes", "all three, the same in every process except --process-id"
  )
  group.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
  group.add_argument("--num-processes", type=int, metavar="N", help="number of processes")
  group.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
  group.add_argument(
    "--timeout",
    type=cli_args.non_negative,
    default=DEFAULT_TIMEOUT,
    metavar="S",
    help="seconds to wait for the other processes (default: %(default)s)",
  )
  return mc


class ProgressBar:
  """A one-line progress bar on ``stream``, drawn only when ``stream`` is a terminal."""

  def __init__(self, stream: TextIO, label: str):
    self.stream = stream
    self.label = label
    self.enabled = bool(getattr(stream, "isatty", lambda: False)())
    self.start = time.monotonic()

  def __call__(self, done: int, total: int) -> None:
    elapsed = max(time.monotonic() - self.start, 1e-9)
    filled = int(30 * done / total)
    rate = done / elapsed
    eta = (total - done) / rate if rate else float("inf")
    self.stream.write(
      f"\r{self.label} [{'#' * filled}{'.' * (30 - filled)}] {100 * done / total:3.0f}%"
      f" {done}/{total} masks, {rate:.3g} masks/s, {eta:.0f} s left "
    )
    if done >= total:
      self.stream.write("\n")
    self.stream.flush()


def _check_processes(args: argparse.Namespace) -> bool:
  """Validates the multi-process options; True if this is a multi-process run."""
  given = [args.coordinator is not None, args.num_processes is not None]
  given.append(args.process_id is not None)
  if not any(given):
    return False
  if not all(given):
    raise ValueError(
      "--coordinator, --num-processes and --process-id go together; pass all three"
      " (e.g. --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0)"
    )
  if args.num_processes < 1:
    raise ValueError(f"--num-processes must be at least 1, got {args.num_processes}")
  if not 0 <= args.process_id < args.num_processes:
    raise ValueError(
      f"--process-id must be in 0..{args.num_processes - 1} for --num-processes"
      f" {args.num_processes}, got {args.process_id}"
    )
  if args.timeout <= 0:
    raise ValueError(f"--timeout must be positive, got {args.timeout}")
  montecarlo.parse_address(PROG, args.coordinator, arg="--coordinator")
  return True


def _check_output(path: str | None, force: bool) -> None:
  if path is None:
    return
  target = Path(path)
  if target.exists() and not force:
    raise ValueError(f"{path} exists; pass --force to overwrite it")
  if not target.parent.is_dir():
    raise ValueError(f"cannot write {path}: the folder {target.parent} does not exist")


def _lists(moments: montecarlo.Moments, fields: Sequence[str]) -> dict[str, list[float]]:
  return {name: np.asarray(getattr(moments, name), np.float64).tolist() for name in fields}


def report(
  args: argparse.Namespace,
  result: montecarlo.Comparison,
  exact: montecarlo.Exact | None,
  seconds: float,
) -> dict[str, Any]:
  """The JSON document of a run."""
  return {
    "activation": args.activation,
    "rate": args.rate,
    "num_masks": result.num_masks,
    "seed": args.seed,
    "x": [float(v) for v in args.x],
    "pre": _lists(result.pre, ("mean", "var", "stderr")),
    "post": _lists(result.post, ("mean", "var", "stderr")),
    "reference": np.asarray(result.reference, np.float64).tolist(),
    "mismatch_fraction": result.mismatch_fraction,
    "max_abs_diff": result.max_abs_diff,
    "rtol": result.rtol,
    "exact": None
    if exact is None
    else {
      "pre": _lists(exact.pre, ("mean", "var")),
      "post": _lists(exact.post, ("mean", "var")),
    },
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "seconds": seconds,
  }


def render(data: dict[str, Any]) -> str:
  """The human-readable summary of a run's JSON document."""
  speed = data["num_masks"] / max(data["seconds"], 1e-9)
  lines = [
    f"{data['activation']}, rate {data['rate']:g}: {data['num_masks']} masks on"
    f" {data['devices']} device(s) in {data['processes']} process(es),"
    f" {data['seconds']:.2f} s ({speed:.3g} masks/s)",
    "(exact values in brackets; a +- is one standard error)",
  ]
  exact = data["exact"]
  header = ["x", "f(x)", "pre mean", "post mean", "pre var", "post var"]
  rows = []
  for i, x in enumerate(data["x"]):
    row = [f"{x:g}", f"{data['reference'][i]:.5g}"]
    for stat in ("mean", "var"):
      for name in ("pre", "post"):
        cell = f"{data[name][stat][i]:.5g}"
        if stat == "mean":
          cell += f" +- {data[name]['stderr'][i]:.2g}"
        if exact is not None:
          cell += f" [{exact[name][stat][i]:.5g}]"
        row.append(cell)
    rows.append(row)
  widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
  for r in [header, *rows]:
    lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
  lines.append(
    f"the orders disagree (beyond rtol {data['rtol']:.2g}) on"
    f" {100 * data['mismatch_fraction']:.4g}% of the masks; max |pre - post| ="
    f" {data['max_abs_diff']:.4g}"
  )
  return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
  """Runs ``python -m jdrop mc`` for parsed ``args``; returns the exit status."""
  try:
    f = order.resolve_activation(_PREFIX_COMPARE, args.activation)
    elementwise = activations.info(args.activation).elementwise
    distributed = _check_processes(args)
    lead = not distributed or args.process_id == 0
    if lead:
      _check_output(args.json, args.force)
    study = {
      key: getattr(args, key) for key in ("activation", "rate", "num_masks", "x", "seed", "rtol")
    }
    if distributed:
      montecarlo.initialize(
        args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        timeout=args.timeout,
        study=study,
      )
    x = jnp.asarray(args.x, jnp.float32)
    bar = ProgressBar(sys.stderr, f"mc {args.activation}")
    start = time.perf_counter()
    with _stdout_to_stderr(distributed):
      result = montecarlo.compare_orders(
        jax.random.key(args.seed),
        f,
        x,
        rate=args.rate,
        num_masks=args.num_masks,
        rtol=args.rtol,
        progress=bar if lead and bar.enabled else None,
      )
    seconds = time.perf_counter() - start
    exact = montecarlo.exact_moments(f, x, rate=args.rate) if elementwise else None
    if lead:
      data = report(args, result, exact, seconds)
      print(render(data))
      if args.json is not None:
        Path(args.json).write_text(json.dumps(data, indent=2) + "\n")
  except (ValueError, TypeError) as err:
    _error(err)
    return 2
  except (OSError, RuntimeError) as err:  # TimeoutError included: the processes did not meet
    _error(err)
    return 1
  return 0


@contextlib.contextmanager
def _stdout_to_stderr(active: bool) -> Iterator[None]:
  """Sends file descriptor 1 to stderr: gloo prints its connection log on C++'s stdout,
  which must hold only the summary."""
  if not active:
    yield
    return
  sys.stdout.flush()
  saved = os.dup(1)
  try:
    os.dup2(2, 1)
    yield
  finally:
    sys.stdout.flush()
    os.dup2(saved, 1)
    os.close(saved)


def _error(err: Exception) -> None:
  text = " ".join(str(err).split())
  print(f"{PROG}: error: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m jdrop mc ...`` on its own (``argv`` starts with ``mc``)."""
  parser = cli_args.Parser(prog="python -m jdrop", description="jdrop's Monte-Carlo studies")
  add_parser(parser.add_subparsers(dest="command", required=True, parser_class=cli_args.Parser))
  return run(parser.parse_args(argv))


if __name__ == "__main__":
  sys.exit(main())
