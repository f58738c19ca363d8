"""jdrop.nnx: a subclass of flax.nnx.Dropout with bit-identical outputs, the same use of Rngs
and Flax's exceptions, and each module is its pure function."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax_util import assert_bits_equal
from flax_util import assert_equal_to_rounding

import jdrop
import jdrop.nnx

# Inputs come from numpy: every distinct jitted function costs a compilation (tests stay fast).
X = jnp.asarray(np.random.default_rng(0).standard_normal((4, 6, 5)), jnp.float32)
KEY = jax.random.key(7)


def assert_same_state(actual: nnx.Module, expected: nnx.Module):
  """The same state paths (checkpoints carry over) and bit-identical values (rngs included)."""
  actual, expected = nnx.to_flat_state(nnx.state(actual)), nnx.to_flat_state(nnx.state(expected))
  assert [path for path, _ in actual] == [path for path, _ in expected]
  for (_, a), (_, e) in zip(actual, expected, strict=True):
    assert type(a) is type(e)
    assert_bits_equal(a.get_value(), e.get_value())


def stream_key(seed: int, calls: int = 1) -> jax.Array:
  """The key a module built with ``rngs=nnx.Rngs(dropout=seed)`` uses at its call ``calls``."""
  stream = nnx.Rngs(dropout=seed)["dropout"].fork()
  for _ in range(calls - 1):
    stream()
  return stream()


# ----------------------------------------------------------------------------
# Bit-identity with flax.nnx.Dropout.


@pytest.mark.parametrize("broadcast_dims", [(), (1,)], ids=str)
@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_dropout_alone_equals_flax(rate, broadcast_dims):
  # nnx.Rngs(0) has only a default stream: 'dropout' falls back to it in both.
  ours = jdrop.nnx.Dropout(rate, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(0))
  theirs = nnx.Dropout(rate, broadcast_dims=broadcast_dims, rngs=nnx.Rngs(0))
  for _ in range(2):  # the stream advances
    assert_bits_equal(ours(X), theirs(X))
  assert_same_state(ours, theirs)
  for mode in (True, False):
    view_ours = nnx.view(ours, deterministic=mode)
    view_theirs = nnx.view(theirs, deterministic=mode)
    assert view_ours.deterministic is mode
    assert_bits_equal(view_ours(X), view_theirs(X))
  assert_same_state(ours, theirs)  # a view shares the rng state


def test_train_and_eval_switch_like_flax():
  def run(cls):
    module = cls(0.5, deterministic=True, rngs=nnx.Rngs(dropout=0))
    outs = [module(X)]
    module.train()
    outs += [module(X), module(X)]
    module.eval()
    outs.append(module(X))
    module.set_attributes(deterministic=False)
    outs.append(module(X))
    return module, outs

  (ours, actual), (theirs, expected) = run(jdrop.nnx.Dropout), run(nnx.Dropout)
  jax.tree.map(assert_bits_equal, actual, expected)
  assert_same_state(ours, theirs)


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_call_time_overrides_equal_flax(rate):
  def run(cls):
    module = cls(rate, deterministic=True)
    rngs = nnx.Rngs(dropout=3, other=4)
    stream = nnx.Rngs(5).default
    outs = [
      module(X),
      module(X, rngs=rngs),  # deterministic: the stream is not touched
      module(X, deterministic=False, rngs=rngs),
      module(X, deterministic=False, rngs=rngs["other"]),
      module(X, deterministic=False, rngs=stream),
      module(X, deterministic=False, rngs=KEY),
      module(X, deterministic=False, rngs=jax.random.key_data(KEY)),  # a raw key
    ]
    return outs, nnx.state(rngs), nnx.state(stream)

  actual, expected = run(jdrop.nnx.Dropout), run(nnx.Dropout)
  jax.tree.map(assert_bits_equal, actual, expected)


def ramp(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """Distinct weights without drawing them: a random init costs a compilation."""
  return jnp.linspace(-1.0, 1.0, np.prod(shape), dtype=dtype).reshape(shape)


class Net(nnx.Module):
  """Several dropouts (some drawing no key), two Linear and a stream shared with a call."""

  def __init__(self, dropout: type, rngs: nnx.Rngs):
    self.linear = nnx.Linear(5, 8, kernel_init=ramp, rngs=rngs)
    self.drop = dropout(0.3, rngs=rngs)
    self.drop_zero = dropout(0.0, rngs=rngs)
    self.drop_one = dropout(1.0, rngs=rngs)
    self.drop_other = dropout(0.25, broadcast_dims=(0,), rng_collection="other", rngs=rngs)
    self.drop_at_call = dropout(0.4)
    self.rngs = rngs
    self.out = nnx.Linear(8, 3, kernel_init=ramp, rngs=rngs)

  def __call__(self, x: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """The output, and each dropout's output."""
    dropped = [self.drop(self.linear(x))]
    dropped.append(self.drop_zero(dropped[-1]))
    dropped.append(self.drop_one(dropped[-1]))
    dropped.append(self.drop_other(dropped[-2] + dropped[-1]))
    dropped.append(self.drop_at_call(dropped[-1], rngs=self.rngs))  # the shared stream
    return self.out(dropped[-1]), dropped


def test_dropout_in_a_model_with_mode_switching_equals_flax():
  x = X.reshape(-1, 5)
  forward = nnx.jit(lambda model, x: model(x))  # eval mode runs eagerly: one compile each

  def run(cls):
    model = Net(cls, nnx.Rngs(params=0, dropout=1, other=2))
    outs = [forward(model, x), forward(model, x)]
    model.eval()
    outs.append(model(x))
    model.train()
    outs.append(forward(model, x))
    model.set_attributes(deterministic=True)
    outs.append(model(x))
    return model, outs

  ours, actual = run(jdrop.nnx.Dropout)
  theirs, expected = run(nnx.Dropout)
  assert_same_state(ours, theirs)
  for (out, dropped), (out_flax, dropped_flax) in zip(actual, expected, strict=True):
    jax.tree.map(assert_bits_equal, dropped, dropped_flax)
    assert_equal_to_rounding(out, out_flax)
  first, second, evaluated = (out for out, _ in actual[:3])
  assert not (first == second).all() and not (second == evaluated).all()


# ----------------------------------------------------------------------------
# A subclass of flax.nnx.Dropout: what selects modules by type finds it.


class Mixed(nnx.Module):
  """A model partly swapped: Flax's dropout, jdrop's, and jdrop layers that Flax lacks."""

  def __init__(self, rngs: nnx.Rngs):
    self.linear = nnx.Linear(5, 5, kernel_init=ramp, rngs=rngs)
    self.flax_drop = nnx.Dropout(0.5, rngs=rngs)
    self.drop = jdrop.nnx.Dropout(0.5, rngs=rngs)
    self.alpha = jdrop.nnx.AlphaDropout(0.5, rngs=rngs)
    self.act = jdrop.nnx.ActivationDropout("relu", 0.5, order="post", rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.act(self.alpha(self.drop(self.flax_drop(self.linear(x)))))


def test_dropout_is_a_flax_dropout_and_the_other_layers_are_not():
  assert isinstance(jdrop.nnx.Dropout(0.1), nnx.Dropout)
  assert jdrop.nnx.Dropout.__call__ is not nnx.Dropout.__call__
  # Flax has no alpha, gaussian, drop-path or activation dropout: filters for nnx.Dropout
  # must not pick those (a mask of other statistics, or an activation).
  for cls in (
    jdrop.nnx.AlphaDropout,
    jdrop.nnx.GaussianDropout,
    jdrop.nnx.DropPath,
    jdrop.nnx.ActivationDropout,
  ):
    assert not issubclass(cls, nnx.Dropout)


def test_set_attributes_by_flax_type_reaches_it():
  model = Mixed(nnx.Rngs(0))
  model.set_attributes(nnx.Dropout, deterministic=True)
  assert model.flax_drop.deterministic is True and model.drop.deterministic is True
  assert model.alpha.deterministic is False and model.act.deterministic is False
  model.set_attributes(nnx.Dropout, rate=0.25)
  assert model.drop.rate == 0.25


def test_view_only_flax_type_reaches_it():
  model = Mixed(nnx.Rngs(0))
  twin = nnx.clone(model)
  x = X.reshape(-1, 5)
  view = nnx.view(model, only=nnx.Dropout, deterministic=True)
  assert view.drop.deterministic is True and view.alpha.deterministic is False
  assert model.drop.deterministic is False  # a view leaves the model alone
  # Both dropouts skipped, alpha and activation dropout still drawing from their streams.
  assert_bits_equal(view(x), twin.act(twin.alpha(twin.linear(x))))
  assert_same_state(model, twin)


def test_iter_graph_filter_by_flax_type_finds_it():
  model = Mixed(nnx.Rngs(0))
  found = [path for path, node in nnx.iter_graph(model) if isinstance(node, nnx.Dropout)]
  assert sorted(found) == [("drop",), ("flax_drop",)]


# ----------------------------------------------------------------------------
# Every module is its pure function.

VARIANTS: list[tuple[Callable[..., nnx.Module], Callable]] = [
  (
    lambda **kw: jdrop.nnx.Dropout(0.3, broadcast_dims=(1,), **kw),
    lambda key, x, d: jdrop.dropout(key, x, rate=0.3, broadcast_dims=(1,), deterministic=d),
  ),
  (
    lambda **kw: jdrop.nnx.AlphaDropout(0.3, broadcast_dims=(1,), **kw),
    lambda key, x, d: jdrop.alpha_dropout(key, x, rate=0.3, broadcast_dims=(1,), deterministic=d),
  ),
  (
    lambda **kw: jdrop.nnx.GaussianDropout(0.3, **kw),
    lambda key, x, d: jdrop.gaussian_dropout(key, x, rate=0.3, deterministic=d),
  ),
  (
    lambda **kw: jdrop.nnx.DropPath(0.3, **kw),
    lambda key, x, d: jdrop.drop_path(key, x, rate=0.3, deterministic=d),
  ),
  (
    lambda **kw: jdrop.nnx.ActivationDropout("gelu", 0.3, order="pre", **kw),
    lambda key, x, d: jdrop.activation_dropout(
      key, x, "gelu", rate=0.3, order="pre", deterministic=d
    ),
  ),
  (
    lambda **kw: jdrop.nnx.ActivationDropout(
      jax.nn.tanh, 0.3, order="post", broadcast_dims=(0,), **kw
    ),
    lambda key, x, d: jdrop.activation_dropout(
      key, x, jax.nn.tanh, rate=0.3, order="post", broadcast_dims=(0,), deterministic=d
    ),
  ),
]
VARIANT_IDS = ["Dropout", "AlphaDropout", "GaussianDropout", "DropPath", "pre-gelu", "post-tanh"]


@pytest.mark.parametrize(("make", "pure"), VARIANTS, ids=VARIANT_IDS)
def test_module_equals_its_pure_function(make, pure):
  module = make(rngs=nnx.Rngs(dropout=0))
  assert_bits_equal(module(X), pure(stream_key(0, 1), X, False))
  assert_bits_equal(module(X), pure(stream_key(0, 2), X, False))
  assert_bits_equal(module(X, rngs=KEY), pure(KEY, X, False))
  module.eval()
  assert_bits_equal(module(X), pure(KEY, X, True))
  module.train()
  assert_bits_equal(module(X), pure(stream_key(0, 3), X, False))  # eval drew no key


@pytest.mark.parametrize(
  "cls", [jdrop.nnx.Dropout, jdrop.nnx.AlphaDropout, jdrop.nnx.DropPath], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_rate_0_and_1_draw_no_key(cls, rate):
  rngs = nnx.Rngs(dropout=0)
  out = cls(rate)(X, rngs=rngs)
  assert int(rngs.dropout.count[...]) == 0
  assert_bits_equal(out, X if rate == 0 else jnp.zeros_like(X))


def test_traced_rate_in_the_module_state():
  traces = []

  @nnx.jit
  def forward(module, x):
    traces.append(None)
    return module(x)

  module = jdrop.nnx.Dropout(jnp.float32(0.3), rngs=nnx.Rngs(dropout=0))
  assert_bits_equal(forward(module, X), jdrop.dropout(stream_key(0, 1), X, rate=jnp.float32(0.3)))
  module.rate = jnp.float32(0.6)  # a new value, not a new program
  assert_bits_equal(forward(module, X), jdrop.dropout(stream_key(0, 2), X, rate=jnp.float32(0.6)))
  assert len(traces) == 1


# ----------------------------------------------------------------------------
# Errors name the module.

ALL_CLASSES = [
  jdrop.nnx.Dropout,
  jdrop.nnx.AlphaDropout,
  jdrop.nnx.GaussianDropout,
  jdrop.nnx.DropPath,
  lambda rate, **kw: jdrop.nnx.ActivationDropout("relu", rate, order="post", **kw),
]
ALL_IDS = ["Dropout", "AlphaDropout", "GaussianDropout", "DropPath", "ActivationDropout"]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=ALL_IDS)
def test_missing_or_wrong_rngs_is_a_clear_error(cls):
  module = cls(0.5)
  name = type(module).__name__
  with pytest.raises(ValueError, match=rf"jdrop\.nnx\.{name}: `rngs` must be given") as info:
    module(X)
  # Flax's words too, so tests written against flax.nnx.Dropout still match.
  assert (
    f"`deterministic` is False, but no `rngs` argument was provided to {name} as either a"
    " __call__ argument or class attribute." in str(info.value)
  )
  with pytest.raises(
    TypeError, match=rf"jdrop\.nnx\.{name}: `rngs` must be .* got an object of type int"
  ) as info:
    module(X, rngs=0)
  assert "rngs must be a Rngs, RngStream or jax.Array, but got <class 'int'>." in str(info.value)
  with pytest.raises(
    TypeError, match=rf"jdrop\.nnx\.{name}: `rngs` must be .* got an object of type int"
  ) as info:
    cls(0.5, rngs=0)
  assert "rngs must be a Rngs, RngStream or None, but got <class 'int'>." in str(info.value)
  assert_bits_equal(module(X, deterministic=True), cls(0.5, deterministic=True)(X))


def test_error_messages_hold_flax_messages():
  # Each exception is of Flax's class and holds Flax's message: its first sentence, which is
  # all of it except for `deterministic`, where Flax 0.12.8 goes on to list options (0.12.5
  # says "... to Dropout as either a __call__ argument or class attribute", also contained).
  cases = [
    (lambda cls: cls(0.5)(X), ValueError),
    (lambda cls: cls(0.5)(X, rngs=0), TypeError),
    (lambda cls: cls(0.5, rngs=0), TypeError),
    (lambda cls: cls(0.5, deterministic=None)(X), ValueError),
  ]
  for run, error in cases:
    with pytest.raises(error) as flax_info:
      run(nnx.Dropout)
    with pytest.raises(error) as info:
      run(jdrop.nnx.Dropout)
    flax_sentence = " ".join(str(flax_info.value).split()).split(". ")[0]
    assert len(flax_sentence) > 40 and flax_sentence in str(info.value)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=ALL_IDS)
@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan")])
def test_bad_rate_is_a_clear_error(cls, rate):
  name = type(cls(0.5)).__name__
  with pytest.raises(ValueError, match=rf"jdrop\.nnx\.{name}: `rate` must be"):
    cls(rate)
  module = cls(0.5, deterministic=True)
  module.rate = rate
  with pytest.raises(ValueError, match=rf"jdrop\.nnx\.{name}: `rate` must be"):
    module(X)


def test_gaussian_dropout_rejects_rate_1():
  with pytest.raises(ValueError, match=r"jdrop\.nnx\.GaussianDropout: `rate`.*\[0, 1\)"):
    jdrop.nnx.GaussianDropout(1.0)


def test_deterministic_none_needs_a_call_argument():
  module = jdrop.nnx.Dropout(0.5, deterministic=None)
  with pytest.raises(ValueError, match=r"jdrop\.nnx\.Dropout: `deterministic` must be given"):
    module(X)
  assert_bits_equal(module(X, deterministic=True), X)
  assert_bits_equal(nnx.view(module, deterministic=True)(X), X)
