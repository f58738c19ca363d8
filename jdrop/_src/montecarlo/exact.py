"""Exact references: the moments of both orders in closed form, or summed over every mask."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jdrop._src import activations
from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks
from jdrop._src import order
from jdrop._src.montecarlo.common import PREFIX
from jdrop._src.montecarlo.common import Exact
from jdrop._src.montecarlo.common import Moments
from jdrop._src.montecarlo.common import default_rtol
from jdrop._src.montecarlo.common import disagreement

MAX_ENUMERATED_SIZE = 16  # exact_moments of a non-elementwise f sums over 2**16 masks at most


# ----------------------------------------------------------------------------
# Exact references.


def _two_point(a: jax.Array, b: ArrayLike, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
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


def exact_reference(
  f: Callable, x: jax.Array, keep: jax.Array, invalid: Any = None, *, elementwise: bool = True
) -> Exact:
  acc = masks.compute_dtype(x.dtype)
  keep_acc = keep.astype(acc)
  fx = order._apply(PREFIX + "exact_moments", f, x)
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

    def nan_if_invalid(value: jax.Array, invalid: jax.Array = invalid) -> jax.Array:
      return jnp.where(invalid, jnp.nan, value)

    pre = (nan_if_invalid(pre[0]), nan_if_invalid(pre[1]))
    post = (nan_if_invalid(post[0]), nan_if_invalid(post[1]))
  zero = jnp.zeros(x.shape, acc)
  return Exact(pre=Moments(*pre, zero), post=Moments(*post, zero), reference=fx)


exact_core = jax.jit(exact_reference, static_argnums=0, static_argnames="elementwise")


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
  mismatches, _ = disagreement(got, want, rtol, jnp.ones(2, bool))
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
  fn = PREFIX + "exact_moments"
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
  return exact_core(f, x, keep, invalid, elementwise=elementwise is not False)
