"""Benchmark of the training study: one vmapped program for all seeds against a Python loop.

Run from the repository root::

  PYTHONPATH=. python experiments/bench_training.py [--quick] [--config default|full]
      [--rounds N] [--out PATH.md] [--json PATH] [--force]

What is measured, for one configuration of the study (``--variant tanh --order post --rate 0.5``
by default) at the model size of ``--config`` (the study's DEFAULT unless told):

* **seeds**: ``jax.jit(jax.vmap(train))`` over 8 seeds, one call, against a Python loop of 8 calls
  of ``jax.jit(train)``, one seed each. ``train`` is
  :func:`jdrop._src.studies.training.trainer`'s function: the whole training loop
  (``lax.scan`` over the steps) and the test error. Same total work: 8 models, same keys.
* **study program**: one variant's program as the study runs it (``vmap`` over seeds and over the
  7 runs: none, pre and post at each rate, i.e. 56 models), against a loop of 56 single-model
  calls.

Both contenders of a comparison are compiled ahead of time (``.lower().compile()``), and the
compile times are reported separately; the results of the two are checked to agree (the same
test error for every model, parameters within a stated tolerance) before anything is timed.
Then they run in interleaved rounds, the starting one alternating; a sample is
``time.perf_counter`` around the whole call (the loop: all its calls) until the results are
ready. Tables show medians over the rounds; the speed-up is the ratio of medians. The report
records the machine, the versions and the load average: other work on the same cores skews
the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments import _timing
from jdrop._src.studies import training

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GOAL = 3.0  # the vmapped program must be at least this much faster than the loop over seeds
DEFAULT_ROUNDS = 5
# The mean test error of the vmapped models and of the same models trained alone may differ by
# rounding amplified by training, never by this much (0.5 percentage points).
MEAN_ERROR_ATOL = 0.005


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="experiments/bench_training.py",
    description="Time the training study's vmapped program against a Python loop over seeds.",
  )
  parser.add_argument("--config", choices=("default", "full"), default="default")
  parser.add_argument("--variant", choices=tuple(training.VARIANTS), default="tanh")
  parser.add_argument("--order", choices=("pre", "post"), default="post")
  parser.add_argument("--rate", type=float, default=0.5)
  parser.add_argument("--seeds", type=int, default=8)
  _timing.add_report_options(
    parser,
    quick="20 steps, 2 rounds (a smoke test)",
    out="experiments/results/training-<platform>.md",
    rounds=DEFAULT_ROUNDS,
    json_help="raw numbers (default: the report's path, .json)",
  )
  args = parser.parse_args(argv)
  args.rounds = 2 if args.quick else args.rounds or DEFAULT_ROUNDS
  return args


def timed_compile(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
  """``fn`` (jitted) compiled ahead of time for ``args``, and the seconds it took."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def check_same(vmapped: training.Trained, singles: Sequence[training.Trained]) -> dict[str, Any]:
  """How far the vmapped models are from the same models trained alone; raises if too far.

  Rounding may differ (a batched matrix product can sum in another order; GPUs may use TF32),
  and training amplifies it, so only the mean test error must agree closely.
  """
  errors_v = np.asarray(vmapped.test_error).reshape(-1)
  errors_s = np.asarray([float(t.test_error) for t in singles])
  gap = 0.0
  for i, single in enumerate(singles):
    pairs = zip(jax.tree.leaves(vmapped.params), jax.tree.leaves(single.params), strict=True)
    for batched, alone in pairs:
      gap = max(gap, float(np.abs(np.asarray(batched).reshape(-1, *alone.shape)[i] - alone).max()))
  if abs(errors_v.mean() - errors_s.mean()) > MEAN_ERROR_ATOL:
    raise SystemExit(
      f"bench_training: vmapped and looped mean test errors differ: {errors_v} vs {errors_s}"
    )
  return {
    "max_param_gap": gap,
    "test_errors_equal": int((errors_v == errors_s).sum()),
    "mean_test_error_gap": float(abs(errors_v.mean() - errors_s.mean())),
  }


def comparison(
  name: str,
  vmapped: Callable[..., Any],
  vmapped_args: tuple[Any, ...],
  single: Any,
  single_args: Sequence[tuple[Any, ...]],
  single_compile_s: float,
  rounds: int,
) -> dict[str, Any]:
  """Compiles ``vmapped``, checks it against the loop of ``single`` calls, and times both."""
  compiled, compile_s = timed_compile(vmapped, *vmapped_args)
  batched = jax.block_until_ready(compiled(*vmapped_args))  # also the warm-up call
  alone = [jax.block_until_ready(single(*args)) for args in single_args]
  agreement = check_same(batched, alone)
  samples = _timing.interleaved(
    {
      "vmapped": lambda: jax.block_until_ready(compiled(*vmapped_args)),
      "loop": lambda: jax.block_until_ready([single(*args) for args in single_args]),
    },
    rounds=rounds,
  )
  vmapped_s, loop_s = statistics.median(samples["vmapped"]), statistics.median(samples["loop"])
  return {
    "name": name,
    "models": len(single_args),
    "vmapped_s": vmapped_s,
    "loop_s": loop_s,
    "speedup": loop_s / vmapped_s,
    "vmapped_samples": samples["vmapped"],
    "loop_samples": samples["loop"],
    "compile_vmapped_s": compile_s,
    "compile_single_s": single_compile_s,
    **agreement,
  }


def bench_products(models: int, width: int, rounds: int) -> dict[str, Any]:
  """Why the speed-up is what it is: ``models`` chained matrix products, vmapped, against one.

  A ``lax.scan`` of 100 steps of ``w + 1e-3 * x.T @ tanh(x @ w)`` with ``width x width``
  matrices (a dense layer forward and back), for one model and vmapped over ``models``. If the
  vmapped program costs ``models`` times the single one, the backend runs a batched product as
  separate products and ``vmap`` can save only per-step overhead.
  """
  steps = 100

  def chained(w: jax.Array, x: jax.Array) -> jax.Array:
    def step(w: jax.Array, _: None) -> tuple[jax.Array, None]:
      return w + 1e-3 * (x.T @ jnp.tanh(x @ w)), None

    return lax.scan(step, w, None, length=steps)[0]

  key_w, key_x = jax.random.split(jax.random.key(0))
  w = jax.random.normal(key_w, (models, width, width)) / width
  x = jax.random.normal(key_x, (models, width, width))
  options = training.compiler_options()
  one = jax.jit(chained, compiler_options=options).lower(w[0], x[0]).compile()
  many = jax.jit(jax.vmap(chained), compiler_options=options).lower(w, x).compile()
  jax.block_until_ready((one(w[0], x[0]), many(w, x)))
  samples = _timing.interleaved(
    {
      "one": lambda: jax.block_until_ready(one(w[0], x[0])),
      "many": lambda: jax.block_until_ready(many(w, x)),
    },
    rounds=rounds,
  )
  one_s, many_s = statistics.median(samples["one"]), statistics.median(samples["many"])
  return {
    "models": models,
    "width": width,
    "one_step_us": one_s / steps * 1e6,
    "vmapped_step_us": many_s / steps * 1e6,
    "cost_ratio": many_s / one_s,
  }


def bench(args: argparse.Namespace, command: str) -> dict[str, Any]:
  meta = training.metadata()  # the load average before the work
  meta["command"] = command
  config = training.DEFAULT if args.config == "default" else training.FULL
  if args.quick:
    config = dataclasses.replace(config, steps=20)
  data = training.load(config)
  arrays = [jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test, data.y_test)]
  train = training.trainer(args.variant, config, data.num_classes)
  options = training.compiler_options()
  keys = jnp.stack([jax.random.key(config.first_seed + i) for i in range(args.seeds)])
  rate, pre = jnp.float32(args.rate), jnp.bool_(args.order == "pre")

  single, single_compile_s = timed_compile(
    jax.jit(train, compiler_options=options), keys[0], rate, pre, *arrays
  )
  over_seeds = jax.jit(
    jax.vmap(train, in_axes=(0, None, None, None, None, None, None)), compiler_options=options
  )
  rows = [
    comparison(
      f"{args.seeds} seeds",
      over_seeds,
      (keys, rate, pre, *arrays),
      single,
      [(keys[i], rate, pre, *arrays) for i in range(args.seeds)],
      single_compile_s,
      args.rounds,
    )
  ]
  plan = training.runs(config)
  rates = jnp.asarray([r for _, r in plan], jnp.float32)
  pres = jnp.asarray([o != "post" for o, _ in plan])
  rows.append(
    comparison(
      f"study program ({len(plan)} runs x {args.seeds} seeds)",
      training.study_program(args.variant, config, data.num_classes),
      (keys, rates, pres, *arrays),
      single,
      [(keys[s], rates[r], pres[r], *arrays) for r in range(len(plan)) for s in range(args.seeds)],
      single_compile_s,
      args.rounds,
    )
  )
  return {
    "meta": meta,
    "setup": {
      "config": args.config,
      "variant": args.variant,
      "order": args.order,
      "rate": args.rate,
      "seeds": args.seeds,
      "rounds": args.rounds,
      "hidden": list(config.hidden),
      "steps": config.steps,
      "batch_size": config.batch_size,
      "data": data.describe(),
    },
    "rows": rows,
    "products": bench_products(args.seeds, max(config.hidden), max(args.rounds, 5)),
    "goal": {
      "speedup_at_least": GOAL,
      "measured": rows[0]["speedup"],
      "met": rows[0]["speedup"] >= GOAL,
    },
  }


def render(results: dict[str, Any], load_end: str, wall_s: float) -> str:
  meta, setup = results["meta"], results["setup"]
  versions = ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
  lines = [
    f"# Training study: vmapped seeds against a Python loop ({meta['backend']})",
    "",
    f"- command: `{meta['command']}`",
    f"- date: {meta['date']}",
    f"- machine: {meta['processor']}; {meta['cpu_count']} CPUs; device {meta['device']}"
    f" ({meta['backend']}); {meta['uname']}",
    f"- load average (1/5/15 min): {meta['load_average']} at the start, {load_end} at the end;"
    f" wall time {wall_s:.0f} s",
    f"- versions: {versions}",
    f"- XLA compiler options: {meta['compiler_options'] or 'defaults'}",
    f"- model: MLP {setup['data']['features']} -> "
    + " -> ".join(str(w) for w in setup["hidden"])
    + f" -> {setup['data']['classes']}, {setup['variant']}, {setup['order']}-activation dropout at"
    f" rate {setup['rate']:g}, Adam, {setup['steps']} steps of {setup['batch_size']} examples on"
    f" {setup['data']['name']} (the study's `{setup['config'].upper()}` size)",
    "- method: compiled ahead of time (compile reported separately); results compared (models"
    " with the same test error, largest parameter gap; the mean test errors must agree within"
    f" {MEAN_ERROR_ATOL * 100:g} points); {setup['rounds']} interleaved"
    " rounds after a warm-up call; medians; speed-up = loop median / vmapped median",
    "",
  ]
  columns: list[tuple[str, Callable[[dict[str, Any]], str]]] = [  # a header, its cells
    ("what", lambda r: r["name"]),
    ("models", lambda r: str(r["models"])),
    ("one vmapped program", lambda r: f"{r['vmapped_s'] * 1e3:.0f} ms"),
    ("Python loop of jitted single-seed calls", lambda r: f"{r['loop_s'] * 1e3:.0f} ms"),
    ("speed-up", lambda r: f"{r['speedup']:.2f}x"),
    ("compile: vmapped", lambda r: f"{r['compile_vmapped_s']:.1f} s"),
    ("compile: single", lambda r: f"{r['compile_single_s']:.1f} s"),
    ("same test error", lambda r: f"{r['test_errors_equal']}/{r['models']}"),
    ("max parameter gap", lambda r: f"{r['max_param_gap']:.2g}"),
  ]
  rows = [[cell(row) for _, cell in columns] for row in results["rows"]]
  lines += _timing.table([header for header, _ in columns], rows)
  goal = results["goal"]
  verdict = "met" if goal["met"] else "NOT met"
  lines += [
    "",
    f"Goal: the vmapped program at least {goal['speedup_at_least']:g}x faster than the loop over"
    f" {setup['seeds']} seeds: {verdict} ({goal['measured']:.2f}x).",
    "",
  ]
  products = results.get("products")
  if products:
    lines += [
      f"Why: {products['models']} chained {products['width']}x{products['width']} matrix"
      " products (a dense layer forward and back, 100 steps of `lax.scan`) cost"
      f" {products['one_step_us']:.1f} us per step for one model and"
      f" {products['vmapped_step_us']:.1f} us vmapped over {products['models']}, i.e."
      f" {products['cost_ratio']:.1f}x one model's time for {products['models']}x its work, so"
      f" vmap saves {1 - products['cost_ratio'] / products['models']:.0%} of the matrix work.",
    ]
    if products["cost_ratio"] > products["models"] / 2:
      lines += [
        "At this size a single model is already limited by arithmetic rather than by per-step"
        " overhead, and batching the products saves little of their arithmetic,"
        " so the vmapped program cannot be many times faster than the loop.",
      ]
    else:
      lines += [
        "A single model leaves the device mostly idle (per-step overhead dominates), and vmap"
        " fills it with the other models' work.",
      ]
    lines.append("")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  platform = jax.default_backend()
  out = args.out or RESULTS_DIR / f"training-{platform}.md"
  json_out = args.json or out.with_suffix(".json")
  outputs = {"--out": out, "--json": json_out}
  if _timing.refuse_to_overwrite("bench_training.py", outputs, force=args.force):
    return 2
  clock = _timing.Stopwatch()
  results = bench(args, _timing.command_line("experiments/bench_training.py", argv))
  load_end = _timing.load_average()
  results["meta"]["load_average_end"] = load_end
  results["meta"]["wall_s"] = clock.elapsed()
  text = render(results, load_end, results["meta"]["wall_s"])
  _timing.write_outputs(out, text, json_out, results, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
