"""Flax NNX modules around the pure dropout functions; no maths in them.

Each module resolves its ``deterministic`` flag, validates its ``rate``, takes a key from its
rngs and calls one pure function of :mod:`jdrop`. Construction forks the ``rng_collection``
stream as ``flax.nnx.Dropout`` does, and a call draws a key exactly where it does: not when the
module is deterministic or the rate is 0 or 1. The ``Rngs`` of a model are therefore consumed
as before. ``model.train()``, ``model.eval()``, ``set_attributes(deterministic=...)`` and
``nnx.view`` work as for Flax's modules.

What swapping ``flax.nnx.Dropout`` for :class:`Dropout` guarantees, for the same ``Rngs``:
every dropout output is bit-identical in float32, eager or under ``nnx.jit`` (bfloat16 and
float16 inputs may differ from Flax's by up to 1 and 2 ulp), and a jitted model is equal to
Flax's to rounding, not bit for bit, since XLA may fuse jdrop's mask code into neighbouring
reductions or matmul kernels differently (:mod:`jdrop.flax` has a measured example).

Unlike ``flax.nnx.Dropout``, the modules accept a traced ``rate``: an array rate is part of the
module's state, so under ``nnx.jit`` it can change without recompiling. A traced rate always
draws a key, since whether it is needed is only known at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import ClassVar

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

  # A subclass sets ``_pure`` (the pure function, called as ``_pure(key, inputs,
  # *positional, rate=..., deterministic=..., **options)``), the attributes passed
  # ``_positional`` and as ``_options``, and ``_allow_one`` (whether rate 1 is allowed).
  _pure: ClassVar[Callable[..., jax.Array]]
  _positional: ClassVar[tuple[str, ...]] = ()
  _options: ClassVar[tuple[str, ...]] = ()
  _allow_one: ClassVar[bool] = True

  def __init__(
    self,
    rate: ArrayLike,
    *,
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
    fast: bool = False,
  ) -> None:
    fn = self._name()
    self.rate = rate
    masks.check_rate(fn, self.rate, allow_one=self._allow_one)  # before the stream is forked
    self.fast = masks.check_fast(fn, fast)
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
        "Pass rngs=nnx.Rngs(dropout=0), or pass a key at call time."
        f" (Flax: rngs must be a Rngs, RngStream or None, but got {type(rngs)}.)",
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
        "Pass deterministic=True/False, or call model.eval() / model.train()."
        f" (Flax: No `deterministic` argument was provided to {type(self).__name__} as either"
        " a __call__ argument or class attribute.)",
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
        "Construct with rngs=nnx.Rngs(dropout=0), call with rngs=..., or set deterministic=True."
        f" (Flax: `deterministic` is False, but no `rngs` argument was provided to"
        f" {type(self).__name__} as either a __call__ argument or class attribute.)",
      )
    raise errors.type_error(
      fn,
      "rngs",
      "must be an nnx.Rngs, an nnx.RngStream or a PRNG key",
      errors.Described(f"an object of type {type(rngs).__name__}"),
      "Pass rngs=nnx.Rngs(dropout=0) or a key from jax.random.key."
      f" (Flax: rngs must be a Rngs, RngStream or jax.Array, but got {type(rngs)}.)",
    )

  def __call__(
    self,
    inputs: ArrayLike,
    *,
    deterministic: bool | None = None,
    rngs: RngsArg | jax.Array = None,
  ) -> jax.Array:
    """Applies the module's pure function; ``deterministic`` and ``rngs`` override the module's.

    Args:
      inputs: the array to apply dropout to.
      deterministic: overrides the module's mode for this call.
      rngs: an ``nnx.Rngs``, an ``nnx.RngStream`` or a key to use instead of the module's.
    """
    deterministic, key = self._resolve(self._name(), deterministic, rngs)
    positional = [getattr(self, name) for name in self._positional]
    options = {name: getattr(self, name) for name in self._options}
    pure = type(self)._pure
    return pure(key, inputs, *positional, rate=self.rate, deterministic=deterministic, **options)

  def _name(self) -> str:
    return f"jdrop.nnx.{type(self).__name__}"

  def set_view(self, deterministic: bool | None = None) -> None:
    """Used by ``nnx.view``.

    Args:
      deterministic: if True, disables dropout.
    """
    if deterministic is not None:
      self.deterministic = deterministic


class _Broadcast(_Stochastic):
  """A module whose mask may be shared along ``broadcast_dims``."""

  _options: ClassVar[tuple[str, ...]] = ("broadcast_dims", "fast")

  def __init__(
    self,
    rate: ArrayLike,
    *,
    broadcast_dims: Sequence[int] = (),
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
    fast: bool = False,
  ) -> None:
    self.broadcast_dims = broadcast_dims
    super().__init__(
      rate, deterministic=deterministic, rng_collection=rng_collection, rngs=rngs, fast=fast
    )


# Our `rate` is wider (an array rate works) than flax.nnx.Dropout's float: mypy's misc.
class Dropout(_Broadcast, nnx.Dropout):  # type: ignore[misc]
  """Inverted dropout (:func:`jdrop.dropout`), a drop-in for ``flax.nnx.Dropout``.

  A subclass of ``flax.nnx.Dropout`` that overrides its call, so everything in Flax that
  selects modules by type (``model.set_attributes(nnx.Dropout, ...)``,
  ``nnx.view(model, only=nnx.Dropout, ...)``, ``isinstance`` filters over ``nnx.iter_graph``)
  treats it as Flax's dropout. Same constructor, attributes, call signature, mode switching
  and rng use: for the same ``Rngs`` every output is bit-identical to Flax's in float32 and
  the streams advance alike (inputs in bfloat16 and float16 are scaled in float32 and
  rounded once, so they may differ from Flax's by an ulp or two). The same exceptions too
  (``ValueError`` for a missing ``rngs`` or ``deterministic``, ``TypeError`` for ``rngs`` of
  a wrong type), each message holding Flax's words and jdrop's fix.

  One intended difference: a rate outside [0, 1] raises ``ValueError`` where Flax returns
  zeros (rate > 1) or scales by ``1 / (1 - rate)`` (rate < 0) without a word. The ``rate``
  may also be an array, traced under ``nnx.jit``.

  Args:
    rate: the drop probability in [0, 1] (*not* the keep probability).
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, return the inputs unchanged. Overridden by the call's argument;
      set by ``model.train()`` / ``model.eval()``.
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import jax.numpy as jnp, jdrop.nnx
    >>> from flax import nnx
    >>> x = jnp.ones((2, 4))
    >>> ours = jdrop.nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> theirs = nnx.Dropout(0.5, rngs=nnx.Rngs(dropout=0))
    >>> bool((ours(x) == theirs(x)).all()) and bool((ours(x) == theirs(x)).all())
    True
    >>> isinstance(ours, nnx.Dropout)
    True
    >>> ours.eval()
    >>> ours(jnp.ones(3))
    Array([1., 1., 1.], dtype=float32)
  """

  _pure = staticmethod(_dropout.dropout)


class AlphaDropout(_Broadcast):
  """Alpha dropout for SELU networks (:func:`jdrop.alpha_dropout`).

  Constructor, call signature and rng use as in :class:`Dropout`.

  Args:
    rate: the drop probability in [0, 1].
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, return the inputs unchanged (overridden by the call's argument).
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop, jdrop.nnx
    >>> x = jnp.linspace(-2.0, 2.0, 8).reshape(2, 4)
    >>> y = jdrop.nnx.AlphaDropout(0.2)(x, rngs=jax.random.key(1))
    >>> bool((y == jdrop.alpha_dropout(jax.random.key(1), x, rate=0.2)).all())
    True
  """

  _pure = staticmethod(_dropout.alpha_dropout)


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

  _pure = staticmethod(_dropout.gaussian_dropout)
  _allow_one = False

  def __init__(
    self,
    rate: ArrayLike,
    *,
    deterministic: bool | None = False,
    rng_collection: str = "dropout",
    rngs: RngsArg = None,
  ) -> None:  # no fast: gaussian noise has no mask
    super().__init__(rate, deterministic=deterministic, rng_collection=rng_collection, rngs=rngs)


class DropPath(_Stochastic):
  """Stochastic depth: drops whole examples along axis 0 (:func:`jdrop.drop_path`).

  Constructor, call signature and rng use as in :class:`Dropout`. Use it on a residual
  branch: ``x + self.drop_path(self.branch(x))``.

  Args:
    rate: the drop probability in [0, 1].
    deterministic: if True, return the inputs unchanged (overridden by the call's argument).
    rng_collection: the stream of ``rngs`` to fork for this module.
    rngs: an ``nnx.Rngs`` or ``nnx.RngStream`` to fork, or None to pass rngs at call time.
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import jax.numpy as jnp, jdrop.nnx
    >>> from flax import nnx
    >>> y = jdrop.nnx.DropPath(0.5, rngs=nnx.Rngs(dropout=0))(jnp.ones((2, 4)))
    >>> bool(((y == 0).all(axis=1) | (y == 2).all(axis=1)).all())
    True
  """

  _pure = staticmethod(_dropout.drop_path)
  _options = ("fast",)


class ActivationDropout(_Broadcast):
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
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop.nnx
    >>> x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    >>> pre = jdrop.nnx.ActivationDropout("tanh", 0.5, order="pre")
    >>> post = jdrop.nnx.ActivationDropout("tanh", 0.5, order="post")
    >>> key = jax.random.key(0)
    >>> bool((pre(x, rngs=key) == post(x, rngs=key)).all())   # tanh does not commute
    False
  """

  _pure = staticmethod(_order.activation_dropout)
  _positional = ("activation",)
  _options = ("order", "broadcast_dims", "fast")

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
    fast: bool = False,
  ) -> None:
    self.activation = activation
    self.order = order
    super().__init__(
      rate,
      broadcast_dims=broadcast_dims,
      deterministic=deterministic,
      rng_collection=rng_collection,
      rngs=rngs,
      fast=fast,
    )
