"""The studies' paired statistics (jdrop._src.studies.stats): p-values, Holm, intervals.

Known numbers are checked against scipy and hand computation; the statistical properties
(a test's size, Holm's family-wise error rate) are checked by simulation with a fixed seed at a
stated level, and each check is shown to fail for a wrong procedure.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from jdrop._src.studies import stats

ALPHA = 0.05
TRIALS = 2000
# A rejection rate estimated from TRIALS runs has standard error sqrt(0.05 * 0.95 / 2000) =
# 0.0049; a test of level 0.05 is accepted below 0.05 + 3 standard errors (one-sided, about
# 1 false alarm in 740 for a correct procedure).
LIMIT = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / TRIALS)


def test_paired_t_matches_scipy() -> None:
  rng = np.random.default_rng(0)
  for n in (2, 3, 8, 16):
    pre, post = rng.normal(size=n), rng.normal(size=n)
    expected = scipy.stats.ttest_rel(pre, post).pvalue
    assert stats.paired_t(pre - post) == pytest.approx(expected, rel=1e-10)
  assert stats.paired_t([0.0, 0.0, 0.0]) == 1.0  # relu: every difference is 0
  assert stats.paired_t([0.01, 0.01]) == 0.0  # equal non-zero differences: t is infinite


def test_sign_flip_exact_by_enumeration() -> None:
  d = np.array([0.3, -0.1, 0.5, 0.2, 0.4])
  observed = abs(d.mean())
  flips = [abs((np.array(s) * d).mean()) for s in itertools.product((1, -1), repeat=5)]
  expected = sum(f >= observed - 1e-12 for f in flips) / 32
  assert stats.sign_flip(d) == expected == 4 / 32
  assert stats.sign_flip(np.ones(8)) == 2 / 256  # the smallest p-value with 8 seeds
  assert stats.sign_flip(np.zeros(8)) == 1.0
  # Monte-Carlo beyond MAX_EXACT: all differences positive, p = (1 + 1 or 2) / (1 + samples).
  assert stats.sign_flip(np.ones(20), samples=999) <= 3 / 1000


def test_holm_on_known_numbers() -> None:
  p = [0.01, 0.04, 0.03, 0.005]
  # By hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04; the
  # running maximum makes the last 0.06; back in the given order:
  np.testing.assert_allclose(stats.holm(p), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
  # The check can fail: Bonferroni (m p) and the step-down without its running maximum differ.
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(np.minimum(1, 4 * np.asarray(p)), [0.03, 0.06, 0.06, 0.02])
  with pytest.raises(AssertionError):
    np.testing.assert_allclose([0.03, 0.06, 0.04, 0.02], [0.03, 0.06, 0.06, 0.02])
  assert stats.holm([]).size == 0
  np.testing.assert_allclose(stats.holm([0.3, 0.2]), [0.4, 0.4], rtol=1e-12)  # 2 x 0.2, then max


def _null_families(shift: float) -> np.ndarray:
  """TRIALS families of 10 paired comparisons of 8 seeds: differences N(shift, 1)."""
  return np.random.default_rng(1).normal(shift, 1.0, size=(TRIALS, 10, 8))


def test_t_test_has_its_level_and_power_where_the_mean_is_not_0() -> None:
  data = _null_families(0.0)[:, 0]
  rejected = np.mean([stats.paired_t(d) < ALPHA for d in data])
  assert rejected < LIMIT
  # The check can fail: with a true difference of 1 standard deviation it rejects far more.
  shifted = _null_families(1.0)[:, 0]
  assert np.mean([stats.paired_t(d) < ALPHA for d in shifted]) > LIMIT


def test_holm_keeps_the_family_wise_error_rate_and_raw_p_values_do_not() -> None:
  families = _null_families(0.0)
  p = np.array([[stats.paired_t(d) for d in family] for family in families])
  any_holm = np.mean([(stats.holm(row) < ALPHA).any() for row in p])
  any_raw = np.mean((p < ALPHA).any(axis=1))
  assert any_holm < LIMIT
  # The check can fail: uncorrected, about 1 - 0.95**10 = 40% of null families reject.
  assert any_raw > LIMIT and any_raw == pytest.approx(1 - 0.95**10, abs=0.05)


def test_sign_flip_has_its_level() -> None:
  data = _null_families(0.0)[:500, 0]  # 256 sign vectors each; fewer trials suffice
  rejected = np.mean([stats.sign_flip(d) < ALPHA for d in data])
  assert rejected < ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 500)
  shifted = _null_families(1.0)[:500, 0]
  assert np.mean([stats.sign_flip(d) < ALPHA for d in shifted]) > 0.5


def test_adjust_adds_holm_and_the_family_interval() -> None:
  differences = [np.array([0.02, 0.03, 0.025, 0.028]), np.array([0.01, -0.01, 0.0, 0.005])]
  rows = [stats.paired(d) for d in differences]
  stats.adjust(rows, differences)
  np.testing.assert_allclose(
    [r["p_t_holm"] for r in rows], stats.holm([r["p_t"] for r in rows]), rtol=1e-12
  )
  assert rows[0]["significant"] and not rows[1]["significant"]
  wide = stats.t_interval(differences[0], level=1 - ALPHA / 2)
  assert (rows[0]["family_low"], rows[0]["family_high"]) == (wide.low, wide.high)
  assert rows[0]["family_low"] < rows[0]["low"] and rows[0]["high"] < rows[0]["family_high"]
  assert rows[0]["dz"] == pytest.approx(differences[0].mean() / differences[0].std(ddof=1))
  assert stats.paired([0.0, 0.0])["dz"] is None


def test_bad_input_names_the_function_and_argument() -> None:
  with pytest.raises(ValueError, match=r"^jdrop.studies.stats.paired_t: `values` must be a 1-D"):
    stats.paired_t([1.0])
  with pytest.raises(ValueError, match=r"sign_flip: `values` must be finite"):
    stats.sign_flip([1.0, float("nan")])
  with pytest.raises(ValueError, match=r"holm: `pvalues` must be a 1-D array of p-values"):
    stats.holm([0.5, 1.5])
  with pytest.raises(TypeError, match=r"sign_flip: `samples` must be a positive integer"):
    stats.sign_flip([1.0, 2.0], samples=0.5)


def test_paired_t_of_values_minus_a_null_is_the_one_sample_t_test() -> None:
  """The studies test a predicted value (variance 1, mean 0) with paired_t(values - null)."""
  rng = np.random.default_rng(1)
  for n, null in ((3, 1.0), (8, 0.0), (16, 1.3)):
    values = rng.normal(1.0, 0.2, size=n)
    expected = scipy.stats.ttest_1samp(values, null).pvalue
    assert stats.paired_t(values - null) == pytest.approx(expected, rel=1e-10)


def test_family_records_raw_and_holm_p_values() -> None:
  record = stats.family(["a", "b", "c", "d"], [0.01, 0.04, 0.03, 0.005], hypothesis="mean 0")
  assert record["m"] == 4 and record["method"] == "holm" and record["alpha"] == stats.ALPHA
  assert [t["p_holm"] for t in record["tests"]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
  assert stats.rejected(record) == ["a", "d"]
  assert stats.family([], [], hypothesis="none")["tests"] == []
  with pytest.raises(ValueError, match=r"family: `labels, pvalues` must have one label per"):
    stats.family(["a"], [0.1, 0.2], hypothesis="mean 0")


def test_z_pvalue_matches_scipy_and_the_noise_rule_level() -> None:
  for value, stderr in ((0.3, 0.1), (-2.0, 1.0), (1e-3, 1.0)):
    expected = 2 * scipy.stats.norm.sf(abs(value) / stderr)
    assert stats.z_pvalue(value, stderr) == pytest.approx(expected, rel=1e-12)
  assert stats.z_pvalue(0.0, 0.0) == 1.0 and stats.z_pvalue(0.5, 0.0) == 0.0
  assert stats.z_pvalue(stats.NOISE_Z, 1.0) == pytest.approx(0.0027, abs=1e-4)


def test_t_interval_matches_scipy_at_several_levels() -> None:
  rng = np.random.default_rng(2)
  for n, level in ((2, 0.95), (3, 0.5), (8, 0.99), (16, 1 - 0.05 / 27)):
    v = rng.normal(0.3, 2.0, size=n)
    sem = v.std(ddof=1) / math.sqrt(n)
    low, high = scipy.stats.t.interval(level, n - 1, loc=v.mean(), scale=sem)
    iv = stats.t_interval(v, level=level)
    assert (iv.mean, iv.n) == (v.mean(), n)
    assert iv.low == pytest.approx(low, rel=1e-12) and iv.high == pytest.approx(high, rel=1e-12)
  # Levels just inside (0, 1) are accepted; their interval widens with the level.
  tiny, huge = (
    stats.t_interval([1.0, 2.0, 4.0], level=1e-9),
    stats.t_interval([1.0, 2.0, 4.0], level=1 - 1e-9),
  )
  assert tiny.high - tiny.low < 1e-8 < 1e3 < huge.high - huge.low


def test_values_are_computed_in_float64_whatever_their_dtype() -> None:
  """float32 seeds (what a jitted study returns) give exactly the float64 statistics."""
  v32 = np.array([0.1, 0.2, 0.7], np.float32)
  v64 = v32.astype(np.float64)
  assert stats.t_interval(v32) == stats.t_interval(v64)
  assert stats.paired(v32) == stats.paired(v64)
  p32 = np.array([0.1, 0.3, 0.2], np.float32)
  np.testing.assert_array_equal(stats.holm(p32), stats.holm(p32.astype(np.float64)))
  assert stats.holm(p32).dtype == np.float64


def test_sign_flip_boundaries_and_monte_carlo_branch() -> None:
  # Exactly MAX_EXACT = 16 values are still enumerated: 2 of 2**16 sign vectors reach the sum.
  assert stats.sign_flip(np.ones(16)) == 2 / 2**16
  # Beyond, (1 + count) / (1 + samples): all 0 differences reach it with every sign vector.
  assert stats.sign_flip(np.zeros(20), samples=999) == 1.0
  assert stats.sign_flip(np.ones(20), samples=999) == 1 / 1000  # 2 of 2**20 vectors: none drawn
  # The Monte-Carlo p-value is reproducible from its seed (default 0), and another seed differs.
  d = np.random.default_rng(3).normal(0.4, 1.0, size=18)
  p0 = stats.sign_flip(d, samples=4096)
  assert p0 == stats.sign_flip(d, samples=4096, seed=0)
  assert p0 != stats.sign_flip(d, samples=4096, seed=1)
  # ... and estimates the exact p-value: with 2**16 samples its standard error is at most
  # sqrt(p (1 - p) / 2**16); accepted within 4 of them (two-sided level 6e-5).
  exact = np.mean(
    np.abs(np.array(list(itertools.product((1.0, -1.0), repeat=18))) @ d) >= abs(d.sum()) - 1e-9
  )
  assert abs(stats.sign_flip(d) - exact) <= 4 * math.sqrt(exact * (1 - exact) / 2**16) + 1e-12
  # samples up to 2**24 are accepted, beyond refused (checked with 2 values, which are
  # enumerated: no 2**24 draws are made).
  assert stats.sign_flip([1.0, 2.0], samples=2**24) == 0.5
  with pytest.raises(
    ValueError, match=r"at most 16777216, got 16777217\. Pass e\.g\. samples=65536"
  ):
    stats.sign_flip([1.0, 2.0], samples=2**24 + 1)


def test_sign_flip_counts_sums_equal_up_to_rounding() -> None:
  # 12345.678 + 0.7 + 3.3 - 3.3: flipping both 3.3s leaves the sum unchanged over the reals but
  # not in float64. By hand, 8 of the 16 sign vectors reach |sum|: the 6 with s1 = s2 whose
  # 3.3s cancel or add in s1's direction, and the 2 with s1 != s2 that add 6.6.
  assert stats.sign_flip([12345.678, 0.7, 3.3, -3.3]) == 0.5


def test_holm_edge_values() -> None:
  np.testing.assert_array_equal(stats.holm([0.6, 0.9]), [1.0, 1.0])  # 2 x 0.6 capped at 1
  np.testing.assert_array_equal(stats.holm([0.0, 0.5]), [0.0, 0.5])  # p = 0 is a p-value
  np.testing.assert_array_equal(stats.holm([1.0]), [1.0])


def test_adjust_boundaries() -> None:
  differences = [np.array([0.02, 0.03, 0.025, 0.028]), np.array([0.01, -0.01, 0.0, 0.005])]
  rows = [stats.paired(d) for d in differences]
  smallest = float(stats.holm([r["p_t"] for r in rows]).min())
  # Significant means p_holm < alpha, strictly: at alpha equal to the smallest, nothing is.
  stats.adjust(rows, differences, alpha=smallest)
  assert [r["significant"] for r in rows] == [False, False]
  stats.adjust(rows, differences, alpha=np.nextafter(smallest, 1.0))
  assert [r["significant"] for r in rows] == [True, False]
  with pytest.raises(ValueError, match=r"adjust: `rows, differences` must have one row per"):
    stats.adjust(rows, differences[:1])


def test_family_record_whole() -> None:
  # Holm of (0.025, 0.05): 2 x 0.025 = 0.05 and 0.05, neither below 0.05: nothing rejected.
  assert stats.family(["a", "b"], [0.025, 0.05], hypothesis="mean 0") == {
    "hypothesis": "mean 0",
    "method": "holm",
    "alpha": 0.05,
    "m": 2,
    "tests": [
      {"label": "a", "p": 0.025, "p_holm": 0.05, "rejected": False},
      {"label": "b", "p": 0.05, "p_holm": 0.05, "rejected": False},
    ],
  }
  assert stats.rejected(stats.family(["a", "b"], [0.025, 0.05], hypothesis="", alpha=0.051)) == [
    "a",
    "b",
  ]


@pytest.mark.parametrize(
  ("call", "error", "text"),
  [
    (
      lambda: stats.t_interval([1.0]),
      ValueError,
      "jdrop.studies.stats.t_interval: `values` must be a 1-D array of at least 2 numbers, got"
      " shape (1,). Pass one value per seed, from at least 2 seeds.",
    ),
    (
      lambda: stats.paired(np.ones((2, 2))),
      ValueError,
      "jdrop.studies.stats.paired: `values` must be a 1-D array of at least 2 numbers, got"
      " shape (2, 2). Pass one value per seed, from at least 2 seeds.",
    ),
    (
      lambda: stats.paired([1.0, float("inf")]),
      ValueError,
      "jdrop.studies.stats.paired: `values` must be finite, got [1.0, inf]. Drop or fix the NaN"
      " or inf values.",
    ),
    (
      lambda: stats.t_interval([1.0, 2.0], level=1.0),
      ValueError,
      "jdrop.studies.stats.t_interval: `level` must lie in (0, 1), got 1.0. Use e.g. level=0.95.",
    ),
    (
      lambda: stats.t_interval([1.0, 2.0], level=0.0),
      ValueError,
      "jdrop.studies.stats.t_interval: `level` must lie in (0, 1), got 0.0. Use e.g. level=0.95.",
    ),
    (
      lambda: stats.t_interval([1.0, 2.0], level=1.5),
      ValueError,
      "jdrop.studies.stats.t_interval: `level` must lie in (0, 1), got 1.5. Use e.g. level=0.95.",
    ),
    (
      lambda: stats.holm([0.5, -0.1]),
      ValueError,
      "jdrop.studies.stats.holm: `pvalues` must be a 1-D array of p-values in [0, 1], got"
      " [0.5, -0.1]. Pass the raw p-values of one family of tests.",
    ),
    (
      lambda: stats.sign_flip([1.0, 2.0], samples=0.5),
      TypeError,
      "jdrop.studies.stats.sign_flip: `samples` must be a positive integer, got 0.5. Pass e.g."
      " samples=65536.",
    ),
    (
      lambda: stats.family(["a"], [0.1, 0.2], hypothesis="mean 0"),
      ValueError,
      "jdrop.studies.stats.family: `labels, pvalues` must have one label per p-value, got (1, 2)."
      " Pass as many labels as p-values.",
    ),
    (
      lambda: stats.adjust([{}], []),
      ValueError,
      "jdrop.studies.stats.adjust: `rows, differences` must have one row per array of"
      " differences, got (1, 0). Pass the rows of stats.paired(d) for each d, in order.",
    ),
  ],
)
def test_each_error_message_whole(call, error, text) -> None:
  with pytest.raises(error) as caught:
    call()
  assert str(caught.value) == text
