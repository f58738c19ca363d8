"""What the literature reports, next to this run's corresponding numbers.

One paragraph per published result, rendered only when the study it is compared with ran: the
paper's claim (with a number only where the number was checked in the source, cited by table
or section; otherwise what the paper reports, in words) and this run's number, computed from
the study's results.

Sources:

* Srivastava, Hinton, Krizhevsky, Sutskever and Salakhutdinov, "Dropout: A Simple Way to
  Prevent Neural Networks from Overfitting", JMLR 15 (2014): section 4 (the mask multiplies a
  layer's outputs ``y = f(z)``), Table 2 (models compared on MNIST).
* Li, Chen, Hu and Yang, "Understanding the Disharmony between Dropout and Batch Normalization
  by Variance Shift", CVPR 2019: section 3 (the variance shift), the abstract (a large feature
  dimension, as in Wide ResNet, reduces it).
* Klambauer, Unterthiner, Mayr and Hochreiter, "Self-Normalizing Neural Networks", NeurIPS
  2017: SELU with ``lambda ~ 1.0507``, ``alpha ~ 1.6733`` and alpha dropout.
* Liu, Xu, Jin, Shen and Darrell, "Dropout Reduces Underfitting", ICML 2023 (PMLR 202:
  22233-22248): early and late dropout (the abstract).
* Greydanus, "Scaling down Deep Learning" (2020), MNIST-1D: the test accuracies in the table of
  the dataset's README (github.com/greydanus/mnist1d).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Test accuracies on MNIST-1D from the table in github.com/greydanus/mnist1d's README.
MNIST1D_REPORTED = {
  "logistic regression": 0.32,
  "MLP": 0.68,
  "CNN": 0.94,
  "GRU": 0.91,
  "human expert": 0.96,
}


def _exact_shifts(commutation: dict, order: str) -> list[tuple[float, str, str]]:
  """``(|exact mean shift|, activation, rate)`` of every measured activation and rate."""
  return [
    (abs(gap["exact"][order]["mean_shift"]), row["activation"], rate)
    for row in commutation["rows"]
    for rate, gap in row.get("gaps", {}).items()
  ]


def srivastava(results: dict) -> str | None:
  """Srivastava et al.'s placement against study 1's exact mean shift of each order."""
  commutation = results.get("commutation")
  post = _exact_shifts(commutation, "post") if commutation else []
  if not post:
    return None
  pre = max(_exact_shifts(commutation, "pre"))
  return (
    "**Srivastava et al. (JMLR 2014)** apply the mask to a layer's outputs y = f(z) (section 4:"
    " dense -> activation -> dropout) and compare models on MNIST (Table 2); they do not compare"
    " the two placements. Here (study 1), post-activation"
    " dropout leaves the next layer's input mean where eval mode has it: its exact mean shift"
    f" is at most {max(post)[0]:.1e} over {len({a for _, a, _ in post})} activations and"
    f" {len({r for _, _, r in post})} rates, against up to {pre[0]:.3g} for pre-activation"
    f" dropout ({pre[1]}, rate {pre[2]})."
  )


def li(results: dict) -> str | None:
  """Li et al.'s variance shift against study 3's measured ratios."""
  variance = results.get("variance")
  if not variance:
    return None
  rows, rate = variance["rows"], str(variance["config"]["rates"][-1])
  linear, raw = rows[0]["rates"][rate]["pre"], rows[1]["rates"][rate]["pre"]
  tests = variance["tests"]["monte_carlo"]
  rejected = sum(t["rejected"] for t in tests["tests"])
  return (
    "**Li et al. (CVPR 2019)** derive the variance shift of dropout in front of batch"
    " normalisation (section 3): for a unit of mean c and variance v and keep probability q,"
    " Var_train / Var_test = (1 + (1 − q) c²/v) / q, which is 1/q for zero-mean units, and"
    " report that a large feature dimension, as in Wide ResNet, reduces the shift (abstract)."
    f" Here (study 3) at rate {rate}: {rows[0]['name']} measures {linear['measured']:.4f} ±"
    f" {linear['stderr']:.4f} against 1/q = {1 / (1 - float(rate)):.4f}; {rows[1]['name']}"
    f" measures {raw['measured']:.3f} against the formula's {raw['li']:.3f}; Holm over the"
    f" family of {tests['m']} Monte Carlo cells rejects measured = exact for {rejected}."
  )


def klambauer(results: dict) -> str | None:
  """Klambauer et al.'s fixed point against study 4's last-layer variances."""
  selu = results.get("selu_depth")
  if not selu:
    return None
  depth = selu["config"]["depth"]
  tests = {t["label"]: t for t in selu["tests"]["fixed_point"]["tests"]}

  def cell(v: dict) -> str:
    var = v["var"][-1]
    verdict = "rejected" if tests[f"{v['name']}: var = 1"]["rejected"] else "not rejected"
    return f"{v['name']} {var['mean']:.3f} [{var['low']:.3f}, {var['high']:.3f}], {verdict}"

  kinds = {"alpha": [], "standard": []}
  for v in selu["variants"]:
    kinds.get(v["kind"], []).append(cell(v))
  return (
    "**Klambauer et al. (NeurIPS 2017)** show that SELU (λ ≈ 1.0507, α ≈ 1.6733) with"
    " LeCun-normal weights keeps activations at mean 0 and variance 1 through depth, that"
    " standard dropout breaks this fixed point, and introduce alpha dropout (dropped units"
    " set to −λα, then an affine correction) to keep it. Here (study 4), the variance at"
    f" layer {depth} with its {selu['level']:.0%} interval and the Holm-corrected test of"
    f" variance = 1: {'; '.join(kinds['alpha']) or 'no alpha dropout'}; and"
    f" {'; '.join(kinds['standard']) or 'no standard dropout'}."
  )


def liu(results: dict) -> str | None:
  """Liu et al.'s early dropout: what a schedule implies for the order, with study 1's shift."""
  commutation = results.get("commutation")
  pre = _exact_shifts(commutation, "pre") if commutation else []
  if not pre:
    return None
  worst = max(pre)
  return (
    "**Liu et al. (ICML 2023)** report that dropout used only in the first phase of training"
    " (early dropout) lowers the final training loss of underfitting models, and dropout"
    " switched on only later (late dropout) improves the generalisation of overfitting ones"
    " (abstract; experiments on ImageNet and other vision tasks). Their question is when"
    " dropout is on, not where it sits relative to the activation. What a schedule implies: the"
    " order changes the network only while dropout is on, so with early dropout the"
    " train-versus-eval mismatch of pre-activation dropout (up to"
    f" {worst[0]:.3g} in mean for {worst[1]} at rate {worst[2]}, study 1) is absent from the"
    " final phase of training; with late dropout it is present when training ends."
  )


def _accuracy(runs: list[dict], task: str) -> dict[tuple[str, str, float], float]:
  """(variant, order, rate) -> the mean test accuracy over seeds, for one task."""
  return {
    (r["variant"], r["order"], r["rate"]): 1.0 - float(np.mean(r["test_error"]))
    for r in runs
    if r.get("task") == task
  }


def greydanus(results: dict) -> str | None:
  """MNIST-1D's reported accuracies against the training study's MLP on MNIST-1D."""
  training = results.get("training") or {}
  task = next((t for t, d in training.get("data", {}).items() if d["name"] == "MNIST-1D"), None)
  accuracy = _accuracy(training.get("runs", []), task) if task else {}
  if not accuracy:
    return None
  (variant, order, rate), best = max(accuracy.items(), key=lambda item: item[1])
  plain = [a for (_, o, _), a in accuracy.items() if o == "none"]
  reported = ", ".join(f"{a:.0%} for {name}" for name, a in MNIST1D_REPORTED.items())
  return (
    f"**Greydanus (2020)** introduces MNIST-1D and reports test accuracies of {reported} (the"
    " table in the dataset's README, github.com/greydanus/mnist1d). Here (study 2) the MLP's"
    " test accuracy on MNIST-1D, mean over"
    f" {len(training.get('seeds', []))} seeds, is {best:.1%} at best ({variant}, {order}"
    + ("" if order == "none" else f", rate {rate:g}")
    + ")"
    + (f" and {min(plain):.1%}–{max(plain):.1%} without dropout" if plain else "")
    + "."
  )


PARAGRAPHS: tuple[Callable[[dict], str | None], ...] = (srivastava, li, klambauer, liu, greydanus)


def section(results: dict[str, Any]) -> str:
  """The "What the literature reports" section; empty if no study it is compared with ran."""
  paragraphs = [text for paragraph in PARAGRAPHS if (text := paragraph(results))]
  if not paragraphs:
    return ""
  head = [
    "## What the literature reports",
    "",
    "Each paragraph sets a published result beside this run's corresponding number. A paper's"
    " number is quoted only where it was checked in the cited source; otherwise the paper is"
    " cited for what it reports.",
    "",
  ]
  return "\n".join(head + [p + "\n" for p in paragraphs])
