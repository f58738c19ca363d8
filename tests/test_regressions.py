"""Regressions for findings of the code review (each failed before its fix)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdrop
from jdrop._src import dropout as dropout_src


def test_concrete_bfloat16_rate_is_accepted_like_a_traced_one():
  key, x = jax.random.key(0), jnp.ones(8)
  eager = jdrop.dropout(key, x, rate=jnp.bfloat16(0.5))
  traced = jax.jit(lambda r: jdrop.dropout(key, x, rate=r))(jnp.bfloat16(0.5))
  np.testing.assert_array_equal(eager, traced)


def test_traced_complex_rate_is_rejected():
  with pytest.raises(TypeError, match=r"jdrop\.keep_mask: `rate` must be a real scalar"):
    jax.jit(lambda r: jdrop.keep_mask(jax.random.key(0), (4,), rate=r))(jnp.complex64(0.5 + 3j))


@pytest.mark.parametrize("jit", [False, True])
def test_apply_mask_at_rate_one_gives_zeros_whatever_the_mask(jit):
  apply = (
    jax.jit(lambda x, m, r: jdrop.apply_mask(x, m, rate=r))
    if jit
    else (lambda x, m, r: jdrop.apply_mask(x, m, rate=r))
  )
  out = apply(jnp.array([1.0, 2.0]), jnp.array([True, False]), 1.0)
  np.testing.assert_array_equal(out, [0.0, 0.0])


def test_a_new_concrete_rate_does_not_recompile():
  key, x = jax.random.key(0), jnp.ones(16)
  jdrop.dropout(key, x, rate=0.25)
  before = dropout_src._dropout_core.__wrapped_jit__._cache_size()
  for rate in np.linspace(0.01, 0.99, 20):
    jdrop.dropout(key, x, rate=float(rate))
  assert dropout_src._dropout_core.__wrapped_jit__._cache_size() == before
