r"""Paired comparisons of the report's studies, and the correction for testing many of them.

A study that compares two orders on the same seeds gets one difference per seed,
:math:`d_1, \dots, d_n` (pre minus post). For each comparison:

* :func:`t_interval`: the mean difference with its Student-t interval (the effect size, in the
  study's units);
* :func:`paired_t`: the two-sided p-value of the paired t-test of mean 0 (assumes roughly normal
  differences);
* :func:`sign_flip`: the two-sided p-value of the sign-flip permutation test of a distribution
  symmetric about 0 (no normality assumed; a check on the t-test). With ``n`` seeds its smallest
  p-value is :math:`2 / 2^n`, so a family of ``m`` tests can reject only if
  :math:`2^{1-n} m < \alpha`: 8 seeds and 27 tests cannot;
* :func:`holm`: Holm's step-down adjustment of a family's p-values, which keeps the
  probability of any false rejection at most :math:`\alpha` whatever the dependence between
  the tests (Holm, Scand. J. Statist. 1979).

A finding is a comparison whose Holm-adjusted t-test p-value is below :data:`ALPHA`.

:func:`family` records a family of tests of any kind (one-sample t-tests of a predicted value,
grid-wide z-tests) with their raw and Holm-adjusted p-values, so that a reader of a study's
results can recompute the correction.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np
import scipy.stats
from jax.typing import ArrayLike

from jdrop._src import errors

_FN = "jdrop.studies.stats"
LEVEL = 0.95  # the confidence level of every per-comparison interval
ALPHA = 0.05  # the family-wise significance level of every corrected conclusion
MAX_EXACT = 16  # sign_flip enumerates all 2**n sign vectors up to this many values
# A measured value within this many standard errors of its prediction is "within noise of" it
# (the report's claims): a two-sided z-test at level 2 P(Z > 3) = 0.0027 per statement.
NOISE_Z = 3.0


class Interval(NamedTuple):
  """A mean and its two-sided t-interval at ``level``."""

  mean: float
  low: float
  high: float
  n: int

  def as_dict(self) -> dict[str, float | int]:
    return self._asdict()


def _values(fn: str, values: ArrayLike) -> np.ndarray:
  """``values`` as a 1-D float64 array of at least 2 finite numbers, or a clear error."""
  v = np.asarray(values, dtype=np.float64)
  if v.ndim != 1 or v.size < 2:
    raise errors.value_error(
      fn,
      "values",
      "must be a 1-D array of at least 2 numbers",
      errors.Described(f"shape {v.shape}"),
      "Pass one value per seed, from at least 2 seeds.",
    )
  if not np.isfinite(v).all():
    raise errors.value_error(
      fn, "values", "must be finite", errors.short(values), "Drop or fix the NaN or inf values."
    )
  return v


def t_interval(values: ArrayLike, *, level: float = LEVEL) -> Interval:
  r"""The mean of ``values`` with its Student-t confidence interval.

  .. math::
     \bar v \pm t_{(1+\text{level})/2,\, n-1}\, \frac{s}{\sqrt n},

  with :math:`s` the sample standard deviation (``ddof=1``), the quantile from
  ``scipy.stats.t``. Assumes independent values, roughly normal or many: the seeds of a
  study, or their paired differences.

  Args:
    values: a 1-D array of at least 2 finite numbers.
    level: the confidence level, in (0, 1).

  Returns:
    ``Interval(mean, low, high, n)``.

  Example:
    >>> iv = t_interval([1.0, 2.0, 3.0])   # mean 2, s/sqrt(3) = 0.577, t(0.975, 2) = 4.303
    >>> iv.mean, round(iv.low, 4), round(iv.high, 4), iv.n
    (2.0, -0.4841, 4.4841, 3)
  """
  fn = f"{_FN}.t_interval"
  if not 0.0 < level < 1.0:
    raise errors.value_error(fn, "level", "must lie in (0, 1)", level, "Use e.g. level=0.95.")
  v = _values(fn, values)
  n = int(v.size)
  mean = float(v.mean())
  half = float(scipy.stats.t.ppf((1.0 + level) / 2.0, n - 1) * v.std(ddof=1) / np.sqrt(n))
  return Interval(mean, mean - half, mean + half, n)


def paired_t(differences: ArrayLike) -> float:
  r"""The two-sided p-value of the paired t-test that the mean difference is 0.

  :math:`t = \bar d / (s / \sqrt n)` with ``n - 1`` degrees of freedom, as
  ``scipy.stats.ttest_rel``; where every difference is equal (:math:`s = 0`) the p-value is 1 if
  they are all 0 and 0 otherwise (scipy answers NaN there).

  Example:
    >>> round(paired_t([1.0, 2.0, 3.0]), 4)   # t = 2 / (1 / sqrt 3) = 3.464 on 2 df
    0.0742
    >>> paired_t([0.0, 0.0, 0.0]), paired_t([0.5, 0.5])
    (1.0, 0.0)
  """
  d = _values(f"{_FN}.paired_t", differences)
  mean, sd = float(d.mean()), float(d.std(ddof=1))
  if sd == 0.0:
    return 1.0 if mean == 0.0 else 0.0
  t = mean / (sd / np.sqrt(d.size))
  return float(2.0 * scipy.stats.t.sf(abs(t), d.size - 1))


def z_pvalue(value: float, stderr: float) -> float:
  r"""The two-sided p-value of ``value / stderr`` against a standard normal.

  For a mean over many draws (the central limit theorem): :math:`2\,P(Z > |v| / s)`. Where
  ``stderr`` is 0 the p-value is 1 if ``value`` is 0 and 0 otherwise.

  Example:
    >>> round(z_pvalue(3.0, 1.0), 5), z_pvalue(0.0, 0.0)
    (0.0027, 1.0)
  """
  if stderr == 0:
    return 1.0 if value == 0 else 0.0
  return float(2.0 * scipy.stats.norm.sf(abs(value) / stderr))


def sign_flip(differences: ArrayLike, *, samples: int = 2**16, seed: int = 0) -> float:
  r"""The two-sided p-value of the sign-flip permutation test of differences symmetric about 0.

  Under the null hypothesis each difference is as likely to have either sign, so the observed
  :math:`|\bar d|` is compared with :math:`|\frac1n \sum_i s_i d_i|` over sign vectors
  :math:`s \in \{-1, 1\}^n`: the p-value is the fraction at least as large (the observed one
  included). Up to :data:`MAX_EXACT` values every one of the :math:`2^n` sign vectors is
  enumerated (exact); beyond, ``samples`` random ones from ``seed`` give the Monte-Carlo
  p-value :math:`(1 + \#) / (1 + \text{samples})`. Sums are compared with a relative tolerance
  of 1e-12, so that a flip that gives the observed sum up to rounding counts as equal.

  Example:
    >>> sign_flip([1.0, 2.0, 3.0])   # only all + and all - reach |mean| = 2: 2 of 8
    0.25
  """
  fn = f"{_FN}.sign_flip"
  d = _values(fn, differences)
  samples = errors.check_count(fn, "samples", samples, upper=2**24, example="65536")
  n = d.size
  if n <= MAX_EXACT:
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
  else:
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(samples, n))
  observed = abs(d.sum())
  flipped = np.abs(signs @ d)
  count = int((flipped >= observed - 1e-12 * max(observed, np.abs(d).sum())).sum())
  if n <= MAX_EXACT:
    return count / signs.shape[0]
  return (1 + count) / (1 + samples)


def holm(pvalues: ArrayLike) -> np.ndarray:
  r"""Holm's step-down adjusted p-values of a family of ``m`` tests, in the given order.

  With the p-values sorted, :math:`p_{(1)} \le \dots \le p_{(m)}`,

  .. math::
     \tilde p_{(i)} = \min\Bigl(1, \max_{j \le i} (m - j + 1)\, p_{(j)}\Bigr).

  Rejecting every test with :math:`\tilde p < \alpha` keeps the family-wise error rate at most
  :math:`\alpha` under any dependence; it rejects everything Bonferroni does, and more.

  Args:
    pvalues: a 1-D array of p-values in [0, 1] (may be empty).

  Example:
    >>> holm([0.01, 0.04, 0.03, 0.005]).tolist()   # sorted: 4 x 0.005, 3 x 0.01, 2 x 0.03, ...
    [0.03, 0.06, 0.06, 0.02]
  """
  p = np.asarray(pvalues, dtype=np.float64)
  if p.ndim != 1 or not ((p >= 0) & (p <= 1)).all():
    raise errors.value_error(
      f"{_FN}.holm",
      "pvalues",
      "must be a 1-D array of p-values in [0, 1]",
      errors.short(pvalues),
      "Pass the raw p-values of one family of tests.",
    )
  m = p.size
  order = np.argsort(p, kind="stable")
  stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
  adjusted = np.empty(m)
  adjusted[order] = stepped
  return adjusted


def paired(differences: ArrayLike) -> dict[str, float | int | None]:
  r"""One paired comparison: the mean difference, its t-interval, ``dz`` and both p-values.

  ``dz`` is the standardised effect :math:`\bar d / s` (None where :math:`s = 0`, where it is
  undefined). The family's adjustments are added by :func:`adjust`.
  """
  d = _values(f"{_FN}.paired", differences)
  iv = t_interval(d)
  sd = float(d.std(ddof=1))
  dz = iv.mean / sd if sd > 0 else None
  return {**iv.as_dict(), "dz": dz, "p_t": paired_t(d), "p_sign_flip": sign_flip(d)}


def adjust(rows: list[dict], differences: list[ArrayLike], *, alpha: float = ALPHA) -> None:
  """Adds the family's corrections to each row of :func:`paired` results, in place.

  ``p_t_holm`` and ``p_sign_flip_holm`` (Holm over the ``m = len(rows)`` tests), ``significant``
  (``p_t_holm < alpha``), and ``family_low`` / ``family_high``: the Bonferroni interval at level
  ``1 - alpha / m``, which holds for all ``m`` comparisons at once with probability at least
  ``1 - alpha``.
  """
  m = len(rows)
  if m != len(differences):
    raise errors.value_error(
      f"{_FN}.adjust",
      "rows, differences",
      "must have one row per array of differences",
      (m, len(differences)),
      "Pass the rows of stats.paired(d) for each d, in order.",
    )
  for key in ("p_t", "p_sign_flip"):
    for row, value in zip(rows, holm([row[key] for row in rows]), strict=True):
      row[f"{key}_holm"] = float(value)
  for row, d in zip(rows, differences, strict=True):
    row["significant"] = row["p_t_holm"] < alpha
    family = t_interval(d, level=1.0 - alpha / m)
    row["family_low"], row["family_high"] = family.low, family.high


def family(
  labels: list[str], pvalues: ArrayLike, *, hypothesis: str, alpha: float = ALPHA
) -> dict[str, object]:
  r"""A family of ``m`` tests, Holm-adjusted, as a JSON-serialisable record.

  Args:
    labels: one name per test (e.g. ``"alpha dropout 0.1: var = 1"``).
    pvalues: the raw p-values, in the order of ``labels``.
    hypothesis: the null hypothesis each test checks, in words.
    alpha: the family-wise level.

  Returns:
    ``{"hypothesis", "method": "holm", "alpha", "m", "tests"}`` with ``tests`` a list of
    ``{"label", "p", "p_holm", "rejected"}``, ``rejected`` being ``p_holm < alpha``.

  Example:
    >>> f = family(["a", "b"], [0.01, 0.04], hypothesis="mean 0")
    >>> [(t["label"], t["p_holm"], t["rejected"]) for t in f["tests"]]
    [('a', 0.02, True), ('b', 0.04, True)]
  """
  if len(labels) != np.size(pvalues):
    raise errors.value_error(
      f"{_FN}.family",
      "labels, pvalues",
      "must have one label per p-value",
      (len(labels), int(np.size(pvalues))),
      "Pass as many labels as p-values.",
    )
  adjusted = holm(pvalues)
  tests = [
    {"label": label, "p": float(p), "p_holm": float(a), "rejected": bool(a < alpha)}
    for label, p, a in zip(labels, np.asarray(pvalues, np.float64), adjusted, strict=True)
  ]
  return {
    "hypothesis": hypothesis,
    "method": "holm",
    "alpha": alpha,
    "m": len(tests),
    "tests": tests,
  }


def rejected(record: dict) -> list[str]:
  """The labels of a :func:`family` record's tests rejected after Holm's correction."""
  return [t["label"] for t in record["tests"] if t["rejected"]]
