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


# --- how values are built ---------------------------------------------------


class _Unknown(Exception):
  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


def _homogeneous(deg: Fraction, offset: np.ndarray | None = None, elin: bool = False):
  """A rule's result before ``deps`` are attached (see :func:`_finish`)."""
  if offset is not None:
    _finite(offset, "a sum")
  if deg == 0 or _is_zero(offset):
    offset = None  # a degree-0 function absorbs any constant
  return {"deg": Fraction(deg), "offset": offset, "elin": elin and deg == 1}


def _plain(h: Hom, what: str) -> Fraction:
  """The degree of a non-constant value with no offset (else unknown)."""
  if h.is_const:
    raise _Unknown(f"{what} of a function of x and a non-zero constant")
  if h.deg is None:
    raise _Unknown(h.reason)
  if h.offset is not None:
    raise _Unknown(f"{what} of an affine function c + h(x) with c != 0")
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
  return _homogeneous(a.deg, offset, a.elin and b.elin)


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
  return _homogeneous(h.deg, offset, h.elin)


@_rule("mul")
def _mul(eqn: core.JaxprEqn, a: Hom, b: Hom):
  if a.is_const or b.is_const:
    c, h = (a, b) if a.is_const else (b, a)
    if _zero_const(c) and h.is_known:  # 0 * h = 0 where h is defined: everywhere
      return {"const": balls.balls(np.zeros(eqn.outvars[0].aval.shape))}
    return _scale(h, c.const)
  return _homogeneous(_plain(a, "a product") + _plain(b, "a product"))


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
  return _homogeneous(_same_degree([a, b], f"`{eqn.primitive.name}`"))


@_rule("abs")
def _abs(eqn: core.JaxprEqn, a: Hom):
  return _homogeneous(_plain(a, "`abs`"))


@_rule("sign")
def _sign(eqn: core.JaxprEqn, a: Hom):
  _plain(a, "`sign`")
  return _homogeneous(Fraction(0))


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
      return _homogeneous(h.deg, h.offset, h.elin)
  elif which.deg is None:
    raise _Unknown(which.reason)
  if all(_zero_const(h) for h in cases):  # every selected case is an exact 0
    return {"const": balls.balls(np.zeros(eqn.outvars[0].aval.shape))}
  return _homogeneous(_same_degree(list(cases), "a `select` (jnp.where)"))


@_rule("integer_pow")
def _integer_pow(eqn: core.JaxprEqn, a: Hom):
  y = eqn.params["y"]
  if y <= 0:
    raise _Unknown(f"x**{y} is undefined at 0")
  return _homogeneous(_plain(a, f"x**{y}") * y)


@_rule("square")
def _square(eqn: core.JaxprEqn, a: Hom):
  return _homogeneous(_plain(a, "`square`") * 2)


@_rule("copy", "copy_p", "reduce_precision", "optimization_barrier", "stop_gradient")
def _identity(eqn: core.JaxprEqn, *values: Hom):
  outs = [_carry(h) for h in values]
  return outs if eqn.primitive.multiple_results else outs[0]


def _carry(h: Hom):
  if h.is_const:
    return {"const": h.const}
  if h.deg is None:
    raise _Unknown(h.reason)
  return {"deg": h.deg, "offset": h.offset, "elin": h.elin}


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
  data = jaxprs.DATA_OPERANDS.get(eqn.primitive.name, len(values))
  if any(not h.is_const for h in values[data:]):
    raise _Unknown(f"`{eqn.primitive.name}` at indices that depend on x")
  deg = _common_degree(values[:data], f"`{eqn.primitive.name}`")
  offsets = [_offset_or_zero(h) for h in values[:data]]
  rest = [h.const for h in values[data:]]
  outs = _const_eval(eqn, offsets + rest)
  elin = all(h.elin for h in values[:data] if not h.is_const)
  results = [_homogeneous(deg, o, elin) for o in outs]
  return results if eqn.primitive.multiple_results else results[0]


def _common_degree(values: tuple[Hom, ...], what: str) -> Fraction:
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
  return _homogeneous(_plain(a, f"`{eqn.primitive.name}`"))


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


def _deps(eqn: core.JaxprEqn, inputs: tuple[Hom, ...], n: int) -> list[np.ndarray]:
  """Which inputs each output element may depend on (conservative where unsure)."""
  name = eqn.primitive.name
  shapes = [tuple(v.aval.shape) for v in eqn.outvars]
  if name in ELEMENTWISE:
    out = np.zeros(shapes[0] + (n,), dtype=bool)
    for h in inputs:
      out |= np.broadcast_to(h.deps, out.shape)
    return [out]
  data = jaxprs.DATA_OPERANDS.get(name, len(inputs))
  if name in jaxprs.STRUCTURAL and all(h.is_const for h in inputs[data:]):
    # the last row (index -1) is a gather's out-of-bounds fill value: no dependence
    pool = np.concatenate([h.deps.reshape(-1, n) for h in inputs[:data]] + [np.zeros((1, n), bool)])
    where = [h.shape for h in inputs[:data]] + [None] * (len(inputs) - data)
    rest = [None] * data + [h.const for h in inputs[data:]]
    return [pool[i] for i in jaxprs.structural_indices(eqn, where, rest)]
  if name in _REDUCTIONS and len(inputs) == 1:
    return [inputs[0].deps.any(axis=tuple(eqn.params["axes"]))]
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
    array = balls.DOMAIN.constant(np.asarray(value))
    return Hom(deps=np.zeros((*array.shape, self.n), dtype=bool), const=array)

  def missing(self, eqn: core.JaxprEqn, inputs: list[Any]) -> list[Any]:  # pragma: no cover
    raise AssertionError("every primitive goes through HomogeneityDomain.step")

  def step(self, eqn: core.JaxprEqn, *inputs: Hom) -> Any:
    name = eqn.primitive.name
    count = len(eqn.outvars)
    deps = _deps(eqn, inputs, self.n)
    try:
      if all(h.is_const for h in inputs):
        try:
          results = [{"const": v} for v in _const_eval(eqn, [h.const for h in inputs])]
        except balls.NotCertified as e:
          raise _Unknown(f"a constant that cannot be computed exactly: {e}") from None
      elif name in TOTAL and all(h.is_const or h.deg == 0 for h in inputs):
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
    outs = [self._finish(r, d) for r, d in zip(results, deps, strict=False)]
    return outs if eqn.primitive.multiple_results else outs[0]

  def _finish(self, result: dict[str, Any], deps: np.ndarray) -> Hom:
    h = Hom(deps=np.asarray(deps), **result)
    if h.deg == 1 and not h.elin and h.elementwise(self.shape):
      h = dataclasses.replace(h, elin=True)  # an elementwise degree-1 function
    return h


def analyse(jaxpr: core.Jaxpr, consts: list[Any], shape: tuple[int, ...]) -> Hom:
  """The algebra's description of the (single) output of ``jaxpr``."""
  domain = HomogeneityDomain(shape)
  (out,) = jaxprs.evaluate(domain, jaxpr, consts, [domain.input()])
  return out
