"""``jdrop.check``: decide whether dropout before and after ``f`` agree.

The decision runs three engines on the function's jaxpr, traced on a float32
*vector* (so means, cumulative sums and dot products are seen as what they are):

1. the **homogeneity algebra** (:mod:`.homogeneity`) proves the positive cases;
2. the **exact piecewise-linear engine** (:mod:`.piecewise`) decides every
   elementwise function built from ``max``, ``min``, ``abs``, comparisons,
   ``where`` and affine maps, and lists where its residual is non-zero;
3. **certified evaluation** (:mod:`.balls`) turns a candidate input into a
   counterexample only when ball arithmetic proves the residual non-zero.

What none of them settles is "unknown", with the reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import math
import numbers
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flint import arb
from jax.extend import core

from jdrop._src import activations
from jdrop._src import errors
from jdrop._src.checker import balls
from jdrop._src.checker import homogeneity
from jdrop._src.checker import jaxprs
from jdrop._src.checker import piecewise
from jdrop._src.checker import polynomial
from jdrop._src.checker.verdict import Counterexample
from jdrop._src.checker.verdict import Finding
from jdrop._src.checker.verdict import Verdict

_FN = "jdrop.check"
DEFAULT_SHAPE = (4,)
MAX_SIZE = 256  # elements of the traced input: ball evaluation is per element
MAX_MASK_ENUMERATION = 8  # 2**8 masks for the exact expectation of a non-elementwise f
# Certified evaluations of f one search may spend (a search that finds nothing says
# "unknown"; this bounds its time for large closed-over arrays or many masks).
SEARCH_BUDGET = 2000
# ... and seconds of wall time (a matrix product over 256 elements costs 65536 ball
# multiplications per evaluation: the search stops, and says so, rather than run for minutes).
SEARCH_SECONDS = 3.0
CHECK_SECONDS = 10.0  # all engines of one check together (typically well under 1 s)
SEARCH_RATES = (0.5, 0.25, 0.75, 0.1, 0.9)  # tried in this order when rate=None
# Scalars tried as inputs when no engine gives better candidates: both signs,
# every magnitude that activations treat differently, all exact in float32.
# Then magnitudes far from 1 (``x * tanh(1e6 x)`` has its feature near 1e-6), each a
# power of 2 or a float32 decimal, also exact.
SEARCH_VALUES = tuple(
  s * v
  for v in (
    *(1.0, 2.0, 0.5, 3.0, 0.25, 5.0, 0.125, 10.0, 1.5, 0.75, 100.0, 2.0**-10, 7.0, 30.0),
    *(2.0**-20, 2.0**20, 2.0**-14, 2.0**14, 2.0**-30, 2.0**30, 2.0**-40, 2.0**40),
    *(float(np.float32(1e-6)), float(np.float32(1e-3)), 1e3, 1e6, 2.0**-60, 2.0**60),
  )
  for s in (1.0, -1.0)
)


# --- inputs ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
  """A function to check, with a readable name."""

  fn: Callable[[jax.Array], Any]
  name: str


def resolve(f: Any, *, fn: str = _FN, arg: str = "f") -> Target:
  """A callable from what users pass: a callable, a registry name, an import path
  ``"module:attr"``, a bound Flax linen module, ``(linen module, variables)`` or
  an nnx module."""
  if isinstance(f, str):
    if ":" in f:
      return _import(f, fn=fn, arg=arg)
    return Target(activations.lookup(fn, arg, f), f)
  linen = _linen()
  if isinstance(f, tuple) and len(f) == 2 and linen and isinstance(f[0], linen.Module):
    module, variables = f
    return Target(lambda x: module.apply(variables, x), type(module).__name__)
  if linen and isinstance(f, linen.Module):
    if getattr(f, "scope", None) is None:
      raise errors.type_error(
        fn,
        arg,
        "is an unbound Flax linen module (it has no parameters)",
        errors.short(f),
        "Pass (module, variables) or module.bind(variables).",
      )
    return Target(f, type(f).__name__)
  if callable(f):
    return Target(f, _name(f))
  raise errors.type_error(
    fn,
    arg,
    "must be a callable, a registry name or 'module:attribute'",
    errors.short(f),
    "Pass e.g. jax.nn.relu, 'relu' (see jdrop.activations.names()) or 'mypkg.mod:act'.",
  )


def _linen() -> Any:
  try:
    import flax.linen as linen
  except ImportError:  # pragma: no cover - flax is a dependency
    return None
  return linen


def _name(f: Any) -> str:
  for attr in ("__qualname__", "__name__"):
    name = getattr(f, attr, None)
    if isinstance(name, str):
      return name
  if hasattr(f, "func"):  # functools.partial
    return f"partial({_name(f.func)})"
  return type(f).__name__


def _import(spec: str, *, fn: str, arg: str) -> Target:
  target = resolve(import_object(spec, fn=fn, arg=arg), fn=fn, arg=arg)
  return Target(target.fn, spec)


def import_object(spec: str, *, fn: str, arg: str) -> Any:
  """The object at an absolute import path ``"module:attr.sub"``, or a clear ValueError.

  The module is imported as ``import module`` would import it; nothing is ``eval``-ed.
  """
  module_name, _, attr = spec.partition(":")
  if not module_name or not attr or module_name.startswith("."):
    raise errors.value_error(
      fn,
      arg,
      "must be 'module:attribute' with an absolute module path",
      spec,
      "Pass e.g. 'mypkg.layers:my_activation' (a relative path such as '.layers' has no"
      " package to be relative to).",
    )
  try:
    obj: Any = importlib.import_module(module_name)
  except ImportError as e:
    raise errors.value_error(
      fn,
      arg,
      f"names a module that cannot be imported ({type(e).__name__}: {e})",
      spec,
      "Check the module path and that its package is installed.",
    ) from None
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise errors.value_error(
        fn,
        arg,
        f"names an attribute that {module_name} does not have ({part!r})",
        spec,
        "Check the attribute name after ':'.",
      )
    obj = getattr(obj, part)
  return obj


def _check_rate(rate: Any) -> float | None:
  if rate is None:
    return None
  concrete = isinstance(rate, numbers.Real) and not isinstance(rate, bool)
  if not concrete and isinstance(rate, np.ndarray | jax.Array) and np.ndim(rate) == 0:
    concrete = np.issubdtype(np.asarray(rate).dtype, np.floating)
  if not concrete:
    raise errors.type_error(
      _FN, "rate", "must be a float in (0, 1) or None", errors.short(rate), "Pass e.g. rate=0.5."
    )
  value = float(rate)
  if not 0.0 < value < 1.0:
    raise errors.value_error(
      _FN,
      "rate",
      "must be a drop probability in the open interval (0, 1)",
      value,
      "Rate 0 is the identity and rate 1 zeroes everything; pass e.g. rate=0.5, or"
      " rate=None for every rate.",
    )
  return value


def _check_shape(shape: Any) -> tuple[int, ...]:
  if shape is None:
    return DEFAULT_SHAPE
  if isinstance(shape, int | np.integer):
    shape = (shape,)
  ok = isinstance(shape, Sequence) and all(
    isinstance(d, int | np.integer) and not isinstance(d, bool) and d > 0 for d in shape
  )
  size = math.prod(shape) if ok else 0
  if not ok or size > MAX_SIZE or len(shape) == 0:
    raise errors.value_error(
      _FN,
      "shape",
      f"must be a non-empty tuple of positive ints with at most {MAX_SIZE} elements (a vector,"
      " so that functions mixing elements are recognised; a scalar function runs on (1,))",
      errors.short(shape),
      "Pass the shape f expects, as small as it allows, e.g. shape=(4,).",
    )
  return tuple(int(d) for d in shape)


def trace(target: Target, shape: tuple[int, ...], *, fn: str = _FN) -> core.ClosedJaxpr:
  """The jaxpr of ``target`` on a float32 array of ``shape``, validated."""
  spec = jax.ShapeDtypeStruct(shape, jnp.float32)
  try:
    closed, out = jax.make_jaxpr(target.fn, return_shape=True)(spec)
  except KeyboardInterrupt:
    raise
  except BaseException as e:  # the user's function failed (even sys.exit): report its error
    raise errors.value_error(
      fn,
      "f",
      f"failed when traced on a float32 array of shape {shape} ({type(e).__name__}: "
      f"{_first_line(e)})",
      errors.Described(target.name),
      "Fix the function, or pass shape=... if it expects another input shape.",
    ) from e
  leaves = jax.tree_util.tree_leaves(out)
  if len(leaves) != 1 or not isinstance(leaves[0], jax.ShapeDtypeStruct):
    raise errors.value_error(
      fn,
      "f",
      "must return one array",
      errors.Described(f"{len(leaves)} outputs from {target.name}"),
      "Return a single array shaped like the input.",
    )
  (leaf,) = leaves
  if not jnp.issubdtype(leaf.dtype, jnp.floating):
    raise errors.type_error(
      fn,
      "f",
      "must return a float array",
      errors.Described(f"dtype {leaf.dtype} from {target.name}"),
      "An activation maps floats to floats; cast the result or check the function.",
    )
  if tuple(leaf.shape) != shape or leaf.dtype != jnp.float32:
    raise errors.value_error(
      fn,
      "f",
      f"must keep the input's shape {shape} and dtype float32 (dropout applies one mask to"
      " both sides)",
      errors.Described(f"shape {tuple(leaf.shape)} and dtype {leaf.dtype} from {target.name}"),
      "Check a function that keeps its input's shape, e.g. an activation.",
    )
  return closed


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return text[0] if text else ""


# --- evaluation helpers -------------------------------------------------------------


class _Function:
  """The traced function evaluated with certified balls, memoised per input."""

  def __init__(self, closed: core.ClosedJaxpr, shape: tuple[int, ...], elementwise: bool):
    self.jaxpr, self.consts, self.shape = closed.jaxpr, closed.consts, shape
    self.elementwise = elementwise
    self._cache: dict[bytes, np.ndarray | None] = {}
    self.budget = SEARCH_BUDGET
    self.deadline = math.inf
    self.failure = ""  # the first internal error of an evaluation, for the reasons

  def __call__(self, x: np.ndarray) -> np.ndarray | None:
    """``f(x)`` as balls, or None where the balls cannot decide (or f is undefined)."""
    key = _key(x)
    if key not in self._cache:
      if self.budget <= 0 or time.monotonic() > self.deadline:
        raise _OutOfBudget
      self.budget -= 1
      try:
        (out,) = balls.evaluate(self.jaxpr, self.consts, x)
        self._cache[key] = balls.balls(out)
      except balls.NotCertified:
        self._cache[key] = None
      except jaxprs.TimeLimit:
        raise _OutOfBudget from None
      except Exception as e:  # an engine failure certifies nothing; it is reported
        self.failure = self.failure or _describe(e)
        self._cache[key] = None
    return self._cache[key]


def _describe(e: BaseException) -> str:
  return f"{type(e).__name__}: {_first_line(e)}"


class _OutOfBudget(Exception):
  """The search spent :data:`SEARCH_BUDGET` evaluations or :data:`SEARCH_SECONDS` seconds."""


def _start_search(f: _Function) -> None:
  f.budget = SEARCH_BUDGET
  f.deadline = time.monotonic() + SEARCH_SECONDS


def _key(x: np.ndarray) -> bytes:
  return repr([str(b) for b in x.ravel()]).encode()


def _ball_vector(values: np.ndarray) -> np.ndarray:
  return balls.balls(np.asarray(values, dtype=np.float64))


def _dropout(x: np.ndarray, mask: np.ndarray, q: arb) -> np.ndarray:
  out = np.empty(x.shape, dtype=object)
  for i in np.ndindex(x.shape):
    out[i] = x[i] / q if mask[i] else arb(0)
  return out


def _q(rate: float) -> arb:
  return arb(1) - arb(rate)  # exact: both are dyadic rationals


def _certify(
  residual: np.ndarray,
  x: np.ndarray,
  rate: float,
  mask: np.ndarray | None,
  pre: Any,
  post: Any,
  f: _Function,
) -> Counterexample | None:
  """A counterexample at the first position whose residual ball excludes 0."""
  for index, ball in enumerate(residual.ravel()):
    if balls.certainly_nonzero(ball):
      return Counterexample(
        x=np.asarray(x, dtype=np.float64),
        rate=rate,
        mask=None if mask is None else np.asarray(mask, dtype=bool),
        pre=balls.midpoints(pre),
        post=balls.midpoints(post),
        index=index,
        residual=balls.bounds(ball),
        certificate=str(ball),
        method=balls.METHOD,
        elementwise=f.elementwise,
      )
  return None


Witness = tuple[Counterexample | None, np.ndarray | None]  # and the residual's balls


def _pathwise_witness(f: _Function, x: np.ndarray, rate: float, mask: np.ndarray) -> Witness:
  q = _q(rate)
  fx = f(_ball_vector(x))
  pre = f(_dropout(_ball_vector(x), mask, q))
  if fx is None or pre is None:
    return None, None
  post = _dropout(fx, mask, q)
  residual = balls.objects(pre - post, x.shape)
  return _certify(residual, x, rate, mask, pre, post, f), residual


def _expectation_witness(f: _Function, x: np.ndarray, rate: float, elementwise: bool) -> Witness:
  q = _q(rate)
  xb = _ball_vector(x)
  fx = f(xb)
  if fx is None:
    return None, None
  if elementwise:  # E f(D(x))_i = q f(x/q)_i + (1 - q) f(0)_i
    kept, dropped = f(balls.objects(xb / q, x.shape)), f(_ball_vector(np.zeros(x.shape)))
    if kept is None or dropped is None:
      return None, None
    mean = q * kept + (1 - q) * dropped
  else:  # the exact mean over all 2**n masks
    mean = _ball_vector(np.zeros(x.shape))
    for bits in itertools.product((False, True), repeat=x.size):
      mask = np.array(bits).reshape(x.shape)
      value = f(_dropout(xb, mask, q))
      if value is None:
        return None, None
      num_kept = int(mask.sum())
      mean = mean + value * (q**num_kept) * ((1 - q) ** (x.size - num_kept))
  residual = balls.objects(mean - fx, x.shape)
  return _certify(residual, x, rate, None, mean, fx, f), residual


EXACT_METHOD = "exact rational evaluation of the piecewise-linear form"


def _exact_counterexample(
  pl: piecewise.PL, x: np.ndarray, rate: float, balls_residual: Any, *, expectation: bool
) -> Counterexample | None:
  """A witness certified by exact rational arithmetic on the piecewise-linear form.

  Used only at positions where balls could not decide a step: ``x / q`` is not a
  dyadic number when ``q`` is not a power of 2, so a comparison that is an exact tie
  (``where(1.25 x > 1.25 x, ...)``) overlaps in ball arithmetic, while the rational
  form decides it. Where the balls did decide, their answer stands.
  """
  t = Fraction(float(np.ravel(x)[0]))  # the piecewise candidates fill x with one value
  q = Fraction(1) - Fraction(rate)
  kept, at_t = pl.at(t / q), pl.at(t)
  if expectation:
    pre, post = q * kept + (1 - q) * piecewise.f0(pl), at_t
  else:
    pre, post = kept, at_t / q
  pre, post = np.broadcast_to(pre, x.shape), np.broadcast_to(post, x.shape)
  undecided = np.ones(x.size, dtype=bool)
  if balls_residual is not None:
    undecided = np.array([not b.is_finite() for b in np.ravel(balls_residual)])
  for index, (a, b) in enumerate(zip(pre.ravel(), post.ravel(), strict=True)):
    if a != b and undecided[index]:
      residual = float(a - b)
      return Counterexample(
        x=np.asarray(x, dtype=np.float64),
        rate=rate,
        mask=None if expectation else np.ones(x.shape, dtype=bool),
        pre=np.asarray(pre, dtype=np.float64),
        post=np.asarray(post, dtype=np.float64),
        index=index,
        residual=(math.nextafter(residual, -math.inf), math.nextafter(residual, math.inf)),
        certificate=str(a - b),
        method=EXACT_METHOD,
        elementwise=True,
      )
  return None


def _search_inputs(shape: tuple[int, ...], elementwise: bool) -> list[np.ndarray]:
  """Input vectors that cycle through :data:`SEARCH_VALUES`; for an elementwise
  ``f`` then each value alone (a value outside f's domain, such as log's
  negatives, makes a whole vector undefined, not the other positions)."""
  n = math.prod(shape)
  values = list(SEARCH_VALUES)
  count = max(1, math.ceil(len(values) / n))
  packed = [
    np.array([values[(i * n + j) % len(values)] for j in range(n)]).reshape(shape)
    for i in range(count)
  ]
  if not elementwise or n == 1:
    return packed
  return packed + [np.full(shape, v) for v in values]


def _search_masks(shape: tuple[int, ...], elementwise: bool) -> list[np.ndarray]:
  """All kept; for a non-elementwise f also each unit dropped alone, each unit kept
  alone, every other unit dropped (both phases) and all dropped."""
  kept = np.ones(shape, dtype=bool)
  if elementwise:
    return [kept]  # each unit is its own experiment: all kept covers every unit
  n = math.prod(shape)
  eye = np.eye(n, dtype=bool)
  alternate = np.arange(n) % 2 == 0
  flat = [np.ones(n, bool), *~eye, *eye, alternate, ~alternate, np.zeros(n, bool)]
  unique = {m.tobytes(): m for m in flat}  # n = 1 or 2 repeats some
  return [m.reshape(shape) for m in unique.values()]


# --- the decisions ----------------------------------------------------------------


def _rates(rate: float | None) -> tuple[float, ...]:
  return SEARCH_RATES if rate is None else (rate,)


def _float_candidates(ts: Sequence[Fraction], keep: Callable[[Fraction], bool]) -> list[float]:
  """Float inputs (float32 where possible) at which the exact residual is non-zero."""
  out = []
  for t in ts:
    try:
      with np.errstate(over="ignore"):  # beyond float32: inf, skipped below
        candidates = (float(np.float32(float(t))), float(t))
    except OverflowError:  # a breakpoint beyond float64's range
      continue
    for candidate in candidates:
      if math.isfinite(candidate) and keep(Fraction(candidate)):
        out.append(candidate)
        break
  return out


_POLY_METHOD = "exact polynomial normal form"


def _powers(poly: dict[int, np.ndarray] | None) -> set[int] | None:
  """The powers of x with a non-zero coefficient, when f is a polynomial in x."""
  return None if poly is None else set(poly)


def _decide_pathwise(
  f: _Function,
  hom: homogeneity.Hom,
  pl: piecewise.PL | None,
  f0: np.ndarray | None,
  rate: float | None,
  elementwise: bool,
  shape: tuple[int, ...],
  poly: dict[int, np.ndarray] | None = None,
) -> Finding:
  if hom.is_const and homogeneity._is_zero(hom.const):
    return Finding("proved", "homogeneity algebra", "f is identically 0")
  if hom.deg == 1 and hom.offset is None and elementwise:
    return Finding(
      "proved",
      "homogeneity algebra",
      "f is elementwise and positively homogeneous of degree 1 (f(t x) = t f(x) for t > 0),"
      " so f(m x / q) = m f(x) / q for every mask m and keep probability q",
    )
  if pl is not None and piecewise.commutes_pathwise(pl):
    return Finding(
      "proved",
      "exact piecewise-linear analysis",
      "f(t) = a max(t, 0) + b min(t, 0) exactly at every position, so f(m x / q) = m f(x) / q",
    )
  powers = _powers(poly)
  if elementwise and powers is not None and powers <= {1}:
    what = "f(t) = c t exactly at every position" if powers else "f is identically 0"
    return Finding(
      "proved",
      _POLY_METHOD,
      f"{what} (its subterms cancel), so f(m x / q) = m f(x) / q",
    )
  reason = _why_not_proved(hom, elementwise, "pathwise")
  # A dropped unit: f(0) must be 0.
  _start_search(f)
  if f0 is not None and any(balls.certainly_nonzero(b) for b in f0.ravel()):
    for r in _rates(rate):
      found, _ = _pathwise_witness(f, np.ones(shape), r, np.zeros(shape, dtype=bool))
      if found is not None:
        return Finding("refuted", "f(0) != 0 at a dropped unit", _F0_REASON, found)
  # A kept unit: f(x / q) must equal f(x) / q.
  masks = _search_masks(shape, elementwise)

  def witness(x: np.ndarray, r: float) -> Iterator[Witness]:
    for mask in masks:
      yield _pathwise_witness(f, x, r, mask)

  return _search(witness, pl, rate, shape, elementwise, reason, expectation=False)


def _search(
  witness: Callable[[np.ndarray, float], Any],
  pl: piecewise.PL | None,
  rate: float | None,
  shape: tuple[int, ...],
  elementwise: bool,
  reason: str,
  *,
  expectation: bool,
) -> Finding:
  """Tries candidates at each rate until one is certified: "refuted", else "unknown"."""
  tried, stopped = 0, ""
  try:
    for r in _rates(rate):
      q = Fraction(1) - Fraction(r)
      for x in _candidates(pl, q, shape, elementwise, expectation=expectation):
        for found, residual in witness(x, r):
          tried += 1
          if found is None and pl is not None:
            found = _exact_counterexample(pl, x, r, residual, expectation=expectation)
          if found is not None:
            method = "exact piecewise-linear analysis" if pl is not None else "certified search"
            return Finding("refuted", method, _refuted_reason(pl, reason, expectation), found)
  except _OutOfBudget:
    stopped = (
      f" (the search stopped at its budget of {SEARCH_BUDGET} evaluations or {SEARCH_SECONDS:g} s)"
    )
  return Finding("unknown", "no engine decided", _unknown_reason(reason, tried, rate) + stopped)


_F0_REASON = "a dropped unit gives f(0) before the activation's dropout and 0 after it"


def _refuted_reason(pl: piecewise.PL | None, reason: str, expectation: bool) -> str:
  if pl is not None:
    what = "f - f(0)" if expectation else "f"
    return f"{what} is piecewise linear but not of the form a max(t, 0) + b min(t, 0)"
  what = "expectations" if expectation else "orders"
  return f"the {what} differ at the counterexample ({reason})"


def _unknown_reason(reason: str, tried: int, rate: float | None) -> str:
  rates = list(_rates(rate))
  return f"{reason}; no certified counterexample among {tried} candidates at rates {rates}"


def _why_not_proved(hom: homogeneity.Hom, elementwise: bool, mode: str) -> str:
  if mode == "pathwise" and not elementwise:
    if hom.approx:  # the dependence went through a step without a dependence rule
      why = hom.reason if hom.deg is None and hom.reason else f"no rule for `{hom.approx}`"
      return f"f is not known to be elementwise ({why}), so it is not proved"
    return (
      "f is not shown to be elementwise (an output may depend on other inputs), so it is not proved"
    )
  if hom.is_const:
    if not homogeneity.finite_constant(hom):
      return "f is a constant that is not a finite real number (inf or NaN)"
    return "f is a constant not shown to be 0"
  if hom.deg is None:
    return hom.reason
  if hom.offset is not None:
    return "f = c + h(x) with a constant c not shown to be 0"
  if hom.deg != 1:
    return f"f is positively homogeneous of degree {hom.deg}, not 1"
  return "f is positively homogeneous of degree 1 but not a linear map of elementwise terms"


def _candidates(
  pl: piecewise.PL | None,
  q: Fraction,
  shape: tuple[int, ...],
  elementwise: bool,
  *,
  expectation: bool,
) -> list[np.ndarray]:
  """Inputs to try: where the exact residual is non-zero (piecewise linear f), else a search."""
  if pl is None:
    return _search_inputs(shape, elementwise)

  def nonzero(t: Fraction) -> bool:
    return bool(np.any(piecewise.residual(pl, t, q, expectation=expectation) != 0))

  ts = _float_candidates(piecewise.witnesses(pl, q), nonzero)[:4]
  return [np.full(shape, t) for t in ts]


def _decide_expectation(
  f: _Function,
  hom: homogeneity.Hom,
  pl: piecewise.PL | None,
  rate: float | None,
  elementwise: bool,
  shape: tuple[int, ...],
  poly: dict[int, np.ndarray] | None = None,
) -> Finding:
  if hom.is_const and homogeneity.finite_constant(hom):
    return Finding("proved", "homogeneity algebra", "f is constant")
  if hom.deg == 1 and hom.elin:
    return Finding(
      "proved",
      "homogeneity algebra",
      "f(x) = c + h(x) with h a linear map of elementwise positively homogeneous functions"
      " of degree 1, so E f(D(x)) = c + h(x) = f(x)",
    )
  if pl is not None and piecewise.commutes_in_expectation(pl):
    return Finding(
      "proved",
      "exact piecewise-linear analysis",
      "f(t) - f(0) = a max(t, 0) + b min(t, 0) exactly, so E f(D(x)) = f(x)",
    )
  powers = _powers(poly)
  if elementwise and powers is not None and powers <= {0, 1}:
    return Finding(
      "proved",
      _POLY_METHOD,
      "f(t) = c + d t exactly at every position (its subterms cancel), so E f(D(x)) = f(x)",
    )
  reason = _why_not_proved(hom, elementwise, "expectation")
  if not elementwise and math.prod(shape) > MAX_MASK_ENUMERATION:
    return Finding(
      "unknown",
      "no engine decided",
      f"{reason}; f is not elementwise, and its exact expectation over 2**{math.prod(shape)}"
      f" masks is too large to certify (trace on at most {MAX_MASK_ENUMERATION} elements)",
    )
  _start_search(f)

  def witness(x: np.ndarray, r: float) -> Iterator[Witness]:
    yield _expectation_witness(f, x, r, elementwise)

  return _search(witness, pl, rate, shape, elementwise, reason, expectation=True)


def _zero_preserving(
  hom: homogeneity.Hom, pl: piecewise.PL | None, f0: np.ndarray | None
) -> bool | None:
  if pl is not None:
    return not bool(np.any(piecewise.f0(pl) != 0))
  if hom.deg is not None and hom.deg > 0 and hom.offset is None:
    return True
  if f0 is None:
    return None
  if all(balls.is_exact_zero(b) for b in f0.ravel()):
    return True
  if any(balls.certainly_nonzero(b) for b in f0.ravel()):
    return False
  return None


def check(
  f: Any,
  *,
  rate: float | None = None,
  shape: Sequence[int] | None = None,
  float_level: bool = True,
) -> Verdict:
  r"""Decides whether dropout before ``f`` and dropout after ``f`` agree.

  With inverted dropout ``D(x) = m x / q`` (keep probability ``q = 1 - rate``):

  * **pathwise**: ``f(D(x)) = D(f(x))`` for every ``x`` and every mask (the same
    mask on both sides). For an elementwise ``f`` this holds at every rate iff
    ``f(t) = a max(t, 0) + b min(t, 0)`` (relu, leaky relu, abs, identity);
  * **in expectation**: ``E f(D(x)) = f(x)``; at every rate iff ``f - f(0)`` is
    of that form (so ``x + 1`` qualifies, ``f(0) = 0`` being neither necessary
    nor sufficient).

  "proved" holds over the reals with the jaxpr's literals at their exact float
  values; "refuted" carries a counterexample whose residual is certified
  non-zero by ball arithmetic; "unknown" says why. Floating point is a separate
  finding (``verdict.float_level``): ``leaky_relu`` commutes over the reals yet
  differs by an ulp in float32.

  Args:
    f: a function of one float32 array that keeps its shape and dtype: a
      callable (``jax.nn`` functions, lambdas, closures over arrays, ``jax.jit``
      or ``jax.checkpoint`` functions), a registry name (``"gelu"``), an import
      path ``"package.module:attribute"``, a bound Flax linen module,
      ``(linen module, variables)``, or an nnx module.
    rate: ``None`` asks about every rate in (0, 1); a float in (0, 1) asks about
      that rate only (some non-linear functions commute at one rate).
    shape: the input shape to trace on (default ``(4,)``; at most 256 elements).
      A vector, so that non-elementwise functions are recognised.
    float_level: also compare both orders bit for bit in float32 and bfloat16
      under ``jit`` on the current backend (one compilation).

  Returns:
    A :class:`~jdrop.checker.Verdict`.

  Raises:
    TypeError: ``f`` is not callable or returns a non-float; ``rate`` is not a float.
    ValueError: an unknown name or import path, ``f`` fails to trace (even through
      ``sys.exit``) or changes the shape or dtype, ``rate`` outside (0, 1) or NaN, a bad
      ``shape``.

  Nothing else raises: an engine that fails on ``f`` answers "unknown" naming the
  error, and time is bounded (:data:`ENGINE_SECONDS` per engine, :data:`SEARCH_SECONDS`
  per search, :data:`CHECK_SECONDS` in all), the reason saying where it stopped.

  Examples:
    >>> import jax, jdrop
    >>> jdrop.check(jax.nn.relu, float_level=False).pathwise.status
    'proved'
    >>> v = jdrop.check("tanh", float_level=False)
    >>> v.zero_preserving, v.pathwise.status, v.expectation.status
    (True, 'refuted', 'refuted')
    >>> jdrop.check(lambda x: x + 1, float_level=False).expectation.status
    'proved'
  """
  target = resolve(f)
  rate = _check_rate(rate)
  shape = _check_shape(shape)
  closed = trace(target, shape)
  names = jaxprs.primitive_names(closed.jaxpr)
  with balls.precision(), jaxprs.time_limit(CHECK_SECONDS):
    hom = _guarded(
      "homogeneity algebra",
      lambda: homogeneity.analyse(closed.jaxpr, closed.consts, shape),
      lambda why: homogeneity.unknown(shape, why),
    )
    elementwise = hom.elementwise(shape)
    pl = None
    if elementwise:
      pl = _guarded(
        "piecewise-linear engine",
        lambda: piecewise.analyse(closed.jaxpr, closed.consts, shape),
        _none,
        expected=piecewise.NotPiecewiseLinear,
      )
    poly = None
    if elementwise and pl is None:
      poly = _guarded(
        "polynomial normal form",
        lambda: polynomial.coefficients(polynomial.analyse(closed.jaxpr, closed.consts, shape)),
        _none,
        expected=polynomial.NotPolynomial,
      )
    evaluate = _Function(closed, shape, elementwise)
    f0 = _guarded("evaluation of f(0)", lambda: evaluate(_ball_vector(np.zeros(shape))), _none)
    search = SEARCH_SECONDS + ENGINE_SECONDS  # the search stops itself; this bounds one step
    pathwise = _guarded(
      "pathwise search",
      lambda: _decide_pathwise(evaluate, hom, pl, f0, rate, elementwise, shape, poly),
      lambda why: Finding("unknown", "no engine decided", why),
      seconds=search,
    )
    expectation = _guarded(
      "expectation search",
      lambda: _decide_expectation(evaluate, hom, pl, rate, elementwise, shape, poly),
      lambda why: Finding("unknown", "no engine decided", why),
      seconds=search,
    )
    pathwise, expectation = (_with_failure(v, evaluate.failure) for v in (pathwise, expectation))
    zero = _zero_preserving(hom, pl, f0)
    f0_values = np.full(shape, np.nan) if f0 is None else balls.midpoints(f0)
  if pl is not None:
    f0_values = np.asarray(np.frompyfunc(_float, 1, 1)(piecewise.f0(pl)), dtype=np.float64)
  floats = None
  if float_level:
    floats = _float_level(target, shape, rate, names)
  return Verdict(
    function=target.name,
    rate=rate,
    shape=shape,
    elementwise=True if elementwise else None,
    zero_preserving=zero,
    f0=f0_values,
    pathwise=pathwise,
    expectation=expectation,
    float_level=floats,
  )


ENGINE_SECONDS = 2.0  # each engine's analysis of f (the search has its own budget)


def _guarded(
  engine: str,
  run: Callable[[], Any],
  fallback: Callable[[str], Any],
  expected: type[BaseException] | tuple[type[BaseException], ...] = (),
  seconds: float = ENGINE_SECONDS,
) -> Any:
  """``run()`` within :data:`ENGINE_SECONDS`, or ``fallback(reason)`` when the engine fails
  or runs out of time: no function makes :func:`check` raise, or run for minutes; an engine
  that cannot handle it says so, naming the error."""
  try:
    with jaxprs.time_limit(seconds):
      return run()
  except expected as e:
    return fallback(str(e))
  except jaxprs.TimeLimit:
    return fallback(f"the {engine} stopped after {seconds:g} s")
  except Exception as e:
    return fallback(f"the {engine} failed on this function ({_describe(e)})")


def _none(reason: str) -> None:
  return None


def _float(value: Fraction) -> float:
  """The nearest float, or an infinity beyond float64's range."""
  try:
    return float(value)
  except OverflowError:
    return math.inf if value > 0 else -math.inf


def _with_failure(finding: Finding, failure: str) -> Finding:
  if finding.status != "unknown" or not failure:
    return finding
  reason = f"{finding.reason}; certified evaluation failed on some inputs ({failure})"
  return dataclasses.replace(finding, reason=reason)


def _float_level(
  target: Target, shape: tuple[int, ...], rate: float | None, names: set[str]
) -> Any:
  from jdrop._src.checker import floats

  callbacks = sorted(names & floats.CALLBACKS)
  if callbacks:
    return floats.skipped(
      f"f calls back into Python ({', '.join(callbacks)}); compiling and running it on"
      " thousands of rows would run the callback for each, so the comparison is skipped"
    )
  try:
    return floats.float_level(target.fn, shape, rate=rate)
  except Exception as e:
    return floats.skipped(f"the float-level comparison failed ({_describe(e)})")
