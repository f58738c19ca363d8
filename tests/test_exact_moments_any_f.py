"""exact_moments for functions that are not elementwise: never a silently wrong number.

The reference is an independent sum over every mask in float64 NumPy, with the masked
inputs computed as jdrop computes them (``apply_mask``).
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdrop import activations
from jdrop import apply_mask
from jdrop import montecarlo

X = jnp.array([-1.5, 0.25, 2.0, -0.5])


def brute_force(f, x, rate):
  """Mean and population variance of f(D(x)) over all 2**n masks, weighted, in float64."""
  q = 1.0 - rate
  values, weights = [], []
  for bits in itertools.product([False, True], repeat=x.size):
    mask = np.array(bits).reshape(x.shape)
    values.append(np.asarray(f(apply_mask(x, jnp.asarray(mask), rate=rate)), np.float64))
    weights.append(q ** mask.sum() * (1 - q) ** (x.size - mask.sum()))
  values, weights = np.array(values), np.array(weights)[:, None]
  mean = (weights * values).sum(0)
  return mean, (weights * (values - mean) ** 2).sum(0)


NON_ELEMENTWISE = {
  "softmax": "softmax",
  "log_softmax": "log_softmax",
  "softmin": "softmin",
  "jax.nn.softmax itself": jax.nn.softmax,
  "softmax with a bound axis": activations.get("softmax", axis=0),
  "x - mean(x)": lambda x: x - x.mean(),
  "cumsum": jnp.cumsum,
  "x * sum(x)": lambda x: x * x.sum(),
  "sort": jnp.sort,
  "layer norm": lambda x: (x - x.mean()) / jnp.sqrt(x.var() + 1e-5),
}


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("name", list(NON_ELEMENTWISE))
def test_non_elementwise_functions_are_summed_over_every_mask(name, rate):
  f = NON_ELEMENTWISE[name]
  callable_f = activations.get(f) if isinstance(f, str) else f
  want_mean, want_var = brute_force(callable_f, X, rate)
  got = montecarlo.exact_moments(f, X, rate=rate)
  # float32 sums of 16 weighted terms against float64: a few ulps of the largest term.
  np.testing.assert_allclose(got.pre.mean, want_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got.pre.var, want_var, rtol=1e-4, atol=1e-6)
  # Post-activation dropout is two-valued per element whatever f is.
  fx = np.asarray(callable_f(X), np.float64)
  q = 1 - rate
  np.testing.assert_allclose(got.post.mean, np.where(q > 0, fx, 0), rtol=1e-6, atol=1e-7)


def test_the_old_elementwise_formula_was_wrong_for_softmax():
  two_point = 0.5 * jax.nn.softmax(X / 0.5) + 0.5 * jax.nn.softmax(jnp.zeros(4))
  got = montecarlo.exact_moments("softmax", X, rate=0.5).pre.mean
  assert np.abs(np.asarray(got) - np.asarray(two_point)).max() > 0.01
  np.testing.assert_allclose(got, brute_force(jax.nn.softmax, X, 0.5)[0], rtol=1e-5)


def test_monte_carlo_agrees_with_the_enumeration():
  exact = montecarlo.exact_moments("softmax", X, rate=0.4)
  mc = montecarlo.compare_orders(jax.random.key(3), "softmax", X, rate=0.4, num_masks=200_000)
  z = (np.asarray(mc.pre.mean) - np.asarray(exact.pre.mean)) / np.asarray(mc.pre.stderr)
  assert np.abs(z).max() < 5, z  # 5 standard errors: a false alarm about once in 10**6


@pytest.mark.parametrize(
  "f",
  ["tanh", jax.nn.gelu, lambda x: jnp.where(x > 0, x, 0.1 * x), activations.get("elu", alpha=2.0)],
)
def test_elementwise_functions_keep_the_closed_form(f):
  callable_f = activations.get(f) if isinstance(f, str) else f
  got = montecarlo.exact_moments(f, X, rate=0.3)
  np.testing.assert_allclose(got.pre.mean, brute_force(callable_f, X, 0.3)[0], rtol=2e-6)
  big = jnp.linspace(-3, 3, 4097)  # far beyond what could be enumerated
  assert np.isfinite(montecarlo.exact_moments(f, big, rate=0.3).pre.mean).all()


def test_up_to_sixteen_elements_are_enumerated_and_more_are_refused():
  x = jnp.linspace(-1, 1, montecarlo.MAX_ENUMERATED_SIZE).reshape(4, 4)
  got = montecarlo.exact_moments("softmax", x, rate=0.5)  # 65536 masks
  np.testing.assert_allclose(got.pre.mean.sum(axis=-1), 1.0, rtol=1e-5)  # rows still sum to 1
  for size in (montecarlo.MAX_ENUMERATED_SIZE + 1, 4096):
    with pytest.raises(ValueError) as exc:
      montecarlo.exact_moments(lambda v: v - v.mean(), jnp.ones(size), rate=0.5)
    text = str(exc.value)
    assert text.startswith("jdrop.montecarlo.exact_moments: `f` is not elementwise")
    assert f"at most {montecarlo.MAX_ENUMERATED_SIZE} elements" in text
    assert "compare_orders" in text


def test_under_jit_an_unknown_non_elementwise_callable_gives_nan_never_a_number():
  centred = jax.jit(lambda r: montecarlo.exact_moments(lambda v: v - v.mean(), X, rate=r))(0.3)
  assert np.isnan(centred.pre.mean).all() and np.isnan(centred.post.var).all()
  doubled = jax.jit(lambda r: montecarlo.exact_moments(lambda v: 2 * v, X, rate=r))(0.3)
  np.testing.assert_allclose(doubled.pre.mean, 2 * X, rtol=1e-6)
  # A registered non-elementwise name is known: enumerated under jit and vmap as well.
  rates = jnp.array([0.0, 0.5, 1.0])
  mapped = jax.vmap(lambda r: montecarlo.exact_moments("softmax", X, rate=r).pre.mean)(rates)
  for row, rate in zip(mapped, rates, strict=True):
    np.testing.assert_allclose(row, brute_force(jax.nn.softmax, X, float(rate))[0], rtol=1e-5)


def test_a_partial_of_a_non_elementwise_function_is_tested_not_trusted():
  f = functools.partial(jax.nn.softmax, axis=-1)  # not the registry's function: probed
  np.testing.assert_allclose(
    montecarlo.exact_moments(f, X, rate=0.5).pre.mean, brute_force(f, X, 0.5)[0], rtol=1e-5
  )
