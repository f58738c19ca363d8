"""``python -m jdrop audit MODULE:ATTR``: the dropout sites of a user's model, as a table.

``ATTR`` is a callable of no arguments that returns ``(f, args)``, where ``f(key, *args)``
runs the model in training mode (see :func:`jdrop.audit`). The module is imported as
``import MODULE`` would import it (never ``eval``-ed), as for ``check``. The table goes to
stdout (markdown with ``--markdown``), a progress bar over sites to stderr when it is a
terminal, and ``--json PATH`` writes :meth:`jdrop.Audit.to_dict` (refusing an existing file
without ``--force``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from jdrop._src import cli_args
from jdrop._src import cli_mc
from jdrop._src import errors
from jdrop._src.audit import api as audit_api

_FN = "python -m jdrop audit"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
  parser = subparsers.add_parser(
    "audit",
    help="the dropout sites of a model: activation, order, verdict, bias",
    description=(
      "Audits the model that MODULE:ATTR returns. ATTR is called with no arguments and must"
      " return (f, args), where f(key, *args) runs the model in training mode with all its"
      " dropout randomness drawn from key. The module is imported as `import MODULE` would"
      " import it (under python -m the current folder is on the path)."
    ),
  )
  parser.add_argument("model", help="an absolute import path pkg.mod:attr")
  parser.add_argument(
    "--num-masks", type=cli_args.positive_int, default=1024, help="masks per site (1024)"
  )
  parser.add_argument("--seed", type=int, default=0, help="the key's seed (0)")
  parser.add_argument("--json", metavar="PATH", help="also write the audit to PATH as JSON")
  parser.add_argument("--force", action="store_true", help="overwrite an existing --json file")
  parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
  return parser


def load(spec: str) -> tuple[Any, tuple[Any, ...]]:
  """``(f, args)`` from the zero-argument callable at ``spec``, or a clear ValueError."""
  from jdrop._src.checker.api import import_object

  factory = import_object(spec, fn=_FN, arg="MODULE:ATTR")
  if not callable(factory):
    raise errors.type_error(
      _FN,
      "MODULE:ATTR",
      "must name a callable of no arguments that returns (f, args)",
      errors.short(factory),
      "Define e.g. `def model(): return f, (x,)` and pass mymod:model.",
    )
  try:
    made = factory()
  except Exception as err:
    raise errors.value_error(
      _FN,
      "MODULE:ATTR",
      f"failed when called ({type(err).__name__}: {cli_args.one_line(err)})",
      spec,
      "Fix the function so that calling it with no arguments returns (f, args).",
    ) from err
  if (
    not isinstance(made, tuple)
    or len(made) != 2
    or not callable(made[0])
    or not isinstance(made[1], (tuple, list))
  ):
    raise errors.type_error(
      _FN,
      "MODULE:ATTR",
      "must return a pair (f, args) with f callable and args a tuple",
      errors.short(made),
      "Return e.g. (f, (x,)) where f(key, x) runs the model in training mode.",
    )
  return made[0], tuple(made[1])


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
  """Runs ``python -m jdrop audit`` for parsed ``args``; returns the exit status."""
  import jax

  from jdrop._src.audit import audit

  bar = cli_mc.ProgressBar(sys.stderr, f"audit {args.model}", unit="sites")
  try:
    if args.json is not None:
      cli_mc._check_output(args.json, args.force)
    f, f_args = load(args.model)
    result = audit(
      f,
      *f_args,
      key=jax.random.key(args.seed),
      num_masks=args.num_masks,
      progress=bar if bar.enabled else None,
    )
    bar.close()
    print(result.to_markdown() if args.markdown else _text(result))
    if args.json is not None:
      data = json.dumps(result.to_dict(), indent=2, allow_nan=False) + "\n"
      cli_mc._write(args.json, data, force=args.force)
  except (ValueError, TypeError) as err:
    cli_mc._error(bar, err)
    return 2
  except OSError as err:
    cli_mc._error(bar, err)
    return 1
  except cli_args.Interrupted:
    bar.close()
    raise
  return 0


def _text(result: Any) -> str:
  """The table as aligned plain text, then the unseen randomness and the notes."""
  header = ("site", "kind", "rate", "activation", "order", "pathwise", "expect.", "|bias|", "moved")
  rows = [header]
  for site in result.sites:
    verdict = site.verdict
    rows.append(
      (
        site.path,
        site.kind,
        f"{site.rate:g}",
        site.activation or "-",
        site.order or "-",
        verdict.pathwise.status if verdict else "-",
        verdict.expectation.status if verdict else "-",
        audit_api.cell(result.summary(site)),
        audit_api.cell(result.summary(site, moved=True)),
      )
    )
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
  lines.append(
    f"{result.num_masks} masks per site; |bias| relative to the RMS of the eval output, "
    "± the Monte-Carlo noise."
  )
  lines += [f"not audited: {u}" for u in result.unseen]
  lines += [f"note: {n}" for n in result.notes]
  return "\n".join(lines)
