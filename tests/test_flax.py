"""jdrop.flax: a subclass of flax.linen.Dropout with bit-identical outputs, Flax's exceptions,
and each module is its pure function."""

from collections.abc import Callable

import flax.errors
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax_util import assert_bits_equal
from flax_util import assert_equal_to_rounding
from flax_util import assert_trees_bits_equal
from flax_util import ulp_distance

import jdrop
import jdrop.flax

# Inputs come from numpy: every distinct jitted function costs a compilation (tests stay fast).
X = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6, 5)), jnp.float32)
KEY = jax.random.key(7)


def ramp(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """Distinct weights without drawing them: a random init costs a compilation."""
  return jnp.linspace(-1.0, 1.0, np.prod(shape), dtype=dtype).reshape(shape)


class Probe(nn.Module):
  """The key that a root module's ``make_rng(rng_collection)`` returns."""

  rng_collection: str = "dropout"

  def __call__(self) -> jax.Array:
    return self.make_rng(self.rng_collection)


def module_key(rngs: dict, rng_collection: str = "dropout") -> jax.Array:
  return Probe(rng_collection).apply({}, rngs=rngs)


@pytest.fixture
def make_rng_calls(monkeypatch) -> list:
  """Records the stream of every ``make_rng`` call of every linen module."""
  calls = []
  original = nn.Module.make_rng

  def counting(self, name="params"):
    calls.append(name)
    return original(self, name)

  monkeypatch.setattr(nn.Module, "make_rng", counting)
  return calls


# ----------------------------------------------------------------------------
# Bit-identity with flax.linen.Dropout.


def test_dropout_alone_equals_flax_eager():
  for rate in (0.0, 0.5, 1.0):
    for broadcast_dims in ((),):
      expected = nn.Dropout(rate, broadcast_dims).apply({}, X, False, rngs={"dropout": KEY})
      actual = jdrop.flax.Dropout(rate, broadcast_dims).apply({}, X, False, rngs={"dropout": KEY})
      assert_bits_equal(actual, expected)


def test_dropout_alone_equals_flax_jit():
  # One program per class, so that the grid costs two compilations.
  grid = [(r, d) for r in (0.0, 0.3, 1.0) for d in ((), (0, -1))]

  @jax.jit(static_argnums=0)
  def run(cls, x, key):
    return [cls(r, d).apply({}, x, False, rngs={"dropout": key}) for r, d in grid]

  assert_trees_bits_equal(run(jdrop.flax.Dropout, X, KEY), run(nn.Dropout, X, KEY))


@pytest.mark.parametrize(
  ("field", "call"), [(True, None), (None, True), (False, None), (None, False)]
)
@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_dropout_draws_rngs_exactly_where_flax_does(rate, field, call, make_rng_calls):
  rngs = {"dropout": KEY}
  expected = nn.Dropout(rate, deterministic=field).apply({}, X, call, rngs=rngs)
  flax_calls = list(make_rng_calls)
  make_rng_calls.clear()
  actual = jdrop.flax.Dropout(rate, deterministic=field).apply({}, X, call, rngs=rngs)
  assert make_rng_calls == flax_calls
  assert_bits_equal(actual, expected)


def test_explicit_rng_argument_equals_flax(make_rng_calls):
  actual = jdrop.flax.Dropout(0.4).apply({}, X, False, jax.random.key(3))
  assert not make_rng_calls
  assert_bits_equal(actual, nn.Dropout(0.4).apply({}, X, False, jax.random.key(3)))


class Net(nn.Module):
  """Several dropouts (some drawing no rng), a shared one, two Dense and other rng users."""

  dropout: type

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nn.Dense(8, kernel_init=ramp)(x)
    x = self.dropout(0.3, deterministic=not train)(x)
    x = self.dropout(0.0)(x, deterministic=not train)
    x = x + self.dropout(1.0, deterministic=not train)(x)
    x = self.dropout(0.5, deterministic=True)(x)
    shared = self.dropout(0.25, broadcast_dims=(0,))
    x = shared(x, deterministic=True) + shared(x, deterministic=not train)
    x = self.dropout(0.2, rng_collection="other")(x, deterministic=not train)
    if train:  # another user of the stream (at init, eager, it would cost a compilation)
      x = x + jax.random.uniform(self.make_rng("dropout"), x.shape)
    return nn.Dense(3, kernel_init=ramp)(x)


def _is_dropout(module: nn.Module, method: str) -> bool:
  return isinstance(module, nn.Dropout)  # jdrop.flax.Dropout is one


def test_dropout_in_a_model_under_jit_equals_flax():
  x = X.reshape(-1, 5)
  # The parameters have the same names in both models: the modules are named alike.
  variables = Net(nn.Dropout).init(KEY, x, train=False)
  rngs = {"dropout": jax.random.key(1), "other": jax.random.key(2)}

  def apply(cls):
    apply = jax.jit(Net(cls).apply, static_argnames=("train", "capture_intermediates"))
    return apply(variables, x, train=True, rngs=rngs, capture_intermediates=_is_dropout)

  (actual, actual_state), (expected, expected_state) = apply(jdrop.flax.Dropout), apply(nn.Dropout)
  assert_trees_bits_equal(actual_state, expected_state)  # every dropout's output
  assert len(jax.tree.leaves(actual_state)) == 7
  assert_equal_to_rounding(actual, expected)


def test_init_falls_back_to_the_params_stream_as_flax_does():
  # Without a 'dropout' key, make_rng('dropout') uses the 'params' stream.
  init = lambda cls: cls(0.5, deterministic=False).init_with_output(jax.random.key(0), X)
  assert_trees_bits_equal(init(jdrop.flax.Dropout), init(nn.Dropout))


def test_training_matches_flax():
  class MLP(nn.Module):
    dropout: type

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
      x = nn.relu(nn.Dense(16, kernel_init=ramp)(x))
      x = self.dropout(0.5, deterministic=not train)(x)
      return nn.Dense(1, kernel_init=ramp)(x)

  x = jnp.asarray(np.random.default_rng(1).standard_normal((32, 4)), jnp.float32)
  y = jnp.sin(x.sum(axis=1, keepdims=True))

  initial_params = MLP(nn.Dropout).init(jax.random.key(1), x, train=False)["params"]

  def train(dropout: type):
    model = MLP(dropout)
    params = initial_params
    optimizer = optax.sgd(0.1)
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, key):
      def loss(params):
        out = model.apply({"params": params}, x, train=True, rngs={"dropout": key})
        return jnp.mean((out - y) ** 2)

      value, grads = jax.value_and_grad(loss)(params)
      updates, opt_state = optimizer.update(grads, opt_state)
      return optax.apply_updates(params, updates), opt_state, value

    losses = []
    for i in range(3):
      params, opt_state, value = step(params, opt_state, jax.random.fold_in(KEY, i))
      losses.append(value)
    return params, losses

  actual, expected = train(jdrop.flax.Dropout), train(nn.Dropout)
  assert_equal_to_rounding(actual, expected)


class Block(nn.Module):
  """Dense -> Dropout -> +x -> LayerNorm: the residual block of Flax's lm1b and wmt models."""

  dropout: type

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.dropout(0.1, deterministic=False)(nn.Dense(x.shape[-1], kernel_init=ramp)(x))
    return nn.LayerNorm()(y + x)


def test_jitted_model_is_equal_to_rounding():
  # The claim of the docstrings: each dropout output bit-identical, the jitted model equal to
  # rounding. With jax 0.10.2 on CPU, 315 of these 2048 outputs differ, by at most 1.7e-6
  # (3.2 float32 eps of the largest output): XLA fuses the two masks' code into the
  # LayerNorm's reductions differently.
  x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 16, 32)), jnp.float32)
  variables = Block(nn.Dropout).init(KEY, x)

  def run(cls):
    apply = jax.jit(Block(cls).apply, static_argnames="capture_intermediates")
    return apply(variables, x, rngs={"dropout": KEY}, capture_intermediates=_is_dropout)

  (actual, actual_state), (expected, expected_state) = run(jdrop.flax.Dropout), run(nn.Dropout)
  assert len(jax.tree.leaves(actual_state)) == 1
  assert_trees_bits_equal(actual_state, expected_state)
  assert_equal_to_rounding(actual, expected)
  # Eagerly nothing is fused: the whole model is bit-identical.
  eager = lambda cls: Block(cls).apply(variables, x, rngs={"dropout": KEY})
  assert_bits_equal(eager(jdrop.flax.Dropout), eager(nn.Dropout))


@pytest.mark.parametrize(("dtype", "ulps"), [(jnp.float16, 2), (jnp.bfloat16, 1)], ids=str)
def test_low_precision_outputs_within_the_stated_ulps(dtype, ulps):
  # Flax divides in the input's dtype by a keep probability rounded to it; jdrop scales in
  # float32 and rounds once. Kept values may then differ by up to 2 ulp in float16 (1 in
  # bfloat16); dropped positions are 0 in both. With jax 0.10.2 these inputs reach 2 ulp in
  # float16, with jax 0.10.0 only 1 (XLA's float16 division changed).
  x = jnp.asarray(np.random.default_rng(3).standard_normal(1 << 14), dtype)
  worst = 0
  for rate in (0.1, 0.13, 0.3, 0.77, 0.9):
    rngs = {"dropout": jax.random.key(4)}
    actual = jdrop.flax.Dropout(rate).apply({}, x, False, rngs=rngs)
    expected = nn.Dropout(rate).apply({}, x, False, rngs=rngs)
    np.testing.assert_array_equal(actual == 0, expected == 0)
    worst = max(worst, int(ulp_distance(actual, expected).max()))
  assert 1 <= worst <= ulps


# ----------------------------------------------------------------------------
# A subclass of flax.linen.Dropout: what selects modules by type finds it.


def test_dropout_is_a_flax_dropout_and_the_other_layers_are_not():
  assert issubclass(jdrop.flax.Dropout, nn.Dropout)
  assert isinstance(jdrop.flax.Dropout(0.1), nn.Dropout)
  assert jdrop.flax.Dropout.__call__ is not nn.Dropout.__call__
  # Flax has no alpha, gaussian, drop-path or activation dropout: type filters for
  # nn.Dropout must not pick those (a mask of other statistics, or an activation).
  for cls in (
    jdrop.flax.AlphaDropout,
    jdrop.flax.GaussianDropout,
    jdrop.flax.DropPath,
    jdrop.flax.ActivationDropout,
  ):
    assert not issubclass(cls, nn.Dropout)


def test_intercept_methods_selects_it_by_flax_type():
  # A common use of type dispatch: switch every nn.Dropout off for one call of a model.
  x = X.reshape(-1, 5)
  variables = Net(nn.Dropout).init(KEY, x, train=False)
  rngs = {"dropout": jax.random.key(1), "other": jax.random.key(2)}
  seen = []

  def no_dropout(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
      seen.append(type(context.module))
      return args[0]
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(no_dropout):
    out = Net(jdrop.flax.Dropout).apply(variables, x, train=True, rngs=rngs)
  assert seen == [jdrop.flax.Dropout] * 7
  # What is left of training mode is Net's own uniform noise: remove it by equal rngs.
  with nn.intercept_methods(no_dropout):
    expected = Net(nn.Dropout).apply(variables, x, train=True, rngs=rngs)
  assert_equal_to_rounding(out, expected)


def test_lifted_transforms_and_clone_keep_the_type():
  module = nn.remat(jdrop.flax.Dropout)(0.5, deterministic=False)
  assert isinstance(module, nn.Dropout)
  rngs = {"dropout": KEY}
  assert_bits_equal(
    module.apply({}, X, rngs=rngs), nn.Dropout(0.5, deterministic=False).apply({}, X, rngs=rngs)
  )
  clone = jdrop.flax.Dropout(0.5).clone(rate=0.25)
  assert type(clone) is jdrop.flax.Dropout and clone.rate == 0.25


# ----------------------------------------------------------------------------
# Every module is its pure function.

VARIANTS: list[tuple[Callable[[], nn.Module], Callable]] = [
  (
    lambda: jdrop.flax.Dropout(0.3, broadcast_dims=(1,)),
    lambda key, x, d: jdrop.dropout(key, x, rate=0.3, broadcast_dims=(1,), deterministic=d),
  ),
  (
    lambda: jdrop.flax.AlphaDropout(0.3, broadcast_dims=(1,)),
    lambda key, x, d: jdrop.alpha_dropout(key, x, rate=0.3, broadcast_dims=(1,), deterministic=d),
  ),
  (
    lambda: jdrop.flax.GaussianDropout(0.3),
    lambda key, x, d: jdrop.gaussian_dropout(key, x, rate=0.3, deterministic=d),
  ),
  (
    lambda: jdrop.flax.DropPath(0.3),
    lambda key, x, d: jdrop.drop_path(key, x, rate=0.3, deterministic=d),
  ),
  (
    lambda: jdrop.flax.ActivationDropout("gelu", 0.3, "pre"),
    lambda key, x, d: jdrop.activation_dropout(
      key, x, "gelu", rate=0.3, order="pre", deterministic=d
    ),
  ),
  (
    lambda: jdrop.flax.ActivationDropout(jax.nn.tanh, 0.3, "post", broadcast_dims=(0,)),
    lambda key, x, d: jdrop.activation_dropout(
      key, x, jax.nn.tanh, rate=0.3, order="post", broadcast_dims=(0,), deterministic=d
    ),
  ),
]
VARIANT_IDS = ["Dropout", "AlphaDropout", "GaussianDropout", "DropPath", "pre-gelu", "post-tanh"]


@pytest.mark.parametrize(("make", "pure"), VARIANTS, ids=VARIANT_IDS)
def test_module_equals_its_pure_function(make, pure, make_rng_calls):
  rngs = {"dropout": KEY}
  key = module_key(rngs)
  make_rng_calls.clear()
  assert_bits_equal(make().apply({}, X, False, rngs=rngs), pure(key, X, False))
  assert make_rng_calls == ["dropout"]
  assert_bits_equal(
    make().apply({}, X, False, jax.random.key(5)), pure(jax.random.key(5), X, False)
  )
  make_rng_calls.clear()
  assert_bits_equal(make().apply({}, X, True, rngs=rngs), pure(key, X, True))
  assert not make_rng_calls


@pytest.mark.parametrize(
  "cls",
  [jdrop.flax.Dropout, jdrop.flax.AlphaDropout, jdrop.flax.DropPath],
  ids=lambda c: c.__name__,
)
@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_rate_0_and_1_draw_no_rng(cls, rate, make_rng_calls):
  out = cls(rate, deterministic=False).apply({}, X, rngs={"dropout": KEY})
  assert not make_rng_calls
  assert_bits_equal(out, X if rate == 0 else jnp.zeros_like(X))


def test_activation_dropout_draws_no_rng_at_rate_0():
  module = jdrop.flax.ActivationDropout("relu", 0.0, "pre", deterministic=False)
  assert_bits_equal(module.apply({}, X), jax.nn.relu(X))  # no rngs given, none needed


def test_traced_rate_field():
  rngs = {"dropout": KEY}

  @jax.jit
  def run(rate):
    return jdrop.flax.Dropout(rate, deterministic=False).apply({}, X, rngs=rngs)

  for rate in (0.0, 0.3, 1.0):
    expected = jdrop.dropout(module_key(rngs), X, rate=jnp.float32(rate))
    assert_bits_equal(run(rate), expected)
  assert bool(jnp.isnan(run(1.5)).all())  # a traced bad rate is loud, not silently wrong


def test_traced_deterministic_flag():
  rngs = {"dropout": KEY}
  run = jax.jit(lambda d: jdrop.flax.Dropout(0.5).apply({}, X, d, rngs=rngs))
  assert_bits_equal(run(True), X)
  assert_bits_equal(run(False), nn.Dropout(0.5).apply({}, X, False, rngs=rngs))


# ----------------------------------------------------------------------------
# Errors name the module.


@pytest.mark.parametrize(("make", "pure"), VARIANTS, ids=VARIANT_IDS)
def test_missing_rng_is_flax_invalid_rng_error_with_a_fix(make, pure):
  module = make()
  name = type(module).__name__
  # flax.errors.InvalidRngError as Flax raises it, and a ValueError as jdrop's bad input.
  for error in (flax.errors.InvalidRngError, ValueError):
    with pytest.raises(error, match=rf"jdrop\.flax\.{name}: `rngs` must hold a 'dropout'"):
      module.apply({}, X, False)
  with pytest.raises(flax.errors.InvalidRngError, match=r'needs PRNG for "dropout"') as info:
    module.apply({}, X, False)
  assert "Pass rngs={'dropout': jax.random.key(0)} to apply()" in str(info.value)
  with pytest.raises(flax.errors.InvalidRngError, match=rf"jdrop\.flax\.{name}: .*'other'"):
    module.clone(rng_collection="other").apply({}, X, False, rngs={"dropout": KEY})


def test_missing_rng_error_is_the_one_flax_raises():
  # The same except clause catches Flax's error and jdrop's.
  for cls in (nn.Dropout, jdrop.flax.Dropout):
    with pytest.raises(flax.errors.InvalidRngError, match=r'needs PRNG for "dropout"'):
      cls(0.5).apply({}, X, False)


@pytest.mark.parametrize(
  "cls",
  [
    jdrop.flax.Dropout,
    jdrop.flax.AlphaDropout,
    jdrop.flax.GaussianDropout,
    jdrop.flax.DropPath,
    lambda rate: jdrop.flax.ActivationDropout("relu", rate, "post"),
  ],
  ids=["Dropout", "AlphaDropout", "GaussianDropout", "DropPath", "ActivationDropout"],
)
@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan")])
def test_bad_rate_is_a_clear_error(cls, rate):
  module = cls(rate)
  name = type(module).__name__
  # Raised even in deterministic mode, where the rate is not used.
  for deterministic in (False, True):
    with pytest.raises(ValueError, match=rf"jdrop\.flax\.{name}: `rate` must be"):
      module.apply({}, X, deterministic, rngs={"dropout": KEY})


def test_gaussian_dropout_rejects_rate_1():
  with pytest.raises(ValueError, match=r"jdrop\.flax\.GaussianDropout: `rate`.*\[0, 1\)"):
    jdrop.flax.GaussianDropout(1.0).apply({}, X, False, rngs={"dropout": KEY})


def test_deterministic_given_twice_or_never():
  never = r"jdrop\.flax\.Dropout: `deterministic` must be given"
  with pytest.raises(ValueError, match=never) as info:
    jdrop.flax.Dropout(0.5).apply({}, X, rngs={"dropout": KEY})
  # Flax's merge_param words, so tests written against flax.linen.Dropout still match.
  with pytest.raises(ValueError) as flax_info:
    nn.Dropout(0.5).apply({}, X, rngs={"dropout": KEY})
  assert str(flax_info.value) in str(info.value)
  twice = r"jdrop\.flax\.Dropout: `deterministic` was given both"
  with pytest.raises(ValueError, match=twice) as info:
    jdrop.flax.Dropout(0.5, deterministic=True).apply({}, X, False, rngs={"dropout": KEY})
  with pytest.raises(ValueError) as flax_info:
    nn.Dropout(0.5, deterministic=True).apply({}, X, False, rngs={"dropout": KEY})
  assert str(flax_info.value) in str(info.value)
  with pytest.raises(TypeError, match=r"jdrop\.flax\.Dropout: `deterministic` must be a bool"):
    jdrop.flax.Dropout(0.5, deterministic="no").apply({}, X, rngs={"dropout": KEY})


@pytest.mark.parametrize("rate", [1.5, -0.1])
def test_out_of_range_rate_is_the_one_intended_difference(rate):
  # Flax returns zeros for 1.5 and x / 1.1 for -0.1 without a word; jdrop refuses.
  rngs = {"dropout": KEY}
  silent = nn.Dropout(rate).apply({}, X, False, rngs=rngs)
  assert_bits_equal(silent, jnp.zeros_like(X) if rate > 1 else X / (1 - rate))
  with pytest.raises(ValueError, match=rf"jdrop\.flax\.Dropout: `rate` must be .* got {rate}"):
    jdrop.flax.Dropout(rate).apply({}, X, False, rngs=rngs)
