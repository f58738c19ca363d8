"""``python -m jdrop``: the command line.

``python -m jdrop table`` runs both orders of dropout, on the same masks, for
every elementwise activation in the registry and reports where they agree bit
for bit in float32, next to whether the activation keeps 0 (``f(0) = 0``).

This table is *measured* on a fixed sample (inputs, masks and rates), so "agree"
means "agreed on every sampled mask", not a proof; a disagreement is a real
counterexample at float32 precision.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from jdrop._src import activations
from jdrop._src import order

DEFAULT_RATES = (0.1, 0.5, 0.9)
_CHUNK = 64  # masks per compiled call


@dataclass(frozen=True)
class Row:
  """One activation's line of the table."""

  activation: str
  f0: float
  zero_preserving: bool
  orders_agree: bool
  max_abs_diff: float
  worst_x: float | None
  worst_rate: float | None


def sample_inputs(num: int = 4097) -> jax.Array:
  """The fixed inputs: a grid over [-8, 8] (0 included) plus large and tiny values."""
  grid = jnp.linspace(-8.0, 8.0, num, dtype=jnp.float32)
  extra = jnp.array([-1e4, -100.0, -1e-3, -1e-30, 1e-30, 1e-3, 100.0, 1e4], jnp.float32)
  return jnp.concatenate([grid, extra])


def compare_orders_on_sample(
  f, x: jax.Array, *, rates: Sequence[float], num_masks: int, seed: int = 0
) -> tuple[float, float | None, float | None]:
  """The largest ``|pre - post|`` over ``num_masks`` masks per rate, with where it occurs."""
  all_keys = jax.random.split(jax.random.key(seed), num_masks)
  rates_array = jnp.asarray(rates, jnp.float32)

  @jax.jit
  def worst(keys, rate):
    out = jax.vmap(lambda k: order.both_orders(k, x, f, rate=rate))(keys)
    same = (out.pre == out.post) | (jnp.isnan(out.pre) & jnp.isnan(out.post))
    diff = jnp.where(same, 0, jnp.abs(out.pre - out.post))  # inf == inf is agreement
    diff = jnp.where(jnp.isnan(diff), jnp.inf, diff)  # one side NaN: maximal disagreement
    flat = jnp.argmax(diff)
    return diff.ravel()[flat], flat % x.size

  best = (0.0, None, None)
  # Chunks of masks keep memory flat in --num-masks; one compile serves every chunk.
  for start in range(0, num_masks, _CHUNK):
    keys = all_keys[start : start + _CHUNK]
    values, indices = jax.vmap(worst, in_axes=(None, 0))(keys, rates_array)
    i = int(jnp.argmax(values))
    if float(values[i]) > best[0]:
      best = (float(values[i]), float(x[int(indices[i])]), float(rates[i]))
  return best


def build_table(*, rates: Sequence[float] = DEFAULT_RATES, num_masks: int = 64) -> list[Row]:
  """Measures both orders for every elementwise registry activation."""
  x = sample_inputs()
  rows = []
  for name in activations.names():
    entry = activations.info(name)
    if not entry.elementwise:
      continue
    f = entry.fn
    f0 = float(f(jnp.zeros((), jnp.float32)))
    diff, worst_x, worst_rate = compare_orders_on_sample(f, x, rates=rates, num_masks=num_masks)
    rows.append(Row(name, f0, f0 == 0.0, diff == 0.0, diff, worst_x, worst_rate))
  return rows


def _fmt(value: float | None) -> str:
  if value is None:
    return "-"
  if math.isinf(value) or math.isnan(value):
    return str(value)
  return f"{value:.4g}"


def render(rows: list[Row], fmt: str, *, rates: Sequence[float], num_masks: int) -> str:
  """The table as ``text``, ``markdown`` or ``json``."""
  zero = sum(r.zero_preserving for r in rows)
  agree = sum(r.orders_agree for r in rows)
  agree_zero = sum(r.orders_agree and r.zero_preserving for r in rows)
  summary = (
    f"f(0) = 0 holds for {zero} of {len(rows)} elementwise activations; the two "
    f"orders agreed bit for bit on every sampled mask for {agree} of them "
    f"({agree_zero} of the {zero} with f(0) = 0). Sample: {num_masks} masks x "
    f"{sample_inputs().size} float32 inputs per rate, rates {list(rates)}."
  )
  if fmt == "json":
    return json.dumps(
      {
        "rates": list(rates),
        "num_masks": num_masks,
        "rows": [asdict(r) for r in rows],
        "summary": summary,
      },
      indent=2,
    )
  header = ["activation", "f(0)", "f(0)=0", "orders agree", "max abs diff", "at x", "at rate"]
  body = [
    [
      r.activation,
      _fmt(r.f0),
      "yes" if r.zero_preserving else "no",
      "yes" if r.orders_agree else "no",
      _fmt(r.max_abs_diff),
      _fmt(r.worst_x),
      _fmt(r.worst_rate),
    ]
    for r in rows
  ]
  if fmt == "markdown":
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
  else:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = [
      "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
      for row in [header, *body]
    ]
  return "\n".join([*lines, "", summary])


def _rate(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not 0.0 <= value <= 1.0:
    raise argparse.ArgumentTypeError(f"rate must be a drop probability in [0, 1], got {text!r}")
  return value


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
  return value


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # one readable line, exit status 2
    self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
    prog="python -m jdrop",
    description="Dropout before or after the activation: when does it matter?",
  )
  sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
  table = sub.add_parser("table", help="both orders on the same masks, for every activation")
  fmt = table.add_mutually_exclusive_group()
  fmt.add_argument("--markdown", action="store_const", const="markdown", dest="format")
  fmt.add_argument("--json", action="store_const", const="json", dest="format")
  table.add_argument(
    "--rates",
    type=_rate,
    nargs="+",
    default=list(DEFAULT_RATES),
    help="drop rates to sample (default: %(default)s)",
  )
  table.add_argument(
    "--num-masks", type=_positive_int, default=64, help="masks per rate (default: %(default)s)"
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.command == "table":
      rows = build_table(rates=args.rates, num_masks=args.num_masks)
      print(render(rows, args.format or "text", rates=args.rates, num_masks=args.num_masks))
  except (ValueError, TypeError) as err:
    print(f"python -m jdrop: error: {err}", file=sys.stderr)
    return 2
  return 0
