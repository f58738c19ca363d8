"""The exact engine for piecewise-linear functions.

An elementwise function built from ``+``, ``-``, scaling, ``max``, ``min``,
``abs``, comparisons and ``select`` (``jnp.where``) is piecewise linear in each
input ``t = x[i]``. This engine computes that form *exactly*, with rational
(:class:`fractions.Fraction`) breakpoints and coefficients: a sorted list of
breakpoints (always including 0), an affine piece ``slope * t + intercept`` on
each open interval between them, and the value at each breakpoint (so jumps
such as PyTorch's ``threshold`` are represented). Every position of the input
vector has its own coefficients (closed-over constants may differ per position);
the breakpoints are shared (the union over positions).

With the exact form in hand both questions are decided, never "unknown":

* pathwise (any rate, or one rate: for a function with finitely many breakpoints
  the two coincide) holds iff ``f(t) = a*max(t, 0) + b*min(t, 0)``: every
  intercept 0, one slope on each side of 0, and the breakpoint values on those
  lines;
* in expectation iff ``f - f(0)`` has that form.

When they fail, :func:`witnesses` lists inputs at which the exact residual is
non-zero; the checker certifies one independently with ball arithmetic on the
original jaxpr.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from jax.extend import core

from jdrop._src.checker import jaxprs


class NotPiecewiseLinear(Exception):
  """The function leaves the piecewise-linear class (the reason is the message)."""


@dataclasses.dataclass(frozen=True, eq=False)
class PL:
  """A piecewise-linear (or piecewise-constant boolean/integer) function of ``t``.

  ``slopes[k]``/``inters[k]`` hold the piece on the ``k``-th open interval
  (``k = 0`` left of ``breaks[0]``); ``points[j]`` the value at ``breaks[j]``.
  For booleans and integers ``slopes`` is ``None`` and ``inters`` holds the
  constant values.
  """

  breaks: tuple[Fraction, ...]
  slopes: tuple[np.ndarray, ...] | None
  inters: tuple[np.ndarray, ...]
  points: tuple[np.ndarray, ...]

  @property
  def real(self) -> bool:
    return self.slopes is not None

  def at(self, t: Fraction) -> np.ndarray:
    """The exact value at ``t``."""
    j = bisect.bisect_left(self.breaks, t)
    if j < len(self.breaks) and self.breaks[j] == t:
      return self.points[j]
    if self.slopes is None:
      return self.inters[j]
    return self.slopes[j] * t + self.inters[j]


def _fractions(values: Any) -> np.ndarray:
  array = np.asarray(values)
  if array.dtype == object:
    return array
  if not np.all(np.isfinite(array)):
    raise NotPiecewiseLinear("a non-finite constant")
  out = np.empty(array.shape, dtype=object)
  out[...] = _to_fraction(array.astype(np.float64))
  return out


_to_fraction = np.frompyfunc(lambda v: Fraction(float(v)), 1, 1)
_exact_sign = np.frompyfunc(lambda v: Fraction((v > 0) - (v < 0)), 1, 1)


def constant(values: Any) -> PL:
  array = np.asarray(values)
  if np.issubdtype(array.dtype, np.floating) or array.dtype == object:
    c = _fractions(array)
    zero = _fractions(np.zeros(array.shape))
    return PL((Fraction(0),), (zero, zero), (c, c), (c,))
  return PL((Fraction(0),), None, (array, array), (array,))


def identity(shape: tuple[int, ...]) -> PL:
  one, zero = _fractions(np.ones(shape)), _fractions(np.zeros(shape))
  return PL((Fraction(0),), (one, one), (zero, zero), (zero,))


def representatives(breaks: tuple[Fraction, ...]) -> list[Fraction]:
  """A point inside each open interval: left ray, gaps, right ray."""
  inner = [(a + b) / 2 for a, b in itertools.pairwise(breaks)]  # dyadic when a and b are
  return [breaks[0] - 1, *inner, breaks[-1] + 1]


def refine(f: PL, breaks: tuple[Fraction, ...]) -> PL:
  """``f`` on a finer sorted set of breakpoints (a superset of ``f.breaks``)."""
  if breaks == f.breaks:
    return f
  slopes, inters = [], []
  for rep in representatives(breaks):
    k = bisect.bisect_left(f.breaks, rep)  # rep is never a breakpoint of f
    inters.append(f.inters[k])
    if f.slopes is not None:
      slopes.append(f.slopes[k])
  points = tuple(f.at(b) for b in breaks)
  return PL(breaks, tuple(slopes) if f.slopes is not None else None, tuple(inters), points)


def _union(*fs: PL, extra: set[Fraction] = frozenset()) -> tuple[PL, ...]:
  breaks = set(extra)
  for f in fs:
    breaks.update(f.breaks)
  ordered = tuple(sorted(breaks))
  return tuple(refine(f, ordered) for f in fs)


def _crossings(a: PL, b: PL) -> set[Fraction]:
  """Where ``a - b`` changes sign inside an interval (both already refined alike)."""
  found = set()
  reps = representatives(a.breaks)
  for k in range(len(reps)):
    ds = np.broadcast_to(a.slopes[k] - b.slopes[k], np.broadcast_shapes(*_shapes(a, b)))
    dc = np.broadcast_to(a.inters[k] - b.inters[k], ds.shape)
    lo = a.breaks[k - 1] if k > 0 else None
    hi = a.breaks[k] if k < len(a.breaks) else None
    for s, c in zip(ds.ravel(), dc.ravel(), strict=False):
      if s != 0:
        t = -c / s
        if (lo is None or t > lo) and (hi is None or t < hi):
          found.add(t)
  return found


def _shapes(*fs: PL) -> list[tuple[int, ...]]:
  return [np.shape(f.inters[0]) for f in fs]


def _pointwise(fn: Callable[..., Any], *fs: PL, real: bool) -> PL:
  """Combines already-refined functions interval by interval and point by point."""
  n = len(fs[0].inters)
  pieces = [fn(*[_piece(f, k) for f in fs]) for k in range(n)]
  points = tuple(fn(*[(None, f.points[j]) for f in fs])[1] for j in range(len(fs[0].breaks)))
  if real:
    out = PL(fs[0].breaks, tuple(p[0] for p in pieces), tuple(p[1] for p in pieces), points)
    _bounded(out)
    return out
  return PL(fs[0].breaks, None, tuple(p[1] for p in pieces), points)


MAX_BITS = 4096  # of an exact coefficient's numerator or denominator
MAX_BREAKS = 1024


def _bounded(f: PL) -> None:
  """Exact arithmetic stays fast: coefficients and breakpoints of bounded size."""
  if len(f.breaks) > MAX_BREAKS:
    raise NotPiecewiseLinear(f"more than {MAX_BREAKS} breakpoints")
  for arrays in (f.inters, f.slopes or ()):
    for array in arrays[:1] + arrays[-1:]:  # the outer pieces grow first
      for v in np.ravel(array):
        if (
          isinstance(v, Fraction)
          and max(v.numerator.bit_length(), v.denominator.bit_length()) > MAX_BITS
        ):
          raise NotPiecewiseLinear(f"a coefficient of more than {MAX_BITS} bits")


def _piece(f: PL, k: int) -> tuple[Any, Any]:
  return (None if f.slopes is None else f.slopes[k], f.inters[k])


def _affine(fn: Callable[[Any, Any], Any]) -> Callable[..., tuple[Any, Any]]:
  """Lifts a linear map of two values to (slope, intercept) pairs and to points."""

  def lifted(a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
    slope = None if a[0] is None else fn(a[0], b[0])
    return slope, fn(a[1], b[1])

  return lifted


def _decided(a: PL, b: PL, decide: Callable[..., Any], real: bool) -> PL:
  """An op that picks per interval by the sign of ``a - b`` (max, min, comparisons)."""
  a, b = _union(a, b)
  a, b = _union(a, b, extra=_crossings(a, b))
  reps = representatives(a.breaks)
  pieces_s, pieces_c = [], []
  for k, t in enumerate(reps):
    va, vb = a.slopes[k] * t + a.inters[k], b.slopes[k] * t + b.inters[k]
    s, c = decide((a.slopes[k], a.inters[k], va), (b.slopes[k], b.inters[k], vb))
    pieces_s.append(s)
    pieces_c.append(c)
  points = tuple(
    decide((None, p, p), (None, q, q))[1] for p, q in zip(a.points, b.points, strict=False)
  )
  return PL(a.breaks, tuple(pieces_s) if real else None, tuple(pieces_c), points)


def _choose(which: Any, first: Any, second: Any) -> Any:
  if first is None:
    return None
  return np.where(which, first, second)


def _max_like(pick_first: Callable[[Any, Any], Any]):
  def decide(a: tuple, b: tuple) -> tuple[Any, Any]:
    first = pick_first(a[2], b[2])
    return _choose(first, a[0], b[0]), np.where(first, a[1], b[1])

  return decide


def _comparison(op: Callable[[Any, Any], Any]):
  def decide(a: tuple, b: tuple) -> tuple[Any, Any]:
    return None, np.asarray(op(a[2], b[2]), dtype=bool)

  return decide


_OPS = {
  "max": _max_like(lambda u, v: u >= v),
  "min": _max_like(lambda u, v: u <= v),
  "lt": _comparison(lambda u, v: u < v),
  "le": _comparison(lambda u, v: u <= v),
  "gt": _comparison(lambda u, v: u > v),
  "ge": _comparison(lambda u, v: u >= v),
  "eq": _comparison(lambda u, v: u == v),
  "ne": _comparison(lambda u, v: u != v),
}


# --- rules --------------------------------------------------------------------

RULES: dict[str, Callable[..., PL]] = {}


def _rule(*names: str):
  def register(fn: Callable[..., PL]) -> Callable[..., PL]:
    for name in names:
      RULES[name] = fn
    return fn

  return register


@_rule("add", "sub")
def _add(eqn: core.JaxprEqn, a: PL, b: PL) -> PL:
  op = (lambda u, v: u + v) if eqn.primitive.name == "add" else (lambda u, v: u - v)
  return _pointwise(_affine(op), *_union(a, b), real=True)


@_rule("neg")
def _neg(eqn: core.JaxprEqn, a: PL) -> PL:
  return _pointwise(lambda p: (None if p[0] is None else -p[0], -p[1]), a, real=True)


def _constant_on_pieces(f: PL) -> bool:
  return all(not np.any(s != 0) for s in f.slopes)


@_rule("mul")
def _mul(eqn: core.JaxprEqn, a: PL, b: PL) -> PL:
  a, b = _union(a, b)
  if not _constant_on_pieces(b):
    if not _constant_on_pieces(a):
      raise NotPiecewiseLinear("a product of two non-constant pieces (quadratic)")
    a, b = b, a

  def times(p: tuple, q: tuple) -> tuple[Any, Any]:
    return (None if p[0] is None else p[0] * q[1]), p[1] * q[1]

  return _pointwise(times, a, b, real=True)


@_rule("div")
def _div(eqn: core.JaxprEqn, a: PL, b: PL) -> PL:
  a, b = _union(a, b)
  if not _constant_on_pieces(b):
    raise NotPiecewiseLinear("a division by a non-constant piece")
  for value in (*b.inters, *b.points):
    if np.any(value == 0):
      raise NotPiecewiseLinear("a division by 0")

  def over(p: tuple, q: tuple) -> tuple[Any, Any]:
    return (None if p[0] is None else p[0] / q[1]), p[1] / q[1]

  return _pointwise(over, a, b, real=True)


@_rule("max", "min", "lt", "le", "gt", "ge", "eq", "ne")
def _decide(eqn: core.JaxprEqn, a: PL, b: PL) -> PL:
  name = eqn.primitive.name
  if a is b and name not in ("max", "min"):
    from jdrop._src.checker import balls

    return constant(np.full(np.shape(a.inters[0]), balls.REFLEXIVE[name]))
  if not (a.real and b.real):
    raise NotPiecewiseLinear(f"`{name}` of booleans or integers")
  return _decided(a, b, _OPS[name], real=name in ("max", "min"))


@_rule("abs")
def _abs(eqn: core.JaxprEqn, a: PL) -> PL:
  minus = _neg(eqn, a)
  return _decided(a, minus, _OPS["max"], real=True)


@_rule("sign")
def _sign(eqn: core.JaxprEqn, a: PL) -> PL:
  zero = constant(np.zeros(np.shape(a.inters[0])))
  a, zero = _union(a, zero)
  a, zero = _union(a, zero, extra=_crossings(a, zero))
  reps = representatives(a.breaks)

  def sgn(v: Any) -> np.ndarray:  # exact: a tiny Fraction must not round to 0
    return _exact_sign(np.asarray(v, dtype=object))

  zeros = [_fractions(np.zeros(np.shape(i))) for i in a.inters]
  inters = tuple(sgn(a.slopes[k] * t + a.inters[k]) for k, t in enumerate(reps))
  return PL(a.breaks, tuple(zeros), inters, tuple(sgn(p) for p in a.points))


@_rule("select_n")
def _select_n(eqn: core.JaxprEqn, which: PL, *cases: PL) -> PL:
  real = cases[0].real
  refined = _union(which, *cases)
  which, cases = refined[0], refined[1:]

  def choose(w: tuple, *cs: tuple) -> tuple[Any, Any]:
    index = np.asarray(w[1]).astype(np.int64)
    shape = np.broadcast_shapes(index.shape, *[np.shape(c[1]) for c in cs])
    index = np.broadcast_to(index, shape)
    inter = np.choose(index, [np.broadcast_to(c[1], shape) for c in cs])
    if cs[0][0] is None:
      return None, inter
    return np.choose(index, [np.broadcast_to(c[0], shape) for c in cs]), inter

  return _pointwise(choose, which, *cases, real=real)


@_rule("and", "or", "xor", "not")
def _logic(eqn: core.JaxprEqn, *args: PL) -> PL:
  op = {"and": np.logical_and, "or": np.logical_or, "xor": np.logical_xor}
  op["not"] = np.logical_not
  fn = op[eqn.primitive.name]
  return _pointwise(lambda *ps: (None, fn(*[p[1] for p in ps])), *_union(*args), real=False)


@_rule("integer_pow")
def _integer_pow(eqn: core.JaxprEqn, a: PL) -> PL:
  return _power(a, eqn.params["y"])


@_rule("pow")
def _pow(eqn: core.JaxprEqn, a: PL, b: PL) -> PL:
  values = {v for piece in (*b.inters, *b.points) for v in np.ravel(piece)}
  if not b.real or not _constant_on_pieces(b) or len(values) != 1:
    raise NotPiecewiseLinear("a power whose exponent is not one constant")
  y = values.pop()
  if y.denominator != 1:
    raise NotPiecewiseLinear(f"x**{y}, a non-integer power")
  return _power(a, int(y))


def _power(a: PL, y: int) -> PL:
  if y == 1:
    return a
  if not _constant_on_pieces(a):
    raise NotPiecewiseLinear(f"x**{y} of a non-constant piece")
  if y < 0 and any(np.any(v == 0) for v in (*a.inters, *a.points)):
    raise NotPiecewiseLinear(f"x**{y} of a piece that is 0")
  return _pointwise(lambda p: (p[0], p[1] ** y), a, real=True)


@_rule("square")
def _square(eqn: core.JaxprEqn, a: PL) -> PL:
  return _mul(eqn, a, a)


@_rule("clamp")
def _clamp(eqn: core.JaxprEqn, lo: PL, x: PL, hi: PL) -> PL:
  return _decided(_decided(x, lo, _OPS["max"], real=True), hi, _OPS["min"], real=True)


@_rule("convert_element_type", "copy", "copy_p", "reduce_precision", "stop_gradient")
def _convert(eqn: core.JaxprEqn, a: PL) -> PL:
  if eqn.primitive.name != "convert_element_type":
    return a
  new = np.dtype(eqn.params["new_dtype"])
  floating = np.issubdtype(new, np.floating) or new.name == "bfloat16"
  if floating and a.real:
    return a  # a change of float precision is the identity over the reals
  if floating:  # bool or int -> float: constant pieces
    zeros = tuple(_fractions(np.zeros(np.shape(i))) for i in a.inters)
    inters = tuple(_fractions(np.asarray(i, dtype=float)) for i in a.inters)
    points = tuple(_fractions(np.asarray(p, dtype=float)) for p in a.points)
    return PL(a.breaks, zeros, inters, points)
  raise NotPiecewiseLinear(f"a conversion to {new.name}")


@_rule("is_finite")
def _is_finite(eqn: core.JaxprEqn, a: PL) -> PL:
  return constant(np.ones(eqn.outvars[0].aval.shape, dtype=bool))


def _map(f: PL, fn: Callable[[np.ndarray], np.ndarray]) -> PL:
  """``f`` with ``fn`` applied to every coefficient array (slopes, intercepts, points)."""
  slopes = None if f.slopes is None else tuple(fn(v) for v in f.slopes)
  return PL(f.breaks, slopes, tuple(fn(v) for v in f.inters), tuple(fn(v) for v in f.points))


def _full(f: PL, shape: tuple[int, ...]) -> PL:
  return _map(f, lambda v: np.asarray(np.broadcast_to(v, shape), dtype=v.dtype))


# The engine analyses g(t) = f(t * ones), which is f's scalar function at every
# position once the algebra has shown f elementwise: so any data movement and any
# reduction of the intermediate values is exact (their elements are all functions
# of the one t), as long as the output is elementwise.
@_rule(*jaxprs.STRUCTURAL)
def _move(eqn: core.JaxprEqn, *args: PL) -> Any:
  data = jaxprs.data_operands(eqn)
  index_values = []
  for i, a in enumerate(args):
    if i in data:
      index_values.append(None)
    else:
      value = _value(a)
      if value is None:
        raise NotPiecewiseLinear(f"`{eqn.primitive.name}` at indices that depend on x")
      index_values.append(value)
  shapes = [tuple(eqn.invars[i].aval.shape) if i in data else None for i in range(len(args))]
  operands = _union(*[_full(args[i], shapes[i]) for i in data])
  if len({o.real for o in operands}) != 1:
    raise NotPiecewiseLinear(f"`{eqn.primitive.name}` of reals and integers together")
  fill = jaxprs.fill_value(eqn)
  outs = []
  for where in jaxprs.structural_indices(eqn, shapes, index_values):
    if np.any(where == -1) and not np.isfinite(fill):
      raise NotPiecewiseLinear("a gather that fills out-of-bounds positions with NaN")

    def pick(arrays: list[np.ndarray], where=where) -> np.ndarray:
      pool = np.concatenate([*[a.ravel() for a in arrays], np.asarray([Fraction(fill)], object)])
      return pool[where]

    real = operands[0].real
    outs.append(
      PL(
        operands[0].breaks,
        tuple(pick([o.slopes[k] for o in operands]) for k in range(len(operands[0].slopes)))
        if real
        else None,
        tuple(pick([o.inters[k] for o in operands]) for k in range(len(operands[0].inters))),
        tuple(pick([o.points[j] for o in operands]) for j in range(len(operands[0].points))),
      )
    )
  return outs if eqn.primitive.multiple_results else outs[0]


@_rule("reduce_max", "reduce_min", "reduce_sum")
def _reduce(eqn: core.JaxprEqn, a: PL) -> PL:
  axes = tuple(eqn.params["axes"])
  full = _full(a, tuple(eqn.invars[0].aval.shape))

  def rows_of(v: np.ndarray) -> np.ndarray:
    moved = np.moveaxis(v, axes, range(len(axes)))
    return moved.reshape((-1, *moved.shape[len(axes) :]))

  rows = _map(full, rows_of)
  count = np.shape(rows.inters[0])[0]
  if count == 0:
    raise NotPiecewiseLinear("a reduction over no elements")
  name = eqn.primitive.name
  result = _map(rows, lambda v: v[0])
  for j in range(1, count):
    row = _map(rows, lambda v, j=j: v[j])
    if name == "reduce_sum":
      result = _pointwise(_affine(lambda u, v: u + v), *_union(result, row), real=True)
    else:
      result = _decided(result, row, _OPS["max" if name == "reduce_max" else "min"], real=True)
  return result


@dataclasses.dataclass(frozen=True, eq=False)
class Infinities:
  """A constant with non-finite entries: it may only be compared with, or be the
  neutral side of a ``max``/``min`` (see :func:`balls.against_infinities`)."""

  values: np.ndarray


def _with_infinities(rule: Callable[..., PL], eqn: core.JaxprEqn, *args: Any) -> PL:
  special = [a for a in args if isinstance(a, Infinities)]
  if not special:
    return rule(eqn, *args)
  name = eqn.primitive.name
  if len(args) == 2 and len(special) == 1:
    from jdrop._src.checker import balls

    (c,) = special
    (f,) = [a for a in args if a is not c]
    shape = tuple(eqn.outvars[0].aval.shape)
    decided = balls.against_infinities(name, c.values, args[0] is c, shape)
    if decided is not None and f.real:
      return constant(decided)
    if balls.neutral(name, c.values) and np.shape(f.inters[0]) == shape:
      return f
  raise NotPiecewiseLinear(f"`{name}` of a constant that is not a finite real number")


def _value(f: PL) -> np.ndarray | None:
  """The value of a boolean or integer ``f`` that is one constant, else None."""
  if f.real:
    return None
  first = np.asarray(f.inters[0])
  if all(np.array_equal(np.asarray(v), first) for v in (*f.inters, *f.points)):
    return first
  return None


def _integer_step(rule: Callable[..., PL] | None, eqn: core.JaxprEqn, *args: PL) -> Any:
  """An integer or boolean step on constants, run by JAX; anything else leaves the class."""
  name = eqn.primitive.name
  if any(isinstance(a, Infinities) for a in args):
    raise NotPiecewiseLinear(f"`{name}` of a constant that is not a finite real number")
  values = [_value(a) for a in args]
  if any(v is None for v in values) or any(a.real for a in args):
    why = f"`{name}` of integers" if rule is not None else f"`{name}` is not piecewise linear"
    raise NotPiecewiseLinear(why)
  from jdrop._src.checker import balls

  out = balls._concrete(eqn, *values)
  if eqn.primitive.multiple_results:
    return [constant(o) for o in out]
  return constant(out)


class PiecewiseDomain:
  """The interpreter's domain for the exact piecewise-linear engine."""

  def rule(self, eqn: core.JaxprEqn) -> Callable[..., PL]:
    name = eqn.primitive.name
    rule = RULES.get(name)
    # Integers only enter as select_n's index or through a conversion to float:
    # integer arithmetic (floor division, bitwise not) is not the reals'. On
    # constants (a loop's counter) it runs exactly, by JAX itself.
    integers = [v for v in eqn.invars if np.issubdtype(v.aval.dtype, np.integer)]
    if name == "select_n":
      integers = [v for v in eqn.invars[1:] if np.issubdtype(v.aval.dtype, np.integer)]
    if rule is None or (integers and name != "convert_element_type"):
      return functools.partial(_integer_step, rule)
    return functools.partial(_with_infinities, rule)

  def literal(self, value: Any, aval: Any) -> PL:
    return self.constant(value)

  def index(self, value: PL) -> int | None:
    if value.real or len({int(np.asarray(v)) for v in (*value.inters, *value.points)}) != 1:
      return None
    return int(np.asarray(value.inters[0]))

  def constant(self, value: Any) -> PL | Infinities:
    array = jaxprs.concrete(value)
    if jaxprs.is_key(array):
      raise NotPiecewiseLinear("a PRNG key")
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
      return Infinities(array.astype(np.float64))
    return constant(array)

  def missing(self, eqn: core.JaxprEqn, inputs: list[Any]) -> list[Any]:  # pragma: no cover
    raise NotPiecewiseLinear(f"`{eqn.primitive.name}` is not piecewise linear")


def analyse(jaxpr: core.Jaxpr, consts: list[Any], shape: tuple[int, ...]) -> PL:
  """The exact piecewise-linear form of an elementwise ``jaxpr`` (or NotPiecewiseLinear)."""
  (out,) = jaxprs.evaluate(PiecewiseDomain(), jaxpr, consts, [identity(shape)])
  if not out.real:
    raise NotPiecewiseLinear("the output is not a real number")
  return refine(out, out.breaks)


# --- the decisions ------------------------------------------------------------


def _on_lines(f: PL, offset: np.ndarray) -> bool:
  """``f - offset == a*max(t, 0) + b*min(t, 0)`` exactly, per position."""
  if 0 not in f.breaks:
    f = refine(f, tuple(sorted({*f.breaks, Fraction(0)})))
  zero = f.breaks.index(Fraction(0))
  left, right = f.slopes[zero], f.slopes[zero + 1]
  for k, (s, c) in enumerate(zip(f.slopes, f.inters, strict=False)):
    slope = left if k <= zero else right
    if np.any(s != slope) or np.any(c != offset):
      return False
  for b, p in zip(f.breaks, f.points, strict=False):
    slope = left if b < 0 else right
    if np.any(p != slope * b + offset):
      return False
  return True


def f0(f: PL) -> np.ndarray:
  return f.at(Fraction(0))


def commutes_pathwise(f: PL) -> bool:
  """``f(0) = 0`` and ``f(t/q) = f(t)/q`` for every t (and, equivalently, every q)."""
  return _on_lines(f, _fractions(np.zeros(np.shape(f.inters[0]))))


def commutes_in_expectation(f: PL) -> bool:
  """``g = f - f(0)`` satisfies ``g(t/q) = g(t)/q``: ``E f(D(x)) = f(x)``."""
  return _on_lines(f, f0(f))


def witnesses(f: PL, q: Fraction) -> list[Fraction]:
  """Inputs ``t`` where ``f(t/q) - f(t)/q`` may be non-zero: every breakpoint of
  the residual and two points inside each of its linear pieces, so a residual
  that is not identically 0 is non-zero at one of them."""
  breaks = sorted({*f.breaks, *(b * q for b in f.breaks)})
  points = set(breaks)
  for a, b in itertools.pairwise(breaks):
    points.update({a + (b - a) / 4, a + 3 * (b - a) / 4})
  points.update({breaks[0] - 1, breaks[0] - 2, breaks[-1] + 1, breaks[-1] + 2})
  # the simplest first: small denominators, then small magnitudes
  return sorted(points, key=lambda t: (t.denominator, abs(t), t))


def residual(f: PL, t: Fraction, q: Fraction, *, expectation: bool) -> np.ndarray:
  """The exact residual at ``t``: pathwise ``f(t/q) - f(t)/q`` (a kept unit), or
  ``q f(t/q) + (1-q) f(0) - f(t)`` in expectation."""
  if expectation:
    return q * f.at(t / q) + (1 - q) * f0(f) - f.at(t)
  return f.at(t / q) - f.at(t) / q
