"""The training study at full size: every table and figure of its results, from one command.

Run from the repository root::

  PYTHONPATH=. python experiments/train_digits.py [--config full|default] [--data PATH.npz]
      [--out-dir DIR] [--force]

It trains the MLP of :mod:`jdrop._src.studies.training` (``FULL`` unless ``--config default``)
on scikit-learn's digits, or on the arrays of ``--data`` (an ``.npz`` with ``x_train``,
``y_train``, ``x_test``, ``y_test``; see :func:`jdrop._src.studies.data.load_npz`), and writes
into ``--out-dir`` (default ``experiments/results``, or ``experiments/results/training-<name>``
for ``--data``):

* ``training-<name>.json``: every seed's test error and loss, the summary intervals, the
  pre/post parameter identity, seeds, versions, machine and timings;
* ``training-<name>.md``: the Markdown section (table, bit-identity, figures) with the command,
  the machine and the versions;
* ``training-error.png`` and ``training-difference.png``.

Existing files are never overwritten without ``--force``. The data are checked before any
training: a file that cannot be read or has a mis-shaped array ends the run with one line on
stderr and exit status 2, and nothing is written. Files are written to a temporary folder first
and moved into place only when all of them are complete.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from jdrop._src.studies import training

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FIGURES = ("training-error.png", "training-difference.png")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="experiments/train_digits.py",
    description="Train MLPs with dropout before and after the activation; write the results.",
  )
  parser.add_argument("--config", choices=("full", "default"), default="full")
  parser.add_argument("--data", type=Path, help="an .npz with x_train, y_train, x_test, y_test")
  parser.add_argument("--out-dir", type=Path, help="where to write (default: experiments/results)")
  parser.add_argument("--force", action="store_true", help="overwrite existing results")
  return parser.parse_args(argv)


def fail(message: str) -> int:
  print(f"train_digits: {message}", file=sys.stderr)
  return 2


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  config = training.FULL if args.config == "full" else training.DEFAULT
  config = dataclasses.replace(config, tasks=("digits",))  # the report trains every task
  if args.data is not None:
    config = dataclasses.replace(config, data=os.fspath(args.data), tasks=("npz",))
  try:
    dataset = training.load(config)  # the data are checked before anything is trained or written
  except ValueError as err:
    return fail(str(err).replace("\n", " "))
  name = "digits" if args.data is None else Path(dataset.name).stem
  out_dir = args.out_dir or (RESULTS_DIR if args.data is None else RESULTS_DIR / f"training-{name}")
  targets = [out_dir / f"training-{name}.json", out_dir / f"training-{name}.md"]
  targets += [out_dir / figure for figure in FIGURES]
  existing = [os.fspath(p) for p in targets if p.exists()]
  if existing and not args.force:
    return fail(f"{', '.join(existing)} exist(s); pass --force to overwrite")

  def progress(done: int, total: int, variant: str) -> None:
    print(f"[{done}/{total}] {variant}", file=sys.stderr, flush=True)

  results = training.run(config, progress=progress)
  command = "PYTHONPATH=. python " + " ".join(shlex.quote(a) for a in sys.argv)
  results["meta"]["command"] = command
  out_dir.mkdir(parents=True, exist_ok=True)
  staging = Path(tempfile.mkdtemp(prefix=".training-", dir=out_dir))
  try:
    figures = training.figures(results, staging)
    (staging / targets[0].name).write_text(json.dumps(results, indent=1) + "\n")
    (staging / targets[1].name).write_text(
      header(results, args.config) + training.section(results, figures)
    )
    for target in targets:
      os.replace(staging / target.name, target)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  print("\n".join(os.fspath(t) for t in targets))
  return 0


def header(results: dict, config_name: str) -> str:
  """Where and how the results were made: command, date, machine, versions, seeds, timing."""
  meta, timing = results["meta"], results["timing"]
  versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
  compile_s = sum(timing["compile_s"].values())
  run_s = sum(timing["run_s"].values())
  return "\n".join(
    [
      f"# Training study ({config_name.upper()} configuration)",
      "",
      f"- command: `{meta['command']}`",
      f"- date: {meta['date']}",
      f"- machine: {meta['processor']}; {meta['cpu_count']} CPUs; device {meta['device']}"
      f" ({meta['backend']}); {meta['uname']}; load average {meta['load_average']} at the start",
      f"- versions: {versions}",
      f"- seeds: {', '.join(str(s) for s in results['seeds'])}",
      f"- wall time {timing['wall_s']:.0f} s: {timing['programs']} programs compiled in"
      f" {compile_s:.0f} s, {timing['models']} models trained in {run_s:.0f} s",
      f"- XLA compiler options: {meta['compiler_options'] or 'defaults'}",
      "",
      "",
    ]
  )


if __name__ == "__main__":
  sys.exit(main())
