"""Studies 3-5 of the report (variance shift, SELU through depth, MC dropout) on tiny configs.

Each study runs end to end (results JSON-serialisable, PNG figures written, the section
links them) and passes one numerical check that a wrong parameter fails. Statistical checks
use ``stats_util.ALPHA`` (1e-4) with fixed keys, so they are deterministic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.stats
import stats_util
from stats_util import ALPHA

from jdrop._src.studies import selu_depth
from jdrop._src.studies import uncertainty
from jdrop._src.studies import variance

TINY = {
  "variance": (
    variance,
    variance.Config(rates=(0.1, 0.5), activations=("relu", "tanh"), features=4, num_masks=64),
    3,
  ),
  "selu_depth": (selu_depth, selu_depth.Config(depth=16, width=256, batch=128, seeds=4), 4),
  "uncertainty": (
    uncertainty,
    uncertainty.Config(depths=(1,), width=32, grid_points=41, steps=300, passes=2000),
    5,
  ),
}


PROGRESS: dict[str, list[tuple[int, int, str]]] = {name: [] for name in TINY}


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, Any]]:
  """Each study's results on its tiny config, computed once for the module."""
  out = {}
  for name, (module, config, _) in TINY.items():
    PROGRESS[name].clear()
    out[name] = module.run(config, progress=lambda *call, name=name: PROGRESS[name].append(call))
  return out


@pytest.mark.parametrize("name", list(TINY))
def test_runs_end_to_end(name: str, results: dict[str, dict[str, Any]], tmp_path: Path) -> None:
  module, _, number = TINY[name]
  result = results[name]
  json.dumps(result, allow_nan=False)  # plain JSON: no NaN, no arrays
  names = module.figures(result, tmp_path)
  assert names
  for figure in names:
    path = tmp_path / figure
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
  text = module.section(result, names)
  assert text.startswith(f"## {number}. ")
  for figure in names:
    assert f"]({figure})" in text


@pytest.mark.parametrize("name", list(TINY))
def test_progress_counts_up_to_the_total(name: str, results: dict[str, dict[str, Any]]) -> None:
  calls = PROGRESS[name]
  assert calls, "progress was never called"
  done = [c[0] for c in calls]
  assert done == sorted(done) and done[-1] == calls[-1][1]
  assert all(isinstance(c[2], str) and c[2] for c in calls)


def test_variance_linear_ratio_is_one_over_q(results: dict[str, dict[str, Any]]) -> None:
  """Li et al.: dense -> dropout -> norm on zero-mean units has Var_train / Var_test = 1/q.

  The measured ratio (Monte Carlo) is z-tested against 1/q at level ALPHA, and against the
  1/q of a rate 0.02 too high, which it must reject; the exact ratio equals 1/q to float32
  rounding.
  """
  linear = results["variance"]["rows"][0]
  assert linear["name"] == "linear, standardised"
  for rate, cell in linear["rates"].items():
    measured = cell["pre"]
    q = 1 - float(rate)
    assert stats_util.z_pvalue(measured["measured"], 1 / q, measured["stderr"]) > ALPHA
    assert stats_util.z_pvalue(measured["measured"], 1 / (q - 0.02), measured["stderr"]) < ALPHA
    assert measured["exact"] == pytest.approx(1 / q, rel=1e-5)
    assert measured["li"] == pytest.approx(1 / q, rel=1e-5)


def test_selu_alpha_dropout_keeps_the_fixed_point(results: dict[str, dict[str, Any]]) -> None:
  """At layer 16 alpha dropout keeps variance 1; standard dropout at 0.1 leaves it.

  Measured (width 256, 4 seeds) against the mean-field prediction of the same variant: within
  0.1, a margin for finite width and seed noise (the mean over seeds lies within 0.03 of it
  for these seeds, 0.01 at the default 8 seeds). The prediction for a wrong rate (standard
  dropout at 0.05 for the 0.1 network, 1.26 against 1.61) is more than 0.1 away.
  """
  by_name = {v["name"]: v for v in results["selu_depth"]["variants"]}
  for v in by_name.values():
    assert abs(v["var"][-1]["mean"] - v["mean_field_var"][-1]) < 0.1, v["name"]
  for name in ("no dropout", "alpha dropout 0.05", "alpha dropout 0.1"):
    assert 0.9 < by_name[name]["var"][-1]["mean"] < 1.1, name
  standard = by_name["standard dropout 0.1"]
  assert not 0.8 <= standard["var"][-1]["low"] <= standard["var"][-1]["high"] <= 1.25
  _, wrong = selu_depth.mean_field("standard", 0.05, 16)
  assert abs(standard["var"][-1]["mean"] - wrong[-1]) > 0.1


def test_mc_dropout_post_is_unbiased_pre_tanh_is_not(results: dict[str, dict[str, Any]]) -> None:
  """One hidden layer: the MC mean of post equals the eval prediction, pre-tanh's does not.

  max |z| over the grid against the Bonferroni threshold of the family-wise level ALPHA.
  The passes' variance matches the closed form at the true rate and not at a wrong one.
  """
  result = results["uncertainty"]
  grid = np.array(result["data"]["grid"])
  passes = result["config"]["passes"]
  threshold = scipy.stats.norm.isf(ALPHA / (2 * grid.size))
  [entry] = result["depths"]
  by = {(v["activation"], v["order"]): v for v in entry["variants"]}
  for key in (("relu", "post"), ("tanh", "post"), ("relu", "pre")):
    v = by[key]
    se = np.sqrt(np.array(v["mc_var"]) / passes)
    assert uncertainty.max_abs_z(np.array(v["mc_mean"]) - np.array(v["eval"]), se) < threshold
  v = by[("tanh", "pre")]
  se = np.sqrt(np.array(v["mc_var"]) / passes)
  assert uncertainty.max_abs_z(np.array(v["mc_mean"]) - np.array(v["eval"]), se) > threshold
  assert entry["orders_identical"] == {"relu": True, "tanh": False}

  for (name, order), v in by.items():
    var, se = np.array(v["mc_var"]), np.array(v["mc_var_stderr"])
    rate = result["config"]["rate"]
    for wrong, expect_reject in ((rate, False), (rate + 0.1, True)):
      _, exact_var = uncertainty.exact_moments(v["params"], grid, name, order, wrong)
      rejected = uncertainty.max_abs_z(var - exact_var, se) > threshold
      assert rejected == expect_reject, (name, order, wrong)


def _families(result: dict[str, Any]) -> list[dict[str, Any]]:
  return list(result["tests"].values())


@pytest.mark.parametrize("name", list(TINY))
def test_holm_recomputes_from_the_stored_raw_p_values(
  name: str, results: dict[str, dict[str, Any]]
) -> None:
  """Every family in the results JSON: Holm from its raw p-values gives its adjusted ones."""
  families = _families(json.loads(json.dumps(results[name])))
  assert families
  for family in families:
    assert family["method"] == "holm" and family["alpha"] == 0.05
    assert family["m"] == len(family["tests"]) and family["m"] > 0
    raw = [t["p"] for t in family["tests"]]
    adjusted = [t["p_holm"] for t in family["tests"]]
    np.testing.assert_allclose(adjusted, _holm(raw), rtol=1e-12)
    assert [t["rejected"] for t in family["tests"]] == [p < 0.05 for p in adjusted]
    assert len({t["label"] for t in family["tests"]}) == family["m"]


def _holm(p: list[float]) -> list[float]:
  """Holm's adjusted p-values written out by hand (independent of stats.holm)."""
  m = len(p)
  order = sorted(range(m), key=lambda i: p[i])
  out, running = [0.0] * m, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    out[i] = running
  return out


def test_raw_p_values_recompute_from_the_stored_per_seed_and_per_unit_values(
  results: dict[str, dict[str, Any]],
) -> None:
  """selu_depth: scipy's one-sample t-test of the per-seed values against 1 (variance) and 0
  (mean); variance: of the per-unit measured - exact differences against 0."""
  selu = results["selu_depth"]
  tests = {t["label"]: t for t in selu["tests"]["fixed_point"]["tests"]}
  assert len(tests) == 2 * len(selu["variants"])
  for v in selu["variants"]:
    for stat, key, null in (("var", "last_var_per_seed", 1.0), ("mean", "last_mean_per_seed", 0.0)):
      expected = scipy.stats.ttest_1samp(v[key], null).pvalue
      assert tests[f"{v['name']}: {stat} = {null:g}"]["p"] == pytest.approx(expected, rel=1e-9)
  rejected = {label for label, t in tests.items() if t["rejected"]}
  assert "standard dropout 0.1: var = 1" in rejected
  assert not rejected & {"alpha dropout 0.05: var = 1", "alpha dropout 0.1: var = 1"}
  var = results["variance"]
  cells = {t["label"]: t for t in var["tests"]["monte_carlo"]["tests"]}
  assert len(cells) == len(var["config"]["rates"]) * (2 * len(var["rows"]) - 2)
  cell = var["rows"][2]["rates"]["0.5"]["pre"]
  expected = scipy.stats.ttest_1samp(cell["diff_per_unit"], 0.0).pvalue
  assert cells[f"{var['rows'][2]['name']}, rate 0.5, pre"]["p"] == pytest.approx(expected, rel=1e-9)
  unc = results["uncertainty"]["tests"]
  labels = {t["label"]: t for t in unc["vs_eval"]["tests"]}
  assert labels["1 hidden layer, tanh (pre)"]["rejected"]
  assert not labels["1 hidden layer, relu (post)"]["rejected"]
  assert unc["vs_exact"]["m"] == 8 and not any(t["rejected"] for t in unc["vs_exact"]["tests"])


@pytest.mark.parametrize(
  ("module", "config", "field"),
  [
    (variance, variance.Config(rates=(0.5, 1.0)), "config.rates"),
    (variance, variance.Config(features=1), "config.features"),
    (selu_depth, selu_depth.Config(seeds=1), "config.seeds"),
    (uncertainty, uncertainty.Config(train_range=(-8.0, 0.0)), "config.train_range"),
    (uncertainty, uncertainty.Config(passes=1), "config.passes"),
  ],
)
def test_bad_config_is_refused_before_any_work(module: Any, config: Any, field: str) -> None:
  with pytest.raises(ValueError, match=rf"jdrop\.studies\.\w+\.run: `[^`]*{field}"):
    module.run(config)
