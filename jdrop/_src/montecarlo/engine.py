r"""The engine: both orders of dropout over many masks, chunked and sharded (``compare_orders``).

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

import functools
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

from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks
from jdrop._src import order
from jdrop._src.montecarlo.common import MAX_MASKS
from jdrop._src.montecarlo.common import PREFIX
from jdrop._src.montecarlo.common import Comparison
from jdrop._src.montecarlo.common import Moments
from jdrop._src.montecarlo.common import check_devices
from jdrop._src.montecarlo.common import check_not_traced
from jdrop._src.montecarlo.common import default_rtol
from jdrop._src.montecarlo.common import disagreement
from jdrop._src.montecarlo.common import representable
from jdrop._src.montecarlo.exact import exact_reference

# Default chunk: about this many elements per device and step, and at most this many masks.
# CPUs want a chunk that stays in cache; a GPU wants thousands of masks per step (measured on
# an H200: 4096 masks of 4096 elements per step run 12x faster than 64).
_AXIS = "masks"  # the mesh axis that the mask index is sharded along
_CHUNK = {"cpu": (2**18, 2**12)}
_ACCELERATOR_CHUNK = (2**24, 2**16)
_PROGRESS_CALLS = 100  # with a progress callback, the loop is split into this many calls


# ----------------------------------------------------------------------------
# Chunked, sharded accumulation.


class _Totals(NamedTuple):
  """Running totals of one device (or, after the final merge, of all of them)."""

  seen: jax.Array  # int32: how many masks
  pre_mean: jax.Array
  pre_m2: jax.Array  # sum of squared deviations from the mean
  kept: jax.Array  # int32 per element: masks that kept it (post's sufficient statistic)
  mismatches: jax.Array  # int32: masks on which the orders disagree
  max_diff: jax.Array


def _merge(a: _Totals, b: _Totals) -> _Totals:
  """The totals of two disjoint sets of masks: chunks into a device, devices into one.

  The mean and ``M2`` follow Chan et al.'s parallel update; an empty ``b`` is a no-op.
  """
  count = a.seen + b.seen
  fraction = (b.seen / jnp.maximum(count, 1)).astype(a.pre_mean.dtype)
  delta = b.pre_mean - a.pre_mean
  mean = jnp.where(
    jnp.isfinite(delta),
    a.pre_mean + delta * fraction,
    a.pre_mean * (1 - fraction) + b.pre_mean * fraction,  # inf and finite: inf, not NaN
  )
  m2 = a.pre_m2 + b.pre_m2 + delta * delta * (a.seen.astype(mean.dtype) * fraction)
  nonempty = b.seen > 0
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
  fast: bool,
) -> _Program:
  """The compiled programs for one (f, x shape, dtype, key impl, chunk, devices, fast)."""
  acc = masks.compute_dtype(dtype)
  mesh = Mesh(np.array(devices), (_AXIS,))
  num_devices = len(devices)

  def zeros() -> _Totals:
    count = jnp.zeros((num_devices,), jnp.int32)
    stat = jnp.zeros((num_devices, *shape), acc)
    kept = jnp.zeros((num_devices, *shape), jnp.int32)
    return _Totals(count, stat, stat, kept, count, jnp.zeros((num_devices,), acc))

  def local_steps(
    totals: _Totals,
    key_data: jax.Array,
    x: jax.Array,
    keep: jax.Array,
    num_masks: jax.Array,
    first_step: jax.Array,
    num_steps: jax.Array,
    rtol: jax.Array,
  ) -> _Totals:
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
    shift = exact_reference(f, x, keep).pre.mean  # for the one-pass chunk moments of pre
    shift = jnp.where(jnp.isfinite(shift), shift, 0)  # an infinite mean stays inf, not NaN
    device = lax.axis_index(_AXIS).astype(jnp.uint32)
    offsets = jnp.arange(chunk, dtype=jnp.uint32)

    def draw(index: jax.Array) -> jax.Array:
      return masks.draw_keep_mask(jax.random.fold_in(key, index), shape, keep, fast=fast)

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
      mismatches, max_diff = disagreement(pre.astype(acc), post.astype(acc), rtol, valid)
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
  fast: bool = False,
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
    fast: a Python bool: draw mask ``i`` as ``keep_mask(fold_in(key, i), x.shape,
      rate=rate, fast=True)``, a cheaper mask whose keep probability ``q`` is ``1 - rate``
      rounded to a multiple of ``2**-16``. Both orders scale by that ``q``, so the
      statistics are those of dropout at the rate ``1 - q`` (within ``2**-17`` of
      ``rate``; compare with :func:`exact_moments` at that rate for an exact match).

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
  fn = PREFIX + "compare_orders"
  check_not_traced(fn, key=key, x=x, rate=rate)
  key = masks.check_key(fn, key)
  x = _dropout.check_x(fn, x)
  masks.check_rate(fn, rate)
  fast = masks.check_fast(fn, fast)
  f = order.resolve_activation(fn, f)
  num_masks = errors.check_count(fn, "num_masks", num_masks, upper=MAX_MASKS, example="10_000")
  acc = masks.compute_dtype(x.dtype)  # the statistics' dtype: x's, at least float32
  rtol = default_rtol(x.dtype) if rtol is None else errors.check_real(fn, "rtol", rtol)
  if not representable(rtol, acc):
    raise errors.value_error(
      fn, "rtol", f"must be finite in {acc.name}, the dtype it is compared in", rtol,
      "Pass e.g. rtol=1e-6.",
    )  # fmt: skip
  devices = check_devices(fn, devices)
  if chunk_size is None:
    chunk_size = _default_chunk(x.size, devices[0].platform)
  chunk_size = errors.check_count(fn, "chunk_size", chunk_size, upper=2**20, example="256")
  if progress is not None and not callable(progress):
    raise errors.type_error(
      fn, "progress", "must be a callable or None", errors.short(progress),
      "Pass e.g. progress=lambda done, total: print(done, total).",
    )  # fmt: skip
  reference = order._apply(fn, f, x)  # also checks that f keeps the shape and dtype

  impl = str(jax.random.key_impl(key))
  program = _program(f, x.shape, x.dtype, impl, chunk_size, devices, fast)
  keep = np.asarray(masks.keep_probability(rate, fast=fast))
  # Host (numpy) arguments: under jax.distributed every process passes the same values and
  # jit treats them as replicated over the global mesh.
  arguments = (
    np.asarray(jax.random.key_data(key)),
    np.asarray(x),
    keep,
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
  count = int(result.seen)
  fx_kept = _dropout.masked(reference, jnp.ones(x.shape, bool), jnp.asarray(keep))
  return Comparison(
    pre=_moments(result.pre_mean, result.pre_m2, count, acc),
    post=_two_valued(result.kept, count, np.asarray(fx_kept), acc),
    reference=reference,
    mismatch_fraction=int(result.mismatches) / count,
    max_abs_diff=float(result.max_diff),
    num_masks=count,
    rate=float(np.asarray(rate)),
    rtol=rtol,
    fast=fast,
  )
