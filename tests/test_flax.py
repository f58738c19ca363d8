"""jdrop.flax: bit-identical to flax.linen.Dropout, and each module is its pure function."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdrop
import jdrop.flax

# Inputs come from numpy: every distinct jitted function costs a compilation (tests stay fast).
X = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6, 5)), jnp.float32)
KEY = jax.random.key(7)


def ramp(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """Distinct weights without drawing them: a random init costs a compilation."""
  return jnp.linspace(-1.0, 1.0, np.prod(shape), dtype=dtype).reshape(shape)


def assert_bits_equal(actual, expected):
  """Same shape, dtype and bytes: stricter than ==, which equates 0.0 with -0.0."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape and actual.dtype == expected.dtype
  np.testing.assert_array_equal(actual, expected)
  assert actual.tobytes() == expected.tobytes()


def assert_trees_bits_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    assert_bits_equal(a, e)


def assert_equal_after_matmul(actual, expected):
  """Bit-identical on CPU; within a few ulp of float32 where XLA fuses producers into GEMMs.

  On GPU, XLA may fuse the elementwise code that feeds a matmul into the matmul's own kernel
  (Triton GEMM fusions). jdrop's mask is other HLO than jax.random's, so the kernel after a
  dropout, and the rounding of its sums, can differ by an ulp although the dropout outputs
  are bit-identical (the model tests check those exactly; on an H200, disabling Triton GEMMs
  made the whole model bit-identical too).
  """
  if jax.default_backend() == "cpu":
    assert_trees_bits_equal(actual, expected)
  else:
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
      np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)


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
  return isinstance(module, (nn.Dropout, jdrop.flax.Dropout))


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
  assert_equal_after_matmul(actual, expected)


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
  assert_equal_after_matmul(actual, expected)


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
def test_missing_rng_is_a_clear_error(make, pure):
  module = make()
  name = type(module).__name__
  with pytest.raises(ValueError, match=rf"jdrop\.flax\.{name}: `rngs` must hold a 'dropout'"):
    module.apply({}, X, False)
  with pytest.raises(ValueError, match=rf"jdrop\.flax\.{name}: .*'other'"):
    module.clone(rng_collection="other").apply({}, X, False, rngs={"dropout": KEY})


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
  with pytest.raises(ValueError, match=r"jdrop\.flax\.Dropout: `deterministic` must be given"):
    jdrop.flax.Dropout(0.5).apply({}, X, rngs={"dropout": KEY})
  with pytest.raises(ValueError, match=r"jdrop\.flax\.Dropout: `deterministic` was given both"):
    jdrop.flax.Dropout(0.5, deterministic=True).apply({}, X, False, rngs={"dropout": KEY})
  with pytest.raises(TypeError, match=r"jdrop\.flax\.Dropout: `deterministic` must be a bool"):
    jdrop.flax.Dropout(0.5, deterministic="no").apply({}, X, rngs={"dropout": KEY})
