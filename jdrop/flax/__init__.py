"""Flax linen modules: thin wrappers around jdrop's pure functions.

:class:`Dropout` is a drop-in replacement for ``flax.linen.Dropout`` and a subclass of it:
same fields, same call, same rng use, the same exceptions (a rate outside [0, 1] is the one
intended difference: jdrop refuses it, Flax returns zeros or a wrong scale).

What swapping ``flax.linen.Dropout`` for :class:`Dropout` guarantees, for the same rngs:

- every dropout output is bit-identical in float32, eager or under ``jit``, alone or inside
  a model (bfloat16 and float16 inputs are scaled in float32 and rounded once, so they may
  differ from Flax's, which divides in the input's dtype, by up to 1 ulp in bfloat16 and 2 in
  float16);
- a jitted model is equal to Flax's *to rounding*, not bit for bit: jdrop's mask is other
  code than ``jax.random``'s, and XLA may fuse it into neighbouring computations (a
  LayerNorm's reductions on CPU, a matmul's kernel on GPU) in another way, which then sum
  in another order, by a few ulp of the magnitudes summed. ``Dense -> Dropout -> +x ->
  LayerNorm`` on a (4, 16, 32) input under ``jax.jit`` on CPU differs in 139 of 2048 values,
  by at most 2 ulp (2.4e-7; ``experiments/flax_dropin.py``); eagerly, where nothing is
  fused, the model is bit-identical.
"""

from jdrop._src.linen import ActivationDropout as ActivationDropout
from jdrop._src.linen import AlphaDropout as AlphaDropout
from jdrop._src.linen import Dropout as Dropout
from jdrop._src.linen import DropPath as DropPath
from jdrop._src.linen import GaussianDropout as GaussianDropout
