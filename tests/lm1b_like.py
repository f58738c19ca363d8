"""A decoder-only Transformer language model shaped like Flax's ``examples/lm1b`` model.

Written for these tests (not imported from Flax's examples, and not a copy of their code):
the same architecture and the same module names, so that the module paths the audit reports
are the ones a user of that example sees. Embedding -> sinusoidal positions -> Dropout ->
``num_layers`` x [LayerNorm -> causal SelfAttention (attention-weight dropout) -> Dropout ->
residual; LayerNorm -> MlpBlock (Dense -> relu -> Dropout -> Dense -> Dropout) -> residual]
-> LayerNorm -> Dense logits. With 2 layers: 7 dropout sites and 2 attention sites.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Config:
  vocab_size: int = 64
  emb_dim: int = 32
  num_heads: int = 4
  num_layers: int = 2
  qkv_dim: int = 32
  mlp_dim: int = 64
  max_len: int = 64
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  deterministic: bool = False
  dropout: type = nn.Dropout  # the class of the dropout layers (swap in jdrop.flax.Dropout)
  mlp_order: str = "post"  # the MLP's dropout after relu (as in lm1b) or before it ("pre")


def positions(length: int, features: int) -> np.ndarray:
  """Sine and cosine position codes of shape (1, length, features)."""
  half = features // 2
  scale = np.exp(np.arange(half) * -np.log(10000.0) / max(half - 1, 1))
  angle = np.arange(length)[:, None] * scale[None, :]
  table = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
  return table[None].astype(np.float32)


class MlpBlock(nn.Module):
  config: Config

  @nn.compact
  def __call__(self, inputs):
    cfg = self.config
    h = nn.Dense(cfg.mlp_dim)(inputs)
    drop = cfg.dropout(rate=cfg.dropout_rate, deterministic=cfg.deterministic)
    h = drop(nn.relu(h)) if cfg.mlp_order == "post" else nn.relu(drop(h))
    out = nn.Dense(inputs.shape[-1])(h)
    return cfg.dropout(rate=cfg.dropout_rate)(out, deterministic=cfg.deterministic)


class EncoderDecoder1DBlock(nn.Module):
  config: Config

  @nn.compact
  def __call__(self, inputs, mask):
    cfg = self.config
    h = nn.LayerNorm()(inputs)
    h = nn.SelfAttention(
      num_heads=cfg.num_heads,
      qkv_features=cfg.qkv_dim,
      use_bias=False,
      broadcast_dropout=False,
      dropout_rate=cfg.attention_dropout_rate,
      deterministic=cfg.deterministic,
    )(h, mask)
    h = cfg.dropout(rate=cfg.dropout_rate)(h, deterministic=cfg.deterministic)
    h = h + inputs
    z = nn.LayerNorm()(h)
    z = MlpBlock(config=cfg)(z)
    return h + z


class Decoder(nn.Module):
  config: Config

  @nn.compact
  def __call__(self, tokens, mask):
    cfg = self.config
    shifted = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]
    y = nn.Embed(cfg.vocab_size, cfg.emb_dim)(shifted)
    y = y + positions(tokens.shape[1], cfg.emb_dim)
    y = cfg.dropout(rate=cfg.dropout_rate)(y, deterministic=cfg.deterministic)
    for layer in range(cfg.num_layers):
      y = EncoderDecoder1DBlock(config=cfg, name=f"encoderdecoderblock_{layer}")(y, mask)
    y = nn.LayerNorm(name="encoderdecoder_norm")(y)
    return nn.Dense(cfg.vocab_size, name="logitdense")(y)


class TransformerLM(nn.Module):
  config: Config

  @nn.compact
  def __call__(self, tokens):
    mask = nn.combine_masks(
      nn.make_attention_mask(tokens > 0, tokens > 0), nn.make_causal_mask(tokens)
    )
    return Decoder(config=self.config, name="decoder")(tokens, mask)


def tokens(batch: int = 4, length: int = 16, vocab: int = 64, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).integers(1, vocab, size=(batch, length)).astype(np.int32)


class EncoderBlock(nn.Module):
  config: Config

  @nn.compact
  def __call__(self, inputs):
    cfg = self.config
    h = nn.MultiHeadDotProductAttention(
      cfg.num_heads,
      qkv_features=cfg.qkv_dim,
      dropout_rate=cfg.attention_dropout_rate,
      deterministic=cfg.deterministic,
    )(nn.LayerNorm()(inputs))
    h = inputs + cfg.dropout(rate=cfg.dropout_rate)(h, deterministic=cfg.deterministic)
    return h + MlpBlock(config=cfg)(nn.LayerNorm()(h))


class DecoderBlock(nn.Module):
  """Self-attention, then cross-attention on the encoding (with attention dropout), then MLP."""

  config: Config

  @nn.compact
  def __call__(self, targets, encoded, mask):
    cfg = self.config

    def attention(q, kv, mask=None):
      return nn.MultiHeadDotProductAttention(
        cfg.num_heads,
        qkv_features=cfg.qkv_dim,
        dropout_rate=cfg.attention_dropout_rate,
        deterministic=cfg.deterministic,
      )(q, kv, mask=mask)

    h = nn.LayerNorm()(targets)
    h = targets + cfg.dropout(rate=cfg.dropout_rate)(
      attention(h, h, mask), deterministic=cfg.deterministic
    )
    z = attention(nn.LayerNorm()(h), encoded)
    z = h + cfg.dropout(rate=cfg.dropout_rate)(z, deterministic=cfg.deterministic)
    return z + MlpBlock(config=cfg)(nn.LayerNorm()(z))


class Translator(nn.Module):
  """An encoder-decoder Transformer shaped like Flax's ``examples/wmt`` model (one layer each)."""

  config: Config

  @nn.compact
  def __call__(self, sources, targets):
    cfg = self.config
    embed = nn.Embed(cfg.vocab_size, cfg.emb_dim, name="shared_embedding")
    x = embed(sources) + positions(sources.shape[1], cfg.emb_dim)
    x = cfg.dropout(rate=cfg.dropout_rate)(x, deterministic=cfg.deterministic)
    encoded = nn.LayerNorm()(EncoderBlock(cfg, name="encoderblock_0")(x))
    y = embed(targets) + positions(targets.shape[1], cfg.emb_dim)
    y = cfg.dropout(rate=cfg.dropout_rate)(y, deterministic=cfg.deterministic)
    y = DecoderBlock(cfg, name="encoderdecoderblock_0")(y, encoded, nn.make_causal_mask(targets))
    return embed.attend(nn.LayerNorm()(y))
