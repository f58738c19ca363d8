r"""Study 5: MC-dropout uncertainty with dropout before or after the activation.

Gal and Ghahramani ("Dropout as a Bayesian Approximation", ICML 2016) keep dropout on at test
time: ``T`` stochastic passes of the trained network give a predictive mean and variance,

.. math::
   \hat\mu(x) = \frac1T \sum_{t=1}^T \hat y_t(x), \qquad
   \hat\sigma^2(x) = \frac{1}{T-1} \sum_{t=1}^T \bigl(\hat y_t(x) - \hat\mu(x)\bigr)^2

(the model-noise term ``tau^{-1}`` of their predictive variance is left out: it is the same
for every order). A small MLP is trained on a 1-D regression toy (``y = sin(2x) + noise``,
``x`` uniform on a bounded range) with dropout in each hidden block, in each order:

* ``pre``:  Dense -> dropout -> f, ``f(D(h))``;
* ``post``: Dense -> f -> dropout, ``D(f(h))``.

Post-activation dropout is unbiased for the next layer, ``E[W D(f(h))] = W f(h)``, so with
**one** hidden layer the MC predictive mean equals the deterministic (eval-mode) prediction
exactly, whatever ``f``; pre-activation dropout gives ``E f(D(h)) = q f(h/q) + (1-q) f(0)``,
equal to ``f(h)`` only for relu-like ``f``. With one hidden layer both moments have a closed
form (masks are independent across units):

.. math::
   \mathbb{E}\,\hat y = b_2 + \sum_j w_{2j}\, \mathbb{E} y_j, \qquad
   \mathrm{Var}\,\hat y = \sum_j w_{2j}^2\, \mathrm{Var}\, y_j,

with the two-point moments ``E y_j``, ``Var y_j`` of :func:`jdrop.montecarlo.exact_moments`;
the study checks the passes against them. With two hidden layers the second activation
sees a noisy input, and no order is unbiased for the network's output in general.

**How it is computed.** Per depth one compiled program trains every (activation, order)
variant at once (``vmap`` over a traced order and activation index; full-batch Adam in a
``lax.scan``; the same initial parameters and training masks for every variant, so relu's
two orders must train to bit-identical parameters) and runs ``passes`` stochastic passes of
each (``lax.map`` over chunks of ``vmap``-ed pass keys). A pass is one thinned network: its
mask is drawn once per unit and shared by every input on the grid, so each pass is a function
of ``x``; the same pass keys serve every variant.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.stats
from jax import lax

from jdrop._src import activations
from jdrop._src import errors
from jdrop._src import montecarlo
from jdrop._src.studies import stats as _stats
from jdrop._src.studies import training

ORDERS = ("pre", "post")


@dataclasses.dataclass(frozen=True)
class Config:
  """The MC-dropout study's parameters.

  Attributes:
    activations: names from :mod:`jdrop.activations`, each trained in both orders.
    rate: the drop rate, in training and in the stochastic passes.
    depths: numbers of hidden layers; one program per depth.
    width: units per hidden layer.
    train_points: training inputs, uniform on ``train_range``.
    train_range: the interval the training inputs are drawn from.
    noise: the standard deviation of the targets' noise.
    grid_range: the interval of the evaluation grid.
    grid_points: evaluation points.
    steps: full-batch Adam steps.
    learning_rate: Adam's learning rate.
    passes: stochastic passes per variant (at least 1000 for the report).
    chunk: passes per ``vmap`` inside the ``lax.map`` (bounds the memory).
    plotted_passes: passes kept in the results for the figure.
    seed: fixes the data, the initial parameters, the training masks and the pass keys.
  """

  activations: tuple[str, ...] = ("relu", "tanh")
  rate: float = 0.2
  depths: tuple[int, ...] = (1, 2)
  width: int = 64
  train_points: int = 48
  train_range: tuple[float, float] = (-2.0, 2.0)
  noise: float = 0.1
  grid_range: tuple[float, float] = (-6.0, 6.0)
  grid_points: int = 121
  steps: int = 1500
  learning_rate: float = 1e-2
  passes: int = 1000
  chunk: int = 500
  plotted_passes: int = 6
  seed: int = 0


DEFAULT = Config()
FULL = Config(width=128, grid_points=241, steps=4000, passes=10_000, chunk=1000)


def _check(config: Config) -> None:
  fn = "jdrop.studies.uncertainty.run"
  (low, high), (grid_low, grid_high) = config.train_range, config.grid_range
  if not (grid_low <= low < high <= grid_high):
    raise errors.value_error(
      fn,
      "config.train_range",
      f"must be an interval inside config.grid_range {config.grid_range}",
      config.train_range,
      "Use e.g. train_range=(-2.0, 2.0) with grid_range=(-6.0, 6.0).",
    )
  if not 0 < config.rate < 1 or config.passes < 2 or min(config.depths, default=0) < 1:
    raise errors.value_error(
      fn,
      "config.rate, config.passes, config.depths",
      "must be a rate in (0, 1), at least 2 passes and depths of at least 1",
      (config.rate, config.passes, config.depths),
      "Use e.g. rate=0.2, passes=1000, depths=(1, 2).",
    )


def variants(config: Config) -> list[dict[str, Any]]:
  """Every (activation, order), with its activation index in ``config.activations``."""
  return [
    {"activation": name, "order": order, "index": i}
    for i, name in enumerate(config.activations)
    for order in ORDERS
  ]


def _init(key: jax.Array, depth: int, width: int) -> list[tuple[jax.Array, jax.Array]]:
  """LeCun-normal weights; hidden biases N(0, 1) (spreads the kinks over x), output bias 0."""
  sizes = [1] + [width] * depth + [1]
  params = []
  for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
    wk, bk = jax.random.split(jax.random.fold_in(key, i))
    w = jax.random.normal(wk, (fan_in, fan_out)) / math.sqrt(fan_in)
    b = jax.random.normal(bk, (fan_out,)) if i < depth else jnp.zeros((fan_out,))
    params.append((w, b))
  return params


def _forward(
  params: list[tuple[jax.Array, jax.Array]],
  x: jax.Array,
  key: jax.Array | None,
  rate: jax.Array,
  pre: jax.Array,
  index: jax.Array,
  fs: list[Callable[[jax.Array], jax.Array]],
) -> jax.Array:
  """The MLP on inputs ``x`` (any leading shape, last axis 1); dropout iff ``key`` is given.

  Hidden block ``i`` is :func:`jdrop._src.studies.training.hidden_block` with the mask drawn
  from ``fold_in(key, i)`` and activation ``fs[index]`` (``index`` may be traced).
  """

  def f(h: jax.Array) -> jax.Array:
    return lax.switch(index, fs, h)

  for i, (w, b) in enumerate(params[:-1]):
    h = x @ w + b
    x = (
      f(h)
      if key is None
      else training.hidden_block(jax.random.fold_in(key, i), h, f, rate=rate, pre=pre)
    )
  w, b = params[-1]
  return (x @ w + b)[..., 0]


def _program(config: Config, depth: int) -> Callable[..., dict[str, jax.Array]]:
  """Trains every variant and runs its passes: one jitted function per depth."""
  fs = [activations.get(name) for name in config.activations]
  optimizer = optax.adam(config.learning_rate)

  def program(key, x_train, y_train, grid, rate, pres, indices):
    init_key, train_key, pass_key = jax.random.split(key, 3)
    params0 = _init(init_key, depth, config.width)

    def train(pre: jax.Array, index: jax.Array):
      def loss_fn(params, step_key):
        pred = _forward(params, x_train, step_key, rate, pre, index, fs)
        return jnp.mean((pred - y_train) ** 2)

      def step(state, t):
        params, opt_state = state
        loss, grads = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(train_key, t))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

      state = (params0, optimizer.init(params0))
      (params, _), losses = lax.scan(step, state, jnp.arange(config.steps))
      return params, losses[-1]

    params, final_loss = jax.vmap(train)(pres, indices)
    keys = jax.random.split(pass_key, config.passes)

    def evaluate(args):
      p, pre, index = args

      def one_pass(k: jax.Array) -> jax.Array:
        # One thinned network: the same key, so the same mask, for every grid point.
        return jax.vmap(lambda x: _forward(p, x, k, rate, pre, index, fs))(grid[:, None])

      passes = lax.map(one_pass, keys, batch_size=min(config.chunk, config.passes))
      return (
        _forward(p, grid[:, None], None, rate, pre, index, fs),
        _forward(p, x_train, None, rate, pre, index, fs),
        passes,
      )

    eval_grid, eval_train, passes = lax.map(evaluate, (params, pres, indices))
    return {
      "params": params,
      "loss": final_loss,
      "eval_grid": eval_grid,
      "eval_train": eval_train,
      "passes": passes,
    }

  return jax.jit(program, compiler_options=training.compiler_options())


def data(config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The training inputs and targets and the evaluation grid (float32), fixed by the seed."""
  rng = np.random.default_rng(config.seed)
  low, high = config.train_range
  x = np.sort(rng.uniform(low, high, config.train_points))
  y = np.sin(2 * x) + config.noise * rng.standard_normal(config.train_points)
  grid = np.linspace(*config.grid_range, config.grid_points)
  return x[:, None].astype(np.float32), y.astype(np.float32), grid.astype(np.float32)


def exact_moments(
  params: Any, grid: np.ndarray, activation: str, order: str, rate: float
) -> tuple[np.ndarray, np.ndarray]:
  """The exact predictive mean and variance of a one-hidden-layer network on ``grid``.

  ``params`` is ``[[w1, b1], [w2, b2]]`` (arrays or nested lists, as :func:`run` records them).
  """
  (w1, b1), (w2, b2) = ((np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in params)
  h = jnp.asarray(grid[:, None] @ w1 + b1, jnp.float32)
  moments = getattr(montecarlo.exact_moments(activation, h, rate=rate), order)
  w2 = np.asarray(w2, np.float64)[:, 0]
  mean = np.asarray(moments.mean, np.float64) @ w2 + float(b2[0])
  return mean, np.asarray(moments.var, np.float64) @ w2**2


def max_abs_z(diff: np.ndarray, stderr: np.ndarray) -> float:
  """``max |diff / stderr|``; a zero standard error counts 0 for no difference, else inf."""
  with np.errstate(divide="ignore", invalid="ignore"):
    z = np.where(stderr > 0, np.abs(diff) / stderr, np.where(diff == 0, 0.0, np.inf))
  return float(z.max())


def grid_pvalue(max_z: float, points: int) -> float:
  r"""The p-value of "no difference at any of ``points`` grid points" from the largest |z|.

  Bonferroni over the grid, :math:`\min(1, 2G\, P(Z > \max|z|))` for ``G = points``: valid
  however the points are correlated (neighbouring points share every pass), conservative
  where they are.

  Example:
    >>> round(grid_pvalue(3.0, 10), 4), grid_pvalue(0.5, 10)
    (0.027, 1.0)
  """
  return float(min(1.0, 2 * points * scipy.stats.norm.sf(max_z)))


def _families(depths: list[dict[str, Any]]) -> dict[str, Any]:
  """The study's two families of grid-wide tests, Holm-adjusted: against eval mode, exact."""
  labels: dict[str, list[str]] = {"vs_eval": [], "vs_exact": []}
  pvalues: dict[str, list[float]] = {"vs_eval": [], "vs_exact": []}
  for entry in depths:
    for v in entry["variants"]:
      where = f"{_layers(entry['depth'])}, {_label(v)}"
      labels["vs_eval"].append(where)
      pvalues["vs_eval"].append(v["p_vs_eval"])
      for stat in ("mean", "var") if "p_mean_vs_exact" in v else ():
        labels["vs_exact"].append(f"{where}, {stat}")
        pvalues["vs_exact"].append(v[f"p_{stat}_vs_exact"])
  return {
    "vs_eval": _stats.family(
      labels["vs_eval"],
      pvalues["vs_eval"],
      hypothesis="the MC predictive mean equals the eval-mode prediction at every grid point",
    ),
    "vs_exact": _stats.family(
      labels["vs_exact"],
      pvalues["vs_exact"],
      hypothesis="the passes' mean (variance) equals the closed form at every grid point",
    ),
  }


def run(config: Config = DEFAULT, *, progress: Callable[..., None] | None = None) -> dict:
  """Trains, runs the passes and summarises every depth and variant.

  Returns a JSON-serialisable dict: ``config``, ``data`` (training points, grid), ``depths``
  (per depth, per variant: the eval-mode prediction, the MC mean and variance, their
  comparison with eval mode and, for one hidden layer, with the exact moments (and the trained
  parameters ``[[w1, b1], [w2, b2]]`` they are computed from), the predictive standard
  deviation inside and away from the data, a few passes, and each comparison's largest |z|
  over the grid with its :func:`grid_pvalue`), ``tests`` (two families of those p-values, raw
  and Holm-adjusted: ``vs_eval``, every depth and variant, and ``vs_exact``, mean and variance
  of every one-hidden-layer variant) and ``timing``.
  """
  start = time.perf_counter()
  _check(config)
  x_train, y_train, grid = data(config)
  plan = variants(config)
  pres = jnp.asarray([v["order"] == "pre" for v in plan])
  indices = jnp.asarray([v["index"] for v in plan], jnp.int32)
  rate = jnp.float32(config.rate)
  low, high = config.train_range
  inside = (grid >= low) & (grid <= high)
  far = (grid <= low - 2.0) | (grid >= high + 2.0)  # two units or more from the data
  passes_n = config.passes
  out_depths = []
  timing = {}
  for step, depth in enumerate(config.depths, 1):
    t0 = time.perf_counter()
    out = _program(config, depth)(
      jax.random.key(config.seed), x_train, y_train, grid, rate, pres, indices
    )
    out = jax.tree.map(np.asarray, out)
    timing[str(depth)] = time.perf_counter() - t0
    rows = []
    for k, variant in enumerate(plan):
      passes = out["passes"][k].astype(np.float64)
      mean, var = passes.mean(axis=0), passes.var(axis=0, ddof=1)
      se_mean = np.sqrt(var / passes_n)
      centred = passes - mean
      se_var = np.sqrt(np.maximum((centred**4).mean(axis=0) - var**2, 0) / passes_n)
      eval_grid = out["eval_grid"][k].astype(np.float64)
      sd = np.sqrt(var)
      row: dict[str, Any] = {
        **variant,
        "train_rmse": float(np.sqrt(np.mean((out["eval_train"][k] - y_train) ** 2))),
        "final_loss": float(out["loss"][k]),
        "eval": eval_grid.tolist(),
        "mc_mean": mean.tolist(),
        "mc_var": var.tolist(),
        "mc_var_stderr": se_var.tolist(),
        "max_z_vs_eval": max_abs_z(mean - eval_grid, se_mean),
        "p_vs_eval": grid_pvalue(max_abs_z(mean - eval_grid, se_mean), len(grid)),
        "max_gap_vs_eval_inside": float(np.abs(mean - eval_grid)[inside].max()),
        "max_gap_vs_eval": float(np.abs(mean - eval_grid).max()),
        "sd_inside": float(sd[inside].mean()),
        "sd_far": float(sd[far].mean()) if far.any() else None,
        "sample_passes": out["passes"][k, : config.plotted_passes].tolist(),
      }
      if depth == 1:
        params = [tuple(np.asarray(a[k]) for a in layer) for layer in out["params"]]
        ex_mean, ex_var = exact_moments(
          params, grid, variant["activation"], variant["order"], config.rate
        )
        row.update(
          exact_mean=ex_mean.tolist(),
          exact_var=ex_var.tolist(),
          max_z_mean_vs_exact=max_abs_z(mean - ex_mean, se_mean),
          max_z_var_vs_exact=max_abs_z(var - ex_var, se_var),
          p_mean_vs_exact=grid_pvalue(max_abs_z(mean - ex_mean, se_mean), len(grid)),
          p_var_vs_exact=grid_pvalue(max_abs_z(var - ex_var, se_var), len(grid)),
          exact_bias_inside=float(np.abs(ex_mean - eval_grid)[inside].max()),
          exact_bias=float(np.abs(ex_mean - eval_grid).max()),
          params=[[a.tolist() for a in layer] for layer in params],
        )
      rows.append(row)
    same = _identical_orders(out, plan)
    out_depths.append({"depth": depth, "variants": rows, "orders_identical": same})
    if progress is not None:
      progress(step, len(config.depths), f"uncertainty: depth {depth}")
  return {
    "study": "uncertainty",
    "config": dataclasses.asdict(config),
    "data": {"x": x_train[:, 0].tolist(), "y": y_train.tolist(), "grid": grid.tolist()},
    "depths": out_depths,
    "tests": _families(out_depths),
    "timing": {"wall_s": time.perf_counter() - start, "per_depth_s": timing},
  }


def _identical_orders(out: dict[str, Any], plan: list[dict[str, Any]]) -> dict[str, bool]:
  """Per activation: are pre and post's trained parameters and passes bit-identical?"""
  result = {}
  for name in dict.fromkeys(v["activation"] for v in plan):
    i, j = (k for k, v in enumerate(plan) if v["activation"] == name)
    leaves = [*jax.tree.leaves(out["params"]), out["passes"]]
    result[name] = all(np.array_equal(leaf[i], leaf[j]) for leaf in leaves)
  return result


def figures(results: dict, out_dir: Path) -> list[str]:
  """Per depth and variant: data, eval prediction, MC mean +- 2 sd and passes; sd against x."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  grid = np.array(results["data"]["grid"])
  low, high = results["config"]["train_range"]
  depths = results["depths"]
  ncols = len(depths[0]["variants"])
  fig, axes = plt.subplots(
    len(depths), ncols, figsize=(3.4 * ncols, 3.0 * len(depths)), squeeze=False, sharey=True
  )
  for row_axes, entry in zip(axes, depths, strict=True):
    for ax, v in zip(row_axes, entry["variants"], strict=True):
      mean, sd = np.array(v["mc_mean"]), np.sqrt(np.array(v["mc_var"]))
      ax.fill_between(grid, mean - 2 * sd, mean + 2 * sd, color="tab:blue", alpha=0.2)
      for sample in v["sample_passes"]:
        ax.plot(grid, sample, color="tab:blue", lw=0.5, alpha=0.5)
      ax.plot(grid, mean, color="tab:blue", lw=1.8, label="MC mean ± 2 sd")
      ax.plot(grid, v["eval"], color="k", lw=1.2, ls="--", label="eval mode")
      ax.plot(results["data"]["x"], results["data"]["y"], ".", color="tab:red", ms=3)
      ax.axvspan(low, high, color="0.9", zorder=0)
      ax.set_title(f"{entry['depth']} hidden, {v['activation']}, {v['order']}", fontsize=9)
      ax.set_ylim(-4, 4)
  axes[0, 0].legend(fontsize=7, loc="lower left")
  fig.suptitle(
    f"MC dropout, {results['config']['passes']} passes at rate {results['config']['rate']:g}"
    " (grey: training range)"
  )
  fig.tight_layout()
  fig.savefig(out_dir / "uncertainty_fits.png", dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(1, len(depths), figsize=(5.5 * len(depths), 4), squeeze=False)
  for ax, entry in zip(axes[0], depths, strict=True):
    for k, v in enumerate(entry["variants"]):
      ls = "-" if v["order"] == "post" else "--"
      ax.plot(grid, np.sqrt(v["mc_var"]), ls=ls, color=f"C{k // 2}", label=_label(v))
    ax.axvspan(low, high, color="0.9", zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("x")
    ax.set_title(_layers(entry["depth"]))
  axes[0, 0].set_ylabel("predictive sd (MC)")
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(out_dir / "uncertainty_sd.png", dpi=110)
  plt.close(fig)
  return ["uncertainty_fits.png", "uncertainty_sd.png"]


def _label(v: dict[str, Any]) -> str:
  return f"{v['activation']} ({v['order']})"


def _layers(depth: int) -> str:
  return f"{depth} hidden layer" + ("" if depth == 1 else "s")


def section(results: dict, figures: list[str]) -> str:
  """Markdown: setup, per-variant table, figures, a reading computed from the numbers."""
  config = results["config"]
  tests = results["tests"]
  low, high = config["train_range"]
  grid_low, grid_high = config["grid_range"]
  lines = [
    "## 5. MC-dropout uncertainty",
    "",
    f"An MLP (1 -> {config['width']} x depth -> 1) is trained on {config['train_points']}"
    f" points of `y = sin(2x) + N(0, {config['noise']:g}²)`, `x` uniform on [{low:g}, {high:g}]"
    f" ({config['steps']} full-batch Adam steps, dropout rate {config['rate']:g} in every"
    f" hidden block, seed {config['seed']}), then {config['passes']} stochastic passes"
    f" (Gal and Ghahramani, ICML 2016) are run on {config['grid_points']} points of"
    f" [{grid_low:g}, {grid_high:g}]. `z` compares the MC predictive mean with the eval-mode"
    " prediction (and, for one hidden layer, the mean and the variance with their closed form)"
    f" point by point; the largest |z| over the G = {config['grid_points']} points gives each"
    " comparison a p-value, Bonferroni over the grid (min(1, 2G P(Z > max |z|))), and the"
    " comparisons form two families, Holm-adjusted at family-wise level"
    f" {tests['vs_eval']['alpha']:g}: MC mean = eval prediction (m = {tests['vs_eval']['m']},"
    f" every depth and variant) and passes = closed form (m = {tests['vs_exact']['m']}, mean"
    " and variance of every one-hidden-layer variant). sd: the predictive standard deviation"
    " averaged inside the training range and 2 or more units away from it.",
    "",
    "| depth | variant | train RMSE (eval) | max \\|MC − eval\\| in range | max z vs eval"
    " | exact bias in range | max z vs exact (mean, var) | sd inside | sd far | far / inside |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for entry in results["depths"]:
    for v in entry["variants"]:
      exact = v.get("exact_bias_inside")
      far = v["sd_far"]
      lines.append(
        f"| {entry['depth']} | {_label(v)} | {v['train_rmse']:.3f} |"
        f" {v['max_gap_vs_eval_inside']:.3f} | {v['max_z_vs_eval']:.1f} |"
        + (" — | — |" if exact is None else f" {exact:.3f} |")
        + (
          ""
          if exact is None
          else f" {v['max_z_mean_vs_exact']:.1f}, {v['max_z_var_vs_exact']:.1f} |"
        )
        + f" {v['sd_inside']:.3f} | "
        + ("—" if far is None else f"{far:.3f} | {far / v['sd_inside']:.1f}")
        + " |"
      )
  lines += [
    "",
    f"![MC-dropout fits]({figures[0]})",
    "",
    f"![Predictive sd]({figures[1]})",
    "",
    "**Reading.**",
    "",
  ]
  eval_tests = {t["label"]: t for t in tests["vs_eval"]["tests"]}
  exact_rejected = _stats.rejected(tests["vs_exact"])
  for entry in results["depths"]:
    vs = entry["variants"]
    test = {_label(v): eval_tests[f"{_layers(entry['depth'])}, {_label(v)}"] for v in vs}
    agree = [name for name, t in test.items() if not t["rejected"]]
    differ = [f"{name} (Holm p = {t['p_holm']:.2g})" for name, t in test.items() if t["rejected"]]
    lines.append(
      f"- {_layers(entry['depth'])}: the MC mean differs from the eval-mode prediction for"
      f" {', '.join(differ) or 'no variant'}; no difference is detected for"
      f" {', '.join(agree) or 'no variant'}."
    )
    if "max_z_mean_vs_exact" in vs[0]:
      worst = max(max(v["max_z_mean_vs_exact"], v["max_z_var_vs_exact"]) for v in vs)
      biased = [f"{_label(v)} ({v['exact_bias_inside']:.3f})" for v in vs]
      lines.append(
        "  The passes "
        + (
          f"do not match the closed form for {'; '.join(exact_rejected)}"
          if exact_rejected
          else "match the closed-form mean and variance (no test of the family rejected)"
        )
        + f"; largest |z| {worst:.2f}. The exact bias `max |E ŷ − eval|` in the training range"
        f" is {', '.join(biased)}."
      )
    identical = [name for name, same in entry["orders_identical"].items() if same]
    if identical:
      lines.append(
        f"  Pre and post train to bit-identical parameters and passes for {', '.join(identical)}."
      )
    ratios = [v["sd_far"] / v["sd_inside"] for v in vs if v["sd_far"] is not None]
    if ratios:
      lines.append(
        f"  Away from the data the predictive sd is {min(ratios):.1f}–{max(ratios):.1f} times"
        " its value inside the training range"
        + (" (it grows for every variant)." if min(ratios) > 1 else ".")
      )
  return "\n".join(lines) + "\n"
