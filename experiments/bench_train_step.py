"""Benchmark of real training steps: stock Flax dropout against jdrop's, exact and fast.

Run from the repository root::

  PYTHONPATH=. python experiments/bench_train_step.py [--quick] [--rounds N] [--out PATH.md]
      [--json PATH] [--force]

Three models, each built three times, identical but for the class of every dropout module:

* ``lm1b``: the small lm1b-style decoder-only Transformer of ``transformers.py`` (2 layers,
  256 wide, 4 heads, vocabulary 4096; 16 sequences of 128 tokens);
* ``wmt``: the small wmt-style encoder-decoder of ``transformers.py`` (2 + 2 layers; 16 pairs
  of 64-token sequences);
* ``digits``: the MLP of the training study (``jdrop._src.studies.training``: its hidden
  widths, relu, dropout 0.5 after each activation) on all 1797 of scikit-learn's digits.

The dropout classes: ``flax.linen.Dropout``, ``jdrop.flax.Dropout`` (exact: Flax's masks) and
``jdrop fast``, ``jdrop.flax.Dropout(..., fast=True)`` (the module field ``fast``, which calls
``jdrop.dropout(..., fast=True)``; the committed results were measured with a stand-in subclass
that called the same function, before the field existed).
A fourth build, ``no dropout`` (:class:`NoDropout`, the identity), times the rest of the
step, so that each variant's time minus it is what its dropout costs.

What is timed, under ``jax.jit``: the **forward** pass in training mode (dropout on), and a
**step**: ``jax.value_and_grad`` of the cross-entropy plus an Adam update (optax). Before
timing, Flax's and jdrop's exact models are checked to compute the same logits and loss for
the same keys (their masks are the same), and the fast model to compute a finite loss. The
three variants of a (model, what) pair run in interleaved rounds, the first rotating; a
sample is ``time.perf_counter`` around ``reps`` blocked calls; medians, ratios of medians.
**Memory**: ``temp_size_in_bytes`` of each compiled step (XLA's peak temporary buffers).
On a GPU the same command works unchanged (the models are small there too).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
import optax

import jdrop
import jdrop.flax
from experiments import _timing
from experiments import transformers
from jdrop._src.studies import data as study_data
from jdrop._src.studies import training

FLAX, JDROP, FAST, NONE = "flax.linen.Dropout", "jdrop.flax.Dropout", "jdrop fast", "no dropout"
DEFAULT_ROUNDS = 11
QUICK_ROUNDS = 3
MIN_SAMPLE_S = 0.05
MAX_REPS = 50
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DIGITS_RATE = 0.5


class NoDropout(nn.Module):
  """The identity, with flax.linen.Dropout's fields: the step without any dropout."""

  rate: float
  broadcast_dims: Sequence[int] = ()
  deterministic: bool | None = None
  rng_collection: str = "dropout"

  def __call__(self, inputs: jax.Array, deterministic: bool | None = None, rng: Any = None):
    return inputs


DROPOUTS: dict[str, Any] = {
  FLAX: nn.Dropout,
  JDROP: jdrop.flax.Dropout,
  FAST: functools.partial(jdrop.flax.Dropout, fast=True),
  NONE: NoDropout,
}


class DigitsMlp(nn.Module):
  """The training study's MLP as Flax modules: Dense -> relu -> dropout per hidden layer."""

  hidden: tuple[int, ...]
  rate: float
  dropout: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for width in self.hidden:
      x = self.dropout(rate=self.rate)(nn.relu(nn.Dense(width)(x)), deterministic=not train)
    return nn.Dense(10)(x)


@dataclasses.dataclass(frozen=True)
class Workload:
  """A model family (``build(dropout_class)``), its inputs and its labels."""

  name: str
  build: Callable[[Any], nn.Module]
  inputs: tuple[jax.Array, ...]
  labels: jax.Array
  description: str


def workloads(quick: bool) -> list[Workload]:
  batch = 2 if quick else 16
  lm1b = transformers.LM1B_SMALL
  wmt = transformers.WMT_SMALL
  if quick:
    lm1b = dataclasses.replace(lm1b, emb_dim=32, mlp_dim=64, vocab_size=64, max_len=16)
    wmt = dataclasses.replace(wmt, emb_dim=32, mlp_dim=64, vocab_size=64, max_len=16)
  tokens = jax.random.randint(jax.random.key(1), (batch, lm1b.max_len), 0, lm1b.vocab_size)
  pair = jax.random.randint(jax.random.key(2), (2, batch, wmt.max_len), 0, wmt.vocab_size)
  digits = study_data.load_digits()
  x = jnp.asarray(np.concatenate([digits.x_train, digits.x_test]))
  y = jnp.asarray(np.concatenate([digits.y_train, digits.y_test]))
  hidden = training.DEFAULT.hidden
  return [
    Workload(
      "lm1b",
      lambda cls: transformers.LanguageModel(dataclasses.replace(lm1b, dropout=cls)),
      (tokens,),
      tokens,
      f"{lm1b.num_layers} layers, width {lm1b.emb_dim}, {lm1b.num_heads} heads, MLP"
      f" {lm1b.mlp_dim}, vocabulary {lm1b.vocab_size}; {batch} x {lm1b.max_len} tokens;"
      f" dropout {lm1b.dropout_rate}, attention dropout {lm1b.attention_dropout_rate}",
    ),
    Workload(
      "wmt",
      lambda cls: transformers.Translator(dataclasses.replace(wmt, dropout=cls)),
      (pair[0], pair[1]),
      pair[1],
      f"{wmt.num_layers} + {wmt.num_layers} layers, width {wmt.emb_dim}, {wmt.num_heads}"
      f" heads, MLP {wmt.mlp_dim}, vocabulary {wmt.vocab_size}; {batch} pairs of"
      f" {wmt.max_len} tokens; dropout {wmt.dropout_rate}, attention dropout"
      f" {wmt.attention_dropout_rate}",
    ),
    Workload(
      "digits",
      lambda cls: DigitsMlp(hidden=hidden, rate=DIGITS_RATE, dropout=cls),
      (x,),
      y,
      f"MLP {x.shape[1]} -> {' -> '.join(map(str, hidden))} -> 10, relu, dropout"
      f" {DIGITS_RATE} after each activation; all {x.shape[0]} digits in one batch",
    ),
  ]


# ----------------------------------------------------------------------------
# The programs.


@dataclasses.dataclass
class Programs:
  """One variant of one workload: its jitted forward and step, and the step's arguments."""

  forward: Callable[[], jax.Array]
  step: Callable[[], tuple[Any, Any, jax.Array]]
  temp_bytes: int | None


def programs(workload: Workload, dropout: Any, params: Any, key: jax.Array) -> Programs:
  model = workload.build(dropout)
  optimizer = optax.adam(1e-3)
  opt_state = optimizer.init(params)

  def logits(params: Any, key: jax.Array) -> jax.Array:
    return model.apply({"params": params}, *workload.inputs, train=True, rngs={"dropout": key})

  def loss(params: Any, key: jax.Array) -> jax.Array:
    out = logits(params, key)
    return optax.softmax_cross_entropy_with_integer_labels(out, workload.labels).mean()

  def step(params: Any, opt_state: Any, key: jax.Array) -> tuple[Any, Any, jax.Array]:
    value, grads = jax.value_and_grad(loss)(params, key)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value

  forward_jit = jax.jit(logits)
  compiled = jax.jit(step).lower(params, opt_state, key).compile()
  stats = compiled.memory_analysis()
  return Programs(
    forward=lambda: forward_jit(params, key),
    step=lambda: compiled(params, opt_state, key),
    temp_bytes=None if stats is None else int(stats.temp_size_in_bytes),
  )


def check(workload: Workload, built: dict[str, Programs]) -> dict[str, Any]:
  """Flax's and jdrop's exact logits and loss agree (same masks); fast's loss is finite."""
  flax_logits, jdrop_logits = (np.asarray(built[n].forward()) for n in (FLAX, JDROP))
  scale = float(np.max(np.abs(flax_logits)))
  diff = float(np.max(np.abs(flax_logits - jdrop_logits)))
  # Identical masks and dropout outputs; XLA may still fuse and round the rest of the two
  # programs differently, by a few ulps of the logits.
  if not diff <= 1e-5 * scale:
    raise RuntimeError(f"{workload.name}: jdrop's logits differ from flax's by {diff}")
  losses = {name: float(p.step()[2]) for name, p in built.items()}
  if not np.isfinite(losses[FAST]) or abs(losses[FLAX] - losses[JDROP]) > 1e-5 * abs(losses[FLAX]):
    raise RuntimeError(f"{workload.name}: losses {losses}")
  fast_logits = np.asarray(built[FAST].forward())
  return {
    "logits_bit_identical": diff == 0,
    "logits_max_abs_diff": diff,
    "losses": losses,
    "fast_logits_differ": bool(np.any(fast_logits != flax_logits)),
  }


def time_variants(runs: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
  blocked = {name: (lambda run=run: jax.block_until_ready(run())) for name, run in runs.items()}
  reps = _timing.calibrate_reps(
    blocked.values(), warmup=2, min_sample_s=MIN_SAMPLE_S, max_reps=MAX_REPS
  )
  return _timing.interleaved(blocked, rounds=rounds, reps=reps)


def bench(args: argparse.Namespace, command: str) -> dict[str, Any]:
  rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
  clock = _timing.Stopwatch()
  results: dict[str, Any] = {
    "meta": {
      "command": command,
      **_timing.machine_info(),
      "platform": jax.devices()[0].platform,
      "device_kind": jax.devices()[0].device_kind,
      "versions": _timing.versions(jax, jaxlib, flax, optax, np),
      "rounds": rounds,
      "load_average_start": _timing.load_average(),
    },
    "workloads": [],
  }
  key = jax.random.key(0)
  for workload in workloads(args.quick):
    clock.stage(f"{workload.name}: compile and check")
    params = workload.build(nn.Dropout).init(jax.random.key(3), *workload.inputs, train=False)
    built = {name: programs(workload, cls, params["params"], key) for name, cls in DROPOUTS.items()}
    record: dict[str, Any] = {
      "name": workload.name,
      "description": workload.description,
      "check": check(workload, built),
      "temp_bytes": {name: p.temp_bytes for name, p in built.items()},
    }
    for what in ("forward", "step"):
      clock.stage(f"{workload.name}: {what}")
      runs = {name: getattr(p, what) for name, p in built.items()}
      samples = time_variants(runs, rounds)
      record[what] = {name: statistics.median(s) for name, s in samples.items()}
      record[f"{what}_samples"] = samples
    results["workloads"].append(record)
  results["meta"]["load_average_end"] = _timing.load_average()
  results["meta"]["wall_s"] = clock.elapsed()
  results["goals"] = goals(results)
  return results


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
  lm1b = next(w for w in results["workloads"] if w["name"] == "lm1b")
  out = []
  for name, limit in ((FAST, 0.8), (JDROP, 0.9)):
    ratio = lm1b["step"][name] / lm1b["step"][FLAX]
    out.append(
      {
        "goal": f"lm1b training step with {name}: <= {limit}x stock Flax's time",
        "measured": ratio,
        "met": ratio <= limit,
      }
    )
  return out


# ----------------------------------------------------------------------------
# The report.


def render(results: dict[str, Any]) -> str:
  meta = results["meta"]
  lines = [
    f"# Training steps with stock Flax and jdrop dropout ({meta['platform']})",
    "",
    f"- command: `{meta['command']}`",
    f"- date: {meta['date']}",
    f"- device: {meta['device_kind']} ({meta['platform']})",
    f"- machine: {meta['processor']}; {meta['uname']}; {meta['cpu_count']} CPUs",
    f"- load average (1/5/15 min): {meta['load_average_start']} at the start,"
    f" {meta['load_average_end']} at the end; wall time {meta['wall_s']:.0f} s",
    "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    f"- method: jitted forward (training mode) and step (value_and_grad + Adam); the four"
    f" builds interleaved, {meta['rounds']} rounds; medians; ratios of medians; a dropout's"
    " cost is its build's median minus the no-dropout build's",
    f"- `{FAST}`: `jdrop.flax.Dropout` calling `jdrop.dropout(..., fast=True)` (a stand-in"
    " for the modules' `fast` field)",
    "",
    "## Models",
    "",
  ]
  for w in results["workloads"]:
    check_ = w["check"]
    same = (
      "bit-identical"
      if check_["logits_bit_identical"]
      else (f"equal to {check_['logits_max_abs_diff']:.1e}")
    )
    lines.append(f"- **{w['name']}**: {w['description']}. Flax's and jdrop's logits: {same}.")
  lines += ["", "## Time", ""]
  rows = []
  for w in results["workloads"]:
    for what in ("forward", "step"):
      t = w[what]
      cost = {name: t[name] - t[NONE] for name in (FLAX, JDROP, FAST)}
      rows.append(
        [
          w["name"],
          what,
          *(_timing.fmt_time(t[name]) for name in (FLAX, JDROP, FAST, NONE)),
          f"{t[JDROP] / t[FLAX]:.2f}x",
          f"{t[FAST] / t[FLAX]:.2f}x",
          f"{t[FAST] / t[JDROP]:.2f}x",
          " / ".join(f"{1e3 * cost[name]:.1f}" for name in (FLAX, JDROP, FAST)),
        ]
      )
  header = ["model", "what", "flax", "jdrop", "jdrop fast", "no dropout", "jdrop / flax"]
  header += ["fast / flax", "fast / jdrop", "dropout's cost, ms (flax / jdrop / fast)"]
  lines += _timing.table(header, rows, align="llrrrrrrrr")
  lines += ["", "## Peak temporary memory of the compiled step (XLA's temp buffers)", ""]
  mib = lambda b: "n/a" if b is None else f"{b / 2**20:.2f} MiB"
  lines += _timing.table(
    ["model", "flax", "jdrop", "jdrop fast", "no dropout"],
    [[w["name"], *(mib(w["temp_bytes"][n]) for n in DROPOUTS)] for w in results["workloads"]],
    align="lrrrr",
  )
  lines += ["", "## Goals", ""]
  for goal in results["goals"]:
    verdict = "met" if goal["met"] else "**missed**"
    lines.append(f"- {goal['goal']}: {goal['measured']:.2f}x ({verdict})")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(
    prog="experiments/bench_train_step.py",
    description="Time training steps of Transformers and an MLP with flax's and jdrop's dropout.",
  )
  _timing.add_report_options(
    parser,
    quick="tiny models and 3 rounds (a smoke test)",
    out="experiments/results/train-step-<platform>.md",
    rounds=DEFAULT_ROUNDS,
  )
  args = parser.parse_args(argv)
  out = args.out or RESULTS_DIR / f"train-step-{jax.devices()[0].platform}.md"
  if _timing.refuse_to_overwrite("bench_train_step.py", {"--out": out, "--json": args.json},
                                 force=args.force):  # fmt: skip
    return 2
  results = bench(args, _timing.command_line("experiments/bench_train_step.py", argv))
  _timing.write_outputs(out, render(results), args.json, results)
  return 0


if __name__ == "__main__":
  sys.exit(main())
