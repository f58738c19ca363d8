"""Property tests of jdrop.check against an independently computed ground truth.

* Random piecewise-linear compositions (relu, abs, leaky relu, max, min, clip, where, dyadic
  constants and slopes): the truth is decided exactly over fractions (``checker_truth``), and
  the checker must decide every one of them ("proved" only if true, "refuted" only if false,
  with a counterexample that is genuine when recomputed exactly), for every rate and for fixed
  rates.
* Random smooth compositions (tanh, sigmoid, exp, sin, softplus, powers): never "proved"
  unless homogeneous (a sampled violation certified by mpmath interval arithmetic at 50 or
  150 digits refutes a proof), and a refutation's witness must be certified the same way.
  Homogeneous functions in disguise (``x * exp(0)``, ``(h + e) - e``, ...) must never be
  refuted.
* The ground truth itself is tested (known cases, breakpoints, JAX vs exact evaluation), and
  the assertion helpers are shown to reject wrong verdicts.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Any

import checker_truth as truth
import jax.numpy as jnp
import numpy as np
import pytest
from checker_truth import X
from checker_truth import c
from hypothesis import HealthCheck
from hypothesis import example
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jdrop
from jdrop._src.checker.verdict import Counterexample
from jdrop._src.checker.verdict import Finding
from jdrop._src.checker.verdict import Verdict

F = Fraction
RATES = (0.5, 0.25, 0.75, 0.1)
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def check(tree, rate=None):
  return jdrop.check(truth.to_jax(tree), rate=rate, float_level=False)


# ---------------------------------------------------------------------------------------------
# Generators. Each takes ``draw(lo, hi) -> int`` so that Hypothesis (which shrinks towards
# ``lo``: leaves, ``x``, the first choices) and a seeded ``random.Random`` can both drive it.

DYADIC = [F(k, 4) for k in range(-12, 13)]
SLOPES = [F(1, 4), F(-1, 2), F(2), F(0), F(1, 8), F(-1), F(3, 4), F(1, 16)]


def _pick(draw, options):
  return options[draw(0, len(options) - 1)]


def gen_pl(draw, depth: int = 3, homogeneous: bool | None = None, budget=None) -> truth.Tree:
  """A random piecewise-linear tree; ``homogeneous=True`` uses only homogeneity-preserving
  constructions (so the result is homogeneous), ``None`` picks that one time in three."""
  top = budget is None
  if homogeneous is None:
    homogeneous = draw(0, 2) == 2
  budget = [7] if budget is None else budget
  if not top and (depth == 0 or budget[0] <= 0 or draw(0, 2) == 0):
    leaf = draw(0, 4)
    if leaf <= 1:
      return X
    if leaf <= 3 or homogeneous:
      return ("scale", _pick(draw, DYADIC), X) if leaf <= 3 else c(0)
    return c(_pick(draw, DYADIC))
  budget[0] -= 1

  def sub(h: bool = homogeneous) -> truth.Tree:
    # Below a free node, a child is still built homogeneous one time in four.
    return gen_pl(draw, depth - 1, h or draw(0, 3) == 0, budget)

  kinds = ["relu", "abs", "scale", "max", "min", "where_gt", "leaky", "add", "sub", "neg"]
  if not homogeneous and draw(0, 1) == 0:
    kinds = ["clip", "where_ge", "addc", "max_c", "relu6"]
  kind = _pick(draw, kinds)
  if kind in ("relu", "abs", "neg"):
    return (kind, sub())
  if kind == "scale":
    return ("scale", _pick(draw, DYADIC), sub())
  if kind == "leaky":
    return ("leaky", _pick(draw, SLOPES), sub())
  if kind in ("max", "min", "add", "sub"):
    return (kind, sub(), sub())
  if kind == "where_gt":
    # where(a > b, ...) on homogeneous a and b, on a > 0 or a >= 0, or on a tie (a > a + 0).
    a = sub()
    b = _pick(draw, [c(0), "sub", "tie"])
    if b == c(0) and draw(0, 1):
      return ("where_ge", a, F(0), sub(), sub())
    b = sub() if b == "sub" else (("add", a, c(0)) if b == "tie" else b)
    return ("where_gt", a, b, sub(), sub())
  if kind == "where_ge":
    return ("where_ge", sub(), _pick(draw, DYADIC), sub(), sub())
  if kind == "clip":
    lo, hi = sorted((_pick(draw, DYADIC), _pick(draw, DYADIC)))
    return ("clip", lo, hi, sub())
  if kind == "relu6":
    return _pick(draw, [("relu6", sub()), ("clip", F(0), F(6), sub())])
  if kind == "max_c":
    return (_pick(draw, ["max", "min"]), sub(), c(_pick(draw, DYADIC)))
  if draw(0, 1):  # addc: a broadcast constant, or a Python scalar
    return ("add", sub(), c(_pick(draw, DYADIC)))
  return ("shift", _pick(draw, DYADIC), sub())


SMOOTH_UNARY = ["tanh", "sigmoid", "exp", "sin", "softplus", "sq", "cube", "neg"]
SMOOTH_CONSTS = [F(0), F(1), F(-1), F(1, 2), F(2), F(-3, 4), F(1, 4)]


def gen_smooth(draw, depth: int = 3, budget=None) -> truth.Tree:
  """A random smooth composition over x (never homogeneous by construction, maybe by luck)."""
  budget = [6] if budget is None else budget
  if depth == 0 or budget[0] <= 0 or draw(0, 3) == 0:
    leaf = draw(0, 3)
    if leaf <= 1:
      return X
    if leaf == 2:
      return ("scale", _pick(draw, DYADIC), X)
    return c(_pick(draw, SMOOTH_CONSTS))
  budget[0] -= 1
  kind = _pick(draw, [*SMOOTH_UNARY, "add", "mul", "sub", "scale"])
  if kind in SMOOTH_UNARY:
    return (kind, gen_smooth(draw, depth - 1, budget))
  if kind == "scale":
    return ("scale", _pick(draw, DYADIC), gen_smooth(draw, depth - 1, budget))
  return (kind, gen_smooth(draw, depth - 1, budget), gen_smooth(draw, depth - 1, budget))


def _zero(draw) -> truth.Tree:
  """A constant expression equal to 0 over the reals."""
  zero = c(0)
  options = [
    ("tanh", zero),
    ("sin", zero),
    ("sub", ("exp", zero), c(1)),
    ("sub", ("scale", F(2), ("sigmoid", zero)), c(1)),
    ("sq", ("sin", zero)),
  ]
  return _pick(draw, options)


def gen_disguised(draw, depth: int = 2) -> truth.Tree:
  """A positively homogeneous function of degree 1 in disguise."""
  if depth == 0 or draw(0, 2) == 0:
    return _pick(
      draw,
      [X, ("scale", F(3, 4), X), ("abs", X), ("relu", X), ("sqrt_sq", X), ("scale", F(-2), X)],
    )
  h = gen_disguised(draw, depth - 1)
  e = gen_smooth(draw, 2)
  kind = draw(0, 7)
  if kind == 0:  # h * exp(0), h * 2 sigmoid(0)
    one = _pick(draw, [("exp", c(0)), ("scale", F(2), ("sigmoid", c(0)))])
    return ("mul", h, one)
  if kind == 1:  # h + 0 * e
    return ("add", h, ("mul", _zero(draw), e))
  if kind == 2:  # h + (e - e)
    return ("add", h, ("sub", e, e))
  if kind == 3:  # (h + e) - e
    return ("sub", ("add", h, e), e)
  if kind == 4:  # h * (sigmoid(e) + sigmoid(-e))
    return ("mul", h, ("add", ("sigmoid", e), ("sigmoid", ("neg", e))))
  if kind == 5:  # 2h - h
    return ("sub", ("scale", F(2), h), h)
  if kind == 6:
    return ("add", h, gen_disguised(draw, depth - 1))
  return ("scale", _pick(draw, DYADIC), h)


def _hypothesis(gen, **kwargs):
  @st.composite
  def strategy(draw):
    return gen(lambda lo, hi: draw(st.integers(lo, hi)), **kwargs)

  return strategy()


def _seeded(gen, seed: int, **kwargs):
  rng = random.Random(seed)
  return gen(rng.randint, **kwargs)


pl_trees = _hypothesis(gen_pl)
smooth_trees = _hypothesis(gen_smooth)
disguised_trees = _hypothesis(gen_disguised)


# ---------------------------------------------------------------------------------------------
# The ground truth, tested on its own

KNOWN_PL = [
  # (tree, pathwise for every rate, expectation for every rate)
  (X, True, True),
  (("relu", X), True, True),
  (("abs", X), True, True),
  (("leaky", F(1, 4), X), True, True),
  (("sub", ("scale", F(2), X), X), True, True),
  (("max", ("relu", X), c(-1)), True, True),
  (("where_gt", X, c(1), X, X), True, True),
  (("min", ("relu", X), ("scale", F(2), X)), True, True),
  (("clip", F(0), F(0), X), True, True),
  (("sub", ("max", ("add", X, c(-1)), ("add", X, c(1))), c(1)), True, True),
  (("add", ("where_ge", X, F(0), X, c(0)), ("where_gt", X, c(0), c(0), ("neg", X))), True, True),
  (("add", X, c(1)), False, True),
  (("add", ("relu", X), c(F(-3, 4))), False, True),
  (("where_gt", X, c(0), c(1), c(1)), False, True),
  (("max", X, c(-1)), False, False),
  (("clip", F(-1), F(1), X), False, False),
  (("clip", F(0), F(6), X), False, False),
  (("relu6", X), False, False),
  (("relu6", ("scale", F(-1), ("relu", ("neg", X)))), True, True),
  (("where_ge", X, F(1), ("scale", F(2), X), X), False, False),
  (("where_gt", X, c(0), c(1), c(0)), False, False),
  (("where_ge", X, F(0), X, ("scale", F(2), X)), True, True),
  (("where_ge", X, F(0), c(1), c(0)), False, False),
  # relu everywhere except a jump at x = 0 only: f(0) = 1, so neither holds pathwise; in
  # expectation g = f - 1 is -1 + relu(x) away from 0: not homogeneous either.
  (
    ("add", ("relu", X), ("where_ge", X, F(0), ("where_gt", X, c(0), c(0), c(1)), c(0))),
    False,
    False,
  ),
]


@pytest.mark.parametrize(("tree", "pathwise", "expectation"), KNOWN_PL)
def test_truth_known_piecewise_linear_cases(tree, pathwise, expectation):
  assert truth.pl_truth(tree) == (pathwise, expectation), truth.to_str(tree)
  for rate in RATES:
    q = truth.keep_probability(rate)
    assert truth.pl_truth(tree, q) == (pathwise, expectation), (truth.to_str(tree), rate)


def _random_fraction(rng: random.Random) -> Fraction:
  return F(rng.randint(-4000, 4000), rng.choice([1, 3, 7, 64, 1000]))


def test_truth_breakpoints_make_every_tree_affine_between_them():
  """Between consecutive breakpoints, three random points lie on one line (exactly)."""
  rng = random.Random(0)
  for seed in range(150):
    tree = _seeded(gen_pl, seed)
    bps = truth.breakpoints(tree)
    for lo, hi in truth._intervals(bps):
      lo_ = lo if lo is not None else (hi if hi is not None else F(0)) - 50
      hi_ = hi if hi is not None else (lo if lo is not None else F(0)) + 50
      pts = sorted(lo_ + (hi_ - lo_) * F(rng.randint(1, 999), 1000) for _ in range(3))
      if len(set(pts)) < 3:
        continue
      (a, fa), (b, fb), (m, fm) = ((p, truth.pl_eval(tree, p)) for p in pts)
      assert (fb - fa) * (m - a) == (fm - fa) * (b - a), (truth.to_str(tree), lo, hi)


def test_truth_agrees_with_random_sampling():
  """A homogeneous verdict survives random exact sampling; a witness is a real violation."""
  rng = random.Random(1)
  for seed in range(150):
    tree = _seeded(gen_pl, seed)
    f = lambda t, tree=tree: truth.pl_eval(tree, t)
    witness = truth.pl_pathwise_witness(tree)
    if witness is None:
      assert f(F(0)) == 0
      for _ in range(20):
        x, t = _random_fraction(rng), F(rng.randint(1, 999), rng.randint(1, 999))
        assert f(t * x) == t * f(x), (truth.to_str(tree), x, t)
    elif witness == 0:
      assert f(F(0)) != 0
    else:
      unit = F(1) if witness > 0 else F(-1)
      assert f(witness) != abs(witness) * f(unit)
    # For a finite set of breakpoints, commuting at one rate is commuting at every rate.
    for rate in RATES:
      q = truth.keep_probability(rate)
      assert truth.pl_truth(tree, q) == truth.pl_truth(tree), (truth.to_str(tree), rate)


def test_truth_jax_functions_match_the_exact_evaluator():
  """The JAX function is what the exact evaluator models (dyadic inputs are exact in f32)."""
  xs = [F(k, 8) for k in range(-40, 41, 3)] + [F(0), F(1), F(-1), F(6), F(-6)]
  inputs = jnp.asarray([float(v) for v in xs], jnp.float32)
  for seed in range(60):
    tree = _seeded(gen_pl, seed)
    got = np.asarray(truth.to_jax(tree)(inputs), np.float64)
    want = np.array([float(truth.pl_eval(tree, v)) for v in xs])
    np.testing.assert_array_equal(got, want, err_msg=truth.to_str(tree))


def test_truth_generator_mix():
  """Between a third and two thirds of the random piecewise-linear trees commute."""
  trees = [_seeded(gen_pl, seed) for seed in range(300)]
  pathwise = [truth.pl_truth(t)[0] for t in trees]
  expectation = [truth.pl_truth(t)[1] for t in trees]
  assert 0.3 < np.mean(pathwise) < 0.7
  assert np.mean(pathwise) < np.mean(expectation) < 0.8
  assert len({truth.to_str(t) for t in trees}) > 200


def test_truth_smooth_cases():
  for tree in [("tanh", X), ("sq", X), ("softplus", X), ("add", X, ("sin", X))]:
    assert truth.smooth_pathwise_witness(tree) is not None
  for tree in [
    X,
    ("sqrt_sq", X),
    ("mul", X, ("add", ("sigmoid", X), ("sigmoid", ("neg", X)))),
    ("sub", ("add", X, ("exp", ("exp", ("cube", X)))), ("exp", ("exp", ("cube", X)))),
  ]:
    assert truth.smooth_pathwise_witness(tree) is None
    assert truth.smooth_expectation_witness(tree) is None
  assert truth.smooth_expectation_witness(("add", X, c(1))) is None
  assert truth.smooth_pathwise_witness(("add", X, c(1))) == (0.0, 1.0)
  for seed in range(40):
    tree = _seeded(gen_disguised, seed)
    assert truth.smooth_pathwise_witness(tree) is None, truth.to_str(tree)


# ---------------------------------------------------------------------------------------------
# The assertion helpers reject wrong verdicts


def _finding(status, cx=None):
  return Finding(status=status, method="fake", reason="a fake verdict", counterexample=cx)


def _verdict(pathwise, expectation, zero_preserving=True):
  return Verdict(
    function="fake",
    rate=None,
    shape=(4,),
    elementwise=True,
    zero_preserving=zero_preserving,
    f0=np.zeros(4),
    pathwise=pathwise,
    expectation=expectation,
  )


def _cx(x, rate, mask, pre, post, residual, index=0):
  return Counterexample(
    x=np.full(4, x),
    rate=rate,
    mask=None if mask is None else np.full(4, mask),
    pre=np.full(4, pre),
    post=np.full(4, post),
    index=index,
    residual=residual,
    method="fake",
  )


TANH_CX = _cx(1.0, 0.5, True, np.tanh(2.0), 2 * np.tanh(1.0), (-0.6, -0.5))
TANH_EXPECTATION_CX = _cx(1.0, 0.5, None, np.tanh(2.0) / 2, np.tanh(1.0), (-0.29, -0.27))


def test_helpers_accept_right_verdicts():
  truth.assert_pl_verdict(("relu", X), _verdict(_finding("proved"), _finding("proved")))
  right = _verdict(_finding("refuted", TANH_CX), _finding("refuted", TANH_EXPECTATION_CX))
  truth.assert_smooth_verdict(("tanh", X), right)
  shifted = _verdict(
    _finding("refuted", _cx(0.0, 0.25, False, 1.0, 0.0, (1.0, 1.0))),
    _finding("proved"),
    zero_preserving=False,
  )
  truth.assert_pl_verdict(("add", ("relu", X), c(1)), shifted)


UNKNOWN = _finding("unknown")
WRONG_PL = [
  # (tree, verdict, rate, demand a decision): each verdict is wrong for one reason.
  # proved, but false
  (("max", X, c(-1)), _verdict(_finding("proved"), UNKNOWN), None, False),
  # refuted, but true (with some counterexample)
  (("relu", X), _verdict(_finding("refuted", TANH_CX), UNKNOWN), None, False),
  # undecided on a piecewise-linear function
  (("abs", X), _verdict(UNKNOWN, _finding("proved")), None, True),
  # a counterexample whose two sides agree: f(4) = 4 = f(2)/q
  (
    ("add", ("relu", X), ("clip", F(-1), F(0), X)),
    _verdict(_finding("refuted", _cx(2.0, 0.5, True, 4.0, 3.0, (0.5, 1.5))), UNKNOWN),
    None,
    False,
  ),
  # a genuine counterexample whose certified interval misses the residual (-0.5)
  (
    ("clip", F(-1), F(1), X),
    _verdict(_finding("refuted", _cx(0.75, 0.5, True, 1.0, 1.5, (0.1, 0.2))), UNKNOWN),
    None,
    False,
  ),
  # a witness at another rate than the one asked about
  (
    ("clip", F(-1), F(1), X),
    _verdict(_finding("refuted", _cx(0.75, 0.5, True, 1.0, 1.5, (-0.6, -0.4))), UNKNOWN),
    0.25,
    False,
  ),
  # refuted without a counterexample
  (("clip", F(-1), F(1), X), _verdict(_finding("refuted"), UNKNOWN), None, False),
  # zero_preserving wrong
  (
    ("relu", X),
    _verdict(_finding("proved"), _finding("proved"), zero_preserving=False),
    None,
    True,
  ),
]


def test_pl_helper_accepts_the_wrong_verdicts_fixed():
  """The witness above is right at its own rate (so the rate alone makes that case wrong)."""
  cx = _cx(0.75, 0.5, True, 1.0, 1.5, (-0.6, -0.4))
  truth.assert_pl_verdict(
    ("clip", F(-1), F(1), X), _verdict(_finding("refuted", cx), UNKNOWN), 0.5, decided=False
  )


@pytest.mark.parametrize(("tree", "verdict", "rate", "decided"), WRONG_PL)
def test_pl_helper_rejects_wrong_verdicts(tree, verdict, rate, decided):
  with pytest.raises(AssertionError):
    truth.assert_pl_verdict(tree, verdict, rate, decided=decided)


WRONG_SMOOTH = [
  # tanh proved
  (("tanh", X), _verdict(_finding("proved"), _finding("refuted", TANH_EXPECTATION_CX)), False),
  (("tanh", X), _verdict(_finding("refuted", TANH_CX), _finding("proved")), False),
  # a refuted homogeneous function
  (("mul", X, ("exp", c(0))), _verdict(_finding("refuted", TANH_CX), _finding("unknown")), True),
  # tanh refuted at x = 0 with a kept mask: tanh(0/q) = tanh(0)/q, not a counterexample
  (
    ("tanh", X),
    _verdict(
      _finding("refuted", _cx(0.0, 0.5, True, 0.0, 0.0, (1e-30, 1e-29))), _finding("unknown")
    ),
    False,
  ),
  # x + 1 is not zero preserving
  (("add", X, c(1)), _verdict(_finding("unknown"), _finding("unknown")), False),
]


@pytest.mark.parametrize(("tree", "verdict", "homogeneous"), WRONG_SMOOTH)
def test_smooth_helper_rejects_wrong_verdicts(tree, verdict, homogeneous):
  with pytest.raises(AssertionError):
    truth.assert_smooth_verdict(tree, verdict, homogeneous=homogeneous)


# ---------------------------------------------------------------------------------------------
# The checker against the truth


@settings(max_examples=400, **SETTINGS)
@given(tree=pl_trees)
# Found by this test: a `where` whose condition compares two constants (crashed the checker).
@example(tree=("where_gt", c(0), c(0), X, c(0)))
def test_piecewise_linear_every_rate(tree):
  truth.assert_pl_verdict(tree, check(tree))


@settings(max_examples=300, **SETTINGS)
@given(tree=pl_trees, rate=st.sampled_from(RATES))
# Found by this test: a comparison that is a tie for every x, at a rate whose keep probability
# is not a power of 2 (left "unknown": the witness x/q is not a float, so its ball straddles
# the tie).
@example(tree=("max", ("where_gt", ("add", X, c(0)), X, X, X), c(-1)), rate=0.1)
@example(
  tree=(
    "where_gt",
    ("scale", F(5, 4), X),
    ("scale", F(5, 4), X),
    c(-1),
    ("max", ("scale", F(-3), X), c(F(-1, 2))),
  ),
  rate=0.25,
)
@example(tree=("relu", ("where_gt", c(0), c(0), X, c(0))), rate=0.5)
def test_piecewise_linear_fixed_rate(tree, rate):
  verdict = check(tree, rate)
  assert verdict.rate == rate
  truth.assert_pl_verdict(tree, verdict, rate)


@settings(max_examples=150, **SETTINGS)
@given(tree=smooth_trees)
def test_smooth_never_proved_unless_homogeneous(tree):
  truth.assert_smooth_verdict(tree, check(tree))


@settings(max_examples=60, **SETTINGS)
@given(tree=smooth_trees, rate=st.sampled_from(RATES))
def test_smooth_fixed_rate(tree, rate):
  truth.assert_smooth_verdict(tree, check(tree, rate), rate)


@settings(max_examples=50, **SETTINGS)
@given(tree=disguised_trees)
def test_homogeneous_in_disguise_never_refuted(tree):
  truth.assert_smooth_verdict(tree, check(tree), homogeneous=True)


SMOOTH_NOT_HOMOGENEOUS = [
  ("tanh", X),
  ("sigmoid", X),
  ("exp", X),
  ("sin", X),
  ("softplus", X),
  ("sq", X),
  ("cube", X),
  ("add", X, ("scale", F(1, 4), ("tanh", X))),
  ("mul", X, ("tanh", X)),
]


@pytest.mark.parametrize("tree", SMOOTH_NOT_HOMOGENEOUS, ids=truth.to_str)
def test_smooth_standard_cases_are_refuted(tree: Any):
  verdict = check(tree)
  truth.assert_smooth_verdict(tree, verdict)
  assert verdict.pathwise.status == "refuted", str(verdict)


DISGUISED = [
  ("mul", X, ("exp", c(0))),
  ("sub", ("scale", F(2), X), X),
  ("add", ("mul", ("abs", X), ("tanh", c(0))), X),
  ("sqrt_sq", X),
  ("mul", ("relu", X), ("scale", F(2), ("sigmoid", c(0)))),
  ("add", X, ("sub", ("tanh", X), ("tanh", X))),
  ("add", X, ("mul", ("sq", ("sin", c(0))), ("exp", X))),
]


@pytest.mark.parametrize("tree", DISGUISED, ids=truth.to_str)
def test_homogeneous_in_disguise_standard_cases(tree: Any):
  truth.assert_smooth_verdict(tree, check(tree), homogeneous=True)
