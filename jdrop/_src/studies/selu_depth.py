r"""Study 4: SELU through depth, with no dropout, standard dropout and alpha dropout.

A self-normalising network (Klambauer, Unterthiner, Mayr and Hochreiter, "Self-Normalizing
Neural Networks", NeurIPS 2017) keeps its activations at mean 0 and variance 1 through depth:
with LeCun-normal weights (variance ``1 / fan_in``) and standardised inputs, ``selu`` maps a
pre-activation ``h ~ N(0, 1)`` to an output with mean 0 and variance 1, the fixed point that
:func:`jdrop.selu_constants` solves for. Dropout after the activation must keep that point:

* standard (inverted) dropout keeps the mean but multiplies the second moment by ``1 / q``,
  so every layer feeds the next a larger variance;
* alpha dropout (:func:`jdrop.alpha_dropout`) sets dropped units to ``-lambda alpha`` and
  corrects with ``a y + b``, which keeps mean 0 and variance 1 exactly at the fixed point.

Each block is dense -> selu -> dropout, ``depth`` blocks of ``width`` units, no bias. Per
layer the study records the mean and variance of the block's output over the batch and the
units, for several seeds (a seed fixes the weights, the inputs and the masks; the variants
share them, so they are paired), and the **mean-field prediction** for an infinitely wide
random network (Poole et al., 2016; Schoenholz et al., 2017): with ``Q_l`` the second moment
of layer ``l``'s input, ``h ~ N(0, Q_l)`` and, in closed form for ``s^2 = Q_l``,

.. math::
   \mathbb{E}\,\mathrm{selu}(h) &= \lambda\Bigl(\tfrac{s}{\sqrt{2\pi}}
     + \alpha\bigl(e^{s^2/2}\Phi(-s) - \tfrac12\bigr)\Bigr), \\
   \mathbb{E}\,\mathrm{selu}(h)^2 &= \lambda^2\Bigl(\tfrac{s^2}{2}
     + \alpha^2\bigl(e^{2s^2}\Phi(-2s) - 2e^{s^2/2}\Phi(-s) + \tfrac12\bigr)\Bigr),

then standard dropout gives ``E y = E selu``, ``E y^2 = E selu^2 / q``, and alpha dropout
``y = a (m x + (1 - m) alpha') + b`` its two-point moments; ``Q_{l+1} = E y^2``.

**How it is computed.** One compiled program: a ``lax.scan`` over layers (the weights of
layer ``l`` are drawn from ``fold_in(key, l)`` inside the scan), ``vmap``-ed over seeds and over
the variants. "No dropout" is standard dropout at rate 0 (every unit kept, the identity bit
for bit), and the rate and the kind of dropout are traced, so all variants share the program.
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
import scipy.special
from jax import lax
from jax.typing import ArrayLike

from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src.studies import stats as _stats
from jdrop._src.studies import training

LEVEL = training.LEVEL  # the confidence level of the intervals across seeds
LIMIT_LAYERS = 10_000  # the mean-field recursion's limit: converged to 1e-12 well before this
# The fixed point each variant is tested against at the last layer: (statistic, per-seed key,
# value under the null hypothesis).
NULLS = (("var", "last_var_per_seed", 1.0), ("mean", "last_mean_per_seed", 0.0))


def _label(name: str, stat: str, null: float) -> str:
  return f"{name}: {stat} = {null:g}"


def fixed_point_tests(variants: list[dict[str, Any]]) -> dict[str, Any]:
  """One-sample t-tests over seeds of the fixed point at the last layer, Holm over the family.

  For each variant, ``H0: variance = 1`` and ``H0: mean = 0`` of the last layer's output, from
  the per-seed values (:func:`jdrop._src.studies.stats.paired` of the values minus the null
  value; the seeds are independent). Adds ``var_test`` and ``mean_test`` (the difference from
  the null value with its t-interval, ``p_t``, ``p_sign_flip``) to each variant in place and
  returns the family (:func:`jdrop._src.studies.stats.family`, ``m = 2 x variants``).
  """
  labels, pvalues = [], []
  for v in variants:
    for stat, key, null in NULLS:
      test = _stats.paired(np.asarray(v[key], np.float64) - null)
      v[f"{stat}_test"] = test
      labels.append(_label(v["name"], stat, null))
      pvalues.append(test["p_t"])
  return _stats.family(
    labels,
    pvalues,
    hypothesis="the last layer's output has the fixed point's variance 1 and mean 0",
  )


@dataclasses.dataclass(frozen=True)
class Config:
  """The depth study's parameters.

  Attributes:
    depth: dense -> selu -> dropout blocks (at least 16 for the report).
    width: units per layer (and input features).
    batch: inputs per seed, drawn from N(0, 1) and standardised per feature.
    seeds: seeds ``seed .. seed + seeds - 1``, at least 2 (for an interval).
    rates: drop rates of standard and of alpha dropout.
    seed: the first seed.
  """

  depth: int = 16
  width: int = 256
  batch: int = 256
  seeds: int = 8
  rates: tuple[float, ...] = (0.05, 0.1)
  seed: int = 0


DEFAULT = Config()
FULL = Config(depth=64, width=512, batch=512, seeds=16)


def variants(config: Config) -> list[dict[str, Any]]:
  """``none``, then standard and alpha dropout at each rate: name, kind, rate."""
  out = [{"name": "no dropout", "kind": "none", "rate": 0.0}]
  for kind in ("standard", "alpha"):
    for rate in config.rates:
      out.append({"name": f"{kind} dropout {rate:g}", "kind": kind, "rate": float(rate)})
  return out


def network(
  key: jax.Array, rate: ArrayLike, alpha: ArrayLike, *, depth: int, width: int, batch: int
) -> tuple[jax.Array, jax.Array]:
  """Per-layer mean and variance of ``depth`` dense -> selu -> dropout blocks.

  ``key`` fixes the standardised inputs, the LeCun-normal weights and the masks; ``rate`` and
  ``alpha`` (alpha dropout if True, else standard) may be traced. Both kinds draw the same
  mask from the same key. Returns two arrays of shape ``(depth,)``: the mean and the variance
  of each block's output over the batch and the units.

  Example:
    >>> import jax
    >>> means, variances = network(jax.random.key(0), 0.0, False, depth=2, width=64, batch=64)
    >>> means.shape, bool(abs(float(variances[-1]) - 1) < 0.3)
    ((2,), True)
  """
  weight_key, input_key, mask_key = jax.random.split(key, 3)
  x = jax.random.normal(input_key, (batch, width))
  x = (x - x.mean(axis=0)) / x.std(axis=0)
  init = jax.nn.initializers.lecun_normal()

  def block(x: jax.Array, layer: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    a = jax.nn.selu(x @ init(jax.random.fold_in(weight_key, layer), (width, width)))
    k = jax.random.fold_in(mask_key, layer)
    y = jnp.where(alpha, _dropout.alpha_dropout(k, a, rate=rate), _dropout.dropout(k, a, rate=rate))
    return y, (y.mean(), y.var())

  _, (means, variances) = lax.scan(block, x, jnp.arange(depth))
  return means, variances


def mean_field(kind: str, rate: float, depth: int) -> tuple[np.ndarray, np.ndarray]:
  r"""The mean-field mean and variance of each block's output (see the module docstring).

  Example:
    >>> means, variances = mean_field("alpha", 0.1, 3)
    >>> [round(float(v), 6) for v in variances]
    [1.0, 1.0, 1.0]
  """
  scale, alpha = _dropout.selu_constants()
  saturation = -scale * alpha
  keep = 1.0 - rate
  a = (keep + saturation**2 * keep * (1 - keep)) ** -0.5
  b = -a * (1 - keep) * saturation
  second = 1.0
  means, variances = [], []
  for _ in range(depth):
    s = math.sqrt(second)
    # e^{t^2/2} Phi(-t) = erfcx(t / sqrt 2) / 2, without overflow for large t.
    e1 = scipy.special.erfcx(s / math.sqrt(2)) / 2
    e2 = scipy.special.erfcx(math.sqrt(2) * s) / 2
    m1 = scale * (s / math.sqrt(2 * math.pi) + alpha * (e1 - 0.5))
    m2 = scale**2 * (s * s / 2 + alpha**2 * (e2 - 2 * e1 + 0.5))
    if kind == "alpha":
      mean = a * (keep * m1 + (1 - keep) * saturation) + b
      second = a * a * (keep * m2 + (1 - keep) * saturation**2) + 2 * b * (mean - b) + b * b
    else:  # standard (rate 0: no dropout)
      mean, second = m1, m2 / keep
    means.append(mean)
    variances.append(second - mean * mean)
  return np.array(means), np.array(variances)


def run(config: Config = DEFAULT, *, progress: Callable[..., None] | None = None) -> dict:
  """Runs every variant for every seed; intervals across seeds and mean-field predictions.

  Returns a JSON-serialisable dict: ``config``, ``seeds``, ``variants`` (per variant: the
  per-layer mean over seeds of the output's mean and variance with their t-intervals, the
  per-seed last-layer values and their tests against the fixed point, the mean-field curves
  and the mean-field value at the last layer), ``tests`` (the family of those tests, raw and
  Holm-adjusted p-values: :func:`fixed_point_tests`) and ``timing``.
  """
  start = time.perf_counter()
  if config.seeds < 2 or config.depth < 1 or not all(0 < r < 1 for r in config.rates):
    raise errors.value_error(
      "jdrop.studies.selu_depth.run",
      "config.seeds, config.depth, config.rates",
      "must be at least 2 seeds (for an interval), a depth of at least 1 and rates in (0, 1)",
      (config.seeds, config.depth, config.rates),
      "Use e.g. seeds=8, depth=16, rates=(0.05, 0.1).",
    )
  plan = variants(config)
  seeds = [config.seed + i for i in range(config.seeds)]
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  rates = jnp.asarray([v["rate"] for v in plan], jnp.float32)
  alphas = jnp.asarray([v["kind"] == "alpha" for v in plan])

  def one(key: jax.Array, rate: jax.Array, alpha: jax.Array) -> tuple[jax.Array, jax.Array]:
    return network(key, rate, alpha, depth=config.depth, width=config.width, batch=config.batch)

  program = jax.jit(
    jax.vmap(jax.vmap(one, in_axes=(0, None, None)), in_axes=(None, 0, 0)),
    compiler_options=training.compiler_options(),
  )
  compiled = program.lower(keys, rates, alphas).compile()
  compile_s = time.perf_counter() - start
  if progress is not None:
    progress(1, 2, "selu depth: compiled")
  means, variances = (np.asarray(a, np.float64) for a in compiled(keys, rates, alphas))
  run_s = time.perf_counter() - start - compile_s
  out = []
  for k, variant in enumerate(plan):
    mf_mean, mf_var = mean_field(variant["kind"], variant["rate"], config.depth)
    limit_mean, limit_var = mean_field(variant["kind"], variant["rate"], LIMIT_LAYERS)
    per_layer = {
      stat: [training.t_interval(values[k, :, layer]).as_dict() for layer in range(config.depth)]
      for stat, values in (("mean", means), ("var", variances))
    }
    out.append(
      {
        **variant,
        **per_layer,
        "last_var_per_seed": variances[k, :, -1].tolist(),
        "last_mean_per_seed": means[k, :, -1].tolist(),
        "mean_field_mean": mf_mean.tolist(),
        "mean_field_var": mf_var.tolist(),
        "mean_field_limit_var": float(limit_var[-1]),
        "mean_field_limit_mean": float(limit_mean[-1]),
      }
    )
  tests = fixed_point_tests(out)
  if progress is not None:
    progress(2, 2, "selu depth: statistics")
  return {
    "study": "selu_depth",
    "config": dataclasses.asdict(config),
    "seeds": seeds,
    "level": LEVEL,
    "variants": out,
    "tests": {"fixed_point": tests},
    "timing": {"wall_s": time.perf_counter() - start, "compile_s": compile_s, "run_s": run_s},
  }


def _style(variant: dict[str, Any], rates: list[float]) -> dict[str, Any]:
  shade = 0.45 + 0.55 * (rates.index(variant["rate"]) + 1) / len(rates) if variant["rate"] else 1
  if variant["kind"] == "none":
    return {"color": "0.2"}
  cmap = {"standard": (0.84, 0.15, 0.16), "alpha": (0.12, 0.47, 0.71)}[variant["kind"]]
  return {"color": tuple(1 - shade * (1 - c) for c in cmap)}


def figures(results: dict, out_dir: Path) -> list[str]:
  """Mean and variance against depth per variant (95% bands across seeds, mean field dashed)."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rates = list(results["config"]["rates"])
  depth = results["config"]["depth"]
  layers = np.arange(1, depth + 1)
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
  for ax, stat, target in ((axes[0], "mean", 0.0), (axes[1], "var", 1.0)):
    for variant in results["variants"]:
      style = _style(variant, rates)
      cells = variant[stat]
      ax.plot(layers, [c["mean"] for c in cells], lw=1.8, label=variant["name"], **style)
      ax.fill_between(
        layers, [c["low"] for c in cells], [c["high"] for c in cells], alpha=0.2, **style
      )
      ax.plot(layers, variant[f"mean_field_{stat}"], ls="--", lw=1, **style)
    ax.axhline(target, color="k", lw=0.8, ls=":")
    ax.set_xlabel("layer")
  axes[0].set_ylabel("mean of the layer's output")
  axes[1].set_ylabel("variance of the layer's output")
  axes[1].legend(fontsize=8)
  level = results["level"]
  fig.suptitle(
    f"SELU, width {results['config']['width']}: {level:.0%} intervals over"
    f" {len(results['seeds'])} seeds (bands), mean-field prediction (dashed), fixed point (dotted)"
  )
  fig.tight_layout()
  fig.savefig(out_dir / "selu_depth.png", dpi=110)
  plt.close(fig)
  return ["selu_depth.png"]


def _iv(cell: dict[str, float], digits: int = 3) -> str:
  return f"{cell['mean']:.{digits}f} [{cell['low']:.{digits}f}, {cell['high']:.{digits}f}]"


def section(results: dict, figures: list[str]) -> str:
  """Markdown: setup, the last-layer table, the figure, a reading computed from the numbers."""
  config = results["config"]
  depth, level = config["depth"], results["level"]
  seeds = results["seeds"]
  lines = [
    "## 4. SELU through depth",
    "",
    f"{depth} blocks dense -> selu -> dropout of width {config['width']} (LeCun-normal"
    f" weights, no bias), {config['batch']} standardised N(0, 1) inputs, {len(seeds)} seeds"
    f" ({seeds[0]}..{seeds[-1]}; a seed fixes weights, inputs and masks for every variant).",
    "Self-normalisation (Klambauer et al., NeurIPS 2017) keeps each layer's output at mean 0",
    "and variance 1. Mean and variance of the output over the batch and the units, mean over",
    f"seeds with its {level:.0%} t-interval, at layer 1 and the last layer, and the mean-field",
    "prediction for an infinitely wide random network at the last layer.",
    "",
    f"| variant | var, layer 1 | var, layer {depth} | mean-field var | mean, layer {depth} |"
    " mean-field mean |",
    "|---|---|---|---|---|---|",
  ]
  for v in results["variants"]:
    lines.append(
      f"| {v['name']} | {_iv(v['var'][0])} | {_iv(v['var'][-1])} | {v['mean_field_var'][-1]:.3f}"
      f" | {_iv(v['mean'][-1])} | {v['mean_field_mean'][-1]:.3f} |"
    )
  lines += ["", f"![Mean and variance through depth]({figures[0]})", "", "**Reading.**", ""]
  for kind, label in (
    ("none", "No dropout"),
    ("alpha", "Alpha dropout"),
    ("standard", "Standard dropout"),
  ):
    group = [v for v in results["variants"] if v["kind"] == kind]
    inside = [v for v in group if v["var"][-1]["low"] <= 1.0 <= v["var"][-1]["high"]]
    cells = "; ".join(
      ("" if kind == "none" else f"rate {v['rate']:g}: ")
      + f"{_iv(v['var'][-1])} (seeds {min(v['last_var_per_seed']):.3f}–"
      f"{max(v['last_var_per_seed']):.3f})"
      for v in group
    )
    lines.append(
      f"- {label}: variance at layer {depth} {cells}; the interval contains 1 for"
      f" {len(inside)} of {len(group)}."
    )
  for v in (v for v in results["variants"] if v["kind"] == "standard"):
    moved = abs(v["mean_field_limit_var"] - 1) > 1e-3 or abs(v["mean_field_limit_mean"]) > 1e-3
    lines.append(
      f"- {v['name']}: the variance moves from {v['var'][0]['mean']:.3f} at layer 1 to"
      f" {v['var'][-1]['mean']:.3f} at layer {depth}, the mean to {v['mean'][-1]['mean']:+.3f};"
      f" the mean-field recursion predicts {v['mean_field_var'][0]:.3f} and"
      f" {v['mean_field_var'][-1]:.3f}, and converges to"
      + (" a different fixed point" if moved else " the same fixed point")
      + f", variance {v['mean_field_limit_var']:.3f} and mean {v['mean_field_limit_mean']:+.3f}."
    )
  lines.append(_tests_text(results))
  worst = max(
    (abs(v[stat][-1]["mean"] - v[f"mean_field_{stat}"][-1]), v["name"], stat)
    for v in results["variants"]
    for stat in ("mean", "var")
  )
  lines.append(
    f"- Finite width against mean field at layer {depth}: the largest gap is {worst[0]:.3f}"
    f" ({worst[1]}, {worst[2]})."
  )
  return "\n".join(lines) + "\n"


def _tests_text(results: dict) -> str:
  """The fixed-point tests: family size, what Holm rejects, and how weak a non-rejection is."""
  tests = results["tests"]["fixed_point"]
  depth, n = results["config"]["depth"], len(results["seeds"])
  by_label = {t["label"]: t for t in tests["tests"]}
  rejected = [f"{t['label']} (Holm p = {t['p_holm']:.2g})" for t in tests["tests"] if t["rejected"]]
  kept = [v for v in results["variants"] if not by_label[_label(v["name"], "var", 1.0)]["rejected"]]
  text = (
    f"- Tests of the fixed point at layer {depth}: for each of the {len(results['variants'])}"
    f" variants a one-sample t-test over the {n} seeds of variance = 1 and of mean = 0, a"
    f" family of m = {tests['m']}, Holm-adjusted at family-wise level {tests['alpha']:g}."
    f" Rejected: {'; '.join(rejected) or 'none'}."
  )
  if kept:
    widest = max(max(abs(v["var_test"]["low"]), abs(v["var_test"]["high"])) for v in kept)
    text += (
      f" Not rejecting variance = 1 ({', '.join(v['name'] for v in kept)}) is weak evidence"
      f" that it stays at 1: with {n} seeds the {results['level']:.0%} intervals of these"
      f" variances still allow departures from 1 of up to {widest:.3f}."
    )
  return text
