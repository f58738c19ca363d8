"""jdrop.montecarlo: the chunked engine against brute force, exact references, layer studies,
the rendezvous of several processes, and the ``mc`` command line.

Statistical tests use fixed keys and the significance level ``ALPHA`` of ``stats_util.py``;
each is paired with the same statistic against a deliberately wrong parameter, which must
reject. Multi-device and multi-process runs are in ``test_montecarlo_distributed.py``.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import socket
import threading
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import stats_util
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from stats_util import ALPHA

import jdrop
from jdrop import montecarlo
from jdrop._src import cli
from jdrop._src import cli_args
from jdrop._src import cli_mc
from jdrop._src import montecarlo as mc_src

KEY = jax.random.key(7)
GRID = jnp.linspace(-3.0, 3.0, 13)


def brute_force(key, f, x, rate, num_masks):
  """Both orders on every mask through the public API, as float64 arrays (masks, *x.shape)."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_masks))
  kept = jax.vmap(lambda k: jdrop.keep_mask(k, x.shape, rate=rate))(keys)
  pre = jax.vmap(lambda m: f(jdrop.apply_mask(x, m, rate=rate)))(kept)
  post = jax.vmap(lambda m: jdrop.apply_mask(f(x), m, rate=rate))(kept)
  return np.asarray(pre, np.float64), np.asarray(post, np.float64)


def gaps(pre, post):
  """Per-element |pre - post| with the engine's conventions (equal or both NaN: 0)."""
  same = (pre == post) | (np.isnan(pre) & np.isnan(post))
  with np.errstate(invalid="ignore"):
    gap = np.where(same, 0, np.abs(pre - post))
  return np.where(np.isnan(gap), np.inf, gap)


# ----------------------------------------------------------------------------
# The engine against brute force.

ENGINE_CASES = {
  # name: (f, x, rate, num_masks, chunk_size). Odd chunk sizes leave a partial last chunk;
  # None (the default chunk, 4096 masks here) shares its compiled program with other tests.
  "tanh": (jnp.tanh, GRID, 0.3, 37, 8),
  "relu": (jax.nn.relu, GRID, 0.5, 50, 7),
  "sigmoid-bf16": (jax.nn.sigmoid, GRID.astype(jnp.bfloat16), 0.5, 40, 16),
  # exp(inf) = inf, exp(-inf) = 0, exp(100) overflows to inf: infinite means stay inf.
  "inf-nan-overflow": (jnp.exp, jnp.array([jnp.inf, -jnp.inf, jnp.nan, 100.0, 1.0]), 0.5, 20, 3),
  "rate-0": (jnp.tanh, GRID, 0.0, 5, None),
  "rate-1": (jax.nn.sigmoid, GRID, 1.0, 5, None),
  "softmax-2d": (jax.nn.softmax, GRID[:12].reshape(3, 4), 0.5, 30, 4),
}


@pytest.mark.parametrize("case", ENGINE_CASES)
def test_engine_equals_brute_force_over_the_same_masks(case):
  f, x, rate, n, chunk = ENGINE_CASES[case]
  out = montecarlo.compare_orders(KEY, f, x, rate=rate, num_masks=n, chunk_size=chunk)
  pre, post = brute_force(KEY, f, x, rate, n)
  with np.errstate(invalid="ignore"):
    want = {
      "pre": (pre.mean(0), pre.var(0, ddof=1), pre.std(0, ddof=1) / math.sqrt(n)),
      "post": (post.mean(0), post.var(0, ddof=1), post.std(0, ddof=1) / math.sqrt(n)),
    }
  # float32 accumulation over <= 50 masks: 1e-5 relative is ~100 roundings of headroom.
  for order in ("pre", "post"):
    for got, expected in zip(getattr(out, order), want[order], strict=True):
      assert got.shape == x.shape and got.dtype == jnp.promote_types(x.dtype, jnp.float32)
      np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{case} {order}")
  gap = gaps(pre, post)
  rtol = montecarlo.default_rtol(x.dtype)
  with np.errstate(invalid="ignore"):
    close = gap <= rtol * np.maximum(np.abs(pre), np.abs(post))
  bad = (gap > 0) & ~(close & np.isfinite(gap))
  assert out.mismatch_fraction == bad.reshape(n, -1).any(axis=1).mean()
  np.testing.assert_allclose(out.max_abs_diff, gap.max(), rtol=1e-6)
  np.testing.assert_array_equal(out.reference, f(x))
  assert (out.num_masks, out.rate, out.rtol) == (n, rate, rtol)


def test_relu_agrees_on_every_mask_and_tanh_only_where_everything_is_dropped():
  x = jnp.array([-1.0, 0.5, 2.0])
  relu = montecarlo.compare_orders(KEY, "relu", x, rate=0.5, num_masks=2000)
  assert (relu.mismatch_fraction, relu.max_abs_diff) == (0.0, 0.0)
  np.testing.assert_allclose(relu.pre.mean, relu.post.mean, rtol=1e-6)
  tanh = montecarlo.compare_orders(KEY, "tanh", x, rate=0.5, num_masks=2000)
  # tanh(0) = 0, so the orders agree exactly when all three units are dropped: P = 1/8.
  p = stats_util.binomial_pvalue(round(2000 * (1 - tanh.mismatch_fraction)), 2000, 1 / 8)
  assert p > ALPHA
  assert stats_util.binomial_pvalue(round(2000 * (1 - tanh.mismatch_fraction)), 2000, 1 / 4) < ALPHA


def test_rtol_separates_one_ulp_noise_from_real_disagreement():
  # leaky_relu is homogeneous in exact arithmetic; in float32 0.01 * (x / q) and
  # (0.01 * x) / q differ by about one ulp on some inputs.
  x = -jnp.linspace(0.1, 9.0, 64)
  loose = montecarlo.compare_orders(KEY, "leaky_relu", x, rate=0.3, num_masks=200)
  exact = montecarlo.compare_orders(KEY, "leaky_relu", x, rate=0.3, num_masks=200, rtol=0)
  assert loose.mismatch_fraction == 0.0
  assert exact.mismatch_fraction > 0.5 and 0 < exact.max_abs_diff < 1e-6


def test_chunk_size_and_progress_do_not_change_the_result():
  x = GRID
  calls = []
  runs = [
    montecarlo.compare_orders(KEY, "gelu", x, rate=0.4, num_masks=997, chunk_size=c)
    for c in (1, 13, None)
  ]
  runs.append(
    montecarlo.compare_orders(
      KEY,
      "gelu",
      x,
      rate=0.4,
      num_masks=997,
      chunk_size=13,
      progress=lambda d, t: calls.append((d, t)),
    )
  )
  first = runs[0]
  for other in runs[1:]:
    np.testing.assert_allclose(other.pre.mean, first.pre.mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(other.pre.var, first.pre.var, rtol=1e-5)
    for a, b in zip(other.post, first.post, strict=True):  # from integer counts: identical
      np.testing.assert_array_equal(a, b)
    assert (other.mismatch_fraction, other.max_abs_diff) == (
      first.mismatch_fraction,
      first.max_abs_diff,
    )
  assert calls[-1] == (997, 997) and len(calls) > 1
  assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_one_compilation_serves_every_num_masks_rate_and_x():
  traces = []

  def counted(v):
    traces.append(v.shape)
    return jnp.tanh(v)

  for n, rate, shift in [(10, 0.5, 0.0), (1000, 0.2, 1.0), (12345, 0.9, -3.0), (1, 0.0, 2.0)]:
    montecarlo.compare_orders(KEY, counted, GRID + shift, rate=rate, num_masks=n, chunk_size=32)
  first = len(traces)
  montecarlo.compare_orders(KEY, counted, GRID, rate=0.7, num_masks=54321, chunk_size=32)
  # f is traced once per compiled program (and once per eager call for the reference);
  # a new num_masks, rate or x adds only the eager call, never a new program.
  assert len(traces) == first + 1


def test_a_million_masks_in_one_call_match_the_exact_moments():
  x = jnp.array([-1.5, 0.3, 2.0])
  out = montecarlo.compare_orders(KEY, "tanh", x, rate=0.5, num_masks=10**6)
  exact = montecarlo.exact_moments("tanh", x, rate=0.5)
  z = (np.asarray(out.pre.mean) - exact.pre.mean) / np.sqrt(exact.pre.var / 10**6)
  assert out.num_masks == 10**6 and stats_util.chi2_sum_pvalue(z) > ALPHA


def test_single_mask_has_nan_variance_and_the_value_as_mean():
  out = montecarlo.compare_orders(KEY, "tanh", GRID, rate=0.5, num_masks=1)
  pre, post = brute_force(KEY, jnp.tanh, GRID, 0.5, 1)
  np.testing.assert_allclose(out.pre.mean, pre[0], rtol=1e-6)
  np.testing.assert_allclose(out.post.mean, post[0], rtol=1e-6)
  assert np.isnan(out.pre.var).all() and np.isnan(out.post.stderr).all()


# ----------------------------------------------------------------------------
# Monte-Carlo against the exact moments (z-tests with a stated alpha, and rejection).


def two_point_z(comparison, exact, order, num_masks):
  """z-scores of the Monte-Carlo mean and variance of one order against exact values.

  Each order takes two values a (kept, probability q) and b; with d = a - b the mean has
  variance q(1-q)d^2 / n and the sample variance (mu4 - sigma^4) / n, where
  mu4 = q(1-q)((1-q)^3 + q^3) d^4. Elements with zero variance must match exactly.
  """
  got, want = getattr(comparison, order), getattr(exact, order)
  var = np.asarray(want.var, np.float64)
  q = 1 - comparison.rate
  d2 = var / (q * (1 - q))
  mu4 = q * (1 - q) * ((1 - q) ** 3 + q**3) * d2**2
  live = var > 0
  np.testing.assert_allclose(np.asarray(got.mean)[~live], np.asarray(want.mean)[~live])
  z_mean = (np.asarray(got.mean) - want.mean)[live] / np.sqrt(var[live] / num_masks)
  z_var = (np.asarray(got.var) - var)[live] / np.sqrt((mu4 - var**2)[live] / num_masks)
  return np.concatenate([z_mean, z_var])


STAT_ACTIVATIONS = ("tanh", "gelu", "sigmoid")
N_STAT = 20_000
WRONG_RATE = 0.32  # the engine runs at 0.3; 0.02 off is many standard errors at N_STAT


@functools.cache
def stat_run(activation: str):
  return montecarlo.compare_orders(KEY, activation, GRID, rate=0.3, num_masks=N_STAT)


@pytest.mark.parametrize("activation", STAT_ACTIVATIONS)
@pytest.mark.parametrize("order", ["pre", "post"])
def test_monte_carlo_moments_match_the_exact_ones(activation, order):
  exact = montecarlo.exact_moments(activation, GRID, rate=0.3)
  z = two_point_z(stat_run(activation), exact, order, N_STAT)
  assert stats_util.chi2_sum_pvalue(z) > ALPHA, z


@pytest.mark.parametrize("activation", STAT_ACTIVATIONS)
@pytest.mark.parametrize("order", ["pre", "post"])
def test_monte_carlo_moments_reject_the_exact_ones_at_a_wrong_rate(activation, order):
  run = stat_run(activation)
  wrong = montecarlo.exact_moments(activation, GRID, rate=WRONG_RATE)
  z = two_point_z(run._replace(rate=WRONG_RATE), wrong, order, N_STAT)
  assert stats_util.chi2_sum_pvalue(z) < ALPHA, z


# ----------------------------------------------------------------------------
# Exact moments.

FINITE = st.floats(-50, 50, allow_nan=False, width=32)
PRELU = functools.partial(jdrop.activations.prelu, slope=0.25)  # one object: one compilation
RATES = st.floats(0.01, 0.99)


@settings(max_examples=30, deadline=None)
@given(st.lists(FINITE, min_size=8, max_size=8), RATES, st.sampled_from(["relu", "abs", "prelu"]))
def test_homogeneous_activations_have_equal_exact_moments_in_both_orders(values, rate, name):
  f = PRELU if name == "prelu" else name
  exact = montecarlo.exact_moments(f, jnp.asarray(values, jnp.float32), rate=rate)
  np.testing.assert_allclose(exact.pre.mean, exact.post.mean, rtol=1e-6, atol=1e-30)
  np.testing.assert_allclose(exact.pre.var, exact.post.var, rtol=1e-5, atol=1e-30)


@settings(max_examples=30, deadline=None)
@given(st.lists(FINITE, min_size=8, max_size=8), RATES)
def test_post_activation_dropout_is_unbiased_and_pre_is_a_two_point_mixture(values, rate):
  x = jnp.asarray(values, jnp.float32)
  exact = montecarlo.exact_moments("tanh", x, rate=rate)
  np.testing.assert_allclose(exact.post.mean, jnp.tanh(x), rtol=2e-6, atol=1e-30)
  q = 1 - np.float64(np.float32(rate))
  kept = np.tanh(np.asarray(x, np.float64) / q)
  np.testing.assert_allclose(exact.pre.mean, q * kept, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(exact.pre.var, q * (1 - q) * kept**2, rtol=1e-4, atol=1e-7)
  assert (np.asarray(exact.pre.stderr) == 0).all()


def test_exact_moments_at_rates_0_and_1():
  zero = montecarlo.exact_moments("sigmoid", GRID, rate=0.0)
  np.testing.assert_allclose(zero.pre.mean, jax.nn.sigmoid(GRID), rtol=1e-6)
  np.testing.assert_array_equal(zero.pre.var, 0)
  one = montecarlo.exact_moments("sigmoid", GRID, rate=1.0)
  np.testing.assert_array_equal(one.pre.mean, 0.5)  # f(0): every unit dropped
  np.testing.assert_array_equal(one.post.mean, 0.0)
  np.testing.assert_array_equal(one.pre.var, 0.0)


def test_exact_moments_under_jit_and_vmap_over_rates_equal_eager():
  rates = jnp.array([0.1, 0.5, 0.9])
  eager = [montecarlo.exact_moments("gelu", GRID, rate=float(r)) for r in rates]
  jitted = jax.jit(lambda r: montecarlo.exact_moments("gelu", GRID, rate=r))
  mapped = jax.vmap(lambda r: montecarlo.exact_moments("gelu", GRID, rate=r))(rates)
  # gelu(-3) ~ -0.0036 comes from 1 + tanh(-0.9976...): XLA's fusion context moves it by a
  # few ulps of the terms (~3e-7 absolute), hence the absolute tolerance.
  for i, (r, want) in enumerate(zip(rates, eager, strict=True)):
    got = jitted(r)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(mapped), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(a[i], b, rtol=1e-6, atol=1e-6)
  bad = jax.jit(lambda r: montecarlo.exact_moments("gelu", GRID, rate=r))(1.5)
  assert np.isnan(bad.pre.mean).all() and np.isnan(bad.post.var).all()


# ----------------------------------------------------------------------------
# Gaussian pre-activations (Gauss-Hermite) and layer studies.


def relu_gaussian(mu: float, sigma: float) -> tuple[float, float]:
  """E relu(X) and E relu(X)^2 for X ~ N(mu, sigma^2), in closed form."""
  t = mu / sigma
  cdf, pdf = scipy.stats.norm.cdf(t), scipy.stats.norm.pdf(t)
  return mu * cdf + sigma * pdf, (mu * mu + sigma * sigma) * cdf + mu * sigma * pdf


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_li_variance_shift_is_one_over_q_for_zero_mean_linear_units(rate):
  out = montecarlo.gaussian_shift("identity", mu=0.0, sigma=2.0, rate=rate)
  for shift in out:
    np.testing.assert_allclose(shift.var_ratio, 1 / (1 - rate), rtol=1e-6)
    np.testing.assert_allclose(shift.mean_shift, 0.0, atol=1e-6)
  # With a mean mu the pre-activation variance shifts by (mu^2 + s^2) / (q s^2) - mu^2 / s^2.
  shifted = montecarlo.gaussian_shift("identity", mu=1.5, sigma=2.0, rate=rate)
  q = 1 - rate
  np.testing.assert_allclose(shifted.pre.var_ratio, (1.5**2 + 4) / (q * 4) - 1.5**2 / 4, rtol=1e-6)


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (0.7, 0.5), (-2.0, 1.5)])
def test_relu_with_its_breakpoint_matches_the_closed_form_to_1e_6(mu, sigma):
  rate = 0.3
  q = 1 - rate
  mean, second = relu_gaussian(mu, sigma)
  out = montecarlo.gaussian_shift("relu", mu=mu, sigma=sigma, rate=rate, breakpoints=(0.0,))
  for shift in out:  # relu is homogeneous: both orders are the same here
    np.testing.assert_allclose(shift.eval_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(shift.eval_var, second - mean**2, rtol=1e-6)
    np.testing.assert_allclose(shift.train_mean, mean, rtol=1e-6)
    np.testing.assert_allclose(shift.train_var, second / q - mean**2, rtol=1e-6)
  # Plain Gauss-Hermite across the kink is visibly less accurate, and says so.
  with pytest.warns(RuntimeWarning, match="has not converged"):
    plain = montecarlo.gaussian_shift("relu", mu=mu, sigma=sigma, rate=rate)
  assert abs(float(plain.post.eval_mean) - mean) > 1e-5


def test_gauss_hermite_agrees_with_piecewise_quadrature_for_smooth_activations():
  mu, sigma = np.array([-1.0, 0.0, 0.5]), np.array([0.5, 1.0, 1.0])
  for name in ("tanh", "sigmoid"):
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # converged: no warning
      hermite = montecarlo.gaussian_shift(name, mu=mu, sigma=sigma, rate=0.4)
      piecewise = montecarlo.gaussian_shift(name, mu=mu, sigma=sigma, rate=0.4, breakpoints=(0.0,))
    leaves = [jax.tree.leaves(r) for r in (hermite, piecewise)]
    for a, b in zip(*leaves, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9, err_msg=name)


def test_a_steep_activation_warns_and_its_breakpoint_restores_1e_6():
  mu, sigma, rate = 0.5, 3.0, 0.4  # tanh(x / q) is nearly a step on the scale of sigma
  with pytest.warns(RuntimeWarning, match=r"gaussian_shift: the quadrature has not converged"):
    montecarlo.gaussian_shift("tanh", mu=mu, sigma=sigma, rate=rate)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    out = montecarlo.gaussian_shift("tanh", mu=mu, sigma=sigma, rate=rate, breakpoints=(0.0,))
  q = 1 - rate
  kept, _ = scipy.integrate.quad(
    lambda t: np.tanh((mu + sigma * t) / q) * scipy.stats.norm.pdf(t), -40, 40, points=[0.0],
    limit=500, epsabs=1e-14,
  )  # fmt: skip
  np.testing.assert_allclose(out.pre.train_mean, q * kept, rtol=1e-6)


@functools.cache
def gaussian_samples(rate: float, n: int = 2**20):
  """Direct samples of both orders of tanh on x ~ N(0.5, 1.5^2), eval-mode tanh(x) too."""
  kx, km = jax.random.split(jax.random.key(11))
  x = 0.5 + 1.5 * jax.random.normal(kx, (n,))
  mask = jdrop.keep_mask(km, (n,), rate=rate)
  pre = jnp.tanh(jdrop.apply_mask(x, mask, rate=rate))
  post = jdrop.apply_mask(jnp.tanh(x), mask, rate=rate)
  return {k: np.asarray(v, np.float64) for k, v in dict(pre=pre, post=post).items()}


def sample_z(samples: np.ndarray, mean: float, var: float) -> np.ndarray:
  """z-scores of the sample mean and variance against (mean, var)."""
  n = samples.size
  centred = samples - samples.mean()
  mu4 = np.mean(centred**4)
  z_mean = (samples.mean() - mean) / math.sqrt(var / n)
  z_var = (samples.var(ddof=1) - var) / math.sqrt((mu4 - var**2) / n)
  return np.array([z_mean, z_var])


@pytest.mark.parametrize("order", ["pre", "post"])
def test_gaussian_shift_matches_direct_sampling_and_rejects_a_wrong_rate(order):
  samples = gaussian_samples(0.4)[order]
  shift = functools.partial(
    montecarlo.gaussian_shift, "tanh", mu=0.5, sigma=1.5, breakpoints=(0.0,)
  )
  right, wrong = getattr(shift(rate=0.4), order), getattr(shift(rate=0.42), order)
  z = sample_z(samples, float(right.train_mean), float(right.train_var))
  assert stats_util.chi2_sum_pvalue(z) > ALPHA, z
  z = sample_z(samples, float(wrong.train_mean), float(wrong.train_var))
  assert stats_util.chi2_sum_pvalue(z) < ALPHA, z


def standardized(data: np.ndarray) -> jax.Array:
  data = np.asarray(data, np.float64)
  return jnp.asarray((data - data.mean(0)) / data.std(0), jnp.float32)


def test_variance_shift_of_standardized_units_is_one_over_q_before_a_normalisation():
  h = standardized(np.random.default_rng(0).exponential(size=(500, 6)))  # skewed units
  for rate in (0.2, 0.5):
    shifts = montecarlo.variance_shift(montecarlo.exact_moments("identity", h, rate=rate))
    for shift in shifts:
      np.testing.assert_allclose(shift.var_ratio, 1 / (1 - rate), rtol=1e-5)
      np.testing.assert_allclose(shift.mean_shift, 0.0, atol=1e-6)
  # A non-linear unit: pre-activation dropout also shifts the mean, post does not.
  tanh = montecarlo.variance_shift(montecarlo.exact_moments("tanh", h, rate=0.5))
  assert (np.abs(tanh.pre.mean_shift) > 1e-3).all()
  np.testing.assert_allclose(tanh.post.mean_shift, 0.0, atol=1e-6)
  assert (tanh.pre.var_ratio < tanh.post.var_ratio).all()


def test_variance_shift_through_a_linear_layer_matches_sampled_masks():
  rng = np.random.default_rng(1)
  h = standardized(rng.normal(size=(256, 4)))
  w = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  rate, masks_per_row = 0.5, 256
  exact = montecarlo.variance_shift(montecarlo.exact_moments("tanh", h, rate=rate), weights=w)
  # Brute force: every row under its own masks, through f and the linear layer.
  keys = jax.random.split(jax.random.key(5), masks_per_row)
  kept = jax.vmap(lambda k: jdrop.keep_mask(k, h.shape, rate=rate))(keys)
  pre = jnp.tanh(jax.vmap(lambda m: jdrop.apply_mask(h, m, rate=rate))(kept)) @ w
  post = jax.vmap(lambda m: jdrop.apply_mask(jnp.tanh(h), m, rate=rate))(kept) @ w
  for got, shift in ((pre, exact.pre), (post, exact.post)):
    samples = np.asarray(got, np.float64).reshape(-1, 3)
    # ~65k samples: the variance estimate has a relative standard error of about 1%.
    np.testing.assert_allclose(samples.var(0), shift.train_var, rtol=0.05)
    np.testing.assert_allclose(samples.mean(0), shift.train_mean, atol=0.05)
  np.testing.assert_allclose(exact.post.eval_var, np.var(np.asarray(jnp.tanh(h) @ w), 0), rtol=1e-4)
  # The Monte-Carlo moments give the same study.
  sampled = montecarlo.compare_orders(KEY, "tanh", h, rate=rate, num_masks=200)
  mc_shift = montecarlo.variance_shift(sampled, weights=w)
  np.testing.assert_allclose(mc_shift.pre.var_ratio, exact.pre.var_ratio, rtol=0.05)


def test_dense_preactivations_of_standardized_data():
  data = jnp.asarray(np.random.default_rng(2).uniform(0, 16, size=(300, 64)), jnp.float32)
  data = data.at[:, 0].set(3.0)  # a constant column (digits has them) must not give NaN
  h = montecarlo.dense_preactivations(jax.random.key(0), data, features=32)
  assert h.shape == (300, 32) and bool(jnp.isfinite(h).all())
  np.testing.assert_allclose(jnp.mean(h), 0.0, atol=1e-5)
  assert 0.5 < float(jnp.mean(jnp.var(h, axis=0))) < 1.5  # lecun normal: about 1
  again = montecarlo.dense_preactivations(jax.random.key(0), data, features=32)
  np.testing.assert_array_equal(h, again)


def test_load_digits_needs_scikit_learn(monkeypatch):
  monkeypatch.setitem(__import__("sys").modules, "sklearn", None)
  with pytest.raises(ImportError, match=r"load_digits: needs scikit-learn.*pip install"):
    montecarlo.load_digits()


def test_digits_study_when_scikit_learn_is_installed():
  pytest.importorskip("sklearn")
  data = montecarlo.load_digits()
  assert data.shape == (1797, 64)
  h = montecarlo.dense_preactivations(jax.random.key(0), data, features=16)
  shifts = montecarlo.variance_shift(montecarlo.exact_moments("relu", h, rate=0.5))
  assert (shifts.post.var_ratio > 1).all()


# ----------------------------------------------------------------------------
# Bad input.

FN = "jdrop.montecarlo.compare_orders"


@pytest.mark.parametrize(
  "kwargs, error, needle",
  [
    (dict(num_masks=0), ValueError, "`num_masks` must be a positive integer of at most"),
    (dict(num_masks=-3), ValueError, "`num_masks` must be a positive integer"),
    (dict(num_masks=2.5), TypeError, "`num_masks` must be a positive integer, got 2.5"),
    (dict(num_masks=True), TypeError, "`num_masks` must be a positive integer, got True"),
    (dict(num_masks="10"), TypeError, "`num_masks` must be a positive integer"),
    (dict(num_masks=2**31), ValueError, "at most 2147483647"),
    (dict(x=jnp.arange(3)), TypeError, "`x` must have a floating-point dtype"),
    (dict(x="abc"), TypeError, "`x` must"),
    (dict(rate=1.5), ValueError, "`rate` must be a drop probability in [0, 1], got 1.5"),
    (dict(rate="a"), TypeError, "`rate` must be a real scalar"),
    (dict(f="nope"), ValueError, "`activation` is not a registered activation"),
    (dict(f=3), TypeError, "`activation` must be a callable or a registry name"),
    (dict(f=jnp.sum), ValueError, "`activation` must map x of shape (4,)"),
    (dict(rtol=-1.0), ValueError, "`rtol` must be a finite non-negative number"),
    (dict(rtol=float("nan")), ValueError, "`rtol` must be a finite"),
    (dict(chunk_size=0), ValueError, "`chunk_size` must be a positive integer"),
    (dict(devices=[]), TypeError, "`devices` must be a non-empty sequence of jax.Device"),
    (dict(devices=["cpu"]), TypeError, "`devices` must be a non-empty sequence"),
    (dict(progress=5), TypeError, "`progress` must be a callable or None"),
    (dict(key=jnp.zeros(2)), TypeError, "`key` must be a PRNG key"),
  ],
)
def test_bad_input_names_the_function_the_argument_and_the_value(kwargs, error, needle):
  args = dict(key=KEY, f="tanh", x=jnp.ones(4), rate=0.5, num_masks=10) | kwargs
  key, f, x = args.pop("key"), args.pop("f"), args.pop("x")
  with pytest.raises(error) as exc:
    montecarlo.compare_orders(key, f, x, **args)
  message = str(exc.value)
  assert message.startswith(FN + ": `") or message.startswith("jdrop.activations"), message
  assert needle in message, message


def test_compare_orders_refuses_to_be_traced():
  with pytest.raises(TypeError, match=r"compare_orders: `x` must be a concrete value.*outside jit"):
    jax.jit(lambda v: montecarlo.compare_orders(KEY, "tanh", v, rate=0.5, num_masks=2))(GRID)


@pytest.mark.parametrize(
  "kwargs, needle",
  [
    (dict(sigma=0.0), "`sigma` must be positive and finite"),
    (dict(sigma=-1.0), "`sigma` must be positive"),
    (dict(mu=float("inf")), "`sigma` must be positive and finite (with a finite mu)"),
    (dict(degree=0), "`degree` must be a positive integer of at most 256"),
    (dict(degree=1000), "`degree` must be a positive integer of at most 256"),
    (dict(breakpoints=(float("inf"),)), "`breakpoints` must be finite"),
    (dict(breakpoints="x"), "must be real numbers"),
    (dict(rate=2.0), "`rate` must be a drop probability"),
  ],
)
def test_gaussian_shift_bad_input(kwargs, needle):
  args = dict(mu=0.0, sigma=1.0, rate=0.5) | kwargs
  with pytest.raises((ValueError, TypeError)) as exc:
    montecarlo.gaussian_shift("tanh", **args)
  assert str(exc.value).startswith("jdrop.montecarlo.gaussian_shift: ") and needle in str(exc.value)


def test_variance_shift_bad_input():
  fn = "jdrop.montecarlo.variance_shift: "
  with pytest.raises(TypeError, match=fn + "`moments` must be the result of exact_moments"):
    montecarlo.variance_shift(GRID)
  with pytest.raises(ValueError, match=fn + r"`moments` must hold statistics of shape \(samples"):
    montecarlo.variance_shift(montecarlo.exact_moments("tanh", GRID, rate=0.5))
  moments = montecarlo.exact_moments("tanh", GRID.reshape(13, 1), rate=0.5)
  with pytest.raises(ValueError, match=fn + r"`weights` must have shape \(units, outputs\)"):
    montecarlo.variance_shift(moments, weights=jnp.ones((2, 3)))


# ----------------------------------------------------------------------------
# The rendezvous of several processes (threads here; real processes in the other file).


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def rendezvous_all(port: int, hellos: list[dict], timeout: float = 10.0) -> list:
  """Runs a rendezvous per hello in threads (process 0 first); the exception or None of each."""
  results: list = [None] * len(hellos)

  def one(i: int) -> None:
    try:
      mc_src.rendezvous(f"127.0.0.1:{port}", timeout=timeout, **hellos[i])
    except Exception as err:  # collected for the assertions
      results[i] = err

  threads = [threading.Thread(target=one, args=(i,)) for i in range(len(hellos))]
  for thread in threads:
    thread.start()
    time.sleep(0.05)
  for thread in threads:
    thread.join(timeout + 5)
  return results


def test_rendezvous_of_agreeing_processes():
  study = {"activation": "tanh", "rate": 0.5}
  hellos = [dict(num_processes=3, process_id=i, study=study) for i in (0, 2, 1)]
  assert rendezvous_all(free_port(), hellos) == [None, None, None]


@pytest.mark.parametrize(
  "hellos, error, needle",
  [
    (
      [dict(num_processes=2, process_id=0), dict(num_processes=3, process_id=1)],
      ValueError,
      "mismatched process counts: process 1 was started with num_processes=3, process 0"
      " with num_processes=2",
    ),
    (
      [dict(num_processes=3, process_id=0), *[dict(num_processes=3, process_id=1)] * 2],
      ValueError,
      "two processes were started with process_id=1",
    ),
    (
      [dict(num_processes=2, process_id=0, study={"rate": 0.5, "x": [1.0]}),
       dict(num_processes=2, process_id=1, study={"rate": 0.4, "x": [1.0]})],
      ValueError,
      "process 1 runs a different study from process 0 (they differ in rate)",
    ),
  ],
)  # fmt: skip
def test_rendezvous_refuses_processes_that_disagree(hellos, error, needle):
  results = rendezvous_all(free_port(), hellos)
  assert all(isinstance(r, error) for r in results[:2]), results
  for r in results[:2]:
    assert str(r).startswith("jdrop.montecarlo.initialize: ") and needle in str(r), r


def test_rendezvous_times_out_instead_of_hanging():
  port = free_port()
  start = time.monotonic()
  with pytest.raises(TimeoutError, match=f"could not reach the coordinator at 127.0.0.1:{port}"):
    mc_src.rendezvous(f"127.0.0.1:{port}", num_processes=2, process_id=1, timeout=0.5)
  results = rendezvous_all(
    port, [dict(num_processes=3, process_id=0), dict(num_processes=3, process_id=1)], timeout=1.0
  )
  assert time.monotonic() - start < 8
  assert all(isinstance(r, TimeoutError) for r in results), results
  assert "only 1 of the 2 other processes joined within 1 s (missing process ids: [2])" in str(
    results[0]
  )


def test_rendezvous_reports_a_busy_port():
  with socket.socket() as busy:
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    with pytest.raises(OSError, match=f"process 0 cannot listen on 127.0.0.1:{port}"):
      mc_src.rendezvous(f"127.0.0.1:{port}", num_processes=2, process_id=0, timeout=1.0)


@pytest.mark.parametrize(
  "kwargs, error, needle",
  [
    (dict(coordinator_address="nohost"), ValueError, "`coordinator_address` must be HOST:PORT"),
    (dict(coordinator_address="h:99999"), ValueError, "`coordinator_address` must be HOST:PORT"),
    (dict(num_processes=0), ValueError, "`num_processes` must be a positive integer"),
    (dict(process_id=2), ValueError, "`process_id` must be in 0..1 for num_processes=2, got 2"),
    (dict(process_id=-1), ValueError, "`process_id` must be in 0..1"),
    (dict(process_id=1.0), TypeError, "`process_id` must be an integer"),
    (dict(timeout=0), ValueError, "`timeout` must be a finite positive number"),
  ],
)
def test_initialize_bad_arguments(kwargs, error, needle):
  args = dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=0) | kwargs
  address = args.pop("coordinator_address")
  with pytest.raises(error) as exc:
    montecarlo.initialize(address, **args)
  assert str(exc.value).startswith("jdrop.montecarlo.initialize: ") and needle in str(exc.value)


# ----------------------------------------------------------------------------
# The command line, through a parser built as python -m jdrop builds it.


def run_cli(argv: list[str]) -> int:
  return cli_mc.main(argv)


def test_mc_writes_the_json_the_issue_specifies(tmp_path, capsys):
  path = tmp_path / "out.json"
  argv = ["mc", "tanh", "--rate", "0.5", "--num-masks", "3000", "--x", "-1", "0", "2"]
  assert run_cli([*argv, "--json", str(path)]) == 0
  data = json.loads(path.read_text())
  for key in ("activation", "rate", "num_masks", "x", "pre", "post", "reference"):
    assert key in data
  assert "mismatch_fraction" in data and set(data["pre"]) == {"mean", "var", "stderr"}
  assert (data["activation"], data["rate"], data["num_masks"], data["x"]) == (
    "tanh",
    0.5,
    3000,
    [-1.0, 0.0, 2.0],
  )
  direct = montecarlo.compare_orders(
    jax.random.key(0), "tanh", jnp.array([-1.0, 0.0, 2.0]), rate=0.5, num_masks=3000
  )
  np.testing.assert_allclose(data["pre"]["mean"], direct.pre.mean, rtol=1e-6)
  np.testing.assert_allclose(data["post"]["var"], direct.post.var, rtol=1e-6)
  assert data["mismatch_fraction"] == direct.mismatch_fraction
  np.testing.assert_allclose(data["exact"]["pre"]["mean"], [-0.48201, 0.0, 0.49966], atol=1e-5)
  out = capsys.readouterr()
  assert "tanh, rate 0.5: 3000 masks" in out.out and "the orders disagree" in out.out
  assert out.err == ""  # no progress bar when stderr is not a terminal
  # An existing file is not overwritten without --force.
  assert run_cli([*argv, "--json", str(path)]) == 2
  err = capsys.readouterr().err.strip()
  assert "exists; pass --force to overwrite it" in err and len(err.splitlines()) == 1
  assert run_cli([*argv, "--json", str(path), "--force"]) == 0


def test_mc_of_a_non_elementwise_activation_enumerates_small_inputs_only(tmp_path, capsys):
  path = tmp_path / "softmax.json"
  argv = ["mc", "softmax", "--rate", "0.2", "--num-masks", "20000", "--json", str(path)]
  assert run_cli(argv) == 0
  data = json.loads(path.read_text())  # 7 inputs: 2**7 masks, enumerated exactly
  pre, exact = data["pre"], data["exact"]["pre"]
  np.testing.assert_allclose(pre["mean"], exact["mean"], atol=5 * max(pre["stderr"]))
  x = [str(v) for v in range(17)]  # 2**17 masks: no exact values
  assert run_cli([*argv, "--force", "--num-masks", "50", "--x", *x]) == 0
  assert json.loads(path.read_text())["exact"] is None
  capsys.readouterr()


@pytest.mark.parametrize(
  "argv, needle",
  [
    (["--rate", "1.5"], "rate must be a drop probability in [0, 1], got '1.5'"),
    (["--num-masks", "0"], "must be a positive integer of at most 2147483647, got '0'"),
    (["--num-masks", "1e3"], "must be a positive integer"),
    (["--x", "abc"], "argument --x: must be a finite float32 number"),
    (["--x", "nan"], "must be a finite float"),
    (["--process-id", "0"], "--coordinator, --num-processes and --process-id go together"),
    (
      ["--coordinator", "127.0.0.1:5", "--num-processes", "2", "--process-id", "2"],
      "--process-id must be in 0..1 for --num-processes 2, got 2",
    ),
    (
      ["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"],
      "argument --coordinator: must be HOST:PORT",
    ),
    (["--json", "/no/such/folder/x.json"], "the folder /no/such/folder does not exist"),
  ],
)
def test_mc_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
  base = {"--rate": "0.5", "--num-masks": "10"}
  for flag in argv:
    base.pop(flag, None)
  full = ["mc", "tanh", *[v for item in base.items() for v in item], *argv]
  try:
    status = run_cli(full)
  except SystemExit as exc:
    status = exc.code
  assert status == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1, err


def test_mc_unknown_activation_is_one_line(capsys):
  assert run_cli(["mc", "tanhh", "--rate", "0.5", "--num-masks", "10"]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert "`activation` is not a registered activation, got 'tanhh'. Did you mean 'tanh'" in err


def test_mc_unreachable_coordinator_fails_within_the_timeout(capsys):
  port = free_port()
  argv = ["mc", "tanh", "--rate", "0.5", "--num-masks", "10", "--coordinator"]
  argv += [f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "1", "--timeout", "0.5"]
  start = time.monotonic()
  assert run_cli(argv) == 1
  # Far below JAX's own 300 s: the 0.5 s wait plus a supervised child that imports JAX (2-6 s
  # on a loaded 2-core machine; 5 s was once exceeded there).
  assert time.monotonic() - start < 12
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1
  assert f"could not reach the coordinator at 127.0.0.1:{port} within 0.5 s" in err


class FakeTerminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_progress_bar_only_on_a_terminal():
  terminal = FakeTerminal()
  bar = cli_mc.ProgressBar(terminal, "mc tanh")
  montecarlo.compare_orders(
    KEY, "tanh", GRID, rate=0.5, num_masks=5000, chunk_size=10, progress=bar
  )
  text = terminal.getvalue()
  assert bar.enabled and text.count("\r") > 10 and "100% 5000/5000 masks" in text
  assert text.endswith("\n")
  assert not cli_mc.ProgressBar(io.StringIO(), "mc").enabled


def test_mc_is_registered_in_python_m_jdrop(capsys):
  # Needs the two lines in cli.py that register cli_mc (add_parser and run).
  assert cli.main(["mc", "relu", "--rate", "0.5", "--num-masks", "20"]) == 0
  assert "relu, rate 0.5: 20 masks" in capsys.readouterr().out


def test_parser_is_built_the_way_python_m_jdrop_builds_it():
  parser = cli_args.Parser(prog="python -m jdrop")
  sub = parser.add_subparsers(dest="command", required=True, parser_class=cli_args.Parser)
  mc = cli_mc.add_parser(sub)
  assert isinstance(mc, argparse.ArgumentParser)
  args = parser.parse_args(["mc", "gelu", "--rate", "0.1", "--num-masks", "7"])
  assert (args.command, args.activation, args.rate, args.num_masks) == ("mc", "gelu", 0.1, 7)
  assert args.x == list(cli_mc.DEFAULT_X) and args.json is None and args.timeout == 60.0
