"""The checker's float-level finding: bit-for-bit comparison of both orders of dropout."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jdrop
from jdrop._src.checker import floats
from jdrop._src.checker.verdict import DtypeFinding
from jdrop._src.checker.verdict import FloatFinding

SHAPE = (4,)
leaky_relu = functools.partial(jax.nn.leaky_relu, negative_slope=0.01)


def _identity(x):
  return x


def _nan_with_payload(x):
  """Identity for x >= 0; a quiet NaN carrying x's low mantissa bits for x < 0.

  So ``f(x / q)`` and ``f(x) / q`` are NaNs with different payloads where x < 0.
  """
  if x.dtype == jnp.float32:
    uint, quiet, low = jnp.uint32, 0x7FC00000, 0x003FFFFF
  else:
    uint, quiet, low = jnp.uint16, 0x7FC0, 0x003F
  bits = lax.bitcast_convert_type(x, uint)
  nan = lax.bitcast_convert_type((bits & uint(low)) | uint(quiet), x.dtype)
  return jnp.where(x < 0, nan, x)


def _by_hand(f, x, rate, kept, dtype):
  """Both orders at one scalar, eagerly, with jdrop.apply_mask: ``(pre, post)``."""
  x = jnp.asarray([x], dtype)
  mask = jnp.asarray([kept])
  pre = f(jdrop.apply_mask(x, mask, rate=rate))
  post = jdrop.apply_mask(f(x), mask, rate=rate)
  return np.asarray(pre), np.asarray(post)


def _by_dtype(finding: FloatFinding) -> dict[str, DtypeFinding]:
  assert isinstance(finding, FloatFinding)
  assert finding.backend == jax.default_backend()
  assert [d.dtype for d in finding.dtypes] == ["float32", "bfloat16"]
  return {d.dtype: d for d in finding.dtypes}


# ----------------------------------------------------------------------------
# ulp distance.


def test_ulp_distance_rules():
  f32 = np.float32
  nan_a = np.array([0x7FC00000], np.uint32).view(np.float32)[0]
  nan_b = np.array([0xFFC01234], np.uint32).view(np.float32)[0]
  tiny = np.finfo(np.float32).smallest_subnormal
  big = np.finfo(np.float32).max
  a = np.array([1.0, 0.0, nan_a, nan_a, 1.0, np.inf, np.inf, -np.inf, -tiny, -1.0, 2.0], f32)
  b = np.array(
    [np.nextafter(f32(1), f32(2)), -0.0, nan_b, 1.0, nan_a, np.inf, big, np.inf, tiny, -1.0, 1.0],
    f32,
  )
  expected = [1, 0, 0, np.inf, np.inf, 0, np.inf, np.inf, 2, 0, 2**23]
  np.testing.assert_array_equal(floats.ulp_distance(a, b), expected)


def test_ulp_distance_bfloat16():
  a = np.array([1.0, -1.0, 0.0], jnp.bfloat16)
  b = np.array([1.0078125, -1.0078125, -0.0], jnp.bfloat16)  # next bf16 after 1 is 1 + 2**-7
  np.testing.assert_array_equal(floats.ulp_distance(a, b), [1, 1, 0])


# ----------------------------------------------------------------------------
# Findings.


@pytest.mark.parametrize("f", [jax.nn.relu, _identity], ids=["relu", "identity"])
def test_positively_homogeneous_functions_are_bit_identical(f):
  findings = _by_dtype(floats.float_level(f, SHAPE))
  rows = -(-floats.sample_scalars().size // 4)
  for d in findings.values():
    assert d.bit_identical, d
    assert d.max_ulps == 0.0
    assert d.worst_x is None and d.worst_rate is None and d.worst_mask is None
    assert d.num_samples == len(floats.DEFAULT_RATES) * 3 * rows * 4


def test_leaky_relu_differs_by_an_ulp_or_two_and_the_witness_reproduces():
  findings = _by_dtype(floats.float_level(leaky_relu, SHAPE))
  for d in findings.values():
    assert not d.bit_identical
    assert 1 <= d.max_ulps <= (2 if jax.default_backend() == "cpu" else 4), d
    assert d.worst_mask is True  # f(0) = 0: a dropped unit always matches
    assert d.worst_rate in floats.DEFAULT_RATES
    assert d.worst_x < 0  # the positive half is the identity
    pre, post = _by_hand(leaky_relu, d.worst_x, d.worst_rate, d.worst_mask, d.dtype)
    _reproduces(floats.ulp_distance(pre, post)[0], d.max_ulps)
    assert str(d).startswith(f"{d.dtype}: differ by up to")


def _reproduces(by_hand: float, reported: float) -> None:
  """The witness reproduces the reported gap: exactly on CPU; elsewhere XLA may fuse the
  hand-written program differently (a GPU fuses f into the dropout's kernel), so there the
  witness must still show a gap, not necessarily the same number of ulps."""
  if jax.default_backend() == "cpu":
    assert by_hand == reported
  else:
    assert by_hand >= 1 and reported >= 1


def test_tanh_differs_by_many_ulps():
  findings = _by_dtype(floats.float_level(jax.nn.tanh, SHAPE))
  assert findings["float32"].max_ulps > 1e6
  assert findings["bfloat16"].max_ulps > 100
  for d in findings.values():
    assert not d.bit_identical and d.worst_mask is True and math.isfinite(d.max_ulps)
    pre, post = _by_hand(jax.nn.tanh, d.worst_x, d.worst_rate, True, d.dtype)
    _reproduces(floats.ulp_distance(pre, post)[0], d.max_ulps)


def test_sigmoid_is_worst_on_a_dropped_unit():
  # A dropped unit gives sigmoid(0) = 0.5 against 0: as many ulps as 0.5 has bit patterns
  # below it, more than any kept unit differs by.
  findings = _by_dtype(floats.float_level(jax.nn.sigmoid, SHAPE))
  half = {"float32": np.float32(0.5).view(np.int32), "bfloat16": 0x3F00}
  for name, d in findings.items():
    assert not d.bit_identical
    assert d.worst_mask is False
    assert d.max_ulps == float(half[name])


def test_nan_matches_nan_whatever_the_payload():
  # Kept negative inputs give NaN in both orders, with different payloads in float32
  # (XLA's bfloat16 arithmetic goes through float32 and may canonicalise the NaN): the
  # finding must still be bit-identical, not report inf.
  pre, post = _by_hand(_nan_with_payload, -3.0, 0.3, True, "float32")
  assert np.isnan(pre).all() and np.isnan(post).all()
  if pre.tobytes() == post.tobytes():
    pytest.skip("this backend canonicalises NaN payloads: nothing to distinguish")
  assert pre.tobytes() != post.tobytes()  # the test is meaningful: the bits differ
  for d in _by_dtype(floats.float_level(_nan_with_payload, SHAPE)).values():
    assert d.bit_identical, d
    assert d.max_ulps == 0.0


def test_one_sided_infinity_is_infinitely_many_ulps():
  # log: a dropped unit gives log(0) = -inf against 0; negative kept units give NaN in
  # both orders, which does not count.
  for d in _by_dtype(floats.float_level(jnp.log, SHAPE)).values():
    assert d.max_ulps == math.inf
    assert d.worst_mask is False


def test_rate_restricts_the_rates():
  finding = floats.float_level(leaky_relu, SHAPE, rate=0.3)
  default = floats.float_level(leaky_relu, SHAPE)
  for d, all_rates in zip(finding.dtypes, default.dtypes, strict=True):
    assert d.worst_rate == 0.3
    assert d.num_samples * len(floats.DEFAULT_RATES) == all_rates.num_samples
  with pytest.raises(ValueError, match="rate"):
    floats.float_level(leaky_relu, SHAPE, rate=1.5)


def test_second_call_with_the_same_function_does_not_retrace():
  traces = []

  def f(x):
    traces.append(x.dtype)
    return jnp.tanh(x) * 2

  first = floats.float_level(f, SHAPE)
  assert sorted(map(str, traces)) == ["bfloat16", "float32"]  # one program, both dtypes
  count = len(traces)
  second = floats.float_level(f, SHAPE)
  assert len(traces) == count
  assert first == second
  floats.float_level(f, (2, 3))  # a new shape is a new program
  assert len(traces) > count


def test_a_function_that_fails_in_bfloat16_gets_a_nan_finding():
  def f(x):
    if x.dtype == jnp.bfloat16:
      raise TypeError("no bfloat16 here")
    return jax.nn.relu(x)

  for _ in range(2):  # the second call takes the remembered per-dtype path
    findings = _by_dtype(floats.float_level(f, SHAPE))
    assert findings["float32"].bit_identical
    bf16 = findings["bfloat16"]
    assert not bf16.bit_identical and math.isnan(bf16.max_ulps)
    assert bf16.worst_x is None and bf16.worst_rate is None and bf16.worst_mask is None


def test_non_elementwise_function_and_other_shapes():
  # softmax couples a row: a dropped unit changes the others. The witness is still a
  # real input value of the sample, and an unhashable callable still works (uncached).
  class Unhashable:
    __hash__ = None

    def __call__(self, x):
      return jax.nn.softmax(x, axis=-1)

  findings = _by_dtype(floats.float_level(Unhashable(), (2, 3)))
  sample = floats.sample_scalars()
  for d in findings.values():
    assert not d.bit_identical
    assert np.isclose(sample, d.worst_x, rtol=1e-2, atol=1e-30).any()
