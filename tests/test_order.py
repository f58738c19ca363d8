"""The two orders against an independent oracle: explicit composition on the drawn mask.

``pre`` must be ``f(apply_mask(x, m))`` and ``post`` must be ``apply_mask(f(x), m)``, bit for
bit, for the pure functions and both module families. relu cannot tell the orders apart
(it commutes with dropout), and neither can an odd f on a symmetric check, so these use tanh
and sigmoid, where a dropped unit also pins the answer by hand: ``pre = f(0)``, ``post = 0``.
"""

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
