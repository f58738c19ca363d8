"""``python -m jdrop``: the command line.

* ``table``: the checker's verdicts for every activation in the registry: f(0),
  pathwise and in-expectation commutation with dropout, whether "f(0) = 0"
  predicted the pathwise verdict, a certified counterexample, and whether the
  two orders agree bit for bit in float32 on this machine.
* ``check NAME_OR_MODULE:ATTR``: one function's full verdict (text or JSON).
* ``report --out DIR``: every study, and REPORT.md with the answer (the main job).
* ``mc ACTIVATION --rate R --num-masks N``: a Monte-Carlo study of both orders
  (:mod:`jdrop._src.cli_mc`), across processes with ``--coordinator``.

Functions are named, never evaluated from strings: a registry name (``gelu``) or
an import path (``mypkg.layers:my_activation``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any
from typing import NoReturn

import numpy as np

from jdrop._src import activations
from jdrop._src import cli_args
from jdrop._src import cli_audit
from jdrop._src import cli_mc
from jdrop._src.checker import api
from jdrop._src.checker.verdict import Verdict

_PROG = "python -m jdrop"


@dataclasses.dataclass(frozen=True)
class Row:
  """One activation's line of the table (``verdict`` is None when it cannot be checked)."""

  activation: str
  verdict: Verdict | None
  note: str = ""

  @property
  def predicted(self) -> bool | None:
    """Did "f(0) = 0, so the order does not matter" get the pathwise verdict right?"""
    v = self.verdict
    if v is None or v.zero_preserving is None or v.pathwise.status == "unknown":
      return None
    return v.zero_preserving == (v.pathwise.status == "proved")

  def to_dict(self) -> dict[str, Any]:
    out = {"activation": self.activation, "note": self.note, "f0_predicted": self.predicted}
    out["verdict"] = None if self.verdict is None else self.verdict.to_dict()
    return out


def build_table(*, rate: float | None = None, float_level: bool = True) -> list[Row]:
  """Checks every registry activation (both modes; every rate, or ``rate``)."""
  rows = []
  for name in activations.names():
    try:
      verdict = api.check(name, rate=rate, float_level=float_level)
    except ValueError:  # glu halves its input: no mask can serve both orders
      rows.append(Row(name, None, note="changes its input's shape: no shared mask"))
      continue
    rows.append(Row(name, verdict))
  return rows


def _fmt(value: float | None) -> str:
  if value is None:
    return "-"
  if math.isinf(value) or math.isnan(value):
    return str(value)
  return f"{value:.4g}"


def _f0(v: Verdict) -> str:
  if np.isnan(v.f0).all():
    return "undefined"
  values = sorted({_fmt(float(x)) for x in v.f0.ravel()})
  return values[0] if len(values) == 1 else "varies"


def _witness(v: Verdict) -> str:
  for finding in (v.pathwise, v.expectation):
    cx = finding.counterexample
    if cx is None:
      continue
    i = cx.index
    pre, post = _fmt(float(cx.pre.ravel()[i])), _fmt(float(cx.post.ravel()[i]))
    if cx.mask is not None and not cx.mask.ravel()[i]:
      return f"dropped unit: f(0) = {pre} vs 0"
    x = _fmt(cx.x_at) if cx.elementwise else "[" + ", ".join(map(_fmt, cx.x.ravel())) + "]"
    if cx.mask is None:
      return f"x={x}, rate={cx.rate}: E f(D(x)) = {pre} vs f(x) = {post}"
    return f"x={x}, rate={cx.rate}: f(D(x)) = {pre} vs D(f(x)) = {post}"
  return "-"


def _bits(v: Verdict) -> str:
  if v.float_level is None or not v.float_level.dtypes:
    return "-"
  f32 = v.float_level.dtypes[0]
  return "yes" if f32.bit_identical else f"no ({_fmt(f32.max_ulps)} ulp)"


def _yes(value: bool | None) -> str:
  return {True: "yes", False: "no", None: "?"}[value]


def summary(rows: list[Row]) -> str:
  checked = [r for r in rows if r.verdict is not None]
  zero = [r for r in checked if r.verdict.zero_preserving]
  path = [r for r in checked if r.verdict.pathwise.status == "proved"]
  expect = [r for r in checked if r.verdict.expectation.status == "proved"]
  wrong = [r.activation for r in checked if r.predicted is False]
  unknown = [r.activation for r in checked if r.verdict.pathwise.status == "unknown"]
  text = (
    f"f(0) = 0 holds for {len(zero)} of {len(checked)} activations; dropout commutes pathwise"
    f" with {len(path)} of them (proved at every rate) and in expectation with {len(expect)}."
    f' "f(0) = 0, so the order does not matter" gets the pathwise verdict wrong for'
    f" {len(wrong)}: {', '.join(wrong) or 'none'}."
  )
  if unknown:
    text += f" Undecided pathwise: {', '.join(unknown)}."
  skipped = [r.activation for r in rows if r.verdict is None]
  if skipped:
    text += f" Not checked (no shared mask): {', '.join(skipped)}."
  return text


def render(rows: list[Row], fmt: str) -> str:
  """The table as ``text``, ``markdown`` or ``json``."""
  if fmt == "json":
    return json.dumps({"rows": [r.to_dict() for r in rows], "summary": summary(rows)}, indent=2)
  header = [
    "activation",
    "f(0)",
    "f(0)=0",
    "pathwise",
    "expectation",
    "f(0)=0 predicted",
    "float32 bit-identical",
    "counterexample",
  ]
  body = []
  for r in rows:
    v = r.verdict
    if v is None:
      body.append([r.activation, "-", "-", "n/a", "n/a", "-", "-", r.note])
      continue
    body.append(
      [
        r.activation,
        _f0(v),
        _yes(v.zero_preserving),
        v.pathwise.status,
        v.expectation.status,
        _yes(r.predicted),
        _bits(v),
        _witness(v),
      ]
    )
  if fmt == "markdown":
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
  else:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
      "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
      for row in [header, *body]
    ]
  return "\n".join([*lines, "", summary(rows)])


def _function(text: str) -> str:
  """``check``'s argument; a relative import path (``.mod:f``) has no package to start from."""
  module, colon, _ = text.partition(":")
  if colon and module.startswith("."):
    raise argparse.ArgumentTypeError(
      f"an import path must start from a top-level module, got {text!r}; write it in full,"
      f" e.g. mypkg{module}:{text.partition(':')[2] or 'attr'}"
    )
  return text


def build_parser() -> argparse.ArgumentParser:
  parser = cli_args.Parser(prog=_PROG, description="Dropout before or after the activation?")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=cli_args.Parser)

  table = sub.add_parser("table", help="the checker's verdicts for every registry activation")
  fmt = table.add_mutually_exclusive_group()
  fmt.add_argument("--markdown", action="store_const", const="markdown", dest="format")
  fmt.add_argument("--json", action="store_const", const="json", dest="format")
  table.add_argument(
    "--rate", type=cli_args.open_rate, help="one rate instead of every rate in (0, 1)"
  )
  table.add_argument(
    "--no-float-level", action="store_true", help="skip the bit-for-bit float comparison"
  )

  check = sub.add_parser(
    "check",
    help="one function's verdict",
    description=(
      "Checks a registry activation, or the function at an import path MODULE:ATTR. The"
      " module is imported as `import MODULE` would import it (under python -m the current"
      " folder is on the path), so its import-time code runs; then ATTR is called on traced"
      " arrays."
    ),
  )
  check.add_argument(
    "function",
    type=_function,
    help="a registry name (gelu) or an absolute import path (pkg.mod:attr)",
  )
  check.add_argument(
    "--rate", type=cli_args.open_rate, help="one rate instead of every rate in (0, 1)"
  )
  check.add_argument(
    "--shape", type=cli_args.positive_int, nargs="+", help="input shape to trace on (default: 4)"
  )
  check.add_argument("--json", action="store_true", help="print the verdict as JSON")
  check.add_argument(
    "--no-float-level", action="store_true", help="skip the bit-for-bit float comparison"
  )
  cli_mc.add_parser(sub)
  cli_audit.add_parser(sub)

  report = sub.add_parser("report", help="run the studies and write REPORT.md with the answer")
  report.add_argument("--out", required=True, help="output directory (created)")
  report.add_argument("--force", action="store_true", help="replace a non-empty --out")
  report.add_argument("--studies", nargs="+", metavar="NAME", help="run only these (default: all)")
  report.add_argument("--full", action="store_true", help="full-size configurations (slow)")
  report.add_argument("--data", help="an .npz file (x_train, y_train, x_test, y_test)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Runs ``python -m jdrop`` with ``argv``; returns the exit status.

  Every error is one line on stderr: exit status 2 for bad usage, 1 for a failure (a file
  system or network error), 130 or 143 after SIGINT or SIGTERM (whatever was being written
  is removed first).
  """
  args = build_parser().parse_args(argv)
  try:
    with cli_args.interrupts():
      return _run(args, argv)
  except cli_args.Interrupted as interrupted:
    print(
      f"{_PROG}: interrupted by {interrupted}; nothing half-written was left behind",
      file=sys.stderr,
    )
    return interrupted.status
  except (ValueError, TypeError) as err:
    print(f"{_PROG}: error: {cli_args.one_line(err)}", file=sys.stderr)
    return 2
  except OSError as err:
    print(f"{_PROG}: error: {cli_args.one_line(err)}", file=sys.stderr)
    return 1


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
  if args.command == "table":
    rows = build_table(rate=args.rate, float_level=not args.no_float_level)
    print(render(rows, args.format or "text"))
  elif args.command == "check":
    verdict = api.check(
      args.function,
      rate=args.rate,
      shape=None if args.shape is None else tuple(args.shape),
      float_level=not args.no_float_level,
    )
    print(json.dumps(verdict.to_dict(), indent=2) if args.json else verdict)
  elif args.command == "mc":
    return cli_mc.run(args)
  elif args.command == "audit":
    return cli_audit.run(args)
  elif args.command == "report":
    from jdrop._src import report

    path = report.build(
      args.out,
      force=args.force,
      studies=args.studies or report.STUDIES,
      full=args.full,
      data=args.data,
      progress=report.Progress(),
      argv=argv,
    )
    print(f"wrote {path}")
  return 0


def entry() -> NoReturn:
  """The ``jdrop`` console script and ``python -m jdrop``: :func:`main`, then exit.

  After SIGINT or SIGTERM the process ends at once, without the interpreter's shutdown,
  during which native threads that are still running (XLA's) can crash it.
  """
  status = main()
  if status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
  sys.exit(status)
