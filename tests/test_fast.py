"""The fast mask mode (``fast=True``): what the mask is, exactly, and the contract it keeps.

A fast mask is a deterministic function of (key, shape, rate): element ``i`` is kept when
its 16-bit uniform (half ``i % 2`` of word ``(i // 2) % 2`` of the threefry2x32 block with
counter ``i // 4``) is below ``round((1 - rate) * 2**16)``. These tests pin that definition
against JAX's own threefry2x32, then check the contract of DESIGN.md for every function that
takes ``fast``: traced rates, rate 0 and 1, dropped inf and NaN, dtypes, gradients, vmap,
broadcast_dims, the Monte-Carlo engine, and the errors. Statistical quality is tested in
``test_fast_statistics.py``.
"""

from __future__ import annotations

import functools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry_2x32

import jdrop
from jdrop import montecarlo
from jdrop._src import masks

SHAPES = [(), (0,), (1,), (3,), (31,), (32,), (33,), (2, 3, 5), (64, 129)]
RATES = [0.0, 2.0**-18, 1e-3, 0.1, 0.3, 0.5, 0.9, 1 - 2.0**-18, 1.0]
SEEDS = (0, 1, 2**31 - 1)


def reference_uniforms(key: jax.Array, size: int) -> np.ndarray:
  """The 16-bit uniforms from ``jax.extend.random.threefry_2x32`` and numpy alone.

  Block ``b`` hashes the 64-bit counter ``(0, b)``; its two output words, read as
  little-endian uint16, are the uniforms of elements ``4b .. 4b + 3``.
  """
  blocks = max(1, -(-size // 4))
  counter = jnp.concatenate([jnp.zeros(blocks, jnp.uint32), jnp.arange(blocks, dtype=jnp.uint32)])
  out = np.asarray(threefry_2x32(jax.random.key_data(key), counter))
  words = np.stack([out[:blocks], out[blocks:]], axis=-1).astype("<u4")
  return words.view("<u2").reshape(-1)[:size].astype(np.uint32)


def rounded_keep(rate: float) -> float:
  """``1 - rate`` rounded to the nearest multiple of ``2**-16`` (ties to even), in float64."""
  return round((1.0 - rate) * 2**16) / 2**16


def reference_mask(key: jax.Array, shape: tuple[int, ...], rate: float) -> np.ndarray:
  threshold = round((1.0 - rate) * 2**16)
  return (reference_uniforms(key, math.prod(shape)) < threshold).reshape(shape)


# ----------------------------------------------------------------------------
# What the fast mask is.


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 31, 32, 33, 1000, 4099])
def test_uniforms_are_threefry2x32_words_read_as_uint16(size):
  for seed in SEEDS:
    key = jax.random.key(seed)
    np.testing.assert_array_equal(masks.fast_uniforms(key, size), reference_uniforms(key, size))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_keep_mask_is_uniforms_below_the_rounded_threshold(shape, jit):
  draw = jdrop.keep_mask
  if jit:
    draw = jax.jit(draw, static_argnums=1, static_argnames="fast")
  for seed in SEEDS:
    key = jax.random.key(seed)
    for rate in RATES:
      got = draw(key, shape, rate=rate, fast=True)
      assert got.shape == shape and got.dtype == jnp.bool_
      np.testing.assert_array_equal(got, reference_mask(key, shape, rate), err_msg=f"{rate}")


def test_traced_rate_and_raw_keys_give_the_same_mask():
  key = jax.random.key(4)
  raw = jax.random.key_data(key)
  expected = reference_mask(key, (7, 9), 0.3)
  traced = jax.jit(lambda k, r: jdrop.keep_mask(k, (7, 9), rate=r, fast=True))
  np.testing.assert_array_equal(traced(key, jnp.float32(0.3)), expected)
  np.testing.assert_array_equal(jdrop.keep_mask(raw, (7, 9), rate=0.3, fast=True), expected)


def test_fast_and_exact_masks_differ():
  key = jax.random.key(0)
  fast = jdrop.keep_mask(key, (4096,), rate=0.5, fast=True)
  exact = jdrop.keep_mask(key, (4096,), rate=0.5)
  assert 0.4 < float(jnp.mean(fast != exact)) < 0.6  # independent draws: about half differ


def test_keep_probability_is_rounded_to_a_multiple_of_2_to_the_minus_16():
  # The stated bias: |q~ - q| <= 2**-17 for every q, checked on a grid that includes the
  # midpoints between multiples of 2**-16 and values just off them, in float32 and float64.
  grid = np.concatenate(
    [
      np.linspace(0.0, 1.0, 100_003),
      (np.arange(0, 2**16 + 1) + 0.5) / 2**16,
      (np.arange(0, 2**16) + 0.5 + 1e-3) / 2**16,
      [2.0**-17, 2.0**-17 * 0.999, 1 - 2.0**-17, 1.0],
    ]
  )
  grid = grid[grid <= 1.0].astype(np.float32)
  got = np.asarray(masks.fast_keep_probability(jnp.asarray(grid)), np.float64)
  q = grid.astype(np.float64)
  assert np.all(np.abs(got - q) <= 2.0**-17)
  np.testing.assert_array_equal(got * 2**16, np.round(got * 2**16))  # multiples of 2**-16
  np.testing.assert_array_equal(got, np.round(q * 2**16) / 2**16)  # nearest, ties to even
  # The threshold keeps exactly q~ * 2**16 of the 2**16 possible uniforms.
  thresholds = np.asarray(masks._fast_threshold(jnp.asarray(got, jnp.float32)))
  np.testing.assert_array_equal(thresholds, got * 2**16)


def test_rounded_keep_has_the_gradient_of_the_unrounded_one():
  value, grad = jax.value_and_grad(lambda q: masks.fast_keep_probability(q))(jnp.float32(0.3))
  assert float(value) == rounded_keep(0.7) and float(grad) == 1.0


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg"])
def test_other_key_implementations_take_blocks_from_jax_random_bits(impl):
  key = jax.random.key(5, impl=impl)
  assert not masks.fast_path_available(key, 100)
  words = np.asarray(jax.random.bits(key, (4, 8, 2), jnp.uint32)).astype("<u4")
  expected = words.view("<u2").reshape(-1)[:100]
  np.testing.assert_array_equal(masks.fast_uniforms(key, 100), expected)
  np.testing.assert_array_equal(
    jdrop.keep_mask(key, (100,), rate=0.4, fast=True), expected < round(0.6 * 2**16)
  )


def test_fast_path_ignores_threefry_partitionable_and_is_limited_to_32_bit_block_counters():
  key = jax.random.key(9)
  with jax.threefry_partitionable(False):
    assert masks.fast_path_available(key, 300)
    got = jdrop.keep_mask(key, (300,), rate=0.5, fast=True)
  np.testing.assert_array_equal(got, reference_mask(key, (300,), 0.5))
  assert masks.fast_path_available(key, 2**34)  # 2**32 blocks of four uniforms
  assert not masks.fast_path_available(key, 2**34 + 1)


def test_fast_mask_is_drawn_in_two_passes_with_a_packed_temporary():
  # The first pass packs the mask bits into size / 8 bytes that XLA must materialise: fused
  # into the select, each block would be recomputed for each of its elements. So the
  # temporary is at least size / 8 bytes, and far below bernoulli's 12 bytes per element.
  n = 2**20
  x = jax.ShapeDtypeStruct((n,), jnp.float32)
  key = jax.eval_shape(lambda: jax.random.key(0))
  compiled = jax.jit(lambda k, x: jdrop.dropout(k, x, rate=0.5, fast=True)).lower(key, x).compile()
  stats = compiled.memory_analysis()
  if stats is None:  # pragma: no cover - backend without memory analysis
    pytest.skip("memory_analysis unavailable on this backend")
  assert n // 8 <= stats.temp_size_in_bytes <= n // 4, stats.temp_size_in_bytes


# ----------------------------------------------------------------------------
# The dropout family with fast=True: consistent with the fast mask, and the contract.

SHAPE = (5, 7)
X = jnp.linspace(-3.0, 3.0, math.prod(SHAPE), dtype=jnp.float32).reshape(SHAPE)


def scaled_where(mask: np.ndarray, x: jax.Array, keep: float) -> jax.Array:
  """``where(mask, x / keep, 0)``, scaled in float32 and rounded once to x's dtype."""
  compute = jnp.promote_types(x.dtype, jnp.float32)
  return jnp.where(mask, (x.astype(compute) / keep).astype(x.dtype), jnp.zeros((), x.dtype))


def fast_outputs(key, x, rate, names=None) -> dict:
  """Every function with ``fast``, on one input (relu for the orders)."""
  calls = {
    "dropout": lambda: jdrop.dropout(key, x, rate=rate, fast=True),
    "alpha_dropout": lambda: jdrop.alpha_dropout(key, x, rate=rate, fast=True),
    "drop_path": lambda: jdrop.drop_path(key, x, rate=rate, fast=True),
    "both_orders.pre": lambda: jdrop.both_orders(key, x, "relu", rate=rate, fast=True).pre,
    "both_orders.post": lambda: jdrop.both_orders(key, x, "relu", rate=rate, fast=True).post,
    "activation_dropout.pre": lambda: jdrop.activation_dropout(
      key, x, "relu", rate=rate, order="pre", fast=True
    ),
    "activation_dropout.post": lambda: jdrop.activation_dropout(
      key, x, "relu", rate=rate, order="post", fast=True
    ),
  }
  return {name: call() for name, call in calls.items() if names is None or name in names}


traced_outputs = jax.jit(fast_outputs)


@pytest.mark.parametrize("rate", [2.0**-18, 0.1, 0.3, 0.5, 0.9, 1 - 2.0**-18])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dropout_is_apply_mask_of_the_fast_mask_at_the_rounded_rate(rate, dtype):
  key = jax.random.key(3)
  x = X.astype(dtype)
  mask = reference_mask(key, SHAPE, rate)
  keep = rounded_keep(rate)
  expected = scaled_where(mask, x, keep) if keep > 0 else jnp.zeros_like(x)
  for out in (fast_outputs(key, x, rate), traced_outputs(key, x, jnp.float32(rate))):
    for name, y in out.items():
      assert y.dtype == x.dtype, name
    np.testing.assert_array_equal(out["dropout"], expected)
    np.testing.assert_array_equal(
      out["dropout"], jdrop.apply_mask(x, jnp.asarray(mask), rate=1 - keep)
    )
    for name in ("both_orders.post", "activation_dropout.post"):
      np.testing.assert_array_equal(out[name], scaled_where(mask, jax.nn.relu(x), keep), name)
      np.testing.assert_array_equal(out[name.replace("post", "pre")], out[name])  # relu
    per_example = reference_mask(key, (SHAPE[0], 1), rate)
    np.testing.assert_array_equal(out["drop_path"], scaled_where(per_example, x, keep))


def test_alpha_dropout_uses_the_rounded_keep_in_its_affine_map():
  key, rate = jax.random.key(2), 0.3
  mask = reference_mask(key, SHAPE, rate)
  keep = rounded_keep(rate)
  scale, alpha = jdrop.selu_constants()
  s = -scale * alpha
  a = (keep + s**2 * keep * (1 - keep)) ** -0.5
  expected = np.where(mask, a * np.asarray(X, np.float64) + a * (1 - keep) * -s, a * keep * s)
  got = jdrop.alpha_dropout(key, X, rate=rate, fast=True)
  np.testing.assert_allclose(got, expected, rtol=4e-7, atol=4e-7)  # float32: a few ulps


def test_rate_zero_and_deterministic_return_x_and_rate_one_gives_zeros():
  key = jax.random.key(1)
  identity = {name: jax.nn.relu(X) if "." in name else X for name in fast_outputs(key, X, 0.5)}
  del identity["alpha_dropout"]  # at rate 0 it is a * x - b up to rounding, tested elsewhere
  for out in (fast_outputs(key, X, 0.0), traced_outputs(key, X, jnp.float32(0.0))):
    for name, expected in identity.items():
      np.testing.assert_array_equal(out[name], expected, name)
  assert jdrop.dropout(key, X, rate=0.0, fast=True) is X
  assert jdrop.dropout(key, X, rate=0.7, deterministic=True, fast=True) is X
  for out in (fast_outputs(key, X, 1.0), traced_outputs(key, X, jnp.float32(1.0))):
    for name, y in out.items():
      np.testing.assert_array_equal(y, np.zeros(SHAPE, np.float32), name)


def test_rate_one_and_tiny_keep_have_zero_gradients_and_no_nan():
  key = jax.random.key(1)

  def total(x, rate):
    return jdrop.dropout(key, x, rate=rate, fast=True).sum()

  for rate in (1.0, 1 - 2.0**-18):  # the second rounds to keep probability 0
    dx, drate = jax.jit(jax.grad(total, argnums=(0, 1)))(X, jnp.float32(rate))
    np.testing.assert_array_equal(dx, np.zeros(SHAPE, np.float32))
    assert float(drate) == 0.0


def test_rate_gradient_is_straight_through_the_rounding():
  # y = where(m, x / q~, 0) with dq~/dq = 1: d/drate sum(y) = sum(where(m, x / q~**2, 0)).
  key, rate = jax.random.key(6), 0.3
  mask = reference_mask(key, SHAPE, rate)
  keep = rounded_keep(rate)
  drate = jax.grad(lambda r: jdrop.dropout(key, X, rate=r, fast=True).sum())(jnp.float32(rate))
  expected = np.sum(np.where(mask, np.asarray(X, np.float64) / keep**2, 0.0))
  np.testing.assert_allclose(float(drate), expected, rtol=1e-5)


@pytest.mark.parametrize("value", [jnp.inf, -jnp.inf, jnp.nan])
def test_dropped_inf_and_nan_are_zero(value):
  key, rate = jax.random.key(8), 0.5
  x = jnp.full(SHAPE, value, jnp.float32)
  dropped = ~reference_mask(key, SHAPE, rate)
  assert dropped.any()
  out = fast_outputs(key, x, rate)
  for name in ("dropout", "both_orders.post", "activation_dropout.post"):
    assert (np.asarray(out[name])[dropped] == 0).all(), name
  assert np.isfinite(np.asarray(out["alpha_dropout"])[dropped]).all()


def test_traced_rate_outside_unit_interval_gives_nan():
  for rate in (-0.1, 1.5, float("nan")):
    for name, y in traced_outputs(jax.random.key(0), X, jnp.float32(rate)).items():
      assert bool(jnp.isnan(y).all()), f"{name} at {rate}"


def test_float64_under_x64():
  with jax.enable_x64(True):
    key = jax.random.key(3)
    x = jnp.linspace(-1.0, 1.0, 35, dtype=jnp.float64).reshape(SHAPE)
    y = jdrop.dropout(key, x, rate=0.3, fast=True)
    assert y.dtype == jnp.float64
    expected = np.where(reference_mask(key, SHAPE, 0.3), np.asarray(x) / rounded_keep(0.3), 0)
    np.testing.assert_array_equal(y, expected)


def test_vmap_over_keys_and_rates_equals_a_loop():
  keys = jax.random.split(jax.random.key(11), 4)
  over_keys = jax.vmap(lambda k: jdrop.dropout(k, X, rate=0.4, fast=True))(keys)
  for i, key in enumerate(keys):
    np.testing.assert_array_equal(over_keys[i], jdrop.dropout(key, X, rate=0.4, fast=True))
  rates = jnp.float32([0.1, 0.5, 0.9])
  key = keys[0]
  over_rates = jax.vmap(lambda r: jdrop.dropout(key, X, rate=r, fast=True))(rates)
  for i, rate in enumerate(rates):
    np.testing.assert_array_equal(over_rates[i], jdrop.dropout(key, X, rate=rate, fast=True))


def test_broadcast_dims_share_the_fast_mask():
  key, x = jax.random.key(12), jnp.ones((6, 4, 10))
  y = np.asarray(jdrop.dropout(key, x, rate=0.5, broadcast_dims=(1,), fast=True))
  mask = reference_mask(key, (6, 1, 10), 0.5)
  np.testing.assert_array_equal(y != 0, np.broadcast_to(mask, x.shape))


# ----------------------------------------------------------------------------
# compare_orders(fast=True): mask i is keep_mask(fold_in(key, i), fast=True).


@functools.cache
def _fast_comparison(chunk_size: int) -> montecarlo.Comparison:
  x = jnp.linspace(-2.0, 2.0, 9)
  return montecarlo.compare_orders(
    jax.random.key(7), "tanh", x, rate=0.3, num_masks=37, chunk_size=chunk_size, fast=True
  )


def test_compare_orders_fast_counts_the_fast_masks():
  key, x, rate, n = jax.random.key(7), jnp.linspace(-2.0, 2.0, 9), 0.3, 37
  out = _fast_comparison(8)
  assert out.fast and out.rate == rate and out.num_masks == n
  kept = np.stack([reference_mask(jax.random.fold_in(key, i), (9,), rate) for i in range(n)])
  keep = rounded_keep(rate)
  fx = np.asarray(jnp.tanh(x), np.float64)
  # post is tanh(x) / q~ where kept, else 0: its mean follows from the kept counts.
  np.testing.assert_allclose(out.post.mean, fx / keep * kept.mean(axis=0), rtol=1e-6, atol=1e-7)
  pre = np.tanh(np.where(kept, np.asarray(x, np.float64) / keep, 0.0))
  np.testing.assert_allclose(out.pre.mean, pre.mean(axis=0), rtol=1e-5, atol=1e-6)
  post = np.where(kept, fx / keep, 0.0)
  diff = np.abs(pre - post)
  assert out.mismatch_fraction == np.mean((diff > out.rtol * np.abs(post)).any(axis=1))


def test_compare_orders_fast_does_not_depend_on_the_chunk_size():
  a, b = _fast_comparison(8), _fast_comparison(5)
  np.testing.assert_array_equal(a.post.mean, b.post.mean)
  np.testing.assert_allclose(a.pre.mean, b.pre.mean, rtol=1e-6)
  assert a.mismatch_fraction == b.mismatch_fraction


# ----------------------------------------------------------------------------
# A bad `fast` raises a TypeError naming the function, the argument, the value and the fix.

WITH_FAST = {
  "keep_mask": lambda fast: jdrop.keep_mask(jax.random.key(0), (3,), rate=0.5, fast=fast),
  "dropout": lambda fast: jdrop.dropout(jax.random.key(0), X, rate=0.5, fast=fast),
  "alpha_dropout": lambda fast: jdrop.alpha_dropout(jax.random.key(0), X, rate=0.5, fast=fast),
  "drop_path": lambda fast: jdrop.drop_path(jax.random.key(0), X, rate=0.5, fast=fast),
  "both_orders": lambda fast: jdrop.both_orders(jax.random.key(0), X, "relu", rate=0.5, fast=fast),
  "activation_dropout": lambda fast: jdrop.activation_dropout(
    jax.random.key(0), X, "relu", rate=0.5, order="pre", fast=fast
  ),
  "montecarlo.compare_orders": lambda fast: montecarlo.compare_orders(
    jax.random.key(0), "relu", X, rate=0.5, num_masks=2, fast=fast
  ),
}


@pytest.mark.parametrize("name", WITH_FAST)
@pytest.mark.parametrize("fast", ["yes", 1, None, jnp.array(True)])
def test_bad_fast_raises(name, fast):
  with pytest.raises(TypeError) as info:
    WITH_FAST[name](fast)
  message = str(info.value)
  assert re.match(rf"jdrop\.{name}: `fast` must be a Python bool .+, got .+\. Pass fast=", message)


def test_traced_fast_raises():
  with pytest.raises(TypeError, match=r"jdrop\.dropout: `fast` .+ got a traced bool"):
    jax.jit(lambda f: jdrop.dropout(jax.random.key(0), X, rate=0.5, fast=f))(True)


def test_fast_blocks_fall_back_to_jax_random_bits_past_32_bit_block_counters():
  # At 2**29 mask words (2**32 blocks, the limit fast_path_available checks in elements) the
  # fused hash is used; one word more must take jax.random.bits, or the uint32 block counters
  # would wrap and repeat masks. Traced only (make_jaxpr allocates nothing).
  key = jax.random.key(0)
  words = 2**32 // 8

  def primitives(num_words: int) -> set[str]:
    jaxpr = jax.make_jaxpr(lambda k: masks._fast_blocks(k, num_words))(key)
    return {eqn.primitive.name for eqn in jaxpr.jaxpr.eqns}

  assert "random_bits" not in primitives(words)
  assert "random_bits" in primitives(words + 1)


@pytest.mark.parametrize("fast", [False, True])
def test_a_traced_invalid_rate_keeps_nothing_or_everything(fast):
  # The mask is a bool, so it cannot carry a NaN; what it does is pinned (and documented):
  # above 1 or NaN nothing is kept, below 0 everything, in both generators.
  draw = jax.jit(lambda rate: jdrop.keep_mask(jax.random.key(3), (4096,), rate=rate, fast=fast))
  for rate, kept in ((1.5, 0), (float("nan"), 0), (-0.5, 4096), (1.0, 0), (0.0, 4096)):
    assert int(draw(jnp.float32(rate)).sum()) == kept, rate


def test_a_traced_nan_rate_keeps_nothing_even_where_a_uniform_is_0():
  # The exact generator keeps an element when its 23-bit uniform is below ceil(keep * 2**23).
  # Key 4 draws one uniform of 0 among 2**20 (found by search: keep = 2**-23 keeps exactly it),
  # so a NaN whose threshold were 1 rather than 0 would keep that element.
  draw = jax.jit(lambda rate: jdrop.keep_mask(jax.random.key(4), (1 << 20,), rate=rate))
  assert int(draw(jnp.float32(1 - 2**-23)).sum()) == 1
  assert int(draw(jnp.float32("nan")).sum()) == 0
