"""jdrop.check on the adversarial zoo: never wrong, never raises.

``checker_zoo.ZOO`` holds 467 functions with hand-derived truths (odd spellings of relu,
piecewise-linear functions with tiny breaks, non-finite holes, integer casts, loops,
non-elementwise maps, fixed-rate exotics, identities the algebra misses, randomness with a
fixed key). "proved" must be true, "refuted" must be false; "unknown" is always allowed and
counted by ``experiments/bench_checker.py --zoo`` (the README's decisiveness table).
"""

from __future__ import annotations

import checker_zoo
import pytest

import jdrop

CASES = {case.name: case for case in checker_zoo.ZOO}
WRONG = {
  "holds": ("refuted",),
  "fails": ("proved",),
  "undefined": ("proved",),
}


def test_the_zoo_is_big_and_labelled():
  assert len(CASES) == len(checker_zoo.ZOO) >= 400  # names are unique
  for case in checker_zoo.ZOO:
    assert case.pathwise in WRONG and case.expectation in WRONG, case.name


@pytest.mark.parametrize("name", sorted(CASES))
def test_never_wrong_and_never_raises(name):
  case = CASES[name]
  verdict = jdrop.check(case.fn, rate=case.rate, shape=case.shape, float_level=False)
  for mode in ("pathwise", "expectation"):
    truth = getattr(case, mode)
    finding = getattr(verdict, mode)
    assert finding.status not in WRONG[truth], f"{name} [{mode}] truth {truth}: {verdict}"
    if finding.status == "refuted":
      assert finding.counterexample is not None, verdict
