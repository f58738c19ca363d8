"""Study 1 of the report (jdrop._src.studies.commutation) on four activations, checked by hand.

One small run (relu, tanh, sigmoid, exponential; rate 1/2; 256 inputs, 64 masks) takes about
5 s. Its numbers are checked against independent oracles: the quadrature against closed forms
for x ~ N(0, 1), and the Monte-Carlo gaps against :func:`jdrop.montecarlo.exact_moments` on the
study's own inputs.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from jdrop import montecarlo
from jdrop._src import activations
from jdrop._src import report
from jdrop._src.studies import commutation

NAMES = ("relu", "tanh", "sigmoid", "exponential")
RATE = 0.5
Q = 1 - RATE
CONFIG = commutation.Config(rates=(RATE,), num_inputs=256, num_masks=64, seed=0)
# Each Monte-Carlo gap is z-tested at this level; 8 tests (4 activations, 2 orders) in all.
ALPHA = 1e-3
Z = scipy.stats.norm.ppf(1 - ALPHA / 2)


@pytest.fixture(scope="module")
def results() -> dict:
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(activations, "names", lambda: NAMES)
    return commutation.run(CONFIG)


def gap(results: dict, name: str) -> dict:
  (row,) = [r for r in results["rows"] if r["activation"] == name]
  return row["gaps"][str(RATE)]


def test_verdicts_and_summary(results: dict) -> None:
  rows = {r["activation"]: r["verdict"] for r in results["rows"]}
  assert list(rows) == list(NAMES)
  assert {a: v["pathwise"]["status"] for a, v in rows.items()} == {
    "relu": "proved",
    "tanh": "refuted",
    "sigmoid": "refuted",
    "exponential": "refuted",
  }
  assert {a: v["zero_preserving"] for a, v in rows.items()} == {
    "relu": True,
    "tanh": True,
    "sigmoid": False,
    "exponential": False,
  }
  assert "wrong for 1: tanh" in results["summary"]


def test_quadrature_equals_closed_forms_for_a_standard_normal(results: dict) -> None:
  # E relu(x) = 1/sqrt(2 pi), E relu(x)^2 = 1/2; E e^x = e^(1/2), E e^(2x) = e^2. Post-activation
  # dropout is unbiased, Var D(y) = E[y^2]/q - (E y)^2; for an odd f (tanh, and sigmoid - 1/2)
  # the pre-activation shift cancels over a symmetric x.
  e = math.e
  relu_var = 0.5 - 1 / (2 * math.pi)
  expected = {
    ("relu", "pre"): (0.0, (0.5 / Q - 1 / (2 * math.pi)) / relu_var),
    ("relu", "post"): (0.0, (0.5 / Q - 1 / (2 * math.pi)) / relu_var),
    ("tanh", "pre"): (0.0, None),
    ("tanh", "post"): (0.0, 1 / Q),
    ("sigmoid", "pre"): (0.0, None),
    ("exponential", "pre"): (Q * math.exp(1 / (2 * Q**2)) + 1 - Q - math.sqrt(e), None),
    ("exponential", "post"): (0.0, (e**2 / Q - e) / (e**2 - e)),
  }
  for (name, order), (shift, ratio) in expected.items():
    exact = gap(results, name)["exact"][order]
    assert exact["mean_shift"] == pytest.approx(shift, abs=1e-9), (name, order)
    if ratio is not None:
      assert exact["var_ratio"] == pytest.approx(ratio, rel=1e-9), (name, order)
  assert results["quadrature_error"] < 1e-9


def expected_gaps(name: str, rate: float) -> dict:
  """The Monte-Carlo gaps' expectation on the study's inputs, from the exact per-x moments."""
  x = jax.random.normal(jax.random.key(CONFIG.seed), (CONFIG.num_inputs,), jnp.float32)
  exact = montecarlo.exact_moments(name, x, rate=rate)
  fx = np.asarray(exact.reference, np.float64)
  out = {"eval_mean": fx.mean(), "eval_var": fx.var()}
  for order in ("pre", "post"):
    mean = np.asarray(getattr(exact, order).mean, np.float64)
    var = np.asarray(getattr(exact, order).var, np.float64)
    out[order] = {
      "mean_shift": (mean - fx).mean(),
      # Masks are independent across inputs: the mask noise of the mean over x.
      "stderr": math.sqrt(var.mean() / CONFIG.num_masks / x.size),
      "var_ratio": (var.mean() + mean.var()) / fx.var(),
    }
  return out


def gaps_agree(measured: dict, expected: dict, order: str) -> bool:
  m, e = measured[order], expected[order]
  if e["stderr"] == 0:
    return m["mean_shift"] == pytest.approx(e["mean_shift"], abs=1e-6)
  return abs(m["mean_shift"] - e["mean_shift"]) <= Z * e["stderr"]


@pytest.mark.parametrize("name", NAMES)
def test_monte_carlo_gaps_match_exact_moments_on_the_same_inputs(results: dict, name: str) -> None:
  measured, expected = gap(results, name), expected_gaps(name, RATE)
  assert measured["eval_mean"] == pytest.approx(expected["eval_mean"], rel=1e-6)
  assert measured["eval_var"] == pytest.approx(expected["eval_var"], rel=1e-6)
  for order in ("pre", "post"):
    assert gaps_agree(measured, expected, order), (name, order)
    # The variance ratio is a ratio of sample variances over 256 x 64 draws; the largest
    # relative error of this run is 4% (the heavy-tailed exponential, pre).
    assert measured[order]["var_ratio"] == pytest.approx(expected[order]["var_ratio"], rel=0.1)


def test_monte_carlo_gaps_rejects_the_other_order_and_another_rate(results: dict) -> None:
  # The same z-test tells the orders apart, and rate 1/2 from rate 0.1, for the exponential.
  measured = gap(results, "exponential")
  expected = expected_gaps("exponential", RATE)
  swapped = {"pre": expected["post"], "post": expected["pre"]}
  assert not gaps_agree(measured, swapped, "pre")
  assert not gaps_agree(measured, swapped, "post")
  assert not gaps_agree(measured, expected_gaps("exponential", 0.1), "pre")


def test_the_reports_answer_on_this_run_names_relu_and_tanh(results: dict) -> None:
  text = report.answer({"commutation": results})
  assert "of the 4 activations checked, the checker proves both orders identical" in text
  assert "for every mask and every rate for 1 (relu)" in text
  assert "1 of the 2 activations with f(0) = 0 still differ" in text
  assert "e.g. tanh)" in text


def test_mean_shift_family_recomputes_from_the_stored_gaps(results: dict) -> None:
  """Holm over every (activation, rate, order) z-test, from the stored shifts and errors."""
  family = results["tests"]["mean_shift"]
  cells = [
    (row["activation"], order, row["gaps"][str(RATE)][order])
    for row in results["rows"]
    if row["gaps"]
    for order in ("pre", "post")
  ]
  assert family["m"] == len(cells) == 2 * len(NAMES)
  raw = []
  for (name, order, g), test in zip(cells, family["tests"], strict=True):
    assert test["label"] == f"{name}, rate {RATE}, {order}"
    z = g["mean_shift"] / g["mean_shift_stderr"] if g["mean_shift_stderr"] else 0.0
    raw.append(2 * scipy.stats.norm.sf(abs(z)))
    assert test["p"] == pytest.approx(raw[-1], rel=1e-9, abs=1e-300)
  m = len(raw)
  order = np.argsort(raw)
  expected = np.minimum(1, np.maximum.accumulate((m - np.arange(m)) * np.array(raw)[order]))
  np.testing.assert_allclose([family["tests"][i]["p_holm"] for i in order], expected, rtol=1e-9)
  # Post-activation dropout does not shift the mean; pre-activation exponential does.
  verdict = {t["label"]: t["rejected"] for t in family["tests"]}
  assert not any(v for label, v in verdict.items() if label.endswith("post"))
  assert verdict[f"exponential, rate {RATE}, pre"]
  text = commutation.section(results, ["a.png", "b.png"])
  assert f"Holm over the family of all m = {m} at family-wise level 0.05" in text
  assert "they make 4 such statements (exponential and sigmoid, both orders, at rate 0.5)" in text
  assert "a family-wise level of at most 0.011 (Bonferroni)" in text
