"""The training study (jdrop._src.studies.training) and its datasets (studies.data).

One tiny study (2 variants, 2 seeds, a few steps) runs once per module; the tests read its
results. Compilation dominates: the module takes about 20 s on 2 CPU cores.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import jdrop
from jdrop._src import report
from jdrop._src.studies import data
from jdrop._src.studies import training

ROOT = Path(__file__).resolve().parent.parent
TINY = dataclasses.replace(
  training.DEFAULT,
  variants=("relu", "tanh"),
  rates=(0.5,),
  seeds=2,
  hidden=(8,),
  steps=6,
  tasks=("digits",),
)


@pytest.fixture(scope="module")
def results() -> dict:
  calls = []
  out = training.run(TINY, progress=lambda *args: calls.append(args))
  assert calls == [(1, 2, "digits/relu"), (2, 2, "digits/tanh")]
  return out


# ----------------------------------------------------------------------------
# The study end to end.


def test_tiny_study_runs_end_to_end(results: dict, tmp_path: Path) -> None:
  json.dumps(results)  # JSON-serialisable
  assert results["seeds"] == [0, 1]
  assert results["data"] == {
    "digits": {"name": "digits", "train": 1347, "test": 450, "features": 64, "classes": 10}
  }
  assert results["tasks"] == ["digits"]
  assert {(r["variant"], r["order"], r["rate"]) for r in results["runs"]} == {
    (v, o, r) for v in ("relu", "tanh") for o, r in (("none", 0.0), ("pre", 0.5), ("post", 0.5))
  }
  for record in results["runs"]:
    assert len(record["test_error"]) == 2
    assert all(0.0 <= e <= 1.0 for e in record["test_error"])
    assert all(math.isfinite(v) for v in record["loss"])
  assert [(row["variant"], row["rate"]) for row in results["summary"]] == [
    ("relu", 0.5),
    ("tanh", 0.5),
  ]
  meta = results["meta"]
  assert {"jax", "flax", "optax", "jdrop", "numpy"} <= set(meta["versions"])
  assert meta["cpu_count"] and meta["processor"] and meta["date"]
  assert results["timing"]["programs"] == 2 and results["timing"]["models"] == 2 * 3 * 2
  names = training.figures(results, tmp_path)
  assert names == ["training-error.png", "training-difference.png"]
  for name in names:
    assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  text = training.section(results, names)
  assert "| activation | rate | none | pre | post | pre − post [95% CI] | family-wise CI |" in text
  assert "Holm-adjusted over the family of all m = 2 comparisons" in text
  assert "| digits | relu | 0.5 |" in text and "| digits | tanh | 0.5 |" in text
  assert "replicate" not in text  # one task: no replication table
  assert "bit-identical" in text and "![training-error.png](training-error.png)" in text


def test_relu_params_bit_identical_in_both_orders_and_tanh_not(results: dict) -> None:
  rows = {row["variant"]: row for row in results["identity"]}
  assert rows["relu"]["bit_identical"] and rows["relu"]["max_abs_diff"] == 0.0
  assert not rows["tanh"]["bit_identical"] and rows["tanh"]["max_abs_diff"] > 0.0
  relu = next(row for row in results["summary"] if row["variant"] == "relu")
  assert relu["pre_minus_post"]["mean"] == relu["pre_minus_post"]["low"] == 0.0


def test_pre_minus_post_is_the_per_seed_difference_of_the_runs(results: dict) -> None:
  # The oracle: each seed's test error pre minus post, and its t-interval from scipy.
  error = {
    (r["variant"], r["order"], r["rate"]): np.asarray(r["test_error"]) for r in results["runs"]
  }
  diffs = {}
  for row in results["summary"]:
    d = error[(row["variant"], "pre", row["rate"])] - error[(row["variant"], "post", row["rate"])]
    half = scipy.stats.t.ppf(0.975, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    expected = {"mean": d.mean(), "low": d.mean() - half, "high": d.mean() + half, "n": d.size}
    interval = {key: row["pre_minus_post"][key] for key in expected}
    assert interval == pytest.approx(expected, rel=1e-9, abs=1e-12)
    diffs[row["variant"]] = d
  assert not diffs["relu"].any()
  assert (diffs["tanh"] > 0).all()  # this run's tanh: post-activation dropout did better


def test_the_reports_answer_on_the_tiny_run_says_what_the_runs_say(results: dict) -> None:
  # Both seeds of tanh end with a higher test error pre than post (the test above), and the
  # same difference for each, so the interval excludes 0 on the post side.
  text = report.answer({"training": results})
  assert "corrected for testing m = 2 comparisons (Holm, family-wise level 0.05)" in text
  assert "significant for 1 of 2 (activation, rate) pairs" in text
  assert "pre-activation dropout is better for none and post-activation dropout for tanh" in text


def _holm_by_hand(p: list[float]) -> list[float]:
  """Holm's adjustment written out as in the paper: step down through the sorted p-values."""
  m, order = len(p), sorted(range(len(p)), key=lambda i: p[i])
  adjusted, running = [0.0] * m, 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p[i]))
    adjusted[i] = running
  return adjusted


def test_the_json_holds_what_recomputes_every_p_value(results: dict) -> None:
  """From the results JSON alone: per-seed errors give the raw p-values, and the raw p-values
  give the Holm-adjusted ones and the verdicts."""
  saved = json.loads(json.dumps(results))
  runs = saved["runs"]
  error = {(r["variant"], r["order"], r["rate"]): np.asarray(r["test_error"]) for r in runs}
  rows = saved["summary"]
  assert saved["family"]["size"] == len(rows) == 2 and saved["family"]["method"] == "holm"
  for row in rows:
    d = error[(row["variant"], "pre", row["rate"])] - error[(row["variant"], "post", row["rate"])]
    if d.std() > 0:  # scipy answers NaN for equal differences; the study's convention is tested
      expected = scipy.stats.ttest_rel(
        error[(row["variant"], "pre", row["rate"])], error[(row["variant"], "post", row["rate"])]
      ).pvalue
      assert row["pre_minus_post"]["p_t"] == pytest.approx(expected, rel=1e-9)
  raw = [row["pre_minus_post"]["p_t"] for row in rows]
  adjusted = [row["pre_minus_post"]["p_t_holm"] for row in rows]
  assert adjusted == pytest.approx(_holm_by_hand(raw), abs=1e-15)
  assert [row["pre_minus_post"]["significant"] for row in rows] == [p < 0.05 for p in adjusted]
  flips = [row["pre_minus_post"]["p_sign_flip"] for row in rows]
  assert [row["pre_minus_post"]["p_sign_flip_holm"] for row in rows] == pytest.approx(
    _holm_by_hand(flips), abs=1e-15
  )
  # The check can fail: the by-hand Holm is not the identity (or Bonferroni) on a real family.
  assert _holm_by_hand([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_vmapped_training_equals_a_single_jitted_run(results: dict) -> None:
  """Seed 1 of tanh, post, rate 0.5 trained alone gives the numbers of the vmapped study."""
  d = training.load(TINY)
  arrays = [jnp.asarray(a) for a in (d.x_train, d.y_train, d.x_test, d.y_test)]
  train = jax.jit(training.trainer("tanh", TINY, d.num_classes))
  alone = train(jax.random.key(1), jnp.float32(0.5), jnp.bool_(False), *arrays)
  record = next(
    r for r in results["runs"] if (r["variant"], r["order"], r["rate"]) == ("tanh", "post", 0.5)
  )
  assert float(alone.test_error) == record["test_error"][1]
  # A batched matrix product may sum in another order than a single one: a few ulp.
  np.testing.assert_allclose(float(alone.loss), record["loss"][1], rtol=1e-5)


def test_none_is_rate_zero_and_leaves_the_block_alone() -> None:
  h = jax.random.normal(jax.random.key(0), (4, 8))
  for pre in (True, False):
    for alpha in (True, False):
      out = training.hidden_block(jax.random.key(1), h, jnp.tanh, rate=0.0, pre=pre, alpha=alpha)
      np.testing.assert_array_equal(out, jnp.tanh(h))
  mask = jdrop.keep_mask(jax.random.key(1), h.shape, rate=0.5)
  pre = training.hidden_block(jax.random.key(1), h, jnp.tanh, rate=0.5, pre=True)
  post = training.hidden_block(jax.random.key(1), h, jnp.tanh, rate=0.5, pre=False)
  np.testing.assert_array_equal(pre, jnp.tanh(jdrop.apply_mask(h, mask, rate=0.5)))
  np.testing.assert_array_equal(post, jdrop.apply_mask(jnp.tanh(h), mask, rate=0.5))
  assert not (pre == post).all()


def test_run_rejects_bad_configs() -> None:
  with pytest.raises(ValueError, match=r"`config.variants`"):
    training.run(dataclasses.replace(TINY, variants=("swish",)))
  with pytest.raises(ValueError, match=r"`config.rates`"):
    training.run(dataclasses.replace(TINY, rates=(0.0,)))
  with pytest.raises(ValueError, match=r"`config.seeds` must be an int >= 2"):
    training.run(dataclasses.replace(TINY, seeds=1))
  with pytest.raises(ValueError, match=r"`config.batch_size` must be at most"):
    training.run(dataclasses.replace(TINY, batch_size=10_000))
  with pytest.raises(ValueError, match=r"`config.tasks` must be a non-empty tuple of distinct"):
    training.run(dataclasses.replace(TINY, tasks=("cifar",)))
  with pytest.raises(ValueError, match=r"`config.tasks` must hold \"npz\" exactly when"):
    training.run(dataclasses.replace(TINY, tasks=("npz",)))


def _row(task: str, variant: str, mean: float, p_holm: float) -> dict:
  d = {"mean": mean, "p_t_holm": p_holm, "significant": p_holm < 0.05}
  return {"task": task, "variant": variant, "rate": 0.5, "pre_minus_post": d}


@pytest.mark.parametrize(
  ("digits", "mnist1d", "agree", "verdict"),
  [
    ((-0.01, 0.01), (-0.02, 0.001), True, "everywhere"),  # pre better on both, significant
    ((-0.01, 0.01), (-0.02, 0.3), True, "somewhere"),  # same sign, significant on one only
    ((-0.01, 0.01), (0.02, 0.001), False, "somewhere"),  # significant on both, opposite signs
    ((-0.01, 0.3), (0.02, 0.4), False, "nowhere"),
    ((0.0, 1.0), (0.0, 1.0), False, "nowhere"),  # relu: every difference 0
  ],
)
def test_replication_verdicts_from_known_signs(digits, mnist1d, agree, verdict) -> None:
  summary = [_row("digits", "tanh", *digits), _row("mnist1d", "tanh", *mnist1d)]
  (row,) = training.replication(summary)
  assert (row["signs_agree"], row["verdict"]) == (agree, verdict)
  assert row["significant_in"] == [
    t for t, c in (("digits", digits), ("mnist1d", mnist1d)) if c[1] < 0.05
  ]


def test_load_mnist1d_offline_fixed_and_leaves_numpy_alone() -> None:
  import socket

  def refuse(*args, **kwargs):
    raise AssertionError("load_mnist1d tried to open a network connection")

  # The legacy global generators are what make_dataset uses: check that they are restored.
  np.random.seed(7)  # noqa: NPY002
  random.seed(7)
  expected_next = np.random.rand(), random.random()  # noqa: NPY002
  np.random.seed(7)  # noqa: NPY002
  random.seed(7)
  original = socket.socket.connect
  socket.socket.connect = refuse
  try:
    d = data.load_mnist1d()
  finally:
    socket.socket.connect = original
  assert (np.random.rand(), random.random()) == expected_next  # noqa: NPY002
  assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40) and d.num_classes == 10
  assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32 and d.name == "MNIST-1D"
  assert 80 <= np.bincount(d.y_test, minlength=10).min()  # about 100 test signals per class
  np.testing.assert_array_equal(d.y_test, data.load_mnist1d().y_test)
  assert not np.array_equal(d.y_test, data.load_mnist1d(seed=1).y_test)
  with pytest.raises(ValueError, match=r"load_mnist1d: `seed` must be a non-negative int"):
    data.load_mnist1d(seed=-1)


# ----------------------------------------------------------------------------
# Statistics.


def test_t_interval_on_known_numbers() -> None:
  # Student t quantiles t(0.975, df) from a printed table (Abramowitz & Stegun, 26.10).
  table = {2: 4.302653, 7: 2.364624}
  iv = training.t_interval([1.0, 2.0, 3.0])
  assert iv.mean == 2.0 and iv.n == 3
  np.testing.assert_allclose(iv.high - iv.mean, table[2] * 1.0 / math.sqrt(3), rtol=1e-6)
  np.testing.assert_allclose(iv.mean - iv.low, iv.high - iv.mean, rtol=1e-12)
  values = np.array([3.1, 2.9, 3.4, 3.0, 2.7, 3.3, 3.2, 2.8])
  iv = training.t_interval(values)
  half = table[7] * values.std(ddof=1) / math.sqrt(8)
  np.testing.assert_allclose(
    [iv.low, iv.high], [values.mean() - half, values.mean() + half], rtol=1e-6
  )
  # The check can fail: the normal quantile 1.96 (a common mistake) is caught at this tolerance.
  wrong = 1.959964 * values.std(ddof=1) / math.sqrt(8)
  with pytest.raises(AssertionError):
    np.testing.assert_allclose(iv.high, values.mean() + wrong, rtol=1e-6)
  assert training.t_interval([0.5, 0.5, 0.5]) == training.Interval(0.5, 0.5, 0.5, 3)


def test_t_interval_rejects_bad_input() -> None:
  with pytest.raises(ValueError, match=r"t_interval: `values` must be a 1-D array of at least 2"):
    training.t_interval([1.0])
  with pytest.raises(ValueError, match=r"`values` must be finite"):
    training.t_interval([1.0, float("nan")])
  with pytest.raises(ValueError, match=r"`level` must lie in \(0, 1\)"):
    training.t_interval([1.0, 2.0], level=95)


# ----------------------------------------------------------------------------
# Data.


def test_load_digits_is_scaled_stratified_and_fixed() -> None:
  d = data.load_digits()
  assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int32
  assert 0.0 == d.x_train.min() and d.x_train.max() == 1.0
  counts_train = np.bincount(d.y_train, minlength=10) / len(d.y_train)
  counts_test = np.bincount(d.y_test, minlength=10) / len(d.y_test)
  np.testing.assert_allclose(counts_train, counts_test, atol=0.01)
  np.testing.assert_array_equal(d.y_test, data.load_digits().y_test)
  assert not np.array_equal(d.y_test, data.load_digits(seed=1).y_test)


def _good() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {
    "x_train": rng.random((12, 4, 4)).astype(np.float32),
    "y_train": np.arange(12) % 3,
    "x_test": rng.random((6, 4, 4)).astype(np.float32),
    "y_test": np.arange(6) % 3,
  }


def test_load_npz_reads_images_and_rows(tmp_path: Path) -> None:
  path = tmp_path / "images.npz"
  np.savez(path, **_good())
  d = data.load_npz(path)
  assert d.x_train.shape == (12, 16) and d.x_test.shape == (6, 16) and d.num_classes == 3
  assert d.name == "images.npz" and d.y_train.dtype == np.int32
  rows = dict(_good(), x_train=np.ones((12, 16)), x_test=np.ones((6, 16)), y_test=np.full(6, 3.0))
  np.savez(tmp_path / "rows.npz", **rows)
  assert data.load_npz(tmp_path / "rows.npz").num_classes == 4


def _broken(**changes: object) -> dict[str, object]:
  arrays: dict[str, object] = dict(_good())
  for key, value in changes.items():
    if value is None:
      del arrays[key]
    else:
      arrays[key] = value
  return arrays


BAD_NPZ = {
  "missing key": (_broken(y_test=None), "path", "missing y_test"),
  "x rank": (_broken(x_train=np.ones(12)), "x_train", "shape (n, d)"),
  "y rank": (_broken(y_train=np.ones((12, 3), int)), "y_train", "one-hot"),
  "lengths": (_broken(y_train=np.zeros(11, int)), "y_train", "one label per row of x_train"),
  "features": (_broken(x_test=np.ones((6, 5))), "x_test", "as many features"),
  "float labels": (_broken(y_test=np.array([0, 1, 2, 0.5, 1, 2])), "y_test", "integer class"),
  "string labels": (_broken(y_test=np.array(list("abcabc"))), "y_test", "integer class"),
  "negative labels": (_broken(y_train=np.arange(12) % 3 - 1), "y_train", "negative label -1"),
  "nan": (_broken(x_test=np.where(np.eye(6, 16) > 0, np.nan, 1.0)), "x_test", "NaN"),
  "empty": (_broken(x_test=np.ones((0, 16))), "x_test", "non-empty"),
}


@pytest.mark.parametrize("case", BAD_NPZ)
def test_load_npz_errors_name_the_argument(tmp_path: Path, case: str) -> None:
  arrays, arg, detail = BAD_NPZ[case]
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=rf"^jdrop.studies.load_npz: `{arg}` ") as info:
    data.load_npz(path)
  assert detail in str(info.value) and "\n" not in str(info.value)


def test_with_data_checks_the_file_early(tmp_path: Path) -> None:
  path = tmp_path / "good.npz"
  np.savez(path, **_good())
  assert training.with_data(training.DEFAULT, path).data == os.fspath(path)
  np.savez(path, **_broken(x_train=None))
  with pytest.raises(ValueError, match=r"`path` must hold the arrays .*; missing x_train"):
    training.with_data(training.DEFAULT, path)


@pytest.mark.parametrize("content", [b"not an archive at all", b"PK\x03\x04truncated", None])
def test_load_npz_unreadable_files(tmp_path: Path, content: bytes | None) -> None:
  path = tmp_path / "data.npz"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(ValueError, match=r"^jdrop.studies.load_npz: `path` must be a readable"):
    data.load_npz(path)


def test_load_npz_refuses_a_single_npy(tmp_path: Path) -> None:
  path = tmp_path / "x.npy"
  np.save(path, np.ones((3, 2)))
  with pytest.raises(ValueError, match=r"`path` must be an .npz archive of named arrays"):
    data.load_npz(path)


# ----------------------------------------------------------------------------
# The experiment script: a bad --data file is one line, a non-zero exit, nothing written.


def test_train_digits_rejects_bad_data_before_writing(tmp_path: Path, capsys) -> None:
  sys.path.insert(0, str(ROOT / "experiments"))
  try:
    import train_digits
  finally:
    sys.path.pop(0)
  bad = tmp_path / "bad.npz"
  bad.write_bytes(b"garbage")
  out = tmp_path / "out"
  assert train_digits.main(["--data", str(bad), "--out-dir", str(out)]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "`path` must be a readable .npz file" in err
  assert not out.exists() or not os.listdir(out)


def test_mnist1d_baseline_sits_next_to_the_published_one() -> None:
  rows = [
    {"task": task, "variant": v, "none": {"mean": e}}
    for task, v, e in (
      ("mnist1d", "relu", 0.4),
      ("mnist1d", "tanh", 0.5),
      ("mnist1d_cnn", "gelu", 0.2),
    )
  ]
  text = training._mnist1d_baseline({"summary": rows[:2], "config": {"steps": 300}})
  assert "Greydanus (2020) reports 68% test accuracy for an MLP" in text
  assert "the MLP's variants reach 50% to 60% (relu best) with 300 steps." in text
  # The CNN task's own steps (task_configs) are the ones reported next to its accuracy.
  both = {"summary": rows, "config": {"steps": 300}, "task_configs": {"mnist1d_cnn": {"steps": 9}}}
  text = training._mnist1d_baseline(both)
  assert "CNN's variants reach 80% to 80% (gelu best) with 9 steps." in text
