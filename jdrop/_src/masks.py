"""Keep masks: drawing them, validating keys, rates and shapes.

This module is where masks are drawn. ``keep_mask`` equals
``jax.random.bernoulli(key, 1 - rate, shape)`` bit for bit. For threefry2x32
keys under JAX's default configuration it does not call ``jax.random``: it
writes the twenty threefry rounds as straight-line ``lax`` operations, which
XLA fuses with the threshold compare (and, inside ``dropout``, with the select)
into a single loop. On CPU this is several times faster than ``jax.random``'s
rolled loop of whole-array passes and needs no full-size temporary. Every other
key implementation, and a non-default ``jax_threefry_partitionable``, falls
back to ``jax.random.bernoulli``; the choice is made at trace time.

``keep_mask(..., fast=True)`` (and every function with a ``fast`` flag) draws a different,
cheaper mask: a deterministic function of the key, the shape and the rate, but not
``bernoulli``'s. One threefry2x32 block (20 rounds, as above) gives two 32-bit words, read
as four 16-bit uniforms, so the hash runs once per four elements instead of once per
element; the keep probability is rounded to the nearest multiple of ``2**-16``. To keep the
saving, the mask is drawn in two fused passes: the first hashes and compares, packing 32
mask bits into each uint32 word (a reduction, so XLA materialises it: ``size / 8`` bytes);
the second unpacks the bits inside the consumer's loop (the compare and select of
``dropout``). In one pass, XLA's loop fusion would recompute a block for each of its four
elements.

How ``bernoulli`` decides, and why the threshold below is exact: for a float32
keep probability ``p``, ``jax.random.uniform`` turns 32 random bits ``b`` into
``u = (b >> 9) * 2**-23`` exactly, and ``bernoulli`` returns ``u < p``. Since
``p * 2**23`` is exact in float32, ``u < p`` if and only if
``(b >> 9) < ceil(p * 2**23)``, an integer comparison.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jdrop._src import errors

# Threefry-2x32 with 20 rounds (Salmon et al., SC 2011), as JAX implements it.
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KS_PARITY = np.uint32(0x1BD11BDA)
_MANTISSA_BITS = 23  # float32 uniforms use the top 23 of 32 random bits
_MAX_FUSED_SIZE = 2**32  # the fused counter is one uint32 word
# The fast mode: 16-bit uniforms, four per threefry2x32 block, 32 mask bits per packed word.
FAST_BITS = 16
_FAST_SCALE = 2**FAST_BITS
_UNIFORMS_PER_BLOCK = 4
_MASK_BITS_PER_WORD = 32
_BLOCKS_PER_WORD = _MASK_BITS_PER_WORD // _UNIFORMS_PER_BLOCK
_MAX_FAST_BLOCKS = 2**32  # the fast path's block counter is one uint32 word
# The largest mask (in elements) that XLA compiles: beyond about 2**59 elements, buffer sizes in
# bytes of the random bits overflow int64 and XLA aborts the process (a C++ fatal error, not an
# exception); 2**56 leaves room for 8-byte bits (a float64 keep probability under x64).
MAX_SIZE = 2**56


def is_traced(value: Any) -> bool:
  """True if ``value`` is an abstract JAX value (inside jit, vmap, grad...)."""
  return isinstance(value, jax.core.Tracer)


# ----------------------------------------------------------------------------
# Validation shared by every function that takes a key, a rate or a shape.


def check_key(fn: str, key: Any) -> jax.Array:
  """Returns ``key`` as a typed key with shape (), or raises a clear error.

  Accepts typed keys (``jax.random.key``) and legacy raw keys
  (``jax.random.PRNGKey``: ``uint32[2]`` for the default threefry2x32).
  """
  if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.ndim:
      raise errors.value_error(
        fn,
        "key",
        "must be a single PRNG key",
        errors.Described(f"a batch of keys with shape {key.shape}"),
        "To use one key per example, map over the keys with jax.vmap.",
      )
    return key
  if isinstance(key, (jax.Array, np.ndarray)):
    if key.dtype != np.uint32:
      raise errors.type_error(
        fn,
        "key",
        "must be a PRNG key",
        errors.Described(f"an array of dtype {key.dtype} and shape {key.shape}"),
        "Create one with jax.random.key(seed).",
      )
    key_shape = _raw_key_shape(jax.config.jax_default_prng_impl)  # type: ignore[attr-defined]
    if key.shape[-len(key_shape) :] != key_shape:
      raise errors.type_error(
        fn,
        "key",
        f"must be a PRNG key (a raw key has shape {key_shape})",
        errors.Described(f"a uint32 array of shape {key.shape}"),
        "Create one with jax.random.key(seed).",
      )
    if key.ndim > len(key_shape):
      raise errors.value_error(
        fn,
        "key",
        "must be a single PRNG key",
        errors.Described(f"a batch of raw keys with shape {key.shape}"),
        "To use one key per example, map over the keys with jax.vmap.",
      )
    return jax.random.wrap_key_data(jnp.asarray(key))
  raise errors.type_error(
    fn,
    "key",
    "must be a PRNG key",
    errors.short(key),
    "Create one with jax.random.key(seed) and split it with jax.random.split.",
  )


@functools.cache
def _raw_key_shape(impl: str) -> tuple[int, ...]:
  """The shape of a raw key of the default implementation ``impl`` (``(2,)`` for threefry)."""
  return jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=impl))).shape


def check_rate(fn: str, rate: Any, *, allow_one: bool = True) -> None:
  """Validates a concrete drop rate; a traced rate cannot be checked here.

  Callers turn a traced rate outside [0, 1] into NaN outputs with
  :func:`invalid_rate`, so that a bad traced rate is loud, not silently wrong.
  """
  if isinstance(rate, (bool, np.bool_)):
    raise errors.type_error(
      fn, "rate", "must be a float drop probability", rate, "Pass a number such as rate=0.1."
    )
  if is_traced(rate):
    dtype = jnp.result_type(rate)
    real = jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
    if not real or jnp.ndim(rate):
      raise errors.type_error(
        fn,
        "rate",
        "must be a real scalar",
        errors.Described(f"a traced {jax.typeof(rate)}"),
        "Pass a scalar float.",
      )
    return
  try:
    value = np.asarray(rate)
  except Exception:
    value = None
  if (
    value is None
    or value.ndim
    or not (jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer))
  ):
    raise errors.type_error(
      fn,
      "rate",
      "must be a real scalar drop probability",
      errors.short(rate),
      "Pass a number such as rate=0.1.",
    )
  number = float(value)
  upper_ok = number <= 1.0 if allow_one else number < 1.0
  if not (number >= 0.0 and upper_ok):  # also catches NaN
    interval = "[0, 1]" if allow_one else "[0, 1)"
    fix = "Pass the probability of *dropping* a unit, e.g. rate=0.1."
    if not allow_one and number == 1.0:
      fix = "Rate 1 gives this noise infinite variance; use a rate below 1."
    raise errors.value_error(fn, "rate", f"must be a drop probability in {interval}", rate, fix)


def invalid_rate(rate: ArrayLike, *, allow_one: bool = True) -> jax.Array | None:
  """For a traced rate, a bool scalar that is True if it is out of range or NaN; else None."""
  if not is_traced(rate):
    return None
  rate = jnp.asarray(rate)
  upper_ok = rate <= 1 if allow_one else rate < 1
  return ~((rate >= 0) & upper_ok)


def check_shape(fn: str, shape: Any) -> tuple[int, ...]:
  """Returns ``shape`` as a tuple of non-negative Python ints of at most :data:`MAX_SIZE`
  elements, or raises."""
  if isinstance(shape, (int, np.integer)) and not isinstance(shape, (bool, np.bool_)):
    shape = (shape,)
  if not isinstance(shape, Sequence) or isinstance(shape, str):
    raise errors.type_error(
      fn,
      "shape",
      "must be a tuple of non-negative ints",
      errors.short(shape),
      "Pass for example shape=(32, 128).",
    )
  dims = []
  for dim in shape:
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
      raise errors.type_error(
        fn,
        "shape",
        "must contain only ints",
        tuple(shape),
        "Pass integer sizes, for example shape=(32, 128).",
      )
    if dim < 0:
      raise errors.value_error(
        fn,
        "shape",
        "must not contain negative sizes",
        tuple(shape),
        "Pass non-negative sizes, for example shape=(32, 128).",
      )
    dims.append(operator.index(dim))
  if math.prod(max(d, 1) for d in dims) > MAX_SIZE:
    raise errors.value_error(
      fn,
      "shape",
      f"must have at most 2**{MAX_SIZE.bit_length() - 1} elements (what XLA can compile)",
      tuple(dims),
      "Draw the mask in smaller blocks, e.g. one per example with jax.vmap over keys.",
    )
  return tuple(dims)


# ----------------------------------------------------------------------------
# The keep probability and its threshold.


def compute_dtype(dtype: Any) -> Any:
  """The float dtype that values of ``dtype`` are scaled, drawn or accumulated in.

  float64 stays float64; every narrower float (float32, bf16, f16, and the 8- and 4-bit
  floats, which JAX never promotes implicitly) is computed in float32 and rounded once.
  """
  if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits > 32:
    return jnp.dtype(dtype)
  return jnp.dtype(jnp.float32)


def keep_probability(rate: ArrayLike, *, fast: bool = False) -> jax.Array:
  """``1 - rate`` as ``jax.random.bernoulli(key, 1 - rate)`` would receive it.

  A concrete rate is subtracted in double precision, as Python does, and becomes
  an array of JAX's default float dtype (float32, or float64 under x64), exactly
  like the Python float that ``flax.linen.Dropout`` passes to ``bernoulli``. An
  array or traced rate is subtracted in its own dtype, promoted to at least
  float32: the keep probability is never rounded to bf16 (that would bias masks).

  With ``fast=True`` it is rounded to the nearest multiple of ``2**-16`` (see
  :func:`fast_keep_probability`), the probability that a fast mask keeps a unit, so
  that a caller that scales by it stays unbiased.
  """
  if is_traced(rate) or isinstance(rate, jax.Array):
    rate = jnp.asarray(rate)
    keep = 1 - rate.astype(compute_dtype(rate.dtype))
  else:
    keep = jnp.asarray(1.0 - float(np.asarray(rate)))
  return fast_keep_probability(keep) if fast else keep


def fast_keep_probability(keep: jax.Array) -> jax.Array:
  r"""``keep`` rounded to the nearest multiple of ``2**-16``: a fast mask's keep probability.

  .. math::
     \tilde q = \mathrm{round}(q \cdot 2^{16}) / 2^{16}, \qquad |\tilde q - q| \le 2^{-17},

  ties to even; NaN stays NaN. A fast mask keeps a unit when its 16-bit uniform is below
  :math:`\tilde q \cdot 2^{16}`, so it keeps with probability exactly :math:`\tilde q`: the
  drop rate is off by at most ``2**-17`` (a rate below ``2**-17`` becomes 0, a keep
  probability below ``2**-17`` becomes 0). The value is :math:`\tilde q` exactly (``q``
  plus the difference, which Sterbenz's lemma makes exact); the gradient is that of
  ``q`` (straight through the rounding), so a traced rate keeps its gradient.
  """
  rounded = jnp.round(keep * _FAST_SCALE) / _FAST_SCALE
  return keep + lax.stop_gradient(rounded - keep)


def _threshold(keep: jax.Array) -> jax.Array:
  """``ceil(keep * 2**23)`` clipped to ``[0, 2**23]`` as uint32 (see module docstring)."""
  scaled = jnp.ceil(keep * np.float32(2**_MANTISSA_BITS))
  scaled = jnp.clip(jnp.nan_to_num(scaled, nan=0.0), 0, 2**_MANTISSA_BITS)
  return scaled.astype(jnp.uint32)


# ----------------------------------------------------------------------------
# The fused threefry2x32 generator.


def fused_path_available(key: jax.Array, size: int) -> bool:
  """Whether the fused generator reproduces ``jax.random`` for this key and size.

  Decided at trace time from static information only: the key's
  implementation, JAX's ``jax_threefry_partitionable`` flag, and the size.
  """
  return (
    str(jax.random.key_impl(key)) == "threefry2x32"
    and bool(jax.config.jax_threefry_partitionable)  # type: ignore[attr-defined]
    and size < _MAX_FUSED_SIZE
  )


def _rotate_left(x: jax.Array, r: int) -> jax.Array:
  return lax.shift_left(x, np.uint32(r)) | lax.shift_right_logical(x, np.uint32(32 - r))


def _flat_index(shape: tuple[int, ...]) -> jax.Array:
  """The row-major flat index of every element as uint32 (``shape`` has < 2**32 elements)."""
  if not shape:
    return jnp.zeros((), jnp.uint32)
  strides = np.cumprod((*shape[1:], 1)[::-1])[::-1]
  terms = []
  for axis, stride in enumerate(strides):
    term = lax.broadcasted_iota(jnp.uint32, shape, axis)
    terms.append(term if stride == 1 else term * np.uint32(stride))
  index = terms[0]
  for term in terms[1:]:
    index = index + term
  return index


def threefry_block(key: jax.Array, counter: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Both output words of threefry2x32-20 for the 64-bit counters ``(0, counter)``.

  ``counter`` is a uint32 array (the low word; the high word is 0). The words equal
  ``jax.extend.random.threefry_2x32(key_data, concatenate([zeros, counter]))``'s two halves.
  """
  k0, k1 = (jnp.asarray(word, jnp.uint32) for word in jax.random.key_data(key))
  ks = (k0, k1, k0 ^ k1 ^ _KS_PARITY)
  x0 = jnp.broadcast_to(ks[0], counter.shape)  # high word 0 plus the first key word
  x1 = counter + ks[1]
  for block in range(5):
    for r in _ROTATIONS[block % 2]:
      x0 = x0 + x1
      x1 = x0 ^ _rotate_left(x1, r)
    x0 = x0 + ks[(block + 1) % 3]
    x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
  return x0, x1


def threefry_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """``jax.random.bits(key, shape)`` (uint32) for a threefry2x32 key, as fusible ops.

  JAX's partitionable threefry hashes the 64-bit flat index of each element,
  split into a high and a low 32-bit word, and returns the XOR of the two output
  words. With fewer than 2**32 elements the high word is 0.
  """
  y0, y1 = threefry_block(key, _flat_index(shape))
  return y0 ^ y1


def draw_keep_mask(
  key: jax.Array, shape: tuple[int, ...], keep: jax.Array, *, fast: bool = False
) -> jax.Array:
  """The keep mask for a validated typed key, a static shape and a keep probability.

  The fused path reproduces float32 ``bernoulli``; a float64 keep probability
  (x64 mode) draws 64-bit uniforms, so it goes to ``jax.random.bernoulli``. With
  ``fast=True`` the mask is :func:`draw_fast_keep_mask`'s, whatever the dtype.
  """
  if fast:
    return draw_fast_keep_mask(key, shape, keep)
  if keep.dtype == jnp.float32 and fused_path_available(key, math.prod(shape)):
    bits = threefry_bits(key, shape)
    return lax.shift_right_logical(bits, np.uint32(32 - _MANTISSA_BITS)) < _threshold(keep)
  return jax.random.bernoulli(key, keep, shape)


# ----------------------------------------------------------------------------
# The fast generator: 16-bit uniforms, four per threefry2x32 block, in two passes.


def check_fast(fn: str, fast: Any) -> bool:
  """``fast`` as a Python bool, or a TypeError: it picks the generator when tracing."""
  if isinstance(fast, (bool, np.bool_)):
    return bool(fast)
  raise errors.type_error(
    fn,
    "fast",
    "must be a Python bool (it chooses the mask generator when the function is traced)",
    errors.Described(f"a traced {jax.typeof(fast)}") if is_traced(fast) else errors.short(fast),
    "Pass fast=True for the fast masks or fast=False for jax.random.bernoulli's.",
  )


def fast_path_available(key: jax.Array, size: int) -> bool:
  """Whether the fast mask of ``size`` elements hashes in fused threefry2x32 blocks.

  Decided at trace time: the key must be threefry2x32 (the ``jax_threefry_partitionable``
  flag does not matter) and the block counter must fit in a uint32 word. Otherwise the
  blocks come from ``jax.random.bits`` (see :func:`fast_uniforms`).
  """
  blocks = _BLOCKS_PER_WORD * -(-size // _MASK_BITS_PER_WORD)
  return str(jax.random.key_impl(key)) == "threefry2x32" and blocks <= _MAX_FAST_BLOCKS


def _fast_blocks(key: jax.Array, num_words: int) -> tuple[jax.Array, jax.Array]:
  """The two 32-bit words of the blocks of ``num_words`` mask words, each ``(8, num_words)``.

  Entry ``[k, w]`` is block ``8 w + k``, the ``k``-th of mask word ``w``. (Blocks along the
  leading axis make the first pass a column reduction, which GPUs do one output per thread.)
  """
  shape = (_BLOCKS_PER_WORD, num_words)
  if fast_path_available(key, num_words * _MASK_BITS_PER_WORD):
    counter = lax.broadcasted_iota(jnp.uint32, shape, 1) * np.uint32(_BLOCKS_PER_WORD)
    return threefry_block(key, counter + lax.broadcasted_iota(jnp.uint32, shape, 0))
  bits = jax.random.bits(key, (num_words, _BLOCKS_PER_WORD, 2), jnp.uint32)
  return bits[..., 0].T, bits[..., 1].T


def _fast_halves(y0: jax.Array, y1: jax.Array) -> tuple[jax.Array, ...]:
  """A block's four 16-bit uniforms (as uint32), in element order: little-endian uint16s."""
  low = np.uint32(_FAST_SCALE - 1)
  shift = np.uint32(FAST_BITS)
  return y0 & low, lax.shift_right_logical(y0, shift), y1 & low, lax.shift_right_logical(y1, shift)


def fast_uniforms(key: jax.Array, size: int) -> jax.Array:
  """The 16-bit uniforms (uint32 values in ``[0, 2**16)``) behind a fast mask of ``size``.

  Element ``i`` takes half ``i % 2`` (low half first) of word ``(i // 2) % 2`` of the
  threefry2x32 block with counter ``i // 4``: the blocks' output words read as a stream
  of little-endian uint16. (For a key of another implementation, the words are
  ``jax.random.bits(key, (B, 8, 2))``, pairs in order.) Materialises the values; the masks
  never do. Used by the statistical tests and to state what a fast mask is.
  """
  num_words = -(-size // _MASK_BITS_PER_WORD)
  halves = jnp.stack(_fast_halves(*_fast_blocks(key, num_words)), axis=-1)  # (8, words, 4)
  return jnp.swapaxes(halves, 0, 1).reshape(-1)[:size]


def _fast_threshold(keep: jax.Array) -> jax.Array:
  """``round(keep * 2**16)`` clipped to ``[0, 2**16]`` as uint32 (NaN: 0, nothing kept)."""
  scaled = jnp.round(keep * _FAST_SCALE)
  return jnp.clip(jnp.nan_to_num(scaled, nan=0.0), 0, _FAST_SCALE).astype(jnp.uint32)


def fast_mask_words(key: jax.Array, size: int, keep: jax.Array) -> jax.Array:
  """The first pass: a fast mask of ``size`` elements packed 32 to a uint32 word.

  Bit ``j`` of word ``w`` is element ``32 w + j``: kept when its 16-bit uniform is below
  ``round(keep * 2**16)``. The sum over the 8 blocks of a word (their bits are disjoint,
  so the sum is an OR) is a reduction, which XLA does not fuse into its consumers: the
  words are computed once, into ``size / 8`` bytes (``tests/test_fast.py`` checks the
  compiled program's temporary memory). An elementwise OR, or an optimisation barrier,
  was fused into the unpacking and recomputed for every element on XLA:CPU.
  """
  num_words = -(-size // _MASK_BITS_PER_WORD)
  threshold = _fast_threshold(keep)
  halves = [
    lax.shift_left((half < threshold).astype(jnp.uint32), np.uint32(position))
    for position, half in enumerate(_fast_halves(*_fast_blocks(key, num_words)))
  ]
  nibble = functools.reduce(lambda a, b: a | b, halves)
  place = lax.broadcasted_iota(jnp.uint32, nibble.shape, 0) * np.uint32(_UNIFORMS_PER_BLOCK)
  return jnp.sum(lax.shift_left(nibble, place), axis=0, dtype=jnp.uint32)


def unpack_mask(words: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """The second pass: the bool mask of ``shape`` from :func:`fast_mask_words`.

  Plain broadcasts, shifts and reshapes, which XLA fuses into the mask's consumer.
  """
  place = lax.broadcasted_iota(jnp.uint32, (words.shape[0], _MASK_BITS_PER_WORD), 1)
  bits = lax.shift_right_logical(words[:, None], place) & np.uint32(1)
  return (bits != 0).reshape(-1)[: math.prod(shape)].reshape(shape)


def draw_fast_keep_mask(key: jax.Array, shape: tuple[int, ...], keep: jax.Array) -> jax.Array:
  """The fast keep mask: True where the element's 16-bit uniform is below ``round(keep * 2**16)``.

  Equal to ``fast_uniforms(key, size).reshape(shape) < round(keep * 2**16)``, drawn in the
  two passes :func:`fast_mask_words` and :func:`unpack_mask`.
  """
  return unpack_mask(fast_mask_words(key, math.prod(shape), keep), shape)


def keep_mask(
  key: ArrayLike, shape: Sequence[int] | int, *, rate: ArrayLike, fast: bool = False
) -> jax.Array:
  r"""Draws a boolean keep mask: ``True`` marks a kept unit, with probability ``1 - rate``.

  .. math::
     m_i \sim \mathrm{Bernoulli}(1 - r) \quad \text{independently for each element.}

  The result equals ``jax.random.bernoulli(key, 1 - rate, shape)`` bit for bit
  (with a float32 keep probability), so a mask drawn here is the one
  ``flax.linen.Dropout`` draws from the same key. Masks are ordinary values: draw
  one, then apply it in both orders with :func:`jdrop.apply_mask`.

  With ``fast=True`` the mask is cheaper to draw (one threefry2x32 block per four
  elements instead of one per element) but is not ``bernoulli``'s: element ``i`` is kept
  when a 16-bit uniform ``u_i`` is below ``round((1 - rate) * 2**16)``, so it is kept with
  probability ``(1 - rate)`` rounded to the nearest multiple of ``2**-16``, off by at most
  ``2**-17``. The mask is still a deterministic function of the key, the shape and the rate;
  different keys (``split``, ``fold_in``, ``vmap`` over keys) give independent masks. Apply
  it with :func:`jdrop.apply_mask` at the rounded rate, ``1 - round((1 - rate) * 2**16) /
  2**16``, to get :func:`jdrop.dropout` with ``fast=True`` bit for bit.

  Args:
    key: a PRNG key, typed (``jax.random.key``) or raw (``jax.random.PRNGKey``).
      One key; use ``jax.vmap`` for a batch of keys.
    shape: the mask's shape, a tuple of non-negative ints.
    rate: the **drop** probability in [0, 1]; may be traced (jit, vmap, grad). A traced
      rate cannot be checked: one above 1 or NaN keeps nothing, one below 0 keeps everything
      (the dropout functions, which take the rate too, return NaN for it).
    fast: a Python bool; True draws the fast mask described above.

  Returns:
    A bool array of shape ``shape``.

  Example:
    >>> import jax, jdrop
    >>> mask = jdrop.keep_mask(jax.random.key(0), (2, 4), rate=0.5)
    >>> mask.shape, mask.dtype
    ((2, 4), dtype('bool'))
    >>> bool((mask == jax.random.bernoulli(jax.random.key(0), 0.5, (2, 4))).all())
    True
    >>> fast = jdrop.keep_mask(jax.random.key(0), (1000,), rate=0.5, fast=True)
    >>> 400 < int(fast.sum()) < 600
    True
  """
  fn = "jdrop.keep_mask"
  key = check_key(fn, key)
  shape = check_shape(fn, shape)
  check_rate(fn, rate)
  fast = check_fast(fn, fast)
  return _keep_mask_core(key, keep_probability(rate, fast=fast), shape=shape, fast=fast)


@functools.partial(jax.jit, static_argnames=("shape", "fast"))
def _keep_mask_core(
  key: jax.Array, keep: jax.Array, *, shape: tuple[int, ...], fast: bool
) -> jax.Array:
  return draw_keep_mask(key, shape, keep, fast=fast)
