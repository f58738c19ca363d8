"""Exact normal forms: polynomials over opaque subterms, for identities the other
engines miss.

``x + sin(x) - sin(x)`` and ``(x + 1)**2 - x**2 - 2*x - 1`` are ``x`` and ``0`` for
every real ``x``, but the homogeneity algebra sees a non-homogeneous ``sin`` and
an affine square. This engine normalises an elementwise function to a polynomial
with exact rational coefficients (per position of the input vector) in the input
``x`` and in **atoms**: opaque subterms such as ``sin(x)``, identified by their
primitive and the normal forms of their arguments, so that two spellings of the
same subterm are the same atom and cancel.

Soundness: an atom is made only of a primitive that is defined at every real
input (``sin``, ``tanh``, ``exp``, ``max``, comparisons, ``select``, ...), so a
cancelled atom never hides a point where ``f`` is undefined (``x + log(x) -
log(x)`` is not ``x`` at ``x = 0``, and ``log`` ends the analysis). Polynomial
arithmetic is only applied to floats (integer arithmetic wraps), constants must
be finite, and a division is only by a non-zero constant.

What it decides: when the normal form has no atom left, ``f(t) = sum_k c_k t**k``
exactly, and then both orders agree pathwise (at any rate) iff ``f(t) = c_1 t``,
and in expectation iff ``f`` is affine. Polynomials that fail are left to the
certified search, which finds the counterexample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from jax.extend import core

from jdrop._src.checker import balls
from jdrop._src.checker import homogeneity
from jdrop._src.checker import jaxprs

MAX_DEGREE = 32
MAX_TERMS = 256
MAX_BITS = 4096  # of a coefficient's numerator or denominator: exact arithmetic stays fast


def _bits(value: Fraction) -> int:
  value = Fraction(value)
  return max(value.numerator.bit_length(), value.denominator.bit_length())


Monomial = tuple[tuple[int, int], ...]  # sorted (atom id, power); atom 0 is x


class NotPolynomial(Exception):
  """The function leaves the class this engine normalises (the reason is the message)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Poly:
  """``sum(coeffs * prod(atom ** power))`` with exact coefficient arrays of ``shape``."""

  terms: dict[Monomial, np.ndarray]
  shape: tuple[int, ...]
  dtype: np.dtype

  def key(self) -> tuple:
    """A hashable canonical form: equal keys, equal functions."""
    return (
      self.dtype.name,
      self.shape,
      tuple(sorted((m, tuple(c.ravel())) for m, c in self.terms.items())),
    )


def _fractions(values: Any, shape: tuple[int, ...]) -> np.ndarray:
  array = np.asarray(values)
  if array.dtype == object:
    out = array
  else:
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
      raise NotPolynomial("a constant that is not a finite real number")
    out = np.frompyfunc(lambda v: Fraction(v.item() if hasattr(v, "item") else v), 1, 1)(array)
    out = np.asarray(out, dtype=object)
  return np.asarray(np.broadcast_to(out, shape), dtype=object)


def _clean(terms: dict[Monomial, np.ndarray], shape, dtype) -> Poly:
  kept = {m: c for m, c in terms.items() if any(v != 0 for v in c.ravel())}
  if len(kept) > MAX_TERMS:
    raise NotPolynomial(f"more than {MAX_TERMS} terms")
  if any(_bits(v) > MAX_BITS for c in kept.values() for v in c.ravel()):
    raise NotPolynomial(f"a coefficient of more than {MAX_BITS} bits")
  for m in kept:
    if sum(p for atom, p in m if atom == 0) > MAX_DEGREE:
      raise NotPolynomial(f"a degree above {MAX_DEGREE}")
  return Poly(kept, shape, np.dtype(dtype))


def constant(values: Any, dtype: Any = None) -> Poly:
  array = np.asarray(values)
  dtype = np.dtype(dtype or (array.dtype if array.dtype != object else np.float64))
  shape = array.shape
  return _clean({(): _fractions(array, shape)}, shape, dtype)


def _add(a: Poly, b: Poly, sign: int, shape: tuple[int, ...]) -> dict[Monomial, np.ndarray]:
  terms = {m: np.broadcast_to(c, shape) for m, c in a.terms.items()}
  for m, c in b.terms.items():
    c = np.broadcast_to(c, shape)
    terms[m] = terms[m] + sign * c if m in terms else sign * c
  return terms


def _times(m1: Monomial, m2: Monomial) -> Monomial:
  powers: dict[int, int] = dict(m1)
  for atom, p in m2:
    powers[atom] = powers.get(atom, 0) + p
  return tuple(sorted(powers.items()))


def _mul(a: Poly, b: Poly, shape: tuple[int, ...]) -> dict[Monomial, np.ndarray]:
  terms: dict[Monomial, np.ndarray] = {}
  for m1, c1 in a.terms.items():
    for m2, c2 in b.terms.items():
      m, c = _times(m1, m2), np.broadcast_to(c1, shape) * np.broadcast_to(c2, shape)
      terms[m] = terms[m] + c if m in terms else c
  return terms


def _const_of(p: Poly) -> np.ndarray | None:
  if set(p.terms) <= {()}:
    return p.terms.get((), _fractions(np.zeros(p.shape), p.shape))
  return None


class PolynomialDomain:
  """The interpreter's domain for normal forms; atoms are numbered as they appear."""

  def __init__(self, shape: tuple[int, ...]):
    self.shape = shape
    self.atoms: dict[tuple, int] = {}

  def input(self) -> Poly:
    one = _fractions(np.ones(self.shape), self.shape)
    return Poly({((0, 1),): one}, self.shape, np.dtype(np.float32))

  def rule(self, eqn: core.JaxprEqn) -> Callable[..., Any]:
    return self.step

  def literal(self, value: Any, aval: Any) -> Poly:
    return self.constant(value)

  def constant(self, value: Any) -> Poly:
    array = jaxprs.concrete(value)
    if jaxprs.is_key(array):
      raise NotPolynomial("a PRNG key")
    return constant(array)

  def index(self, value: Poly) -> int | None:
    c = _const_of(value)
    if c is None or len({v for v in c.ravel()}) != 1:
      return None
    return int(c.ravel()[0]) if c.size else None

  def missing(self, eqn: core.JaxprEqn, inputs: list[Any]) -> list[Any]:
    raise NotPolynomial(f"`{eqn.primitive.name}` is not normalised")

  def step(self, eqn: core.JaxprEqn, *inputs: Poly) -> Any:
    name = eqn.primitive.name
    if name in balls.EFFECT_ONLY:
      return []
    out = eqn.outvars[0].aval
    shape, dtype = tuple(out.shape), np.dtype(out.dtype)
    floating = np.issubdtype(dtype, np.floating)
    if floating and name in ("add", "sub"):
      return _clean(_add(inputs[0], inputs[1], 1 if name == "add" else -1, shape), shape, dtype)
    if floating and name == "neg":
      return _clean({m: -c for m, c in inputs[0].terms.items()}, shape, dtype)
    if floating and name == "mul":
      return _clean(_mul(inputs[0], inputs[1], shape), shape, dtype)
    if floating and name in ("integer_pow", "square", "pow"):
      return self._power(eqn, inputs, shape, dtype)
    if floating and name == "div":
      c = _const_of(inputs[1])
      if c is None or any(v == 0 for v in c.ravel()):
        raise NotPolynomial("a division by a function of x or by 0")
      inverse = np.broadcast_to(np.frompyfunc(lambda v: 1 / v, 1, 1)(c), shape)
      return _clean(_mul(inputs[0], Poly({(): inverse}, shape, dtype), shape), shape, dtype)
    if name in _IDENTITIES or (name == "convert_element_type" and floating and _floating(inputs)):
      return dataclasses.replace(inputs[0], dtype=dtype)
    constants = all(_const_of(p) is not None for p in inputs)
    if constants:
      folded = self._fold(eqn, inputs)
      if folded is not None:
        return folded
    if name in _MOVES:
      return self._move(eqn, inputs[0], shape, dtype)
    if homogeneity.total(eqn) and (name in homogeneity.ELEMENTWISE or constants):
      return self._atom(eqn, inputs, shape, dtype)
    raise NotPolynomial(f"`{name}` is not normalised (not defined at every real input)")

  def _fold(self, eqn: core.JaxprEqn, inputs: tuple[Poly, ...]) -> Poly | None:
    """A step on constants only, with certified balls; None where the result is
    not an exact rational (``sin(1.0)``: an atom, then)."""
    values = [_ball_constant(p) for p in inputs]
    rule = balls.RULES.get(eqn.primitive)
    try:
      out = rule(eqn, *values) if rule else balls.DOMAIN.missing(eqn, values)[0]
    except balls.NotCertified:
      return None
    if balls.is_ball_array(out):
      if not all(b.is_finite() for b in out.ravel()):  # NaN or inf: no real number
        raise NotPolynomial("a constant that is not a finite real number")
      exact = [balls.exact_value(b) for b in out.ravel()]
      if any(v is None for v in exact):
        return None  # a finite real, not known exactly: an opaque atom
      out = np.asarray(exact, dtype=object).reshape(out.shape)
    return constant(out, eqn.outvars[0].aval.dtype)

  def _power(self, eqn: core.JaxprEqn, inputs, shape, dtype) -> Poly:
    name = eqn.primitive.name
    if name == "integer_pow":
      y = eqn.params["y"]
    elif name == "square":
      y = 2
    else:
      c = _const_of(inputs[1])
      values = set() if c is None else {v for v in c.ravel()}
      if len(values) != 1:
        raise NotPolynomial("a power with an exponent that is not one constant")
      y = values.pop()
      if y.denominator != 1:
        raise NotPolynomial("a non-integer power")
      y = int(y)
    if not 0 < y <= MAX_DEGREE:
      raise NotPolynomial(f"x**{y}")
    result = inputs[0]
    for _ in range(y - 1):
      result = _clean(_mul(result, inputs[0], shape), shape, dtype)
    return result

  def _move(self, eqn: core.JaxprEqn, a: Poly, shape, dtype) -> Poly:
    if a.shape != shape and int(np.prod(a.shape, dtype=np.int64)) != 1:
      raise NotPolynomial(f"`{eqn.primitive.name}` that moves elements")
    terms = {
      m: np.broadcast_to(np.reshape(c, ()) if a.shape != shape else c, shape)
      for m, c in a.terms.items()
    }
    return Poly(terms, shape, dtype)

  def _atom(self, eqn: core.JaxprEqn, inputs: tuple[Poly, ...], shape, dtype) -> Poly:
    params = tuple(sorted((k, repr(v)) for k, v in eqn.params.items()))
    key = (eqn.primitive.name, params, tuple(p.key() for p in inputs))
    atom = self.atoms.setdefault(key, len(self.atoms) + 1)
    return Poly({((atom, 1),): _fractions(np.ones(shape), shape)}, shape, dtype)


_IDENTITIES = frozenset({"copy", "copy_p", "reduce_precision", "stop_gradient"})
_MOVES = frozenset({"broadcast_in_dim", "reshape", "squeeze", "expand_dims"})


def _floating(inputs: tuple[Poly, ...]) -> bool:
  return np.issubdtype(inputs[0].dtype, np.floating)


def _ball_constant(p: Poly) -> np.ndarray:
  """A constant as balls that contain its exact value (floats), or exact integers."""
  c = np.asarray(_const_of(p), dtype=object)
  if np.issubdtype(p.dtype, np.floating):
    return balls.objects(np.frompyfunc(balls.from_fraction, 1, 1)(c), c.shape)
  return np.asarray([int(v) for v in c.ravel()], dtype=p.dtype).reshape(c.shape)


def analyse(jaxpr: core.Jaxpr, consts: list[Any], shape: tuple[int, ...]) -> Poly:
  """The normal form of the (single, elementwise) output of ``jaxpr``."""
  domain = PolynomialDomain(shape)
  (out,) = jaxprs.evaluate(domain, jaxpr, consts, [domain.input()])
  return out


def coefficients(p: Poly) -> dict[int, np.ndarray] | None:
  """``{k: c_k}`` when ``p`` is a polynomial in ``x`` alone (no atom left), else None."""
  out: dict[int, np.ndarray] = {}
  for m, c in p.terms.items():
    if any(atom != 0 for atom, _ in m):
      return None
    out[sum(power for _, power in m)] = c
  return out
