"""The modules' ``fast`` field: the pure functions' fast masks, through linen and nnx."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jdrop
import jdrop.flax
import jdrop.nnx

X = jnp.linspace(-2.0, 2.0, 4 * 64).reshape(4, 64)
KEY = jax.random.key(3)


@pytest.mark.parametrize(
  "linen,pure",
  [
    (
      lambda: jdrop.flax.Dropout(0.3, fast=True),
      lambda k: jdrop.dropout(k, X, rate=0.3, fast=True),
    ),
    (
      lambda: jdrop.flax.Dropout(0.3, broadcast_dims=(0,), fast=True),
      lambda k: jdrop.dropout(k, X, rate=0.3, broadcast_dims=(0,), fast=True),
    ),
    (
      lambda: jdrop.flax.DropPath(0.5, fast=True),
      lambda k: jdrop.drop_path(k, X, rate=0.5, fast=True),
    ),
    (
      lambda: jdrop.flax.AlphaDropout(0.2, fast=True),
      lambda k: jdrop.alpha_dropout(k, X, rate=0.2, fast=True),
    ),
    (
      lambda: jdrop.flax.ActivationDropout("tanh", 0.3, "pre", fast=True),
      lambda k: jdrop.activation_dropout(k, X, "tanh", rate=0.3, order="pre", fast=True),
    ),
  ],
)
def test_linen_fast_is_the_pure_fast_function(linen, pure):
  got = linen().apply({}, X, deterministic=False, rng=KEY)
  np.testing.assert_array_equal(got, pure(KEY))
  exact = linen().clone(fast=False).apply({}, X, deterministic=False, rng=KEY)
  assert not np.array_equal(got, exact)  # the field is not ignored


def test_nnx_fast_is_the_pure_fast_function():
  for module, pure in (
    (jdrop.nnx.Dropout(0.3, fast=True), lambda k: jdrop.dropout(k, X, rate=0.3, fast=True)),
    (jdrop.nnx.DropPath(0.5, fast=True), lambda k: jdrop.drop_path(k, X, rate=0.5, fast=True)),
    (
      jdrop.nnx.ActivationDropout("gelu", 0.3, order="post", fast=True),
      lambda k: jdrop.activation_dropout(k, X, "gelu", rate=0.3, order="post", fast=True),
    ),
  ):
    np.testing.assert_array_equal(module(X, rngs=KEY), pure(KEY))
  streamed = jdrop.nnx.Dropout(0.3, fast=True, rngs=nnx.Rngs(dropout=0))
  assert float(jnp.mean(streamed(X) == 0)) == pytest.approx(0.3, abs=0.1)


def test_fast_must_be_a_bool_and_gaussian_has_no_mask():
  with pytest.raises(TypeError, match=r"jdrop\.flax\.Dropout: `fast` must be a Python bool"):
    jdrop.flax.Dropout(0.3, fast=1).apply({}, X, deterministic=False, rng=KEY)
  with pytest.raises(TypeError, match=r"jdrop\.nnx\.Dropout: `fast` must be a Python bool"):
    jdrop.nnx.Dropout(0.3, fast="yes")
  with pytest.raises(TypeError):
    jdrop.nnx.GaussianDropout(0.3, fast=True)
  assert not hasattr(jdrop.flax.GaussianDropout(0.3), "fast")
