"""Two-sided hypothesis tests for the statistical tests in ``test_statistics.py``.

Every function returns a p-value: the probability, under the null hypothesis, of a
statistic at least as extreme as the one observed. A test passes when ``p > ALPHA``; its
companion check, which evaluates the same statistic against a deliberately wrong
parameter, must give ``p < ALPHA``, showing that the test can reject at all.

Samplers are run eagerly or under ``jax.jit`` through :func:`run`; the jitted version of a
function is compiled once and reused, so a traced ``rate`` shares one compilation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import scipy.stats

# The significance level of every test in test_statistics.py: with fixed keys a test is
# deterministic, and for a fresh key a correct implementation fails one test with
# probability 1e-4 (about 1e-2 for the whole file, which runs fewer than 100 such tests).
ALPHA = 1e-4

MODES = ("eager", "jit")


@functools.cache
def _jitted(fn: Callable[..., Any]) -> Callable[..., Any]:
  return jax.jit(fn)


def run(mode: str, fn: Callable[..., Any], *args: Any) -> Any:
  """``fn(*args)`` eagerly, or through one cached ``jax.jit(fn)`` (every argument traced)."""
  if mode == "eager":
    return fn(*args)
  if mode == "jit":
    return _jitted(fn)(*args)
  raise ValueError(f"run: mode must be one of {MODES}, got {mode!r}.")


def binomial_pvalue(successes: int, trials: int, p: float) -> float:
  """Exact two-sided binomial test of ``successes ~ Binomial(trials, p)``."""
  return float(scipy.stats.binomtest(int(successes), int(trials), p).pvalue)


def z_pvalue(estimate: float, expected: float, std_error: float) -> float:
  """Two-sided test of ``z = (estimate - expected) / std_error ~ N(0, 1)``."""
  z = (estimate - expected) / std_error
  return float(2 * scipy.stats.norm.sf(abs(z)))


def chi2_sum_pvalue(z: np.ndarray) -> float:
  """Test of independent ``z_j ~ N(0, 1)`` through ``sum z_j**2 ~ chi2(len(z))``."""
  z = np.asarray(z, np.float64)
  return float(scipy.stats.chi2.sf(np.sum(z**2), df=z.size))


def pair_table(first: np.ndarray, second: np.ndarray) -> np.ndarray:
  """The 2x2 table of counts of ``(first, second)`` for two boolean arrays of one shape.

  ``table[i, j]`` counts the pairs with ``first == i`` and ``second == j``.
  """
  first = np.asarray(first, bool).ravel()
  second = np.asarray(second, bool).ravel()
  codes = 2 * first.astype(np.int64) + second.astype(np.int64)
  return np.bincount(codes, minlength=4).reshape(2, 2)


def joint_law(keep: float, phi: float = 0.0) -> np.ndarray:
  """The law of two Bernoulli(keep) variables with correlation ``phi``, as a 2x2 table.

  ``phi = 0`` is independence: ``P(i, j) = P(i) P(j)``.
  """
  marginal = np.array([1 - keep, keep])
  cov = phi * keep * (1 - keep)
  return np.outer(marginal, marginal) + cov * np.array([[1, -1], [-1, 1]])


def pair_chi2_pvalue(table: np.ndarray, law: np.ndarray) -> float:
  """Pearson's goodness-of-fit test of a 2x2 table of independent pairs against ``law``.

  Under the null the statistic is asymptotically chi2 with 3 degrees of freedom.
  """
  table = np.asarray(table, np.float64).ravel()
  expected = np.asarray(law, np.float64).ravel() * table.sum()
  return float(scipy.stats.chisquare(table, expected).pvalue)


def variance_std_error(samples: np.ndarray) -> tuple[float, float]:
  """The sample variance and its asymptotic standard error ``sqrt((m4 - s**4) / n)``.

  ``m4`` is the sample's fourth central moment; this holds for any distribution with a
  finite fourth moment (for a normal one, ``m4 = 3 s**4`` and the error is ``s**2 sqrt(2/n)``).
  """
  samples = np.asarray(samples, np.float64).ravel()
  squares = (samples - samples.mean()) ** 2
  var = float(np.mean(squares))
  m4 = float(np.mean(squares * squares))
  return var, float(np.sqrt((m4 - var**2) / samples.size))


def uniform_chi2_pvalue(values: np.ndarray, bins: int) -> float:
  """Pearson's test that integers ``values`` are uniform on ``[0, bins)``.

  The statistic is asymptotically chi2 with ``bins - 1`` degrees of freedom (use at least
  about 5 expected values per bin).
  """
  counts = np.bincount(np.asarray(values, np.int64).ravel(), minlength=bins)
  if counts.size != bins:
    raise ValueError(f"uniform_chi2_pvalue: values outside [0, {bins}), max {counts.size - 1}")
  expected = counts.sum() / bins
  statistic = float(np.sum((counts - expected) ** 2) / expected)
  return float(scipy.stats.chi2.sf(statistic, df=bins - 1))


def correlation_pvalue(first: np.ndarray, second: np.ndarray) -> float:
  """Two-sided test of zero correlation of paired samples: ``z = r sqrt(n) ~ N(0, 1)``.

  Asymptotically, for independent pairs with finite variances.
  """
  first = np.asarray(first, np.float64).ravel()
  second = np.asarray(second, np.float64).ravel()
  r = float(np.corrcoef(first, second)[0, 1])
  return z_pvalue(r * np.sqrt(first.size), 0.0, 1.0)


def runs_pvalue(bits: np.ndarray) -> float:
  """Wald-Wolfowitz runs test of a boolean sequence against independence.

  Given ``n1`` ones and ``n0`` zeros in ``n`` draws, the number of runs ``R`` has mean
  ``1 + 2 n0 n1 / n`` and variance ``2 n0 n1 (2 n0 n1 - n) / (n**2 (n - 1))`` under the
  null; ``z`` is asymptotically N(0, 1).
  """
  bits = np.asarray(bits, bool).ravel()
  n = bits.size
  n1 = int(np.count_nonzero(bits))
  n0 = n - n1
  runs = 1 + int(np.count_nonzero(bits[1:] != bits[:-1]))
  mean = 1 + 2 * n0 * n1 / n
  var = 2 * n0 * n1 * (2 * n0 * n1 - n) / (n**2 * (n - 1))
  return z_pvalue(runs, mean, np.sqrt(var))
