r"""Monte-Carlo studies of the two orders of dropout, and the exact references they check.

* :func:`compare_orders` runs both orders, ``pre = f(D(x))`` and ``post = D(f(x))``, on the
  same ``num_masks`` masks and returns per-element means, variances and standard errors, the
  eval-mode output ``f(x)``, the share of masks on which the orders disagree, and the largest
  disagreement. Mask ``i`` is ``keep_mask(fold_in(key, i), x.shape, rate=rate)``, so a result
  depends on the key and the mask indices only: not on the chunk size, the number of devices
  or the number of processes (up to the float32 rounding of a different merge order).
* :func:`exact_moments` gives the same statistics in closed form for an elementwise ``f``
  (and by summing over every mask for a small input of any other ``f``);
  :func:`gaussian_shift` integrates them over ``x ~ N(mu, sigma^2)`` by Gauss-Hermite
  quadrature; :func:`variance_shift` turns either (or a Monte-Carlo result) into the
  train-versus-eval mean shift and variance ratio of a layer (Li et al., CVPR 2019).
* :func:`initialize` starts JAX's distributed runtime for a multi-process study, with a
  rendezvous that fails fast, on one readable line, where ``jax.distributed.initialize``
  would hang or abort the process.

How :func:`compare_orders` runs: masks are processed in chunks of ``chunk_size`` masks per
device. Each device draws its masks with ``vmap``, applies both orders, and reduces the
chunk to a count, a mean and a sum of squared deviations ``M2`` of ``f(D(x))`` (one pass
over ``y - shift``, with the exact mean of :func:`exact_moments` as the shift), which it
merges into its running totals with Chan et al.'s parallel update

.. math::
   n = n_a + n_b, \quad \delta = \bar y_b - \bar y_a, \quad
   \bar y = \bar y_a + \delta \frac{n_b}{n}, \quad
   M_2 = M_{2,a} + M_{2,b} + \delta^2 \frac{n_a n_b}{n},

inside one ``lax.fori_loop``, so memory does not grow with ``num_masks``. ``D(f(x))`` takes
two values per element, ``f(x)/q`` and 0, so its moments follow exactly from how often each
element was kept (integer counts). The mask axis is sharded over a
:class:`jax.sharding.Mesh` of ``jax.devices()`` with ``jax.shard_map``; the devices' totals
are merged with the same update at the end. One compiled program serves every
``num_masks``, ``rate`` and ``x`` of a given shape: a partial last chunk masks out its
surplus indices instead of taking a new shape.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import math
import re
import socket
import time
import warnings
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec
from jax.typing import ArrayLike

from jdrop._src import activations
from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks
from jdrop._src import order

_PREFIX = "jdrop.montecarlo."
_AXIS = "masks"  # the mesh axis that the mask index is sharded along
MAX_MASKS = 2**31 - 1  # mask indices are uint32 and counts int32
DEFAULT_ULPS = 4  # default rtol: 4 machine epsilons of x's dtype
# Default chunk: about this many elements per device and step, and at most this many masks.
# CPUs want a chunk that stays in cache; a GPU wants thousands of masks per step (measured on
# an H200: 4096 masks of 4096 elements per step run 12x faster than 64).
_CHUNK = {"cpu": (2**18, 2**12)}
_ACCELERATOR_CHUNK = (2**24, 2**16)
_PROGRESS_CALLS = 100  # with a progress callback, the loop is split into this many calls
MAX_DEGREE = 256  # numpy's Gauss-Hermite nodes overflow beyond about 300
DEFAULT_DEGREE = 128
_TAIL_SIGMAS = 12.0  # piecewise quadrature covers mu +- 12 sigma (tail mass 4e-33)
_QUADRATURE_TOLERANCE = 1e-6  # gaussian_shift warns above this estimated relative error
MAX_TIMEOUT = 7 * 24 * 3600  # seconds, for initialize
MAX_ENUMERATED_SIZE = 16  # exact_moments of a non-elementwise f sums over 2**16 masks at most


class Moments(NamedTuple):
  """Per-element statistics of one order over the masks.

  ``var`` is the unbiased sample variance (NaN for a single mask), ``stderr`` the standard
  error of ``mean``, ``sqrt(var / num_masks)``. Exact references have ``stderr = 0``.
  """

  mean: jax.Array
  var: jax.Array
  stderr: jax.Array


class Comparison(NamedTuple):
  """What :func:`compare_orders` returns.

  Attributes:
    pre: statistics of ``f(D(x))`` over the masks.
    post: statistics of ``D(f(x))`` over the same masks.
    reference: ``f(x)``, what the network computes in eval mode.
    mismatch_fraction: the share of masks on which some element has
      ``|pre - post| > rtol * max(|pre|, |post|)`` (equal values, inf included, and NaN on
      both sides agree).
    max_abs_diff: the largest ``|pre - post|`` over every mask and element (``inf`` where
      one side is NaN, 0 where both are).
    num_masks: the number of masks.
    rate: the drop rate.
    rtol: the relative tolerance used for ``mismatch_fraction``.
  """

  pre: Moments
  post: Moments
  reference: jax.Array
  mismatch_fraction: float
  max_abs_diff: float
  num_masks: int
  rate: float
  rtol: float


class Exact(NamedTuple):
  """Exact per-element statistics of both orders (:func:`exact_moments`); ``stderr = 0``."""

  pre: Moments
  post: Moments
  reference: jax.Array


class Shift(NamedTuple):
  """Train-mode against eval-mode statistics of one order, per unit."""

  train_mean: jax.Array
  train_var: jax.Array
  eval_mean: jax.Array
  eval_var: jax.Array

  @property
  def mean_shift(self) -> jax.Array:
    """``train_mean - eval_mean``."""
    return self.train_mean - self.eval_mean

  @property
  def var_ratio(self) -> jax.Array:
    """``train_var / eval_var``, Li et al.'s variance shift."""
    return self.train_var / self.eval_var


class OrderShifts(NamedTuple):
  """The :class:`Shift` of pre-activation and of post-activation dropout."""

  pre: Shift
  post: Shift


# ----------------------------------------------------------------------------
# Validation.


def _check_not_traced(fn: str, **values: Any) -> None:
  for name, value in values.items():
    if masks.is_traced(value):
      raise errors.type_error(
        fn,
        name,
        "must be a concrete value",
        errors.Described(f"a traced {jax.typeof(value)}"),
        "This function runs its own compiled loop; call it outside jit, vmap and grad.",
      )


def _check_count(fn: str, arg: str, value: Any, *, upper: int, example: str) -> int:
  """``value`` as a Python int in [1, upper], or a clear error."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise errors.type_error(
      fn, arg, "must be a positive integer", errors.short(value), f"Pass e.g. {arg}={example}."
    )
  if not 1 <= value <= upper:
    raise errors.value_error(
      fn,
      arg,
      f"must be a positive integer of at most {upper}",
      int(value),
      f"Pass e.g. {arg}={example}.",
    )
  return int(value)


def _check_real(fn: str, arg: str, value: Any, *, positive: bool = False) -> float:
  """``value`` as a finite (positive, or non-negative) Python float, or a clear error."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
    raise errors.type_error(
      fn, arg, "must be a real number", errors.short(value), f"Pass e.g. {arg}=1e-6."
    )
  number = float(value)
  if not math.isfinite(number) or number < 0 or (positive and number == 0):
    kind = "positive" if positive else "non-negative"
    raise errors.value_error(
      fn, arg, f"must be a finite {kind} number", value, f"Pass e.g. {arg}=1e-6."
    )
  return number


def _check_devices(fn: str, devices: Any) -> tuple[jax.Device, ...]:
  if devices is None:
    return tuple(jax.devices())
  devices = tuple(devices) if isinstance(devices, Sequence) else ()
  if not devices or not all(isinstance(d, jax.Device) for d in devices):
    raise errors.type_error(
      fn,
      "devices",
      "must be a non-empty sequence of jax.Device",
      errors.short(devices),
      "Pass e.g. devices=jax.devices()[:2], or leave it out to use every device.",
    )
  if len(set(devices)) != len(devices):
    raise errors.value_error(
      fn, "devices", "must not repeat a device", devices, "List each device once."
    )
  return devices


def default_rtol(dtype: Any) -> float:
  """The default ``rtol`` of :func:`compare_orders`: ``DEFAULT_ULPS`` epsilons of ``dtype``.

  4 epsilons of float32 (4.8e-7) let the one-ulp differences of an exactly homogeneous
  activation such as leaky relu (``0.01 * (x / q)`` against ``(0.01 * x) / q``) count as
  agreement, while any real difference (``tanh``, ``gelu``, ``f(0) != 0``) counts.

  >>> import jax.numpy as jnp
  >>> from jdrop import montecarlo
  >>> montecarlo.default_rtol(jnp.float32), montecarlo.default_rtol(jnp.bfloat16)
  (4.76837158203125e-07, 0.03125)
  """
  return float(DEFAULT_ULPS * jnp.finfo(dtype).eps)


def representable(value: float, dtype: Any) -> bool:
  """Whether ``value`` is finite once rounded to ``dtype`` (1e39 is not, in float32)."""
  with np.errstate(over="ignore"):
    return bool(np.isfinite(np.asarray(value, dtype)))


# ----------------------------------------------------------------------------
# Chunked, sharded accumulation.


class _Totals(NamedTuple):
  """Running totals of one device (or, after the final merge, of all of them)."""

  count: jax.Array  # int32: masks seen
  pre_mean: jax.Array
  pre_m2: jax.Array  # sum of squared deviations from the mean
  kept: jax.Array  # int32 per element: masks that kept it (post's sufficient statistic)
  mismatches: jax.Array  # int32: masks on which the orders disagree
  max_diff: jax.Array


def _merge(a: _Totals, b: _Totals) -> _Totals:
  """The totals of two disjoint sets of masks: chunks into a device, devices into one.

  The mean and ``M2`` follow Chan et al.'s parallel update; an empty ``b`` is a no-op.
  """
  count = a.count + b.count
  fraction = (b.count / jnp.maximum(count, 1)).astype(a.pre_mean.dtype)
  delta = b.pre_mean - a.pre_mean
  mean = jnp.where(
    jnp.isfinite(delta),
    a.pre_mean + delta * fraction,
    a.pre_mean * (1 - fraction) + b.pre_mean * fraction,  # inf and finite: inf, not NaN
  )
  m2 = a.pre_m2 + b.pre_m2 + delta * delta * (a.count.astype(mean.dtype) * fraction)
  nonempty = b.count > 0
  return _Totals(
    count,
    jnp.where(nonempty, mean, a.pre_mean),
    jnp.where(nonempty, m2, a.pre_m2),
    a.kept + b.kept,
    a.mismatches + b.mismatches,
    jnp.maximum(a.max_diff, b.max_diff),
  )


def _sum_rows(values: jax.Array) -> jax.Array:
  """The sum over axis 0, pairwise: XLA:CPU fuses it into one loop, where ``jnp.sum(axis=0)``
  is about twice as slow, and the rounding error grows with log2 of the rows, not linearly."""
  while values.shape[0] > 1:
    half = values.shape[0] // 2
    values = jnp.concatenate([values[:half] + values[half : 2 * half], values[2 * half :]])
  return values[0]


def _disagreement(
  pre: jax.Array, post: jax.Array, rtol: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """The number of valid masks (rows) on which the orders disagree beyond ``rtol``, and
  the largest ``|pre - post|`` on them.

  Equal values (inf included) and NaN on both sides agree; NaN on one side is a gap of inf.
  """
  same = (pre == post) | (jnp.isnan(pre) & jnp.isnan(post))
  gap = jnp.abs(pre - post)
  scale = jnp.maximum(jnp.abs(pre), jnp.abs(post))
  bad = ~same & ~((gap <= rtol * scale) & (scale < jnp.inf))
  rows = valid.reshape(valid.shape + (1,) * (pre.ndim - 1))
  gap = jnp.where(same | ~rows, 0, jnp.where(jnp.isnan(gap), jnp.inf, gap))
  bad_rows = jnp.any(bad, axis=tuple(range(1, pre.ndim))) & valid
  return jnp.sum(bad_rows, dtype=jnp.int32), jnp.max(gap, initial=0)


class _Program(NamedTuple):
  init: Callable[[], _Totals]
  advance: Callable[..., _Totals]
  finish: Callable[[_Totals], _Totals]
  masks_per_step: int


@functools.lru_cache(maxsize=32)
def _program(
  f: Callable,
  shape: tuple[int, ...],
  dtype: Any,
  impl: str,
  chunk: int,
  devices: tuple[jax.Device, ...],
) -> _Program:
  """The compiled programs for one (f, x shape, dtype, key impl, chunk, devices)."""
  acc = masks.compute_dtype(dtype)
  mesh = Mesh(np.array(devices), (_AXIS,))
  num_devices = len(devices)

  def zeros() -> _Totals:
    count = jnp.zeros((num_devices,), jnp.int32)
    stat = jnp.zeros((num_devices, *shape), acc)
    kept = jnp.zeros((num_devices, *shape), jnp.int32)
    return _Totals(count, stat, stat, kept, count, jnp.zeros((num_devices,), acc))

  def local_steps(totals, key_data, x, keep, num_masks, first_step, num_steps, rtol):
    # Inside shard_map: every leaf of ``totals`` has a leading axis of length 1.
    totals = jax.tree.map(lambda leaf: leaf[0], totals)
    key = jax.random.wrap_key_data(key_data, impl=impl)
    # apply_mask(v, m) == where(m, apply_mask(v, all kept), 0) element by element, so the
    # scaled values are computed once and each mask only selects: the bits of apply_mask on
    # every mask, without a division per mask and element.
    everything = jnp.ones(shape, bool)
    x_kept = _dropout.masked(x, everything, keep)
    fx_kept = _dropout.masked(f(x), everything, keep)
    zero = jnp.zeros((), dtype)
    shift = _exact(f, x, keep).pre.mean  # for the one-pass chunk moments of pre
    shift = jnp.where(jnp.isfinite(shift), shift, 0)  # an infinite mean stays inf, not NaN
    device = lax.axis_index(_AXIS).astype(jnp.uint32)
    offsets = jnp.arange(chunk, dtype=jnp.uint32)

    def draw(index: jax.Array) -> jax.Array:
      return masks.draw_keep_mask(jax.random.fold_in(key, index), shape, keep)

    def never(index: jax.Array) -> jax.Array:  # the branch not taken (num_masks is >= 1)
      return jnp.broadcast_to(index < 0, shape)

    def step(s: jax.Array, running: _Totals) -> _Totals:
      # Step s covers masks [s * C * D, (s + 1) * C * D); device d takes its d-th C-slice.
      start = (s.astype(jnp.uint32) * np.uint32(num_devices) + device) * np.uint32(chunk)
      index = start + offsets
      valid = index < num_masks
      rows = valid.reshape(valid.shape + (1,) * len(shape))
      # Drawn inside a conditional, the masks are computed once into a buffer; otherwise XLA
      # fuses (and so recomputes) the hash into each of their consumers.
      kept = lax.cond(num_masks > 0, jax.vmap(draw), lambda i: jax.vmap(never)(i), index)
      pre = jax.vmap(f)(jnp.where(kept, x_kept, zero))
      post = jnp.where(kept, fx_kept, zero)
      # One pass over pre - shift: M2 = S2 - S1**2 / n loses about
      # eps * (mean - shift)**2 / var relative, and the shift is the exact mean for an
      # elementwise f, a fair guess otherwise.
      count = jnp.sum(valid, dtype=jnp.int32)
      n = jnp.maximum(count, 1).astype(acc)
      centred = jnp.where(rows, pre.astype(acc) - shift, 0)
      s1, s2 = _sum_rows(centred), _sum_rows(centred * centred)
      mismatches, max_diff = _disagreement(pre.astype(acc), post.astype(acc), rtol, valid)
      chunk_totals = _Totals(
        count,
        shift + s1 / n,
        jnp.maximum(s2 - s1 * s1 / n, 0),
        _sum_rows((kept & rows).astype(jnp.int32)),
        mismatches,
        max_diff,
      )
      return _merge(running, chunk_totals)

    totals = lax.fori_loop(first_step, first_step + num_steps, step, totals)
    return jax.tree.map(lambda leaf: leaf[None], totals)

  def finish(totals: _Totals) -> _Totals:
    merged = jax.tree.map(lambda leaf: leaf[0], totals)
    for d in range(1, num_devices):  # in device order: the same result in every process
      merged = _merge(merged, jax.tree.map(lambda leaf, d=d: leaf[d], totals))
    return merged

  spec, scalar = PartitionSpec(_AXIS), PartitionSpec()
  advance = jax.shard_map(local_steps, mesh=mesh, in_specs=(spec, *[scalar] * 7), out_specs=spec)
  return _Program(
    init=jax.jit(zeros, out_shardings=NamedSharding(mesh, spec)),
    # Excess precision would let XLA skip rounding a low-precision f(x) to its dtype.
    advance=jax.jit(
      advance, donate_argnums=0, compiler_options={"xla_allow_excess_precision": False}
    ),
    finish=jax.jit(finish, out_shardings=NamedSharding(mesh, scalar)),
    masks_per_step=chunk * num_devices,
  )


def _default_chunk(size: int, platform: str) -> int:
  elements, most = _CHUNK.get(platform, _ACCELERATOR_CHUNK)
  return max(1, min(most, elements // max(size, 1)))


def _moments(mean: np.ndarray, m2: np.ndarray, count: int, dtype: Any) -> Moments:
  """Mean, unbiased variance and standard error from a count, a mean and M2 (float64)."""
  mean, m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    var = m2 / (count - 1) if count > 1 else np.full_like(m2, np.nan)
    stderr = np.sqrt(var / count)
  return Moments(*(jnp.asarray(a, dtype) for a in (mean, var, stderr)))


def _two_valued(kept: np.ndarray, count: int, value: np.ndarray, dtype: Any) -> Moments:
  """Moments of samples that equal ``value`` where kept (``kept`` of ``count`` times), else 0.

  Post-activation dropout is such a sample, whatever ``f``: its moments are exact functions
  of the per-element kept counts (``mean = value k / n``, ``M2 = value**2 k (n - k) / n``).
  """
  k, value = np.asarray(kept, np.float64), np.asarray(value, np.float64)
  with np.errstate(invalid="ignore", over="ignore"):
    mean = np.where(k > 0, value * k / count, 0.0)  # an inf kept 0 times: 0, not NaN
    m2 = np.where((k > 0) & (k < count), value * value * k * (count - k) / count, 0.0)
    m2 = np.where((k > 0) & ~np.isfinite(value), np.nan, m2)  # as numpy: an inf sample
  return _moments(mean, m2, count, dtype)


def compare_orders(
  key: ArrayLike,
  f: Callable | str,
  x: ArrayLike,
  *,
  rate: ArrayLike,
  num_masks: int,
  rtol: float | None = None,
  chunk_size: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> Comparison:
  r"""Statistics of both orders of dropout over ``num_masks`` masks, the same mask for both.

  .. math::
     \text{pre}_i = f\!\left(\frac{m_i \odot x}{q}\right), \qquad
     \text{post}_i = \frac{m_i \odot f(x)}{q}, \qquad
     m_i = \mathrm{keep\_mask}(\mathrm{fold\_in}(\mathrm{key}, i), \text{rate}),
     \quad i = 0, \dots, N - 1,

  with ``q = 1 - rate``. Returns per-element means, unbiased variances and standard errors
  of both, ``f(x)`` (the eval-mode output: post-activation dropout is unbiased for it,
  pre-activation dropout is not unless ``f`` is ``c + a*max(x, 0) + b*min(x, 0)``), the
  share of masks on which the two orders disagree beyond ``rtol``, and the largest
  disagreement. Check the numbers against :func:`exact_moments`.

  The masks are processed ``chunk_size`` per device at a time inside one compiled loop,
  merged with Chan et al.'s parallel update, so memory does not grow with ``num_masks``;
  the mask axis is sharded over ``devices`` (every device of every process by default).
  Because mask ``i`` depends only on ``key`` and ``i``, the result does not depend on the
  chunk size or the number of devices or processes: ``post``, ``mismatch_fraction`` and
  ``max_abs_diff`` are identical, ``pre`` equal up to float32 rounding (about 1e-7
  relative; the merge order differs). Under ``jax.distributed`` every process must call
  this with the same arguments; each gets the full result. The statistics of ``post`` are
  computed exactly from how often each element was kept (it is ``f(x)/q`` or 0).

  Args:
    key: a PRNG key (typed or raw).
    f: a callable mapping ``x`` to an array of the same shape and dtype, or a name from
      :mod:`jdrop.activations`. Called once per mask (so it need not be elementwise).
    x: a floating-point array (the pre-activations).
    rate: the drop probability in [0, 1], concrete.
    num_masks: the number of masks, a positive integer up to ``2**31 - 1``.
    rtol: relative tolerance for ``mismatch_fraction``; default ``4 * eps`` of x's dtype
      (:func:`default_rtol`). ``0`` counts any difference.
    chunk_size: masks per device per step (default: about ``2**18 / x.size`` masks, at most
      4096, on CPU; ``2**24 / x.size``, at most 65536, on accelerators).
    devices: the devices to shard the masks over; default ``jax.devices()``.
    progress: called as ``progress(masks_done, num_masks)`` after each part of the loop;
      with it the loop runs as about 100 calls instead of one.

  Returns:
    A :class:`Comparison`; arrays have the shape of ``x`` and x's dtype promoted to at
    least float32.

  Raises:
    TypeError, ValueError: for a bad key, ``x``, ``rate``, ``num_masks`` or ``f``, or when
      called under ``jit``/``vmap``/``grad``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdrop import montecarlo
    >>> x = jnp.array([-1.0, 0.5, 2.0])
    >>> out = montecarlo.compare_orders(jax.random.key(0), "relu", x, rate=0.5, num_masks=1000)
    >>> out.mismatch_fraction, out.max_abs_diff  # relu: the orders agree on every mask
    (0.0, 0.0)
    >>> out = montecarlo.compare_orders(jax.random.key(0), "tanh", x, rate=0.5, num_masks=1000)
    >>> out.mismatch_fraction > 0.8, bool(jnp.allclose(out.post.mean, jnp.tanh(x), atol=0.15))
    (True, True)
  """
  fn = _PREFIX + "compare_orders"
  _check_not_traced(fn, key=key, x=x, rate=rate)
  key = masks.check_key(fn, key)
  x = _dropout.check_x(fn, x)
  masks.check_rate(fn, rate)
  f = order.resolve_activation(fn, f)
  num_masks = _check_count(fn, "num_masks", num_masks, upper=MAX_MASKS, example="10_000")
  acc = masks.compute_dtype(x.dtype)  # the statistics' dtype: x's, at least float32
  rtol = default_rtol(x.dtype) if rtol is None else _check_real(fn, "rtol", rtol)
  if not representable(rtol, acc):
    raise errors.value_error(
      fn, "rtol", f"must be finite in {acc.name}, the dtype it is compared in", rtol,
      "Pass e.g. rtol=1e-6.",
    )  # fmt: skip
  devices = _check_devices(fn, devices)
  if chunk_size is None:
    chunk_size = _default_chunk(x.size, devices[0].platform)
  chunk_size = _check_count(fn, "chunk_size", chunk_size, upper=2**20, example="256")
  if progress is not None and not callable(progress):
    raise errors.type_error(
      fn, "progress", "must be a callable or None", errors.short(progress),
      "Pass e.g. progress=lambda done, total: print(done, total).",
    )  # fmt: skip
  reference = order._apply(fn, f, x)  # also checks that f keeps the shape and dtype

  program = _program(f, x.shape, x.dtype, str(jax.random.key_impl(key)), chunk_size, devices)
  # Host (numpy) arguments: under jax.distributed every process passes the same values and
  # jit treats them as replicated over the global mesh.
  arguments = (
    np.asarray(jax.random.key_data(key)),
    np.asarray(x),
    np.asarray(masks.keep_probability(rate)),
    np.uint32(num_masks),
  )
  total_steps = -(-num_masks // program.masks_per_step)
  per_call = total_steps if progress is None else -(-total_steps // _PROGRESS_CALLS)
  totals = program.init()
  for first in range(0, total_steps, per_call):
    steps = min(per_call, total_steps - first)
    totals = program.advance(
      totals, *arguments, np.int32(first), np.int32(steps), np.asarray(rtol, acc)
    )
    if progress is not None:
      jax.block_until_ready(totals)
      progress(min(num_masks, (first + steps) * program.masks_per_step), num_masks)
  result = jax.tree.map(np.asarray, program.finish(totals))
  count = int(result.count)
  fx_kept = _dropout.masked(reference, jnp.ones(x.shape, bool), masks.keep_probability(rate))
  return Comparison(
    pre=_moments(result.pre_mean, result.pre_m2, count, acc),
    post=_two_valued(result.kept, count, np.asarray(fx_kept), acc),
    reference=reference,
    mismatch_fraction=int(result.mismatches) / count,
    max_abs_diff=float(result.max_diff),
    num_masks=count,
    rate=float(np.asarray(rate)),
    rtol=rtol,
  )


# ----------------------------------------------------------------------------
# Exact references.


def _two_point(a: jax.Array, b: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of a value that is ``a`` with probability ``keep``, else ``b``."""
  return keep * a + (1 - keep) * b, keep * (1 - keep) * jnp.square(a - b)


def _all_masks(shape: tuple[int, ...]) -> np.ndarray:
  """Every keep mask of ``shape``, stacked: ``(2**size, *shape)`` booleans."""
  size = math.prod(shape)
  bits = (np.arange(2**size)[:, None] >> np.arange(size)) & 1
  return bits.astype(bool).reshape(2**size, *shape)


def _enumerated(
  f: Callable, x: jax.Array, keep: jax.Array, acc: Any
) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of ``f(D(x))`` as sums over every mask, each with its probability."""
  every = _all_masks(x.shape)
  kept = every.reshape(len(every), -1).sum(axis=1)
  keep_acc = keep.astype(acc)
  weights = keep_acc**kept * (1 - keep_acc) ** (x.size - kept)  # 0**0 = 1 at rates 0 and 1
  weights = weights.reshape(weights.shape + (1,) * x.ndim)
  values = jax.vmap(lambda m: f(_dropout.masked(x, m, keep)))(every).astype(acc)
  # A mask of probability 0 adds nothing, even where f is infinite on it.
  mean = jnp.sum(jnp.where(weights > 0, weights * values, 0), axis=0)
  var = jnp.sum(jnp.where(weights > 0, weights * jnp.square(values - mean), 0), axis=0)
  return mean, var


def _exact(
  f: Callable, x: jax.Array, keep: jax.Array, invalid: Any = None, *, elementwise: bool = True
) -> Exact:
  acc = masks.compute_dtype(x.dtype)
  keep_acc = keep.astype(acc)
  fx = order._apply(_PREFIX + "exact_moments", f, x)
  if elementwise:
    # The values that compare_orders computes for a kept and a dropped unit, in x's dtype.
    kept, dropped = jnp.ones(x.shape, bool), jnp.zeros(x.shape, bool)
    pre = _two_point(
      f(_dropout.masked(x, kept, keep)).astype(acc),
      f(_dropout.masked(x, dropped, keep)).astype(acc),
      keep_acc,
    )
  else:
    pre = _enumerated(f, x, keep, acc)
  # D(f(x)) is f(x)/q or 0 per element whatever f is: always two values.
  post = _two_point(_dropout.masked(fx, jnp.ones(x.shape, bool), keep).astype(acc), 0, keep_acc)
  if invalid is not None:  # a traced rate outside [0, 1]: NaN, never a plausible number
    pre, post = ([jnp.where(invalid, jnp.nan, v) for v in pair] for pair in (pre, post))
  zero = jnp.zeros(x.shape, acc)
  return Exact(pre=Moments(*pre, zero), post=Moments(*post, zero), reference=fx)


_exact_core = jax.jit(_exact, static_argnums=0, static_argnames="elementwise")


@functools.partial(jax.jit, static_argnums=0)
def _acts_elementwise(f: Callable, x: jax.Array, keep: jax.Array) -> jax.Array:
  """Whether ``f`` gives on two complementary masks what an elementwise ``f`` would.

  A cheap test, not a proof: it catches softmax, ``x - x.mean()`` or a cumulative sum (an
  output that depends on whether *other* units were dropped); a dependence that these two
  masks do not reveal goes unseen.
  """
  acc = masks.compute_dtype(x.dtype)
  alternate = (jnp.arange(x.size) % 2 == 0).reshape(x.shape)
  probes = jnp.stack([alternate, ~alternate])
  kept = f(_dropout.masked(x, jnp.ones(x.shape, bool), keep))
  dropped = f(_dropout.masked(x, jnp.zeros(x.shape, bool), keep))
  got = jax.vmap(lambda m: f(_dropout.masked(x, m, keep)))(probes).astype(acc)
  want = jnp.where(probes, kept, dropped).astype(acc)
  rtol = jnp.asarray(default_rtol(x.dtype), acc)  # fusion may round a unit differently
  mismatches, _ = _disagreement(got, want, rtol, jnp.ones(2, bool))
  return mismatches == 0


def exact_moments(f: Callable | str, x: ArrayLike, *, rate: ArrayLike) -> Exact:
  r"""Exact per-element mean and variance of both orders of dropout.

  For an elementwise ``f`` a unit is kept with probability ``q = 1 - rate``, so each order
  takes one of two values:

  .. math::
     f(D(x)) &= \begin{cases} f(x/q) & q \\ f(0) & 1 - q \end{cases}, \quad
     \mathbb{E} = q f(x/q) + (1-q) f(0), \quad
     \mathrm{Var} = q(1-q)\,\bigl(f(x/q) - f(0)\bigr)^2, \\
     D(f(x)) &= \begin{cases} f(x)/q & q \\ 0 & 1 - q \end{cases}, \quad
     \mathbb{E} = f(x), \quad \mathrm{Var} = \frac{1-q}{q} f(x)^2.

  ``x / q`` and ``f(x) / q`` are computed as :func:`jdrop.apply_mask` computes them, so
  these are the exact moments of what :func:`compare_orders` samples. At ``rate = 1``
  both orders are constant (``f(0)`` and 0). The ``q(1-q)(a-b)^2`` form avoids the
  cancellation of ``E[y^2] - E[y]^2``.

  A function that is not elementwise (softmax: each output depends on which *other* units
  were dropped) has no such formula for ``f(D(x))``: its moments are sums over all
  ``2**x.size`` masks, each weighted by its probability, computed for ``x`` of up to
  :data:`MAX_ENUMERATED_SIZE` elements; a larger ``x`` raises. Whether ``f`` is elementwise
  comes from the registry for a name or a registered function, and is tested on two masks
  for any other callable; under ``jit``/``vmap`` a callable that fails the test gives NaN.

  Args:
    f: a callable or a name from :mod:`jdrop.activations`.
    x: a floating-point array.
    rate: the drop probability in [0, 1]; may be traced (jit, vmap over rates, grad).

  Returns:
    An :class:`Exact` with ``pre`` and ``post`` :class:`Moments` (``stderr = 0``) and
    ``reference = f(x)``.

  Raises:
    ValueError: for a non-elementwise ``f`` and an ``x`` of more than
      :data:`MAX_ENUMERATED_SIZE` elements (use :func:`compare_orders`).

  Example:
    >>> import jax.numpy as jnp
    >>> from jdrop import montecarlo
    >>> exact = montecarlo.exact_moments("identity", jnp.array([1.0, 2.0]), rate=0.5)
    >>> exact.pre.mean, exact.pre.var
    (Array([1., 2.], dtype=float32), Array([1., 4.], dtype=float32))
    >>> montecarlo.exact_moments("softmax", jnp.array([0.0, 2.0]), rate=0.5).pre.mean
    Array([0.2589931 , 0.74100685], dtype=float32)
  """
  fn = _PREFIX + "exact_moments"
  x = _dropout.check_x(fn, x)
  masks.check_rate(fn, rate)
  elementwise = activations.is_elementwise(f)
  f = order.resolve_activation(fn, f)
  keep, invalid = masks.keep_probability(rate), masks.invalid_rate(rate)
  if elementwise is None:
    agrees = _acts_elementwise(f, x, keep)
    if masks.is_traced(agrees):  # no Python branch on a traced value: NaN, never a wrong number
      invalid = ~agrees if invalid is None else invalid | ~agrees
    else:
      elementwise = bool(agrees)
  if elementwise is False and x.size > MAX_ENUMERATED_SIZE:
    raise errors.value_error(
      fn,
      "f",
      f"is not elementwise, so its exact moments are a sum over all 2**size masks of x;"
      f" x may have at most {MAX_ENUMERATED_SIZE} elements",
      errors.Described(f"x of shape {x.shape}"),
      "Estimate them with compare_orders, or pass a smaller x.",
    )
  return _exact_core(f, x, keep, invalid, elementwise=elementwise is not False)


# ----------------------------------------------------------------------------
# Gaussian pre-activations and layers.


def _mixture(
  means: jax.Array, variances: jax.Array, weights: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of a mixture over the last axis (law of total variance)."""
  mean = jnp.sum(weights * means, axis=-1)
  var = jnp.sum(weights * (variances + jnp.square(means - mean[..., None])), axis=-1)
  return mean, var


def _shifts(
  pre: Moments, pre_weights: jax.Array, post: Moments, reference: jax.Array, weights: jax.Array
) -> OrderShifts:
  """Train and eval statistics of mixtures over the last axis (eval: ``reference``)."""
  eval_mean, eval_var = _mixture(reference, jnp.zeros_like(reference), weights)
  return OrderShifts(
    pre=Shift(*_mixture(pre.mean, pre.var, pre_weights), eval_mean, eval_var),
    post=Shift(*_mixture(post.mean, post.var, weights), eval_mean, eval_var),
  )


def _quadrature_error(fine: OrderShifts, coarse: OrderShifts) -> float:
  """The largest relative change between two quadratures of the same statistics.

  Means are compared on the scale of the distribution (``sqrt(eval_var) + |eval_mean|``),
  variances relative to themselves.
  """
  worst = 0.0
  for a, b in zip(fine, coarse, strict=True):
    scale = np.sqrt(np.abs(a.eval_var)) + np.abs(a.eval_mean)
    for got, want, size in (
      (a.train_mean, b.train_mean, scale),
      (a.eval_mean, b.eval_mean, scale),
      (a.train_var, b.train_var, np.abs(a.train_var)),
      (a.eval_var, b.eval_var, np.abs(a.eval_var)),
    ):
      with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(size > 0, np.abs(got - want) / size, np.abs(got - want))
      worst = max(worst, float(np.nanmax(change, initial=0.0)))
  return worst


def _quadrature(
  mu: np.ndarray, sigma: np.ndarray, degree: int, breakpoints: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights (last axis) of E[g(X)], X ~ N(mu, sigma^2), in float64.

  No breakpoints: Gauss-Hermite (probabilists'), exact for polynomials of degree < 2 *
  degree. With breakpoints: Gauss-Legendre of ``degree`` nodes on each piece of
  [mu - 12 sigma, mu + 12 sigma] cut at the breakpoints, for integrands with kinks there.
  """
  if breakpoints.size == 0:
    t, w = np.polynomial.hermite_e.hermegauss(degree)
    return mu[..., None] + sigma[..., None] * t, np.broadcast_to(w / w.sum(), mu.shape + w.shape)
  low, high = mu - _TAIL_SIGMAS * sigma, mu + _TAIL_SIGMAS * sigma
  cuts = np.clip(breakpoints, low[..., None], high[..., None])
  edges = np.sort(np.concatenate([low[..., None], cuts, high[..., None]], axis=-1), axis=-1)
  t, w = np.polynomial.legendre.leggauss(degree)
  middle = (edges[..., 1:] + edges[..., :-1]) / 2
  half = (edges[..., 1:] - edges[..., :-1]) / 2
  nodes = middle[..., None] + half[..., None] * t
  z = (nodes - mu[..., None, None]) / sigma[..., None, None]
  weights = (
    half[..., None] * w * np.exp(-z * z / 2) / (sigma[..., None, None] * math.sqrt(2 * np.pi))
  )
  flat = (*nodes.shape[:-2], -1)
  return nodes.reshape(flat), weights.reshape(flat)


def gaussian_shift(
  f: Callable | str,
  *,
  mu: ArrayLike,
  sigma: ArrayLike,
  rate: float,
  degree: int = DEFAULT_DEGREE,
  breakpoints: Sequence[float] = (),
) -> OrderShifts:
  r"""Train-versus-eval mean shift and variance ratio of both orders for ``x ~ N(mu, sigma^2)``.

  For a random pre-activation ``X`` and an independent mask, eval mode computes ``f(X)``;
  training computes ``f(D(X))`` (pre) or ``D(f(X))`` (post). With the two-point moments
  ``m(x), v(x)`` of :func:`exact_moments`,

  .. math::
     \mathbb{E}_\text{train} = \mathbb{E}_X[m(X)], \quad
     \mathrm{Var}_\text{train} = \mathbb{E}_X\bigl[v(X) + (m(X) - \mathbb{E}_\text{train})^2\bigr],
     \quad \mathbb{E}_\text{eval} = \mathbb{E}_X[f(X)], \quad
     \mathrm{Var}_\text{eval} = \mathrm{Var}_X[f(X)],

  computed by Gauss-Hermite quadrature with ``degree`` nodes in float64. For a linear
  ``f`` and ``mu = 0`` the variance ratio of both orders is ``1 / q``, Li et al.'s variance
  shift ("Understanding the Disharmony between Dropout and Batch Normalization by Variance
  Shift", CVPR 2019). Post-activation dropout has no mean shift.

  Accuracy: Gauss-Hermite converges fast where ``f`` is smooth on the scale of ``sigma``
  (1e-12 for tanh or gelu with ``sigma / q`` about 1). Across a kink (relu) or a steep
  transition (tanh, sigmoid with ``sigma / q`` of 5 or more) it converges slowly, so the
  result is also computed with 3/4 of the nodes, and a ``RuntimeWarning`` says when the two
  differ by more than 1e-6 (relative). Then pass the kinks or steep points of ``f`` as
  ``breakpoints`` (``(0.,)`` for relu, tanh, sigmoid, gelu; ``(0., 6.)`` for relu6): each
  order is then integrated piecewise between them (Gauss-Legendre with ``degree`` nodes per
  piece on ``mu +- 12 sigma``), accurate to about 1e-12 there.

  Args:
    f: an elementwise callable or a name from :mod:`jdrop.activations`.
    mu: the mean of the pre-activation (an array broadcasts).
    sigma: its standard deviation, positive (broadcasts with ``mu``).
    rate: the drop probability in [0, 1], concrete.
    degree: quadrature nodes (per piece), 1 to 256.
    breakpoints: the points where ``f`` has a kink or a jump.

  Returns:
    :class:`OrderShifts` of float32 arrays shaped like ``broadcast(mu, sigma)``; read
    ``.pre.mean_shift``, ``.pre.var_ratio`` and the same for ``.post``.

  Example:
    >>> from jdrop import montecarlo
    >>> out = montecarlo.gaussian_shift("identity", mu=0.0, sigma=1.0, rate=0.5)
    >>> float(out.pre.var_ratio), float(out.post.mean_shift)
    (2.0, 0.0)
    >>> out = montecarlo.gaussian_shift("relu", mu=0.0, sigma=1.0, rate=0.5, breakpoints=(0.,))
    >>> round(float(out.post.var_ratio), 5)  # (E relu^2 / q - (E relu)^2) / Var relu
    2.46694
  """
  fn = _PREFIX + "gaussian_shift"
  _check_not_traced(fn, mu=mu, sigma=sigma, rate=rate)
  masks.check_rate(fn, rate)
  f = order.resolve_activation(fn, f)
  degree = _check_count(fn, "degree", degree, upper=MAX_DEGREE, example=str(DEFAULT_DEGREE))
  try:
    mu_np, sigma_np = np.broadcast_arrays(np.asarray(mu, np.float64), np.asarray(sigma, np.float64))
    points = np.asarray(breakpoints, np.float64).reshape(-1)
  except (TypeError, ValueError) as err:
    raise errors.type_error(
      fn,
      "mu, sigma, breakpoints",
      "must be real numbers or arrays that broadcast together",
      errors.short((mu, sigma, breakpoints)),
      "Pass e.g. mu=0.0, sigma=1.0, breakpoints=(0.,).",
    ) from err
  if not (np.isfinite(mu_np).all() and np.isfinite(sigma_np).all() and (sigma_np > 0).all()):
    raise errors.value_error(
      fn,
      "sigma",
      "must be positive and finite (with a finite mu)",
      errors.short((mu, sigma)),
      "Pass a standard deviation such as sigma=1.0.",
    )
  if not np.isfinite(points).all():
    raise errors.value_error(
      fn, "breakpoints", "must be finite", tuple(points), "Pass the kinks of f, e.g. (0.,)."
    )
  keep = 1.0 - float(np.asarray(rate))

  def integrate(nodes_per_piece: int) -> OrderShifts:
    # Eval mode and post-activation dropout see f(x): cut at the kinks b of f. Pre-activation
    # dropout sees f(x / q): cut at q * b.
    nodes, weights = _quadrature(mu_np, sigma_np, nodes_per_piece, points)
    scaled_nodes, scaled_weights = _quadrature(mu_np, sigma_np, nodes_per_piece, keep * points)
    at_nodes = exact_moments(f, jnp.asarray(nodes), rate=rate)
    at_scaled = exact_moments(f, jnp.asarray(scaled_nodes), rate=rate)
    shifts = _shifts(at_scaled.pre, scaled_weights, at_nodes.post, at_nodes.reference, weights)
    return jax.tree.map(np.asarray, shifts)

  with jax.enable_x64(True):
    shifts = integrate(degree)
    coarser = integrate(max(1, 3 * degree // 4))
  error = _quadrature_error(shifts, coarser)
  if error > _QUADRATURE_TOLERANCE:
    warnings.warn(
      f"{fn}: the quadrature has not converged: {degree} and {max(1, 3 * degree // 4)} nodes"
      f" differ by {error:.1e} (relative). f varies on a scale much smaller than sigma, or"
      " has a kink: pass its kinks or its steepest point as breakpoints (e.g. (0.,) for"
      " relu, tanh, sigmoid), or a higher degree.",
      RuntimeWarning,
      stacklevel=2,
    )
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), shifts)


def variance_shift(moments: Exact | Comparison, *, weights: ArrayLike | None = None) -> OrderShifts:
  r"""Train-versus-eval statistics of a layer's units over a batch of pre-activations.

  ``moments`` holds the per-element moments of both orders for pre-activations ``h`` of
  shape ``(samples, units)`` (from :func:`exact_moments` or :func:`compare_orders` with
  ``x = h``). Over the data and the masks, by the law of total variance,

  .. math::
     \mathrm{Var}_\text{train} = \mathrm{Var}_b\bigl[\mathbb{E}_m y_b\bigr]
       + \mathbb{E}_b\bigl[\mathrm{Var}_m y_b\bigr], \qquad
     \mathrm{Var}_\text{eval} = \mathrm{Var}_b\bigl[f(h_b)\bigr]

  (population moments over the samples ``b``; for a :class:`Comparison` the within-sample
  variances are scaled by ``1 - 1/num_masks``, which removes the mask noise of the estimated
  means from ``Var_b``, so ``Var_train`` is unbiased). This is the variance shift that a
  normalisation layer placed right after dropout suffers (its statistics are collected in
  training and applied in eval mode; Li et al., CVPR 2019): ``1 / q`` for zero-mean
  pre-activations and a linear ``f``. With ``weights`` (``units x outputs``), dropout feeds a
  linear layer and then the normalisation; masks are independent across units, so the
  per-sample moments of ``y @ W`` are ``mean @ W`` and ``var @ W**2``.

  Args:
    moments: an :class:`Exact` or a :class:`Comparison` whose arrays have shape
      ``(samples, units)``.
    weights: optional ``(units, outputs)`` weights of a linear layer after dropout.

  Returns:
    :class:`OrderShifts` with arrays of shape ``(units,)`` (or ``(outputs,)``).

  Example:
    >>> import jax.numpy as jnp
    >>> from jdrop import montecarlo
    >>> h = jnp.array([[-1.0], [1.0]])  # zero mean, unit variance
    >>> shifts = montecarlo.variance_shift(montecarlo.exact_moments("identity", h, rate=0.75))
    >>> shifts.pre.var_ratio, shifts.post.var_ratio
    (Array([4.], dtype=float32), Array([4.], dtype=float32))
  """
  fn = _PREFIX + "variance_shift"
  if not isinstance(moments, (Exact, Comparison)):
    raise errors.type_error(
      fn,
      "moments",
      "must be the result of exact_moments or compare_orders",
      errors.short(moments),
      "Pass e.g. exact_moments(f, h, rate=rate) for pre-activations h of shape (samples, units).",
    )
  if jnp.ndim(moments.reference) != 2:
    raise errors.value_error(
      fn,
      "moments",
      "must hold statistics of shape (samples, units)",
      errors.Described(f"shape {jnp.shape(moments.reference)}"),
      "Compute them for pre-activations h of shape (samples, units).",
    )
  samples, units = jnp.shape(moments.reference)
  acc = masks.compute_dtype(moments.reference.dtype)
  w = None
  if weights is not None:
    w = jnp.asarray(weights, acc)
    if w.ndim != 2 or w.shape[0] != units:
      raise errors.value_error(
        fn,
        "weights",
        f"must have shape (units, outputs) with units = {units}",
        errors.Described(f"shape {w.shape}"),
        "Pass the kernel of the linear layer that follows dropout.",
      )

  def per_unit(values: jax.Array, power: int = 1) -> jax.Array:
    """(samples, units) -> (units or outputs, samples): the mixture runs over the last axis."""
    values = jnp.asarray(values, acc)
    return (values if w is None else values @ w**power).T

  # A Monte-Carlo mean carries mask noise: E_b[Var_b(mean)] exceeds the spread of the exact
  # means by E_b[var] / num_masks. Shrinking the within-sample variances by 1 - 1/num_masks
  # makes Var_train unbiased (the exact references need no correction).
  shrink = 1.0 - 1.0 / moments.num_masks if isinstance(moments, Comparison) else 1.0

  def linear(m: Moments) -> Moments:
    return Moments(per_unit(m.mean), shrink * per_unit(m.var, power=2), m.stderr)

  uniform = jnp.full((samples,), 1 / samples, acc)
  return _shifts(
    linear(moments.pre), uniform, linear(moments.post), per_unit(moments.reference), uniform
  )


def dense_preactivations(
  key: ArrayLike, inputs: ArrayLike, *, features: int, standardize: bool = True
) -> jax.Array:
  r"""Pre-activations ``h = x W`` of a freshly initialised Dense layer on ``inputs``.

  ``W`` is LeCun-normal (truncated normal with variance ``1 / fan_in``, Flax's default
  Dense kernel), the bias zero. With ``standardize=True`` every input column is first
  scaled to mean 0 and variance 1 (constant columns become 0), so the units of ``h`` have
  mean about 0 and variance about 1, the setting of Li et al.'s ``1 / q``.

  Args:
    key: a PRNG key for the kernel.
    inputs: a floating-point array of shape ``(samples, fan_in)``, e.g. :func:`load_digits`.
    features: the number of units.
    standardize: whether to standardise the input columns first.

  Returns:
    An array of shape ``(samples, features)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdrop import montecarlo
    >>> data = jax.random.uniform(jax.random.key(1), (100, 8))
    >>> montecarlo.dense_preactivations(jax.random.key(0), data, features=4).shape
    (100, 4)
  """
  fn = _PREFIX + "dense_preactivations"
  key = masks.check_key(fn, key)
  inputs = _dropout.check_x(fn, inputs)
  if inputs.ndim != 2:
    raise errors.value_error(
      fn,
      "inputs",
      "must have shape (samples, fan_in)",
      errors.Described(f"shape {inputs.shape}"),
      "Flatten each sample into one row, e.g. inputs.reshape(len(inputs), -1).",
    )
  features = _check_count(fn, "features", features, upper=2**20, example="64")
  if standardize:
    std = inputs.std(axis=0)
    inputs = (inputs - inputs.mean(axis=0)) / jnp.where(std > 0, std, 1)
  kernel = jax.nn.initializers.lecun_normal()(key, (inputs.shape[1], features), inputs.dtype)
  return inputs @ kernel


def load_digits() -> np.ndarray:
  """The 1797 8x8 handwritten digits of scikit-learn (UCI), as float32 of shape (1797, 64).

  Real data for :func:`dense_preactivations`; needs the optional dependency
  ``scikit-learn`` (the data ship with it, no download).

  Raises:
    ImportError: if scikit-learn is not installed, saying how to install it.
  """
  try:
    from sklearn import datasets  # optional dependency
  except ImportError as err:
    raise ImportError(
      f"{_PREFIX}load_digits: needs scikit-learn, which is not installed. Install it with"
      " `pip install scikit-learn`, or pass your own data to dense_preactivations."
    ) from err
  return np.asarray(datasets.load_digits().data, np.float32)


# ----------------------------------------------------------------------------
# Several processes.


_PROTOCOL = "jdrop-rendezvous/1"  # in every handshake message; anything else is a stranger
_MAX_MESSAGE = 2**16  # bytes; a hello is a few hundred
_HELLO_SECONDS = 5.0  # how long process 0 waits for a new connection's hello
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")  # one label of a hostname (RFC 1123)
_ADDRESS_FORM = (
  "must be HOST:PORT, HOST a hostname or a dotted or [bracketed] IP address, PORT in 1..65535"
)


def address_problem(address: Any) -> str | None:
  """What is wrong with ``address`` as ``"HOST:PORT"`` (a clause for an error), or None.

  HOST is a hostname (``node-1.example.org``), a dotted IPv4 address (``127.0.0.1``) or a
  bracketed IPv6 address (``[::1]``). What a resolver would read as a number is refused:
  ``999`` is the IPv4 address 0.0.3.231, ``127.1`` is 127.0.0.1, ``0x7f`` is 0.0.0.127.

  >>> from jdrop._src import montecarlo
  >>> montecarlo.address_problem("node-1:1234") is None, montecarlo.address_problem("[::1]:80")
  (True, None)
  >>> montecarlo.address_problem("999:1234")  # doctest: +ELLIPSIS
  "must be HOST:PORT, ... ('999' is neither a dotted IPv4 address ... nor a hostname (...))"
  """
  if not isinstance(address, str):
    return f"{_ADDRESS_FORM} (a str)"
  host, colon, port = address.rpartition(":")
  reason = None
  if not colon or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
    reason = "no port in 1..65535 after the last ':'"
  elif not host:
    reason = "no host before the ':'"
  elif host.startswith("[") or host.endswith("]"):
    if not (host.startswith("[") and host.endswith("]")):
      reason = f"{host} has a bracket without its pair"
    elif not _is_ip(host[1:-1], ipaddress.IPv6Address):
      reason = f"{host} is not an IPv6 address"
  elif ":" in host:
    reason = f"an IPv6 address goes in brackets, e.g. [{host}]:{port}"
  elif _is_ip(host, ipaddress.IPv4Address):
    pass
  elif _reads_as_number(host):
    reason = f"{errors.short(host)} is neither a dotted IPv4 address (four numbers 0..255) nor a"
    reason += " hostname (a resolver would read it as a number)"
  elif len(host) > 253 or not all(_LABEL.fullmatch(p) for p in host.removesuffix(".").split(".")):
    reason = f"{errors.short(host)} is not a hostname (letters, digits and '-' between dots)"
  return None if reason is None else f"{_ADDRESS_FORM} ({reason})"


def _is_ip(text: str, kind: type[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
  try:
    kind(text)
  except ValueError:
    return False
  return True


def _reads_as_number(host: str) -> bool:
  """Whether a resolver reads ``host`` as a number (``999``, ``127.1``, ``0x7f``, ``1.2.3.4.5``)."""
  if host.removesuffix(".").rsplit(".", 1)[-1].isdigit():  # a top-level domain is never numeric
    return True
  try:
    socket.inet_aton(host)
  except OSError:
    return False
  return True


def parse_address(fn: str, address: Any, *, arg: str = "coordinator_address") -> tuple[str, int]:
  """``"HOST:PORT"`` as ``(host, port)`` (an IPv6 host without its brackets), or a clear
  error naming ``fn`` and ``arg`` (see :func:`address_problem`)."""
  problem = address_problem(address)
  if problem is not None:
    raise errors.value_error(
      fn,
      arg,
      problem,
      errors.short(address),
      "Pass e.g. '127.0.0.1:12345' (the address of process 0).",
    )
  host, _, port = address.rpartition(":")
  return host.removeprefix("[").removesuffix("]"), int(port)


class _Refused(Exception):
  """Process 0 refused the study: ``timeout`` says whether it was for lack of time."""

  def __init__(self, message: str, *, timeout: bool = False):
    super().__init__(message)
    self.timeout = timeout

  def raised(self) -> Exception:
    kind = TimeoutError if self.timeout else ValueError
    return kind(f"{_PREFIX}initialize: {self}.")


class _Stranger(Exception):
  """The other end does not speak this handshake (another program, or another jdrop)."""


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
  conn.sendall((json.dumps({"protocol": _PROTOCOL, **message}) + "\n").encode())


def _receive(conn: socket.socket, deadline: float) -> dict[str, Any] | None:
  """One handshake message from ``conn`` before ``deadline``; None if the peer closed first.

  Raises:
    _Stranger: for anything but one JSON line of this protocol, or more than
      ``_MAX_MESSAGE`` bytes.
    OSError: on a time-out or a network error.
  """
  data = b""
  while not data.endswith(b"\n"):
    if len(data) > _MAX_MESSAGE:
      raise _Stranger
    conn.settimeout(max(deadline - time.monotonic(), 1e-3))
    chunk = conn.recv(4096)
    if not chunk:
      if data:
        raise _Stranger
      return None
    data += chunk
  try:
    message = json.loads(data)
  except ValueError:
    raise _Stranger from None
  if not isinstance(message, dict) or message.get("protocol") != _PROTOCOL:
    raise _Stranger
  return message


def rendezvous(
  address: str,
  *,
  num_processes: int,
  process_id: int,
  timeout: float,
  study: dict[str, Any] | None = None,
) -> None:
  """Checks, before JAX's runtime starts, that the processes agree; raises if they do not.

  Process 0 listens on the coordinator's address (that address only, so it must be one of
  process 0's machine); every other process connects (retrying until ``timeout``) and sends
  its ``num_processes``, ``process_id`` and ``study`` (a JSON dict describing the
  computation), tagged with the handshake's protocol name. Process 0 checks that every id in
  1..N-1 arrives once, with its own N and study, answers everyone, and frees the port for
  JAX's coordinator. A connection that does not speak the protocol (a port scanner, another
  program on the port) is turned away without failing the others; a process that reaches
  something other than a jdrop coordinator says so. ``jax.distributed.initialize`` itself
  aborts the process (a C++ fatal error with a stack trace, after its timeout) when the
  coordinator is unreachable or a process is missing; this turns those cases into Python
  exceptions within ``timeout`` seconds, in every process that is running.

  Raises:
    TimeoutError: the coordinator could not be reached, or processes were missing, within
      ``timeout`` seconds.
    ValueError: the processes disagree on the number of processes, an id, or the study, or
      something other than a jdrop coordinator answered.
    OSError: process 0 cannot listen on the coordinator's address.
  """
  host, port = parse_address(_PREFIX + "initialize", address)
  deadline = time.monotonic() + timeout
  hello = {"num_processes": num_processes, "process_id": process_id, "study": study or {}}
  try:
    if process_id != 0:
      _join(host, port, hello, deadline, timeout)
    else:  # also alone: listening proves that the address is this machine's
      _gather(host, port, hello, deadline, timeout)
  except _Refused as refused:
    raise refused.raised() from None


def _join(host: str, port: int, hello: dict[str, Any], deadline: float, timeout: float) -> None:
  """A process other than 0: reach process 0, say hello, and wait for its verdict."""
  last_error: OSError | None = None
  while (remaining := deadline - time.monotonic()) > 0:
    try:
      conn = socket.create_connection((host, port), timeout=min(remaining, 5.0))
      break
    except OSError as err:
      last_error = err
      time.sleep(min(0.2, max(deadline - time.monotonic(), 0)))
  else:
    raise _Refused(
      f"could not reach the coordinator at {host}:{port} within {timeout:g} s"
      f" ({last_error}); start process 0, and check the address, the port and the firewall",
      timeout=True,
    )
  with conn:
    try:
      _send(conn, hello)
      reply = _receive(conn, deadline)
    except _Stranger:
      raise _Refused(
        f"something other than a jdrop coordinator answered at {host}:{port} (it does not"
        f" speak {_PROTOCOL}); check the address and the port, and that every process runs"
        " the same jdrop version"
      ) from None
    except OSError:
      reply = {"error": f"no answer from the coordinator within {timeout:g} s", "timeout": True}
  if reply is None:
    raise _Refused(
      f"the coordinator at {host}:{port} closed the connection without answering (did"
      " process 0 stop?)"
    )
  if not reply.get("ok"):
    message = reply.get("error", f"the coordinator at {host}:{port} refused without a reason")
    raise _Refused(str(message), timeout=bool(reply.get("timeout")))


def _listener(host: str, port: int) -> socket.socket:
  """A socket listening on ``host:port`` only, or an OSError that says why it cannot."""
  try:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    server = socket.socket(family, kind, proto)
  except OSError as err:
    raise OSError(
      f"{_PREFIX}initialize: process 0 cannot listen on {host}:{port} ({err}); pass an"
      " address of process 0's machine as the coordinator."
    ) from err
  try:
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(address)
  except OSError as err:
    server.close()
    raise OSError(
      f"{_PREFIX}initialize: process 0 cannot listen on {host}:{port} ({err.strerror});"
      " pass an address of process 0's machine and a free port as the coordinator."
    ) from err
  return server


def _gather(host: str, port: int, hello: dict[str, Any], deadline: float, timeout: float) -> None:
  """Process 0: wait for every other process, check it, answer all of them."""
  num_processes = hello["num_processes"]
  joined: set[int] = set()
  conns: list[socket.socket] = []
  strangers = 0
  refused: _Refused | None = None
  with _listener(host, port) as server:
    server.listen(num_processes)
    try:
      while refused is None and len(joined) < num_processes - 1:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          missing = sorted(set(range(1, num_processes)) - joined)
          turned_away = (
            f"; {strangers} connection(s) that did not speak {_PROTOCOL} were turned away"
            if strangers
            else ""
          )
          refused = _Refused(
            f"only {len(joined)} of the {num_processes - 1} other processes joined within"
            f" {timeout:g} s (missing process ids: {missing}); start them with the same"
            f" number of processes and the coordinator's address{turned_away}",
            timeout=True,
          )
          break
        server.settimeout(remaining)
        try:
          conn, _ = server.accept()
        except OSError:
          continue
        try:
          message = _receive(conn, min(deadline, time.monotonic() + _HELLO_SECONDS))
        except (_Stranger, OSError):
          message = None
        if message is None:  # not a jdrop process: turn it away, keep waiting for the others
          strangers += 1
          with contextlib.suppress(OSError):
            _send(conn, {"error": f"this port is a {_PROTOCOL} coordinator"})
          conn.close()
          continue
        conns.append(conn)
        problem = _check_peer(hello, message, joined)
        if problem is None:
          joined.add(message["process_id"])
        else:
          refused = _Refused(problem)
      reply = {"ok": True}
      if refused is not None:
        reply = {"error": str(refused), "timeout": refused.timeout}
      for conn in conns:
        try:
          _send(conn, reply)
          conn.settimeout(max(deadline - time.monotonic(), 1.0))
          conn.recv(1)  # let the peer close first, so no TIME_WAIT is left on this port
        except OSError:
          pass
    finally:
      for conn in conns:
        conn.close()
  if refused is not None:
    raise refused


def _check_peer(mine: dict[str, Any], theirs: dict[str, Any], joined: set[int]) -> str | None:
  """Why another process's hello does not match process 0's, or None."""
  process_id, count = theirs.get("process_id"), theirs.get("num_processes")
  if not isinstance(process_id, int) or not isinstance(count, int):
    return "something other than a jdrop process connected to the coordinator's port"
  if count != mine["num_processes"]:
    return (
      f"mismatched process counts: process {process_id} was started with"
      f" num_processes={count}, process 0 with num_processes={mine['num_processes']}"
    )
  if not 0 < process_id < count:
    return f"process id {process_id} is out of range for {count} processes (0..{count - 1})"
  if process_id in joined:
    return f"two processes were started with process_id={process_id}"
  theirs_study = theirs.get("study", {})
  differ = sorted(
    k for k in {*mine["study"], *theirs_study} if mine["study"].get(k) != theirs_study.get(k)
  )
  if differ:
    return (
      f"process {process_id} runs a different study from process 0 (they differ in"
      f" {', '.join(differ)}); start every process with the same arguments"
    )
  return None


def initialize(
  coordinator_address: str,
  *,
  num_processes: int,
  process_id: int,
  timeout: float = 60.0,
  study: dict[str, Any] | None = None,
) -> None:
  """Starts ``jax.distributed`` for a multi-process study, failing fast on one line.

  Runs :func:`rendezvous` (every process reaches process 0 and agrees on the number of
  processes and on ``study``), then ``jax.distributed.initialize`` with CPU collectives
  over gloo. Afterwards ``jax.devices()`` lists every process's devices and
  :func:`compare_orders` shards its masks over all of them. Call it before any other JAX
  computation, in every process, with the same ``coordinator_address`` (process 0's host
  and a free port) and ``num_processes``. Forced host devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2``) give each process several CPU
  devices.

  Once started, JAX's runtime watches every process: when one dies or stops answering for
  ``max(10, timeout)`` seconds, it ends every other process with a C++ fatal error (SIGABRT
  and a stack trace), which no Python code can catch. ``python -m jdrop mc`` therefore runs
  this, and the computation, in a child process and reports the child's fate on one line.

  Args:
    coordinator_address: ``"HOST:PORT"`` of process 0, an address of process 0's machine
      (JAX's coordinator listens there only, as does the handshake).
    num_processes: the number of processes, at least 1.
    process_id: this process's id in ``0 .. num_processes - 1``.
    timeout: seconds to wait for the other processes (also JAX's initialization timeout,
      and at least 10, its heartbeat and shutdown timeouts).
    study: a JSON-serialisable dict that must be equal in every process.

  Raises:
    TimeoutError, ValueError, OSError: see :func:`rendezvous`.
  """
  fn = _PREFIX + "initialize"
  parse_address(fn, coordinator_address)
  num_processes = _check_count(fn, "num_processes", num_processes, upper=2**16, example="2")
  if isinstance(process_id, (bool, np.bool_)) or not isinstance(process_id, (int, np.integer)):
    raise errors.type_error(
      fn, "process_id", "must be an integer", errors.short(process_id), "Pass e.g. process_id=0."
    )
  if not 0 <= process_id < num_processes:
    raise errors.value_error(
      fn,
      "process_id",
      f"must be in 0..{num_processes - 1} for num_processes={num_processes}",
      int(process_id),
      "Number the processes 0, 1, ..., num_processes - 1.",
    )
  timeout = _check_real(fn, "timeout", timeout, positive=True)
  if timeout > MAX_TIMEOUT:  # JAX's timeouts are C ints of seconds
    raise errors.value_error(
      fn, "timeout", f"must be at most {MAX_TIMEOUT} seconds (a week)", timeout,
      "Pass e.g. timeout=60.",
    )  # fmt: skip
  start = time.monotonic()
  rendezvous(
    coordinator_address,
    num_processes=num_processes,
    process_id=int(process_id),
    timeout=timeout,
    study=study,
  )
  if jax.config.jax_cpu_collectives_implementation is None:  # older JAX had no default
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  remaining = max(1, math.ceil(timeout - (time.monotonic() - start)))
  seconds = max(10, math.ceil(timeout))
  jax.distributed.initialize(
    coordinator_address,
    num_processes=num_processes,
    process_id=int(process_id),
    initialization_timeout=remaining,
    coordinator_bind_address=coordinator_address,  # where the handshake listened, not [::]
    heartbeat_timeout_seconds=seconds,
    shutdown_timeout_seconds=seconds,
  )
