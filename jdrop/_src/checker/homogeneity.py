"""The proof engine: an algebra of positive homogeneity and dependence.

Each value of the traced function is described as a function of the input
vector ``x``:

* ``deps``: which input positions each element may depend on (a boolean array
  ``(*shape, n)``); an output whose element ``i`` depends on ``x[i]`` alone is
  *elementwise*;
* and one of: a **constant** (exact balls, independent of ``x``); ``offset +
  h(x)`` with ``h`` **positively homogeneous of degree** ``deg`` (``h(t x) =
  t**deg h(x)`` for every ``t > 0`` and every ``x``, and defined everywhere);
  or **unknown**, with the reason.

``elin`` marks an ``h`` that is a linear map of elementwise degree-1 functions
of ``x``: for such an ``h``, ``E h(D(x)) = h(x)`` whatever the mask
distribution's correlations (expectation is linear, and each elementwise
degree-1 function ``g`` has ``q g(x/q) + (1-q) g(0) = g(x)``).

The verdicts this algebra can *prove* (the sound direction only):

* pathwise, for every rate: the output is elementwise, of degree 1, with no
  offset. Then ``f_i(m x/q) = m_i f_i(x)/q`` for every mask;
* in expectation, for every rate: the output is constant, or ``offset + h``
  with ``h`` elin.

Rules are sound over the reals: a literal is its exact float value, a constant
is computed with certified balls, and a rule that cannot tell returns
"unknown" with the reason. A primitive without a rule is "unknown", never a pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from jax.extend import core

from jdrop._src.checker import balls
from jdrop._src.checker import jaxprs


@dataclasses.dataclass(frozen=True, eq=False)
class Hom:
  """What the algebra knows about one value (see the module docstring)."""

  deps: np.ndarray
  const: np.ndarray | None = None
  deg: Fraction | None = None
  offset: np.ndarray | None = None
  elin: bool = False
  reason: str = ""
  nonneg: bool = False  # known to be >= 0 for every x (constants: see :func:`_nonneg`)
  approx: str = ""  # a primitive whose dependence was over-approximated on the way here

  @property
  def is_const(self) -> bool:
    return self.const is not None

  @property
  def is_known(self) -> bool:
    return self.const is not None or self.deg is not None

  @property
  def shape(self) -> tuple[int, ...]:
    return self.deps.shape[:-1]

  def elementwise(self, shape: tuple[int, ...]) -> bool:
    """Element ``i`` depends on input ``i`` alone (and the shapes match)."""
    if self.shape != tuple(shape):
      return False
    flat = self.deps.reshape(-1, self.deps.shape[-1])
    return not np.any(flat & ~np.eye(flat.shape[0], flat.shape[1], dtype=bool))


def _is_zero(value: np.ndarray | None) -> bool:
  """An exact zero everywhere (``None`` stands for a zero offset)."""
  if value is None:
    return True
  if not balls.is_ball_array(value):
    return not np.any(value)
  return all(balls.is_exact_zero(b) for b in value.ravel())


def _zero_const(h: Hom) -> bool:
  return h.is_const and _is_zero(h.const)


def finite_constant(h: Hom) -> bool:
  """``h`` is a constant whose every entry is a real number."""
  return h.is_const and _finite_const(h)


def _finite_const(h: Hom) -> bool:
  """A constant whose every entry is a real number (integers, booleans and keys are)."""
  if not balls.is_ball_array(h.const):
    return True
  return all(b.is_finite() for b in h.const.ravel())


def _nonneg(h: Hom) -> bool:
  """``h(x) >= 0`` for every real ``x``."""
  if h.is_const:
    if not balls.is_ball_array(h.const):
      return jaxprs.is_key(h.const) is False and bool(np.all(np.asarray(h.const) >= 0))
    return all(b.is_finite() and b >= 0 for b in h.const.ravel())
  return h.nonneg


# --- how values are built ---------------------------------------------------


class _Unknown(Exception):
  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def _homogeneous(
  deg: Fraction, offset: np.ndarray | None = None, elin: bool = False, nonneg: bool = False
):
  """A rule's result before ``deps`` are attached (see :func:`_finish`)."""
  if offset is not None:
    _finite(offset, "a sum")
  if deg == 0 or _is_zero(offset):
    offset = None  # a degree-0 function absorbs any constant
  return {"deg": Fraction(deg), "offset": offset, "elin": elin and deg == 1, "nonneg": nonneg}


def _plain(h: Hom, what: str) -> Fraction:
  """The degree of a non-constant value with no offset (else unknown)."""
  if h.is_const:
    raise _Unknown(f"{what} of a function of x and a constant not shown to be 0")
  if h.deg is None:
    raise _Unknown(h.reason)
  if h.offset is not None:
    raise _Unknown(f"{what} of an affine function c + h(x) with c not shown to be 0")
  return h.deg


def _offset_or_zero(h: Hom) -> np.ndarray:
  if h.is_const:
    return balls.balls(h.const)
  if h.offset is not None:
    return h.offset
  return balls.balls(np.zeros(h.shape))


# --- rules ------------------------------------------------------------------

RULES: dict[str, Callable[..., Any]] = {}


def _rule(*names: str):
  def register(fn: Callable[..., Any]) -> Callable[..., Any]:
    for name in names:
      RULES[name] = fn
    return fn

  return register


def _const_eval(eqn: core.JaxprEqn, values: list[np.ndarray]) -> list[np.ndarray]:
  """Folds a step whose inputs are all constant, with certified balls."""
  rule = balls.RULES.get(eqn.primitive)
  if rule is None:
    return balls.DOMAIN.missing(eqn, values)
  out = rule(eqn, *values)
  return out if eqn.primitive.multiple_results else [out]


def _ball_op(eqn: core.JaxprEqn, *values: np.ndarray) -> np.ndarray:
  (out,) = _const_eval(eqn, list(values))
  return out


def _sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = balls.balls(a), balls.balls(b)
  return balls.objects(a + b, np.broadcast_shapes(a.shape, b.shape))


def _product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a, b = balls.balls(a), balls.balls(b)
  return balls.objects(a * b, np.broadcast_shapes(a.shape, b.shape))


@_rule("add", "sub")
def _add(eqn: core.JaxprEqn, a: Hom, b: Hom):
  if eqn.primitive.name == "sub":
    if a is b and a.is_known:  # x - x = 0 for every real x
      return {"const": balls.balls(np.zeros(eqn.outvars[0].aval.shape))}
    b = _negate(b)
  parts = [h for h in (a, b) if not h.is_const]
  if len(parts) == 1:
    other = b if parts[0] is a else a
    h = parts[0]
    if h.deg is None:
      raise _Unknown(h.reason)
    offset = _sum(_offset_or_zero(h), _finite(other.const, "a sum"))
    return _homogeneous(h.deg, offset, h.elin)
  if a.deg is None or b.deg is None:
    raise _Unknown(a.reason or b.reason)
  if a.deg != b.deg:
    raise _Unknown(f"a sum of homogeneous terms of degrees {a.deg} and {b.deg}")
  offset = None
  if a.offset is not None or b.offset is not None:
    offset = _sum(_offset_or_zero(a), _offset_or_zero(b))
  nonneg = eqn.primitive.name == "add" and a.nonneg and b.nonneg
  return _homogeneous(a.deg, offset, a.elin and b.elin, nonneg)


def _negate(h: Hom) -> Hom:
  if h.is_const:
    return dataclasses.replace(h, const=-balls.balls(h.const))
  if h.offset is None:
    return h
  return dataclasses.replace(h, offset=-h.offset)


@_rule("neg")
def _neg(eqn: core.JaxprEqn, a: Hom):
  if a.deg is None:
    raise _Unknown(a.reason)
  negated = _negate(a)
  return _homogeneous(a.deg, negated.offset, a.elin)


def _finite(c: np.ndarray, what: str) -> np.ndarray:
  """``c`` as balls, if every entry is a real number (inf and NaN are not)."""
  c = balls.balls(c)
  if not all(b.is_finite() for b in c.ravel()):
    raise _Unknown(f"{what} with a constant that is not a finite real number (inf, NaN, 1/0)")
  return c


def _scale(h: Hom, c: np.ndarray, divide: bool = False):
  if h.deg is None:
    raise _Unknown(h.reason)
  c = _finite(c, "a product")
  if divide:
    c = _finite(np.frompyfunc(balls._div, 2, 1)(balls.balls(1.0), c), "a division")
  offset = None if h.offset is None else _product(h.offset, balls.balls(c))
  nonneg = h.nonneg and all(b >= 0 for b in c.ravel())
  return _homogeneous(h.deg, offset, h.elin, nonneg)


@_rule("mul")
def _mul(eqn: core.JaxprEqn, a: Hom, b: Hom):
  if a.is_const or b.is_const:
    c, h = (a, b) if a.is_const else (b, a)
    if _zero_const(c) and h.is_known:  # 0 * h = 0 where h is defined: everywhere
      return {"const": balls.balls(np.zeros(eqn.outvars[0].aval.shape))}
    return _scale(h, c.const)
  nonneg = a is b or (a.nonneg and b.nonneg)
  return _homogeneous(_plain(a, "a product") + _plain(b, "a product"), nonneg=nonneg)


@_rule("div")
def _div(eqn: core.JaxprEqn, a: Hom, b: Hom):
  if b.is_const and not a.is_const:
    return _scale(a, b.const, divide=True)
  raise _Unknown("a division by a function of x (undefined where it is 0)")


def _same_degree(values: list[Hom], what: str) -> Fraction:
  """The common degree of values with no offsets; exact-zero constants fit any."""
  degrees = {_plain(h, what) for h in values if not _zero_const(h)}
  if len(degrees) > 1:
    raise _Unknown(f"{what} of terms of different degrees {sorted(degrees)}")
  return degrees.pop()


@_rule("max", "min")
def _max(eqn: core.JaxprEqn, a: Hom, b: Hom):
  deg = _same_degree([a, b], f"`{eqn.primitive.name}`")
  if eqn.primitive.name == "max":
    nonneg = _nonneg(a) or _nonneg(b)
  else:
    nonneg = _nonneg(a) and _nonneg(b)
  return _homogeneous(deg, nonneg=nonneg)


@_rule("abs")
def _abs(eqn: core.JaxprEqn, a: Hom):
  return _homogeneous(_plain(a, "`abs`"), nonneg=True)


@_rule("sign")
def _sign(eqn: core.JaxprEqn, a: Hom):
  _plain(a, "`sign`")
  return _homogeneous(Fraction(0))


_NONFINITE = "{what} a constant that is not a finite real number (inf or NaN)"


def _with_nonfinite(eqn: core.JaxprEqn, inputs: tuple[Hom, ...]):
  """A step where a function of x meets a constant inf or NaN.

  Over the (extended) reals only a few such steps are defined, and these are
  decided here: a comparison of a real-valued ``h`` with constants that are all
  exact infinities (``h < inf`` holds and ``h == -inf`` fails whatever the real
  ``h``: the answer is what NumPy gives for any finite stand-in, here 0; a NaN is
  no number, and decides nothing), ``max(h, -inf) = h``,
  ``min(h, inf) = h``, and a ``select`` whose known index never picks the
  non-finite case. Everything else is unknown: ``x * inf`` and ``0 * nan`` are no
  real numbers, and a value the algebra describes is a real number everywhere.
  """
  name = eqn.primitive.name
  shape = tuple(eqn.outvars[0].aval.shape)
  if len(inputs) == 2 and sum(v.is_const for v in inputs) == 1:
    (h,) = [v for v in inputs if not v.is_const]
    (c,) = [v for v in inputs if v.is_const]
  if len(inputs) == 2 and sum(v.is_const for v in inputs) == 1 and h.is_known:
    values = balls.infinities(c.const)  # NaN (undefined) is neither, and decides nothing
    decided = balls.against_infinities(name, values, inputs[0] is c, shape)
    if decided is not None:
      return {"const": decided}
    if balls.neutral(name, values) and h.shape == shape:
      return _carry(h)
  if name == "select_n":
    return RULES["select_n"](eqn, *inputs)
  raise _Unknown(_NONFINITE.format(what=f"`{name}` of a function of x and"))


@_rule("lt", "le", "gt", "ge", "eq", "ne")
def _compare(eqn: core.JaxprEqn, a: Hom, b: Hom):
  if a is b and a.is_known:  # x < x is false and x == x true for every real x
    reflexive = balls.REFLEXIVE[eqn.primitive.name]
    return {"const": np.full(eqn.outvars[0].aval.shape, reflexive)}
  _same_degree([a, b], f"a comparison `{eqn.primitive.name}`")
  return _homogeneous(Fraction(0))


@_rule("select_n")
def _select_n(eqn: core.JaxprEqn, which: Hom, *cases: Hom):
  if which.is_const:
    chosen = np.unique(np.asarray(which.const).astype(np.int64))
    cases = tuple(cases[int(i)] for i in chosen)
    if len(cases) == 1 and cases[0].is_known and not cases[0].is_const:
      h = cases[0]
      return _homogeneous(h.deg, h.offset, h.elin, h.nonneg)
  elif which.deg is None:
    raise _Unknown(which.reason)
  if any(h.is_const and not _finite_const(h) for h in cases):
    raise _Unknown(_NONFINITE.format(what="a `select` (jnp.where) that may pick"))
  if all(_zero_const(h) for h in cases):  # every selected case is an exact 0
    return {"const": balls.balls(np.zeros(eqn.outvars[0].aval.shape))}
  deg = _same_degree(list(cases), "a `select` (jnp.where)")
  return _homogeneous(deg, nonneg=all(_nonneg(h) for h in cases))


@_rule("integer_pow")
def _integer_pow(eqn: core.JaxprEqn, a: Hom):
  if eqn.params["y"] == 0:  # x**0 is 1, at 0 too (integer_pow's convention)
    _carry(a)
    return {"const": balls.balls(np.ones(eqn.outvars[0].aval.shape))}
  return _power(a, Fraction(eqn.params["y"]))


def _power(a: Hom, y: Fraction):
  """``a ** y`` for a constant exponent: degree ``deg * y`` where it is defined everywhere."""
  if y <= 0:
    raise _Unknown(f"x**{y} is undefined at 0")
  deg = _plain(a, f"x**{y}")
  if y.denominator != 1 and not _nonneg(a):
    raise _Unknown(f"x**{y} is undefined for negative x (a non-integer power)")
  even = y.denominator == 1 and y.numerator % 2 == 0
  return _homogeneous(deg * y, nonneg=even or _nonneg(a))


@_rule("pow")
def _pow(eqn: core.JaxprEqn, a: Hom, b: Hom):
  if not b.is_const:
    raise _Unknown("a power with x in the exponent (exponential, not homogeneous)")
  exponents = {balls.exact_value(v) for v in balls.balls(b.const).ravel()}
  if len(exponents) != 1 or None in exponents:
    raise _Unknown("a power with an exponent that is not one finite number")
  return _power(a, exponents.pop())


@_rule("square")
def _square(eqn: core.JaxprEqn, a: Hom):
  return _power(a, Fraction(2))


@_rule("sqrt")
def _sqrt(eqn: core.JaxprEqn, a: Hom):
  if not _nonneg(a):
    raise _Unknown("`sqrt` of a function of x that may be negative (undefined there)")
  return _homogeneous(_plain(a, "`sqrt`") / 2, nonneg=True)


@_rule("cbrt")
def _cbrt(eqn: core.JaxprEqn, a: Hom):
  return _homogeneous(_plain(a, "`cbrt`") / 3, nonneg=_nonneg(a))


@_rule("sort")
def _sort(eqn: core.JaxprEqn, *operands: Hom):
  if len(operands) != 1:
    raise _Unknown("a `sort` that carries other operands along")
  (a,) = operands
  return [_homogeneous(_plain(a, "`sort`"), nonneg=a.nonneg)]


@_rule("copy", "copy_p", "reduce_precision", "optimization_barrier", "stop_gradient")
def _identity(eqn: core.JaxprEqn, *values: Hom):
  outs = [_carry(h) for h in values]
  return outs if eqn.primitive.multiple_results else outs[0]


def _carry(h: Hom):
  if h.is_const:
    return {"const": h.const}
  if h.deg is None:
    raise _Unknown(h.reason)
  return {"deg": h.deg, "offset": h.offset, "elin": h.elin, "nonneg": h.nonneg}


@_rule("convert_element_type")
def _convert(eqn: core.JaxprEqn, a: Hom):
  new = np.dtype(eqn.params["new_dtype"])
  if np.issubdtype(new, np.floating) or new.name == "bfloat16":
    return _carry(a)  # a change of float precision is the identity over the reals
  raise _Unknown(f"a conversion of a function of x to {new.name}")


@_rule("is_finite")
def _is_finite(eqn: core.JaxprEqn, a: Hom):
  _carry(a)  # every value the algebra describes is a real number: finite
  return {"const": np.ones(eqn.outvars[0].aval.shape, dtype=bool)}


@_rule("reduce_sum", "cumsum", *jaxprs.STRUCTURAL)
def _linear(eqn: core.JaxprEqn, *values: Hom):
  data = _data(eqn, len(values))
  if any(not h.is_const for i, h in enumerate(values) if i not in data):
    raise _Unknown(f"`{eqn.primitive.name}` at indices that depend on x")
  moved = [values[i] for i in data]
  deg = _common_degree(moved, f"`{eqn.primitive.name}`")
  # the map is linear in the data operands: the offsets go through it, the indices as they are
  operands = [_offset_or_zero(h) if i in data else h.const for i, h in enumerate(values)]
  outs = _const_eval(eqn, operands)
  elin = all(h.elin for h in moved if not h.is_const)
  pure_moves = eqn.primitive.name in jaxprs.STRUCTURAL or eqn.primitive.name == "reduce_sum"
  nonneg = pure_moves and all(_nonneg(h) for h in moved)
  results = [_homogeneous(deg, o, elin, nonneg) for o in outs]
  return results if eqn.primitive.multiple_results else results[0]


def _data(eqn: core.JaxprEqn, count: int) -> tuple[int, ...]:
  """The data operands of a structural primitive; every operand of other linear maps."""
  if eqn.primitive.name in jaxprs.STRUCTURAL:
    return jaxprs.data_operands(eqn)
  return tuple(range(count))


def _common_degree(values: list[Hom], what: str) -> Fraction:
  """The degree shared by the non-constant values (offsets allowed: the map is linear)."""
  degrees = set()
  for h in values:
    if not h.is_const:
      if h.deg is None:
        raise _Unknown(h.reason)
      degrees.add(h.deg)
  if len(degrees) > 1:
    raise _Unknown(f"{what} of terms of different degrees {sorted(degrees)}")
  return degrees.pop()


@_rule("dot_general")
def _dot_general(eqn: core.JaxprEqn, a: Hom, b: Hom):
  if a.is_const or b.is_const:
    h = b if a.is_const else a
    if h.deg is None:
      raise _Unknown(h.reason)
    _finite(a.const if a.is_const else b.const, "a matrix product")
    offset = None
    if h.offset is not None:
      pair = (a.const, h.offset) if a.is_const else (h.offset, b.const)
      offset = _ball_op(eqn, *pair)
    return _homogeneous(h.deg, offset, h.elin)
  return _homogeneous(_plain(a, "a product") + _plain(b, "a product"))


@_rule("reduce_max", "reduce_min", "cummax", "cummin")
def _order_reduction(eqn: core.JaxprEqn, a: Hom):
  return _homogeneous(_plain(a, f"`{eqn.primitive.name}`"), nonneg=a.nonneg)


@_rule("argmax", "argmin")
def _argbest(eqn: core.JaxprEqn, a: Hom):
  _plain(a, f"`{eqn.primitive.name}`")
  return _homogeneous(Fraction(0))


# Primitives defined on every real input: any of them applied to scale-invariant
# (degree-0) values is scale-invariant. Partial ones (log, sqrt, div, ...) are
# left out: a value undefined somewhere is never part of a proof.
TOTAL = frozenset(
  {
    "abs",
    "add",
    "and",
    "argmax",
    "argmin",
    "asinh",
    "atan",
    "cbrt",
    "ceil",
    "clamp",
    "convert_element_type",
    "cos",
    "cosh",
    "cummax",
    "cummin",
    "cumsum",
    "dot_general",
    "eq",
    "erf",
    "erfc",
    "exp",
    "exp2",
    "expm1",
    "floor",
    "ge",
    "gt",
    "is_finite",
    "le",
    "logistic",
    "lt",
    "max",
    "min",
    "mul",
    "ne",
    "neg",
    "not",
    "or",
    "reduce_max",
    "reduce_min",
    "reduce_sum",
    "round",
    "select_n",
    "sign",
    "sin",
    "sinh",
    "square",
    "sub",
    "tanh",
    "xor",
    *jaxprs.STRUCTURAL,
  }
)
# Elementwise primitives: output element i depends on the operands' element i.
ELEMENTWISE = TOTAL - {
  "argmax",
  "argmin",
  "cummax",
  "cummin",
  "cumsum",
  "dot_general",
  "reduce_max",
  "reduce_min",
  "reduce_sum",
  *jaxprs.STRUCTURAL,
} | {
  "acos",
  "acosh",
  "asin",
  "atan2",
  "atanh",
  "copy",
  "copy_p",
  "div",
  "stop_gradient",
  "erf_inv",
  "integer_pow",
  "log",
  "log1p",
  "pow",
  "reduce_precision",
  "rem",
  "rsqrt",
  "sqrt",
  "tan",
}


# --- the domain ---------------------------------------------------------------

_REDUCTIONS = frozenset(
  {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "argmax"}
) | {"argmin"}


# Primitives whose outputs genuinely mix their inputs' elements: the union of the
# dependences below is their dependence (an over-approximation only in detail).
_MIXING = _REDUCTIONS | {
  "conv_general_dilated",
  "cumlogsumexp",
  "cummax",
  "cummin",
  "cumprod",
  "cumsum",
  "dot_general",
  "reduce_precision",
}


def _deps(eqn: core.JaxprEqn, inputs: tuple[Hom, ...], n: int) -> tuple[list[np.ndarray], str]:
  """Which inputs each output element may depend on (conservative where unsure), and
  the primitive's name where that is a guess (no dependence rule for it)."""
  name = eqn.primitive.name
  shapes = [tuple(v.aval.shape) for v in eqn.outvars]
  if name in ELEMENTWISE:
    out = np.zeros(shapes[0] + (n,), dtype=bool)
    for h in inputs:
      out |= np.broadcast_to(h.deps, out.shape)
    return [out], ""
  if name == "sort":  # every output along the sorted dimension may be any input along it
    dim = eqn.params["dimension"]
    union = np.zeros(shapes[0] + (n,), dtype=bool)
    for h in inputs:
      union |= h.deps.any(axis=dim, keepdims=True)
    return [union.copy() for _ in shapes], ""
  data = _data(eqn, len(inputs))
  indices_known = all(h.is_const for i, h in enumerate(inputs) if i not in data)
  if name in jaxprs.STRUCTURAL and indices_known:
    # the last row (index -1) is a gather's out-of-bounds fill value: no dependence
    pool = [inputs[i].deps.reshape(-1, n) for i in data]
    pool = np.concatenate([*pool, np.zeros((1, n), bool)])
    where = [h.shape if i in data else None for i, h in enumerate(inputs)]
    rest = [None if i in data else h.const for i, h in enumerate(inputs)]
    return [pool[i] for i in jaxprs.structural_indices(eqn, where, rest)], ""
  if name in _REDUCTIONS and len(inputs) == 1:
    return [inputs[0].deps.any(axis=tuple(eqn.params["axes"]))], ""
  if all(h.is_const for h in inputs):  # iota, constants: depend on nothing
    return [np.zeros((*s, n), dtype=bool) for s in shapes], ""
  if name in _SUPPORTED and len(shapes) == 1:
    support = _support(eqn, inputs, n)
    if support is not None:
      return [support], ""
  return _everything(inputs, shapes, n), ("" if name in _MIXING else name)


# Sums of products (and running maxima): the inputs an output depends on are those
# with a non-zero path to it, which the primitive itself computes when run on
# 0/1 indicators (non-negative, so nothing cancels). Not running minima: the minimum
# of indicators is an AND, which would lose dependences.
_SUPPORTED = frozenset(
  {
    "conv_general_dilated",
    "cummax",
    "cumsum",
    "dot_general",
    "reduce_window_sum",
    "scatter-add",
    "scatter_add",
  }
)


def _support(eqn: core.JaxprEqn, inputs: tuple[Hom, ...], n: int) -> np.ndarray | None:
  """Exact dependence of a sum of products, by JAX on indicators (None if it cannot)."""
  import jax

  data = _data(eqn, len(inputs)) if "scatter" not in eqn.primitive.name else (0, 2)
  dtypes = [np.dtype(v.aval.dtype) for v in eqn.invars]
  if any(np.issubdtype(d, np.integer) and d.itemsize < 4 for d in dtypes):
    return None  # a narrow integer count could wrap to 0
  may = []  # per operand: where it may be non-zero (or the index values themselves)
  for i, h in enumerate(inputs):
    if i not in data:
      may.append(h.const)
    elif h.is_const:  # non-zero as a real number: 2**-2000 is not 0
      nonzero = [not b.is_zero() for b in balls.balls(h.const).ravel()]
      may.append(np.asarray(nonzero, dtype=dtypes[i]).reshape(np.shape(h.const)))
    else:
      may.append(np.ones(h.shape, dtype=dtypes[i]))
  total = np.zeros((n, *eqn.outvars[0].aval.shape), dtype=bool)
  for k, h in enumerate(inputs):
    if h.is_const or k not in data:
      continue
    indicators = np.moveaxis(h.deps, -1, 0).astype(dtypes[k])

    def run(a, k=k):
      args = [a if i == k else jax.numpy.asarray(m) for i, m in enumerate(may)]
      return eqn.primitive.bind(*args, **eqn.params)

    try:
      total |= np.asarray(jax.vmap(run)(indicators)) != 0
    except Exception:
      return None
  return np.moveaxis(total, 0, -1)


def _everything(inputs: Any, shapes: list[tuple[int, ...]], n: int) -> list[np.ndarray]:
  """Each output element may depend on every input any operand depends on."""
  union = np.zeros(n, dtype=bool)
  for h in inputs:
    union |= h.deps.reshape(-1, n).any(axis=0)
  return [np.broadcast_to(union, (*s, n)).copy() for s in shapes]


class HomogeneityDomain:
  """The interpreter's domain for the proof engine; ``shape`` is the input's shape."""

  def __init__(self, shape: tuple[int, ...]):
    self.shape = tuple(shape)
    self.n = int(np.prod(shape, dtype=np.int64))

  def input(self) -> Hom:
    """The traced input ``x``: elementwise, degree 1."""
    deps = np.eye(self.n, dtype=bool).reshape((*self.shape, self.n))
    return Hom(deps=deps, deg=Fraction(1), elin=True)

  def rule(self, eqn: core.JaxprEqn) -> Callable[..., Any]:
    return self.step

  def literal(self, value: Any, aval: Any) -> Hom:
    return self.constant(np.asarray(value))

  def index(self, value: Hom) -> int | None:
    return None if value.const is None else balls.DOMAIN.index(value.const)

  def constant(self, value: Any) -> Hom:
    array = balls.DOMAIN.constant(jaxprs.concrete(value))
    return Hom(deps=np.zeros((*array.shape, self.n), dtype=bool), const=array)

  def missing(self, eqn: core.JaxprEqn, inputs: list[Any]) -> list[Any]:
    """A loop the interpreter could not unroll."""
    name = eqn.primitive.name
    shapes = [tuple(v.aval.shape) for v in eqn.outvars]
    why = (
      f"a `{name}` loop whose trip count is not known, or above {jaxprs.MAX_UNROLL}"
      if name in jaxprs.LOOPS
      else f"no homogeneity rule for the primitive `{name}`"
    )
    return [Hom(deps=d, reason=why, approx=name) for d in _everything(inputs, shapes, self.n)]

  def take(self, value: Hom, i: int) -> Hom:
    def row(a: np.ndarray | None) -> np.ndarray | None:
      return None if a is None else np.broadcast_to(a, value.shape)[i]

    return dataclasses.replace(
      value, deps=value.deps[i], const=row(value.const), offset=row(value.offset)
    )

  def stack(self, values: list[Hom], aval: Any) -> Hom:
    deps = np.stack([h.deps for h in values])
    approx = next((h.approx for h in values if h.approx), "")
    if all(h.is_const for h in values):
      return Hom(deps=deps, const=balls.DOMAIN.stack([h.const for h in values]), approx=approx)
    try:
      deg = _common_degree(values, "a `scan`'s stacked outputs")
      offsets = [np.broadcast_to(_offset_or_zero(h), h.shape) for h in values]
      elin = all(h.elin for h in values if not h.is_const)
      result = _homogeneous(deg, np.stack(offsets), elin, all(_nonneg(h) for h in values))
    except _Unknown as e:
      result = {"reason": e.reason}
    return dataclasses.replace(self._finish(result, deps), approx=approx)

  def step(self, eqn: core.JaxprEqn, *inputs: Hom) -> Any:
    name = eqn.primitive.name
    count = len(eqn.outvars)
    deps, approx = _deps(eqn, inputs, self.n)
    approx = approx or next((h.approx for h in inputs if h.approx), "")
    try:
      if all(h.is_const for h in inputs):
        try:
          results = [{"const": v} for v in _const_eval(eqn, [h.const for h in inputs])]
        except balls.NotCertified as e:
          raise _Unknown(f"a constant that cannot be computed exactly: {e}") from None
      elif any(h.is_const and not _finite_const(h) for h in inputs):
        results = _with_nonfinite(eqn, inputs)
        results = results if eqn.primitive.multiple_results else [results]
      elif total(eqn) and all(h.is_const or h.deg == 0 for h in inputs):
        results = [_homogeneous(Fraction(0))] * count
      else:
        rule = RULES.get(name)
        if rule is None and name in ELEMENTWISE:
          raise _Unknown(f"`{name}` is not positively homogeneous")
        if rule is None:
          raise _Unknown(f"no homogeneity rule for the primitive `{name}`")
        results = rule(eqn, *inputs)
        results = results if eqn.primitive.multiple_results else [results]
    except _Unknown as e:
      results = [{"reason": e.reason}] * count
    outs = [
      dataclasses.replace(self._finish(r, d), approx=approx)
      for r, d in zip(results, deps, strict=False)
    ]
    return outs if eqn.primitive.multiple_results else outs[0]

  def _finish(self, result: dict[str, Any], deps: np.ndarray) -> Hom:
    h = Hom(deps=np.asarray(deps), **result)
    if h.deg == 1 and not h.elin and h.offset is None and _one_input_each(h.deps):
      # each element is a degree-1 function g of one input t (so g(0) = 0), and
      # q g(t/q) + (1 - q) g(0) = g(t): its expectation under dropout is itself
      h = dataclasses.replace(h, elin=True)
    return h


def total(eqn: core.JaxprEqn) -> bool:
  """Defined at every real input: a primitive of :data:`TOTAL`, less a gather that fills
  out-of-bounds positions with NaN, and less a float-to-integer cast (undefined out of the
  target's range)."""
  name = eqn.primitive.name
  if name not in TOTAL:
    return False
  if name == "gather":
    return bool(np.isfinite(jaxprs.fill_value(eqn)))
  if name == "convert_element_type":
    return not float_to_integer(eqn)
  return True


def float_to_integer(eqn: core.JaxprEqn) -> bool:
  old = np.dtype(eqn.invars[0].aval.dtype)
  new = np.dtype(eqn.params["new_dtype"])
  return bool(np.issubdtype(old, np.inexact) and not np.issubdtype(new, np.inexact))


def _one_input_each(deps: np.ndarray) -> bool:
  return bool(np.all(deps.reshape(-1, deps.shape[-1]).sum(axis=-1) <= 1))


def unknown(shape: tuple[int, ...], reason: str) -> Hom:
  """Nothing known: every output may depend on every input."""
  n = int(np.prod(shape, dtype=np.int64))
  return Hom(deps=np.ones((*shape, n), dtype=bool), reason=reason, approx="the algebra")


def analyse(jaxpr: core.Jaxpr, consts: list[Any], shape: tuple[int, ...]) -> Hom:
  """The algebra's description of the (single) output of ``jaxpr``."""
  domain = HomogeneityDomain(shape)
  (out,) = jaxprs.evaluate(domain, jaxpr, consts, [domain.input()])
  return out
