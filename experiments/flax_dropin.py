"""How close a model with jdrop's dropout is to the same model with Flax's: the docs' numbers.

Runs ``Dense -> Dropout(0.1) -> +x -> LayerNorm`` (the residual block of Flax's lm1b and wmt
Transformers) with ``flax.linen.Dropout`` and with ``jdrop.flax.Dropout`` for the same rngs,
under ``jax.jit`` and eagerly, and the dropout outputs alone in float16 and bfloat16. Prints
one line per case; ``experiments/results/flax_dropin.txt`` is its committed output.

  PYTHONPATH=. python experiments/flax_dropin.py
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jdrop.flax


class Block(nn.Module):
  dropout: type

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.dropout(0.1, deterministic=False)(nn.Dense(x.shape[-1])(x))
    return nn.LayerNorm()(y + x)


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  bits = np.dtype(f"int{8 * a.dtype.itemsize}")
  return np.abs(a.view(bits).astype(np.int64) - b.view(bits).astype(np.int64))


def main() -> None:
  print(f"jax {jax.__version__}, backend {jax.default_backend()}")
  for shape in [(4, 16, 32), (8, 256), (2, 1024)]:
    x = jax.random.normal(jax.random.key(0), shape)
    variables = Block(nn.Dropout).init(jax.random.key(1), x)
    for mode in ("jit", "eager"):
      outs = []
      for cls in (jdrop.flax.Dropout, nn.Dropout):
        apply = Block(cls).apply
        apply = jax.jit(apply) if mode == "jit" else apply
        outs.append(np.asarray(apply(variables, x, rngs={"dropout": jax.random.key(2)})))
      a, b = outs
      print(
        f"block {shape} {mode}: {(a != b).sum()} of {a.size} differ,"
        f" max |diff| {np.abs(a - b).max():.3g}, max {ulps(a, b).max()} ulp"
      )
  for dtype in (jnp.float16, jnp.bfloat16):
    x = jax.random.normal(jax.random.key(3), (1 << 16,)).astype(dtype)
    worst, differ = 0, 0
    rates = (0.1, 0.13, 0.3, 0.5, 0.77, 0.9)
    for rate in rates:
      rngs = {"dropout": jax.random.key(4)}
      a = np.asarray(jdrop.flax.Dropout(rate).apply({}, x, False, rngs=rngs))
      b = np.asarray(nn.Dropout(rate).apply({}, x, False, rngs=rngs))
      u = ulps(a, b)
      worst, differ = max(worst, int(u.max())), differ + int((u > 0).sum())
    print(
      f"dropout alone {jnp.dtype(dtype).name}, rates {rates}, 2^16 each:"
      f" {differ} values differ, max {worst} ulp"
    )


if __name__ == "__main__":
  main()
