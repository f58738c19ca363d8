r"""Study 3: the variance shift of dropout in front of a normalisation layer (Li et al., 2019).

A normalisation layer (batch norm) after dropout collects its statistics in training, where
dropout is on, and applies them at test time, where it is off. If the variance of its input
differs between the modes, the test-time output is mis-scaled by ``sqrt(Var_test /
Var_train)`` ("Understanding the Disharmony between Dropout and Batch Normalization by
Variance Shift", Li, Chen, Hu and Yang, CVPR 2019). Three placements are measured on the
pre-activations ``h`` of a Dense layer on scikit-learn's digits:

* ``linear``: dense -> dropout -> norm, ``y = D(h)``;
* ``pre``:    dense -> dropout -> f -> norm, ``y = f(D(h))``;
* ``post``:   dense -> f -> dropout -> norm, ``y = D(f(h))``.

**The formula.** For a unit whose dropout input ``g`` has mean ``c`` and variance ``v`` over
the data, with keep probability ``q`` (Li et al., section 3),

.. math::
   \mathrm{Var}_\text{train}\,D(g) = \frac{c^2 + v}{q} - c^2, \qquad
   \frac{\mathrm{Var}_\text{train}}{\mathrm{Var}_\text{test}}
   = \frac{1}{q}\Bigl(1 + (1 - q)\,\frac{c^2}{v}\Bigr),

which is ``1 / q`` for a zero-mean input. It covers the linear case (``g = h``) and
post-activation dropout (``g = f(h)``: ``c`` and ``v`` are the eval-mode moments of the
activation). Pre-activation dropout has no such closed form: ``f(D(h))`` takes the values
``f(h / q)`` and ``f(0)``, and its variance is computed exactly per sample
(:func:`jdrop.montecarlo.exact_moments`) and mixed over the data
(:func:`jdrop.montecarlo.variance_shift`).

**The measurement.** :func:`jdrop.montecarlo.compare_orders` draws ``num_masks`` masks for
every (sample, unit); the measured ``Var_train`` of a unit is the plain variance of its
``samples x num_masks`` training-mode outputs, ``mean_b[(M-1)/M s_b^2] + Var_b[ybar_b]``
(law of total variance, with no ``1/M`` bias), divided by the eval-mode variance
``Var_b f(h_b)``. The table reports the mean over units; its standard error comes from the
per-unit differences measured - exact, independent across units because the masks are.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdrop._src import activations
from jdrop._src import errors
from jdrop._src import montecarlo
from jdrop._src.studies import stats as _stats

ORDERS = ("pre", "post")


@dataclasses.dataclass(frozen=True)
class Config:
  """The variance-shift study's parameters.

  Attributes:
    rates: drop rates.
    activations: names from :mod:`jdrop.activations`, each measured in both orders.
    features: units of the Dense layer whose pre-activations feed dropout.
    num_masks: masks per (sample, unit) and rate.
    seed: the Dense kernel's seed; the masks of rate ``j`` use ``fold_in(key(seed + 1), j)``.
  """

  rates: tuple[float, ...] = (0.1, 0.3, 0.5)
  activations: tuple[str, ...] = ("relu", "tanh", "gelu", "sigmoid")
  features: int = 16
  num_masks: int = 256
  seed: int = 0


DEFAULT = Config()
FULL = Config(features=64, num_masks=2048)


def _check(config: Config) -> None:
  fn = "jdrop.studies.variance.run"
  if not config.rates or not all(0 < r < 1 for r in config.rates):
    raise errors.value_error(
      fn, "config.rates", "must be drop rates in (0, 1)", config.rates, "Use e.g. (0.1, 0.5)."
    )
  if config.features < 2 or config.num_masks < 2:
    raise errors.value_error(
      fn,
      "config.features, config.num_masks",
      "must both be at least 2 (for a standard error)",
      (config.features, config.num_masks),
      "Use e.g. features=16, num_masks=256.",
    )


def _rows(config: Config) -> list[dict[str, str]]:
  """The measured rows: two linear ones (centred and raw inputs), then one per activation."""
  rows = [
    {"name": "linear, standardised", "activation": "identity", "input": "standardised"},
    {"name": "linear, raw pixels", "activation": "identity", "input": "raw"},
  ]
  rows += [{"name": a, "activation": a, "input": "standardised"} for a in config.activations]
  return rows


def _stacked(names: list[str]) -> Callable[[jax.Array], jax.Array]:
  """Applies activation ``k`` to slice ``k``: every row shares one compiled program."""
  fs = [activations.get(name) for name in names]
  return lambda xs: jnp.stack([f(xs[k]) for k, f in enumerate(fs)])


def li_ratio(mean: np.ndarray, var: np.ndarray, keep: float) -> np.ndarray:
  r"""Li et al.'s variance ratio of ``D(g)`` for ``g`` with mean ``c`` and variance ``v``.

  .. math::
     \frac{\mathrm{Var}_\text{train}}{\mathrm{Var}_\text{test}}
     = \frac{1}{q}\Bigl(1 + (1 - q)\,\frac{c^2}{v}\Bigr)

  Example:
    >>> float(li_ratio(0.0, 1.0, 0.5)), float(li_ratio(1.0, 1.0, 0.5))
    (2.0, 3.0)
  """
  mean, var = np.asarray(mean, np.float64), np.asarray(var, np.float64)
  return (1.0 + (1.0 - keep) * mean**2 / var) / keep


def _measured_ratio(moments: montecarlo.Moments, reference: np.ndarray, num_masks: int) -> Any:
  """Per-unit ``Var_train / Var_eval`` from per-(sample, unit) Monte-Carlo moments.

  ``Var_train`` is the population variance of all ``samples x num_masks`` outputs: the mean
  over samples of the within-sample variance (``(M - 1) / M`` times the unbiased one) plus
  the variance over samples of the within-sample means.
  """
  mean = np.asarray(moments.mean, np.float64)
  var = np.asarray(moments.var, np.float64) * (num_masks - 1) / num_masks
  train_var = var.mean(axis=0) + mean.var(axis=0)
  return train_var / reference.var(axis=0)


def run(config: Config = DEFAULT, *, progress: Callable[..., None] | None = None) -> dict:
  """Measures and computes the variance ratio of every row, order and rate.

  Returns a JSON-serialisable dict: ``config``, ``data`` (samples, units), ``rows`` (per row
  and rate, per order: the measured mean ratio over units and its standard error, the exact
  one, Li's formula where it applies, the z-score of measured - exact, the range of the
  exact per-unit ratios, the mean shift in eval standard deviations), ``scatter`` (per-unit
  ``c^2 / v`` and measured post ratios, for the formula figure) and ``timing``.
  """
  start = time.perf_counter()
  _check(config)
  rows = _rows(config)
  digits = montecarlo.load_digits()
  kernel_key = jax.random.key(config.seed)
  inputs = {
    "standardised": montecarlo.dense_preactivations(kernel_key, digits, features=config.features),
    "raw": montecarlo.dense_preactivations(
      kernel_key, digits, features=config.features, standardize=False
    ),
  }
  names = [row["activation"] for row in rows]
  f = _stacked(names)
  xs = jnp.stack([inputs[row["input"]] for row in rows])
  samples, units = xs.shape[1:]
  total = len(config.rates)
  out_rows: list[dict[str, Any]] = [{**row, "rates": {}} for row in rows]
  scatter: dict[str, Any] = {"c2_over_v": [], "rates": {}}
  for j, rate in enumerate(config.rates):
    keep = 1.0 - rate
    key = jax.random.fold_in(jax.random.key(config.seed + 1), j)
    mc = montecarlo.compare_orders(key, f, xs, rate=rate, num_masks=config.num_masks)
    exact = montecarlo.exact_moments(f, xs, rate=rate)
    scatter["rates"][str(rate)] = []
    for k, row in enumerate(out_rows):
      reference = np.asarray(mc.reference[k], np.float64)
      c, v = reference.mean(axis=0), reference.var(axis=0)
      shifts = montecarlo.variance_shift(
        montecarlo.Exact(
          *(montecarlo.Moments(*(a[k] for a in m)) for m in (exact.pre, exact.post)),
          exact.reference[k],
        )
      )
      li = li_ratio(c, v, keep)
      cell: dict[str, Any] = {}
      for order in ORDERS:
        moments = montecarlo.Moments(*(a[k] for a in getattr(mc, order)))
        measured = _measured_ratio(moments, reference, config.num_masks)
        shift = getattr(shifts, order)
        exact_ratio = np.asarray(shift.var_ratio, np.float64)
        diff = measured - exact_ratio
        stderr = float(diff.std(ddof=1) / math.sqrt(units))
        # Li's formula is about D(g): it applies where dropout's input reaches the norm,
        # linear and post; pre sees f(D(h)), the same as D(f(h)) only for relu-like f.
        applies = row["activation"] == "identity" or order == "post"
        eval_sd = np.sqrt(np.asarray(shift.eval_var, np.float64))
        cell[order] = {
          "measured": float(measured.mean()),
          "stderr": stderr,
          "exact": float(exact_ratio.mean()),
          "z": float(diff.mean() / stderr) if stderr > 0 else 0.0,
          "p": _stats.paired_t(diff),
          "diff_per_unit": diff.tolist(),
          "li": float(li.mean()) if applies else None,
          "li_max_rel_diff": float(np.max(np.abs(li / exact_ratio - 1))) if applies else None,
          "exact_min": float(exact_ratio.min()),
          "exact_max": float(exact_ratio.max()),
          "mean_shift_sd": float(
            np.mean(np.abs(np.asarray(shift.mean_shift, np.float64)) / eval_sd)
          ),
        }
        if order == "post":
          scatter["rates"][str(rate)].extend(float(m) for m in measured)
      row["rates"][str(rate)] = cell
      if j == 0:
        scatter["c2_over_v"].extend(float(t) for t in c**2 / v)
    if progress is not None:
      progress(j + 1, total, f"variance shift: rate {rate:g}")
  return {
    "study": "variance",
    "config": dataclasses.asdict(config),
    "data": {"name": "scikit-learn digits", "samples": int(samples), "units": int(units)},
    "rows": out_rows,
    "tests": {"monte_carlo": monte_carlo_tests(out_rows, config.rates)},
    "scatter": scatter,
    "timing": {"wall_s": time.perf_counter() - start},
  }


def _cells(rows: list[dict[str, Any]], rates: Any) -> list[tuple[dict[str, Any], str, str]]:
  """The table's (row, rate, order) cells: the identity's post cell is its pre cell."""
  return [
    (row, str(rate), order)
    for row in rows
    for rate in rates
    for order in ORDERS
    if not (row["activation"] == "identity" and order == "post")
  ]


def monte_carlo_tests(rows: list[dict[str, Any]], rates: Any) -> dict[str, Any]:
  """Monte Carlo against exact, per table cell: Holm over the family of every cell.

  Each cell's ``p`` is the two-sided one-sample t-test (``units - 1`` degrees of freedom) that
  the per-unit differences ``measured - exact`` (``diff_per_unit``, independent across units)
  have mean 0; the cell's ``z`` is its statistic. A rejection would be a bug in the Monte Carlo
  or in the exact moments, not a finding about dropout.
  """
  cells = _cells(rows, rates)
  return _stats.family(
    [f"{row['name']}, rate {rate}, {order}" for row, rate, order in cells],
    [row["rates"][rate][order]["p"] for row, rate, order in cells],
    hypothesis="the Monte Carlo ratio's mean over units equals the exact one",
  )


def figures(results: dict, out_dir: Path) -> list[str]:
  """The ratio against the rate per row and order; the per-unit ratio against Li's formula."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rates = np.array(results["config"]["rates"])
  rows = results["rows"]
  cols = 3
  nrows = -(-len(rows) // cols)
  fig, axes = plt.subplots(nrows, cols, figsize=(4.0 * cols, 3.2 * nrows), squeeze=False)
  grid = np.linspace(rates.min(), rates.max(), 50)
  for ax, row in zip(axes.ravel(), rows, strict=False):
    for order, color, dx in (("pre", "tab:red", -0.006), ("post", "tab:blue", 0.006)):
      cells = [row["rates"][str(r)][order] for r in rates]
      ax.errorbar(
        rates + dx,
        [c["measured"] for c in cells],
        yerr=[2 * c["stderr"] for c in cells],
        fmt="o",
        ms=4,
        capsize=2,
        color=color,
        label=f"{order}: measured ± 2 se",
      )
      ax.plot(rates, [c["exact"] for c in cells], color=color, lw=1, alpha=0.7)
    ax.plot(grid, 1 / (1 - grid), color="0.4", ls=":", label="1/q")
    ax.set_title(row["name"])
    ax.set_xlabel("drop rate")
  for ax in axes.ravel()[len(rows) :]:
    ax.axis("off")
  axes[0, 0].set_ylabel("Var_train / Var_test")
  axes[0, 0].legend(fontsize=7)
  fig.suptitle("Variance shift before a normalisation layer: measured (points), exact (lines)")
  fig.tight_layout()
  fig.savefig(out_dir / "variance_shift.png", dpi=110)
  plt.close(fig)

  scatter = results["scatter"]
  t = np.array(scatter["c2_over_v"])
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  line = np.linspace(0, max(t.max(), 1e-3) * 1.05, 100)
  for k, rate in enumerate(rates):
    q = 1 - rate
    color = f"C{k}"
    ax.plot(t, scatter["rates"][str(rate)], "o", ms=3, color=color, alpha=0.6)
    ax.plot(line, (1 + (1 - q) * line) / q, color=color, lw=1, label=f"rate {rate:g}: formula")
  ax.set_xscale("symlog", linthresh=0.1)
  ax.set_xlabel("c² / v of the dropout input (per unit)")
  ax.set_ylabel("measured Var_train / Var_test")
  ax.set_title("Linear and post-activation units against (1 + (1-q) c²/v) / q")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_dir / "variance_formula.png", dpi=110)
  plt.close(fig)
  return ["variance_shift.png", "variance_formula.png"]


def _pm(cell: dict[str, Any]) -> str:
  return f"{cell['measured']:.4f} ± {cell['stderr']:.4f}"


def section(results: dict, figures: list[str]) -> str:
  """Markdown: setup, the table of measured and exact ratios, a reading computed from them."""
  config, data = results["config"], results["data"]
  rates = [str(r) for r in config["rates"]]
  rows = results["rows"]
  lines = [
    "## 3. Variance shift before a normalisation layer",
    "",
    "Dropout in front of a normalisation layer (batch norm) changes the variance the layer",
    "sees between training and test (Li et al., CVPR 2019). The pre-activations `h` of a Dense",
    f"layer ({data['units']} units, LeCun-normal kernel, seed {config['seed']}) on the"
    f" {data['samples']} {data['name']} feed three placements: `linear` (dense -> dropout ->",
    "norm), `pre` (dense -> dropout -> f -> norm) and `post` (dense -> f -> dropout -> norm).",
    "`Var_train / Var_test` per unit, averaged over units: measured by Monte Carlo"
    f" ({config['num_masks']} masks per sample and unit; `±` one standard error of the"
    " measured - exact difference), exact (`exact_moments` mixed over the data by",
    "`variance_shift`) and by Li et al.'s formula `(1 + (1-q) c²/v) / q` for a dropout input",
    "of mean `c` and variance `v` (linear and post only: pre-activation dropout has no such",
    "form). The last column is the mean shift `|E_train - E_test|` in eval standard deviations,",
    "which the frozen normalisation turns into a test-time offset.",
    "",
    "| input | rate | order | measured | exact | formula | exact range over units | z"
    " | mean shift / sd |",
    "|---|---|---|---|---|---|---|---|---|",
  ]
  for row in rows:
    for rate in rates:
      for order in ORDERS:
        if row["activation"] == "identity" and order == "post":
          continue  # the identity commutes with dropout: post is pre
        c = row["rates"][rate][order]
        li = "—" if c["li"] is None else f"{c['li']:.4f}"
        label = "both" if row["activation"] == "identity" else order
        lines.append(
          f"| {row['name']} | {rate} | {label} | {_pm(c)} | {c['exact']:.4f} | {li} |"
          f" {c['exact_min']:.3f}–{c['exact_max']:.3f} | {c['z']:+.2f} |"
          f" {c['mean_shift_sd']:.3f} |"
        )
  lines += ["", f"![Variance shift per rate]({figures[0]})", "", "**Reading.**", ""]
  cells = [(row, r, o, row["rates"][r][o]) for row, r, o in _cells(rows, rates)]
  worst = max(cells, key=lambda item: abs(item[3]["z"]))
  tests = results["tests"]["monte_carlo"]
  rejected = _stats.rejected(tests)
  lines.append(
    f"- Monte Carlo against exact: the largest |z| over the {len(cells)} cells is"
    f" {abs(worst[3]['z']):.2f} ({worst[0]['name']}, rate {worst[1]}, {worst[2]}). As a family"
    f" of m = {tests['m']} t-tests of measured = exact (one per cell, over the units), Holm at"
    f" family-wise level {tests['alpha']:g} rejects "
    + (f"{len(rejected)}: {'; '.join(rejected)}." if rejected else "none.")
  )
  linear = rows[0]
  parts = [
    f"{linear['rates'][r]['pre']['measured']:.4f} ± {linear['rates'][r]['pre']['stderr']:.4f}"
    f" against 1/q = {1 / (1 - float(r)):.4f} at rate {r}"
    for r in rates
  ]
  lines.append(f"- {linear['name']} (zero-mean units): measured " + "; ".join(parts) + ".")
  raw = rows[1]
  top = rates[-1]
  rc = raw["rates"][top]["pre"]
  lines.append(
    f"- {raw['name']} (units with a mean): at rate {top} the ratio is {rc['measured']:.3f}"
    f" (units {rc['exact_min']:.2f}–{rc['exact_max']:.2f}) where 1/q would say"
    f" {1 / (1 - float(top)):.3f}; Li's general formula gives {rc['li']:.3f}."
  )
  li_cells = [c for _, _, _, c in cells if c["li_max_rel_diff"] is not None]
  li_diff = max(c["li_max_rel_diff"] for c in li_cells)
  lines.append(
    f"- Li's formula against the exact per-unit ratio over the {len(li_cells)} linear and"
    f" post cells: largest relative difference {li_diff:.1e}"
    + (" (float32 rounding: both are the law of total variance)" if li_diff < 1e-4 else "")
    + f". ![Per-unit ratio against the formula]({figures[1]})"
  )
  acts = [row for row in rows if row["activation"] != "identity"]
  larger = {o: [] for o in ORDERS}
  for row in acts:
    pre, post = row["rates"][top]["pre"]["exact"], row["rates"][top]["post"]["exact"]
    if math.isclose(pre, post, rel_tol=1e-6):
      larger.setdefault("equal", []).append(row["name"])
    else:
      larger["pre" if pre > post else "post"].append(row["name"])
  lines.append(
    f"- Which order shifts the variance more, at rate {top} (exact): pre for"
    f" {', '.join(larger['pre']) or 'none'}; post for {', '.join(larger['post']) or 'none'}"
    + (f"; equal for {', '.join(larger['equal'])}" if larger.get("equal") else "")
    + "."
  )
  ratios = [row["rates"][top][o]["exact"] for row in acts for o in ORDERS]
  lines.append(
    f"- Consequence at rate {top}: a normalisation frozen in training scales the test-time"
    f" output to a standard deviation of {1 / math.sqrt(max(ratios)):.2f}–"
    f"{1 / math.sqrt(min(ratios)):.2f} instead of 1 across these activations and orders;"
    " the mean shifts by up to"
    f" {max(row['rates'][top]['pre']['mean_shift_sd'] for row in acts):.2f} sd with"
    " pre-activation dropout and"
    f" {max(row['rates'][top]['post']['mean_shift_sd'] for row in acts):.1e} sd with post."
  )
  return "\n".join(lines) + "\n"
