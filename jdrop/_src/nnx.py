"""Flax NNX modules around the pure dropout functions; no maths in them.

Each module resolves its ``deterministic`` flag, validates its ``rate``, takes a key from its
rngs and calls one pure function of :mod:`jdrop`. Construction forks the ``rng_collection``
stream as ``flax.nnx.Dropout`` does, and a call draws a key exactly where it does: not when the
module is deterministic or the rate is 0 or 1. The ``Rngs`` of a model are therefore consumed
as before, and swapping ``flax.nnx.Dropout`` for :class:`Dropout` leaves every dropout output
bit-identical in float32 (on GPU a later matmul can round differently by about an ulp, as XLA
may fuse the mask's code into its kernel; on CPU the whole model is bit-identical).
``model.train()``, ``model.eval()``, ``set_attributes(deterministic=...)`` and ``nnx.view``
work as for flax's modules.

Unlike ``flax.nnx.Dropout``, the modules accept a traced ``rate``: an array rate is part of the
module's state, so under ``nnx.jit`` it can change without recompiling. A traced rate always
draws a key, since whether it is needed is only known at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx
from jax.typing import ArrayLike

from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks
from jdrop._src import order as _order

RngsArg = nnx.Rngs | nnx.RngStream | None


class _Stochastic(nnx.Module):
  """What every module here shares: its rng stream, its mode and how a call finds its key."""

  _allow_one = True  # whether the pure function accepts rate 1

  def __init__(
    self,
    fn: str,
    rate: ArrayLike,
    *,
    deterministic: bool | None,
    rng_collection: str,
    rngs: RngsArg,
  ) -> None:
    self.rate = rate
    masks.check_rate(fn, self.rate, allow_one=self._allow_one)  # before the stream is forked
    self.deterministic = deterministic
    self.rng_collection = rng_collection
    if isinstance(rngs, nnx.Rngs):
      self.rngs = rngs[rng_collection].fork()
    elif isinstance(rngs, nnx.RngStream):
      self.rngs = rngs.fork()
    elif rngs is None:
      self.rngs = nnx.data(None)
    else:
      raise errors.type_error(
        fn,
        "rngs",
        "must be an nnx.Rngs, an nnx.RngStream or None",
        errors.Described(f"an object of type {type(rngs).__name__}"),
        "Pass rngs=nnx.Rngs(dropout=0), or pass a key at call time.",
      )

  def _resolve(
    self, fn: str, deterministic: bool | None, rngs: RngsArg | jax.Array
  ) -> tuple[Any, jax.Array]:
    """The call's ``deterministic`` flag and the key to pass to the pure function."""
    if deterministic is None:
      deterministic = self.deterministic
    if deterministic is None:
      raise errors.value_error(
        fn,
        "deterministic",
        "must be given to the constructor, to the call or with nnx.view",
        None,
        "Pass deterministic=True/False, or call model.eval() / model.train().",
      )
    if not _dropout.needs_key(fn, self.rate, deterministic, allow_one=self._allow_one):
      return deterministic, _dropout.unused_key()
    if rngs is None:
      rngs = self.rngs
    if isinstance(rngs, nnx.Rngs):
      return deterministic, rngs[self.rng_collection]()
    if isinstance(rngs, nnx.RngStream):
      return deterministic, rngs()
    if isinstance(rngs, jax.Array):
      return deterministic, rngs
    if rngs is None:
      raise errors.value_error(
        fn,
        "rngs",
        "must be given to the constructor or to the call when the module is not deterministic",
        None,
        "Construct with rngs=nnx.Rngs(dropout=0), call with rngs=..., or set deterministic=True.",
      )
    raise errors.type_error(
      fn,
      "rngs",
      "must be an nnx.Rngs, an nnx.RngStream or a PRNG key",
      errors.Described(f"an object of type {type(rngs).__name__}"),
      "Pass rngs=nnx.Rngs(dropout=0) or a key from jax.random.key.",
    )

  def set_view(self, deterministic: bool | None = None) -> None:
    """Used by ``nnx.view``.

    Args:
      deterministic: if True, disables dropout.
    """
    if deterministic is not None:
      self.deterministic = deterministic


class Dropout(_Stochastic):
  """Inverted dropout (:func:`jdrop.dropout`), a drop-in for ``flax.nnx.Dropout``.

  Same constructor, call signature, mode switching and rng use as ``flax.nnx.Dropout``: for
  the same ``Rngs`` the outputs are bit-identical in float32 and the streams advance alike
  (inputs in bfloat16 and float16 are scaled in float32 and rounded once, so they may differ
  from flax's by one ulp). The ``rate`` may also be an array, traced under ``nnx.jit``.

  Args:
    rate: the drop probability in [0, 1] (*not* the keep probability).
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, return the inputs unchanged. Overridden by the call's argument;
      set by ``model.train()`` / ``model.eval()``.
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.

  Example:
    >>> import jax.numpy as jnp, jdrop.nnx
    >>> from flax import nnx
    >>> x = jnp.ones((2, 4))
    >>> ours = jdrop.nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> theirs = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> bool((ours(x) == theirs(x)).all()) and bool((ours(x) == theirs(x)).all())
    True
    >>> ours.eval()
    >>> ours(jnp.ones(3))
    Array([1., 1., 1.], dtype=float32)
  """

  def __init__(
    self,
    rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
  ) -> None:
    self.broadcast_dims = broadcast_dims
    super().__init__(
      "jdrop.nnx.Dropout",
      rate,
      deterministic=deterministic,
      rng_collection=rng_collection,
      rngs=rngs,
    )

  def __call__(
    self,
    inputs: ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: RngsArg | jax.Array = None,
  ) -> jax.Array:
    """Applies :func:`jdrop.dropout`; ``deterministic`` and ``rngs`` override the module's."""
    deterministic, key = self._resolve("jdrop.nnx.Dropout", deterministic, rngs)
    return _dropout.dropout(
      key, inputs, rate=self.rate, broadcast_dims=self.broadcast_dims, deterministic=deterministic
    )


class AlphaDropout(_Stochastic):
  """Alpha dropout for SELU networks (:func:`jdrop.alpha_dropout`).

  Constructor, call signature and rng use as in :class:`Dropout`.

  Args:
    rate: the drop probability in [0, 1].
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, return the inputs unchanged (overridden by the call's argument).
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop, jdrop.nnx
    >>> x = jnp.linspace(-2.0, 2.0, 8).reshape(2, 4)
    >>> y = jdrop.nnx.AlphaDropout(0.2)(x, rngs=jax.random.key(1))
    >>> bool((y == jdrop.alpha_dropout(jax.random.key(1), x, rate=0.2)).all())
    True
  """

  def __init__(
    self,
    rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
  ) -> None:
    self.broadcast_dims = broadcast_dims
    super().__init__(
      "jdrop.nnx.AlphaDropout",
      rate,
      deterministic=deterministic,
      rng_collection=rng_collection,
      rngs=rngs,
    )

  def __call__(
    self,
    inputs: ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: RngsArg | jax.Array = None,
  ) -> jax.Array:
    """Applies :func:`jdrop.alpha_dropout`; ``deterministic`` and ``rngs`` override the module's."""
    deterministic, key = self._resolve("jdrop.nnx.AlphaDropout", deterministic, rngs)
    return _dropout.alpha_dropout(
      key, inputs, rate=self.rate, broadcast_dims=self.broadcast_dims, deterministic=deterministic
    )


class GaussianDropout(_Stochastic):
  """Multiplicative gaussian noise with dropout's variance (:func:`jdrop.gaussian_dropout`).

  Constructor, call signature and rng use as in :class:`Dropout`; ``rate`` must be below 1.

  Args:
    rate: the drop rate whose variance to match, in [0, 1).
    deterministic: if True, return the inputs unchanged (overridden by the call's argument).
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop, jdrop.nnx
    >>> x = jnp.ones((2, 4))
    >>> y = jdrop.nnx.GaussianDropout(0.1)(x, rngs=jax.random.key(2))
    >>> bool((y == jdrop.gaussian_dropout(jax.random.key(2), x, rate=0.1)).all())
    True
  """

  _allow_one = False

  def __init__(
    self,
    rate: ArrayLike,
    *,
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
  ) -> None:
    super().__init__(
      "jdrop.nnx.GaussianDropout",
      rate,
      deterministic=deterministic,
      rng_collection=rng_collection,
      rngs=rngs,
    )

  def __call__(
    self,
    inputs: ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: RngsArg | jax.Array = None,
  ) -> jax.Array:
    """Applies :func:`jdrop.gaussian_dropout`; ``deterministic`` and ``rngs`` override."""
    deterministic, key = self._resolve("jdrop.nnx.GaussianDropout", deterministic, rngs)
    return _dropout.gaussian_dropout(key, inputs, rate=self.rate, deterministic=deterministic)


class DropPath(_Stochastic):
  """Stochastic depth: drops whole examples along axis 0 (:func:`jdrop.drop_path`).

  Constructor, call signature and rng use as in :class:`Dropout`. Use it on a residual
  branch: ``x + self.drop_path(self.branch(x))``.

  Args:
    rate: the drop probability in [0, 1].
    deterministic: if True, return the inputs unchanged (overridden by the call's argument).
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.

  Example:
    >>> import jax.numpy as jnp, jdrop.nnx
    >>> from flax import nnx
    >>> y = jdrop.nnx.DropPath(0.5, rngs=nnx.Rngs(dropout=0))(jnp.ones((2, 4)))
    >>> bool(((y == 0).all(axis=1) | (y == 2).all(axis=1)).all())
    True
  """

  def __init__(
    self,
    rate: ArrayLike,
    *,
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
  ) -> None:
    super().__init__(
      "jdrop.nnx.DropPath",
      rate,
      deterministic=deterministic,
      rng_collection=rng_collection,
      rngs=rngs,
    )

  def __call__(
    self,
    inputs: ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: RngsArg | jax.Array = None,
  ) -> jax.Array:
    """Applies :func:`jdrop.drop_path`; ``deterministic`` and ``rngs`` override the module's."""
    deterministic, key = self._resolve("jdrop.nnx.DropPath", deterministic, rngs)
    return _dropout.drop_path(key, inputs, rate=self.rate, deterministic=deterministic)


class ActivationDropout(_Stochastic):
  """An activation and dropout in a chosen order (:func:`jdrop.activation_dropout`).

  ``order="pre"`` computes ``activation(dropout(x))`` ("dense -> dropout -> f"),
  ``order="post"`` computes ``dropout(activation(x))`` ("dense -> f -> dropout"); when
  deterministic, both are ``activation(x)``. For one key the two orders share the mask.
  Constructor, call signature and rng use otherwise as in :class:`Dropout`.

  Args:
    activation: an elementwise callable or a name from :mod:`jdrop.activations`.
    rate: the drop probability in [0, 1].
    order: ``"pre"`` or ``"post"``.
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, no dropout (overridden by the call's argument).
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop.nnx
    >>> x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    >>> pre = jdrop.nnx.ActivationDropout("tanh", 0.5, order="pre")
    >>> post = jdrop.nnx.ActivationDropout("tanh", 0.5, order="post")
    >>> key = jax.random.key(0)
    >>> bool((pre(x, rngs=key) == post(x, rngs=key)).all())   # tanh does not commute
    False
  """

  def __init__(
    self,
    activation: Callable[[jax.Array], jax.Array] | str,
    rate: ArrayLike,
    *,
    order: str,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
  ) -> None:
    self.activation = activation
    self.order = order
    self.broadcast_dims = broadcast_dims
    super().__init__(
      "jdrop.nnx.ActivationDropout",
      rate,
      deterministic=deterministic,
      rng_collection=rng_collection,
      rngs=rngs,
    )

  def __call__(
    self,
    inputs: ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: RngsArg | jax.Array = None,
  ) -> jax.Array:
    """Applies :func:`jdrop.activation_dropout`; ``deterministic`` and ``rngs`` override."""
    deterministic, key = self._resolve("jdrop.nnx.ActivationDropout", deterministic, rngs)
    return _order.activation_dropout(
      key,
      inputs,
      self.activation,
      rate=self.rate,
      order=self.order,
      broadcast_dims=self.broadcast_dims,
      deterministic=deterministic,
    )
