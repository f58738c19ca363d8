"""The report's answer and claim verdicts, from hand-made study results with known signs.

No study runs here (test_report.py covers building the report with fake studies, and the
study tests run ``answer`` on tiny real runs): each result below is written so that exactly
one reading is right, and every sentence that depends on a sign or a count is checked.
"""

from __future__ import annotations

import copy

import golden_util
import pytest

from jdrop._src import report


def verdict(pathwise: str, zero: bool, *, expectation: str = "refuted", cx=None) -> dict:
  return {
    "pathwise": {"status": pathwise, "counterexample": cx},
    "expectation": {"status": expectation},
    "zero_preserving": zero,
    "float_level": {"dtypes": [{"bit_identical": True, "max_ulps": 0}]},
  }


TANH_CX = {"x": [0.5, 2.0], "index": 1, "rate": 0.5, "pre": [0.0, 0.9993], "post": [0.0, 1.928]}
COMMUTATION = {
  "rows": [
    {"activation": "relu", "verdict": verdict("proved", True, expectation="proved")},
    {"activation": "tanh", "verdict": verdict("refuted", True, cx=TANH_CX)},
    {"activation": "gelu", "verdict": verdict("refuted", True)},
    {"activation": "sigmoid", "verdict": verdict("refuted", False)},
    {"activation": "exponential", "verdict": verdict("refuted", False)},
    {"activation": "glu", "verdict": None},
  ]
}


def paired(
  variant: str, rate: float, low: float, high: float, *, p_holm: float | None = None
) -> dict:
  """A comparison whose 95% interval is [low, high]; its raw p-value is below 0.05 iff the
  interval excludes 0, and its Holm-adjusted one is ``p_holm`` (default: 4 times the raw)."""
  mean = (low + high) / 2
  p_raw = 0.001 if low > 0 or high < 0 else 0.5
  p_holm = min(1.0, 4 * p_raw) if p_holm is None else p_holm
  return {
    "variant": variant,
    "rate": rate,
    "pre_minus_post": {
      "mean": mean,
      "low": low,
      "high": high,
      "n": 4,
      "p_t": p_raw,
      "p_t_holm": p_holm,
      "significant": p_holm < 0.05,
    },
  }


def training(*rows: dict, relu_identical: bool = True) -> dict:
  return {
    "data": {"name": "digits"},
    "seeds": [0, 1, 2, 3],
    "summary": list(rows),
    "family": {"size": len(rows), "alpha": 0.05},
    "identity": [{"variant": "relu", "rate": 0.5, "bit_identical": relu_identical}],
  }


# tanh: pre better at two rates (the interval lies below 0); sigmoid: post better at rate 0.3
# (above 0); gelu: no difference detected (the interval holds 0).
KNOWN = training(
  paired("tanh", 0.3, -0.04, -0.01),
  paired("tanh", 0.5, -0.05, -0.02),
  paired("sigmoid", 0.3, 0.01, 0.04),
  paired("gelu", 0.1, -0.01, 0.02),
)


def test_answer_sorts_each_pair_by_the_side_of_zero_its_interval_is_on():
  text = report.answer({"commutation": COMMUTATION, "training": KNOWN})
  assert (
    "corrected for testing m = 4 comparisons (Holm, family-wise level 0.05), the"
    " pre-minus-post difference in test error is significant for 3 of 4 (activation, rate)"
    " pairs" in text
  )
  assert (
    "pre-activation dropout is better for tanh (rate 0.3, 0.5) and post-activation dropout"
    " for sigmoid (rate 0.3); elsewhere" in text
  )
  assert "on digits (4 seeds)" in text
  # sigmoid (f(0) != 0) trained better *post* here: no advice to tune its order.
  assert "f(0) != 0" not in text


def test_answer_counts_only_what_survives_the_correction():
  # tanh at 0.3: the 95% interval excludes 0 (raw p < 0.05) but Holm's p does not: not named.
  corrected = training(
    paired("tanh", 0.3, -0.04, -0.01, p_holm=0.2),
    paired("tanh", 0.5, -0.05, -0.02),
    paired("gelu", 0.1, -0.01, 0.02),
  )
  text = report.answer({"commutation": COMMUTATION, "training": corrected})
  assert "m = 3 comparisons" in text and "significant for 1 of 3 (activation, rate)" in text
  assert "pre-activation dropout is better for tanh (rate 0.5) and post" in text
  # The check can fail: reading the raw intervals instead would name rate 0.3 as well.
  assert "tanh (rate 0.3, 0.5)" not in text
  assert "post-activation dropout in 0" in report._training_answer(corrected)
  assert "significant for 1 of 3" in report._training_answer(corrected)


def with_learning_rates(results: dict, *lrs: float) -> dict:
  """``results`` as if trained at each of ``lrs``: every comparison repeated per learning
  rate, the means scaled by the learning rate's position (1, 2, ...), the table rebuilt."""
  from jdrop._src.studies import training as study

  summary = [
    dict(row, learning_rate=lr, pre_minus_post=dict(row["pre_minus_post"]))
    for lr in lrs
    for row in results["summary"]
  ]
  for i, row in enumerate(summary):
    row["pre_minus_post"]["mean"] *= 1 + i // len(results["summary"])
  return dict(
    results,
    summary=summary,
    family={"size": len(summary), "alpha": 0.05},
    replication=study.replication(summary),
  )


def two_tasks(*cells: tuple[str, float, float, float], tasks=("digits", "mnist1d")) -> dict:
  """Training results as the study writes them, on digits and MNIST-1D (or ``tasks``): cells
  (variant, rate, one mean per task) with the Holm-adjusted p-value 0.001 where the mean is not
  0, else 1."""
  from jdrop._src.studies import training as study

  summary = []
  for variant, rate, *means in cells:
    for task, mean in zip(tasks, means, strict=True):
      p = 0.001 if mean else 1.0
      d = {"mean": mean, "low": mean, "high": mean, "n": 4, "p_t": p / 8, "p_t_holm": p}
      summary.append(
        {
          "task": task,
          "variant": variant,
          "rate": rate,
          "pre_minus_post": dict(d, significant=p < 0.05),
        }
      )
  names = {"digits": "digits", "mnist1d": "MNIST-1D"}
  return {
    "tasks": list(tasks),
    "data": {task: {"name": names[task]} for task in tasks},
    "seeds": [0, 1, 2, 3],
    "summary": summary,
    "family": {"size": len(summary), "alpha": 0.05},
    "replication": study.replication(summary),
    "identity": [{"variant": "relu", "rate": 0.5, "bit_identical": True}],
  }


def test_answer_names_what_replicates_across_tasks():
  # sigmoid: pre better on both tasks; tanh: post better on digits only; gelu: opposite signs;
  # relu: nothing anywhere.
  results = two_tasks(
    ("sigmoid", 0.5, -0.02, -0.03),
    ("tanh", 0.5, 0.01, 0.0),
    ("gelu", 0.5, 0.01, -0.01),
    ("relu", 0.5, 0.0, 0.0),
  )
  text = report.answer({"commutation": COMMUTATION, "training": results})
  assert "On 2 tasks (digits, MNIST-1D; 4 seeds each)" in text
  assert "corrected for testing m = 8 comparisons" in text
  assert "significant for 5 of 8 (task, activation, rate) comparisons" in text
  assert "The order matters on every task for sigmoid (rate 0.5: pre better)" in text
  assert (
    "on some tasks only for tanh (rate 0.5: post better), gelu (rate 0.5: opposite signs)" in text
  )
  assert "on none for relu." in text
  assert "for activations with f(0) != 0 (sigmoid here)" in text
  assert "pre-activation dropout trained better on every task" in text
  # The check can fail: sigmoid pre better on one task only is not "every task".
  once = two_tasks(("sigmoid", 0.5, -0.02, 0.0), ("relu", 0.5, 0.0, 0.0))
  text = report.answer({"commutation": COMMUTATION, "training": once})
  assert "every task for none; on some tasks only for sigmoid (rate 0.5: pre better)" in text
  assert "f(0) != 0" not in text


def test_answer_counts_the_checkers_verdicts():
  text = report.answer({"commutation": COMMUTATION, "training": KNOWN})
  assert "of the 5 activations checked, the checker proves both orders identical" in text
  assert (
    "every mask and every rate for 1 (relu), and relu trains to bit-identical parameters" in text
  )
  assert "2 of the 3 activations with f(0) = 0 still differ" in text
  assert "e.g. tanh, gelu)" in text
  not_identical = training(relu_identical=False)
  assert "bit-identical" not in report.answer(
    {"commutation": COMMUTATION, "training": not_identical}
  )


def test_answer_joins_the_proved_and_names_three_that_differ():
  # Two proved (joined with ", ") and four zero-keeping that differ, of which three are named.
  rows = [
    {"activation": name, "verdict": verdict(status, zero)}
    for name, status, zero in [
      ("relu", "proved", True),
      ("leaky_relu", "proved", True),
      ("tanh", "refuted", True),
      ("gelu", "refuted", True),
      ("elu", "refuted", True),
      ("softsign", "refuted", True),
      ("sigmoid", "refuted", False),
    ]
  ]
  text = report.answer({"commutation": {"rows": rows}})
  assert "of the 7 activations checked" in text
  assert "every mask and every rate for 2 (relu, leaky_relu)." in text
  assert "4 of the 6 activations with f(0) = 0 still differ" in text
  assert "certified counterexample, e.g. tanh, gelu, elu)." in text


def test_answer_advises_tuning_only_where_f0_is_not_0_and_pre_trained_better():
  flipped = training(paired("sigmoid", 0.3, -0.04, -0.01), paired("tanh", 0.5, -0.05, -0.02))
  text = report.answer({"commutation": COMMUTATION, "training": flipped})
  assert "pre-activation dropout is better for sigmoid (rate 0.3), tanh (rate 0.5)" in text
  assert "post-activation dropout for none" in text
  assert "for activations with f(0) != 0 (sigmoid here)" in text  # not tanh: tanh(0) = 0
  both = training(
    paired("sigmoid", 0.3, -0.04, -0.01),
    paired("exponential", 0.1, -0.03, -0.01),
    paired("tanh", 0.5, -0.05, -0.02),
  )
  text = report.answer({"commutation": COMMUTATION, "training": both})
  assert "for activations with f(0) != 0 (sigmoid, exponential here)" in text


def test_answer_without_training_recommends_post():
  text = report.answer({"commutation": COMMUTATION})
  assert "Which order trains better" not in text
  assert "As a default, put dropout after the activation" in text


def test_training_answer_counts_each_side():
  text = report._training_answer(KNOWN)
  assert "corrected for testing m = 4 comparisons (Holm" in text
  assert "significant for 3 of 4 (activation, rate) pairs" in text
  assert "pre-activation dropout is better in 2, post-activation dropout in 1" in text
  assert "For relu the two orders train to bit-identical parameters." in text
  broken = report._training_answer(training(relu_identical=False))
  assert "For relu the parameters were NOT bit-identical" in broken


def claims(commutation: dict | None = COMMUTATION, train: dict | None = KNOWN) -> list[str]:
  """The claims section as (quote, verdict) paragraphs: the verdict is the bold line."""
  results = {"commutation": commutation, "training": train}
  return report.claims({k: v for k, v in results.items() if v is not None}).split("\n")


def verdict_of(lines: list[str], quote_start: str) -> str:
  i = next(i for i, line in enumerate(lines) if line.startswith(f"> {quote_start}"))
  return lines[i + 2]


def test_claims_relu_gives_exactly_the_same_results():
  quote = "isn't that producing the exact same results?"
  assert verdict_of(claims(), quote).startswith("**Yes for relu, exactly, and even in floating")
  not_identical = claims(train=training(relu_identical=False))
  assert verdict_of(not_identical, quote).startswith("**Yes for relu over the reals;")
  unproved = copy.deepcopy(COMMUTATION)
  unproved["rows"][0]["verdict"]["pathwise"]["status"] = "unknown"
  assert verdict_of(claims(unproved), quote).startswith("**Not shown.**")
  ulps = copy.deepcopy(COMMUTATION)
  ulps["rows"][0]["verdict"]["float_level"]["dtypes"][0].update(bit_identical=False, max_ulps=1)
  line = verdict_of(claims(ulps), quote)
  assert line.startswith("**Yes for relu over the reals;") and "within 1 ulp" in line


def test_claims_zero_to_zero_is_the_wrong_reason():
  line = verdict_of(claims(), "relu maps zero to zero")
  assert line.startswith("**The conclusion is right for relu, the reason is not.**")
  assert "2 of the 3 registry activations with f(0) = 0 do not commute: tanh, gelu." in line
  assert "For tanh at x = 2, rate 0.5: f(D(x)) = 0.9993 but D(f(x)) = 1.928 (certified)." in line
  only_relu = {"rows": COMMUTATION["rows"][:1]}
  line = verdict_of(claims(only_relu), "relu maps zero to zero")
  assert line.startswith("**Right for every activation checked here.**")


@pytest.mark.parametrize(
  ("sigmoid", "headline"),
  [
    (paired("sigmoid", 0.3, -0.04, -0.01), "did train better (rate 0.3, significant after Holm"),
    (paired("sigmoid", 0.3, 0.01, 0.04), "trained worse (rate 0.3, significant after Holm"),
    (paired("sigmoid", 0.3, -0.01, 0.04), "no difference for sigmoid that survives Holm"),
    (
      paired("sigmoid", 0.3, -0.04, -0.01, p_holm=0.3),
      "no difference for sigmoid that survives Holm",
    ),
  ],
  ids=["pre-better", "post-better", "neither", "raw-only"],
)
def test_claims_sigmoid_headline_follows_the_sign(sigmoid, headline):
  line = verdict_of(claims(train=training(sigmoid)), "I'd probably put dropout before sigmoid")
  assert headline in line
  low, high = sigmoid["pre_minus_post"]["low"], sigmoid["pre_minus_post"]["high"]
  interval = f"[{100 * low:+.2f}, {100 * high:+.2f}]"
  assert "In training, test error pre minus post: rate 0.3: " in line and interval in line
  holm = sigmoid["pre_minus_post"]["p_t_holm"]
  assert f"Holm-adjusted p = {holm:.2g}" in line and "family of 1 comparisons" in line


def test_claims_sigmoid_headline_when_tasks_disagree():
  # The default report's own case: pre better on digits, post better on MNIST-1D, both
  # significant; reading it as "no difference" would be wrong.
  results = two_tasks(("sigmoid", 0.3, -0.016, 0.015))
  line = verdict_of(claims(train=results), "I'd probably put dropout before sigmoid")
  assert "the order mattered in opposite directions: pre-activation dropout trained better" in line
  assert "no difference for sigmoid" not in line
  assert "digits, rate 0.3: -1.60 points" in line and "MNIST-1D, rate 0.3: +1.50 points" in line


# ----------------------------------------------------------------------------
# The whole text, against a reviewed copy.
#
# The tests above check the sentences that carry a sign or a count. The report's other words
# are claims too (which paper does what, what a dropped unit sends), so the full answer and
# claims rendered from the cases below are compared with tests/golden/report_text.md, a copy
# read and checked by hand. A change to the wording fails here; after reading the diff,
# rewrite the copy with JDROP_UPDATE_GOLDEN=1 pytest tests/test_report_claims.py.


def gap(pre: float, pre_stderr: float, post: float, post_stderr: float) -> dict:
  """A measured mean shift per order with its standard error, and made-up exact values."""
  return {
    "pre": {"mean_shift": pre, "mean_shift_stderr": pre_stderr},
    "post": {"mean_shift": post, "mean_shift_stderr": post_stderr},
    "exact": {"pre": {"mean_shift": pre / 2}, "post": {"mean_shift": post / 4}},
  }


def with_gaps(commutation: dict) -> dict:
  """``commutation`` with measured gaps for exponential and sigmoid at two rates: at 0.5 (the
  largest, the one reported; "5e-05" is larger as a string) one shift is exactly 3 standard
  errors from 0 and one 3.5."""
  out = copy.deepcopy(commutation)
  gaps = {
    "exponential": {"0.1": gap(9.0, 1.0, 9.0, 1.0), "0.5": gap(0.75, 0.25, 0.875, 0.25)},
    "sigmoid": {"0.5": gap(-0.625, 0.125, 0.375, 0.125), "5e-05": gap(5.0, 1.0, 5.0, 1.0)},
  }
  for row in out["rows"]:
    row["gaps"] = gaps.get(row["activation"], {})
  return out


def trained_on_one(training: dict, variant: str, task: str) -> dict:
  """``training`` as if ``task`` had not trained ``variant``."""
  from jdrop._src.studies import training as study

  summary = [r for r in training["summary"] if (r["variant"], r["task"]) != (variant, task)]
  family = dict(training["family"], size=len(summary))
  return dict(training, summary=summary, family=family, replication=study.replication(summary))


def golden_cases() -> dict[str, dict]:
  """Study results that between them take every branch of ``answer`` and ``claims``."""
  ulps = with_gaps(COMMUTATION)
  ulps["rows"][0]["verdict"]["float_level"]["dtypes"][0].update(bit_identical=False, max_ulps=2)
  only_relu = {"rows": COMMUTATION["rows"][:1]}
  flipped = training(paired("sigmoid", 0.3, -0.04, -0.01), paired("tanh", 0.5, -0.05, -0.02))
  return {
    "one task, sigmoid post better": {"commutation": with_gaps(COMMUTATION), "training": KNOWN},
    "one task, sigmoid pre better, relu not bit-identical": {
      "commutation": ulps,
      "training": dict(flipped, identity=[{"variant": "relu", "bit_identical": False}]),
    },
    "two tasks": {
      "commutation": with_gaps(COMMUTATION),
      "training": two_tasks(
        ("sigmoid", 0.5, -0.02, -0.03),
        ("sigmoid", 0.1, -0.01, 0.02),
        ("tanh", 0.5, 0.01, 0.0),
        ("gelu", 0.5, 0.01, -0.01),
        ("relu", 0.5, 0.0, 0.0),
      ),
    },
    "one task, as the study writes it": {
      "commutation": with_gaps(COMMUTATION),
      "training": two_tasks(("tanh", 0.3, -0.02), ("sigmoid", 0.3, 0.0), tasks=("digits",)),
    },
    "two tasks, somewhere before everywhere": {
      "commutation": with_gaps(COMMUTATION),
      "training": two_tasks(("gelu", 0.1, 0.01, 0.0), ("gelu", 0.5, -0.01, -0.02)),
    },
    "two tasks, two learning rates": {
      "commutation": with_gaps(COMMUTATION),
      "training": with_learning_rates(
        two_tasks(("sigmoid", 0.5, -0.02, -0.03), ("tanh", 0.3, 0.01, -0.01)), 0.001, 0.01
      ),
    },
    "one task, two learning rates": {
      "commutation": with_gaps(COMMUTATION),
      "training": with_learning_rates(
        two_tasks(("sigmoid", 0.5, -0.02), ("tanh", 0.3, 0.01), tasks=("digits",)), 0.001, 0.01
      ),
    },
    "two tasks, tanh trained on one": {
      "commutation": with_gaps(COMMUTATION),
      "training": trained_on_one(
        two_tasks(("sigmoid", 0.5, -0.02, -0.03), ("tanh", 0.5, 0.02, 0.0)), "tanh", "mnist1d"
      ),
    },
    "two tasks, sigmoid pre better": {
      "commutation": with_gaps(COMMUTATION),
      "training": two_tasks(("sigmoid", 0.5, -0.02, 0.0), ("sigmoid", 0.1, 0.0, -0.01)),
    },
    "two tasks, sigmoid post better": {
      "commutation": with_gaps(COMMUTATION),
      "training": two_tasks(("sigmoid", 0.5, 0.02, 0.03), ("sigmoid", 0.3, 0.0, 0.01)),
    },
    "two tasks, nothing significant": {
      "commutation": only_relu,
      "training": two_tasks(("sigmoid", 0.5, 0.0, 0.0), ("relu", 0.5, 0.0, 0.0)),
    },
    "no training": {"commutation": with_gaps(COMMUTATION)},
    "no commutation": {"training": KNOWN},
    "no relu trained": {"training": dict(KNOWN, identity=[])},
    "neither": {},
  }


def golden_text() -> str:
  parts = []
  for name, results in golden_cases().items():
    parts += [f"<!-- case: {name} -->", "", report.answer(results), "", report.claims(results)]
    if results.get("training"):
      parts += ["", report._training_answer(results["training"])]
    parts.append("")
  return "\n".join(parts)


META = {
  "command": "python -m jdrop report --out r",
  "date": "2026-12-05T06:30:00+00:00",
  "machine": "a CPU, 2 cores",
  "backend": "cpu (cpu)",
  "configuration": "default",
  "data": "the data",
  "versions": {"python": "3.11", "jax": "0.10"},
  "seconds": {"commutation": 1.5, "variance": 2.0},
}


def golden_render() -> str:
  """The whole REPORT.md of one case: header, answer, claims, two sections, the literature
  (from the case's commutation results) and the reproducibility list."""
  results = golden_cases()["no training"]
  sections = {"variance": "## 3. Variance\n\nA section.", "commutation": "## 1. Table\n\nRows."}
  return "<!-- render -->\n\n" + report.render(results, sections, META)


def test_answer_and_claims_match_the_reviewed_text():
  golden_util.check("report_text.md", golden_text() + golden_render(), "the report's text")


@pytest.mark.parametrize(
  ("models", "text"),
  [
    ((), "an MLP"),  # results without task_configs (a training study from before them)
    (("mlp", "mlp"), "an MLP"),
    (("cnn",), "a CNN"),
    (("cnn", "mlp"), "an MLP and a CNN"),
    (("transformer", "cnn", "mlp", "mlp"), "an MLP, a CNN and a Transformer"),
  ],
)
def test_training_answer_names_the_models_the_tasks_train(models, text):
  training = {"task_configs": {f"task{k}": {"model": m} for k, m in enumerate(models)}}
  if not models:
    training = {}
  assert report._models(training) == text


def test_render_says_the_default_is_smaller_only_for_the_default():
  results = golden_cases()["no training"]
  full = report.render(results, {}, dict(META, configuration="full")).splitlines()[2]
  assert full.endswith("; configuration: full._")
  default = report.render(results, {}, META).splitlines()[2]
  assert default.endswith(
    "configuration: default (smaller than `--full`: fewer seeds and steps,"
    " and some training tasks on fewer activations, as each section says)._"
  )
