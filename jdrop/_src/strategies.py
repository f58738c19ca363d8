"""Hypothesis strategies for property-based tests of code that uses dropout.

The strategies draw the inputs that break dropout implementations: PRNG keys of
both kinds (typed ``jax.random.key`` and legacy raw ``jax.random.PRNGKey``),
drop rates at the edges (0, 1, tiny, within an ulp of 1), low-precision arrays
holding ``inf``, ``NaN``, signed zeros and subnormals, and activation names from
the registry. :mod:`jdrop.testing` re-exports them; Hypothesis is an optional
dependency (``pip install "jdrop[testing]"``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from jdrop._src import activations as _activations
from jdrop._src import errors

try:
  from hypothesis import strategies as st
  from hypothesis.extra import numpy as hnp
except ImportError as err:  # pragma: no cover - exercised by tests with Hypothesis hidden
  raise ImportError(
    "jdrop.testing needs Hypothesis, an optional dependency of jdrop. "
    'Install it with: pip install "jdrop[testing]"'
  ) from err

KEY_KINDS = ("typed", "raw")
DEFAULT_DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32)

# Rates that dropout implementations get wrong: exact zero, the smallest positive doubles
# (1 - rate rounds to a float32 keep probability of exactly 1), float32's resolution near 1,
# and rates within an ulp of 1 (a keep probability of 2**-53, far below float32's epsilon).
_TINY_RATES = (5e-324, 1e-300, 2.0**-53, 2.0**-24, 1e-7)
_NEAR_ONE_RATES = (1.0 - 2.0**-53, 1.0 - 1e-12, 1.0 - 2.0**-24, 1.0 - 1e-7, 0.999)
_SIMPLE_RATES = (0.1, 0.25, 0.5, 0.75, 0.9)
_MODERATE = 10.0  # float_arrays draws half its elements from [-10, 10]


# ----------------------------------------------------------------------------
# Keys.


def _key_data_shape(impl: str) -> tuple[int, ...]:
  return tuple(jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape)


def keys(
  *, kinds: Sequence[str] = KEY_KINDS, impls: Sequence[str] = ("threefry2x32",)
) -> st.SearchStrategy[jax.Array]:
  """A strategy for single PRNG keys: typed keys and legacy raw ``uint32`` keys.

  Keys are built from arbitrary key data (every word, not only the low word a small
  seed sets), wrapped with :func:`jax.random.wrap_key_data` for typed keys. A raw
  key is the ``uint32`` array :func:`jax.random.PRNGKey` would return, so it uses
  JAX's default implementation (threefry2x32) whatever ``impls`` says.

  Args:
    kinds: which kinds to draw: ``"typed"`` (``jax.random.key``) and/or ``"raw"``
      (``jax.random.PRNGKey``).
    impls: the implementations of typed keys, e.g. ``("threefry2x32", "rbg")``.

  Returns:
    A strategy of scalar typed keys and ``uint32[2]`` raw keys.

  Example:
    >>> import jax
    >>> from hypothesis import given, settings
    >>> from jdrop.testing import keys
    >>> @settings(max_examples=10, deadline=None)
    ... @given(keys())
    ... def test_key(key):
    ...   typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    ...   assert key.shape == () if typed else key.shape == (2,)
    >>> test_key()
  """
  fn = "jdrop.testing.keys"
  if isinstance(kinds, str) or not kinds or any(kind not in KEY_KINDS for kind in kinds):
    raise errors.value_error(
      fn,
      "kinds",
      f"must be a non-empty sequence drawn from {KEY_KINDS}",
      kinds,
      "Pass e.g. kinds=('typed',) for typed keys only.",
    )
  if isinstance(impls, str) or not impls:
    raise errors.value_error(
      fn, "impls", "must be a non-empty sequence of names", impls, "Pass e.g. impls=('rbg',)."
    )
  strategies = []
  if "typed" in kinds:
    for impl in impls:
      try:
        shape = _key_data_shape(impl)
      except (TypeError, ValueError) as err:
        raise errors.value_error(
          fn,
          "impls",
          "must name PRNG implementations known to jax.random",
          impl,
          "Use e.g. 'threefry2x32', 'rbg' or 'unsafe_rbg'.",
        ) from err
      strategies.append(
        _key_words(shape).map(functools.partial(jax.random.wrap_key_data, impl=impl))
      )
  if "raw" in kinds:
    strategies.append(_key_words(_key_data_shape("threefry2x32")).map(jnp.asarray))
  return st.one_of(strategies)


def _key_words(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
  """Arbitrary ``uint32`` key data of ``shape``."""
  words = st.integers(0, 2**32 - 1)
  return st.lists(words, min_size=math.prod(shape), max_size=math.prod(shape)).map(
    lambda ws: np.asarray(ws, np.uint32).reshape(shape)
  )


# ----------------------------------------------------------------------------
# Rates.


def rates(
  *, include_edges: bool = True, min_rate: float = 0.0, max_rate: float = 1.0
) -> st.SearchStrategy[float]:
  """A strategy for drop rates (Python floats) in ``[min_rate, max_rate]``.

  With ``include_edges`` (the default) it favours the values that break dropout:
  ``min_rate`` and ``max_rate`` themselves (0 and 1 by default), tiny rates down to
  ``5e-324`` (the keep probability rounds to exactly 1 in float32), rates within an
  ulp of 1 (a keep probability of ``2**-53``), simple fractions, and otherwise any
  float in the interval. Without it, rates come from the open interval
  ``(min_rate, max_rate)``, so neither end (e.g. rate 1, where ``x / (1 - rate)`` is
  undefined) is drawn.

  Args:
    include_edges: whether to draw the edge values above, the ends included.
    min_rate: the smallest rate, in [0, 1].
    max_rate: the largest rate, in [0, 1]; e.g. ``max_rate=0.99`` for
      :func:`jdrop.gaussian_dropout`, which rejects rate 1.

  Returns:
    A strategy of floats.

  Example:
    >>> from hypothesis import given, settings
    >>> from jdrop.testing import rates
    >>> @settings(max_examples=20, deadline=None)
    ... @given(rates(max_rate=0.5))
    ... def test_rate(rate):
    ...   assert 0.0 <= rate <= 0.5
    >>> test_rate()
  """
  fn = "jdrop.testing.rates"
  for arg, value in (("min_rate", min_rate), ("max_rate", max_rate)):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise errors.type_error(fn, arg, "must be a float", value, f"Pass e.g. {arg}=0.5.")
    if not 0.0 <= value <= 1.0:
      raise errors.value_error(
        fn, arg, "must be a drop probability in [0, 1]", value, f"Pass e.g. {arg}=0.5."
      )
  min_rate, max_rate = float(min_rate), float(max_rate)
  if min_rate > max_rate or (min_rate == max_rate and not include_edges):
    raise errors.value_error(
      fn,
      "max_rate",
      f"must be {'at least' if include_edges else 'above'} min_rate={min_rate}",
      max_rate,
      "Swap or widen the bounds.",
    )
  if not include_edges:
    return st.floats(min_rate, max_rate, exclude_min=True, exclude_max=True)
  edges = (min_rate, max_rate, 0.0, 1.0, *_TINY_RATES, *_NEAR_ONE_RATES, *_SIMPLE_RATES)
  in_range = sorted({rate for rate in edges if min_rate <= rate <= max_rate})
  return st.one_of(st.sampled_from(in_range), st.floats(min_rate, max_rate))


# ----------------------------------------------------------------------------
# Arrays.


def _numpy_width(dtype: np.dtype) -> Literal[16, 32, 64] | None:
  """The ``width`` Hypothesis's ``floats`` takes for ``dtype``, None if NumPy lacks it."""
  widths: dict[np.dtype, Literal[16, 32, 64]] = {
    np.dtype(np.float16): 16,
    np.dtype(np.float32): 32,
    np.dtype(np.float64): 64,
  }
  return widths.get(dtype)


def _inward(bound: float, dtype: np.dtype, *, up: bool) -> float:
  """``bound`` rounded to a finite value of ``dtype``, towards the inside of the interval."""
  value = np.asarray(bound, np.float64).astype(dtype)
  if up and float(value) < bound:
    value = np.nextafter(value, np.asarray(np.inf, dtype))
  elif not up and float(value) > bound:
    value = np.nextafter(value, np.asarray(-np.inf, dtype))
  return float(value)


def _finite_elements(
  dtype: np.dtype, lo: float, hi: float, allow_subnormal: bool
) -> tuple[st.SearchStrategy[float], np.dtype]:
  """Finite elements in ``[lo, hi]`` for ``dtype``, and the NumPy dtype to draw them in.

  Half the draws come from ``[-10, 10]`` (when it meets the bounds), where activations
  bend; the rest from the whole range, where overflow and underflow live. NumPy's own
  floats are drawn at their width. Other floats (bfloat16) are drawn as float32 and
  rounded once to ``dtype``; the bounds are representable in ``dtype`` and rounding is
  monotone, so they still hold.
  """
  width = _numpy_width(dtype)

  def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(
      lo,
      hi,
      allow_nan=False,
      allow_infinity=False,
      allow_subnormal=allow_subnormal,
      width=width or 32,
    )

  elements = floats(lo, hi)
  near_lo, near_hi = max(lo, -_MODERATE), min(hi, _MODERATE)
  if near_lo < near_hi and (near_lo, near_hi) != (lo, hi):
    elements = st.one_of(floats(near_lo, near_hi), elements)
  return elements, (dtype if width else np.dtype(np.float32))


def _edge_values(
  dtype: np.dtype,
  lo: float,
  hi: float,
  infs: Sequence[float],
  allow_nan: bool,
  allow_subnormal: bool,
) -> list[float]:
  """The values of ``dtype`` in ``[lo, hi]`` that break numerics, then ``infs`` and NaN."""
  finfo = jnp.finfo(dtype)
  magnitudes = [0.0, 1.0, float(finfo.tiny), float(finfo.max)]
  if allow_subnormal:
    magnitudes.append(float(finfo.smallest_subnormal))
  values = [v for m in magnitudes for v in (m, -m) if lo <= v <= hi]
  values += infs
  if allow_nan:
    values.append(math.nan)
  return values


@st.composite
def _arrays(
  draw: st.DrawFn,
  dtype: np.dtype,
  shapes: st.SearchStrategy[tuple[int, ...]],
  elements: st.SearchStrategy[float],
  storage: np.dtype,
  edges: Sequence[float],
) -> jax.Array:
  """An array of ``elements``, with some of ``edges`` written over random positions."""
  shape = draw(shapes)
  array = np.array(draw(hnp.arrays(storage, shape, elements=elements)), dtype=storage)
  if edges and array.size:
    position = st.integers(0, array.size - 1)
    for index, value in draw(st.lists(st.tuples(position, st.sampled_from(edges)))):
      array.reshape(-1)[index] = value
  if dtype == np.float64 and not jax.config.jax_enable_x64:  # type: ignore[attr-defined]
    raise errors.value_error(
      "jdrop.testing.float_arrays",
      "dtypes",
      "contains float64 while JAX's 64-bit types are disabled",
      dtype,
      "Draw inside `with jax.enable_x64(True):` or set jax.config.update('jax_enable_x64', True).",
    )
  return jnp.asarray(array.astype(dtype))


def float_arrays(
  *,
  dtypes: Sequence[DTypeLike] = DEFAULT_DTYPES,
  shapes: tuple[int, ...] | st.SearchStrategy[tuple[int, ...]] | None = None,
  min_dims: int = 0,
  max_dims: int = 3,
  min_side: int = 1,
  max_side: int = 4,
  allow_inf: bool = True,
  allow_nan: bool = True,
  allow_subnormal: bool = True,
  min_value: float | None = None,
  max_value: float | None = None,
) -> st.SearchStrategy[jax.Array]:
  """A strategy for floating-point JAX arrays, low precision and special values included.

  Elements come from Hypothesis's ``floats`` at the dtype's precision (``bfloat16``
  values are drawn as float32 and rounded once), and then some positions are
  overwritten with the dtype's edge values: zeros of both signs, ``±1``, the
  smallest normal, the smallest subnormal, the largest finite value, ``±inf`` and
  ``NaN`` (those allowed and within the bounds). XLA on CPU flushes subnormals to
  zero in arithmetic, so a test of exact equality after arithmetic may need
  ``allow_subnormal=False``. Every ``jax.jit`` compiles once per shape and dtype, so
  keep ``shapes`` to a few values in tests that jit.

  Args:
    dtypes: the floating dtypes to draw, default float16, bfloat16 and float32.
      float64 needs JAX's 64-bit mode at draw time (``jax.enable_x64``).
    shapes: one shape, a strategy of shapes (e.g. ``st.sampled_from([(8,), (2, 4)])``),
      or None for any shape with ``min_dims..max_dims`` axes of ``min_side..max_side``.
    min_dims: the fewest axes when ``shapes`` is None.
    max_dims: the most axes when ``shapes`` is None.
    min_side: the shortest axis when ``shapes`` is None.
    max_side: the longest axis when ``shapes`` is None.
    allow_inf: whether elements may be infinite (``-inf`` only without ``min_value``,
      ``inf`` only without ``max_value``).
    allow_nan: whether elements may be NaN.
    allow_subnormal: whether elements may be subnormal.
    min_value: the smallest element, rounded up to the dtype.
    max_value: the largest element, rounded down to the dtype.

  Returns:
    A strategy of ``jax.Array``.

  Example:
    >>> import jax.numpy as jnp
    >>> from hypothesis import given, settings
    >>> from jdrop.testing import float_arrays
    >>> @settings(max_examples=20, deadline=None)
    ... @given(float_arrays(shapes=(3,), allow_nan=False, min_value=0.0))
    ... def test_nonnegative(x):
    ...   assert x.shape == (3,) and x.dtype in (jnp.float16, jnp.bfloat16, jnp.float32)
    ...   assert bool((x >= 0).all())
    >>> test_nonnegative()
  """
  fn = "jdrop.testing.float_arrays"
  if isinstance(dtypes, (str, np.dtype, type)) or not dtypes:
    raise errors.type_error(
      fn, "dtypes", "must be a non-empty sequence of dtypes", dtypes, "Pass e.g. (jnp.float32,)."
    )
  resolved = []
  for dtype in dtypes:
    try:
      dtype = np.dtype(dtype)
    except TypeError as err:
      raise errors.type_error(
        fn, "dtypes", "must hold dtypes", dtype, "Pass e.g. dtypes=(jnp.bfloat16,)."
      ) from err
    if not jnp.issubdtype(dtype, jnp.floating):
      raise errors.type_error(
        fn, "dtypes", "must hold floating dtypes", dtype, "Pass e.g. dtypes=(jnp.float32,)."
      )
    resolved.append(dtype)
  for arg, value in (("min_value", min_value), ("max_value", max_value)):
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if value is not None and not (number and math.isfinite(value)):
      raise errors.value_error(fn, arg, "must be a finite number or None", value, "Pass e.g. 0.0.")
  if min_value is not None and max_value is not None and min_value > max_value:
    raise errors.value_error(
      fn, "max_value", f"must be at least min_value={min_value}", max_value, "Swap the bounds."
    )
  if shapes is None:
    shapes = hnp.array_shapes(
      min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )
  elif not isinstance(shapes, st.SearchStrategy):
    shapes = st.just(tuple(shapes))
  per_dtype = []
  for dtype in resolved:
    finfo = jnp.finfo(dtype)
    lo = -float(finfo.max) if min_value is None else _inward(min_value, dtype, up=True)
    hi = float(finfo.max) if max_value is None else _inward(max_value, dtype, up=False)
    elements, storage = _finite_elements(dtype, lo, hi, allow_subnormal)
    infs = [
      inf
      for inf, unbounded in ((math.inf, max_value is None), (-math.inf, min_value is None))
      if allow_inf and unbounded
    ]
    edges = _edge_values(dtype, lo, hi, infs, allow_nan, allow_subnormal)
    per_dtype.append(_arrays(dtype, shapes, elements, storage, edges))
  return st.one_of(per_dtype)


# ----------------------------------------------------------------------------
# Activations.


def activations(*, elementwise_only: bool = True) -> st.SearchStrategy[str]:
  """A strategy for activation names registered in :mod:`jdrop.activations`.

  The names are read when this function is called, so activations registered
  before the call (with :func:`jdrop.activations.register`) are included.

  Args:
    elementwise_only: draw only names whose ``jdrop.activations.info(name).elementwise``
      is True (excluding e.g. softmax), so that both orders of dropout can share a mask.

  Returns:
    A strategy of canonical names; ``jdrop.activations.get(name)`` gives the function.

  Example:
    >>> from hypothesis import given, settings
    >>> import jdrop
    >>> from jdrop.testing import activations
    >>> @settings(max_examples=10, deadline=None)
    ... @given(activations())
    ... def test_name(name):
    ...   assert jdrop.activations.info(name).elementwise
    >>> test_name()
  """
  names = [
    name
    for name in _activations.names()
    if not elementwise_only or _activations.info(name).elementwise
  ]
  if not names:
    raise errors.value_error(
      "jdrop.testing.activations",
      "elementwise_only",
      "leaves no registered activation to draw",
      elementwise_only,
      "Register one with jdrop.activations.register.",
    )
  return st.sampled_from(names)
