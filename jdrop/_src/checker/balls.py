"""Certified evaluation of a jaxpr over the reals, with ball arithmetic.

Every float value is an array of ``flint.arb`` balls (a midpoint and a radius
that together *contain* the exact real value), computed by FLINT's Arb library,
which bounds every rounding and every special-function error rigorously. Inputs
and the jaxpr's literals enter exactly (every float is a dyadic rational), so a
residual ball that excludes 0 proves the exact residual is non-zero: that is how
the checker certifies a counterexample.

Integers and booleans are exact NumPy arrays. A comparison must be *decided*:
when the two balls overlap, or an operation leaves its real domain (``log`` of a
ball that reaches 0, a division by a ball that contains 0), evaluation stops with
:class:`NotCertified`, and the candidate is discarded, never guessed.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import jax.numpy as jnp
import numpy as np
from flint import arb
from flint import ctx
from jax.extend import core
from jax.extend.core import primitives as prims

from jdrop._src.checker import jaxprs

PRECISION = 128  # bits of the balls' midpoints; residuals of 1e-30 are still certified
METHOD = f"ball arithmetic (FLINT Arb, {PRECISION}-bit)"


class NotCertified(Exception):
  """The balls cannot decide a step (overlapping comparison, domain edge, no rule)."""


@contextlib.contextmanager
def precision(bits: int = PRECISION) -> Iterator[None]:
  """Sets Arb's working precision for the block (it is a global of python-flint)."""
  saved = ctx.prec
  ctx.prec = bits
  try:
    yield
  finally:
    ctx.prec = saved


def exact(value: float) -> arb:
  """The ball holding exactly ``value`` (every finite float is a dyadic rational)."""
  value = float(value)
  if math.isnan(value):
    return arb.nan()
  if math.isinf(value):  # exact infinities: max(-inf, b) = b, exp(-inf) = 0
    return arb.pos_inf() if value > 0 else arb.neg_inf()
  return arb(value)


_to_ball = np.frompyfunc(exact, 1, 1)


def balls(values: Any) -> np.ndarray:
  """An object array of exact balls from floats, ints or bools."""
  array = np.asarray(values)
  if array.dtype == object:
    return array
  return objects(_to_ball(array.astype(np.float64)), array.shape)


def objects(value: Any, shape: tuple[int, ...]) -> np.ndarray:
  """``value`` (an array or, for 0-d results of a ufunc, a bare ball) as an object array."""
  out = np.empty(shape, dtype=object)
  out[...] = value
  return out


def is_ball_array(value: Any) -> bool:
  return isinstance(value, np.ndarray) and value.dtype == object


def midpoints(values: np.ndarray) -> np.ndarray:
  """Float64 midpoints of a ball array (NaN for a non-finite ball)."""
  flat = [float(b.mid()) if b.is_finite() else math.nan for b in np.asarray(values).ravel()]
  return np.array(flat, dtype=np.float64).reshape(np.shape(values))


def infinities(values: Any) -> np.ndarray:
  """Float64 values of exact balls: ``±inf`` for the exact infinities, NaN for a ball
  that is not an exact float (a NaN literal, an undefined result, a wide ball)."""
  flat = [float(b.mid()) if b.is_exact() else math.nan for b in balls(values).ravel()]
  return np.array(flat, dtype=np.float64).reshape(np.shape(values))


_NUMPY_COMPARISONS = {
  "lt": np.less,
  "le": np.less_equal,
  "gt": np.greater,
  "ge": np.greater_equal,
  "eq": np.equal,
  "ne": np.not_equal,
}


def against_infinities(
  name: str, infinities: np.ndarray, constant_first: bool, shape: tuple[int, ...]
) -> np.ndarray | None:
  """A comparison (or ``max``/``min``) of any real number with exact infinities, when
  it does not depend on the real: ``h < inf`` holds and ``h == -inf`` fails for every
  real ``h`` (NumPy's answer for a finite stand-in, 0). ``None`` where it does
  depend (``max(h, -inf)`` is ``h``: returned as ``None`` too) or is undefined (NaN)."""
  if name not in _NUMPY_COMPARISONS or not np.all(np.isinf(infinities)):
    return None
  pair = (infinities, np.zeros(())) if constant_first else (np.zeros(()), infinities)
  return np.broadcast_to(_NUMPY_COMPARISONS[name](*pair), shape).copy()


def neutral(name: str, infinities: np.ndarray) -> bool:
  """``max(h, -inf) = h`` and ``min(h, inf) = h`` for every real ``h``."""
  value = {"max": -np.inf, "min": np.inf}.get(name)
  return value is not None and bool(np.all(infinities == value))


def bounds(ball: arb) -> tuple[float, float]:
  """Floats ``(lo, hi)`` with ``lo <= ball <= hi``, rounded outward."""
  lo = math.nextafter(float(ball.lower()), -math.inf)
  hi = math.nextafter(float(ball.upper()), math.inf)
  return lo, hi


def exact_value(ball: arb) -> Fraction | None:
  """The exact rational value of an exact finite ball (a point), else ``None``."""
  if not (ball.is_finite() and ball.is_exact()):
    return None
  mantissa, exponent = ball.mid().man_exp()  # exactly, however many bits it has
  return Fraction(int(mantissa)) * Fraction(2) ** int(exponent)


def from_fraction(value: Fraction) -> arb:
  """A ball that contains ``value`` (exact when its denominator is a power of 2 and it fits
  the working precision)."""
  return arb(int(value.numerator)) / arb(int(value.denominator))


def certainly_nonzero(ball: arb) -> bool:
  return bool(ball.is_finite() and not ball.contains(0))


def is_exact_zero(ball: arb) -> bool:
  return bool(ball.is_zero())


# --- rules --------------------------------------------------------------------

RULES: dict[Any, Callable[..., Any]] = {}


def _elementwise(fn: Callable[..., Any], nin: int) -> Callable[..., Any]:
  ufunc = np.frompyfunc(fn, nin, 1)

  def rule(eqn: core.JaxprEqn, *args: Any) -> np.ndarray:
    if not any(is_ball_array(a) for a in args):  # integers: exact in JAX (3 // 2 is 1)
      return _concrete(eqn, *args)
    out = ufunc(*[balls(a) for a in args])
    return objects(out, eqn.outvars[0].aval.shape)

  return rule


def _unary(fn: Callable[[arb], arb], *primitives: Any) -> None:
  for p in primitives:
    RULES[p] = _elementwise(fn, 1)


def _binary(fn: Callable[[arb, arb], arb], *primitives: Any) -> None:
  for p in primitives:
    RULES[p] = _elementwise(fn, 2)


def _require(ok: bool, why: str) -> None:
  if not ok:
    raise NotCertified(why)


# Where an operation leaves its real domain (log of a ball that reaches 0, a
# division by a ball that contains 0) or cannot be decided (the sign of a ball
# around 0), the result is the NaN ball, "no enclosure": it never certifies
# anything, a comparison with it is undecided, and `select` (jnp.where) may
# still discard it, as it discards the undefined branch of where(x == 0, 0, x/x).
UNDEFINED = arb.nan


def _div(a: arb, b: arb) -> arb:
  return a / b if certainly_nonzero(b) else UNDEFINED()


def _log(a: arb) -> arb:
  return a.log() if a > 0 else UNDEFINED()


def _log1p(a: arb) -> arb:
  return a.log1p() if a > -1 else UNDEFINED()


def _sqrt(a: arb) -> arb:
  if a.is_zero():
    return a
  return a.sqrt() if a > 0 else UNDEFINED()


def _rsqrt(a: arb) -> arb:
  return a.rsqrt() if a > 0 else UNDEFINED()


def _cbrt(a: arb) -> arb:
  if a.is_zero():
    return a
  if a > 0:
    return a.root(3)
  return -((-a).root(3)) if a < 0 else UNDEFINED()


def _sign(a: arb) -> arb:
  if a.is_zero():
    return arb(0)
  if not certainly_nonzero(a):
    return UNDEFINED()
  return arb(1) if a > 0 else arb(-1)


def _integer(a: arb, how: str) -> arb:
  """floor or ceil, when the whole ball has one (else the NaN ball)."""
  if not a.is_finite():
    return UNDEFINED()
  lo, hi = getattr(a.lower(), how)(), getattr(a.upper(), how)()
  return lo if lo == hi else UNDEFINED()


def _round(a: arb, to_even: bool) -> arb:
  """lax.round: half away from zero, or half to even (``rounding_method=1``)."""
  shifted = a + arb(0.5)
  if not a.is_finite():
    return UNDEFINED()
  if not shifted.contains_integer():
    return _integer(shifted, "floor")
  if not a.is_exact():
    return UNDEFINED()  # the ball reaches a half-integer, where the result jumps
  lo, hi = a.floor(), a.ceil()  # a is exactly half an odd integer
  if to_even:
    return lo if (lo / 2).is_integer() else hi
  return hi if a > 0 else lo


def _pow(a: arb, b: arb) -> arb:
  if not (a.is_finite() and b.is_finite()):
    return UNDEFINED()
  if b.is_exact() and b.is_integer():  # (python-flint 0.9 has no int(arb): go through fmpz)
    return _integer_pow(a, int(b.unique_fmpz()))
  if a.is_zero() and b > 0:
    return arb(0)
  return (b * a.log()).exp() if a > 0 else UNDEFINED()


def _integer_pow(a: arb, y: int) -> arb:
  if not a.is_finite() or (y < 0 and not certainly_nonzero(a)):
    return UNDEFINED()  # (Arb gives nan**0 = inf**0 = 1: no number to the power 0 is 1 here)
  return a**y


def _rem(a: arb, b: arb) -> arb:
  """``lax.rem``: ``a - trunc(a / b) * b`` (C's fmod), where the quotient's integer part
  is decided."""
  if not (a.is_finite() and certainly_nonzero(b)):
    return UNDEFINED()
  ratio = a / b
  if ratio >= 0:
    whole = _integer(ratio, "floor")
  elif ratio < 0:
    whole = _integer(ratio, "ceil")
  else:
    return UNDEFINED()
  return a - whole * b if whole.is_finite() else UNDEFINED()


def _inside(a: arb, lo: float, hi: float, closed: bool = False) -> bool:
  if closed:
    return bool(a >= lo and a <= hi)
  return bool(a > lo and a < hi)


def _erf_inv(a: arb) -> arb:
  return a.erfinv() if _inside(a, -1, 1) else UNDEFINED()


def _atanh(a: arb) -> arb:
  return a.atanh() if _inside(a, -1, 1) else UNDEFINED()


def _asin(a: arb) -> arb:
  return a.asin() if _inside(a, -1, 1, closed=True) else UNDEFINED()


def _acos(a: arb) -> arb:
  return a.acos() if _inside(a, -1, 1, closed=True) else UNDEFINED()


def _acosh(a: arb) -> arb:
  return a.acosh() if a >= 1 else UNDEFINED()


def _tan(a: arb) -> arb:
  return a.tan() if certainly_nonzero(a.cos()) else UNDEFINED()


def _atan2(a: arb, b: arb) -> arb:
  # defined and continuous away from the branch cut {b <= 0, a = 0}
  if b > 0 or certainly_nonzero(a):
    return arb.atan2(a, b)
  return UNDEFINED()


def _logistic(a: arb) -> arb:
  return 1 / (1 + (-a).exp())


_binary(lambda a, b: a + b, prims.add_p)


def _sub(eqn: core.JaxprEqn, a: Any, b: Any) -> np.ndarray:
  if a is b and is_ball_array(a):  # x - x = 0 for every real x, however wide its ball
    zero = np.frompyfunc(lambda v: arb(0) if v.is_finite() else UNDEFINED(), 1, 1)
    return objects(zero(np.broadcast_to(a, eqn.outvars[0].aval.shape)), eqn.outvars[0].aval.shape)
  return _elementwise(lambda u, v: u - v, 2)(eqn, a, b)


RULES[prims.sub_p] = _sub
_binary(lambda a, b: a * b, prims.mul_p)
_binary(_div, prims.div_p)
_binary(lambda a, b: a.max(b), prims.max_p)
_binary(lambda a, b: a.min(b), prims.min_p)
_binary(_pow, prims.pow_p)
_binary(_rem, prims.rem_p)
_binary(_atan2, prims.atan2_p)
_unary(lambda a: -a, prims.neg_p)
_unary(abs, prims.abs_p)
_unary(_sign, prims.sign_p)
_unary(lambda a: a.exp(), prims.exp_p)
_unary(lambda a: (a * arb(2).log()).exp(), prims.exp2_p)
_unary(lambda a: a.expm1(), prims.expm1_p)
_unary(_log, prims.log_p)
_unary(_log1p, prims.log1p_p)
_unary(lambda a: a.tanh(), prims.tanh_p)
_unary(_logistic, prims.logistic_p)
_unary(lambda a: a.erf(), prims.erf_p)
_unary(lambda a: a.erfc(), prims.erfc_p)
_unary(_erf_inv, prims.erf_inv_p)
_unary(_sqrt, prims.sqrt_p)
_unary(_rsqrt, prims.rsqrt_p)
_unary(_cbrt, prims.cbrt_p)
_unary(lambda a: a * a, prims.square_p)
_unary(lambda a: a.sin(), prims.sin_p)
_unary(lambda a: a.cos(), prims.cos_p)
_unary(_tan, prims.tan_p)
_unary(lambda a: a.atan(), prims.atan_p)
_unary(_asin, prims.asin_p)
_unary(_acos, prims.acos_p)
_unary(lambda a: a.sinh(), prims.sinh_p)
_unary(lambda a: a.cosh(), prims.cosh_p)
_unary(lambda a: a.asinh(), prims.asinh_p)
_unary(_acosh, prims.acosh_p)
_unary(_atanh, prims.atanh_p)
_unary(functools.partial(_integer, how="floor"), prims.floor_p)
_unary(functools.partial(_integer, how="ceil"), prims.ceil_p)


def _round_rule(eqn: core.JaxprEqn, x: np.ndarray) -> np.ndarray:
  to_even = int(eqn.params.get("rounding_method", 0)) == 1
  return _elementwise(lambda a: _round(a, to_even), 1)(eqn, x)


RULES[prims.round_p] = _round_rule


def _integer_pow_rule(eqn: core.JaxprEqn, x: np.ndarray) -> np.ndarray:
  return _elementwise(lambda a: _integer_pow(a, eqn.params["y"]), 1)(eqn, x)


RULES[prims.integer_pow_p] = _integer_pow_rule


def _identity(eqn: core.JaxprEqn, x: Any) -> Any:
  return x


# Over the reals a change of float precision is the identity: the checker decides
# the exact-math question, and float-level effects are a separate finding.
for _p in (prims.reduce_precision_p, prims.copy_p, prims.stop_gradient_p):
  RULES[_p] = _identity


def _is_finite(eqn: core.JaxprEqn, x: np.ndarray) -> np.ndarray:
  for b in x.ravel():
    _require(bool(b.is_finite()), "is_finite of a non-finite ball")
  return np.ones(x.shape, dtype=bool)


RULES[prims.is_finite_p] = _is_finite


def _clamp(eqn: core.JaxprEqn, lo: Any, x: Any, hi: Any) -> np.ndarray:
  out = np.frompyfunc(lambda lo, x, hi: x.max(lo).min(hi), 3, 1)(balls(lo), balls(x), balls(hi))
  return objects(out, eqn.outvars[0].aval.shape)


RULES[prims.clamp_p] = _clamp


def _decide(holds: Callable[[arb, arb], bool], fails: Callable[[arb, arb], bool], what: str):
  def decide(a: arb, b: arb) -> bool:
    if holds(a, b):
      return True
    if fails(a, b):
      return False
    raise NotCertified(f"a comparison `{what}` of overlapping balls")

  return np.frompyfunc(decide, 2, 1)


_COMPARISONS = {
  prims.lt_p: (_decide(lambda a, b: a < b, lambda a, b: a >= b, "<"), np.less),
  prims.le_p: (_decide(lambda a, b: a <= b, lambda a, b: a > b, "<="), np.less_equal),
  prims.gt_p: (_decide(lambda a, b: a > b, lambda a, b: a <= b, ">"), np.greater),
  prims.ge_p: (_decide(lambda a, b: a >= b, lambda a, b: a < b, ">="), np.greater_equal),
  prims.eq_p: (_decide(lambda a, b: a == b, lambda a, b: a != b, "=="), np.equal),
  prims.ne_p: (_decide(lambda a, b: a != b, lambda a, b: a == b, "!="), np.not_equal),
}
# x == x holds for every real x: a variable compared with itself is decided by
# the comparison's reflexivity, even when its ball is wide (this is how jnp's
# NaN checks such as `ne(d, d)` read over the reals).
REFLEXIVE = {"lt": False, "le": True, "gt": False, "ge": True, "eq": True, "ne": False}


def _comparison(primitive: Any) -> Callable[..., np.ndarray]:
  on_balls, on_exact = _COMPARISONS[primitive]

  def rule(eqn: core.JaxprEqn, a: Any, b: Any) -> np.ndarray:
    shape = eqn.outvars[0].aval.shape
    if a is b:
      # x == x for every real x; an undefined value (a NaN ball) decides nothing
      if is_ball_array(a) and not all(v.is_finite() for v in a.ravel()):
        raise NotCertified("a comparison of an undefined value with itself")
      return np.full(shape, REFLEXIVE[primitive.name])
    if is_ball_array(a) or is_ball_array(b):
      return np.asarray(on_balls(balls(a), balls(b)), dtype=bool).reshape(shape)
    return np.asarray(on_exact(a, b)).reshape(shape)

  return rule


for _p in _COMPARISONS:
  RULES[_p] = _comparison(_p)


def _select_n(eqn: core.JaxprEqn, which: Any, *cases: Any) -> np.ndarray:
  shape = eqn.outvars[0].aval.shape
  which = np.broadcast_to(np.asarray(which).astype(np.int64), shape)
  if any(is_ball_array(c) for c in cases):
    cases = tuple(balls(c) for c in cases)
  out = np.choose(which, [np.broadcast_to(c, shape) for c in cases])
  return np.asarray(out, dtype=cases[0].dtype if is_ball_array(cases[0]) else None)


RULES[prims.select_n_p] = _select_n


def _convert(eqn: core.JaxprEqn, x: Any) -> np.ndarray:
  new = np.dtype(eqn.params["new_dtype"])
  _require(not jnp.issubdtype(new, jnp.complexfloating), "complex values")
  if jnp.issubdtype(new, jnp.floating):
    return balls(x)
  if not is_ball_array(x):
    return np.asarray(x).astype(new)
  if new == np.bool_:
    return np.asarray(_COMPARISONS[prims.ne_p][0](x, balls(0)), dtype=bool)
  # float -> int truncates toward zero
  trunc = np.frompyfunc(lambda a: _integer(a, "floor") if a >= 0 else -_integer(-a, "floor"), 1, 1)
  out = objects(trunc(x), x.shape)
  _require(all(b.is_finite() for b in out.ravel()), "a float-to-integer conversion of a wide ball")
  values = [int(b.unique_fmpz()) for b in out.ravel()]
  info = np.iinfo(new)
  # XLA does not define a conversion out of the target's range: never certify one
  _require(
    all(info.min <= v <= info.max for v in values),
    f"a float-to-integer conversion out of the range of {new.name}",
  )
  return np.asarray(values, dtype=new).reshape(x.shape)


RULES[prims.convert_element_type_p] = _convert


def _bitcast(eqn: core.JaxprEqn, x: Any) -> Any:
  """Integer bits to a float are that float exactly (``jax.random.uniform``'s trick)."""
  _require(not is_ball_array(x), "a bitcast of a real number (bits belong to floats, not reals)")
  out = _concrete(eqn, x)
  return balls(out) if jnp.issubdtype(out.dtype, jnp.floating) else out


RULES[prims.bitcast_convert_type_p] = _bitcast


def _sort(eqn: core.JaxprEqn, *operands: Any) -> list[Any]:
  """``lax.sort`` by the first operand, on decided comparisons (exact ties keep their order)."""
  _require(eqn.params["num_keys"] == 1, "a sort on several keys")
  dim = eqn.params["dimension"]
  if not any(is_ball_array(v) for v in operands):
    return _concrete(eqn, *operands)
  keys = np.moveaxis(balls(operands[0]), dim, -1)
  order = np.empty(keys.shape, dtype=np.int64)
  for lane in np.ndindex(keys.shape[:-1]):
    row = keys[lane]
    order[lane] = sorted(range(row.shape[0]), key=functools.cmp_to_key(_decided_order(row)))
    if not eqn.params["is_stable"] and len(operands) > 1:
      ties = [row[i] == row[j] for i, j in zip(order[lane][:-1], order[lane][1:], strict=True)]
      _require(not any(ties), "an unstable sort of tied keys (the order is not defined)")
  outs = []
  for v in operands:
    moved = np.moveaxis(balls(v) if is_ball_array(v) else np.asarray(v), dim, -1)
    outs.append(np.moveaxis(np.take_along_axis(moved, order, axis=-1), -1, dim))
  return outs


def _decided_order(row: np.ndarray) -> Callable[[int, int], int]:
  def compare(i: int, j: int) -> int:
    a, b = row[i], row[j]
    if a < b:
      return -1
    if a > b:
      return 1
    _require(bool(a == b), "a sort of overlapping balls")
    return 0

  return compare


RULES[prims.sort_p] = _sort


def _effect_only(eqn: core.JaxprEqn, *inputs: Any) -> list[Any]:
  """``jax.debug.print`` and ``jax.debug.callback``: no value flows out of them."""
  return []


# By name: JAX exports no public handle on these primitives.
EFFECT_ONLY = frozenset({"debug_callback", "debug_print"})


# --- reductions and contractions ---------------------------------------------


def _reduce(combine: Callable[[Any, Any], Any], axes: tuple[int, ...], x: np.ndarray):
  if not axes:
    return x
  moved = np.moveaxis(x, axes, range(len(axes)))
  rest = moved.shape[len(axes) :]
  rows = moved.reshape((-1, *rest))
  _require(rows.shape[0] > 0, "a reduction over an empty axis")
  out = rows[0]
  for row in rows[1:]:
    out = combine(out, row)
  return objects(out, rest)


_max = np.frompyfunc(lambda a, b: a.max(b), 2, 1)
_min = np.frompyfunc(lambda a, b: a.min(b), 2, 1)


def _reduction(combine: Callable[[Any, Any], Any], exact: Callable[..., Any]):
  def rule(eqn: core.JaxprEqn, x: Any) -> np.ndarray:
    axes = tuple(eqn.params["axes"])
    if not is_ball_array(x):
      return np.asarray(exact(x, axis=axes))
    return _reduce(combine, axes, x)

  return rule


RULES[prims.reduce_sum_p] = _reduction(np.add, np.sum)
RULES[prims.reduce_prod_p] = _reduction(np.multiply, np.prod)
RULES[prims.reduce_max_p] = _reduction(_max, np.max)
RULES[prims.reduce_min_p] = _reduction(_min, np.min)


def _cumulative(combine: Callable[[Any, Any], Any]):
  def rule(eqn: core.JaxprEqn, x: Any) -> np.ndarray:
    axis, reverse = eqn.params["axis"], eqn.params.get("reverse", False)
    x = balls(x)
    moved = np.moveaxis(x, axis, 0)
    if reverse:
      moved = moved[::-1]
    out = moved.copy()
    for i in range(1, out.shape[0]):
      out[i] = combine(out[i - 1], moved[i])
    if reverse:
      out = out[::-1]
    return np.moveaxis(out, 0, axis)

  return rule


RULES[prims.cumsum_p] = _cumulative(np.add)
RULES[prims.cumprod_p] = _cumulative(np.multiply)
RULES[prims.cummax_p] = _cumulative(_max)
RULES[prims.cummin_p] = _cumulative(_min)


def _argbest(better: Callable[[arb, arb], bool], name: str):
  def rule(eqn: core.JaxprEqn, x: Any) -> np.ndarray:
    (axis,) = eqn.params["axes"]
    x = np.moveaxis(balls(x), axis, -1)
    out = np.empty(x.shape[:-1], dtype=np.dtype(eqn.params["index_dtype"]))
    for index in np.ndindex(out.shape):
      row = x[index]
      best = 0
      for j in range(1, row.shape[0]):
        if better(row[j], row[best]):
          best = j
      for j in range(row.shape[0]):
        # every other entry must be certainly worse (ties are not decided)
        _require(j == best or better(row[best], row[j]), f"{name} over overlapping balls")
      out[index] = best
    return out

  return rule


RULES[prims.argmax_p] = _argbest(lambda a, b: a > b, "argmax")
RULES[prims.argmin_p] = _argbest(lambda a, b: a < b, "argmin")


def _dot_general(eqn: core.JaxprEqn, lhs: Any, rhs: Any) -> np.ndarray:
  (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
  lhs, rhs = balls(lhs), balls(rhs)
  lf = [d for d in range(lhs.ndim) if d not in lc and d not in lb]
  rf = [d for d in range(rhs.ndim) if d not in rc and d not in rb]
  batch = [lhs.shape[d] for d in lb]
  k = int(np.prod([lhs.shape[d] for d in lc], dtype=np.int64))
  left = np.transpose(lhs, [*lb, *lf, *lc]).reshape((-1, _size(lhs, lf), k))
  right = np.transpose(rhs, [*rb, *rc, *rf]).reshape((-1, k, _size(rhs, rf)))
  out = np.empty((left.shape[0], left.shape[1], right.shape[2]), dtype=object)
  for i in range(left.shape[0]):
    for a in range(left.shape[1]):
      for b in range(right.shape[2]):
        total = arb(0)
        for j in range(k):
          total += left[i, a, j] * right[i, j, b]
        out[i, a, b] = total
  return out.reshape(batch + [lhs.shape[d] for d in lf] + [rhs.shape[d] for d in rf])


def _size(x: np.ndarray, dims: list[int]) -> int:
  return int(np.prod([x.shape[d] for d in dims], dtype=np.int64))


RULES[prims.dot_general_p] = _dot_general


# --- data movement, integers and booleans ---------------------------------------


def _structural(eqn: core.JaxprEqn, *inputs: Any) -> Any:
  data = jaxprs.data_operands(eqn)
  if not any(is_ball_array(inputs[i]) for i in data):
    return _concrete(eqn, *inputs)
  operands = {i: balls(inputs[i]) for i in data}
  shapes = [operands[i].shape if i in operands else None for i in range(len(inputs))]
  pool = np.concatenate([operands[i].ravel() for i in data] + [[exact(jaxprs.fill_value(eqn))]])
  # index -1 (a gather's out-of-bounds fill) reads the fill value at the pool's end
  outs = [pool[i] for i in jaxprs.structural_indices(eqn, shapes, list(inputs))]
  return outs if eqn.primitive.multiple_results else outs[0]


def _concrete(eqn: core.JaxprEqn, *inputs: Any) -> Any:
  """Integer, boolean and PRNG-key steps run exactly, by JAX itself."""
  outs = eqn.primitive.bind(*[jnp.asarray(v) for v in inputs], **eqn.params)
  if eqn.primitive.multiple_results:
    return [jaxprs.concrete(o) for o in outs]
  return jaxprs.concrete(outs)


def _is_float(var: Any) -> bool:
  dtype = var.aval.dtype
  return not jaxprs.is_key_dtype(dtype) and bool(jnp.issubdtype(dtype, jnp.inexact))


def _exact_unless_balls(rule: Callable[..., Any], eqn: core.JaxprEqn, *inputs: Any) -> Any:
  """A step with integer or boolean outputs runs exactly in JAX unless a ball is
  among its inputs (``cumsum`` of integers must stay integers)."""
  if any(is_ball_array(v) for v in inputs):
    return rule(eqn, *inputs)
  return _concrete(eqn, *inputs)


class BallDomain:
  """The interpreter's domain for certified evaluation."""

  def rule(self, eqn: core.JaxprEqn) -> Callable[..., Any] | None:
    if eqn.primitive.name in EFFECT_ONLY:
      return _effect_only
    rule = RULES.get(eqn.primitive)
    if rule is None or any(_is_float(v) for v in eqn.outvars):
      return rule
    return functools.partial(_exact_unless_balls, rule)

  def literal(self, value: Any, aval: Any) -> Any:
    return self.constant(jaxprs.concrete(value))

  def index(self, value: Any) -> int | None:
    return None if is_ball_array(value) else int(value)

  def constant(self, value: Any) -> Any:
    array = jaxprs.concrete(value)
    if jaxprs.is_key(array):
      return array
    if jnp.issubdtype(array.dtype, jnp.floating):
      return balls(array)
    if jnp.issubdtype(array.dtype, jnp.complexfloating):
      raise NotCertified("complex values")
    return array

  def take(self, value: Any, i: int) -> Any:
    return value[i]

  def stack(self, values: Sequence[Any], aval: Any = None) -> Any:
    """Rows stacked on a new leading axis (balls, exact arrays or keys alike)."""
    if any(jaxprs.is_key(v) for v in values):
      return jnp.stack(values)
    if any(is_ball_array(v) for v in values):
      return np.stack([balls(v) for v in values])
    return np.stack(values)

  def missing(self, eqn: core.JaxprEqn, inputs: list[Any]) -> list[Any]:
    name = eqn.primitive.name
    floats = any(jnp.issubdtype(v.aval.dtype, jnp.floating) for v in [*eqn.invars, *eqn.outvars])
    if name in jaxprs.STRUCTURAL:
      out = _structural(eqn, *inputs)
    elif name == "iota":  # exact small integers, whatever the dtype
      out = self.constant(_concrete(eqn))
    elif not floats:  # integer, boolean and key steps are exact in JAX itself
      out = _concrete(eqn, *inputs)
    elif name in jaxprs.LOOPS:
      raise NotCertified(f"a `{name}` loop whose trip count is not known or is too long")
    else:
      raise NotCertified(f"no ball-arithmetic rule for the primitive `{name}`")
    return out if eqn.primitive.multiple_results else [out]


DOMAIN = BallDomain()


def evaluate(jaxpr: core.Jaxpr, consts: list[Any], *args: np.ndarray) -> list[Any]:
  """Evaluates ``jaxpr`` on ball arrays (raises :class:`NotCertified` when stuck)."""
  return jaxprs.evaluate(DOMAIN, jaxpr, consts, list(args))
