"""Statistical tests of the dropout family, in the style of JAX's ``tests/random_lax_test.py``.

Every test draws from a fixed key, runs the function eagerly and under ``jax.jit`` (with
the rate traced, so one compilation serves every rate), and compares a statistic with its
null distribution at the significance level ``ALPHA = 1e-4`` (see ``stats_util.py``). Next
to each test is its statistic and null distribution.

Every test has a companion, named ``..._rejects_...``: the same statistic on the same
samples, evaluated against a deliberately wrong parameter (a keep probability off by 0.02,
the rate and the keep probability swapped, alpha dropout without its affine correction, a
keep probability rounded to bfloat16), must reject at the same ``ALPHA``. A test that
cannot reject a wrong parameter tests nothing.

Samples are drawn once per (mode, rate) and cached, so a test and its companions share them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
import stats_util
from stats_util import ALPHA
from stats_util import MODES
from stats_util import run

import jdrop

N = 2**20  # draws per sample; most samples have this shape, so eager ops compile once

# A keep probability off by 0.02 is the usual wrong parameter; with N draws the binomial
# standard error of a keep fraction is at most 0.5 / 2**10 = 4.9e-4, so 0.02 is > 40 of them.
OFF = 0.02


def wrong_keeps(rate: float) -> dict[str, float]:
  """Deliberately wrong keep probabilities for a test at ``rate``, by name."""
  keep = 1 - rate
  if rate < OFF:  # off by 0.02 would be a different regime; take the rate off by half
    wrong = {"rate*1.5": 1 - 1.5 * rate}
  else:
    wrong = {"keep+0.02": keep + OFF, "keep-0.02": keep - OFF}
  if rate != 0.5:
    wrong["keep=rate"] = rate  # the rate/keep confusion (invisible at 0.5)
  return wrong


def wrong_cases(rates: tuple[float, ...]) -> list:
  return [
    pytest.param(rate, name, id=f"{rate}-{name}") for rate in rates for name in wrong_keeps(rate)
  ]


# ----------------------------------------------------------------------------
# 1. The keep fraction of jdrop.keep_mask.

KEEP_RATES = (0.1, 0.5, 0.9, 1e-3)  # 1e-3: about 1049 expected drops in N draws


def _keep_mask(key, rate):
  return jdrop.keep_mask(key, (N,), rate=rate)


@functools.cache
def _keep_masks(mode: str, rate: float) -> np.ndarray:
  return np.asarray(run(mode, _keep_mask, jax.random.key(1), rate))


def _kept_count(mode: str, rate: float) -> int:
  return int(np.count_nonzero(_keep_masks(mode, rate)))


@pytest.mark.parametrize("rate", KEEP_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_keep_fraction(mode, rate):
  # The number of kept units ~ Binomial(N, 1 - rate); exact two-sided binomial test.
  assert stats_util.binomial_pvalue(_kept_count(mode, rate), N, 1 - rate) > ALPHA


@pytest.mark.parametrize(("rate", "wrong"), wrong_cases(KEEP_RATES))
@pytest.mark.parametrize("mode", MODES)
def test_keep_fraction_rejects_wrong_keep(mode, rate, wrong):
  keep = wrong_keeps(rate)[wrong]
  assert stats_util.binomial_pvalue(_kept_count(mode, rate), N, keep) < ALPHA


# Independence: the 2x2 table of non-overlapping pairs of neighbours (i.e. independent
# pairs under the null) against the law of two independent Bernoulli(1 - rate) units.
# Pearson's statistic ~ chi2(3) asymptotically (>= 5.2e5 pairs, smallest cell >= 5.2e3).
# Neighbours are adjacent in a row and in a column of the (N,) mask read as (1024, 1024)
# (row-major, as keep_mask orders a 2-D mask), and the same unit under the two keys of a
# jax.random.split.

PAIR_RATES = (0.1, 0.5)
PAIRS = ("row", "column", "split_keys")
PHI = 0.02  # a weak correlation between neighbours that the test must detect


def _two_masks(key, rate):
  return [jdrop.keep_mask(k, (N,), rate=rate) for k in jax.random.split(key)]


@functools.cache
def _pair_tables(mode: str, rate: float) -> dict[str, np.ndarray]:
  masks = [
    np.asarray(m).reshape(1024, 1024) for m in run(mode, _two_masks, jax.random.key(2), rate)
  ]
  first = masks[0]
  return {
    "row": stats_util.pair_table(first[:, 0::2], first[:, 1::2]),
    "column": stats_util.pair_table(first[0::2], first[1::2]),
    "split_keys": stats_util.pair_table(masks[0], masks[1]),
  }


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("rate", PAIR_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_neighbours_independent(mode, rate, pair):
  table = _pair_tables(mode, rate)[pair]
  assert stats_util.pair_chi2_pvalue(table, stats_util.joint_law(1 - rate)) > ALPHA


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("rate", PAIR_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_neighbours_independent_rejects_wrong_law(mode, rate, pair):
  table = _pair_tables(mode, rate)[pair]
  # Keep probability off by 0.02: the marginals are wrong.
  assert stats_util.pair_chi2_pvalue(table, stats_util.joint_law(1 - rate + OFF)) < ALPHA
  # Correlation 0.02 between neighbours: expected statistic about pairs * PHI**2 >= 210.
  assert stats_util.pair_chi2_pvalue(table, stats_util.joint_law(1 - rate, PHI)) < ALPHA


# Rows under broadcast_dims: x of shape (4096, 8, 32) with broadcast_dims=(1,) has 131072
# independent mask values, each shared by the 8 units along axis 1.

BROADCAST_SHAPE = (4096, 8, 32)
BROADCAST_RATE = 0.3


def _broadcast_dropout(key, rate):
  return jdrop.dropout(key, jnp.ones(BROADCAST_SHAPE), rate=rate, broadcast_dims=(1,))


@functools.cache
def _broadcast_kept(mode: str) -> np.ndarray:
  return np.asarray(run(mode, _broadcast_dropout, jax.random.key(3), BROADCAST_RATE)) != 0


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_rows(mode):
  kept = _broadcast_kept(mode)
  keep = 1 - BROADCAST_RATE
  # Exact: one decision per (axis 0, axis 2) position, shared along axis 1.
  np.testing.assert_array_equal(kept, np.broadcast_to(kept[:, :1], kept.shape))
  rows = kept[:, 0, :]
  # The number of kept rows ~ Binomial(131072, keep); exact binomial test.
  assert stats_util.binomial_pvalue(rows.sum(), rows.size, keep) > ALPHA
  # Neighbouring rows along axes 2 and 0: chi2(3) test of independence as above.
  law = stats_util.joint_law(keep)
  assert (
    stats_util.pair_chi2_pvalue(stats_util.pair_table(rows[:, 0::2], rows[:, 1::2]), law) > ALPHA
  )
  assert stats_util.pair_chi2_pvalue(stats_util.pair_table(rows[0::2], rows[1::2]), law) > ALPHA


@pytest.mark.parametrize("mode", MODES)
def test_broadcast_rows_rejects_wrong(mode):
  kept = _broadcast_kept(mode)
  keep = 1 - BROADCAST_RATE
  rows = kept[:, 0, :]
  assert stats_util.binomial_pvalue(rows.sum(), rows.size, keep + OFF) < ALPHA
  # Neighbours along the broadcast axis share their mask value: far from independent.
  shared = stats_util.pair_table(kept[:, 0::2, :], kept[:, 1::2, :])
  assert stats_util.pair_chi2_pvalue(shared, stats_util.joint_law(keep)) < ALPHA


# ----------------------------------------------------------------------------
# 2. Unbiasedness of jdrop.dropout: E[D(x)] = x for each element, over many masks.

MEAN_RATES = (0.1, 0.5, 0.9)
NUM_MASKS = 2**12
# 256 fixed inputs, |x| from 0.25 to 4, both signs.
MEAN_X = np.linspace(0.25, 4.0, 256, dtype=np.float32) * np.resize(np.float32([1, -1]), 256)


def _dropout_many(key, rate):
  keys = jax.random.split(key, NUM_MASKS)
  return jax.vmap(lambda k: jdrop.dropout(k, MEAN_X, rate=rate))(keys)


@functools.cache
def _dropout_means(mode: str, rate: float) -> np.ndarray:
  samples = run(mode, _dropout_many, jax.random.key(4), rate)
  return np.mean(np.asarray(samples, np.float64), axis=0)


def _mean_z(means: np.ndarray, expected: np.ndarray, rate: float) -> np.ndarray:
  # Var D(x)_j = x_j**2 * rate / (1 - rate), so the mean of NUM_MASKS draws has this error:
  std_error = np.abs(MEAN_X) * np.sqrt(rate / (1 - rate) / NUM_MASKS)
  return (means - expected) / std_error


@pytest.mark.parametrize("rate", MEAN_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_dropout_unbiased(mode, rate):
  # z_j = (mean_j - x_j) / (|x_j| sqrt(rate / (1 - rate) / NUM_MASKS)) ~ N(0, 1) for each of
  # the 256 elements (CLT; each mean is a scaled Binomial(2**12, 1 - rate)); the masks are
  # independent across elements, so sum z_j**2 ~ chi2(256).
  z = _mean_z(_dropout_means(mode, rate), MEAN_X, rate)
  assert stats_util.chi2_sum_pvalue(z) > ALPHA


@pytest.mark.parametrize(("rate", "wrong"), wrong_cases(MEAN_RATES))
@pytest.mark.parametrize("mode", MODES)
def test_dropout_unbiased_rejects_wrong_scale(mode, rate, wrong):
  # The mean of a dropout that scaled kept units by 1 / wrong_keep: x (1 - rate) / wrong_keep.
  expected = MEAN_X * (1 - rate) / wrong_keeps(rate)[wrong]
  z = _mean_z(_dropout_means(mode, rate), expected, rate)
  assert stats_util.chi2_sum_pvalue(z) < ALPHA


# bfloat16: the keep probability must stay float32. At rate 0.002 the keep probability
# 0.998 rounds to 0.99609375 in bfloat16, nearly doubling the drop rate. The output is
# bfloat16, so a kept unit is v = bf16(x / 0.998), scaled in float32 and rounded once.

BF16_RATE = 0.002
BF16_KEEP = 1 - BF16_RATE
BF16_KEEP_ROUNDED = float(jnp.bfloat16(BF16_KEEP))  # 0.99609375
BF16_MASKS = NUM_MASKS
BF16_X = np.asarray(jnp.asarray(MEAN_X, jnp.bfloat16))


def _bf16_scaled(keep: float) -> np.ndarray:
  """bf16(x / keep) as float64: the value of a kept unit when the scale uses ``keep``."""
  scaled = BF16_X.astype(np.float32) / np.float32(keep)
  return np.asarray(jnp.asarray(scaled, jnp.bfloat16), np.float64)


def _bf16_dropout_many(key, rate):
  keys = jax.random.split(key, BF16_MASKS)
  return jax.vmap(lambda k: jdrop.dropout(k, jnp.asarray(BF16_X), rate=rate))(keys)


@functools.cache
def _bf16_stats(mode: str) -> tuple[np.ndarray, int]:
  samples = run(mode, _bf16_dropout_many, jax.random.key(5), BF16_RATE)
  assert samples.dtype == jnp.bfloat16
  samples = np.asarray(samples).astype(np.float64)
  return samples.mean(axis=0), int(np.count_nonzero(samples))


def _bf16_pvalues(mode: str, mask_keep: float, scale_keep: float) -> tuple[float, float]:
  """The keep-count and mean tests against masks kept with ``mask_keep``, scaled by ``scale_keep``.

  Kept units: Binomial(BF16_MASKS * 256, mask_keep), exact binomial test. Means: each
  unit is v_j with probability mask_keep, else 0, so z_j = (mean_j - mask_keep v_j) /
  (|v_j| sqrt(mask_keep (1 - mask_keep) / BF16_MASKS)) ~ N(0, 1) and sum z_j**2 ~ chi2(256).
  """
  means, kept = _bf16_stats(mode)
  count_p = stats_util.binomial_pvalue(kept, BF16_MASKS * BF16_X.size, mask_keep)
  value = _bf16_scaled(scale_keep)
  std_error = np.abs(value) * np.sqrt(mask_keep * (1 - mask_keep) / BF16_MASKS)
  return count_p, stats_util.chi2_sum_pvalue((means - mask_keep * value) / std_error)


@pytest.mark.parametrize("mode", MODES)
def test_dropout_unbiased_bf16(mode):
  # E[D(x)] = 0.998 bf16(x / 0.998) = x up to the output's one rounding.
  count_p, mean_p = _bf16_pvalues(mode, BF16_KEEP, BF16_KEEP)
  assert count_p > ALPHA
  assert mean_p > ALPHA


@pytest.mark.parametrize("rounded", ["mask", "scale"])
@pytest.mark.parametrize("mode", MODES)
def test_dropout_unbiased_bf16_rejects_rounded_keep(mode, rounded):
  # The keep probability rounded to bf16 in the mask (the mean falls by 0.19%, the drop
  # count doubles), or in the scale as in x / keep computed in bf16 (the mean rises 0.19%).
  if rounded == "mask":
    count_p, mean_p = _bf16_pvalues(mode, BF16_KEEP_ROUNDED, BF16_KEEP)
    assert count_p < ALPHA
  else:
    _, mean_p = _bf16_pvalues(mode, BF16_KEEP, BF16_KEEP_ROUNDED)
  assert mean_p < ALPHA


# ----------------------------------------------------------------------------
# 3. Alpha dropout keeps mean 0 and variance 1 for x ~ N(0, 1).

ALPHA_RATES = (0.05, 0.1, 0.3)


@functools.cache
def selu_constants_from_jax() -> tuple[float, float]:
  """(scale, alpha) read off jax.nn.selu in float64: selu(1) = scale, selu(-50) = -scale alpha."""
  with jax.enable_x64(True):
    scale = float(jax.nn.selu(jnp.float64(1.0)))
    alpha = -float(jax.nn.selu(jnp.float64(-50.0))) / scale  # exp(-50) < 1e-21
  return scale, alpha


def test_selu_constants_match_jax():
  expected = selu_constants_from_jax()
  np.testing.assert_allclose(jdrop.selu_constants(), expected, rtol=0, atol=1e-12)
  # The tolerance is tight enough to catch constants rounded to float32 (errors ~1e-8).
  rounded = np.float32(expected).astype(np.float64)
  assert np.max(np.abs(rounded - np.asarray(expected))) > 1e-12


@functools.cache
def standard_normal() -> jax.Array:
  """N draws from N(0, 1), the input of the alpha dropout and variance-ratio tests."""
  return jax.random.normal(jax.random.key(0), (N,))


def _alpha_dropout(key, x, rate):
  return jdrop.alpha_dropout(key, x, rate=rate), jdrop.keep_mask(key, (N,), rate=rate)


@functools.cache
def _alpha_moments(mode: str, rate: float) -> dict[str, tuple[float, float, float]]:
  """(mean, variance, standard error of the variance) of alpha dropout and of wrong versions.

  The wrong versions are built here, in float64, from x and a mask drawn from the same
  key (the test does not rely on it being alpha dropout's own mask):
  ``no_shift`` is a (m x + (1 - m) s) without + b; ``no_affine`` is m x + (1 - m) s;
  ``plain_dropout`` is saturation 0 without correction, m x / (1 - rate).
  """
  x = standard_normal()
  out, mask = (np.asarray(a) for a in run(mode, _alpha_dropout, jax.random.key(6), x, rate))
  x = np.asarray(x, np.float64)
  scale, alpha = selu_constants_from_jax()
  saturation = -scale * alpha
  keep = 1 - rate
  a = (keep + saturation**2 * keep * rate) ** -0.5  # Klambauer et al. 2017
  no_affine = np.where(mask, x, saturation)
  samples = {
    "alpha_dropout": out,
    "no_shift": a * no_affine,
    "no_affine": no_affine,
    "plain_dropout": np.where(mask, x / keep, 0.0),
  }
  moments = {}
  for name, y in samples.items():
    var, var_error = stats_util.variance_std_error(y)
    moments[name] = (float(np.mean(y, dtype=np.float64)), var, var_error)
  return moments


def _alpha_pvalues(mode: str, rate: float, name: str) -> dict[str, float]:
  """Mean: z = mean sqrt(N) ~ N(0, 1), since Var(mean) = 1 / N under the null.

  Variance: z = (s**2 - 1) / sqrt((m4 - s**4) / N) ~ N(0, 1) asymptotically, with m4 the
  sample's fourth central moment.
  """
  mean, var, var_error = _alpha_moments(mode, rate)[name]
  return {
    "mean": stats_util.z_pvalue(mean, 0.0, np.sqrt(1 / N)),
    "variance": stats_util.z_pvalue(var, 1.0, var_error),
  }


@pytest.mark.parametrize("rate", ALPHA_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_alpha_dropout_fixed_point(mode, rate):
  pvalues = _alpha_pvalues(mode, rate, "alpha_dropout")
  assert pvalues["mean"] > ALPHA
  assert pvalues["variance"] > ALPHA


# Which moment each uncorrected version gets wrong (for x ~ N(0, 1), keep q, saturation s):
# without + b the mean is a (1 - q) s; without the affine map the mean is (1 - q) s and the
# variance q + s**2 q (1 - q); plain dropout has mean 0 but variance 1 / q.
UNCORRECTED = {
  "no_shift": ("mean",),
  "no_affine": ("mean", "variance"),
  "plain_dropout": ("variance",),
}


@pytest.mark.parametrize("version", UNCORRECTED)
@pytest.mark.parametrize("rate", ALPHA_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_alpha_dropout_fixed_point_rejects_uncorrected(mode, rate, version):
  pvalues = _alpha_pvalues(mode, rate, version)
  for moment in UNCORRECTED[version]:
    assert pvalues[moment] < ALPHA, moment


# ----------------------------------------------------------------------------
# 4. Gaussian dropout: y = x eps with eps ~ N(1, rate / (1 - rate)).

GAUSS_RATES = (0.1, 0.5)
GAUSS_X = np.linspace(0.5, 2.0, N, dtype=np.float32)


def _gaussian_dropout(key, rate):
  return jdrop.gaussian_dropout(key, GAUSS_X, rate=rate)


@functools.cache
def _gaussian_noise(mode: str, rate: float) -> np.ndarray:
  """The noise y / x, sorted (for the KS test; the order does not matter to the others)."""
  y = run(mode, _gaussian_dropout, jax.random.key(7), rate)
  return np.sort(np.asarray(y, np.float64) / GAUSS_X)


def _gaussian_pvalues(noise: np.ndarray, mean: float, var: float) -> dict[str, float]:
  """Tests of noise ~ N(mean, var), each two-sided.

  Mean: z = (mean(eps) - mean) / sqrt(var / n) ~ N(0, 1). Variance: (n - 1) s**2 / var ~
  chi2(n - 1), exact for normal noise. Shape: Kolmogorov-Smirnov against N(mean, var).
  """
  n = noise.size
  chi2 = (n - 1) * np.var(noise, ddof=1) / var
  return {
    "mean": stats_util.z_pvalue(noise.mean(), mean, np.sqrt(var / n)),
    "variance": float(2 * min(scipy.stats.chi2.cdf(chi2, n - 1), scipy.stats.chi2.sf(chi2, n - 1))),
    "ks": float(scipy.stats.kstest(noise, scipy.stats.norm(mean, np.sqrt(var)).cdf).pvalue),
  }


@pytest.mark.parametrize("rate", GAUSS_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_gaussian_dropout_moments(mode, rate):
  pvalues = _gaussian_pvalues(_gaussian_noise(mode, rate), 1.0, rate / (1 - rate))
  assert all(p > ALPHA for p in pvalues.values()), pvalues


@pytest.mark.parametrize("rate", GAUSS_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_gaussian_dropout_moments_rejects_wrong(mode, rate):
  noise = _gaussian_noise(mode, rate)
  var = rate / (1 - rate)
  # Mean off by 0.02 (> 19 standard errors at rate 0.5).
  assert _gaussian_pvalues(noise, 1.0 + OFF, var)["mean"] < ALPHA
  # The variance of a rate off by 0.02, and the variance without 1 / (1 - rate): rate.
  for wrong_var in ((rate + OFF) / (1 - rate - OFF), rate):
    pvalues = _gaussian_pvalues(noise, 1.0, wrong_var)
    assert pvalues["variance"] < ALPHA, wrong_var
    assert pvalues["ks"] < ALPHA, wrong_var


# ----------------------------------------------------------------------------
# 5. Drop path: one Bernoulli(1 - rate) decision per example.

PATH_RATES = (0.1, 0.5)  # a subset of KEEP_RATES: the elementwise contrast reuses those masks
PATH_SHAPE = (2**16, 4, 4)


def _drop_path(key, rate):
  return jdrop.drop_path(key, jnp.ones(PATH_SHAPE), rate=rate)


@functools.cache
def _drop_path_kept(mode: str, rate: float) -> tuple[np.ndarray, np.ndarray]:
  """Which units were kept, per example (B, 16), by drop_path and by an elementwise mask."""
  kept = np.asarray(run(mode, _drop_path, jax.random.key(8), rate)) != 0
  batch = PATH_SHAPE[0]
  return kept.reshape(batch, -1), _keep_masks(mode, rate).reshape(batch, -1)


def _all_or_nothing(kept: np.ndarray) -> bool:
  return bool(np.all(kept.all(axis=1) == kept.any(axis=1)))


@pytest.mark.parametrize("rate", PATH_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_drop_path(mode, rate):
  kept, _ = _drop_path_kept(mode, rate)
  # Exact: every example is kept whole or dropped whole.
  assert _all_or_nothing(kept)
  # Kept examples ~ Binomial(2**16, 1 - rate); exact binomial test.
  assert stats_util.binomial_pvalue(kept[:, 0].sum(), kept.shape[0], 1 - rate) > ALPHA


@pytest.mark.parametrize(("rate", "wrong"), wrong_cases(PATH_RATES))
@pytest.mark.parametrize("mode", MODES)
def test_drop_path_rejects_wrong(mode, rate, wrong):
  kept, elementwise = _drop_path_kept(mode, rate)
  keep = wrong_keeps(rate)[wrong]
  assert stats_util.binomial_pvalue(kept[:, 0].sum(), kept.shape[0], keep) < ALPHA
  # An elementwise mask (keep_mask's, read as (B, 16)), for contrast, is not all-or-nothing.
  assert not _all_or_nothing(elementwise)


# ----------------------------------------------------------------------------
# 6. Li et al. (CVPR 2019): for x ~ N(0, 1) iid, Var D(x) / Var x = 1 / (1 - rate).

VARIANCE_RATES = (0.1, 0.5, 0.9)


def _dropout_normal(key, x, rate):
  return jdrop.dropout(key, x, rate=rate)


@functools.cache
def _variance_ratio(mode: str, rate: float) -> tuple[float, float]:
  """The ratio R = sum D(x)**2 / sum x**2 and its standard error given x, for keep q.

  Both means are 0, so the second moments are the variances. Given x, D(x)_i**2 =
  m_i x_i**2 / q**2 with m_i ~ Bernoulli(q), so E[R | x] = 1 / q and
  Var[R | x] = (1 - q) / q**3 * sum x**4 / (sum x**2)**2.
  """
  x = standard_normal()
  y = np.asarray(run(mode, _dropout_normal, jax.random.key(9), x, rate), np.float64)
  x_squared = np.asarray(x, np.float64) ** 2
  keep = 1 - rate
  x2 = np.sum(x_squared)
  std_error = np.sqrt((1 - keep) / keep**3 * np.sum(x_squared * x_squared)) / x2
  return float(np.sum(y * y) / x2), float(std_error)


@pytest.mark.parametrize("rate", VARIANCE_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_variance_ratio(mode, rate):
  # z = (R - 1 / (1 - rate)) / std_error ~ N(0, 1) given x (CLT over N masks).
  ratio, std_error = _variance_ratio(mode, rate)
  assert stats_util.z_pvalue(ratio, 1 / (1 - rate), std_error) > ALPHA


@pytest.mark.parametrize(("rate", "wrong"), wrong_cases(VARIANCE_RATES))
@pytest.mark.parametrize("mode", MODES)
def test_variance_ratio_rejects_wrong(mode, rate, wrong):
  ratio, std_error = _variance_ratio(mode, rate)
  assert stats_util.z_pvalue(ratio, 1 / wrong_keeps(rate)[wrong], std_error) < ALPHA
  # Nor is the variance preserved, as evaluation mode assumes (ratio 1).
  assert stats_util.z_pvalue(ratio, 1.0, std_error) < ALPHA
