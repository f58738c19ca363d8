"""The "What the literature reports" section: its numbers come from this run's results.

Fake results of each study (only the keys the section reads) give a text with their numbers;
two different fakes give two different texts; a study that did not run gives no paragraph.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jdrop._src import report
from jdrop._src.studies import literature


def commutation(shift: float) -> dict[str, Any]:
  gap = {"exact": {"pre": {"mean_shift": shift}, "post": {"mean_shift": 1e-9}}}
  rows = [
    {"activation": "tanh", "gaps": {"0.1": gap, "0.5": copy.deepcopy(gap)}},
    {
      "activation": "relu",
      "gaps": {"0.1": {"exact": {o: {"mean_shift": 0.0} for o in gap["exact"]}}},
    },
    {"activation": "sin", "gaps": {}},
  ]
  rows[0]["gaps"]["0.1"]["exact"]["pre"]["mean_shift"] = shift / 2
  return {"rows": rows}


def variance(measured: float) -> dict[str, Any]:
  cell = {"measured": measured, "stderr": 0.001, "li": 3.25}
  return {
    "config": {"rates": [0.1, 0.5]},
    "rows": [
      {"name": "linear, standardised", "rates": {"0.5": {"pre": cell}}},
      {"name": "linear, raw pixels", "rates": {"0.5": {"pre": dict(cell, measured=3.5)}}},
    ],
    "tests": {"monte_carlo": {"m": 12, "tests": [{"rejected": False}] * 11 + [{"rejected": True}]}},
  }


def selu(alpha_var: float, standard_rejected: bool) -> dict[str, Any]:
  def variant(name: str, kind: str, var: float) -> dict[str, Any]:
    return {
      "name": name,
      "kind": kind,
      "var": [{"mean": var, "low": var - 0.02, "high": var + 0.02}],
    }

  variants = [
    variant("no dropout", "none", 1.0),
    variant("alpha dropout 0.1", "alpha", alpha_var),
    variant("standard dropout 0.1", "standard", 1.6),
  ]
  tests = [
    {"label": "no dropout: var = 1", "rejected": False},
    {"label": "alpha dropout 0.1: var = 1", "rejected": False},
    {"label": "standard dropout 0.1: var = 1", "rejected": standard_rejected},
  ]
  return {
    "config": {"depth": 16},
    "level": 0.95,
    "variants": variants,
    "tests": {"fixed_point": {"tests": tests}},
  }


def training(error: float) -> dict[str, Any]:
  runs = [
    {"task": "mnist1d", "variant": "relu", "order": "none", "rate": 0.0, "test_error": [0.4, 0.42]},
    {"task": "mnist1d", "variant": "relu", "order": "post", "rate": 0.1, "test_error": [error] * 2},
    {"task": "digits", "variant": "relu", "order": "pre", "rate": 0.1, "test_error": [0.01, 0.01]},
  ]
  data = {"digits": {"name": "scikit-learn digits"}, "mnist1d": {"name": "MNIST-1D"}}
  return {"data": data, "seeds": [0, 1], "runs": runs}


def everything(x: float) -> dict[str, Any]:
  return {
    "commutation": commutation(0.1 * x),
    "variance": variance(1.99 + 0.001 * x),
    "selu_depth": selu(1.0 + 0.01 * x, standard_rejected=x > 1),
    "training": training(0.35 - 0.01 * x),
  }


def test_numbers_come_from_the_results() -> None:
  text = literature.section(everything(1.0))
  assert text.startswith("## What the literature reports")
  for cited in ("Srivastava et al.", "Li et al.", "Klambauer et al.", "Liu et al.", "Greydanus"):
    assert f"**{cited}" in text
  assert "up to 0.1 for pre-activation dropout (tanh, rate 0.5)" in text
  assert "measures 1.9910 ± 0.0010 against 1/q = 2.0000" in text
  assert "3.500 against the formula's 3.250" in text and "rejects measured = exact for 1" in text
  assert "alpha dropout 0.1 1.010 [0.990, 1.030], not rejected" in text
  assert "standard dropout 0.1 1.600 [1.580, 1.620], not rejected" in text
  assert "is 66.0% at best (relu, post, rate 0.1) and 59.0%–59.0% without dropout" in text
  assert "68% for MLP" in text  # the reported number, beside ours


def test_different_results_give_different_text() -> None:
  one, two = literature.section(everything(1.0)), literature.section(everything(2.0))
  assert one != two
  assert "standard dropout 0.1 1.600 [1.580, 1.620], rejected" in two
  assert "is 67.0% at best" in two and "up to 0.2 for pre-activation" in two
  for name, build in (("srivastava", literature.srivastava), ("greydanus", literature.greydanus)):
    assert build(everything(1.0)) != build(everything(2.0)), name


@pytest.mark.parametrize(
  ("study", "paragraphs"),
  [
    ("commutation", ("Srivastava et al.", "Liu et al.")),
    ("variance", ("Li et al.",)),
    ("selu_depth", ("Klambauer et al.",)),
    ("training", ("Greydanus",)),
  ],
)
def test_nothing_is_rendered_for_a_study_that_did_not_run(
  study: str, paragraphs: tuple[str, ...]
) -> None:
  results = everything(1.0)
  del results[study]
  text = literature.section(results)
  for cited in paragraphs:
    assert f"**{cited}" not in text
  assert literature.section({study: everything(1.0)[study]}).count("**") == 2 * len(paragraphs)


def test_no_section_without_any_compared_study() -> None:
  assert literature.section({}) == ""
  assert literature.section({"uncertainty": {}, "audit": {}}) == ""
  no_mnist1d = {"training": {**training(0.3), "data": {"digits": {"name": "scikit-learn digits"}}}}
  assert literature.section(no_mnist1d) == ""


def test_the_report_renders_the_section_after_the_studies() -> None:
  meta = {
    "command": "python -m jdrop report",
    "date": "today",
    "machine": "m",
    "backend": "cpu",
    "configuration": "default",
    "versions": {},
    "seconds": {},
    "data": "d",
  }
  results = {"selu_depth": selu(1.0, standard_rejected=True)}
  text = report.render(results, {"selu_depth": "## 4. SELU through depth\n"}, meta)
  assert (
    text.index("## 4. SELU")
    < text.index("## What the literature")
    < text.index("## Reproducibility")
  )
  assert "## What the literature" not in report.render({}, {}, meta)
