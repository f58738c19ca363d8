"""Tests for jdrop.activations: the registry, the PyTorch/Keras conventions, rrelu's randomness,
transformations and every error path."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdrop import activations

NAMES = activations.names()

# The registry entries that are jax.nn's own function objects (not copies, not wrappers).
JAX_NN_NAMES = """
  celu elu gelu glu hard_sigmoid hard_silu hard_tanh identity leaky_relu log_sigmoid log_softmax
  mish relu relu6 selu sigmoid silu soft_sign softmax softplus sparse_plus sparse_sigmoid
  squareplus tanh
""".split()
NOT_ELEMENTWISE = {"glu", "log_softmax", "softmax", "softmin"}

# The functions written in jdrop, each callable on x alone, for the input-dtype checks.
JDROP_FUNCTIONS = {
  "threshold": functools.partial(activations.threshold, threshold=0.0, value=0.0),
  "hard_shrink": activations.hard_shrink,
  "soft_shrink": activations.soft_shrink,
  "tanh_shrink": activations.tanh_shrink,
  "exponential": activations.exponential,
  "abs": activations.abs,
  "quick_gelu": activations.quick_gelu,
  "softmin": activations.softmin,
  "prelu": functools.partial(activations.prelu, slope=0.25),
  "rrelu": functools.partial(activations.rrelu, jax.random.key(0)),
  "parametric_relu": activations.parametric_relu,
  "parametric_hard_tanh": activations.parametric_hard_tanh,
  "parametric_softplus": activations.parametric_softplus,
}


# The kinks of the registry defaults (0, +-0.5, +-1, +-3), points inside the shrink dead zones
# (+-0.25) and far tails, shaped (2, 3, 4) so that glu and the softmaxes have an axis to act on.
KINKS_AND_TAILS = [-30.0, -3.0, -1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0, 3.0, 20.0, 30.0]
X = jnp.array(KINKS_AND_TAILS * 2).reshape(2, 3, 4)

# jit may fuse ops and keep intermediates in higher precision than eager op-by-op execution:
# a few ulps in float32; in bfloat16 (8 significant bits, ulp 2^-7 relative) several ulps.
JIT_TOLERANCE = {jnp.dtype(jnp.float32): 1e-6, jnp.dtype(jnp.bfloat16): 2**-5}


@pytest.mark.parametrize("name", NAMES)
def test_entry_keeps_dtype_and_shape_eager_and_jitted(name):
  fn = activations.get(name)
  xs = {"f32": X, "bf16": X.astype(jnp.bfloat16)}
  eager = {key: fn(x) for key, x in xs.items()}
  # Both dtypes in one jitted function: compiling dominates the cost of these tests.
  jitted = jax.jit(lambda xs: {key: fn(x) for key, x in xs.items()})(xs)
  # glu gates one half of the last axis with the other half, so that axis halves.
  expected_shape = (2, 3, 2) if name == "glu" else X.shape
  for key, x in xs.items():
    for y in (eager[key], jitted[key]):
      assert y.dtype == x.dtype
      assert y.shape == expected_shape
    tol = JIT_TOLERANCE[x.dtype]
    np.testing.assert_allclose(
      np.asarray(jitted[key], np.float32), np.asarray(eager[key], np.float32), rtol=tol, atol=tol
    )


# The entries written in jdrop (jax.nn's own are tested by JAX).
JDROP_ENTRIES = [n for n in NAMES if activations.info(n).source in ("pytorch", "keras", "jdrop")]


@pytest.mark.parametrize("name", JDROP_ENTRIES)
def test_jdrop_entry_vmap_and_finite_grad(name):
  fn = activations.get(name)

  @jax.jit  # One compiled function: compiling dominates the cost of these tests.
  def mapped_and_grad(x):
    return jax.vmap(fn)(x), jax.grad(lambda x: jnp.sum(fn(x)))(x)

  mapped, grad = mapped_and_grad(X)
  # Every entry acts elementwise or along the last axis, so mapping the leading axis changes
  # nothing beyond fusion differences.
  np.testing.assert_allclose(mapped, fn(X), rtol=1e-6, atol=1e-6)
  # jnp.where keeps the gradient finite at the kinks and in the tails.
  assert grad.shape == X.shape
  assert bool(jnp.all(jnp.isfinite(grad)))


def test_jax_nn_entries_are_jax_nn_functions():
  for name in JAX_NN_NAMES:
    assert activations.get(name) is getattr(jax.nn, name), name
    assert activations.info(name).source == "jax.nn"
  gelu_exact = activations.get("gelu_exact")
  assert isinstance(gelu_exact, functools.partial)
  assert gelu_exact.func is jax.nn.gelu
  assert gelu_exact.args == () and gelu_exact.keywords == {"approximate": False}
  assert {n for n in NAMES if activations.info(n).source == "jax.nn"} == {
    *JAX_NN_NAMES,
    "gelu_exact",
  }


def test_aliases_resolve_to_jax_nn_functions():
  assert activations.get("swish") is jax.nn.swish is jax.nn.silu
  assert activations.get("hard_swish") is jax.nn.hard_swish is jax.nn.hard_silu
  assert activations.get("linear") is jax.nn.identity
  assert activations.info("swish") == activations.info("silu")


def test_names_sorted_canonical_and_complete():
  assert isinstance(NAMES, tuple)
  assert len(NAMES) >= 35
  assert list(NAMES) == sorted(NAMES)
  aliases = {alias for name in NAMES for alias in activations.info(name).aliases}
  assert {"swish", "hard_swish"} <= aliases
  assert not aliases & set(NAMES)
  pytorch_and_keras = {
    "threshold",
    "hard_shrink",
    "soft_shrink",
    "tanh_shrink",
    "exponential",
    "prelu",
    "rrelu",
    "softmin",
    "quick_gelu",
    "abs",
  }
  assert {*JAX_NN_NAMES, "gelu_exact", *pytorch_and_keras} <= set(NAMES)


def test_info_fields():
  # The registry states facts only: no dropout-commutation verdicts (the checker derives them).
  assert [f.name for f in dataclasses.fields(activations.Activation)] == [
    "name",
    "fn",
    "elementwise",
    "source",
    "aliases",
    "description",
    "params",
    "parametric",
  ]
  for name in NAMES:
    entry = activations.info(name)
    assert entry.name == name
    assert entry.elementwise == (name not in NOT_ELEMENTWISE), name
    assert entry.source in ("jax.nn", "pytorch", "keras", "jdrop", "user")
    assert entry.description and "\n" not in entry.description
    assert isinstance(entry.aliases, tuple) and isinstance(entry.params, tuple)
  with pytest.raises(dataclasses.FrozenInstanceError):
    activations.info("relu").name = "other"  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------
# get() with parameters.


def test_get_relu_routes_params_to_parametric_relu():
  x = X
  relu6 = activations.get("relu", max_value=6.0)
  assert relu6.func is activations.parametric_relu
  np.testing.assert_array_equal(relu6(x * 3), jax.nn.relu6(x * 3))
  leaky = activations.get("relu", negative_slope=0.2)
  np.testing.assert_allclose(leaky(x), jax.nn.leaky_relu(x, 0.2), rtol=1e-6)
  assert activations.info("relu").params == ("negative_slope", "max_value", "threshold")
  np.testing.assert_array_equal(activations.parametric_relu(x), jax.nn.relu(x))


def test_get_configures_jax_nn_and_jdrop_entries():
  x = X
  leaky = activations.get("leaky_relu", negative_slope=0.2)
  assert leaky.func is jax.nn.leaky_relu and leaky.keywords == {"negative_slope": 0.2}
  np.testing.assert_array_equal(activations.get("hard_tanh", min_val=-1.0)(x), jax.nn.hard_tanh(x))
  # Below PyTorch's threshold 20 the parametric softplus is jax.nn.softplus.
  np.testing.assert_allclose(
    activations.get("softplus", beta=1.0)(x), jax.nn.softplus(x), rtol=1e-6
  )
  np.testing.assert_array_equal(
    activations.get("threshold", value=-1.0)(jnp.array([0.0, 2.0])), jnp.array([-1.0, 2.0])
  )
  np.testing.assert_array_equal(
    activations.get("rrelu", lower=0.5, upper=0.5)(x), jax.nn.leaky_relu(x, 0.5)
  )
  slope = jnp.array([0.1, 0.2, 0.3, 0.4])
  np.testing.assert_allclose(
    activations.get("prelu", slope=slope)(x), jnp.where(x >= 0, x, slope * x), rtol=1e-6
  )
  assert activations.get("gelu", approximate=False)(x) == pytest.approx(
    activations.get("gelu_exact")(x)
  )


# ----------------------------------------------------------------------------------------------
# PyTorch and Keras conventions at the boundaries (expected values computed by hand).


def test_threshold_boundary():
  x = jnp.array([0.5, 1.0, 1.5, jnp.nan])
  y = activations.threshold(x, threshold=1.0, value=-5.0)
  # PyTorch: y = x if x > threshold else value; exactly at the threshold gives value.
  np.testing.assert_array_equal(y, jnp.array([-5.0, -5.0, 1.5, jnp.nan]))
  just_above = np.nextafter(np.float32(1.0), np.float32(2.0))
  assert activations.threshold(just_above, threshold=1.0, value=-5.0) == just_above


def test_hard_shrink_boundary():
  x = jnp.array([-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, jnp.nan])
  y = activations.hard_shrink(x, lambd=0.5)
  # PyTorch: x is kept only where |x| > lambd strictly; NaN stays NaN.
  np.testing.assert_array_equal(y, jnp.array([-0.75, 0, 0, 0, 0, 0, 0.75, jnp.nan]))
  just_above = np.nextafter(np.float32(0.5), np.float32(1.0))
  assert activations.hard_shrink(just_above) == just_above
  assert activations.hard_shrink(-just_above) == -just_above
  np.testing.assert_array_equal(activations.hard_shrink(x[:-1], lambd=0.0), x[:-1])


def test_shrink_defaults_are_pytorchs_lambd_one_half():
  # PyTorch's Hardshrink and Softshrink default to lambd=0.5: the dead zone ends between the
  # float32 neighbours of 0.5, so any other default moves one of these four points.
  inside = np.nextafter(np.float32(0.5), np.float32(0.0))
  outside = np.nextafter(np.float32(0.5), np.float32(1.0))
  x = jnp.array([-outside, -inside, inside, outside])
  np.testing.assert_array_equal(activations.hard_shrink(x), [-outside, 0, 0, outside])
  np.testing.assert_array_equal(
    activations.soft_shrink(x), [-(outside - np.float32(0.5)), 0, 0, outside - np.float32(0.5)]
  )
  for name in ("hard_shrink", "soft_shrink"):
    np.testing.assert_array_equal(activations.get(name)(x), getattr(activations, name)(x))


def test_soft_shrink_boundary():
  x = jnp.array([-2.0, -0.75, -0.5, 0.0, 0.5, 0.75, 2.0, jnp.nan])
  y = activations.soft_shrink(x, lambd=0.5)
  np.testing.assert_array_equal(y, jnp.array([-1.5, -0.25, 0, 0, 0, 0.25, 1.5, jnp.nan]))


def test_tanh_shrink_exponential_quick_gelu_abs_softmin_values():
  x = jnp.array([-2.0, 0.0, 1.0])
  np.testing.assert_allclose(activations.tanh_shrink(x), x - np.tanh(np.asarray(x)), rtol=1e-6)
  np.testing.assert_allclose(activations.exponential(x), np.exp(np.asarray(x)), rtol=1e-6)
  np.testing.assert_allclose(
    activations.quick_gelu(x), x / (1 + np.exp(-1.702 * np.asarray(x))), rtol=1e-6
  )
  np.testing.assert_array_equal(activations.abs(x), jnp.array([2.0, 0.0, 1.0]))
  e = np.exp(-np.asarray(x, np.float64))
  np.testing.assert_allclose(activations.softmin(x), e / e.sum(), rtol=1e-6)


def test_parametric_hard_tanh_boundary():
  x = jnp.array([-0.5, 0.0, 1.0, 2.0, 2.5])
  y = activations.parametric_hard_tanh(x, min_val=0.0, max_val=2.0)
  np.testing.assert_array_equal(y, jnp.array([0.0, 0.0, 1.0, 2.0, 2.0]))


def test_parametric_softplus_boundary():
  beta, threshold = 2.0, 4.0
  x = jnp.array([-1.0, 2.0, 2.5])
  y = activations.parametric_softplus(x, beta=beta, threshold=threshold)
  # PyTorch switches to the identity only where beta * x > threshold: at beta * x = 4 exactly
  # the log form is used, 1/2 * log(1 + e^4) = 2 + 1/2 * log1p(e^-4).
  expected = [0.5 * np.log1p(np.exp(-2.0)), 2.0 + 0.5 * np.log1p(np.exp(-4.0)), 2.5]
  np.testing.assert_allclose(y, expected, rtol=1e-6)
  # PyTorch's defaults beta=1, threshold=20: log1p(e^20) rounds to 20 in f32; 25 is exact.
  np.testing.assert_array_equal(
    activations.parametric_softplus(jnp.array([20.0, 25.0])), jnp.array([20.0, 25.0])
  )


def test_parametric_relu_keras_examples():
  # The examples of keras.activations.relu's docstring.
  x = jnp.array([-10.0, -5.0, 0.0, 5.0, 10.0])
  np.testing.assert_array_equal(activations.parametric_relu(x), jnp.array([0, 0, 0, 5, 10.0]))
  np.testing.assert_array_equal(
    activations.parametric_relu(x, negative_slope=0.5), jnp.array([-5.0, -2.5, 0, 5, 10])
  )
  np.testing.assert_array_equal(
    activations.parametric_relu(x, max_value=5.0), jnp.array([0, 0, 0, 5, 5.0])
  )
  # Exactly at the threshold Keras gives 0 (the comparison is strict).
  np.testing.assert_array_equal(
    activations.parametric_relu(x, threshold=5.0), jnp.array([0, 0, 0, 0, 10.0])
  )
  # A concrete zero slope keeps relu's value at -inf (0 * -inf would be NaN).
  assert activations.parametric_relu(jnp.array(-jnp.inf)) == 0.0


def test_prelu_per_channel_slope():
  x = jnp.array([[-4.0, -4.0, 4.0], [-2.0, 2.0, -2.0]])
  slope = jnp.array([0.25, 0.5, 1.0])
  expected = jnp.array([[-1.0, -2.0, 4.0], [-0.5, 2.0, -2.0]])
  np.testing.assert_array_equal(activations.prelu(x, slope), expected)
  # A learnable f32 slope applied to bf16 activations keeps the activations' dtype.
  assert activations.prelu(x.astype(jnp.bfloat16), slope).dtype == jnp.bfloat16
  grad = jax.grad(lambda a: activations.prelu(x, a).sum())(slope)
  np.testing.assert_array_equal(grad, jnp.array([-6.0, -4.0, -2.0]))


# ----------------------------------------------------------------------------------------------
# rrelu.

RRELU_LOWER, RRELU_UPPER = 1 / 8, 1 / 3  # PyTorch's defaults.
RRELU_N = 200_000
# RRELU_N negative inputs, whose slopes are tested, then non-negative ones, which must pass
# unchanged. One shape for all the rrelu tests, so the compiled functions are reused.
X_RRELU = jnp.concatenate([-jnp.ones(RRELU_N), jnp.linspace(0.0, 3.0, 1000)])
RRELU_JIT = jax.jit(activations.rrelu)
# Two-sided z-test at significance level alpha = 1e-3: |z| < 3.2905 (the 0.9995 normal
# quantile). For an arbitrary key the test fails falsely with probability 1e-3; with the fixed
# key below it is deterministic.
Z_CRITICAL = 3.2905


def _rrelu_slopes(jit):
  """Slopes rrelu draws for the negative part of X_RRELU (eager or jitted), and its output."""
  y = (RRELU_JIT if jit else activations.rrelu)(jax.random.key(42), X_RRELU)
  return -np.asarray(y[:RRELU_N], np.float64), y  # x = -1 there, so y = -slope exactly.


def _z_statistic(slopes, lower, upper):
  """z of the sample mean slope against the mean of U(lower, upper)."""
  mean = (lower + upper) / 2
  std = (upper - lower) / math.sqrt(12)  # The standard deviation of U(lower, upper).
  return (slopes.mean() - mean) / (std / math.sqrt(slopes.size))


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_rrelu_slopes_are_uniform(jit):
  slopes, y = _rrelu_slopes(jit)
  assert slopes.min() >= RRELU_LOWER and slopes.max() <= RRELU_UPPER
  assert abs(_z_statistic(slopes, RRELU_LOWER, RRELU_UPPER)) < Z_CRITICAL
  # Independent slopes spread like U(lower, upper), not like one shared slope: the sample std
  # of n = 2e5 uniforms is within 0.1% (one standard error) of (upper - lower) / sqrt(12),
  # so 1% is a wide margin.
  np.testing.assert_allclose(slopes.std(), (RRELU_UPPER - RRELU_LOWER) / math.sqrt(12), rtol=0.01)
  np.testing.assert_array_equal(y[RRELU_N:], X_RRELU[RRELU_N:])


def test_rrelu_statistic_detects_a_wrong_parameter():
  slopes, _ = _rrelu_slopes(jit=False)
  # The same statistic against upper = 0.34 (2% off) rejects: the mean moves by 0.0033, about
  # 25 standard errors (0.06 / sqrt(2e5) = 1.3e-4). Likewise lower = 0.12.
  assert abs(_z_statistic(slopes, RRELU_LOWER, 0.34)) > Z_CRITICAL
  assert abs(_z_statistic(slopes, 0.12, RRELU_UPPER)) > Z_CRITICAL


def test_rrelu_eager_jit_and_key_kinds_agree():
  _, y = _rrelu_slopes(jit=False)
  np.testing.assert_array_equal(_rrelu_slopes(jit=True)[1], y)
  # A legacy uint32[2] key holds the same bits as the typed key.
  np.testing.assert_array_equal(activations.rrelu(jax.random.PRNGKey(42), X_RRELU), y)
  assert not np.array_equal(activations.rrelu(jax.random.key(43), X_RRELU), y)


def test_rrelu_gradient_is_the_drawn_slope():
  key = jax.random.key(42)
  _, y = _rrelu_slopes(jit=False)
  grad = jax.grad(lambda x: jnp.sum(activations.rrelu(key, x)))(X_RRELU)
  np.testing.assert_array_equal(grad, jnp.where(X_RRELU >= 0, 1.0, y / X_RRELU))


def test_rrelu_deterministic_uses_mean_slope():
  mean_slope = (RRELU_LOWER + RRELU_UPPER) / 2  # 11/48
  expected = jnp.where(X >= 0, X, jnp.float32(mean_slope) * X)
  np.testing.assert_array_equal(activations.rrelu(None, X, deterministic=True), expected)
  np.testing.assert_array_equal(activations.get("rrelu")(X), expected)
  # The key is ignored when deterministic.
  np.testing.assert_array_equal(
    activations.rrelu(jax.random.key(0), X, deterministic=True), expected
  )


def test_rrelu_vmap_over_keys_in_bf16():
  keys = jax.random.split(jax.random.key(0), 4)
  x = -jnp.ones(1000, jnp.bfloat16)
  y = jax.vmap(activations.rrelu, in_axes=(0, None))(keys, x)
  assert y.shape == (4, 1000) and y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y[1], activations.rrelu(keys[1], x))
  assert not np.array_equal(y[0], y[1])
  # The slope is drawn in float32; rounding the product to bf16 (8 significant bits) moves it
  # by at most half an ulp, a relative 2^-8.
  assert float(-y.max()) >= RRELU_LOWER * (1 - 2**-8)
  assert float(-y.min()) <= RRELU_UPPER * (1 + 2**-8)


# ----------------------------------------------------------------------------------------------
# Gradients.

# Points at least 0.1 from every kink (0, +-0.5, +-1) and from softplus' switch (x = 20).
X_SMOOTH = jnp.array([-2.3, -1.2, -0.3, 0.2, 0.7, 1.6])


GRAD_FUNCTIONS = {
  "tanh_shrink": activations.tanh_shrink,
  "exponential": activations.exponential,
  "quick_gelu": activations.quick_gelu,
  "softmin": activations.softmin,
  "abs": activations.abs,
  "hard_shrink": activations.hard_shrink,
  "soft_shrink": activations.soft_shrink,
  "threshold": functools.partial(activations.threshold, threshold=0.0, value=-1.0),
  "prelu": functools.partial(activations.prelu, slope=0.25),
  "parametric_relu": functools.partial(
    activations.parametric_relu, negative_slope=0.1, max_value=1.0
  ),
  "parametric_hard_tanh": activations.parametric_hard_tanh,
  "parametric_softplus": functools.partial(activations.parametric_softplus, beta=2.0),
}


def _check_grads_naming_the_culprit(fns, args):
  """check_grads on all of ``fns`` stacked (one compilation), then one by one on failure.

  In float32, central differences with eps = 1e-3 carry an error of about ulp(f) / eps ~ 1e-4
  plus eps^2 * (third derivative) ~ 1e-6, well inside rtol = atol = 1e-2. First order and
  jitted: compiling dominates the cost (an eager second-order check takes seconds on a CPU).
  """
  check = functools.partial(
    check_grads, order=1, modes=("fwd", "rev"), eps=1e-3, atol=1e-2, rtol=1e-2
  )
  try:
    check(jax.jit(lambda *args: jnp.stack([fn(*args) for fn in fns.values()])), args)
  except AssertionError:
    for name, fn in fns.items():
      try:
        check(jax.jit(fn), args)
      except AssertionError as e:
        raise AssertionError(f"gradient check failed for {name}") from e
    raise


def test_gradients_away_from_kinks():
  _check_grads_naming_the_culprit(GRAD_FUNCTIONS, (X_SMOOTH,))


def test_gradients_with_respect_to_parameters():
  # Traced parameters skip the concrete-value checks and are differentiable.
  x = X_SMOOTH
  _check_grads_naming_the_culprit(
    {
      "prelu slope": lambda p: activations.prelu(x, p[0]),
      "soft_shrink lambd": lambda p: activations.soft_shrink(x, lambd=p[1]),
      "parametric_softplus beta": lambda p: activations.parametric_softplus(x, beta=p[2]),
    },
    (jnp.array([0.25, 0.5, 1.5]),),
  )


def test_traced_parameters_are_not_checked_and_work():
  x = jnp.array([0.3, 0.6])
  y = jax.vmap(lambda lam: activations.hard_shrink(x, lambd=lam))(jnp.array([0.2, 0.5]))
  np.testing.assert_array_equal(y, jnp.array([[0.3, 0.6], [0.0, 0.6]]))
  y = jax.jit(activations.parametric_relu)(x - 1, negative_slope=jnp.array(0.5))
  np.testing.assert_allclose(y, jnp.array([-0.35, -0.2]), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Errors.


def test_get_unknown_name():
  with pytest.raises(
    ValueError,
    match=r"jdrop.activations.get: `name` is not a registered "
    r"activation, got 'relu7'. Did you mean 'relu', .*'relu6'",
  ):
    activations.get("relu7")
  with pytest.raises(ValueError, match=r"got 'qwertyuiop'. See jdrop.activations.names\(\)"):
    activations.get("qwertyuiop")
  with pytest.raises(ValueError, match=r"jdrop.activations.info: `name` is not a registered"):
    activations.info("swishh")


@pytest.mark.parametrize("name", [None, 3, jax.nn.relu, ("relu",)])
def test_get_non_str_name(name):
  with pytest.raises(TypeError, match=r"jdrop.activations.get: `name` must be a str"):
    activations.get(name)


def test_get_unknown_params():
  with pytest.raises(
    TypeError,
    match=r"`negative_slop` is not a parameter of activation "
    r"'leaky_relu', got 0.2. Did you mean 'negative_slope'\? 'leaky_relu' "
    r"accepts negative_slope.",
  ):
    activations.get("leaky_relu", negative_slop=0.2)
  with pytest.raises(TypeError, match=r"accepts negative_slope, max_value, threshold"):
    activations.get("relu", slope=0.2)
  with pytest.raises(TypeError, match=r"'sigmoid' takes no parameters"):
    activations.get("sigmoid", beta=2.0)
  with pytest.raises(TypeError, match=r"'gelu_exact' takes no parameters"):
    activations.get("gelu_exact", approximate=True)
  with pytest.raises(TypeError, match=r"'rrelu' accepts lower, upper"):
    activations.get("rrelu", deterministic=False)


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.bool_])
@pytest.mark.parametrize("name", sorted(JDROP_FUNCTIONS))
def test_non_float_input(name, dtype):
  x = jnp.ones((2, 3), dtype)
  with pytest.raises(
    TypeError,
    match=rf"jdrop.activations.{name}: `x` must have a "
    rf"floating-point dtype, got an array of dtype {jnp.dtype(dtype).name}. "
    r".*x.astype\(jnp.float32\)",
  ):
    JDROP_FUNCTIONS[name](x)


@pytest.mark.parametrize(
  ("call", "match"),
  [
    (lambda x: activations.hard_shrink(x, lambd=-0.1), r"hard_shrink: `lambd` must be >= 0"),
    (lambda x: activations.soft_shrink(x, lambd=-1.0), r"soft_shrink: `lambd` must be >= 0"),
    (lambda x: activations.soft_shrink(x, lambd=jnp.nan), r"`lambd` must be >= 0, got nan"),
    (
      lambda x: activations.rrelu(jax.random.key(0), x, lower=0.5, upper=0.25),
      r"rrelu: `lower` must be <= upper=0.25, got 0.5",
    ),
    (
      lambda x: activations.rrelu(None, x, lower=0.5, upper=0.25, deterministic=True),
      r"rrelu: `lower` must be <= upper",
    ),
    (
      lambda x: activations.parametric_hard_tanh(x, min_val=1.0, max_val=1.0),
      r"parametric_hard_tanh: `min_val` must be < max_val=1.0, got 1.0",
    ),
    (lambda x: activations.parametric_hard_tanh(x, min_val=2.0), r"`min_val` must be < max_val"),
    (
      lambda x: activations.parametric_softplus(x, beta=0.0),
      r"parametric_softplus: `beta` must be > 0, got 0.0",
    ),
    (lambda x: activations.parametric_softplus(x, beta=-1.0), r"`beta` must be > 0"),
    (
      lambda x: activations.parametric_relu(x, negative_slope=-0.1),
      r"parametric_relu: `negative_slope` must be >= 0",
    ),
    (lambda x: activations.parametric_relu(x, max_value=-1.0), r"`max_value` must be >= 0"),
    (lambda x: activations.parametric_relu(x, threshold=-1.0), r"`threshold` must be >= 0"),
    (
      lambda x: activations.prelu(x, jnp.ones(2)),
      r"prelu: `slope` must broadcast to the shape of x \(2, 3\)",
    ),
    (lambda x: jax.jit(activations.get("hard_shrink", lambd=-1.0))(x), r"`lambd` must be >= 0"),
    (lambda x: activations.get("relu", max_value=-6.0)(x), r"`max_value` must be >= 0"),
  ],
  ids=lambda v: None if callable(v) else v[:40],
)
def test_invalid_params(call, match):
  with pytest.raises(ValueError, match=match):
    call(jnp.ones((2, 3)))


def test_rrelu_key_errors():
  x = jnp.ones(3)
  batches = {
    r"a batch of keys with shape \(3,\)": jax.random.split(jax.random.key(0), 3),
    r"a batch of raw keys with shape \(2, 2\)": jax.random.split(jax.random.PRNGKey(0)),
  }
  for shown, keys in batches.items():
    with pytest.raises(
      ValueError, match=rf"rrelu: `key` must be a single PRNG key, got {shown}.*jax.vmap"
    ):
      activations.rrelu(keys, x)
  for key in (None, jnp.zeros(2), jnp.zeros(5, jnp.uint32), 0):
    with pytest.raises(TypeError, match=r"rrelu: `key` must be a PRNG key.*jax.random.key\(seed\)"):
      activations.rrelu(key, x)


# ----------------------------------------------------------------------------------------------
# register / unregister.


@pytest.fixture
def restore_registry():
  """Unregisters whatever a test registers, whatever happens in it."""
  before = set(activations.names())
  yield
  for name in set(activations.names()) - before:
    activations.unregister(name)


def test_register_get_overwrite_unregister(restore_registry):

  def cube(x, scale=1.0):
    return scale * x**3

  entry = activations.register(
    "jdrop_test_cube", cube, description="x^3", aliases=("jdrop_test_x3",)
  )
  assert entry == activations.info("jdrop_test_x3")
  assert (entry.source, entry.elementwise, entry.params) == ("user", True, ("scale",))
  assert activations.get("jdrop_test_cube") is cube
  assert activations.get("jdrop_test_x3") is cube
  assert activations.get("jdrop_test_cube", scale=2.0)(jnp.array(2.0)) == 16.0
  assert "jdrop_test_cube" in activations.names()
  assert "jdrop_test_x3" not in activations.names()

  with pytest.raises(
    ValueError,
    match=r"register: `name` is already registered, got "
    r"'jdrop_test_cube'. Pass overwrite=True",
  ):
    activations.register("jdrop_test_cube", jnp.sin)
  replaced = activations.register("jdrop_test_cube", jnp.sin, overwrite=True)
  assert activations.get("jdrop_test_cube") is jnp.sin
  assert replaced.aliases == ()
  with pytest.raises(ValueError, match=r"not a registered activation, got 'jdrop_test_x3'"):
    activations.get("jdrop_test_x3")  # The old entry's alias went with it.

  assert activations.unregister("jdrop_test_cube") == replaced
  assert "jdrop_test_cube" not in activations.names()


def test_register_errors(restore_registry):
  with pytest.raises(ValueError, match=r"`name` is already registered, got 'relu'"):
    activations.register("relu", jax.nn.relu)
  with pytest.raises(ValueError, match=r"`name` is an alias of 'silu', got 'swish'"):
    activations.register("swish", jax.nn.relu, overwrite=True)
  with pytest.raises(ValueError, match=r"`aliases` contains a name taken by 'relu'"):
    activations.register("jdrop_test_a", jax.nn.relu, aliases=("relu",))
  with pytest.raises(ValueError, match=r"`aliases` contains a name taken by 'silu'"):
    activations.register("jdrop_test_a", jax.nn.relu, aliases=("swish",))
  with pytest.raises(ValueError, match=r"`aliases` must be distinct"):
    activations.register("jdrop_test_a", jax.nn.relu, aliases=("jdrop_test_a",))
  with pytest.raises(TypeError, match=r"register: `fn` must be callable, got 3"):
    activations.register("jdrop_test_a", 3)
  with pytest.raises(TypeError, match=r"register: `name` must be a non-empty str"):
    activations.register("", jax.nn.relu)
  with pytest.raises(TypeError, match=r"register: `aliases` must be a sequence of str"):
    activations.register("jdrop_test_a", jax.nn.relu, aliases="a")
  with pytest.raises(TypeError, match=r"register: `elementwise` must be a bool"):
    activations.register("jdrop_test_a", jax.nn.relu, elementwise="no")
  with pytest.raises(ValueError, match=r"unregister: `name` is an alias of 'silu'"):
    activations.unregister("swish")
  with pytest.raises(ValueError, match=r"unregister: `name` is not a registered activation"):
    activations.unregister("jdrop_test_a")
  assert "jdrop_test_a" not in activations.names()
