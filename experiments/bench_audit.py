"""How fast ``jdrop.audit`` audits a Transformer, and what ``jdrop.reorder`` costs under jit.

Run from the repository root::

  PYTHONPATH=. python experiments/bench_audit.py [--runs 3] [--rounds 7] [--out PATH.md] [--force]

The model is ``tests/lm1b_like.py``, shaped like Flax's ``examples/lm1b`` Transformer, at a
small configuration: 2 layers, embedding 32, MLP 64, sequence length 16, batch 4 (7 dropout
sites and 2 attention-dropout sites).

* **audit, cold**: a fresh Python process builds the model and runs
  ``jdrop.audit(f, tokens, num_masks=1024)``; the wall time of that call, tracing and
  compilation included. Median over ``--runs`` processes. Goal (issue 10): under 60 s on
  2 CPU cores.
* **reorder under jit**: compiled forward passes (and ``value_and_grad`` steps with respect
  to the parameters) of ``f`` against ``jax.jit(jdrop.reorder(f, order))``, timed in
  interleaved rounds, medians. ``reorder(f, "post")`` of this post-activation model is the
  model itself; ``reorder(f, "pre")`` moves the MLP dropouts before relu and is compared
  with the same model written pre-activation. Goal: within 10% of the original.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from experiments import _timing

_CHILD = r"""
import json, time
import jax
import jdrop
from experiments.bench_audit import model
f, tokens = model("post")
start = time.perf_counter()
audit = jdrop.audit(f, tokens, num_masks=1024)
seconds = time.perf_counter() - start
assert len(audit.sites) == 9, audit
print(json.dumps({"seconds": seconds, "sites": len(audit.sites)}))
"""


def model(order: str, params_as_argument: bool = False):
  """``(f, tokens)`` of the small lm1b-shaped Transformer (``f(key, params, tokens)`` with
  ``params_as_argument``)."""
  import jax

  from tests import lm1b_like

  config = lm1b_like.Config(mlp_order=order)
  net = lm1b_like.TransformerLM(config)
  tokens = lm1b_like.tokens(batch=4, length=16)
  variables = lm1b_like.TransformerLM(lm1b_like.Config()).init(jax.random.key(0), tokens)
  if params_as_argument:
    return (lambda key, p, t: net.apply(p, t, rngs={"dropout": key})), (variables, tokens)
  return (lambda key, t: net.apply(variables, t, rngs={"dropout": key})), tokens


def cold(runs: int) -> list[float]:
  root = Path(__file__).resolve().parent.parent
  env = dict(os.environ, PYTHONPATH=str(root))
  samples = []
  for _ in range(runs):
    out = subprocess.run(
      [sys.executable, "-c", _CHILD], capture_output=True, text=True, check=True, env=env, cwd=root
    )
    samples.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
  return samples


def _contenders(source: str, target: str) -> dict:
  """Compiled runners: the model written in ``target`` order, and ``reorder`` of ``source``."""
  import jax
  import jax.numpy as jnp

  import jdrop

  key = jax.random.key(1)
  f, (params, tokens) = model(source, params_as_argument=True)
  want, _ = model(target, params_as_argument=True)
  moved = jdrop.reorder(f, target)

  def loss(g):
    return lambda p: jnp.mean(g(key, p, tokens) ** 2)

  runs = {
    "original": jax.jit(lambda p: want(key, p, tokens)),
    "reordered": jax.jit(lambda p: moved(key, p, tokens)),
    "original grad": jax.jit(jax.value_and_grad(loss(want))),
    "reordered grad": jax.jit(jax.value_and_grad(loss(moved))),
  }
  sizes = {k: _instructions(r.lower(params).compile().as_text()) for k, r in runs.items()}
  return {k: (lambda r=r: jax.block_until_ready(r(params))) for k, r in runs.items()}, sizes


def _instructions(hlo: str) -> int:
  """Instructions in an optimised HLO module (``name = type op(...)`` lines)."""
  return sum(1 for line in hlo.splitlines() if " = " in line and not line.lstrip().startswith("//"))


def speed(rounds: int) -> dict[str, dict[str, float]]:
  out = {}
  for name, target in (("reorder post (no move)", "post"), ("reorder pre", "pre")):
    runs, sizes = _contenders("post", target)
    reps = _timing.calibrate_reps(runs.values(), warmup=2, min_sample_s=0.05, max_reps=1000)
    times = _timing.interleaved(runs, rounds=rounds, reps=reps)
    out[name] = {k: statistics.median(v) for k, v in times.items()}
    out[name] |= {f"{k} size": n for k, n in sizes.items()}
  return out


def report(cold_s: list[float], speeds: dict, command: str) -> str:
  import flax
  import jax

  median = statistics.median(cold_s)
  lines = [
    "# jdrop.audit and jdrop.reorder speed (cpu)",
    "",
    f"- command: `{command}`",
    f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
    f"- machine: {_timing.processor()}, {os.cpu_count()} cores,"
    f" load average {_timing.load_average()}",
    f"- versions: python {platform.python_version()}, jax {jax.__version__},"
    f" flax {flax.__version__}",
    "- model: tests/lm1b_like.py, 2 layers, emb 32, MLP 64, length 16, batch 4"
    " (7 dropout + 2 attention sites)",
    "",
    f"**audit, 1024 masks per site, cold (tracing and compilation included)**: median"
    f" {median:.1f} s over {len(cold_s)} fresh processes"
    f" ({', '.join(f'{s:.1f}' for s in cold_s)} s); goal < 60 s:"
    f" {'met' if median < 60 else 'NOT met'}.",
    "",
  ]
  rows = []
  for name, t in speeds.items():
    for step in ("", " grad"):
      ratio = t[f"reordered{step}"] / t[f"original{step}"]
      rows.append(
        [
          name + (" (value_and_grad)" if step else " (forward)"),
          _timing.fmt_time(t[f"original{step}"]),
          _timing.fmt_time(t[f"reordered{step}"]),
          f"{ratio:.3f}",
          "yes" if ratio <= 1.10 else "no",
          f"{t[f'original{step} size']} / {t[f'reordered{step} size']}",
        ]
      )
  lines += _timing.table(
    [
      "under jax.jit",
      "original",
      "jdrop.reorder(f)",
      "ratio",
      "within 10%",
      "optimised HLO instructions (original / reorder)",
    ],
    rows,
  )
  lines += [
    "",
    "'original' is the model written in the target order; times are medians over interleaved"
    " rounds. The ratio is what matters: absolute times depend on the machine.",
  ]
  return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--runs", type=int, default=3, help="fresh processes for the cold audit")
  parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
  parser.add_argument("--out", default="experiments/results/audit-cpu.md")
  parser.add_argument("--force", action="store_true", help="overwrite --out")
  args = parser.parse_args(argv)
  out = Path(args.out)
  if _timing.refuse_to_overwrite("bench_audit.py", {"--out": out}, force=args.force):
    return 2
  cold_s = cold(args.runs)
  speeds = speed(args.rounds)
  command = _timing.command_line("experiments/bench_audit.py", argv)
  _timing.write_outputs(out, report(cold_s, speeds, command))
  return 0


if __name__ == "__main__":
  sys.exit(main())
