"""The training study's CNN and Transformer tasks (mnist1d_cnn, modadd) and their data.

One tiny study (relu and tanh on the CNN, relu on the Transformer, 2 seeds, 80 steps, tiny
widths) runs once per module: three programs whose compilation dominates, about 20 s on 2
loaded CPU cores (the CNN's compile at -O2, see training.compiler_options); every other test
takes a few seconds.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdrop
from jdrop._src import report
from jdrop._src.studies import data
from jdrop._src.studies import training

TINY = dataclasses.replace(
  training.DEFAULT,
  variants=("relu", "tanh"),
  rates=(0.5,),
  seeds=2,
  steps=80,
  learning_rate=1e-2,
  batch_size=32,
  tasks=("mnist1d_cnn", "modadd"),
  channels=(8, 8),
  width=8,
  mlp_width=16,
  heads=1,
  modulus=7,
  per_task={"modadd": training.TaskSettings(variants=("relu",), batch_size=8)},
)


@pytest.fixture(scope="module")
def results() -> dict:
  calls = []
  out = training.run(TINY, progress=lambda *args: calls.append(args))
  assert calls == [(1, 3, "mnist1d_cnn/relu"), (2, 3, "mnist1d_cnn/tanh"), (3, 3, "modadd/relu")]
  return out


def test_the_cnn_and_the_transformer_learn_and_relu_pairs_bit_identically(results: dict) -> None:
  # relu commutes with any mask, spatial (the CNN) or per unit (the Transformer's MLP): the
  # study's identity check compares every parameter of pre and post, seed by seed.
  identity = {(row["task"], row["variant"]): row for row in results["identity"]}
  for task in ("mnist1d_cnn", "modadd"):
    assert identity[(task, "relu")]["bit_identical"], task
    assert identity[(task, "relu")]["max_abs_diff"] == 0.0
  # ... and the check can fail: tanh does not commute, and its parameters differ.
  assert not identity[("mnist1d_cnn", "tanh")]["bit_identical"]
  assert ("modadd", "tanh") not in identity  # per_task: modadd trains relu only
  # Both models learn: the final training loss (dropout off) is 15% below the loss of a
  # uniform guess, log K, where training starts.
  for record in results["runs"]:
    if record["order"] == "none":
      classes = results["data"][record["task"]]["classes"]
      assert max(record["loss"]) < 0.85 * math.log(classes), record
  none = {
    row["task"]: row["none"]["mean"] for row in results["summary"] if row["variant"] == "relu"
  }
  assert none["mnist1d_cnn"] < 0.8  # chance is 0.9


def test_results_say_which_model_and_hyperparameters_each_task_trained(results: dict) -> None:
  configs = results["task_configs"]
  assert configs["mnist1d_cnn"] == {
    "model": "cnn",
    "channels": [8, 8],
    "kernel_size": 5,
    "variants": ["relu", "tanh"],
    "steps": 80,
    "learning_rate": 1e-2,
    "learning_rates": [1e-2],
    "batch_size": 32,
  }
  assert configs["modadd"]["model"] == "transformer"
  assert (configs["modadd"]["variants"], configs["modadd"]["batch_size"]) == (["relu"], 8)
  assert results["data"]["modadd"] == {
    "name": "modular addition",
    "train": 29,
    "test": 20,
    "features": 2,
    "classes": 7,
    "vocab": 7,
  }
  assert results["timing"]["programs"] == 3 and results["timing"]["models"] == 3 * 3 * 2


def test_section_and_replication_table_show_the_variant_a_task_did_not_train(
  results: dict,
) -> None:
  text = training.section(results, [])
  assert "Model: a 1-D CNN, 2 convolutions of 8, 8 channels (kernel 5, stride 2)" in text
  assert "spatial dropout (one keep or drop per example and channel" in text
  assert "Model: a pre-LN Transformer, 1 block of width 8 with 1 attention head" in text
  assert "no attention or residual dropout" in text
  assert "This is a smaller configuration: modular addition train only some" in text
  assert "`python -m jdrop report --full` trains every variant on every task" in text
  assert "| tanh | 0.5 | " in text and " | not run | " in text
  assert "bit-identical on each of the 2 tasks" in text
  (tanh,) = [row for row in results["replication"] if row["variant"] == "tanh"]
  assert list(tanh["tasks"]) == ["mnist1d_cnn"]  # no fake 0 for the task that did not run it
  assert results["family"]["size"] == 3  # every row of every task
  answer = report.answer({"training": results})
  assert "On 2 tasks (MNIST-1D (CNN), modular addition; 2 seeds each)" in answer
  assert report._where_trained(results) == " where it was trained"
  assert (
    "The order matters on every task where it was trained for" in answer
    or "The order mattered on no task for any of them" in answer  # nothing significant
  )
  assert "In training (a CNN and a Transformer on" in report._training_answer(results)


def test_replication_counts_only_the_tasks_that_trained_the_variant() -> None:
  def row(task: str, variant: str, mean: float, p: float) -> dict:
    d = {"mean": mean, "p_t_holm": p, "significant": p < 0.05}
    return {"task": task, "variant": variant, "rate": 0.5, "pre_minus_post": d}

  summary = [
    row("digits", "sigmoid", -0.02, 0.001),
    row("mnist1d", "sigmoid", -0.01, 0.01),
    row("digits", "elu", 0.01, 0.001),
    row("mnist1d", "elu", 0.01, 0.001),
    row("modadd", "elu", -0.01, 0.5),
  ]
  rows = {r["variant"]: r for r in training.replication(summary)}
  assert rows["sigmoid"]["verdict"] == "everywhere" and rows["sigmoid"]["signs_agree"]
  assert set(rows["sigmoid"]["tasks"]) == {"digits", "mnist1d"}
  assert rows["elu"]["verdict"] == "somewhere" and not rows["elu"]["signs_agree"]


# ----------------------------------------------------------------------------
# The pieces: spatial masks, the convolution, the Transformer's dropout site.


def test_spatial_mask_is_one_draw_per_example_and_channel() -> None:
  h = jnp.ones((64, 10, 16))  # (batch, length, channels), as the CNN's blocks see it
  key = jax.random.key(3)
  out = training.hidden_block(key, h, lambda x: x, rate=0.5, pre=True, broadcast_dims=(-2,))
  kept = out != 0
  assert (kept == kept[:, :1, :]).all()  # constant along the length axis
  assert 0.3 < kept[:, 0, :].mean() < 0.7  # but drawn per (example, channel)
  expected = jdrop.keep_mask(key, (64, 1, 16), rate=0.5)
  np.testing.assert_array_equal(kept, jnp.broadcast_to(expected, h.shape))
  assert training.mask_shape((64, 10, 16), (-2,)) == (64, 1, 16)
  # The same mask in both orders: relu is bit-identical, tanh is not.
  x = jax.random.normal(jax.random.key(4), h.shape)
  for f, same in ((jax.nn.relu, True), (jnp.tanh, False)):
    pre, post = (
      training.hidden_block(key, x, f, rate=0.3, pre=p, broadcast_dims=(-2,)) for p in (1, 0)
    )
    assert bool((pre == post).all()) is same


@pytest.mark.parametrize("length", [40, 20, 7, 5])
def test_patches_times_the_kernel_is_flax_conv(length: int) -> None:
  x = jax.random.normal(jax.random.key(0), (3, length, 4))
  conv = nn.Conv(6, (5,), strides=(2,), padding="SAME")
  params = conv.init(jax.random.key(1), x)["params"]
  mine = training.patches(x, 5, stride=2) @ params["kernel"].reshape(20, 6) + params["bias"]
  # Flax's convolution sums the 20 products in another order: a few ulp.
  np.testing.assert_allclose(mine, conv.apply({"params": params}, x), atol=2e-6)


def test_transformer_drops_only_in_its_mlp() -> None:
  model = training.build_model("modadd", "tanh", TINY, 7)
  assert isinstance(model, training.Transformer)
  tokens = jnp.array([[1, 2], [3, 4]])
  params = model.init(jax.random.key(0), tokens)
  # At rate 0 the training-mode network is the evaluation network; at rate 1 the MLP's
  # output is its second Dense layer's bias alone, so the logits no longer depend on the
  # MLP's first layer.
  evaluate = model.apply(params, tokens)
  np.testing.assert_array_equal(model.apply(params, tokens, key=jax.random.key(1)), evaluate)
  dropped = model.apply(params, tokens, key=jax.random.key(1), rate=1.0, pre=False)
  first = params["params"]["Dense_0"]["kernel"]
  changed = jax.tree.map(lambda p: p, params)
  changed["params"]["Dense_0"]["kernel"] = first + 1.0
  again = model.apply(changed, tokens, key=jax.random.key(1), rate=1.0, pre=False)
  np.testing.assert_array_equal(dropped, again)
  assert not np.array_equal(dropped, evaluate)


# ----------------------------------------------------------------------------
# Data and configuration errors.


def test_load_modadd_is_every_pair_once_and_fixed() -> None:
  d = data.load_modadd(modulus=11, seed=3)
  x = np.concatenate([d.x_train, d.x_test])
  assert x.dtype == np.int32 and d.y_train.dtype == np.int32 and d.vocab == d.num_classes == 11
  assert sorted(map(tuple, x.tolist())) == [(a, b) for a in range(11) for b in range(11)]
  np.testing.assert_array_equal(d.y_train, d.x_train.sum(1) % 11)
  np.testing.assert_array_equal(d.y_test, d.x_test.sum(1) % 11)
  assert len(d.x_train) == round(0.6 * 121)
  again = data.load_modadd(modulus=11, seed=3)
  np.testing.assert_array_equal(d.x_train, again.x_train)
  assert not np.array_equal(d.x_train, data.load_modadd(modulus=11, seed=4).x_train)


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    ({"modulus": 1}, r"load_modadd: `modulus` must be an int in \[2, 4096\], got 1\. Use e\.g\."),
    ({"modulus": 3.0}, r"`modulus` must be an int"),
    ({"train_fraction": 1.0}, r"load_modadd: `train_fraction` must lie in \(0, 1\), got 1\.0"),
    ({"seed": -1}, r"load_modadd: `seed` must be a non-negative int, got -1"),
  ],
)
def test_load_modadd_rejects_bad_arguments(kwargs: dict, match: str) -> None:
  with pytest.raises(ValueError, match=match):
    data.load_modadd(**kwargs)


BAD_CONFIGS = {
  "task": (
    {"tasks": ("mnist2d",)},
    r"training\.run: `config\.tasks` must be a non-empty tuple of distinct names from digits,"
    r" mnist1d, mnist1d_cnn, modadd, npz, got \('mnist2d',\)",
  ),
  "per_task key": (
    {"per_task": {"cifar": training.TaskSettings()}},
    r"`config\.per_task` must have task names .* as keys, got 'cifar'",
  ),
  "per_task variants": (
    {"per_task": {"modadd": training.TaskSettings(variants=("elu",))}},
    r"`config\.per_task\['modadd'\]\.variants` must name variants of config\.variants",
  ),
  "per_task steps": (
    {"per_task": {"modadd": training.TaskSettings(steps=0)}},
    r"`config\.per_task\['modadd'\]\.steps` must be an int >= 1, got 0\. Use e\.g\. steps=300",
  ),
  "per_task learning rate": (
    {"per_task": {"mnist1d_cnn": training.TaskSettings(learning_rate=-1.0)}},
    r"`config\.per_task\['mnist1d_cnn'\]\.learning_rate` must be positive",
  ),
  "heads": ({"width": 8, "heads": 3}, r"`config\.heads` must divide config\.width \(8\), got 3"),
  "channels": ({"channels": ()}, r"`config\.channels` must be a non-empty tuple of positive"),
  "modulus": ({"modulus": 1}, r"`config\.modulus` must be an int >= 2, got 1"),
  "batch": (
    {"per_task": {"modadd": training.TaskSettings(batch_size=64)}},
    r"`config\.batch_size` must be at most the number of training examples of modadd \(29\)",
  ),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_task_configs_name_the_field_and_the_fix(case: str) -> None:
  changes, match = BAD_CONFIGS[case]
  with pytest.raises((ValueError, TypeError), match=match) as info:
    training.run(dataclasses.replace(TINY, **changes))
  assert str(info.value).startswith("jdrop.studies.training.run: `config.")


def test_per_task_must_be_a_dict_of_task_settings() -> None:
  with pytest.raises(TypeError, match=r"`config\.per_task\['modadd'\]` must be a TaskSettings"):
    training.check_config(dataclasses.replace(TINY, per_task={"modadd": {"steps": 3}}))
  with pytest.raises(ValueError, match=r"training\.load: `task` must be a name from digits"):
    training.load(TINY, "mnist2d")


def test_task_config_applies_only_the_fields_a_task_sets() -> None:
  config = dataclasses.replace(
    training.DEFAULT,
    per_task={"modadd": training.TaskSettings(variants=("gelu", "relu", "elu"), steps=7)},
  )
  modadd = training.task_config(config, "modadd")
  assert modadd.variants == ("relu", "gelu", "elu")  # the order of config.variants
  assert (modadd.steps, modadd.learning_rate) == (7, config.learning_rate)
  assert training.task_config(config, "digits") is config
  full = {t: training.task_config(training.FULL, t).variants for t in training.FULL.tasks}
  assert all(v == tuple(training.VARIANTS) for v in full.values())  # --full: every variant
  default = training.task_config(training.DEFAULT, "mnist1d_cnn").variants
  assert default == ("relu", "tanh", "sigmoid", "gelu")


# ----------------------------------------------------------------------------
# A grid of learning rates in one program.


def test_a_learning_rate_grid_trains_each_rate_in_the_same_program() -> None:
  config = dataclasses.replace(
    training.DEFAULT,
    variants=("tanh",),
    rates=(0.5,),
    seeds=2,
    hidden=(8,),
    steps=6,
    tasks=("digits",),
    learning_rates=(1e-2, 1e-3),
  )
  results = training.run(config)
  assert results["timing"]["programs"] == 1 and results["timing"]["models"] == 2 * 3 * 2
  assert [(r["rate"], r["learning_rate"]) for r in results["summary"]] == [
    (0.5, 1e-2),
    (0.5, 1e-3),
  ]
  assert results["family"]["size"] == 2  # each learning rate is its own comparison
  assert [r["learning_rate"] for r in results["replication"]] == [1e-2, 1e-3]
  # The grid's runs are the runs of a single learning rate: seed 1, post, at 1e-3.
  d = training.load(config)
  arrays = [jnp.asarray(a) for a in (d.x_train, d.y_train, d.x_test, d.y_test)]
  alone = dataclasses.replace(config, learning_rate=1e-3, learning_rates=())
  train = jax.jit(training.trainer("tanh", alone, d.num_classes))
  single = train(jax.random.key(1), jnp.float32(0.5), jnp.bool_(False), *arrays)
  (record,) = [r for r in results["runs"] if (r["order"], r["learning_rate"]) == ("post", 1e-3)]
  # A batched matrix product may sum in another order than a single one: a few ulp.
  np.testing.assert_allclose(float(single.loss), record["loss"][1], rtol=1e-5)
  assert abs(float(single.test_error) - record["test_error"][1]) <= 1 / 450
  fast, slow = (
    np.mean(
      [r["loss"] for r in results["runs"] if r["learning_rate"] == lr and r["order"] == "none"]
    )
    for lr in (1e-2, 1e-3)
  )
  assert fast < slow  # 6 steps: the larger learning rate has come further
  text = training.section(results, [])
  assert (
    "| task | activation | rate | lr | none |" in text and "| digits | tanh | 0.5 | 0.001 |" in text
  )
  assert "learning rates 0.01, 0.001 (each its own comparison)" in text
  with pytest.raises(ValueError, match=r"`config\.learning_rates` must be a tuple of distinct"):
    training.run(dataclasses.replace(config, learning_rates=(1e-3, 1e-3)))
  with pytest.raises(ValueError, match=r"`config\.per_task\['digits'\]\.learning_rates` must"):
    training.run(
      dataclasses.replace(config, per_task={"digits": training.TaskSettings(learning_rates=(0,))})
    )


def test_full_trains_a_learning_rate_grid_on_the_mlp_tasks() -> None:
  grids = {
    t: training.learning_rates(training.task_config(training.FULL, t)) for t in training.FULL.tasks
  }
  assert grids == {
    "digits": (1e-3, 3e-3, 1e-2),
    "mnist1d": (1e-3, 3e-3, 1e-2),
    "mnist1d_cnn": (3e-3,),
    "modadd": (3e-3,),
  }
  assert training.learning_rates(training.DEFAULT) == (training.DEFAULT.learning_rate,)


def test_findings_name_the_learning_rate_of_each_significant_comparison() -> None:
  d = {"mean": -0.02, "p_t": 0.001, "p_t_holm": 0.002, "significant": True}
  rows = [
    {"task": "digits", "variant": "tanh", "rate": 0.5, "learning_rate": lr, "pre_minus_post": d}
    for lr in (1e-3, 1e-2)
  ]
  results = {"summary": rows, "data": {"digits": {"name": "digits"}}, "seeds": list(range(16))}
  text = training._findings(results)
  assert "tanh at 0.5 (lr 0.001) on digits (-2.00, pre better)" in text
  assert "tanh at 0.5 (lr 0.01) on digits" in text
  assert "(lr" not in training._findings(dict(results, summary=rows[:1]))  # one lr: no note
