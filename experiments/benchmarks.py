"""Benchmarks for jdrop: dropout speed, many masks at once, memory and compile time.

Run from the repository root::

  PYTHONPATH=. python experiments/benchmarks.py [--quick] [--out PATH.md] [--json PATH]
      [--sizes 16 20 24] [--rounds 15] [--force]

What is measured, for dropout at rate 0.5 of a 1-D array of ``2**k`` elements:

* ``jdrop`` (``jdrop.dropout``, jitted; the exact mode, Flax's masks), ``jdrop fast``
  (``jdrop.dropout(..., fast=True)``: 16-bit uniforms, four per threefry2x32 block),
  ``jdrop (fused off)`` (a ``jax.random.bernoulli`` mask
  with the same keep probability, applied by ``jdrop.apply_mask``: jdrop without its fused
  threefry path, which isolates what that path gains),
  ``flax.linen.Dropout`` (jitted ``apply`` with ``rng=``), ``bernoulli+select`` (plain
  ``jax.random.bernoulli`` and ``lax.select``, jitted), ``torch`` (``torch.nn.functional.dropout``,
  only when torch is importable and runs on the device JAX uses) and the ``floor``, a jitted
  ``x * 2`` that reads and writes the same bytes and does no random work.
* Before anything is timed, every JAX contender's output is checked to equal flax's bit for bit
  for the same key, at every size and dtype (``jdrop fast``, whose masks are not flax's, to
  equal ``jdrop.apply_mask`` of ``jdrop.keep_mask(..., fast=True)``): a benchmark that times
  wrong code is worthless.
* Timing: after compilation and warm-up, the contenders run in interleaved rounds in this one
  process (round-robin, the starting contender rotating each round). A sample is
  ``time.perf_counter`` around ``reps`` back-to-back ``fn(...).block_until_ready()`` calls,
  divided by ``reps``; ``reps`` is 1 unless the fastest contender takes under 2 ms, so that tiny
  sizes are not measured at the timer's resolution. Tables show medians over the rounds; ratios
  are ratios of medians. Bandwidth counts the bytes of ``x`` read plus the output written.
* Many masks: ``jdrop.keep_mask`` (exact and fast) against ``jax.random.bernoulli``, each
  ``jax.vmap``-ed over 1024 keys of 4096 elements (the exact masks are checked to be equal
  first).
* Memory: ``temp_size_in_bytes`` of the compiled program (``memory_analysis()``) for dropout of
  ``2**24`` float32 elements, per element.
* Compile time: ``lower`` + ``compile`` wall time of a fresh function after
  ``jax.clear_caches()``, with a new static shape each run (median of several runs).

The script has no device-specific code: on a GPU, add ``--sizes 16 20 24 28`` (torch joins
when it is importable with CUDA, timed in the same rounds). The goals
listed at the end of the report are the project's targets; they are evaluated, never assumed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from jax import lax

import jdrop
from experiments import _timing
from experiments._timing import Runner
from experiments._timing import fmt_time
from experiments._timing import table

RATE = 0.5
KEEP = 1.0 - RATE
DTYPES = (jnp.float32, jnp.bfloat16)
DEFAULT_SIZES = (16, 20, 24)
QUICK_SIZES = (10, 12)
DEFAULT_ROUNDS = 15
QUICK_ROUNDS = 3
MASKS_SHAPE = (1024, 4096)  # (number of masks, elements per mask)
QUICK_MASKS_SHAPE = (128, 4096)
MEMORY_SIZE = 24  # exponent: memory is reported for 2**24 float32 elements
COMPILE_SIZE = 20
MIN_SAMPLE_S = 2e-3
MAX_REPS = 200
RESULTS_DIR = Path(__file__).resolve().parent / "results"

JDROP = "jdrop"
FAST = "jdrop fast"
UNFUSED = "jdrop (fused off)"
FLAX = "flax.linen.Dropout"
BERNOULLI = "bernoulli+select"
TORCH = "torch"
FLOOR = "floor (x * 2)"

DropoutFn = Callable[[jax.Array, jax.Array], jax.Array]


class BenchmarkError(Exception):
  """A contender computed something other than what it claims; nothing is timed."""


# ----------------------------------------------------------------------------
# The contenders.


def jdrop_dropout(key: jax.Array, x: jax.Array) -> jax.Array:
  return jdrop.dropout(key, x, rate=RATE)


def jdrop_fast(key: jax.Array, x: jax.Array) -> jax.Array:
  return jdrop.dropout(key, x, rate=RATE, fast=True)


def fast_reference(key: jax.Array, x: jax.Array) -> jax.Array:
  """What ``jdrop fast`` must compute: the fast mask, drawn as a value, then applied.

  At rate 0.5 the fast mode's rounded keep probability is 0.5 itself.
  """
  return jdrop.apply_mask(x, jdrop.keep_mask(key, x.shape, rate=RATE, fast=True), rate=RATE)


def jdrop_unfused(key: jax.Array, x: jax.Array) -> jax.Array:
  # Not a patch of jdrop's fused_path_available: jdrop jits its own core, and a trace cached
  # there (patched or not) would leak into the other contender.
  return jdrop.apply_mask(x, jax.random.bernoulli(key, KEEP, x.shape), rate=RATE)


_FLAX_MODULE = nn.Dropout(rate=RATE, deterministic=False)


def flax_dropout(key: jax.Array, x: jax.Array) -> jax.Array:
  return _FLAX_MODULE.apply({}, x, rng=key)


def bernoulli_select(key: jax.Array, x: jax.Array) -> jax.Array:
  mask = jax.random.bernoulli(key, KEEP, x.shape)
  return lax.select(mask, x / KEEP, jnp.zeros_like(x))


def floor(x: jax.Array) -> jax.Array:
  return x * 2


DROPOUT_FNS: dict[str, DropoutFn] = {
  JDROP: jdrop_dropout,
  FAST: jdrop_fast,
  UNFUSED: jdrop_unfused,
  FLAX: flax_dropout,
  BERNOULLI: bernoulli_select,
}


def fresh(fn: DropoutFn) -> DropoutFn:
  """A new function object: JAX caches traces per function, so this forces a new trace."""
  return lambda key, x: fn(key, x)


def uses_jax_random(fn: DropoutFn, key: jax.Array) -> bool:
  """Whether ``fn`` draws its mask through ``jax.random`` (a ``random_bits`` primitive)."""
  jaxpr = str(jax.make_jaxpr(fresh(fn))(key, jnp.ones(8, jnp.float32)))
  return "random_bits" in jaxpr or "threefry2x32" in jaxpr


def jax_runner(fn: Callable[..., jax.Array], *args: Any) -> Runner:
  return lambda: fn(*args).block_until_ready()


def import_torch() -> ModuleType | None:
  """torch, an optional contender, or None where it is not installed."""
  try:
    import torch
  except ImportError:
    return None
  return torch


def torch_runner(x: jax.Array, jax_platform: str) -> Runner | str:
  """``torch.nn.functional.dropout`` on the device JAX uses, or the reason it is skipped."""
  torch = import_torch()
  if torch is None:
    return "torch is not importable"
  if jax_platform == "cpu":
    device = "cpu"
  elif jax_platform == "gpu" and torch.cuda.is_available():
    device = "cuda"
  else:
    return f"torch has no device matching JAX's {jax_platform!r}"
  dtype = {np.dtype(jnp.float32): torch.float32, np.dtype(jnp.bfloat16): torch.bfloat16}[x.dtype]
  host = np.array(x.astype(jnp.float32))  # a writable copy, as torch.from_numpy wants
  t = torch.from_numpy(host).to(device=device, dtype=dtype)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def run() -> None:
    torch.nn.functional.dropout(t, p=RATE, training=True)
    sync()

  return run


# ----------------------------------------------------------------------------
# Timing.


@dataclasses.dataclass(frozen=True)
class Timing:
  """Per-call times (seconds) of one contender, one sample per round."""

  samples: tuple[float, ...]
  reps: int

  @property
  def median(self) -> float:
    return statistics.median(self.samples)

  @property
  def spread(self) -> float:
    """Interquartile range over the median."""
    if len(self.samples) < 2:
      return 0.0
    q1, _, q3 = statistics.quantiles(self.samples, n=4)
    return (q3 - q1) / self.median


def time_interleaved(
  contenders: Mapping[str, Runner], *, rounds: int, warmup: int
) -> dict[str, Timing]:
  """Round-robin timing of already compiled contenders; see the module docstring."""
  reps = _timing.calibrate_reps(
    contenders.values(), warmup=warmup, min_sample_s=MIN_SAMPLE_S, max_reps=MAX_REPS
  )
  samples = _timing.interleaved(contenders, rounds=rounds, reps=reps)
  return {name: Timing(tuple(s), reps) for name, s in samples.items()}


# ----------------------------------------------------------------------------
# The benchmarks.


def check_equal(what: str, got: jax.Array, want: jax.Array) -> None:
  got_np, want_np = np.asarray(got), np.asarray(want)
  if got_np.shape != want_np.shape or got_np.dtype != want_np.dtype:
    raise BenchmarkError(
      f"{what}: got {got_np.dtype}{list(got_np.shape)}, want {want_np.dtype}{list(want_np.shape)}"
    )
  # Compare bit patterns: NaN == NaN and -0.0 != 0.0 here, as "bit for bit" means.
  bits = np.uint16 if got_np.dtype.itemsize == 2 else np.uint32
  diff = int(np.count_nonzero(got_np.view(bits) != want_np.view(bits))) if got_np.size else 0
  if diff:
    raise BenchmarkError(f"{what}: {diff} of {got_np.size} elements differ; refusing to time it")


def bench_dropout(
  exponent: int, dtype: Any, *, rounds: int, warmup: int, jax_platform: str
) -> tuple[list[dict[str, Any]], str | None]:
  """Times every contender for one size and dtype; returns rows and a torch skip reason."""
  n = 2**exponent
  key = jax.random.key(0)
  x = jax.random.normal(jax.random.key(1), (n,), jnp.float32).astype(dtype)
  jitted = {name: jax.jit(fn) for name, fn in DROPOUT_FNS.items()}
  wants = {FLAX: jitted[FLAX](key, x), FAST: jax.jit(fast_reference)(key, x)}
  for name, fn in jitted.items():
    # At rate 0.5 the scale 1/0.5 is a power of two, so bf16 outputs match exactly too.
    reference = FAST if name == FAST else FLAX
    what = f"{name} vs {reference} at 2^{exponent} {np.dtype(dtype).name}"
    check_equal(what, fn(key, x), wants[reference])
  del wants
  contenders = {name: jax_runner(fn, key, x) for name, fn in jitted.items()}
  torch_or_reason = torch_runner(x, jax_platform)
  skipped = None
  if isinstance(torch_or_reason, str):
    skipped = torch_or_reason
  else:
    torch_or_reason()  # first call: allocation and kernel selection
    contenders[TORCH] = torch_or_reason
  floor_jit = jax.jit(floor)
  floor_jit(x).block_until_ready()
  contenders[FLOOR] = jax_runner(floor_jit, x)
  timings = time_interleaved(contenders, rounds=rounds, warmup=warmup)

  nbytes = 2 * n * np.dtype(dtype).itemsize  # x read once, the output written once
  floor_t, flax_t = timings[FLOOR].median, timings[FLAX].median
  rows = [
    {
      "size_log2": exponent,
      "dtype": np.dtype(dtype).name,
      "contender": name,
      "median_s": t.median,
      "spread": t.spread,
      "reps": t.reps,
      "rounds": len(t.samples),
      "ratio_to_floor": t.median / floor_t,
      "speedup_over_flax": flax_t / t.median,
      "gb_per_s": nbytes / t.median / 1e9,
    }
    for name, t in timings.items()
  ]
  return rows, skipped


def bench_masks(shape: tuple[int, int], *, rounds: int, warmup: int) -> dict[str, Any]:
  """``jdrop.keep_mask`` vs ``jax.random.bernoulli``, both vmapped over one key per mask."""
  count, length = shape
  keys = jax.random.split(jax.random.key(2), count)
  ours = jax.jit(jax.vmap(lambda k: jdrop.keep_mask(k, (length,), rate=RATE)))
  fast = jax.jit(jax.vmap(lambda k: jdrop.keep_mask(k, (length,), rate=RATE, fast=True)))
  theirs = jax.jit(jax.vmap(lambda k: jax.random.bernoulli(k, KEEP, (length,))))
  check_equal(f"vmapped jdrop.keep_mask {count}x{length}", ours(keys), theirs(keys))
  timings = time_interleaved(
    {
      "jdrop": jax_runner(ours, keys),
      "fast": jax_runner(fast, keys),
      "bernoulli": jax_runner(theirs, keys),
    },
    rounds=rounds,
    warmup=warmup,
  )
  return {
    "masks": count,
    "elements": length,
    "jdrop_s": timings["jdrop"].median,
    "fast_s": timings["fast"].median,
    "bernoulli_s": timings["bernoulli"].median,
    "speedup": timings["bernoulli"].median / timings["jdrop"].median,
    "fast_speedup": timings["bernoulli"].median / timings["fast"].median,
    "reps": timings["jdrop"].reps,
    "rounds": rounds,
  }


def bench_memory(exponent: int) -> list[dict[str, Any]]:
  """Temporary bytes of each compiled dropout program for ``2**exponent`` float32 elements."""
  n = 2**exponent
  x = jax.ShapeDtypeStruct((n,), jnp.float32)
  rows = []
  for name, fn in DROPOUT_FNS.items():
    stats = jax.jit(fresh(fn)).lower(jax.random.key(0), x).compile().memory_analysis()
    temp = None if stats is None else int(stats.temp_size_in_bytes)
    rows.append(
      {
        "contender": name,
        "size_log2": exponent,
        "temp_bytes": temp,
        "temp_bytes_per_element": None if temp is None else temp / n,
      }
    )
  return rows


def bench_compile(runs: int) -> list[dict[str, Any]]:
  """Median ``lower`` + ``compile`` wall time from cold caches, interleaved across programs."""
  names = (JDROP, FAST, BERNOULLI, FLAX)
  times: dict[str, list[float]] = {name: [] for name in names}
  key = jax.random.key(0)
  config = "jax_enable_compilation_cache"
  saved = getattr(jax.config, config, None)
  if saved is not None:
    jax.config.update(config, False)  # a persistent cache hit is not a compile
  try:
    for run in range(runs):
      x = jax.ShapeDtypeStruct((2**COMPILE_SIZE + 128 * (run + 1),), jnp.float32)
      for name in names:
        jax.clear_caches()
        start = time.perf_counter()
        jax.jit(fresh(DROPOUT_FNS[name])).lower(key, x).compile()
        times[name].append(time.perf_counter() - start)
  finally:
    if saved is not None:
      jax.config.update(config, saved)
  return [
    {"contender": name, "median_s": statistics.median(t), "runs": runs, "samples_s": t}
    for name, t in times.items()
  ]


# ----------------------------------------------------------------------------
# Goals: the project's targets, evaluated on what was measured.


def evaluate_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
  def find(exponent: int, dtype: str, contender: str) -> dict[str, Any] | None:
    for row in results["dropout"]:
      if (row["size_log2"], row["dtype"], row["contender"]) == (exponent, dtype, contender):
        return row
    return None

  goals: list[dict[str, Any]] = []

  def add(goal: str, measured: float | None, met: bool | None, text: str) -> None:
    goals.append({"goal": goal, "measured": measured, "met": met, "text": text})

  if results["meta"]["platform"] == "cpu":
    row = find(24, "float32", JDROP)
    speedup = None if row is None else row["speedup_over_flax"]
    add(
      "f32 2^24: jdrop >= 5x faster than flax.linen.Dropout",
      speedup,
      None if speedup is None else speedup >= 5,
      "2^24 not in --sizes" if speedup is None else f"{speedup:.2f}x",
    )
    ratio = None if row is None else row["ratio_to_floor"]
    add(
      "f32 2^24: jdrop <= 2x the x*2 floor",
      ratio,
      None if ratio is None else ratio <= 2,
      "2^24 not in --sizes" if ratio is None else f"{ratio:.2f}x the floor",
    )
    fast = find(24, "float32", FAST)
    ratio = None if fast is None else fast["ratio_to_floor"]
    add(
      "f32 2^24: jdrop fast <= 1.3x the x*2 floor",
      ratio,
      None if ratio is None else ratio <= 1.3,
      "2^24 not in --sizes" if ratio is None else f"{ratio:.2f}x the floor",
    )
    gain = None if fast is None or row is None else row["median_s"] / fast["median_s"]
    add(
      "f32 2^24: jdrop fast >= 1.25x faster than jdrop (exact)",
      gain,
      None if gain is None else gain >= 1.25,
      "2^24 not in --sizes" if gain is None else f"{gain:.2f}x",
    )
    masks = results["masks"]
    add(
      f"{masks['masks']}x{masks['elements']} masks: >= 10x faster than vmapped bernoulli",
      masks["speedup"],
      masks["speedup"] >= 10,
      f"{masks['speedup']:.2f}x",
    )
  else:
    largest = max(row["size_log2"] for row in results["dropout"])
    row = find(largest, "float32", JDROP)
    fraction = None if row is None else 1 / row["ratio_to_floor"]
    add(
      f"f32 2^{largest}: jdrop bandwidth >= 70% of the x*2 floor's",
      fraction,
      None if fraction is None else fraction >= 0.7,
      "no float32 row" if fraction is None else f"{100 * fraction:.0f}% of the floor",
    )
    fast = find(largest, "float32", FAST)
    fraction = None if fast is None else 1 / fast["ratio_to_floor"]
    add(
      f"f32 2^{largest}: jdrop fast bandwidth >= 85% of the x*2 floor's",
      fraction,
      None if fraction is None else fraction >= 0.85,
      "no float32 row" if fraction is None else f"{100 * fraction:.0f}% of the floor",
    )
    for exponent in (24, 28):
      fast, torch_row = find(exponent, "float32", FAST), find(exponent, "float32", TORCH)
      lead = None if fast is None or torch_row is None else torch_row["median_s"] / fast["median_s"]
      add(
        f"f32 2^{exponent}: jdrop fast at least as fast as torch.nn.functional.dropout",
        lead,
        None if lead is None else lead >= 1,
        "torch or the size not measured" if lead is None else f"{lead:.2f}x torch's speed",
      )
  memory = next(r for r in results["memory"] if r["contender"] == JDROP)
  per_element = memory["temp_bytes_per_element"]
  add(
    f"temporary memory of jdrop.dropout at 2^{memory['size_log2']} f32 <= 1 byte/element",
    per_element,
    None if per_element is None else per_element <= 1,
    "not reported by this backend" if per_element is None else f"{per_element:.3g} B/element",
  )
  compile_s = {r["contender"]: r["median_s"] for r in results["compile"]}
  ratio = compile_s[JDROP] / compile_s[BERNOULLI]
  add(
    "compile time of jdrop.dropout no worse than bernoulli+select's",
    ratio,
    ratio <= 1,
    f"{ratio:.2f}x bernoulli+select's",
  )
  return goals


# ----------------------------------------------------------------------------
# Reporting.


def render_markdown(results: dict[str, Any]) -> str:
  meta = results["meta"]
  lines = [
    f"# jdrop benchmarks ({meta['platform']})",
    "",
    f"- command: `{meta['command']}`",
    f"- date: {meta['date']}",
    f"- device: {meta['device_kind']} ({meta['platform']}), {meta['device_count']} device(s)",
    f"- machine: {meta['processor']}; {meta['uname']}; {meta['cpu_count']} CPUs",
    f"- load average (1/5/15 min): {meta['load_average_start']} at the start,"
    f" {meta['load_average_end']} at the end; wall time {meta['wall_s']:.0f} s",
    "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
    f"- method: rate {RATE}; {meta['rounds']} interleaved rounds after {meta['warmup']} warm-up"
    " call(s); medians; ratios of medians; GB/s counts x read + output written",
    f"- jdrop's fused threefry path active: {meta['fused_path']}",
    "- bit-identity: every JAX contender's output equals flax.linen.Dropout's for the same key"
    " at every size and dtype below, and jdrop fast's equals jdrop.apply_mask of"
    " jdrop.keep_mask(..., fast=True) (checked before timing)",
  ]
  if meta["torch_skipped"]:
    lines.append(f"- torch: skipped ({meta['torch_skipped']})")
  lines += ["", "## Summary", ""]
  rows = []
  by_group: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
  for row in results["dropout"]:
    by_group.setdefault((row["size_log2"], row["dtype"]), {})[row["contender"]] = row
  for (exponent, dtype), group in by_group.items():
    ours, fast, floor_row = group[JDROP], group[FAST], group[FLOOR]
    torch_row = group.get(TORCH)
    rows.append(
      [
        f"2^{exponent}",
        dtype,
        fmt_time(floor_row["median_s"]),
        fmt_time(ours["median_s"]),
        fmt_time(fast["median_s"]),
        fmt_time(group[FLAX]["median_s"]),
        "n/a" if torch_row is None else fmt_time(torch_row["median_s"]),
        f"{ours['ratio_to_floor']:.2f}x",
        f"{fast['ratio_to_floor']:.2f}x",
        f"{ours['speedup_over_flax']:.2f}x",
        f"{fast['speedup_over_flax']:.2f}x",
        f"{ours['median_s'] / fast['median_s']:.2f}x",
        "n/a" if torch_row is None else f"{torch_row['median_s'] / fast['median_s']:.2f}x",
        f"{group[UNFUSED]['median_s'] / ours['median_s']:.2f}x",
        f"{100 / fast['ratio_to_floor']:.0f}%",
      ]
    )
  lines += table(
    [
      "size",
      "dtype",
      "floor",
      "jdrop",
      "jdrop fast",
      "flax",
      "torch",
      "jdrop / floor",
      "fast / floor",
      "jdrop speed-up over flax",
      "fast speed-up over flax",
      "fast speed-up over jdrop",
      "fast speed-up over torch",
      "fused gain (fused off / jdrop)",
      "fast BW / floor BW",
    ],
    rows,
  )
  lines += ["", "## Dropout, every contender", ""]
  lines += table(
    [
      "size",
      "dtype",
      "contender",
      "median",
      "IQR/median",
      "ratio to floor",
      "speed-up over flax",
      "GB/s",
    ],
    [
      [
        f"2^{r['size_log2']}",
        r["dtype"],
        r["contender"],
        fmt_time(r["median_s"]),
        f"{100 * r['spread']:.0f}%",
        f"{r['ratio_to_floor']:.2f}",
        f"{r['speedup_over_flax']:.2f}",
        f"{r['gb_per_s']:.1f}",
      ]
      for r in results["dropout"]
    ],
  )
  masks = results["masks"]
  lines += ["", "## Many masks (jax.vmap over keys)", ""]
  lines += table(
    [
      "masks x elements",
      "jdrop.keep_mask",
      "keep_mask(fast=True)",
      "vmapped jax.random.bernoulli",
      "speed-up",
      "fast speed-up",
    ],
    [
      [
        f"{masks['masks']} x {masks['elements']}",
        fmt_time(masks["jdrop_s"]),
        fmt_time(masks["fast_s"]),
        fmt_time(masks["bernoulli_s"]),
        f"{masks['speedup']:.2f}x",
        f"{masks['fast_speedup']:.2f}x",
      ]
    ],
  )
  lines += ["", "## Temporary memory of the compiled program (float32)", ""]
  lines += table(
    ["contender", "size", "temp bytes", "bytes/element"],
    [
      [
        r["contender"],
        f"2^{r['size_log2']}",
        "n/a" if r["temp_bytes"] is None else str(r["temp_bytes"]),
        "n/a" if r["temp_bytes"] is None else f"{r['temp_bytes_per_element']:.3g}",
      ]
      for r in results["memory"]
    ],
  )
  lines += ["", "## Compile time (lower + compile, cold caches, new shape each run)", ""]
  compile_bern = next(r["median_s"] for r in results["compile"] if r["contender"] == BERNOULLI)
  lines += table(
    ["contender", "median", "runs", "vs bernoulli+select"],
    [
      [
        r["contender"],
        fmt_time(r["median_s"]),
        str(r["runs"]),
        f"{r['median_s'] / compile_bern:.2f}x",
      ]
      for r in results["compile"]
    ],
  )
  lines += ["", "## Goals", ""]
  for goal in results["goals"]:
    verdict = {True: "met", False: "**missed**", None: "not measured"}[goal["met"]]
    lines.append(f"- {goal['goal']}: {goal['text']} ({verdict})")
  return "\n".join(lines) + "\n"


def metadata(command: str, rounds: int, warmup: int) -> dict[str, Any]:
  """The command, the machine, the devices, the versions and the method, for the report."""
  device = jax.devices()[0]
  torch = import_torch()
  return {
    "command": command,
    **_timing.machine_info(),
    "platform": device.platform,
    "device_kind": device.device_kind,
    "device_count": jax.device_count(),
    "versions": _timing.versions(jax, jaxlib, flax, np, *([] if torch is None else [torch])),
    "rounds": rounds,
    "warmup": warmup,
    "load_average_start": _timing.load_average(),
    "fused_path": not uses_jax_random(jdrop_dropout, jax.random.key(0)),
  }


# ----------------------------------------------------------------------------
# Entry point.


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    prog="experiments/benchmarks.py",
    description="Benchmark jdrop's dropout against flax, jax.random and torch.",
  )
  _timing.add_report_options(
    parser,
    quick="small sizes and 3 rounds (a smoke test)",
    out="experiments/results/benchmarks-<platform>.md",
    rounds=DEFAULT_ROUNDS,
  )
  parser.add_argument(
    "--sizes",
    type=int,
    nargs="+",
    metavar="K",
    help=f"array sizes as powers of two (default {' '.join(map(str, DEFAULT_SIZES))}; "
    "add 28 on a GPU)",
  )
  args = parser.parse_args(argv)
  if args.sizes is not None and not all(1 <= k <= 31 for k in args.sizes):
    parser.error(f"--sizes must be exponents in [1, 31], got {args.sizes}")
  return args


def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  args = parse_args(argv)
  # With torch on the same GPU, JAX must not grab most of its memory up front; read when the
  # backend starts (below), so this does nothing if JAX is already running.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  jax_platform = jax.devices()[0].platform
  out = args.out or RESULTS_DIR / f"benchmarks-{jax_platform}.md"
  outputs = {"--out": out, "--json": args.json}
  if _timing.refuse_to_overwrite("benchmarks.py", outputs, force=args.force):
    return 2

  sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
  rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
  warmup = 1 if args.quick else 2
  command = _timing.command_line("experiments/benchmarks.py", argv)
  clock = _timing.Stopwatch()
  results: dict[str, Any] = {"meta": metadata(command, rounds, warmup), "dropout": []}

  try:
    torch_skipped = None
    for exponent in sizes:
      for dtype in DTYPES:
        clock.stage(f"dropout 2^{exponent} {np.dtype(dtype).name}")
        rows, torch_skipped = bench_dropout(
          exponent, dtype, rounds=rounds, warmup=warmup, jax_platform=jax_platform
        )
        results["dropout"] += rows
    results["meta"]["torch_skipped"] = torch_skipped
    clock.stage("many masks")
    shape = QUICK_MASKS_SHAPE if args.quick else MASKS_SHAPE
    results["masks"] = bench_masks(shape, rounds=rounds, warmup=warmup)
  except BenchmarkError as err:
    print(f"benchmarks.py: {err}", file=sys.stderr)
    return 1
  clock.stage("memory and compile time")
  results["memory"] = bench_memory(MEMORY_SIZE)
  results["compile"] = bench_compile(1 if args.quick else 5)
  results["goals"] = evaluate_goals(results)
  results["meta"]["load_average_end"] = _timing.load_average()
  results["meta"]["wall_s"] = clock.elapsed()
  _timing.write_outputs(out, render_markdown(results), args.json, results)
  print(f"wrote {out}" + (f" and {args.json}" if args.json else ""), file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
