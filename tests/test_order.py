"""The two orders against an independent oracle: explicit composition on the drawn mask.

``pre`` must be ``f(apply_mask(x, m))`` and ``post`` must be ``apply_mask(f(x), m)``, bit for
bit, for the pure functions and both module families. relu cannot tell the orders apart
(it commutes with dropout), and neither can an odd f on a symmetric check, so these use tanh
and sigmoid, where a dropped unit also pins the answer by hand: ``pre = f(0)``, ``post = 0``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jdrop

KEY = jax.random.key(7)
RATE = 0.3
X = jnp.linspace(-3.0, 3.0, 24, dtype=jnp.float32).reshape(4, 6)
ACTIVATIONS = [("tanh", jnp.tanh), ("sigmoid", jax.nn.sigmoid)]


def composed(f, order: str) -> jax.Array:
  """The order spelled out: mask from ``keep_mask``, applied before or after ``f``."""
  mask = jdrop.keep_mask(KEY, X.shape, rate=RATE)
  if order == "pre":
    return f(jdrop.apply_mask(X, mask, rate=RATE))
  return jdrop.apply_mask(f(X), mask, rate=RATE)


def assert_bits_equal(got: jax.Array, expected: jax.Array) -> None:
  assert got.dtype == expected.dtype
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), strict=True)


@pytest.mark.parametrize(("name", "f"), ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
def test_the_oracle_tells_the_orders_apart(name, f):
  # The checks below are only sharp if pre and post differ, on kept and on dropped units.
  mask = np.asarray(jdrop.keep_mask(KEY, X.shape, rate=RATE))
  assert mask.any() and not mask.all()
  pre, post = np.asarray(composed(f, "pre")), np.asarray(composed(f, "post"))
  assert (pre != post)[mask].any()
  np.testing.assert_array_equal(pre[~mask], np.asarray(f(jnp.float32(0.0))))  # f(0): 0, 1/2
  np.testing.assert_array_equal(post[~mask], 0.0)
  np.testing.assert_allclose(pre[mask], f(X / (1 - RATE))[mask], rtol=1e-6)
  np.testing.assert_allclose(post[mask], (f(X) / (1 - RATE))[mask], rtol=1e-6)


@pytest.mark.parametrize(("name", "f"), ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
@pytest.mark.parametrize("by", ["name", "callable"])
def test_both_orders_is_the_explicit_composition(name, f, by):
  out = jdrop.both_orders(KEY, X, name if by == "name" else f, rate=RATE)
  assert_bits_equal(out.mask, jdrop.keep_mask(KEY, X.shape, rate=RATE))
  assert_bits_equal(out.pre, composed(f, "pre"))
  assert_bits_equal(out.post, composed(f, "post"))


@pytest.mark.parametrize(("name", "f"), ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
@pytest.mark.parametrize("order", ["pre", "post"])
def test_activation_dropout_is_the_explicit_composition(name, f, order):
  expected = composed(f, order)
  assert_bits_equal(jdrop.activation_dropout(KEY, X, name, rate=RATE, order=order), expected)
  jitted = jax.jit(lambda key, x: jdrop.activation_dropout(key, x, f, rate=RATE, order=order))
  assert_bits_equal(jitted(KEY, X), expected)


@pytest.mark.parametrize(("name", "f"), ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
@pytest.mark.parametrize("order", ["pre", "post"])
def test_linen_module_is_the_explicit_composition(name, f, order):
  module = jdrop.flax.ActivationDropout(name, RATE, order)
  assert_bits_equal(module.apply({}, X, False, KEY), composed(f, order))


@pytest.mark.parametrize(("name", "f"), ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
@pytest.mark.parametrize("order", ["pre", "post"])
def test_nnx_module_is_the_explicit_composition(name, f, order):
  module = jdrop.nnx.ActivationDropout(name, RATE, order=order, rngs=nnx.Rngs(dropout=0))
  assert_bits_equal(module(X, rngs=KEY), composed(f, order))


# The error paths and the remaining arguments, each against its literal expected text or an
# explicit composition (mutation testing showed them unguarded by the tests above).
SHAPE_FIX = "Use an elementwise activation (see jdrop.activations.info(name).elementwise)."


def shape_message(fn: str, got: str) -> str:
  return (
    f"{fn}: `activation` must map x of shape (4, 6) and dtype float32 to the same shape and"
    f" dtype, so both orders can share one mask, got {got}. {SHAPE_FIX}"
  )


def raise_runtime(x):
  raise RuntimeError("boom")


CALLS = [
  ("both_orders", {}),
  ("activation_dropout", {"order": "pre"}),
  ("activation_dropout", {"order": "post"}),
]
CALL_IDS = ["both_orders", "pre", "post"]


@pytest.mark.parametrize(("fn", "kwargs"), CALLS, ids=CALL_IDS)
@pytest.mark.parametrize(
  ("f", "got"),
  [
    (lambda x: x.sum(), "shape () and dtype float32"),
    (lambda x: x.astype(jnp.float16), "shape (4, 6) and dtype float16"),
    (lambda x: 1.0, "shape None and dtype None"),
    (raise_runtime, "a function that raised RuntimeError: boom"),
  ],
  ids=["shape", "dtype", "not-an-array", "raises"],
)
def test_a_non_elementwise_activation_is_refused_by_name(fn, kwargs, f, got):
  with pytest.raises(ValueError) as info:
    getattr(jdrop, fn)(KEY, X, f, rate=RATE, **kwargs)
  assert str(info.value) == shape_message(f"jdrop.{fn}", got)
  assert isinstance(info.value.__cause__, RuntimeError) == (got.startswith("a function"))


@pytest.mark.parametrize("error", [ValueError, TypeError])
def test_the_activations_own_value_and_type_errors_pass_through(error):
  def f(x):
    raise error("my own message")

  with pytest.raises(error) as info:
    jdrop.both_orders(KEY, X, f, rate=RATE)
  assert str(info.value) == "my own message"


@pytest.mark.parametrize("fn", ["both_orders", "activation_dropout"])
def test_a_non_callable_activation_is_a_type_error(fn):
  kwargs = {"order": "pre"} if fn == "activation_dropout" else {}
  with pytest.raises(TypeError) as info:
    getattr(jdrop, fn)(KEY, X, 3, rate=RATE, **kwargs)
  assert str(info.value) == (
    f"jdrop.{fn}: `activation` must be a callable or a registry name, got 3."
    " Pass e.g. jax.nn.relu or 'relu' (see jdrop.activations.names())."
  )


def test_an_unknown_order_is_refused():
  with pytest.raises(ValueError) as info:
    jdrop.activation_dropout(KEY, X, "tanh", rate=RATE, order="middle")
  assert str(info.value) == (
    "jdrop.activation_dropout: `order` must be 'pre' or 'post', got 'middle'."
    " Use order='pre' for f(dropout(x)), 'post' for dropout(f(x))."
  )


@pytest.mark.parametrize("order", ["pre", "post"])
def test_deterministic_is_the_activation_alone(order):
  got = jdrop.activation_dropout(KEY, X, "tanh", rate=RATE, order=order, deterministic=True)
  assert_bits_equal(got, jnp.tanh(X))


def test_broadcast_dims_share_the_mask_along_an_axis():
  mask = jdrop.keep_mask(KEY, (4, 1), rate=RATE)
  assert mask.any() and not mask.all()
  full = jnp.broadcast_to(mask, X.shape)
  out = jdrop.both_orders(KEY, X, jnp.tanh, rate=RATE, broadcast_dims=(1,))
  assert_bits_equal(out.mask, mask)
  assert_bits_equal(out.pre, jnp.tanh(jdrop.apply_mask(X, full, rate=RATE)))
  assert_bits_equal(out.post, jdrop.apply_mask(jnp.tanh(X), full, rate=RATE))
  for order, expected in [("pre", out.pre), ("post", out.post)]:
    got = jdrop.activation_dropout(KEY, X, "tanh", rate=RATE, order=order, broadcast_dims=(1,))
    assert_bits_equal(got, expected)


BAD_ARGUMENTS = {
  "key": lambda call: call(3, X, "tanh", rate=RATE),
  "x": lambda call: call(KEY, X.astype(jnp.int32), "tanh", rate=RATE),
  "rate": lambda call: call(KEY, X, "tanh", rate=1.5),
  "broadcast_dims": lambda call: call(KEY, X, "tanh", rate=RATE, broadcast_dims=(5,)),
  "activation": lambda call: call(KEY, X, "no-such-activation", rate=RATE),
}


@pytest.mark.parametrize(("fn", "kwargs"), CALLS, ids=CALL_IDS)
@pytest.mark.parametrize("arg", list(BAD_ARGUMENTS))
def test_every_argument_error_names_the_function_and_the_argument(fn, kwargs, arg):
  with pytest.raises((TypeError, ValueError)) as info:
    BAD_ARGUMENTS[arg](lambda *a, **k: getattr(jdrop, fn)(*a, **k, **kwargs))
  assert str(info.value).startswith(f"jdrop.{fn}: `{arg}` ")


@pytest.mark.parametrize("rate", [1.5, -0.1, float("nan")])
def test_a_traced_invalid_rate_poisons_both_orders_with_nan(rate):
  out = jax.jit(lambda r: jdrop.both_orders(KEY, X, jnp.tanh, rate=r))(rate)
  assert np.isnan(np.asarray(out.pre)).all() and np.isnan(np.asarray(out.post)).all()
  for order in ["pre", "post"]:
    call = functools.partial(jdrop.activation_dropout, KEY, X, "tanh", order=order)
    assert np.isnan(np.asarray(jax.jit(lambda r, call=call: call(rate=r))(rate))).all()


def test_post_names_both_orders_when_only_the_unmasked_x_is_refused():
  # Elementwise only where x has a zero: the masked x (pre) passes, x itself (post) does not.
  def f(x):
    return x if bool((x == 0).any()) else x.sum()

  assert not bool((X == 0).any())
  with pytest.raises(ValueError) as info:
    jdrop.both_orders(KEY, X, f, rate=RATE)
  assert str(info.value) == shape_message("jdrop.both_orders", "shape () and dtype float32")
