"""The checker's float-level finding: do both orders of dropout agree bit for bit?

The exact-math verdicts of :func:`jdrop.check` hold over the reals. This module
asks the separate, practical question: under ``jit`` on the current backend, in
float32 and in bfloat16, do pre-activation dropout ``f(apply_mask(x, m, rate=r))``
and post-activation dropout ``apply_mask(f(x), m, rate=r)`` give the same bits
for the same mask ``m``? Where they do not, the finding reports the worst
disagreement in units in the last place (ulps) and an input that shows it.

Only ``f`` is compiled per function (one program for both dtypes), and that
program is cached per ``(f, shape, rates)``, so asking again about the same
function object costs no trace and no compile.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdrop._src import errors
from jdrop._src import masks
from jdrop._src.checker.verdict import DtypeFinding
from jdrop._src.checker.verdict import FloatFinding
from jdrop._src.dropout import masked

DEFAULT_RATES: tuple[float, ...] = (0.1, 0.3, 0.5, 0.9)
"""The rates compared when ``rate=None``."""

DTYPES: tuple[str, ...] = ("float32", "bfloat16")
"""The dtypes compared, in the order of :attr:`FloatFinding.dtypes`."""

_FN = "jdrop.check"
_CACHE_SIZE = 128

CALLBACKS = frozenset({"debug_callback", "debug_print", "pure_callback", "io_callback"})
"""Primitives that call back into Python: the comparison skips a function with one."""


def skipped(note: str) -> FloatFinding:
  """The finding of a comparison that was not run, saying why."""
  return FloatFinding(jax.default_backend(), (), note)


# ----------------------------------------------------------------------------
# The sample: inputs and masks (numpy, deterministic, built once per shape).


def sample_scalars() -> np.ndarray:
  """The fixed float64 sample of input values, before packing and casting.

  A grid of 2001 points over [-8, 8] (step 0.008, with an exact 0), then
  ``±1e-30, ±1e-3, ±0.1, ±100, ±1e4``, then 128 normals (64 standard, 64 with
  standard deviation 3) from a fixed seed.
  """
  grid = np.linspace(-8.0, 8.0, 2001)
  grid[1000] = 0.0
  magnitudes = np.array([1e-30, 1e-3, 0.1, 100.0, 1e4])
  special = np.stack([magnitudes, -magnitudes], axis=1).ravel()
  rng = np.random.default_rng(20240531)
  normals = rng.standard_normal(128) * np.repeat([1.0, 3.0], 64)
  return np.concatenate([grid, special, normals])


@functools.lru_cache(maxsize=32)
def _sample(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
  """``(x, masks)``: the sample packed into ``B`` rows of ``shape`` (cycled to fill) and
  the keep masks, shaped ``(B, *shape)`` (float64) and ``(3, B, *shape)`` (bool)."""
  scalars = sample_scalars()
  size = math.prod(shape)
  rows = max(1, -(-scalars.size // size)) if size else 1
  x = np.resize(scalars, rows * size).reshape((rows, *shape))
  random = np.random.default_rng(7).random((rows, *shape)) < 0.5
  keep = np.stack([np.ones_like(random), random, ~random])
  x.flags.writeable = False
  keep.flags.writeable = False
  return x, keep


# ----------------------------------------------------------------------------
# The compiled programs.
#
# Only ``f`` changes from one call to the next, so only ``f`` is compiled per call:
# one program maps ``f`` over the rows of both dtypes. The dropout on either side of
# it does not depend on ``f`` (nor on the rate, a runtime scalar): it is one shared
# program per (shape, dtype), compiled once. The pre-order inputs are computed once
# per (shape, rates) and kept on the device. XLA's compile time grows with every
# fused loop it emits (bfloat16 conversions are the dearest), so this keeps the
# per-function program to one loop per dtype.


@jax.jit
def _scale(v: jax.Array, keep: jax.Array, q: jax.Array) -> jax.Array:
  """``apply_mask(v, m, rate=r)`` for every mask ``m`` in ``keep``: ``(3, B, *shape)``.

  ``q`` is ``masks.keep_probability(r)``, the keep probability :func:`apply_mask`
  computes for a concrete ``rate=r`` (``1 - r`` rounded once from double
  precision), and this is the call :func:`apply_mask` makes with it.
  """
  return masked(jnp.broadcast_to(v, keep.shape), keep, q)


@functools.lru_cache(maxsize=32)
def _keep_probabilities(rates: tuple[float, ...]) -> tuple[jax.Array, ...]:
  return tuple(masks.keep_probability(r) for r in rates)


@functools.lru_cache(maxsize=32)
def _lanes(shape: tuple[int, ...], rates: tuple[float, ...]) -> tuple[jax.Array, ...]:
  """The rows ``f`` is mapped over, per dtype in :data:`DTYPES` order, on the device.

  ``((1 + 3 R) B, *shape)``: first the ``B`` rows of ``x`` (so that ``f(x)`` comes
  out first), then ``apply_mask(x, m, rate=r)`` for each rate ``r`` and mask ``m``.
  """
  x, keep = _sample(shape)
  out = []
  for name in DTYPES:
    xd = x.astype(jnp.dtype(name))
    blocks = [xd[None]] + [np.asarray(_scale(xd, keep, q)) for q in _keep_probabilities(rates)]
    rows = np.concatenate(blocks)  # (1 + 3 R, B, *shape)
    out.append(jnp.asarray(rows.reshape((rows.shape[0] * rows.shape[1], *shape))))
  return tuple(out)


class _Program:
  """The comparison for one ``(f, shape, rates)``; ``run()`` gives both orders per dtype.

  The first run maps ``f`` over every dtype in one program; if tracing or running it
  fails (for example ``f`` cannot trace in bfloat16), each dtype gets its own program
  and a dtype that still fails gives ``None``. Which case holds is remembered.
  """

  def __init__(
    self, f: Callable[[jax.Array], jax.Array], shape: tuple[int, ...], rates: tuple[float, ...]
  ) -> None:
    self.shape = shape
    self.rates = rates
    x, keep = _sample(shape)
    self.inputs = tuple(x.astype(jnp.dtype(name)) for name in DTYPES)
    self.keep = keep
    self._keep_device = jnp.asarray(keep)
    mapped = jax.vmap(f)
    self._jitted = jax.jit(lambda *lanes: tuple(mapped(lane) for lane in lanes))
    self._split: tuple[bool, ...] | None = None  # per dtype: traced and ran

  def run(self) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """``(pre, post)`` per dtype in :data:`DTYPES` order, or ``None`` where ``f`` failed.

    Both are shaped ``(R, 3, B, *shape)``: rate, mask, row.
    """
    lanes = _lanes(self.shape, self.rates)
    if self._split is None:
      try:
        return [self._orders(y) for y in self._jitted(*lanes)]
      except Exception:
        self._split = tuple(self._one(lane) is not None for lane in lanes)
    return [self._one(lane) if ok else None for lane, ok in zip(lanes, self._split, strict=True)]

  def _one(self, lanes: jax.Array) -> tuple[np.ndarray, np.ndarray] | None:
    try:
      return self._orders(self._jitted(lanes)[0])
    except Exception:
      return None

  def _orders(self, y: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Splits ``f`` of the lanes into ``(pre, post)``, masking ``f(x)`` for ``post``."""
    rows = self.keep.shape[1]
    total = rows * (1 + self.keep.shape[0] * len(self.rates))
    if y.shape != (total, *self.shape) or not jnp.issubdtype(y.dtype, jnp.floating):
      raise TypeError(f"f returned {jax.typeof(y)} for rows of shape {self.shape}")
    y = np.asarray(y)
    fx = y[:rows]
    post = np.stack(
      [np.asarray(_scale(fx, self._keep_device, q)) for q in _keep_probabilities(self.rates)]
    )
    return y[rows:].reshape(post.shape), post


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _cached_program(
  f: Callable[[jax.Array], jax.Array], shape: tuple[int, ...], rates: tuple[float, ...]
) -> _Program:
  return _Program(f, shape, rates)


def _program(
  f: Callable[[jax.Array], jax.Array], shape: tuple[int, ...], rates: tuple[float, ...]
) -> _Program:
  """The cached program for ``(f, shape, rates)``; uncached if ``f`` is not hashable."""
  try:
    hash(f)
  except TypeError:
    return _Program(f, shape, rates)
  return _cached_program(f, shape, rates)


# ----------------------------------------------------------------------------
# Comparing bits.


def _ordered(values: np.ndarray) -> np.ndarray:
  """The bits of ``values`` on an ordered integer line (float64): consecutive floats
  are 1 apart, and ``+0`` and ``-0`` both map to 0."""
  bits = values.dtype.itemsize * 8
  signed = values.view(np.dtype(f"int{bits}")).astype(np.int64)
  magnitude = signed & np.int64(2 ** (bits - 1) - 1)
  return np.where(signed < 0, -magnitude, magnitude).astype(np.float64)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Elementwise distance in ulps between two float arrays of one dtype, as float64.

  ``+0`` and ``-0`` are equal (distance 0: they are the same value), NaN equals
  NaN whatever its payload, and the distance is ``inf`` where exactly one side is
  NaN, or where the two differ and either is infinite.
  """
  a = np.asarray(a)
  b = np.asarray(b)
  wide_a = a.astype(np.float64)
  wide_b = b.astype(np.float64)
  nan_a, nan_b = np.isnan(wide_a), np.isnan(wide_b)
  distance = np.abs(_ordered(a) - _ordered(b))
  infinite = (np.isinf(wide_a) | np.isinf(wide_b)) & (distance != 0)
  distance = np.where(infinite | (nan_a != nan_b), np.inf, distance)
  return np.where(nan_a & nan_b, 0.0, distance)


def _dtype_finding(
  dtype: str,
  outputs: tuple[np.ndarray, np.ndarray] | None,
  x: np.ndarray,
  keep: np.ndarray,
  rates: tuple[float, ...],
) -> DtypeFinding:
  num_samples = len(rates) * keep.size
  if outputs is None:
    return DtypeFinding(dtype, False, math.nan, None, None, None, num_samples)
  pre, post = outputs
  distance = ulp_distance(pre, post)
  if not distance.size or not distance.max() > 0:
    return DtypeFinding(dtype, True, 0.0, None, None, None, num_samples)
  worst = int(np.argmax(distance))
  r, k, *unit = np.unravel_index(worst, distance.shape)
  return DtypeFinding(
    dtype=dtype,
    bit_identical=False,
    max_ulps=float(distance.ravel()[worst]),
    worst_x=float(x[tuple(unit)]),
    worst_rate=rates[r],
    worst_mask=bool(keep[(k, *unit)]),
    num_samples=num_samples,
  )


# ----------------------------------------------------------------------------
# The finding.


def _check_rates(rate: Any) -> tuple[float, ...]:
  if rate is None:
    return DEFAULT_RATES
  if masks.is_traced(rate):
    raise errors.type_error(
      _FN,
      "rate",
      "must be a concrete number for the float-level finding",
      errors.Described(f"a traced {jax.typeof(rate)}"),
      "Pass a Python float such as rate=0.1.",
    )
  masks.check_rate(_FN, rate)
  return (float(rate),)


def float_level(
  f: Callable[[jax.Array], jax.Array], shape: Sequence[int], *, rate: float | None = None
) -> FloatFinding:
  """Compares both orders of dropout bit for bit in float32 and bfloat16 under ``jit``.

  With the library's own dropout (:func:`jdrop.apply_mask`) and the same keep mask
  ``m`` on both sides, compares ``pre = f(apply_mask(x, m, rate=r))`` with
  ``post = apply_mask(f(x), m, rate=r)`` on:

  * inputs: :func:`sample_scalars` (a grid over [-8, 8] with 0, ``±1e-30``,
    ``±1e-3``, ``±0.1``, ``±100``, ``±1e4`` and fixed-seed normals), cycled into
    ``B`` rows of ``shape`` and cast to each dtype;
  * masks, per row: all kept, a fixed pseudo-random mask and its complement, so
    every input value is seen kept and dropped;
  * rates: ``rate``, or every rate in :data:`DEFAULT_RATES` when ``rate`` is None.

  ``f`` is compiled once per ``(f, shape, rates)``, mapped over every row of both
  dtypes in one ``jax.jit`` program, and the program is cached by the identity of
  ``f`` (an unhashable ``f`` is compiled afresh each call). The dropout on either
  side is :func:`jdrop.apply_mask`'s own jitted code, with the keep probability it
  computes for ``rate=r`` passed as a runtime scalar, compiled apart from ``f``: the
  bits are those of a program whose rate is traced, or whose dropout and ``f`` are
  compiled apart. With a constant rate inside the same ``jit`` as ``f``, XLA may
  fold constants across the two (``apply_mask(x) * 3`` becomes ``x * (3 / q)``), so
  such a program can round differently from this finding.

  Bits are compared as values: NaN matches NaN whatever its payload, and ``+0``
  matches ``-0`` (they are equal values). The distance between two floats is how
  many representable floats apart they are (ulps, of ``f``'s output dtype); it is
  ``inf`` where exactly one side is NaN, or where they differ and one is infinite.

  If ``f`` cannot be traced or run in a dtype (some user code cannot handle
  bfloat16), nothing is raised: that dtype's finding has ``bit_identical=False``,
  ``max_ulps=nan`` and ``worst_x``, ``worst_rate``, ``worst_mask`` all ``None``.

  Args:
    f: maps an array of shape ``shape`` to one of the same shape (and dtype);
      traced with float32 and with bfloat16 inputs.
    shape: the input shape ``f`` takes.
    rate: one drop rate in [0, 1] (a concrete number), or None for the defaults.

  Returns:
    ``FloatFinding(jax.default_backend(), (float32 finding, bfloat16 finding))``;
    each finding's ``num_samples`` counts the compared elements (input, mask, rate).

  Example:
    >>> import jax
    >>> finding = float_level(jax.nn.relu, (4,))
    >>> [d.bit_identical for d in finding.dtypes]
    [True, True]
  """
  rates = _check_rates(rate)
  shape = masks.check_shape(_FN, shape)
  program = _program(f, shape, rates)
  outputs = program.run()
  findings = tuple(
    _dtype_finding(name, out, xi, program.keep, rates)
    for name, out, xi in zip(DTYPES, outputs, program.inputs, strict=True)
  )
  return FloatFinding(jax.default_backend(), findings)
