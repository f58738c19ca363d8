"""jdrop.check on the adversarial zoos: never wrong, never raises.

``checker_zoo.ZOO`` holds 467 functions with hand-derived truths (odd spellings of relu,
piecewise-linear functions with tiny breaks, non-finite holes, integer casts, loops,
non-elementwise maps, fixed-rate exotics, identities the algebra misses, randomness with a
fixed key). "proved" must be true, "refuted" must be false; "unknown" is always allowed and
counted by ``experiments/bench_checker.py --zoo`` (the README's decisiveness table).
"""

from __future__ import annotations

import checker_zoo
import checker_zoo_review
import pytest

import jdrop

CASES = {case.name: case for case in checker_zoo.ZOO} | {
  f"review/{case.name}": case for case in checker_zoo_review.REVIEW
}
# Cases that run into the checker's time limits (seconds each): the slow job runs them.
SLOW = {
  "review/dense128_minus_itself",
  "review/loop_noop_sin_roll_8",
  "review/nested_fori_relu_150x150",
  "review/pl_loop_max_256_breaks",
}
WRONG = {
  "holds": ("refuted",),
  "fails": ("proved",),
  "undefined": ("proved",),
}


def test_the_zoo_is_big_and_labelled():
  assert len(CASES) == len(checker_zoo.ZOO) + len(checker_zoo_review.REVIEW) >= 550  # unique
  assert SLOW <= set(CASES)
  for case in CASES.values():
    assert case.pathwise in WRONG and case.expectation in WRONG, case.name


@pytest.mark.parametrize(
  "name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in sorted(CASES)]
)
def test_never_wrong_and_never_raises(name):
  case = CASES[name]
  verdict = jdrop.check(case.fn, rate=case.rate, shape=case.shape, float_level=False)
  for mode in ("pathwise", "expectation"):
    truth = getattr(case, mode)
    finding = getattr(verdict, mode)
    assert finding.status not in WRONG[truth], f"{name} [{mode}] truth {truth}: {verdict}"
    if finding.status == "refuted":
      assert finding.counterexample is not None, verdict
