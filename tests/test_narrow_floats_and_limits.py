"""Inputs at the edges of what JAX supports: 8- and 4-bit floats, the bias that rounding the
output leaves in low precision, masks too large for XLA, and parameters that are not
numbers. Each gets a correct result or one readable error, never an error from JAX's
internals (or a C++ abort).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import jdrop
from jdrop import activations
from jdrop import montecarlo
from jdrop._src import masks

KEY = jax.random.key(11)
NARROW = [
  jnp.bfloat16,
  jnp.float16,
  jnp.float8_e4m3fn,
  jnp.float8_e5m2,
  jnp.float8_e4m3fnuz,
  jnp.float8_e5m2fnuz,
  jnp.float8_e4m3b11fnuz,
  jnp.float8_e3m4,
  jnp.float8_e4m3,
  jnp.float4_e2m1fn,
]
IDS = [jnp.dtype(d).name for d in NARROW]
X = np.array([-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 1.5, 2.0], np.float32)


@pytest.mark.parametrize("dtype", NARROW, ids=IDS)
@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3, 0.5, 1.0])
def test_dropout_of_narrow_floats_is_scaled_in_float32_and_rounded_once(dtype, rate):
  x = jnp.asarray(X, dtype)
  mask = jdrop.keep_mask(KEY, x.shape, rate=rate)
  want = np.where(mask, (np.asarray(x, np.float32) / np.float32(1 - rate or 1)), 0)
  want = np.where(rate == 1.0, 0, want).astype(dtype)
  for fn in (jdrop.dropout, jax.jit(jdrop.dropout, static_argnames="rate")):
    got = fn(KEY, x, rate=rate)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  got = jdrop.apply_mask(x, mask, rate=rate)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))


@pytest.mark.parametrize("dtype", NARROW, ids=IDS)
def test_the_whole_dropout_family_accepts_narrow_floats(dtype):
  x = jnp.asarray(X, dtype)
  outs = [
    jdrop.alpha_dropout(KEY, x, rate=0.2),
    jdrop.gaussian_dropout(KEY, x, rate=0.2),
    jdrop.drop_path(KEY, x.reshape(4, 2), rate=0.5),
    jdrop.dropout(KEY, x, rate=jnp.asarray(0.5, dtype)),  # a narrow rate: never rounded
    jax.jit(lambda r: jdrop.dropout(KEY, x, rate=r))(0.5),
    activations.rrelu(KEY, x),
    jdrop.both_orders(KEY, x, "relu", rate=0.5).pre,
  ]
  assert all(o.dtype == x.dtype for o in outs)
  exact = montecarlo.exact_moments("relu", x, rate=0.5)
  result = montecarlo.compare_orders(KEY, "relu", x, rate=0.5, num_masks=64)
  assert exact.pre.mean.dtype == result.pre.mean.dtype == jnp.float32


def test_a_float_without_zero_is_refused():
  x = jnp.ones(4, jnp.float8_e8m0fnu)  # powers of two only: a dropped unit would be NaN
  for call in (
    lambda: jdrop.dropout(KEY, x, rate=0.5),
    lambda: jdrop.apply_mask(x, jnp.ones(4, bool), rate=0.5),
    lambda: montecarlo.compare_orders(KEY, "relu", x, rate=0.5, num_masks=4),
  ):
    with pytest.raises(TypeError, match="must have a floating-point dtype that can hold 0"):
      call()


def test_a_dtype_this_backend_cannot_hold_is_one_error():
  x = np.ones(4, ml_dtypes.float6_e2m3fn)
  try:
    jnp.asarray(x)
  except Exception:
    pass
  else:
    pytest.skip("this backend holds float6")
  with pytest.raises(TypeError, match=r"jdrop\.dropout: `x` must be an array of floats that"):
    jdrop.dropout(KEY, x, rate=0.5)


# ----------------------------------------------------------------------------
# The bias that rounding the output leaves in low precision.


def test_bf16_dropout_of_ones_at_rate_0_1_has_mean_0_9984375():
  n = 1_000_000
  y = jdrop.dropout(KEY, jnp.ones(n, jnp.bfloat16), rate=0.1)
  assert float(jnp.asarray(1 / 0.9, jnp.bfloat16)) == 1.109375
  expected = 0.9 * 1.109375  # q * round(1 / q): the bias is in the kept value, not the mask
  sd = 1.109375 * np.sqrt(0.9 * 0.1 / n)  # of the sample mean
  mean = float(y.astype(jnp.float32).mean())
  assert abs(mean - expected) < 4.5 * sd  # a 4.5-sigma band: a false alarm once in 10**5
  assert abs(1.0 - expected) > 4.5 * sd  # and the bias (1.6e-3) is far outside noise (3e-4)


@pytest.mark.parametrize("dtype", NARROW, ids=IDS)
def test_the_rounding_bias_is_at_most_half_an_ulp_as_documented(dtype):
  """E[D(x)] = q round(x / q) exactly (the mask is unbiased), within eps / 2 of x."""
  finfo = jnp.finfo(dtype)
  x = jnp.asarray([1.0, 0.75, 1.5], dtype)  # x / q normal in every dtype (float4: up to 6)
  for rate in (0.05, 0.1, 0.2, 1 / 3, 0.5):
    q = 1.0 - rate
    kept = jdrop.apply_mask(x, jnp.ones(3, bool), rate=rate)
    mean = q * np.asarray(kept, np.float64)
    relative = np.abs(mean / np.asarray(x, np.float64) - 1)
    assert (relative <= float(finfo.eps) / 2 + 1e-12).all(), (rate, relative)


# ----------------------------------------------------------------------------
# Masks too large for XLA: one error, not an abort.


@pytest.mark.parametrize(
  "shape",
  [(2**70,), (2**31, 2**31, 2**31), (0, 2**70), (2**28, 2**28, 2), (2**56 + 1,), (2**63,)],
  ids=str,
)
def test_a_mask_larger_than_xla_can_compile_is_one_error(shape):
  with pytest.raises(ValueError) as exc:
    jdrop.keep_mask(KEY, shape, rate=0.5)
  text = str(exc.value)
  assert text.startswith("jdrop.keep_mask: `shape` must have at most 2**56 elements")
  assert str(tuple(shape)) in text and "\n" not in text


def test_the_largest_allowed_mask_traces():
  shape = (2**28, 2**28)
  assert masks.check_shape("f", shape) == shape
  out = jax.eval_shape(lambda k: jdrop.keep_mask(k, shape, rate=0.5), KEY)
  assert out.shape == shape and out.dtype == jnp.bool_


# ----------------------------------------------------------------------------
# Parameters that are not numbers, and activations that cannot take x.


@pytest.mark.parametrize(
  "name, params",
  [
    ("leaky_relu", {"negative_slope": "a"}),
    ("elu", {"alpha": "1.0"}),
    ("celu", {"alpha": [1, "x"]}),
    ("relu", {"max_value": "6"}),
    ("softplus", {"beta": object()}),
    ("softmax", {"axis": "last"}),
    ("hard_tanh", {"min_val": b"-1"}),
    ("squareplus", {"b": 1 + 2j}),
    ("gelu", {"approximate": "yes"}),
  ],
)
def test_a_parameter_that_is_not_a_number_is_refused_by_get(name, params):
  with pytest.raises(TypeError) as exc:
    activations.get(name, **params)
  (param,) = params
  text = str(exc.value)
  assert text.startswith(f"jdrop.activations.get: `{param}` must be a number")
  assert f"a parameter of {name!r}" in text and "its default" in text


def test_parameters_that_are_numbers_or_traced_still_work():
  x = jnp.array([-2.0, 1.0])
  assert float(activations.get("leaky_relu", negative_slope=np.float32(0.5))(x)[0]) == -1.0
  assert activations.get("softmax", axis=(0,), where=jnp.array([True, True]))(x).shape == (2,)
  assert activations.get("relu", max_value=None)(x).tolist() == [0.0, 1.0]
  slope = jax.jit(lambda s: activations.get("leaky_relu", negative_slope=s)(x))(0.25)
  assert float(slope[0]) == -0.5


def test_a_user_activation_with_a_string_parameter_is_left_alone(monkeypatch):
  def scaled(x, mode="double", scale=1.0):
    return x * (2 if mode == "double" else 1) * scale

  activations.register("jdrop_test_scaled", scaled)
  try:
    assert activations.get("jdrop_test_scaled", mode="single")(jnp.ones(1)).tolist() == [1.0]
    with pytest.raises(TypeError, match="`scale` must be a number"):
      activations.get("jdrop_test_scaled", scale="big")
  finally:
    activations.unregister("jdrop_test_scaled")


@pytest.mark.parametrize(
  "call",
  [
    lambda: jdrop.both_orders(KEY, jnp.ones(7), "glu", rate=0.5),
    lambda: montecarlo.compare_orders(KEY, "glu", jnp.ones(7), rate=0.5, num_masks=4),
    lambda: montecarlo.exact_moments(lambda x: x[jnp.array([9])], jnp.ones(7), rate=0.5),
  ],
)
def test_an_activation_that_fails_on_x_is_one_value_error(call):
  with pytest.raises(ValueError) as exc:
    call()
  assert "`activation` must map x of shape (7,)" in str(exc.value)
  assert "raised" in str(exc.value) or "shape (1,)" in str(exc.value)


def test_an_activations_own_type_and_value_errors_pass_through():
  with pytest.raises(ValueError, match="parametric_relu: `negative_slope` must be >= 0"):
    jdrop.both_orders(KEY, jnp.ones(3), activations.get("relu", negative_slope=-1.0), rate=0.5)

  def broken(x):
    raise IndexError("my bug")

  with pytest.raises(ValueError, match="raised IndexError: my bug") as exc:
    jdrop.both_orders(KEY, jnp.ones(3), broken, rate=0.5)
  assert isinstance(exc.value.__cause__, IndexError)  # the traceback of the bug is kept
