"""Flax linen modules around the pure dropout functions; no maths in them.

Each module merges its ``deterministic`` flag, validates its ``rate``, takes a key from its
``rng_collection`` and calls one pure function of :mod:`jdrop`. It calls ``make_rng`` exactly
where ``flax.linen.Dropout`` does: not when the module is deterministic or the rate is 0 or 1
(the pure functions return ``x`` or zeros there without touching their key). Every other rng
stream of a parent model therefore stays as it was.

What swapping ``flax.linen.Dropout`` for :class:`Dropout` guarantees is stated in
:mod:`jdrop.flax`.

Unlike ``flax.linen.Dropout``, the modules accept a traced ``rate`` or ``deterministic``
(a module built inside ``jax.jit``); they then always draw a key, since whether it is needed
is only known at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any
from typing import ClassVar

import flax.errors
import flax.linen as nn
import jax
from jax.typing import ArrayLike

from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks
from jdrop._src import order as _order

# ----------------------------------------------------------------------------
# The linen-specific part: merging ``deterministic`` and calling ``make_rng``.


def _merge_deterministic(fn: str, field: Any, call: Any) -> Any:
  """``flax.linen.merge_param`` for ``deterministic``: its ``ValueError`` and words, and a fix."""
  if field is None and call is None:
    raise errors.value_error(
      fn,
      "deterministic",
      "must be given either as a module field or at call time",
      None,
      "Pass deterministic=True/False to the constructor or to the call (not both)."
      ' (Flax: Parameter "deterministic" must be passed to the constructor or at call time.)',
    )
  if field is not None and call is not None:
    raise errors.value_error(
      fn,
      "deterministic",
      f"was given both as a module field ({field!r}) and at call time",
      call,
      "Pass it in one place only, e.g. construct with deterministic=None."
      ' (Flax: Parameter "deterministic" was passed to the constructor and at call time.'
      " Should be passed just once.)",
    )
  return field if call is None else call


class MissingRngError(flax.errors.InvalidRngError, ValueError):
  """A non-deterministic module without its rng stream.

  Both the exception Flax raises there (``flax.errors.InvalidRngError``, so code written
  against ``flax.linen.Dropout`` still catches it) and jdrop's ``ValueError`` for bad input.
  """


def _resolve(
  module: nn.Module, fn: str, deterministic: Any, rng: Any, *, allow_one: bool = True
) -> tuple[Any, jax.Array]:
  """The merged ``deterministic`` flag and the key to pass to the pure function."""
  deterministic = _merge_deterministic(fn, module.deterministic, deterministic)
  if not _dropout.needs_key(fn, module.rate, deterministic, allow_one=allow_one):
    return deterministic, _dropout.unused_key()
  if rng is not None:
    return deterministic, rng
  try:
    return deterministic, module.make_rng(module.rng_collection)
  except flax.errors.InvalidRngError as err:
    scope = module.scope
    where = "/".join(scope.path if scope else ()) or type(module).__name__
    message = errors.message(
      fn,
      "rngs",
      f"must hold a {module.rng_collection!r} (or 'params') key for the non-deterministic"
      f" module {where!r}",
      errors.Described(f"the streams {sorted(scope.rngs if scope else ())}"),
      f"Pass rngs={{{module.rng_collection!r}: jax.random.key(0)}} to apply(), rng=key to the"
      " call, or deterministic=True.",
    )
    raise MissingRngError(f"{message} (Flax: {err})") from err


# ----------------------------------------------------------------------------
# The modules: each names its pure function and the fields it passes on.


class _Stochastic(nn.Module):
  """What every module here shares: merge ``deterministic``, find the key, call ``_pure``.

  A subclass sets ``_pure`` (the pure function, called as ``_pure(key, inputs,
  *positional, rate=..., deterministic=..., **options)``), the names of the fields passed
  ``_positional`` and as ``_options``, and ``_allow_one`` (whether rate 1 is allowed).
  """

  _pure: ClassVar[Callable[..., jax.Array]]
  _positional: ClassVar[tuple[str, ...]] = ()
  _options: ClassVar[tuple[str, ...]] = ("broadcast_dims", "fast")
  _allow_one: ClassVar[bool] = True

  def __call__(
    self, inputs: ArrayLike, deterministic: bool | None = None, rng: ArrayLike | None = None
  ) -> jax.Array:
    """Applies the module's pure function; ``rng`` overrides the key from ``rng_collection``.

    Args:
      inputs: the array to apply dropout to.
      deterministic: merged with the field of the same name (exactly one must be given).
      rng: a key to use instead of one drawn from ``rng_collection``.
    """
    fn = f"jdrop.flax.{type(self).__name__}"
    deterministic, key = _resolve(self, fn, deterministic, rng, allow_one=self._allow_one)
    positional = [getattr(self, name) for name in self._positional]
    options = {name: getattr(self, name) for name in self._options}
    if "fast" in options:
      options["fast"] = masks.check_fast(fn, options["fast"])
    pure = type(self)._pure
    return pure(key, inputs, *positional, rate=self.rate, deterministic=deterministic, **options)


class Dropout(_Stochastic, nn.Dropout):
  """Inverted dropout (:func:`jdrop.dropout`), a drop-in for ``flax.linen.Dropout``.

  A subclass of ``flax.linen.Dropout`` that overrides its call, so everything in Flax that
  selects modules by type (``isinstance`` filters for ``capture_intermediates``,
  ``nn.intercept_methods``, ...) treats it as Flax's dropout. Same fields, call signature and
  rng use: for the same rngs every output is bit-identical to Flax's in float32 (inputs in
  bfloat16 and float16 are scaled in float32 and rounded once, so they may differ from
  Flax's by an ulp or two). The same exceptions too: a missing rng raises
  ``flax.errors.InvalidRngError`` (which is also a ``ValueError``) and a ``deterministic``
  given twice or never a ``ValueError``, each message holding Flax's words and jdrop's fix.

  One intended difference: a rate outside [0, 1] raises ``ValueError`` where Flax returns
  zeros (rate > 1) or scales by ``1 / (1 - rate)`` (rate < 0) without a word. The ``rate``
  may also be traced.

  Attributes:
    rate: the drop probability in [0, 1] (*not* the keep probability).
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, return the inputs unchanged; merged with the call's argument,
      exactly one of the two must be given.
    rng_collection: the rng stream the mask's key is drawn from.
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import flax.linen as nn, jax, jax.numpy as jnp, jdrop.flax
    >>> x = jnp.ones((2, 4))
    >>> rngs = {"dropout": jax.random.key(1)}
    >>> y = jdrop.flax.Dropout(0.5).apply({}, x, deterministic=False, rngs=rngs)
    >>> bool((y == nn.Dropout(0.5).apply({}, x, deterministic=False, rngs=rngs)).all())
    True
    >>> isinstance(jdrop.flax.Dropout(0.5), nn.Dropout)
    True
    >>> jdrop.flax.Dropout(0.5, deterministic=True).apply({}, jnp.ones(3))
    Array([1., 1., 1.], dtype=float32)
  """

  _pure = staticmethod(_dropout.dropout)

  rate: ArrayLike  # type: ignore[assignment]  # wider than Flax's float: a traced rate works
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  fast: bool = False


class AlphaDropout(_Stochastic):
  """Alpha dropout for SELU networks (:func:`jdrop.alpha_dropout`).

  Fields, call signature and rng use as in :class:`Dropout`.

  Attributes:
    rate: the drop probability in [0, 1].
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, return the inputs unchanged (merged with the call's argument).
    rng_collection: the rng stream the mask's key is drawn from.
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop, jdrop.flax
    >>> x = jnp.linspace(-2.0, 2.0, 8).reshape(2, 4)
    >>> y = jdrop.flax.AlphaDropout(0.2).apply({}, x, deterministic=False, rng=jax.random.key(1))
    >>> bool((y == jdrop.alpha_dropout(jax.random.key(1), x, rate=0.2)).all())
    True
  """

  _pure = staticmethod(_dropout.alpha_dropout)

  rate: ArrayLike
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  fast: bool = False


class GaussianDropout(_Stochastic):
  """Multiplicative gaussian noise with dropout's variance (:func:`jdrop.gaussian_dropout`).

  Fields, call signature and rng use as in :class:`Dropout`; ``rate`` must be below 1.

  Attributes:
    rate: the drop rate whose variance to match, in [0, 1).
    deterministic: if True, return the inputs unchanged (merged with the call's argument).
    rng_collection: the rng stream the noise's key is drawn from.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop, jdrop.flax
    >>> x = jnp.ones((2, 4))
    >>> y = jdrop.flax.GaussianDropout(0.1).apply({}, x, deterministic=False, rng=jax.random.key(2))
    >>> bool((y == jdrop.gaussian_dropout(jax.random.key(2), x, rate=0.1)).all())
    True
  """

  _pure = staticmethod(_dropout.gaussian_dropout)
  _options = ()
  _allow_one = False

  rate: ArrayLike
  deterministic: bool | None = None
  rng_collection: str = "dropout"


class DropPath(_Stochastic):
  """Stochastic depth: drops whole examples along axis 0 (:func:`jdrop.drop_path`).

  Fields, call signature and rng use as in :class:`Dropout`. Use it on a residual branch:
  ``x + DropPath(rate)(branch(x), deterministic=not train)``.

  Attributes:
    rate: the drop probability in [0, 1].
    deterministic: if True, return the inputs unchanged (merged with the call's argument).
    rng_collection: the rng stream the mask's key is drawn from.
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop.flax
    >>> y = jdrop.flax.DropPath(0.5, deterministic=False).apply(
    ...   {}, jnp.ones((2, 4)), rngs={"dropout": jax.random.key(0)})
    >>> bool(((y == 0).all(axis=1) | (y == 2).all(axis=1)).all())
    True
  """

  _pure = staticmethod(_dropout.drop_path)
  _options = ("fast",)

  rate: ArrayLike
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  fast: bool = False


class ActivationDropout(_Stochastic):
  """An activation and dropout in a chosen order (:func:`jdrop.activation_dropout`).

  ``order="pre"`` computes ``activation(dropout(x))`` ("dense -> dropout -> f"),
  ``order="post"`` computes ``dropout(activation(x))`` ("dense -> f -> dropout"); when
  deterministic, both are ``activation(x)``. For one key the two orders share the mask.
  Other fields, call signature and rng use as in :class:`Dropout`.

  Attributes:
    activation: an elementwise callable or a name from :mod:`jdrop.activations`.
    rate: the drop probability in [0, 1].
    order: ``"pre"`` or ``"post"``.
    broadcast_dims: axes along which one mask value is shared.
    deterministic: if True, no dropout (merged with the call's argument).
    rng_collection: the rng stream the mask's key is drawn from.
    fast: draw the fast mask (:func:`jdrop.keep_mask` with ``fast=True``): not Flax's bits,
      cheaper, the keep probability rounded to a multiple of ``2**-16``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop.flax
    >>> x = jnp.linspace(-1.0, 1.0, 8).reshape(2, 4)
    >>> rngs = {"dropout": jax.random.key(0)}
    >>> pre = jdrop.flax.ActivationDropout("relu", 0.5, "pre").apply(
    ...   {}, x, deterministic=False, rngs=rngs)
    >>> post = jdrop.flax.ActivationDropout("relu", 0.5, "post").apply(
    ...   {}, x, deterministic=False, rngs=rngs)
    >>> bool((pre == post).all())   # relu commutes with dropout
    True
  """

  _pure = staticmethod(_order.activation_dropout)
  _positional = ("activation",)
  _options = ("order", "broadcast_dims", "fast")

  activation: Callable[[jax.Array], jax.Array] | str
  rate: ArrayLike
  order: str
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = "dropout"
  fast: bool = False
