"""The fused threefry path of keep_mask: bit-identity with jax.random, and when it is used."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jdrop
from jdrop._src import masks

SHAPES = [(), (0,), (1,), (2,), (3,), (7,), (31, 3), (2, 3, 5), (4, 1, 9), (1025,), (64, 129)]
RATES = [0.0, 1e-7, 0.1, 0.25, 0.3, 0.5, 0.7, 0.9, 0.999_999, 1.0]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_threefry_bits_equal_jax_random_bits(shape):
  for seed in (0, 1, 2**31 - 1, 123_456_789):
    key = jax.random.key(seed)
    expected = jax.random.bits(key, shape, jnp.uint32)
    np.testing.assert_array_equal(masks.threefry_bits(key, shape), expected)
    np.testing.assert_array_equal(
      jax.jit(masks.threefry_bits, static_argnums=1)(key, shape), expected
    )


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_keep_mask_equals_bernoulli(shape, jit):
  draw = jax.jit(jdrop.keep_mask, static_argnums=1) if jit else jdrop.keep_mask
  for seed in (0, 7):
    for rate in RATES:
      key = jax.random.key(seed)
      expected = jax.random.bernoulli(key, 1 - rate, shape)
      np.testing.assert_array_equal(draw(key, shape, rate=rate), expected, err_msg=f"{rate=}")


def test_threshold_is_exact_on_and_around_grid_points():
  # Keep probabilities exactly on a uniform grid point k * 2**-23, and one float32
  # ulp either side, are where an inexact threshold would differ from bernoulli.
  key = jax.random.key(3)
  shape = (4096,)
  draw = jax.jit(lambda key, keep: masks.draw_keep_mask(key, shape, keep))
  for k in (1, 2, 2**22, 2**23 - 1, 1_234_567):
    p = np.float32(k * 2.0**-23)
    for keep in (np.nextafter(p, np.float32(0)), p, np.nextafter(p, np.float32(1))):
      keep = jnp.float32(keep)
      np.testing.assert_array_equal(draw(key, keep), jax.random.bernoulli(key, keep, shape))


def test_threshold_at_keep_probabilities_built_from_the_drawn_bits():
  # The oracle is bernoulli's own rule, u < p with u = (bits >> 9) * 2**-23. A keep
  # probability exactly on a drawn u must drop that element (u < u is false: `<=` would keep
  # it), and one half a grid step above must keep it (`floor` for `ceil` would drop it). Only
  # keep probabilities built from the drawn bits put a drawn value on the edge.
  key = jax.random.key(5)
  shape = (64,)
  u = np.asarray(jax.random.bits(key, shape, jnp.uint32)) >> 9
  for i in (0, int(np.argmin(u)), int(np.argmax(u)), 17):
    for offset, kept in ((0.0, False), (0.5, True)):
      keep = (float(u[i]) + offset) * 2.0**-23  # exact in float32 (24 significant bits)
      assert float(np.float32(keep)) == keep
      expected = jax.random.bernoulli(key, np.float32(keep), shape)
      assert bool(expected[i]) is kept
      for got in (
        jdrop.keep_mask(key, shape, rate=1.0 - keep),  # 1 - (1 - keep) is exact in float64
        masks.draw_keep_mask(key, shape, jnp.float32(keep)),
      ):
        np.testing.assert_array_equal(got, expected, err_msg=f"{i=} {offset=}")


def test_traced_rate_equals_bernoulli_with_same_keep():
  key = jax.random.key(11)
  rates = jnp.linspace(0.0, 1.0, 41)
  got = jax.vmap(lambda r: jdrop.keep_mask(key, (257,), rate=r))(rates)
  expected = jax.vmap(lambda r: jax.random.bernoulli(key, 1 - r, (257,)))(rates)
  np.testing.assert_array_equal(got, expected)


def test_vmap_over_keys_equals_vmapped_bernoulli():
  keys = jax.random.split(jax.random.key(0), 64)
  got = jax.jit(jax.vmap(lambda k: jdrop.keep_mask(k, (33, 5), rate=0.3)))(keys)
  expected = jax.vmap(lambda k: jax.random.bernoulli(k, 0.7, (33, 5)))(keys)
  np.testing.assert_array_equal(got, expected)


def test_legacy_raw_keys_match():
  key = jax.random.PRNGKey(42)
  np.testing.assert_array_equal(
    jdrop.keep_mask(key, (100,), rate=0.4), jax.random.bernoulli(key, 0.6, (100,))
  )
  keys = jax.random.split(key, 8)  # a uint32[8, 2] batch of raw keys, mapped
  got = jax.vmap(lambda k: jdrop.keep_mask(k, (10,), rate=0.4))(keys)
  np.testing.assert_array_equal(got, jax.vmap(lambda k: jax.random.bernoulli(k, 0.6, (10,)))(keys))


def _uses_random_bits(fn, *args) -> bool:
  return "random_bits" in str(jax.make_jaxpr(fn)(*args))


def test_fused_path_is_used_for_default_threefry_keys():
  key = jax.random.key(0)
  draw = lambda k: jdrop.keep_mask(k, (16,), rate=0.5)
  assert not _uses_random_bits(draw, key)  # fused: plain integer ops, no primitive
  assert _uses_random_bits(lambda k: jax.random.bernoulli(k, 0.5, (16,)), key)


@pytest.mark.parametrize("impl", ["rbg", "unsafe_rbg", "threefry2x32"])
def test_other_key_implementations_fall_back_and_still_match(impl):
  key = jax.random.key(5, impl=impl)
  got = jdrop.keep_mask(key, (3, 7), rate=0.3)
  np.testing.assert_array_equal(got, jax.random.bernoulli(key, 0.7, (3, 7)))
  assert masks.fused_path_available(key, 21) == (impl == "threefry2x32")


def test_non_partitionable_threefry_falls_back():
  key = jax.random.key(9)
  with jax.threefry_partitionable(False):
    assert not masks.fused_path_available(key, 10)
    got = jax.jit(lambda k: jdrop.keep_mask(k, (300,), rate=0.5))(key)
    expected = jax.random.bernoulli(key, 0.5, (300,))
  np.testing.assert_array_equal(got, expected)


def test_fused_path_limited_to_32_bit_counters():
  key = jax.random.key(0)
  assert masks.fused_path_available(key, 2**32 - 1)
  assert not masks.fused_path_available(key, 2**32)


def test_dropout_program_has_no_full_size_temporary():
  # The fused mask, compare and select compile to one loop: XLA's temporary
  # buffers stay far below one byte per element (bernoulli needs 4+).
  n = 2**20
  x = jax.ShapeDtypeStruct((n,), jnp.float32)
  key = jax.eval_shape(lambda: jax.random.key(0))
  compiled = jax.jit(lambda k, x: jdrop.dropout(k, x, rate=0.5)).lower(key, x).compile()
  stats = compiled.memory_analysis()
  if stats is None:  # pragma: no cover - backend without memory analysis
    pytest.skip("memory_analysis unavailable on this backend")
  assert stats.temp_size_in_bytes <= n, stats.temp_size_in_bytes


def test_threshold_matches_float_comparison_exhaustively_for_small_grid():
  # For every 23-bit uniform value k and a sweep of keep probabilities, the integer
  # compare (k < ceil(p * 2**23)) equals bernoulli's float compare (k * 2**-23 < p).
  k = lax.iota(jnp.uint32, 2**16) * jnp.uint32(2**7)  # spread over [0, 2**23)
  u = k.astype(jnp.float32) * jnp.float32(2.0**-23)
  for p in np.linspace(0, 1, 257, dtype=np.float32):
    np.testing.assert_array_equal(k < masks._threshold(jnp.float32(p)), u < p)
  assert math.isclose(float(u[-1]), 1 - 2**-16, rel_tol=0)


@pytest.mark.parametrize(
  ("dtype", "expected"),
  [
    (np.float64, np.float64),
    (np.float32, np.float32),
    (jnp.bfloat16, np.float32),
    (np.float16, np.float32),
    (np.int64, np.float32),
    (np.int32, np.float32),
  ],
)
def test_compute_dtype_keeps_float64_and_widens_narrower_floats_to_float32(dtype, expected):
  # The docstring's rule, checked on dtypes directly (float64 arrays need jax_enable_x64).
  assert masks.compute_dtype(dtype) == np.dtype(expected)


@pytest.mark.parametrize(
  ("rate", "allow_one", "invalid"),
  [
    (1.5, True, True),
    (1.0, True, False),
    (1.0, False, True),
    (-0.1, True, True),
    (0.3, True, False),
  ],
)
def test_invalid_rate_of_a_traced_rate(rate, allow_one, invalid):
  got = jax.jit(lambda r: masks.invalid_rate(r, allow_one=allow_one))(rate)
  assert bool(got) is invalid


_K = jax.random.key(0)
_RATE_FIX = "Pass the probability of *dropping* a unit, e.g. rate=0.1."
_SHAPE = "jdrop.keep_mask: `shape` must"
_KEY = "jdrop.keep_mask: `key` must"
_FAST = (
  "jdrop.keep_mask: `fast` must be a Python bool (it chooses the mask generator when the function"
  " is traced), got {}. Pass fast=True for the fast masks or fast=False for"
  " jax.random.bernoulli's."
)


def _traced_rate(rate):
  return jax.jit(lambda r: jdrop.keep_mask(_K, (4,), rate=r))(rate)


@pytest.mark.parametrize(
  ("call", "error", "text"),
  [
    (
      lambda: jdrop.keep_mask(_K, (4,), rate=True),
      TypeError,
      "jdrop.keep_mask: `rate` must be a float drop probability, got True. Pass a number such as"
      " rate=0.1.",
    ),
    (
      lambda: _traced_rate(jnp.complex64(0.5)),
      TypeError,
      "jdrop.keep_mask: `rate` must be a real scalar, got a traced complex64[]. Pass a scalar"
      " float.",
    ),
    (
      lambda: _traced_rate(jnp.full(2, 0.5, jnp.float32)),
      TypeError,
      "jdrop.keep_mask: `rate` must be a real scalar, got a traced float32[2]. Pass a scalar"
      " float.",
    ),
    (
      lambda: jdrop.keep_mask(_K, (4,), rate="0.5"),
      TypeError,
      "jdrop.keep_mask: `rate` must be a real scalar drop probability, got '0.5'. Pass a number"
      " such as rate=0.1.",
    ),
    (
      lambda: jdrop.keep_mask(_K, (4,), rate=[0.1, 0.2]),
      TypeError,
      "jdrop.keep_mask: `rate` must be a real scalar drop probability, got [0.1, 0.2]. Pass a"
      " number such as rate=0.1.",
    ),
    (
      lambda: jdrop.keep_mask(_K, (4,), rate=1.5),
      ValueError,
      f"jdrop.keep_mask: `rate` must be a drop probability in [0, 1], got 1.5. {_RATE_FIX}",
    ),
    (
      lambda: jdrop.keep_mask(_K, (4,), rate=float("nan")),
      ValueError,
      f"jdrop.keep_mask: `rate` must be a drop probability in [0, 1], got nan. {_RATE_FIX}",
    ),
    (
      lambda: jdrop.keep_mask(_K, (4,), rate=-0.1),
      ValueError,
      f"jdrop.keep_mask: `rate` must be a drop probability in [0, 1], got -0.1. {_RATE_FIX}",
    ),
    (
      lambda: masks.check_rate("f", 1.0, allow_one=False),
      ValueError,
      "f: `rate` must be a drop probability in [0, 1), got 1.0. Rate 1 gives this noise infinite"
      " variance; use a rate below 1.",
    ),
    (
      lambda: masks.check_rate("f", 1.5, allow_one=False),
      ValueError,
      f"f: `rate` must be a drop probability in [0, 1), got 1.5. {_RATE_FIX}",
    ),
    (
      lambda: jdrop.keep_mask(_K, "ab", rate=0.5),
      TypeError,
      f"{_SHAPE} be a tuple of non-negative ints, got 'ab'. Pass for example shape=(32, 128).",
    ),
    (
      lambda: jdrop.keep_mask(_K, 2.5, rate=0.5),
      TypeError,
      f"{_SHAPE} be a tuple of non-negative ints, got 2.5. Pass for example shape=(32, 128).",
    ),
    (
      lambda: jdrop.keep_mask(_K, (2, True), rate=0.5),
      TypeError,
      f"{_SHAPE} contain only ints, got (2, True). Pass integer sizes, for example"
      " shape=(32, 128).",
    ),
    (
      lambda: jdrop.keep_mask(_K, (2, -1), rate=0.5),
      ValueError,
      f"{_SHAPE} not contain negative sizes, got (2, -1). Pass non-negative sizes, for example"
      " shape=(32, 128).",
    ),
    (
      lambda: jdrop.keep_mask(_K, (0, 2**31, 2**31), rate=0.5),
      ValueError,
      f"{_SHAPE} have at most 2**56 elements (what XLA can compile), got (0, 2147483648,"
      " 2147483648). Draw the mask in smaller blocks, e.g. one per example with jax.vmap over"
      " keys.",
    ),
    (
      lambda: jdrop.keep_mask(jax.random.split(_K, 2), (4,), rate=0.5),
      ValueError,
      f"{_KEY} be a single PRNG key, got a batch of keys with shape (2,). To use one key per"
      " example, map over the keys with jax.vmap.",
    ),
    (
      lambda: jdrop.keep_mask(jnp.ones(2), (4,), rate=0.5),
      TypeError,
      f"{_KEY} be a PRNG key, got an array of dtype float32 and shape (2,). Create one with"
      " jax.random.key(seed).",
    ),
    (
      lambda: jdrop.keep_mask(np.ones(3, np.uint32), (4,), rate=0.5),
      TypeError,
      f"{_KEY} be a PRNG key (a raw key has shape (2,)), got a uint32 array of shape (3,)."
      " Create one with jax.random.key(seed).",
    ),
    (
      lambda: jdrop.keep_mask(np.ones((2, 2), np.uint32), (4,), rate=0.5),
      ValueError,
      f"{_KEY} be a single PRNG key, got a batch of raw keys with shape (2, 2). To use one key"
      " per example, map over the keys with jax.vmap.",
    ),
    (
      lambda: jdrop.keep_mask(3, (4,), rate=0.5),
      TypeError,
      f"{_KEY} be a PRNG key, got 3. Create one with jax.random.key(seed) and split it with"
      " jax.random.split.",
    ),
    (lambda: jdrop.keep_mask(_K, (4,), rate=0.5, fast=1), TypeError, _FAST.format("1")),
    (
      lambda: jax.jit(lambda f: jdrop.keep_mask(_K, (4,), rate=0.5, fast=f))(True),
      TypeError,
      _FAST.format("a traced bool[]"),
    ),
  ],
)
def test_each_validation_message_whole(call, error, text):
  """Every error of the mask's argument checks, word for word: function, argument, value, fix."""
  with pytest.raises(error) as caught:
    call()
  assert str(caught.value) == text


def test_the_size_limit_is_exact_and_counts_unit_dims_once():
  # 2**56 elements are allowed, with any number of size-1 dims; one more is refused. Traced
  # with eval_shape: nothing is allocated or compiled.
  shape = (1, 1, 2**56)
  draw = lambda k: jdrop.keep_mask(k, shape, rate=0.5)
  assert jax.eval_shape(draw, _K).shape == shape
  with pytest.raises(ValueError, match=r"must have at most 2\*\*56 elements"):
    jdrop.keep_mask(_K, (1, 2**56 + 1), rate=0.5)


def test_an_array_rate_keeps_its_dtype_under_x64():
  # A float32 array rate is subtracted in float32, a Python rate in JAX's default float (float64
  # under x64), as flax.linen.Dropout's Python float would be.
  with jax.enable_x64(True):
    assert masks.keep_probability(jnp.float32(0.1)).dtype == jnp.float32
    assert masks.keep_probability(jnp.bfloat16(0.1)).dtype == jnp.float32
    assert masks.keep_probability(0.1).dtype == jnp.float64
    assert masks.keep_probability(np.float64(0.1)).dtype == jnp.float64
