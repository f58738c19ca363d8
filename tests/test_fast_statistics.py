"""Statistical quality of the fast masks (``fast=True``), in the style of ``test_statistics.py``.

A fast mask keeps element ``i`` when its 16-bit uniform ``u_i`` is below
``round((1 - rate) * 2**16)``; one threefry2x32 block gives the uniforms of four neighbouring
elements (two 16-bit halves of each of its two 32-bit words). So the tests look where such a
scheme could fail: the keep fraction, neighbours within a word, across the words of a block
and across blocks, the two halves of one word, the uniformity of the 16-bit values, masks
under ``fold_in`` indices and under ``vmap`` over keys, and runs.

Every test draws from a fixed key, runs eagerly and under ``jax.jit`` (the rate traced), and
compares a statistic with its null distribution at the significance level ``ALPHA = 1e-4``
(``stats_util.py``). Each has a ``..._rejects_...`` companion: the same statistic on a
deliberately broken generator, built from the same samples (the two halves of a word equal,
a keep probability off by ``2**-10``, the top bit cleared in 2% of the values, fold_in
ignored...), must reject at the same ``ALPHA``.

The keep probability is ``q~ = round((1 - rate) * 2**16) / 2**16`` (within ``2**-17`` of
``1 - rate``, tested exactly in ``test_fast.py``); the null hypotheses use ``q~``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import stats_util
from stats_util import ALPHA
from stats_util import MODES
from stats_util import run

import jdrop
from jdrop._src import masks

# 2**24 draws: the binomial standard error of a keep fraction is at most 0.5 / 2**12 =
# 1.2e-4, so a keep probability off by 2**-10 (9.8e-4) is 8 standard errors away.
N = 2**24
OFF = 2.0**-10
KEEP_RATES = (0.1, 0.5, 0.9, 1e-3, 0.3 + 2.0**-18)  # the last one is rounded by 2**-18
PAIR_RATES = (0.1, 0.5)
PHI = 0.02  # a weak correlation between neighbours that the pair tests must detect


def rounded_keep(rate: float) -> float:
  return round((1.0 - rate) * 2**16) / 2**16


def _keep_mask(key, rate):
  return jdrop.keep_mask(key, (N,), rate=rate, fast=True)


@functools.cache
def _mask(mode: str, rate: float) -> np.ndarray:
  return np.asarray(run(mode, _keep_mask, jax.random.key(21), rate))


@functools.cache
def _uniforms() -> np.ndarray:
  """The 16-bit uniforms behind ``_mask(mode, rate)``, for every mode and rate."""
  return np.asarray(masks.fast_uniforms(jax.random.key(21), N))


def test_masks_are_the_uniforms_below_the_threshold():
  # What lets the tests of the uniforms speak for the masks (exactly, not statistically).
  for mode in MODES:
    for rate in PAIR_RATES:
      np.testing.assert_array_equal(_mask(mode, rate), _uniforms() < rounded_keep(rate) * 2**16)


# ----------------------------------------------------------------------------
# 1. The keep fraction: kept units ~ Binomial(N, q~); exact two-sided binomial test.


def _wrong_keeps(rate: float) -> list[float]:
  keep = rounded_keep(rate)
  return [k for k in (keep - OFF, keep + OFF) if 0 < k < 1]


@pytest.mark.parametrize("rate", KEEP_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_fast_keep_fraction(mode, rate):
  kept = int(np.count_nonzero(_mask(mode, rate)))
  assert stats_util.binomial_pvalue(kept, N, rounded_keep(rate)) > ALPHA


@pytest.mark.parametrize("rate", KEEP_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_fast_keep_fraction_rejects_keep_off_by_2_to_the_minus_10(mode, rate):
  kept = int(np.count_nonzero(_mask(mode, rate)))
  for wrong in _wrong_keeps(rate):
    assert stats_util.binomial_pvalue(kept, N, wrong) < ALPHA, wrong
  # A broken generator: the threshold 64 = 2**16 * 2**-10 too high or too low.
  threshold = round(rounded_keep(rate) * 2**16)
  for broken in (threshold - 64, threshold + 64):
    if 0 < broken < 2**16:
      kept = int(np.count_nonzero(_uniforms() < broken))
      assert stats_util.binomial_pvalue(kept, N, rounded_keep(rate)) < ALPHA, broken


# ----------------------------------------------------------------------------
# 2. Neighbours are independent: 2x2 tables of non-overlapping pairs (i, i + 1) against the
# law of two independent Bernoulli(q~) units; Pearson's statistic ~ chi2(3) (2**22 pairs,
# smallest expected cell >= 4e4). Pairs by where i falls in its block of four: "halves"
# (i = 4b: the two halves of word 0), "words" (i = 4b + 1: word 0's high half and word 1's
# low half), "blocks" (i = 4b + 3: the last uniform of one block and the first of the next),
# and "rows" (i and i + 1024: the same column of neighbouring rows of a 1024-wide mask).

PAIRS = {"halves": (0, 1), "words": (1, 1), "blocks": (3, 1), "rows": (0, 1024)}


def _first(pair: str) -> np.ndarray:
  """The index of the first element of each pair; the second is ``gap`` further on."""
  start, gap = PAIRS[pair]
  if pair == "rows":  # rows 2k and 2k + 1 of the (N / 1024, 1024) mask
    return (np.arange(N // 2048)[:, None] * 2048 + np.arange(1024)).ravel()
  return np.arange(start, N - gap, 4)


def _pairs(values: np.ndarray, pair: str) -> tuple[np.ndarray, np.ndarray]:
  """The two elements of each pair, as two arrays."""
  first = _first(pair)
  return values[first], values[first + PAIRS[pair][1]]


def _table(values: np.ndarray, pair: str) -> np.ndarray:
  return stats_util.pair_table(*_pairs(values, pair))


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("rate", PAIR_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_fast_neighbours_independent(mode, rate, pair):
  table = _table(_mask(mode, rate), pair)
  assert stats_util.pair_chi2_pvalue(table, stats_util.joint_law(rounded_keep(rate))) > ALPHA


def _copy_first_into_second(values: np.ndarray, pair: str) -> np.ndarray:
  """A broken generator: the second element of each pair repeats the first."""
  broken = values.copy()
  first = _first(pair)
  broken[first + PAIRS[pair][1]] = values[first]
  return broken


@pytest.mark.parametrize("pair", PAIRS)
@pytest.mark.parametrize("rate", PAIR_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_fast_neighbours_independent_rejects_broken(mode, rate, pair):
  mask, keep = _mask(mode, rate), rounded_keep(rate)
  table = _table(mask, pair)
  # Correlation PHI between the neighbours: expected statistic about pairs * PHI**2 >= 1600.
  assert stats_util.pair_chi2_pvalue(table, stats_util.joint_law(keep, PHI)) < ALPHA
  # The generator with the two elements of each pair equal (for "halves": the halves of a
  # word equal, i.e. one 16-bit uniform for two elements).
  broken = _table(_copy_first_into_second(mask, pair), pair)
  assert stats_util.pair_chi2_pvalue(broken, stats_util.joint_law(keep)) < ALPHA


# ----------------------------------------------------------------------------
# 3. The 16-bit values of neighbours are uncorrelated: z = r sqrt(pairs) ~ N(0, 1)
# (asymptotically; 2**22 pairs), for the same pairs as above.


@pytest.mark.parametrize("pair", PAIRS)
def test_fast_uniforms_uncorrelated(pair):
  assert stats_util.correlation_pvalue(*_pairs(_uniforms(), pair)) > ALPHA


@pytest.mark.parametrize("pair", PAIRS)
def test_fast_uniforms_uncorrelated_rejects_broken(pair):
  first, second = _pairs(_uniforms(), pair)
  # A broken generator that repeats the first value in 1% of the pairs: r is about 0.01,
  # z about 0.01 * sqrt(2**22) = 20.
  rng = np.random.default_rng(0)  # which pairs are broken; fixed
  copy = rng.random(first.size) < 0.01
  assert stats_util.correlation_pvalue(first, np.where(copy, first, second)) < ALPHA


# ----------------------------------------------------------------------------
# 4. The 16-bit values are uniform: Pearson's chi-square over the 2**16 values (2**24 draws,
# 256 expected per value, chi2(65535)), overall and at each of the four places in a block
# (2**22 draws, 64 expected per value).

PLACES = ("all", 0, 1, 2, 3)


def _at(values: np.ndarray, place) -> np.ndarray:
  return values if place == "all" else values[place::4]


@pytest.mark.parametrize("place", PLACES)
def test_fast_uniforms_are_uniform(place):
  assert stats_util.uniform_chi2_pvalue(_at(_uniforms(), place), 2**16) > ALPHA


@pytest.mark.parametrize("place", PLACES)
def test_fast_uniforms_are_uniform_rejects_broken(place):
  values = _at(_uniforms(), place)
  # The lowest bit stuck at 0: half the values never occur.
  assert stats_util.uniform_chi2_pvalue(values & 0xFFFE, 2**16) < ALPHA
  # The top bit cleared in 5% of the draws (P(u >= 2**15) = 0.475): the statistic grows by
  # about 2**16 * 0.05**2 * expected (64 or 256), 29 or 116 of its standard deviations
  # (sqrt(2 * 65535) = 362).
  rng = np.random.default_rng(1)
  cleared = rng.random(values.size) < 0.05
  assert stats_util.uniform_chi2_pvalue(np.where(cleared, values & 0x7FFF, values), 2**16) < ALPHA


# ----------------------------------------------------------------------------
# 5. Masks of different keys are independent: fold_in indices (how compare_orders draws mask
# i; with JAX's partitionable threefry, split(key, n)[i] is fold_in(key, i)) and a vmap over
# the keys of consecutive seeds, jax.random.key(s) (key data (0, s): the most alike keys).
# 256 masks of 4096 elements; the 2x2 table of the same element in masks 2k and 2k + 1
# (2**19 pairs) against independent Bernoulli(q~) units.

NUM_KEYS, LENGTH = 256, 4096
KEY_RATE = 0.3


def _fold_in_masks(key, rate):
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(np.arange(NUM_KEYS, dtype=np.uint32))
  return jax.vmap(lambda k: jdrop.keep_mask(k, (LENGTH,), rate=rate, fast=True))(keys)


def _seed_masks(key, rate):
  del key  # the keys are those of the seeds 0, 1, ..., 255
  keys = jax.vmap(jax.random.key)(np.arange(NUM_KEYS, dtype=np.uint32))
  return jax.vmap(lambda k: jdrop.keep_mask(k, (LENGTH,), rate=rate, fast=True))(keys)


KEYINGS = {"fold_in": _fold_in_masks, "vmap_seeds": _seed_masks}


@functools.cache
def _keyed_masks(mode: str, keying: str) -> np.ndarray:
  return np.asarray(run(mode, KEYINGS[keying], jax.random.key(22), KEY_RATE))


def _key_table(masks_: np.ndarray) -> np.ndarray:
  return stats_util.pair_table(masks_[0::2], masks_[1::2])


@pytest.mark.parametrize("keying", KEYINGS)
@pytest.mark.parametrize("mode", MODES)
def test_fast_masks_of_different_keys_independent(mode, keying):
  masks_ = _keyed_masks(mode, keying)
  # Each mask on its own: exact binomial test of its keep count, pooled over the masks.
  kept = int(np.count_nonzero(masks_))
  assert stats_util.binomial_pvalue(kept, masks_.size, rounded_keep(KEY_RATE)) > ALPHA
  law = stats_util.joint_law(rounded_keep(KEY_RATE))
  assert stats_util.pair_chi2_pvalue(_key_table(masks_), law) > ALPHA


@pytest.mark.parametrize("keying", KEYINGS)
@pytest.mark.parametrize("mode", MODES)
def test_fast_masks_of_different_keys_independent_rejects_broken(mode, keying):
  masks_ = _keyed_masks(mode, keying)
  keep = rounded_keep(KEY_RATE)
  assert stats_util.pair_chi2_pvalue(_key_table(masks_), stats_util.joint_law(keep, PHI)) < ALPHA
  # A broken generator that ignores the key (fold_in's index, or the seed): every mask is
  # mask 0, so the two elements of every pair are equal.
  same = np.broadcast_to(masks_[0], masks_.shape)
  assert stats_util.pair_chi2_pvalue(_key_table(same), stats_util.joint_law(keep)) < ALPHA


# ----------------------------------------------------------------------------
# 6. Runs: the number of runs of the mask read in order (Wald-Wolfowitz), given the number
# kept, is asymptotically normal with the mean and variance of ``stats_util.runs_pvalue``.


@pytest.mark.parametrize("rate", PAIR_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_fast_runs(mode, rate):
  assert stats_util.runs_pvalue(_mask(mode, rate)) > ALPHA


@pytest.mark.parametrize("rate", PAIR_RATES)
@pytest.mark.parametrize("mode", MODES)
def test_fast_runs_rejects_broken(mode, rate):
  mask = _mask(mode, rate)
  # The two halves of each word equal, or the first element of each block repeating the
  # last of the previous one: a quarter of the boundaries can no longer start a run, so
  # there are about N q~ (1 - q~) / 2 fewer runs, hundreds of standard deviations.
  for pair in ("halves", "blocks"):
    assert stats_util.runs_pvalue(_copy_first_into_second(mask, pair)) < ALPHA, pair
