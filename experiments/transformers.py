"""Small Transformers in the style of Flax's lm1b and wmt examples, with a pluggable dropout.

For ``bench_train_step.py``: what a training step costs with ``flax.linen.Dropout``,
``jdrop.flax.Dropout`` and jdrop's fast masks. The architecture follows Flax's examples
(pre-LayerNorm blocks; dropout after the embeddings, on the attention weights, after the
attention and after both Dense layers of the MLP; a full, not broadcast, attention-dropout
mask), written here from that description at a small size for a CPU:

* :class:`LanguageModel` (lm1b): a decoder-only model with causal self-attention;
* :class:`Translator` (wmt): an encoder-decoder with cross-attention.

Every dropout is an instance of ``config.dropout`` (a module class with flax.linen.Dropout's
fields and call signature), and attention is written out rather than taken from
``nn.MultiHeadDotProductAttention``, whose attention dropout calls ``jax.random.bernoulli``
itself: so one field swaps every dropout of the model.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Sizes and rates. The defaults are a small lm1b-style model (Flax's default is 6 layers,
  512 wide, 30k vocabulary); the rates are Flax's defaults."""

  vocab_size: int = 4096
  emb_dim: int = 256
  num_heads: int = 4
  num_layers: int = 2
  mlp_dim: int = 1024
  max_len: int = 128
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  dropout: Any = nn.Dropout  # the class of every dropout module in the model


LM1B_SMALL = TransformerConfig()
WMT_SMALL = TransformerConfig(max_len=64)


class Attention(nn.Module):
  """Multi-head dot-product attention with dropout on the attention weights."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, queries: jax.Array, memory: jax.Array, mask: jax.Array | None, train: bool):
    config = self.config
    head_dim = config.emb_dim // config.num_heads
    project = lambda name: nn.DenseGeneral((config.num_heads, head_dim), name=name)
    q, k, v = project("query")(queries), project("key")(memory), project("value")(memory)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(head_dim)
    if mask is not None:
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = config.dropout(rate=config.attention_dropout_rate)(weights, deterministic=not train)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.DenseGeneral(config.emb_dim, axis=(-2, -1), name="out")(out)


class Mlp(nn.Module):
  """Dense -> relu -> dropout -> Dense -> dropout."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    config = self.config
    h = nn.relu(nn.Dense(config.mlp_dim)(x))
    h = config.dropout(rate=config.dropout_rate)(h, deterministic=not train)
    out = nn.Dense(config.emb_dim)(h)
    return config.dropout(rate=config.dropout_rate)(out, deterministic=not train)


class Block(nn.Module):
  """A pre-LayerNorm block: self-attention, cross-attention when ``memory`` is given, MLP."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, x, self_mask, train: bool, memory=None, memory_mask=None) -> jax.Array:
    config = self.config
    h = nn.LayerNorm()(x)
    h = Attention(config, name="self_attention")(h, h, self_mask, train)
    x = x + config.dropout(rate=config.dropout_rate)(h, deterministic=not train)
    if memory is not None:
      h = nn.LayerNorm()(x)
      h = Attention(config, name="cross_attention")(h, memory, memory_mask, train)
      x = x + config.dropout(rate=config.dropout_rate)(h, deterministic=not train)
    return x + Mlp(config)(nn.LayerNorm()(x), train)


class Embed(nn.Module):
  """Token embeddings plus learned positions, then dropout."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    config = self.config
    x = nn.Embed(config.vocab_size, config.emb_dim)(tokens)
    init = nn.initializers.normal(stddev=0.02)
    x = x + self.param("positions", init, (config.max_len, config.emb_dim))[: tokens.shape[1]]
    return config.dropout(rate=config.dropout_rate)(x, deterministic=not train)


def causal_mask(length: int) -> jax.Array:
  """``(1, 1, length, length)``: position i attends to positions <= i."""
  return jnp.tril(jnp.ones((length, length), bool))[None, None]


def shift_right(tokens: jax.Array) -> jax.Array:
  """The decoder's inputs: the targets shifted right by one, with token 0 first."""
  return jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]


class LanguageModel(nn.Module):
  """lm1b-style: predicts each token from the ones before it; returns the logits."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    x = Embed(self.config)(shift_right(tokens), train)
    mask = causal_mask(tokens.shape[1])
    for i in range(self.config.num_layers):
      x = Block(self.config, name=f"layer_{i}")(x, mask, train)
    return nn.Dense(self.config.vocab_size)(nn.LayerNorm()(x))


class Translator(nn.Module):
  """wmt-style: encodes ``inputs``, decodes ``targets`` (teacher forcing); returns the logits."""

  config: TransformerConfig

  @nn.compact
  def __call__(self, inputs: jax.Array, targets: jax.Array, train: bool) -> jax.Array:
    config = self.config
    memory = Embed(config, name="encoder_embed")(inputs, train)
    for i in range(config.num_layers):
      memory = Block(config, name=f"encoder_{i}")(memory, None, train)
    memory = nn.LayerNorm()(memory)
    x = Embed(config, name="decoder_embed")(shift_right(targets), train)
    mask = causal_mask(targets.shape[1])
    for i in range(config.num_layers):
      x = Block(config, name=f"decoder_{i}")(x, mask, train, memory=memory)
    return nn.Dense(config.vocab_size)(nn.LayerNorm()(x))
