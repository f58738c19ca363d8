"""What the Monte-Carlo modules share: the result types, the argument checks, the tolerances."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdrop._src import errors
from jdrop._src import masks

PREFIX = "jdrop.montecarlo."
MAX_MASKS = 2**31 - 1  # mask indices are uint32 and counts int32
DEFAULT_ULPS = 4  # default rtol: 4 machine epsilons of x's dtype


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
    rate: the drop rate, as requested.
    rtol: the relative tolerance used for ``mismatch_fraction``.
    fast: whether the masks were the fast ones (keep probability ``1 - rate`` rounded to a
      multiple of ``2**-16``; see ``compare_orders``).
  """

  pre: Moments
  post: Moments
  reference: jax.Array
  mismatch_fraction: float
  max_abs_diff: float
  num_masks: int
  rate: float
  rtol: float
  fast: bool = False


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


def check_not_traced(fn: str, **values: Any) -> None:
  for name, value in values.items():
    if masks.is_traced(value):
      raise errors.type_error(
        fn,
        name,
        "must be a concrete value",
        errors.Described(f"a traced {jax.typeof(value)}"),
        "This function runs its own compiled loop; call it outside jit, vmap and grad.",
      )


def check_devices(fn: str, devices: Any) -> tuple[jax.Device, ...]:
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


def disagreement(
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
