"""Small models for the audit tests and the `python -m jdrop audit` tests.

Each factory returns ``(f, args)`` as ``python -m jdrop audit MODULE:ATTR`` expects.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jdrop


def same(a, b):
  """Whether two pytrees have the same structure and bit-identical leaves."""
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return all(bool((np.asarray(u) == np.asarray(v)).all()) for u, v in zip(la, lb, strict=True))


def site_rows(f, *args, num_masks):
  """``(audit, [(path, kind, activation, order) per site])``."""
  audit = jdrop.audit(f, *args, num_masks=num_masks)
  return audit, [(s.path, s.kind, s.activation, s.order) for s in audit.sites]


X = jnp.linspace(-2.0, 2.0, 24, dtype=jnp.float32).reshape(4, 6)


class Ordered(nn.Module):
  """Dense -> [activation, dropout in ``order``] -> Dense -> [again] -> Dense.

  ``active`` says which of the two dropout layers are in training mode, so that a model
  with a single site active is an independent oracle for the audit's per-site bias.
  """

  order: str = "post"
  activation: str = "tanh"
  rate: float = 0.3
  active: tuple[bool, bool] = (True, True)
  dropout: type = nn.Dropout
  width: int = 8

  @nn.compact
  def __call__(self, x):
    act = getattr(jax.nn, self.activation)
    for layer in range(2):
      h = nn.Dense(self.width)(x)
      drop = self.dropout(rate=self.rate, deterministic=not self.active[layer])
      x = drop(act(h)) if self.order == "post" else act(drop(h))
    return nn.Dense(3)(x)


def linen(order="post", activation="tanh", dropout=nn.Dropout, **kw):
  """``(f, variables)`` of an :class:`Ordered` model (the same parameters for both orders)."""
  model = Ordered(order=order, activation=activation, dropout=dropout, **kw)
  variables = Ordered(activation=activation).init(jax.random.key(0), X)
  return (lambda key, x: model.apply(variables, x, rngs={"dropout": key})), variables


class NnxOrdered(nnx.Module):
  def __init__(self, order, activation, dropout, rate=0.3):
    rngs = nnx.Rngs(0)
    self.first = nnx.Linear(6, 8, rngs=rngs)
    self.drop = dropout(rate)
    self.last = nnx.Linear(8, 3, rngs=rngs)
    self.order = order
    self.act = getattr(jax.nn, activation)

  def __call__(self, x, rngs):
    h = self.first(x)
    h = (
      self.drop(self.act(h), rngs=rngs)
      if self.order == "post"
      else self.act(self.drop(h, rngs=rngs))
    )
    return self.last(h)


def nnx_model(order="post", activation="tanh", dropout=nnx.Dropout):
  model = NnxOrdered(order, activation, dropout)
  return lambda key, x: model(x, nnx.Rngs(dropout=key))


def tiny():
  """The CLI's example: a linen MLP with a post-activation relu dropout."""
  f, _ = linen("post", "relu")
  return f, (X,)


def tiny_pre():
  f, _ = linen("pre", "gelu")
  return f, (X,)


def not_a_pair():
  return "f", X


def broken():
  raise RuntimeError("no model today")
