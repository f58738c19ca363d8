"""The dropout family: inverted dropout, masks applied as values, alpha and
gaussian dropout, and drop path. All pure, key first, hyperparameters
keyword-only, ``rate`` always the **drop** probability.

The shared contract (tested in ``tests/test_dropout.py``):

* ``rate`` may be traced (jit, vmap over rates, grad): there is no Python ``if``
  on a traced value. A concrete rate is validated eagerly; a traced rate outside
  its range makes the output NaN rather than silently wrong.
* ``rate = 1`` gives zeros with zero (not NaN) gradients; ``rate = 0`` and
  ``deterministic=True`` return ``x`` itself.
* Dropped positions are selected with ``jnp.where``, so a dropped ``inf`` or
  ``NaN`` is 0.
* The output dtype is the input dtype. Low-precision inputs (bf16, f16, the 8- and 4-bit
  floats) are scaled in float32 and rounded once, so the keep probability is never rounded
  to bf16. The rounding of the output remains: a kept ``x`` becomes ``round(x / q)``, whose
  mean over the masks is ``q * round(x / q)``, not ``x`` (see :func:`dropout`).
* ``fast=True`` (a Python bool) draws the cheaper masks of ``jdrop.keep_mask(...,
  fast=True)`` and scales by their keep probability, ``1 - rate`` rounded to a multiple of
  ``2**-16``: dropout at that rounded rate, exactly, and unbiased.
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
from jax.typing import ArrayLike

from jdrop._src import errors
from jdrop._src import masks

# ----------------------------------------------------------------------------
# Shared helpers.


def check_x(fn: str, x: Any) -> jax.Array:
  """Returns ``x`` as a floating-point array, or raises a TypeError saying how to fix it."""
  try:
    array = jnp.asarray(x)
  except (TypeError, ValueError, jax.errors.JaxRuntimeError) as err:  # e.g. float6 on XLA:CPU
    raise errors.type_error(
      fn,
      "x",
      "must be an array of floats that this JAX backend supports",
      errors.short(x),
      "Pass a jax or numpy array, e.g. of float32.",
    ) from err
  if not jnp.issubdtype(array.dtype, jnp.floating):
    raise errors.type_error(
      fn,
      "x",
      "must have a floating-point dtype",
      errors.Described(f"an array of dtype {array.dtype}"),
      "Convert it first, e.g. x.astype(jnp.float32).",
    )
  if not np.asarray(0.0, array.dtype) == 0:  # float8_e8m0fnu: powers of two and NaN only
    raise errors.type_error(
      fn,
      "x",
      "must have a floating-point dtype that can hold 0 (a dropped unit)",
      errors.Described(f"an array of dtype {array.dtype}"),
      "Convert it first, e.g. x.astype(jnp.float32).",
    )
  return array


def check_broadcast_dims(fn: str, broadcast_dims: Any, ndim: int) -> tuple[int, ...]:
  """Normalises ``broadcast_dims`` to non-negative axes of an ``ndim``-array, or raises."""
  if isinstance(broadcast_dims, (int, np.integer)) and not isinstance(broadcast_dims, bool):
    broadcast_dims = (broadcast_dims,)
  if not isinstance(broadcast_dims, Sequence) or any(
    isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) for d in broadcast_dims
  ):
    raise errors.type_error(
      fn,
      "broadcast_dims",
      "must be a sequence of ints",
      errors.short(broadcast_dims),
      "Pass the axes that share one mask, e.g. broadcast_dims=(0,).",
    )
  out = []
  for d in broadcast_dims:
    if not ndim:
      raise errors.value_error(
        fn,
        "broadcast_dims",
        "must be empty for a scalar x",
        tuple(broadcast_dims),
        "A scalar has no axes to share a mask along; pass broadcast_dims=().",
      )
    if not -ndim <= d < ndim:
      raise errors.value_error(
        fn,
        "broadcast_dims",
        f"must hold axes of x, which has {ndim} dimensions",
        tuple(broadcast_dims),
        f"Use axes in [-{ndim}, {ndim}).",
      )
    out.append(int(d) % ndim)
  if len(set(out)) != len(out):
    raise errors.value_error(
      fn, "broadcast_dims", "must not repeat an axis", tuple(broadcast_dims), "List each axis once."
    )
  return tuple(out)


def mask_shape(shape: tuple[int, ...], broadcast_dims: tuple[int, ...]) -> tuple[int, ...]:
  """``shape`` with 1 along every axis in ``broadcast_dims``."""
  return tuple(1 if axis in broadcast_dims else n for axis, n in enumerate(shape))


def needs_key(fn: str, rate: Any, deterministic: Any, *, allow_one: bool = True) -> bool:
  """Validates ``rate`` and ``deterministic``; True where a dropout function draws from its key.

  False exactly where the pure functions return early (a concrete ``deterministic=True``,
  or a concrete rate of 0 or 1), which is also exactly where ``flax.linen.Dropout`` and
  ``flax.nnx.Dropout`` skip drawing an rng: the modules use this test to consume the rng
  stream as Flax does.
  """
  masks.check_rate(fn, rate, allow_one=allow_one)
  _check_deterministic(fn, deterministic)
  return not (
    _is_concrete_true(deterministic)
    or _is_concrete_value(rate, 0.0)
    or _is_concrete_value(rate, 1.0)
  )


def unused_key() -> jax.Array:
  """A valid key for a call that :func:`needs_key` says will not draw from it."""
  return jax.random.key(0)


def _without_key(x: jax.Array, rate: Any, deterministic: Any) -> jax.Array:
  """The output where :func:`needs_key` is False: ``x``, or zeros at rate 1 in training."""
  if _is_concrete_true(deterministic) or not _is_concrete_value(rate, 1.0):
    return x
  zeros = jnp.zeros_like(x)
  return jnp.where(deterministic, x, zeros) if masks.is_traced(deterministic) else zeros


def _is_concrete_true(flag: Any) -> bool:
  return not masks.is_traced(flag) and bool(flag)


def _is_concrete_value(rate: Any, value: float) -> bool:
  return not masks.is_traced(rate) and float(np.asarray(rate)) == value


def _finish(
  out: jax.Array, x: jax.Array, invalid: jax.Array | None, deterministic: Any
) -> jax.Array:
  """NaN-poisons the output of a traced invalid rate and applies a traced ``deterministic``."""
  if invalid is not None:
    out = jnp.where(invalid, jnp.array(jnp.nan, out.dtype), out)
  if masks.is_traced(deterministic):
    out = jnp.where(deterministic, x, out)
  return out


def _check_deterministic(fn: str, deterministic: Any) -> None:
  if masks.is_traced(deterministic):
    if jnp.ndim(deterministic) or jnp.result_type(deterministic) != jnp.bool_:
      raise errors.type_error(
        fn,
        "deterministic",
        "must be a bool scalar",
        errors.Described(f"a traced {jax.typeof(deterministic)}"),
        "Pass True or False.",
      )
    return
  if not isinstance(deterministic, (bool, np.bool_)) and not (
    isinstance(deterministic, (jax.Array, np.ndarray))
    and deterministic.dtype == np.bool_
    and not deterministic.ndim
  ):
    raise errors.type_error(
      fn,
      "deterministic",
      "must be a bool",
      errors.short(deterministic),
      "Pass True (no dropout, eval mode) or False (training).",
    )


def compiled(body: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """Jits ``body(*arrays, **hyperparameters)``, the thin-wrapper/jitted-core split.

  Hyperparameters that are Python values (a bool flag, a tuple of axes, None)
  become static arguments; arrays (the keep probability, computed by the caller
  with :func:`jdrop._src.masks.keep_probability`) stay dynamic, so a new rate does
  not recompile. Eager calls run one cached executable instead of dispatching
  every operation.
  """

  @functools.partial(jax.jit, static_argnums=(0,))
  def jitted(
    static: tuple[tuple[str, Any], ...], dynamic: dict[str, Any], *arrays: Any
  ) -> jax.Array:
    return body(*arrays, **dict(static), **dynamic)

  @functools.wraps(body)
  def call(*arrays: Any, **params: Any) -> jax.Array:
    static, dynamic = [], {}
    for name, value in params.items():
      if masks.is_traced(value) or isinstance(value, jax.Array):
        dynamic[name] = value
      elif isinstance(value, (np.ndarray, np.generic)):
        static.append((name, value.item()))
      else:
        static.append((name, value))
    return jitted(tuple(sorted(static)), dynamic, *arrays)

  call.__wrapped_jit__ = jitted  # type: ignore[attr-defined] # for tests of the cache
  return call


@compiled
def masked(x: jax.Array, mask: jax.Array, keep: jax.Array, *, invalid: Any = None) -> jax.Array:
  """:func:`apply_mask` on validated arguments (used by the orders and the modules)."""
  return _finish(_masked_scale(x, mask, keep), x, invalid, False)


def _masked_scale(x: jax.Array, mask: jax.Array, keep: jax.Array) -> jax.Array:
  """``where(mask, x / keep, 0)`` with the contract's dtype, zero and gradient rules.

  ``keep = 0`` (rate 1) gives zeros whatever the mask, with zero gradients: the
  division is by 1 there, never 0. ``x`` is selected before it is scaled too, so
  a dropped inf cannot give the rate a gradient of ``0 * inf = NaN``. Low
  precision ``x`` is divided in float32 and rounded once.
  """
  dtype = masks.compute_dtype(x.dtype)
  keep = keep.astype(dtype)
  positive = keep > 0
  mask = mask & positive
  x = jnp.where(mask, x, jnp.zeros((), x.dtype))
  scaled = (x.astype(dtype) / jnp.where(positive, keep, jnp.ones_like(keep))).astype(x.dtype)
  return jnp.where(mask, scaled, jnp.zeros((), x.dtype))


# ----------------------------------------------------------------------------
# Public functions.


def apply_mask(x: ArrayLike, mask: ArrayLike, *, rate: ArrayLike) -> jax.Array:
  r"""Applies a keep mask with inverted-dropout scaling: ``where(mask, x / (1 - rate), 0)``.

  .. math::
     \mathrm{apply\_mask}(x, m; r)_i = \begin{cases} x_i / (1 - r) & m_i \\
     0 & \text{otherwise} \end{cases}

  With a mask from :func:`jdrop.keep_mask` this is :func:`jdrop.dropout`; keeping
  the mask as a value lets both orders of dropout and an activation use the
  same mask. A dropped ``inf`` or ``NaN`` becomes 0. At ``rate=1`` the result is
  zeros whatever the mask (nothing can be scaled by ``1/0``).

  Args:
    x: a floating-point array.
    mask: a boolean array that broadcasts to ``x.shape`` (True = kept).
    rate: the drop probability the mask was drawn with, in [0, 1]; may be traced.

  Returns:
    An array with the shape and dtype of ``x``.

  Example:
    >>> import jax.numpy as jnp, jdrop
    >>> jdrop.apply_mask(jnp.array([1., 2., jnp.inf]), jnp.array([True, False, False]), rate=0.5)
    Array([2., 0., 0.], dtype=float32)
  """
  fn = "jdrop.apply_mask"
  x = check_x(fn, x)
  masks.check_rate(fn, rate)
  try:
    mask = jnp.asarray(mask)
  except (TypeError, ValueError) as err:
    raise errors.type_error(
      fn, "mask", "must be a boolean array", errors.short(mask), "Draw one with jdrop.keep_mask."
    ) from err
  if mask.dtype != jnp.bool_:
    raise errors.type_error(
      fn,
      "mask",
      "must be a boolean array",
      errors.Described(f"dtype {mask.dtype}"),
      "Draw one with jdrop.keep_mask or convert with mask.astype(bool).",
    )
  try:
    broadcast = jnp.broadcast_shapes(mask.shape, x.shape)
  except ValueError:
    broadcast = None
  if broadcast != x.shape:
    raise errors.value_error(
      fn,
      "mask",
      f"must broadcast to the shape of x {x.shape}",
      errors.Described(f"shape {mask.shape}"),
      "Draw the mask with the shape of x (or 1 along shared axes).",
    )
  return masked(x, mask, masks.keep_probability(rate), invalid=masks.invalid_rate(rate))


def dropout(
  key: ArrayLike,
  x: ArrayLike,
  *,
  rate: ArrayLike,
  broadcast_dims: Sequence[int] = (),
  deterministic: bool | ArrayLike = False,
  fast: bool = False,
) -> jax.Array:
  r"""Inverted dropout: zeroes each unit with probability ``rate``, scales the rest up.

  Kept units are scaled by ``1 / (1 - rate)``.

  .. math::
     D(x)_i = \frac{m_i x_i}{1 - r}, \qquad m_i \sim \mathrm{Bernoulli}(1 - r),

  so :math:`\mathbb{E}[D(x)] = x`. With ``broadcast_dims`` one mask value is
  shared along those axes (e.g. spatial dropout). For the same key and rate the
  output equals ``flax.linen.Dropout``'s bit for bit in float32, and the mask
  is :func:`jdrop.keep_mask`'s (Srivastava et al., JMLR 2014).

  In a low-precision dtype a kept unit is ``round(x / q)`` (computed in float32, rounded
  once), so :math:`\mathbb{E}[D(x)] = q\,\mathrm{round}(x / q)`: a relative bias of at most
  half an ulp, ``jnp.finfo(dtype).eps / 2`` (0.39% for bf16, 0.049% for f16, 6.25% for
  float8_e4m3fn) while ``x / q`` is a normal number of the dtype. For example ``1 / 0.9``
  rounds to 1.109375 in bf16, so bf16 dropout of ones at rate 0.1 has mean 0.9984375. The
  keep probability itself is never rounded.

  With ``fast=True`` the mask is :func:`jdrop.keep_mask`'s fast mask (not Flax's): each
  threefry2x32 block serves four elements (16-bit uniforms), so on CPU it runs about twice
  as fast. The keep probability is rounded to the nearest multiple of ``2**-16``,
  :math:`\tilde q`, both in the mask and in the scale: the result is dropout at the rate
  :math:`1 - \tilde q` (off by at most ``2**-17``), with :math:`\mathbb{E}[D(x)] = x`
  exactly. The contract is otherwise the same (traced rates, rate 0 and 1, a dropped
  ``inf`` or ``NaN`` is 0, dtypes); the gradient with respect to a traced rate is that of
  the unrounded ``1 / (1 - rate)`` scale.

  Args:
    key: a PRNG key (typed or raw); one key, use ``jax.vmap`` for a batch.
    x: a floating-point array.
    rate: the drop probability in [0, 1]; may be traced. ``rate=1`` returns
      zeros with zero gradients, ``rate=0`` returns ``x``.
    broadcast_dims: axes along which the mask is shared.
    deterministic: if True, return ``x`` unchanged (evaluation mode); may be a
      traced bool.
    fast: a Python bool: draw the fast mask described above instead of Flax's.

  Returns:
    An array with the shape and dtype of ``x``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> y = jdrop.dropout(jax.random.key(0), jnp.ones((2, 3)), rate=0.5)
    >>> sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
    >>> jdrop.dropout(jax.random.key(0), jnp.ones(3), rate=0.5, deterministic=True)
    Array([1., 1., 1.], dtype=float32)
    >>> y = jdrop.dropout(jax.random.key(0), jnp.ones(8), rate=0.5, fast=True)
    >>> sorted(set(y.tolist())) in ([0.0, 2.0], [0.0], [2.0])
    True
  """
  return _dropout("jdrop.dropout", key, x, rate, broadcast_dims, deterministic, fast)


def _dropout(
  fn: str, key: Any, x: Any, rate: Any, broadcast_dims: Any, deterministic: Any, fast: Any
) -> jax.Array:
  """:func:`dropout` with the public function's name ``fn`` in its error messages."""
  return _run(_dropout_core, fn, key, x, rate, broadcast_dims, deterministic, fast=fast)


def _run(
  core: Callable[..., jax.Array],
  fn: str,
  key: Any,
  x: Any,
  rate: Any,
  broadcast_dims: Any,
  deterministic: Any,
  *,
  allow_one: bool = True,
  **mask_options: Any,
) -> jax.Array:
  """Validates the arguments every dropout variant shares, then calls its jitted ``core``.

  A variant that draws a keep mask passes ``fast=...``; gaussian dropout, which draws no
  mask, passes nothing.
  """
  key = masks.check_key(fn, key)
  x = check_x(fn, x)
  broadcast_dims = check_broadcast_dims(fn, broadcast_dims, x.ndim)
  options = {name: masks.check_fast(fn, value) for name, value in mask_options.items()}
  if not needs_key(fn, rate, deterministic, allow_one=allow_one):
    return _without_key(x, rate, deterministic)
  return core(
    key,
    x,
    masks.keep_probability(rate, **options),
    invalid=masks.invalid_rate(rate, allow_one=allow_one),
    dims=broadcast_dims,
    deterministic=deterministic,
    **options,
  )


@compiled
def _dropout_core(
  key: jax.Array,
  x: jax.Array,
  keep: jax.Array,
  *,
  invalid: Any,
  dims: tuple[int, ...],
  deterministic: Any,
  fast: bool,
) -> jax.Array:
  mask = masks.draw_keep_mask(key, mask_shape(x.shape, dims), keep, fast=fast)
  return _finish(_masked_scale(x, mask, keep), x, invalid, deterministic)


def selu_constants() -> tuple[float, float]:
  r"""SELU's ``(scale, alpha)``, derived from the self-normalising fixed point.

  For :math:`z \sim N(0, 1)` SELU keeps mean 0 and variance 1 (Klambauer et al.,
  NeurIPS 2017, eq. 14). With :math:`\Phi` the normal CDF, the two conditions
  :math:`\mathbb{E}[\mathrm{selu}(z)] = 0` and :math:`\mathbb{E}[\mathrm{selu}(z)^2] = 1` give

  .. math::
     \alpha = \frac{1/\sqrt{2\pi}}{1/2 - e^{1/2}\Phi(-1)}, \qquad
     \lambda^{-2} = \tfrac12 + \alpha^2\left(e^2\Phi(-2) - 2e^{1/2}\Phi(-1) + \tfrac12\right).

  Example:
    >>> scale, alpha = selu_constants()
    >>> round(scale, 10), round(alpha, 10)
    (1.0507009874, 1.6732632424)
  """

  def phi_minus(t: float) -> float:  # Phi(-t)
    return 0.5 * math.erfc(t / math.sqrt(2.0))

  alpha = (1.0 / math.sqrt(2.0 * math.pi)) / (0.5 - math.exp(0.5) * phi_minus(1.0))
  second = 0.5 + alpha**2 * (
    math.exp(2.0) * phi_minus(2.0) - 2.0 * math.exp(0.5) * phi_minus(1.0) + 0.5
  )
  return 1.0 / math.sqrt(second), alpha


def alpha_dropout(
  key: ArrayLike,
  x: ArrayLike,
  *,
  rate: ArrayLike,
  broadcast_dims: Sequence[int] = (),
  deterministic: bool | ArrayLike = False,
  fast: bool = False,
) -> jax.Array:
  r"""Alpha dropout for SELU networks: keeps mean 0 and variance 1 at the fixed point.

  Dropped units take SELU's negative saturation value :math:`\alpha' = -\lambda\alpha`
  instead of 0, then an affine map restores the moments (Klambauer et al.,
  NeurIPS 2017, section "New Dropout Technique"). With keep probability
  :math:`q = 1 - r`:

  .. math::
     y = a\,(m x + (1 - m)\alpha') + b, \quad
     a = \left(q + \alpha'^2 q (1 - q)\right)^{-1/2}, \quad b = -a (1 - q)\alpha'.

  If ``x`` has mean 0 and variance 1, so has ``y``. ``rate=1`` returns zeros, the
  limit of ``y`` as ``q -> 0`` (a constant cannot have variance 1).

  Args:
    key: a PRNG key (typed or raw).
    x: a floating-point array (normally a SELU output).
    rate: the drop probability in [0, 1]; may be traced.
    broadcast_dims: axes along which the mask is shared.
    deterministic: if True, return ``x`` unchanged.
    fast: a Python bool: the fast mask of :func:`jdrop.keep_mask`, with ``q`` rounded to
      a multiple of ``2**-16`` in the mask and in ``a`` and ``b`` alike.

  Returns:
    An array with the shape and dtype of ``x``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> y = jdrop.alpha_dropout(jax.random.key(0), jnp.zeros(10_000), rate=0.2)
    >>> bool(abs(float(y.mean())) < 0.05)
    True
  """
  return _run(
    _alpha_dropout_core,
    "jdrop.alpha_dropout",
    key,
    x,
    rate,
    broadcast_dims,
    deterministic,
    fast=fast,
  )


@compiled
def _alpha_dropout_core(
  key: jax.Array,
  x: jax.Array,
  keep: jax.Array,
  *,
  invalid: Any,
  dims: tuple[int, ...],
  deterministic: Any,
  fast: bool,
) -> jax.Array:
  scale, alpha = selu_constants()
  saturation = -scale * alpha
  dtype = masks.compute_dtype(x.dtype)
  q = keep.astype(dtype)
  positive = q > 0
  safe_q = jnp.where(positive, q, jnp.ones_like(q))
  a = jnp.where(positive, (safe_q + saturation**2 * safe_q * (1 - safe_q)) ** -0.5, 0)
  # b = -a (1 - q) saturation >= 0. Subtracting -b rather than adding b keeps the sign
  # of a zero at q = 1 (x - (+0) == x, while -0 + 0 == +0), so a traced rate 0 is the
  # identity bit for bit.
  minus_b = a * (q - 1) * -saturation
  # The dropped value a * saturation + b is a * q * saturation: no cancellation near q = 0.
  dropped = a * q * saturation
  mask = masks.draw_keep_mask(key, mask_shape(x.shape, dims), keep, fast=fast)
  # Select x first so that a dropped inf cannot give the rate a NaN gradient.
  kept = a * jnp.where(mask, x, jnp.zeros((), x.dtype)).astype(dtype) - minus_b
  out = jnp.where(mask, kept, dropped).astype(x.dtype)
  return _finish(out, x, invalid, deterministic)


def gaussian_dropout(
  key: ArrayLike,
  x: ArrayLike,
  *,
  rate: ArrayLike,
  broadcast_dims: Sequence[int] = (),
  deterministic: bool | ArrayLike = False,
) -> jax.Array:
  r"""Multiplicative gaussian noise with the mean and variance of inverted dropout.

  .. math::
     y = x \cdot \varepsilon, \qquad \varepsilon \sim N\!\left(1, \frac{r}{1 - r}\right),

  the variance of :math:`m / (1 - r)` for :math:`m \sim \mathrm{Bernoulli}(1-r)`
  (Srivastava et al., JMLR 2014, section 10). Nothing is dropped, so an ``inf``
  or ``NaN`` in ``x`` stays one.

  ``rate`` must be below 1: the variance is infinite at 1. A concrete 1 raises a
  ValueError; a traced rate of 1 or more (or outside [0, 1)) returns NaN.

  Args:
    key: a PRNG key (typed or raw).
    x: a floating-point array.
    rate: the drop rate whose variance to match, in [0, 1); may be traced.
    broadcast_dims: axes along which one noise value is shared.
    deterministic: if True, return ``x`` unchanged.

  Returns:
    An array with the shape and dtype of ``x``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> y = jdrop.gaussian_dropout(jax.random.key(0), jnp.ones(100_000), rate=0.5)
    >>> bool(abs(float(y.var()) - 1.0) < 0.05)   # variance r / (1 - r) = 1
    True
  """
  return _run(
    _gaussian_dropout_core,
    "jdrop.gaussian_dropout",
    key,
    x,
    rate,
    broadcast_dims,
    deterministic,
    allow_one=False,
  )


@compiled
def _gaussian_dropout_core(
  key: jax.Array,
  x: jax.Array,
  keep: jax.Array,
  *,
  invalid: Any,
  dims: tuple[int, ...],
  deterministic: Any,
) -> jax.Array:
  dtype = masks.compute_dtype(x.dtype)
  q = keep.astype(dtype)
  safe_q = jnp.where(q > 0, q, jnp.ones_like(q))
  variance = (1 - safe_q) / safe_q
  # sqrt has an infinite slope at 0: take the gradient at variance 0 (rate 0, or a
  # rate that rounds to it) to be 0 instead of inf * 0 = NaN.
  positive = variance > 0
  std = jnp.where(positive, jnp.sqrt(jnp.where(positive, variance, 1)), 0)
  noise = 1 + std * jax.random.normal(key, mask_shape(x.shape, dims), dtype)
  out = (x.astype(dtype) * noise).astype(x.dtype)
  return _finish(out, x, invalid, deterministic)


def drop_path(
  key: ArrayLike,
  x: ArrayLike,
  *,
  rate: ArrayLike,
  deterministic: bool | ArrayLike = False,
  fast: bool = False,
) -> jax.Array:
  r"""Stochastic depth: drops whole examples along axis 0, scaling the rest by ``1/(1-rate)``.

  .. math::
     y_{b,\dots} = \frac{m_b}{1 - r}\, x_{b,\dots}, \qquad m_b \sim \mathrm{Bernoulli}(1 - r),

  one decision per example (Huang et al., ECCV 2016; the "DropPath" of timm). Use
  it on a residual branch: ``x + drop_path(key, branch(x), rate=r)``. Equivalent
  to :func:`jdrop.dropout` with every axis but the first in ``broadcast_dims``.

  Args:
    key: a PRNG key (typed or raw).
    x: a floating-point array with a batch axis first (at least 1-D).
    rate: the drop probability in [0, 1]; may be traced.
    deterministic: if True, return ``x`` unchanged.
    fast: a Python bool: draw the per-example decisions as :func:`jdrop.dropout` does
      with ``fast=True``.

  Returns:
    An array with the shape and dtype of ``x``.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> y = jdrop.drop_path(jax.random.key(1), jnp.ones((4, 3)), rate=0.5)
    >>> bool(((y == 0).all(axis=1) | (y == 2).all(axis=1)).all())
    True
  """
  fn = "jdrop.drop_path"
  x = check_x(fn, x)
  if x.ndim == 0:
    raise errors.value_error(
      fn,
      "x",
      "must have a batch axis (at least 1 dimension)",
      errors.Described("a scalar"),
      "Pass an array of shape (batch, ...).",
    )
  return _dropout(fn, key, x, rate, tuple(range(1, x.ndim)), deterministic, fast)
