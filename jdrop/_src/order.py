"""The two orders of dropout and an activation, on one shared mask.

* **pre-activation** dropout, ``f(D(x))``: "dense -> dropout -> f";
* **post-activation** dropout, ``D(f(x))``: "dense -> f -> dropout".

Both draw their mask from the same key with :func:`jdrop.keep_mask`, so for one
key they see the same mask and any difference is due to the order alone.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
from jax.typing import ArrayLike

from jdrop._src import activations
from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks

ORDERS = ("pre", "post")


class Orders(NamedTuple):
  """Both orders computed on one mask: ``pre = f(D(x))``, ``post = D(f(x))``."""

  pre: jax.Array
  post: jax.Array
  mask: jax.Array


def resolve_activation(fn: str, activation: Any) -> Callable[[jax.Array], jax.Array]:
  """A callable activation, or a name looked up in :mod:`jdrop.activations`."""
  if isinstance(activation, str):
    return activations.lookup(fn, "activation", activation)
  if not callable(activation):
    raise errors.type_error(
      fn,
      "activation",
      "must be a callable or a registry name",
      errors.short(activation),
      "Pass e.g. jax.nn.relu or 'relu' (see jdrop.activations.names()).",
    )
  return activation


def _apply(fn: str, f: Callable, x: jax.Array) -> jax.Array:
  """``f(x)``, or a ValueError naming ``fn`` if ``f`` cannot keep the shape and dtype of ``x``.

  ValueErrors and TypeErrors of ``f`` pass through (jdrop's activations explain their
  parameters); any other failure on ``x`` (glu's assertion that an axis is even) says so.
  """
  failure = None
  try:
    y = f(x)
  except (ValueError, TypeError):
    raise
  except Exception as err:
    y, failure = None, err
  if not isinstance(y, jax.Array) or y.shape != x.shape or y.dtype != x.dtype:
    got = f"shape {getattr(y, 'shape', None)} and dtype {getattr(y, 'dtype', None)}"
    if failure is not None:
      got = f"a function that raised {type(failure).__name__}: {failure}"
    raise errors.value_error(
      fn,
      "activation",
      f"must map x of shape {x.shape} and dtype {x.dtype} to the same"
      " shape and dtype, so both orders can share one mask",
      errors.Described(got),
      "Use an elementwise activation (see jdrop.activations.info(name).elementwise).",
    ) from failure
  return y


def both_orders(
  key: ArrayLike,
  x: ArrayLike,
  activation: Callable | str,
  *,
  rate: ArrayLike,
  broadcast_dims: Sequence[int] = (),
  fast: bool = False,
) -> Orders:
  r"""Pre- and post-activation dropout of ``x`` on the same mask.

  .. math::
     \text{pre} = f\!\left(\frac{m \odot x}{1 - r}\right), \qquad
     \text{post} = \frac{m \odot f(x)}{1 - r}.

  They agree for every mask and ``x`` exactly when ``f(0) = 0`` and
  ``f(x / q) = f(x) / q`` (``q = 1 - r``), e.g. for relu; ``f(0) = 0`` alone
  (tanh, gelu, elu) is not enough.

  Args:
    key: a PRNG key (typed or raw), shared by both orders.
    x: a floating-point array (the pre-activations).
    activation: an elementwise callable or a name from :mod:`jdrop.activations`.
    rate: the drop probability in [0, 1]; may be traced.
    broadcast_dims: axes along which the mask is shared.
    fast: a Python bool: draw the fast mask of :func:`jdrop.keep_mask` (both orders
      then scale by its keep probability, ``1 - rate`` rounded to a multiple of ``2**-16``).

  Returns:
    ``Orders(pre, post, mask)``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> x = jnp.linspace(-2.0, 2.0, 8)
    >>> out = jdrop.both_orders(jax.random.key(0), x, "relu", rate=0.5)
    >>> bool((out.pre == out.post).all())
    True
    >>> out = jdrop.both_orders(jax.random.key(0), x, "tanh", rate=0.5)
    >>> bool((out.pre == out.post).all())
    False
  """
  fn = "jdrop.both_orders"
  key = masks.check_key(fn, key)
  x = _dropout.check_x(fn, x)
  masks.check_rate(fn, rate)
  f = resolve_activation(fn, activation)
  dims = _dropout.check_broadcast_dims(fn, broadcast_dims, x.ndim)
  fast = masks.check_fast(fn, fast)
  keep, invalid = masks.keep_probability(rate, fast=fast), masks.invalid_rate(rate)
  mask = masks.draw_keep_mask(key, _dropout.mask_shape(x.shape, dims), keep, fast=fast)
  pre = _apply(fn, f, _dropout.masked(x, mask, keep, invalid=invalid))
  post = _dropout.masked(_apply(fn, f, x), mask, keep, invalid=invalid)
  return Orders(pre=pre, post=post, mask=mask)


def activation_dropout(
  key: ArrayLike,
  x: ArrayLike,
  activation: Callable | str,
  *,
  rate: ArrayLike,
  order: str,
  broadcast_dims: Sequence[int] = (),
  deterministic: bool | ArrayLike = False,
  fast: bool = False,
) -> jax.Array:
  r"""An activation combined with dropout in a chosen order.

  ``order="pre"`` computes ``f(dropout(x))`` ("dense -> dropout -> f"),
  ``order="post"`` computes ``dropout(f(x))`` ("dense -> f -> dropout"). With
  ``deterministic=True`` both are ``f(x)``. The mask depends only on the key,
  so the two orders with one key share it (see :func:`jdrop.both_orders`).

  Args:
    key: a PRNG key (typed or raw).
    x: a floating-point array.
    activation: a callable or a name from :mod:`jdrop.activations`.
    rate: the drop probability in [0, 1]; may be traced.
    order: ``"pre"`` or ``"post"``.
    broadcast_dims: axes along which the mask is shared.
    deterministic: if True, no dropout (evaluation mode).
    fast: a Python bool: use :func:`jdrop.dropout`'s fast mask.

  Returns:
    An array with the shape and dtype of ``x``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> x = jnp.array([-1.0, 0.5, 2.0])
    >>> jdrop.activation_dropout(jax.random.key(0), x, "relu", rate=0.5, order="post",
    ...                          deterministic=True)
    Array([0. , 0.5, 2. ], dtype=float32)
  """
  fn = "jdrop.activation_dropout"
  if order not in ORDERS:
    raise errors.value_error(
      fn,
      "order",
      "must be 'pre' or 'post'",
      order,
      "Use order='pre' for f(dropout(x)), 'post' for dropout(f(x)).",
    )
  f = resolve_activation(fn, activation)
  x = _dropout.check_x(fn, x)
  if order == "pre":
    return _apply(fn, f, _dropout._dropout(fn, key, x, rate, broadcast_dims, deterministic, fast))
  return _dropout._dropout(fn, key, _apply(fn, f, x), rate, broadcast_dims, deterministic, fast)
