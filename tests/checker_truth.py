"""Ground truth for the checker's property tests, computed without the checker's method.

Expressions over one scalar variable ``x`` are small trees of tuples:

* piecewise-linear trees (``PL_KINDS``): ``x``, dyadic constants, ``+``, ``-``, scalings,
  ``max``, ``min``, ``abs``, ``relu``, ``leaky_relu``, ``clip``, ``where`` on ``>`` and on
  ``>= c``. They are evaluated exactly over :class:`fractions.Fraction`. Every node is affine
  between finitely many breakpoints, which :func:`breakpoints` finds exactly (a crossing of
  two affine pieces is solved from two exact evaluations), so an identity between such
  functions is decided by checking it at every breakpoint and at two interior points of every
  interval between them (an affine function that vanishes twice on an interval vanishes on it).
* smooth trees (``SMOOTH_KINDS``): ``tanh``, ``sigmoid``, ``exp``, ``sin``, ``softplus``,
  ``x**2``, ``x**3``, products, sums, constants (and ``abs``/``sqrt(e**2)``/``relu`` for
  homogeneous functions in disguise). They are evaluated with mpmath's rigorous interval
  arithmetic (``mpmath.iv``, 50 digits, then 150): a sampled violation of an identity, or a
  counterexample, counts only when its interval excludes 0.

Each tree becomes a JAX function (:func:`to_jax`) applied elementwise to a float32 array. The
``assert_*_verdict`` helpers compare a :class:`jdrop` verdict with the truth and raise
:class:`AssertionError` listing every disagreement.

Conventions (DESIGN.md, "The mathematics"): ``q = 1 - rate``, with ``rate`` the exact value
of the Python float. Pathwise at rate ``r``: ``f(0) = 0`` and ``f(x/q) = f(x)/q`` for every x;
for every rate: ``f`` positively homogeneous of degree 1. In expectation: the same for
``g = f - f(0)``, i.e. ``q f(x/q) + (1 - q) f(0) = f(x)``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import mpmath
import numpy as np

Tree = tuple

X: Tree = ("x",)

PL_KINDS = frozenset(
  "x c neg scale shift add sub max min abs relu relu6 leaky clip where_gt where_ge".split()
)
SMOOTH_KINDS = frozenset(
  "x c neg scale add sub mul tanh sigmoid exp sin softplus sq cube abs relu sqrt_sq".split()
)

# Sample points and scale factors for the smooth ground truth (each taken at the exact value of
# the Python float).
SMOOTH_XS = (-2.5, -1.0, -0.375, -0.0625, 0.125, 0.7, 1.0, 1.75, 3.0)
SMOOTH_TS = (0.5, 2.0, 3.25, 1 / 0.9, 1 / 0.75)

# ---------------------------------------------------------------------------------------------
# Building and printing


def c(k: Fraction | int | float) -> Tree:
  return ("c", Fraction(k))


def to_str(tree: Tree) -> str:
  """A readable Python-like expression for ``tree``."""
  kind = tree[0]
  if kind == "x":
    return "x"
  if kind == "c":
    return _num(tree[1])
  if kind == "neg":
    return f"-({to_str(tree[1])})"
  if kind == "scale":
    return f"{_num(tree[1])}*({to_str(tree[2])})"
  if kind == "shift":
    return f"({to_str(tree[2])} + {_num(tree[1])})"
  if kind in ("add", "sub", "mul"):
    op = {"add": "+", "sub": "-", "mul": "*"}[kind]
    return f"({to_str(tree[1])} {op} {to_str(tree[2])})"
  if kind in ("max", "min"):
    return f"{kind}({to_str(tree[1])}, {to_str(tree[2])})"
  if kind == "leaky":
    return f"leaky_relu({to_str(tree[2])}, {_num(tree[1])})"
  if kind == "clip":
    return f"clip({to_str(tree[3])}, {_num(tree[1])}, {_num(tree[2])})"
  if kind == "where_gt":
    a, b, t, e = (to_str(s) for s in tree[1:])
    return f"where({a} > {b}, {t}, {e})"
  if kind == "where_ge":
    return f"where({to_str(tree[1])} >= {_num(tree[2])}, {to_str(tree[3])}, {to_str(tree[4])})"
  if kind == "sq":
    return f"({to_str(tree[1])})**2"
  if kind == "cube":
    return f"({to_str(tree[1])})**3"
  if kind == "sqrt_sq":
    return f"sqrt(({to_str(tree[1])})**2)"
  return f"{kind}({to_str(tree[1])})"


def _num(k: Fraction) -> str:
  k = Fraction(k)
  return str(k.numerator) if k.denominator == 1 else f"{float(k)!r}"


def size(tree: Tree) -> int:
  return 1 + sum(size(s) for s in tree[1:] if isinstance(s, tuple))


def to_jax(tree: Tree) -> Callable[[jax.Array], jax.Array]:
  """The JAX function of ``tree``, applied elementwise to an array ``x``."""

  def f(x: jax.Array) -> jax.Array:
    return _jax(tree, x)

  f.__name__ = f.__qualname__ = to_str(tree)
  return f


def _jax(tree: Tree, x: jax.Array) -> jax.Array:
  kind = tree[0]
  r = lambda i: _jax(tree[i], x)
  if kind == "x":
    return x
  if kind == "c":
    return jnp.full_like(x, float(tree[1]))
  if kind == "neg":
    return -r(1)
  if kind == "scale":
    return float(tree[1]) * r(2)
  if kind == "shift":  # a Python-scalar literal, not a broadcast constant
    return r(2) + float(tree[1])
  if kind == "add":
    return r(1) + r(2)
  if kind == "sub":
    return r(1) - r(2)
  if kind == "mul":
    return r(1) * r(2)
  if kind == "max":
    return jnp.maximum(r(1), r(2))
  if kind == "min":
    return jnp.minimum(r(1), r(2))
  if kind == "abs":
    return jnp.abs(r(1))
  if kind == "relu":
    return jax.nn.relu(r(1))
  if kind == "relu6":
    return jax.nn.relu6(r(1))
  if kind == "leaky":
    return jax.nn.leaky_relu(r(2), negative_slope=float(tree[1]))
  if kind == "clip":
    return jnp.clip(r(3), float(tree[1]), float(tree[2]))
  if kind == "where_gt":
    return jnp.where(r(1) > r(2), r(3), r(4))
  if kind == "where_ge":
    return jnp.where(r(1) >= float(tree[2]), r(3), r(4))
  if kind == "tanh":
    return jnp.tanh(r(1))
  if kind == "sigmoid":
    return jax.nn.sigmoid(r(1))
  if kind == "exp":
    return jnp.exp(r(1))
  if kind == "sin":
    return jnp.sin(r(1))
  if kind == "softplus":
    return jax.nn.softplus(r(1))
  if kind == "sq":
    return r(1) ** 2
  if kind == "cube":
    return r(1) ** 3
  if kind == "sqrt_sq":
    return jnp.sqrt(r(1) ** 2)
  raise ValueError(f"unknown node {kind!r}")


# ---------------------------------------------------------------------------------------------
# Exact evaluation of piecewise-linear trees


def pl_eval(tree: Tree, x: Fraction) -> Fraction:
  """``tree`` at ``x``, exactly (the semantics of the JAX function over the reals)."""
  kind = tree[0]
  r = lambda i: pl_eval(tree[i], x)
  if kind == "x":
    return Fraction(x)
  if kind == "c":
    return tree[1]
  if kind == "neg":
    return -r(1)
  if kind == "scale":
    return tree[1] * r(2)
  if kind == "shift":
    return r(2) + tree[1]
  if kind == "add":
    return r(1) + r(2)
  if kind == "sub":
    return r(1) - r(2)
  if kind == "max":
    return max(r(1), r(2))
  if kind == "min":
    return min(r(1), r(2))
  if kind == "abs":
    return abs(r(1))
  if kind == "relu":
    return max(r(1), Fraction(0))
  if kind == "relu6":  # jax.nn.relu6: min(max(x, 0), 6)
    return min(max(r(1), Fraction(0)), Fraction(6))
  if kind == "leaky":  # jax.nn.leaky_relu: where(x >= 0, x, slope * x)
    v = r(2)
    return v if v >= 0 else tree[1] * v
  if kind == "clip":  # jnp.clip: min(hi, max(lo, x))
    return min(tree[2], max(tree[1], r(3)))
  if kind == "where_gt":
    return r(3) if r(1) > r(2) else r(4)
  if kind == "where_ge":
    return r(3) if r(1) >= tree[2] else r(4)
  raise ValueError(f"not a piecewise-linear node: {kind!r}")


def _intervals(points: list[Fraction]) -> list[tuple[Fraction | None, Fraction | None]]:
  """The open intervals of the real line minus ``points`` (sorted); ``None`` is infinite."""
  ends: list[Fraction | None] = [None, *points, None]
  return list(itertools.pairwise(ends))


def _interior(lo: Fraction | None, hi: Fraction | None) -> tuple[Fraction, Fraction]:
  """Two distinct points inside the open interval ``(lo, hi)``."""
  if lo is None and hi is None:
    return Fraction(0), Fraction(1)
  if lo is None:
    return hi - 1, hi - 2
  if hi is None:
    return lo + 1, lo + 2
  return lo + (hi - lo) / 3, lo + 2 * (hi - lo) / 3


def _crossings(fn: Callable[[Fraction], Fraction], points: list[Fraction]) -> set[Fraction]:
  """The zeros of ``fn``, affine on every interval between ``points``, inside the intervals."""
  out = set()
  for lo, hi in _intervals(points):
    p1, p2 = _interior(lo, hi)
    d1, d2 = fn(p1), fn(p2)
    slope = (d2 - d1) / (p2 - p1)
    if slope == 0:
      continue
    root = p1 - d1 / slope
    if (lo is None or root > lo) and (hi is None or root < hi):
      out.add(root)
  return out


def breakpoints(tree: Tree) -> list[Fraction]:
  """A finite sorted set of points off which ``tree`` is affine on every interval (exact)."""
  return sorted(_breaks(tree))


def _breaks(tree: Tree) -> set[Fraction]:
  kind = tree[0]
  if kind in ("x", "c"):
    return set()
  children = [s for s in tree[1:] if isinstance(s, tuple)]
  pts: set[Fraction] = set().union(*(_breaks(s) for s in children))
  ev = lambda s: lambda t: pl_eval(s, t)
  if kind in ("neg", "scale", "shift", "add", "sub"):
    return pts
  if kind in ("abs", "relu", "leaky"):
    return pts | _crossings(ev(children[0]), sorted(pts))
  if kind in ("max", "min", "where_gt"):
    a, b = tree[1], tree[2]
    return pts | _crossings(lambda t: pl_eval(a, t) - pl_eval(b, t), sorted(pts))
  if kind in ("clip", "relu6"):
    a = tree[-1]
    lo, hi = (tree[1], tree[2]) if kind == "clip" else (Fraction(0), Fraction(6))
    cross = _crossings(lambda t: pl_eval(a, t) - lo, sorted(pts))
    cross |= _crossings(lambda t: pl_eval(a, t) - hi, sorted(pts))
    return pts | cross
  if kind == "where_ge":
    a, k = tree[1], tree[2]
    return pts | _crossings(lambda t: pl_eval(a, t) - k, sorted(pts))
  raise ValueError(f"not a piecewise-linear node: {kind!r}")


def _test_points(points: Iterable[Fraction]) -> list[Fraction]:
  """``points`` and two interior points of every interval between them."""
  pts = sorted(set(points))
  out = list(pts)
  for lo, hi in _intervals(pts):
    out.extend(_interior(lo, hi))
  return sorted(out)


def pl_pathwise_witness(tree: Tree, q: Fraction | None = None) -> Fraction | None:
  """An ``x`` where the pathwise identity fails, or ``None`` when it holds for every x.

  ``q=None``: every rate (positive homogeneity of degree 1); otherwise the keep probability.
  A witness ``x = 0`` means ``f(0) != 0``.
  """
  f = lambda t: pl_eval(tree, t)
  if f(Fraction(0)) != 0:
    return Fraction(0)
  bps = breakpoints(tree)
  if q is None:
    f1, fm1 = f(Fraction(1)), f(Fraction(-1))
    for t in _test_points([*bps, Fraction(0)]):
      if t != 0 and f(t) != (t * f1 if t > 0 else -t * fm1):
        return t
    return None
  for t in _test_points([*bps, *(q * b for b in bps), Fraction(0)]):
    if f(t / q) != f(t) / q:
      return t
  return None


def pl_expectation_witness(tree: Tree, q: Fraction | None = None) -> Fraction | None:
  """An ``x`` where the in-expectation identity fails, or ``None`` (see above)."""
  f0 = pl_eval(tree, Fraction(0))
  g = lambda t: pl_eval(tree, t) - f0
  bps = breakpoints(tree)
  if q is None:
    g1, gm1 = g(Fraction(1)), g(Fraction(-1))
    for t in _test_points([*bps, Fraction(0)]):
      if t != 0 and g(t) != (t * g1 if t > 0 else -t * gm1):
        return t
    return None
  for t in _test_points([*bps, *(q * b for b in bps), Fraction(0)]):
    if g(t / q) != g(t) / q:
      return t
  return None


def pl_truth(tree: Tree, q: Fraction | None = None) -> tuple[bool, bool]:
  """(pathwise holds, expectation holds) for every rate (``q=None``) or keep probability q."""
  return pl_pathwise_witness(tree, q) is None, pl_expectation_witness(tree, q) is None


def keep_probability(rate: float) -> Fraction:
  """``1 - rate`` exactly, for the exact value of the Python float ``rate``."""
  return 1 - Fraction(rate)


# ---------------------------------------------------------------------------------------------
# Smooth trees: rigorous interval arithmetic with mpmath (mpmath.iv, 50 digits and more)

IV = mpmath.iv
DIGITS = (50, 150)


@contextlib.contextmanager
def _iv_digits(digits: int):
  """mpmath.iv at ``digits`` significant digits within the block (iv has no workdps)."""
  saved = IV.dps
  IV.dps = digits
  try:
    yield
  finally:
    IV.dps = saved


def _ivk(k: Fraction) -> Any:
  return IV.mpf(k.numerator) / k.denominator


def iv_eval(tree: Tree, x: Any) -> Any:
  """An interval that contains ``tree`` at every point of the interval ``x`` (mpmath.iv)."""
  kind = tree[0]
  r = lambda i: iv_eval(tree[i], x)
  if kind == "x":
    return x
  if kind == "c":
    return _ivk(tree[1])
  if kind == "neg":
    return -r(1)
  if kind == "scale":
    return _ivk(tree[1]) * r(2)
  if kind == "shift":
    return r(2) + _ivk(tree[1])
  if kind == "add":
    return r(1) + r(2)
  if kind == "sub":
    return r(1) - r(2)
  if kind == "mul":
    return r(1) * r(2)
  if kind == "abs":
    return abs(r(1))
  if kind in ("relu", "max", "min", "leaky", "relu6", "clip"):
    return _iv_piecewise(tree, x)
  if kind == "tanh":  # 1 - 2 / (exp(2a) + 1): one occurrence of a, so the enclosure is tight
    return 1 - 2 / (IV.exp(2 * r(1)) + 1)
  if kind == "sigmoid":
    return 1 / (1 + IV.exp(-r(1)))
  if kind == "exp":
    return IV.exp(r(1))
  if kind == "sin":
    return IV.sin(r(1))
  if kind == "softplus":
    return IV.log(1 + IV.exp(r(1)))
  if kind == "sq":
    return r(1) ** 2
  if kind == "cube":
    return r(1) ** 3
  if kind == "sqrt_sq":
    return IV.sqrt(r(1) ** 2)
  if kind in ("where_gt", "where_ge"):
    other = r(2) if kind == "where_gt" else _ivk(tree[2])
    d = r(1) - other
    taken = d > 0 if kind == "where_gt" else d >= 0
    if taken is None:
      raise ArithmeticError("an undecided comparison")
    return r(3) if taken else r(4)
  raise ValueError(f"unknown node {kind!r}")


def _iv_piecewise(tree: Tree, x: Any) -> Any:
  # max(a, b) = (a + b + |a - b|) / 2 and friends: valid enclosures, tight unless a = b.
  kind = tree[0]
  r = lambda i: iv_eval(tree[i], x)
  vmax = lambda a, b: (a + b + abs(a - b)) / 2
  vmin = lambda a, b: (a + b - abs(a - b)) / 2
  zero = IV.mpf(0)
  if kind == "relu":
    return vmax(r(1), zero)
  if kind == "max":
    return vmax(r(1), r(2))
  if kind == "min":
    return vmin(r(1), r(2))
  if kind == "leaky":
    s, a = _ivk(tree[1]), r(2)
    return ((1 + s) * a + (1 - s) * abs(a)) / 2
  if kind == "relu6":
    return vmin(vmax(r(1), zero), IV.mpf(6))
  return vmin(_ivk(tree[2]), vmax(_ivk(tree[1]), r(3)))  # clip


def certified(fn: Callable[[], Any]) -> tuple[Any, bool | None]:
  """``fn()`` as an interval, and its sign as certified: True for > 0, False for < 0, None
  when the interval still contains 0 at every precision in ``DIGITS``."""
  value = None
  for digits in DIGITS:
    with _iv_digits(digits):
      try:
        value = fn()
      except (ArithmeticError, ValueError):
        continue
      # compare the endpoints: mpmath >= 1.4 raises on an undecided interval comparison
      if value.a > 0 or value.b < 0:
        return value, bool(value.a > 0)
  return value, None


def _nonzero(fn: Callable[[], Any]) -> bool:
  return certified(fn)[1] is not None


def smooth_pathwise_witness(tree: Tree, q: Fraction | None = None) -> tuple[float, float] | None:
  """A sampled ``(x, t)`` where the identity certainly fails, or ``None`` when none was found.

  Every rate (``q=None``): ``f(0) = 0`` and ``f(t x) = t f(x)`` for the sampled ``t > 0``;
  keep probability ``q``: ``f(0) = 0`` and ``f(x/q) = f(x)/q`` (``t = 1/q``). ``x = 0``
  reports ``f(0) != 0``. A failure is certified by interval arithmetic, never by rounding.
  """
  f = lambda v: iv_eval(tree, v)
  if _nonzero(lambda: f(IV.mpf(0))):
    return 0.0, 1.0
  for t in _scales(q):
    for x in SMOOTH_XS:
      residual = lambda x=x, t=t: f(_ivk(t) * x) - _ivk(t) * f(IV.mpf(x))
      if _nonzero(residual):
        return x, float(t)
  return None


def smooth_expectation_witness(tree: Tree, q: Fraction | None = None) -> tuple[float, float] | None:
  """As :func:`smooth_pathwise_witness`, for ``g = f - f(0)``."""
  f = lambda v: iv_eval(tree, v)
  for t in _scales(q):
    for x in SMOOTH_XS:

      def residual(x=x, t=t):
        f0 = f(IV.mpf(0))
        return (f(_ivk(t) * x) - f0) - _ivk(t) * (f(IV.mpf(x)) - f0)

      if _nonzero(residual):
        return x, float(t)
  return None


def _scales(q: Fraction | None) -> list[Fraction]:
  if q is None:
    return [Fraction(t) for t in SMOOTH_TS]
  return [1 / q]


def certainly_zero(fn: Callable[[], Any]) -> bool:
  """``fn()`` lies within 1e-100 of 0 at 150 digits (a zero for every practical purpose)."""
  with _iv_digits(DIGITS[-1]):
    try:
      value = fn()
    except (ArithmeticError, ValueError):
      return False
    bound = IV.mpf(10) ** -100
    return bool(value.a >= -bound) and bool(value.b <= bound)


# ---------------------------------------------------------------------------------------------
# Comparing a verdict with the truth


def _cx_structure(cx: Any, shape: tuple[int, ...], rate: float | None, mode: str) -> list[str]:
  out = []
  x = np.asarray(cx.x)
  if x.shape != shape:
    out.append(f"{mode}: counterexample x has shape {x.shape}, expected {shape}")
  if not (0 < cx.rate < 1):
    out.append(f"{mode}: counterexample rate {cx.rate!r} is not in (0, 1)")
  if rate is not None and cx.rate != rate:
    out.append(f"{mode}: counterexample rate {cx.rate!r} but the question was rate {rate!r}")
  if not (0 <= cx.index < x.size):
    out.append(f"{mode}: counterexample index {cx.index} out of range")
  if mode == "pathwise":
    if cx.mask is None or np.asarray(cx.mask).shape != shape:
      out.append(f"pathwise: counterexample mask {cx.mask!r} is not a {shape} bool array")
    elif np.asarray(cx.mask).dtype != bool:
      out.append(f"pathwise: counterexample mask has dtype {np.asarray(cx.mask).dtype}")
  elif cx.mask is not None:
    out.append("expectation: counterexample has a mask")
  lo, hi = cx.residual
  if not (lo <= hi and (lo > 0 or hi < 0)):
    out.append(f"{mode}: residual interval {cx.residual} does not exclude 0")
  return out


def _sides_pl(tree: Tree, cx: Any, mode: str) -> tuple[Fraction, Fraction]:
  """Both sides at the counterexample's certified position, exactly."""
  xi = Fraction(float(np.asarray(cx.x, dtype=np.float64).ravel()[cx.index]))
  q = keep_probability(cx.rate)
  f = lambda t: pl_eval(tree, t)
  if mode == "pathwise":
    kept = bool(np.asarray(cx.mask).ravel()[cx.index])
    return (f(xi / q), f(xi) / q) if kept else (f(Fraction(0)), Fraction(0))
  return q * f(xi / q) + (1 - q) * f(Fraction(0)), f(xi)


def _check_cx_values(cx: Any, pre: Any, post: Any, mode: str) -> list[str]:
  """The exact residual lies in the certified interval; the reported sides are close."""
  out = []
  diff = pre - post
  lo, hi = cx.residual
  if isinstance(diff, Fraction):
    inside = Fraction(lo) <= diff <= Fraction(hi)
  else:
    slack = mpmath.mpf(10) ** -40 * (1 + abs(pre) + abs(post))
    inside = mpmath.mpf(lo) - slack <= diff <= mpmath.mpf(hi) + slack
  if not inside:
    out.append(f"{mode}: exact residual {float(diff)!r} is outside the certified {cx.residual}")
  for name, exact, reported in (("pre", pre, cx.pre), ("post", post, cx.post)):
    got = float(np.asarray(reported, dtype=np.float64).ravel()[cx.index])
    want = float(exact)
    if not abs(got - want) <= 1e-6 * (1 + abs(want)):
      out.append(f"{mode}: reported {name}[{cx.index}] = {got!r}, exact value {want!r}")
  return out


def pl_problems(
  tree: Tree, verdict: Any, rate: float | None = None, *, shape=(4,), decided: bool = True
) -> list[str]:
  """Every disagreement between ``verdict`` (for ``to_jax(tree)``) and the exact truth."""
  q = None if rate is None else keep_probability(rate)
  truths = {
    "pathwise": pl_pathwise_witness(tree, q),
    "expectation": pl_expectation_witness(tree, q),
  }
  out = []
  for mode, witness in truths.items():
    finding = getattr(verdict, mode)
    truth = witness is None
    if finding.status not in ("proved", "refuted", "unknown"):
      out.append(f"{mode}: status {finding.status!r}")
    if finding.status == "proved" and not truth:
      out.append(f"{mode}: proved, but the identity fails at x = {witness} ({float(witness)!r})")
    if finding.status == "unknown" and decided:
      out.append(f"{mode}: unknown for a piecewise-linear function ({finding.reason})")
    if finding.status == "refuted":
      if truth:
        out.append(f"{mode}: refuted, but the identity holds for every x")
      cx = finding.counterexample
      if cx is None:
        out.append(f"{mode}: refuted without a counterexample")
        continue
      problems = _cx_structure(cx, shape, rate, mode)
      if problems:
        out.extend(problems)
        continue
      pre, post = _sides_pl(tree, cx, mode)
      if pre == post:
        out.append(f"{mode}: counterexample is not genuine: both sides are {pre} ({cx})")
      else:
        out.extend(_check_cx_values(cx, pre, post, mode))
  f0 = pl_eval(tree, Fraction(0))
  if verdict.zero_preserving is not None and verdict.zero_preserving != (f0 == 0):
    out.append(f"zero_preserving = {verdict.zero_preserving}, but f(0) = {f0}")
  return out


def _sides_iv(tree: Tree, cx: Any, mode: str) -> Callable[[], tuple[Any, Any]]:
  """Both sides at the counterexample's certified position, as intervals."""
  xi = float(np.asarray(cx.x, dtype=np.float64).ravel()[cx.index])
  q = keep_probability(cx.rate)
  kept = mode == "expectation" or bool(np.asarray(cx.mask).ravel()[cx.index])

  def sides():
    qq = _ivk(q)
    f = lambda t: iv_eval(tree, t)
    x = IV.mpf(xi)
    zero = IV.mpf(0)
    if mode == "pathwise":
      return (f(x / qq), f(x) / qq) if kept else (f(zero), zero)
    return qq * f(x / qq) + (1 - qq) * f(zero), f(x)

  return sides


def _check_cx_intervals(cx: Any, pre: Any, post: Any, diff: Any, mode: str) -> list[str]:
  """The certified interval meets ours (both contain the exact residual); the reported
  sides are close to ours where they are finite floats."""
  out = []
  lo, hi = cx.residual
  if not (diff.a <= hi and diff.b >= lo):
    out.append(f"{mode}: the certified residual {cx.residual} misses ours, {diff}")
  for name, exact, reported in (("pre", pre, cx.pre), ("post", post, cx.post)):
    got = float(np.asarray(reported, dtype=np.float64).ravel()[cx.index])
    want = float(exact.mid)
    if math.isfinite(want) and abs(want) < 1e300 and not abs(got - want) <= 1e-6 * (1 + abs(want)):
      out.append(f"{mode}: reported {name}[{cx.index}] = {got!r}, ours {want!r}")
  return out


def smooth_problems(
  tree: Tree, verdict: Any, rate: float | None = None, *, shape=(4,), homogeneous: bool = False
) -> list[str]:
  """Every disagreement between ``verdict`` and the interval-arithmetic truth.

  ``homogeneous=True`` declares the tree positively homogeneous of degree 1 by construction
  (so pathwise and in expectation both hold): a refutation is then wrong by definition.
  """
  q = None if rate is None else keep_probability(rate)
  out = []
  for mode in ("pathwise", "expectation"):
    finding = getattr(verdict, mode)
    if finding.status not in ("proved", "refuted", "unknown"):
      out.append(f"{mode}: status {finding.status!r}")
    if finding.status == "proved":
      witness_fn = smooth_pathwise_witness if mode == "pathwise" else smooth_expectation_witness
      witness = witness_fn(tree, q)
      if witness is not None:
        out.append(f"{mode}: proved, but (x, t) = {witness} violates the identity (certified)")
    if finding.status == "refuted":
      if homogeneous:
        out.append(f"{mode}: refuted, but the function is homogeneous by construction")
      cx = finding.counterexample
      if cx is None:
        out.append(f"{mode}: refuted without a counterexample")
        continue
      problems = _cx_structure(cx, shape, rate, mode)
      if problems:
        out.extend(problems)
        continue
      sides = _sides_iv(tree, cx, mode)
      diff, sign = certified(lambda sides=sides: (lambda p: p[0] - p[1])(sides()))
      if sign is None:
        out.append(f"{mode}: counterexample not certified: the residual lies in {diff} ({cx})")
      else:
        with _iv_digits(DIGITS[-1]):
          pre, post = sides()
          out.extend(_check_cx_intervals(cx, pre, post, pre - post, mode))
  f0 = lambda: iv_eval(tree, IV.mpf(0))
  if verdict.zero_preserving is True and _nonzero(f0):
    out.append(f"zero_preserving = True, but f(0) = {certified(f0)[0]}")
  if verdict.zero_preserving is False and certainly_zero(f0):
    out.append("zero_preserving = False, but f(0) = 0")
  return out


def assert_pl_verdict(tree: Tree, verdict: Any, rate: float | None = None, **kwargs) -> None:
  problems = pl_problems(tree, verdict, rate, **kwargs)
  if problems:
    raise AssertionError(_report(tree, verdict, rate, problems))


def assert_smooth_verdict(tree: Tree, verdict: Any, rate: float | None = None, **kwargs) -> None:
  problems = smooth_problems(tree, verdict, rate, **kwargs)
  if problems:
    raise AssertionError(_report(tree, verdict, rate, problems))


def _report(tree: Tree, verdict: Any, rate: float | None, problems: list[str]) -> str:
  lines = [f"f(x) = {to_str(tree)}, rate = {rate!r}:", *("  - " + p for p in problems)]
  lines.append(str(verdict))
  return "\n".join(lines)
