"""A second adversarial review of jdrop.audit and jdrop.reorder: real architectures, caches,
dtypes, transforms, the command line.

Every oracle is independent of the audit's interpreter:

* for ``reorder``, the same model written by hand in the other order with the same rng paths
  (hence the same masks), compared bit for bit under ``jax.jit``;
* for the bias, brute force over the audit's own masks (``fold_in(key, i)``);
* for paths and activations, what they must be by the definition in the README.

The five bugs this review found (six tests) are fixed.
"""

from __future__ import annotations

import json
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jdrop
import jdrop.flax
import jdrop.nnx
from tests import audit_models as models

X = jnp.linspace(-2.0, 2.0, 24, dtype=jnp.float32).reshape(4, 6)
W = jnp.linspace(-1.0, 1.0, 48, dtype=jnp.float32).reshape(6, 8)
KEY = jax.random.key(7)
RATE = 0.3


_same = models.same


def _sites(f, *args, num_masks=2):
  return models.site_rows(f, *args, num_masks=num_masks)


def _brute(f, key, n, *args):
  """Mean of f over the audit's masks fold_in(key, i), i < n."""
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n, dtype=jnp.uint32))
  outs = jax.vmap(lambda k: f(k, *args))(keys)
  return jax.tree.map(lambda o: o.mean(0), outs)


def _linen(cls, *args, **fields):
  variables = cls(order="post", **fields).init(jax.random.key(0), *args)

  def make(order):
    return lambda key, *a: cls(order=order, **fields).apply(variables, *a, rngs={"dropout": key})

  return make("pre"), make("post"), variables


def _reorders(pre, post, *args):
  want_pre, want_post = jax.jit(pre)(KEY, *args), jax.jit(post)(KEY, *args)
  assert not _same(want_pre, want_post)
  assert _same(jax.jit(jdrop.reorder(pre, "post"))(KEY, *args), want_post)
  assert _same(jax.jit(jdrop.reorder(post, "pre"))(KEY, *args), want_pre)


# ----------------------------------------------------------------------------
# A ViT-style block: pre-LN, MLP with GELU and dropout, LayerScale, DropPath, residual.


class _LayerScale(nn.Module):
  dim: int

  @nn.compact
  def __call__(self, x):
    gamma = self.param("gamma", lambda k, s: jnp.linspace(0.1, 1.0, s[0]), (self.dim,))
    return x * gamma


class _VitBlock(nn.Module):
  order: str
  layer_scale: bool = True

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(16)(nn.LayerNorm()(x))
    drop = nn.Dropout(RATE, deterministic=False)
    h = drop(nn.gelu(h)) if self.order == "post" else nn.gelu(drop(h))
    h = nn.Dense(x.shape[-1])(h)
    if self.layer_scale:
      h = _LayerScale(x.shape[-1])(h)
    return x + jdrop.flax.DropPath(0.2, deterministic=False)(h)


XV = jax.random.normal(jax.random.key(5), (3, 4, 6))


def test_vit_block_with_drop_path_paths_reorder_and_grad():
  pre, post, variables = _linen(_VitBlock, XV)
  audit, sites = _sites(pre, XV)
  assert [s[:2] for s in sites] == [("Dropout_0", "dropout"), ("DropPath_0", "dropout")]
  assert sites[0][2:] == ("gelu", "pre")
  assert audit.sites[1].rate == pytest.approx(0.2) and audit.sites[1].shape == (3, 4, 6)
  # Moving the MLP's dropout only (see the LayerScale test for the DropPath).
  got = jax.jit(jdrop.reorder(pre, "post", sites=["Dropout_0"]))(KEY, XV)
  assert _same(got, jax.jit(post)(KEY, XV))
  assert not _same(got, jax.jit(pre)(KEY, XV))
  # Gradients with respect to parameters passed as arguments.
  as_args = lambda order: lambda k, p, x: _VitBlock(order).apply(p, x, rngs={"dropout": k})
  loss = lambda f: lambda p: jnp.mean(f(KEY, p, XV) ** 2)
  moved = jdrop.reorder(as_args("pre"), "post", sites=["Dropout_0"])
  got = jax.jit(jax.grad(loss(moved)))(variables)
  assert _same(got, jax.jit(jax.grad(loss(as_args("post"))))(variables))


def test_vit_block_without_layer_scale_drop_path_has_no_activation():
  pre, post, _ = _linen(_VitBlock, XV, layer_scale=False)
  _, sites = _sites(pre, XV)
  assert sites[1] == ("DropPath_0", "dropout", None, None)  # after a Dense, before a residual
  _reorders(pre, post, XV)


def test_layer_scale_is_a_linear_map_not_an_activation():
  _, post, _ = _linen(_VitBlock, XV)
  _, sites = _sites(post, XV)
  assert sites[1] == ("DropPath_0", "dropout", None, None)
  moved = jdrop.reorder(post, "pre", sites=["DropPath_0"])  # Dropout_0 (after gelu) would move
  assert _same(jax.jit(moved)(KEY, XV), jax.jit(post)(KEY, XV))


# ----------------------------------------------------------------------------
# A ConvNeXt-style block: depthwise conv, LayerNorm, inverted MLP, residual.


class _ConvNeXt(nn.Module):
  order: str

  @nn.compact
  def __call__(self, x):  # x: (N, H, W, C)
    c = x.shape[-1]
    h = nn.Conv(c, (3, 3), feature_group_count=c, padding="SAME")(x)
    h = nn.Dense(4 * c)(nn.LayerNorm()(h))
    drop = nn.Dropout(RATE, deterministic=False)
    h = drop(nn.gelu(h)) if self.order == "post" else nn.gelu(drop(h))
    return x + jdrop.flax.DropPath(0.1, deterministic=False)(nn.Dense(c)(h))


def test_convnext_block_with_depthwise_conv():
  x = jax.random.normal(jax.random.key(2), (2, 5, 5, 4))
  pre, post, _ = _linen(_ConvNeXt, x)
  assert _sites(pre, x)[1] == [
    ("Dropout_0", "dropout", "gelu", "pre"),
    ("DropPath_0", "dropout", None, None),
  ]
  _reorders(pre, post, x)


# ----------------------------------------------------------------------------
# Gated MLPs: the activation multiplies two branches.

W1 = jnp.linspace(-1.0, 1.0, 48, dtype=jnp.float32).reshape(6, 8)
W2 = jnp.cos(jnp.arange(48, dtype=jnp.float32)).reshape(6, 8)
W3 = jnp.sin(jnp.arange(24, dtype=jnp.float32)).reshape(8, 3)
GLU = {"w1": W1, "w2": W2, "w3": W3}


def _swiglu(where):
  """silu(x W1) * (x W2) -> W3, dropout on the gate's input ("gate_pre"), after silu
  ("gate_post"), or on the product ("product")."""

  def f(key, p, x):
    d = lambda v: jdrop.dropout(key, v, rate=RATE)
    a, b = x @ p["w1"], x @ p["w2"]
    if where == "gate_pre":
      h = jax.nn.silu(d(a)) * b
    elif where == "gate_post":
      h = d(jax.nn.silu(a)) * b
    else:
      h = d(jax.nn.silu(a) * b)
    return h @ p["w3"]

  return f


def test_swiglu_gate_dropout_moves_across_silu_only():
  pre, post = _swiglu("gate_pre"), _swiglu("gate_post")
  assert _sites(pre, GLU, X)[1] == [("dropout", "dropout", "silu", "pre")]
  assert _sites(post, GLU, X)[1] == [("dropout", "dropout", "silu", "post")]
  _reorders(pre, post, GLU, X)
  loss = lambda f: lambda p: jnp.sum(f(KEY, p, X) ** 2)
  got = jax.jit(jax.grad(loss(jdrop.reorder(pre, "post"))))(GLU)
  assert _same(got, jax.jit(jax.grad(loss(post)))(GLU))


def test_dropout_on_a_gated_product_has_no_activation():
  f = _swiglu("product")
  audit, sites = _sites(f, GLU, X, num_masks=64)
  assert sites == [("dropout", "dropout", None, None)]  # the product reads two branches
  for order in ("pre", "post"):
    assert _same(jax.jit(jdrop.reorder(f, order))(KEY, GLU, X), jax.jit(f)(KEY, GLU, X))
  key = jax.random.key(0)
  evaluated = (jax.nn.silu(X @ W1) * (X @ W2)) @ W3
  brute = _brute(f, key, 64, GLU, X) - evaluated
  np.testing.assert_allclose(audit.sites[0].bias.mean, brute, atol=1e-5)


def test_moved_bias_of_a_swiglu_gate_is_the_other_orders_bias():
  key = jax.random.key(3)
  audit = jdrop.audit(_swiglu("gate_pre"), GLU, X, key=key, num_masks=64)
  (site,) = audit.sites
  evaluated = (jax.nn.silu(X @ W1) * (X @ W2)) @ W3
  for f, estimate in ((_swiglu("gate_pre"), site.bias), (_swiglu("gate_post"), site.moved_bias)):
    np.testing.assert_allclose(estimate.mean, _brute(f, key, 64, GLU, X) - evaluated, atol=1e-5)


# ----------------------------------------------------------------------------
# A GRU cell unrolled in Python, one dropout module called at every step.


class _Gru(nn.Module):
  """Recurrent dropout on the candidate state (Semeniuta et al.), one Dropout instance."""

  order: str
  steps: int = 3
  moved: tuple[int, ...] = ()  # steps written in the other order

  @nn.compact
  def __call__(self, xs):  # xs: (T, N, D)
    n = xs.shape[-1]
    wz, wr, wn = nn.Dense(n), nn.Dense(n), nn.Dense(n)
    uz, ur, un = (nn.Dense(n, use_bias=False) for _ in range(3))
    drop = nn.Dropout(RATE, deterministic=False)
    h = jnp.zeros(xs.shape[1:])
    for t in range(self.steps):
      x = xs[t]
      z = nn.sigmoid(wz(x) + uz(h))
      r = nn.sigmoid(wr(x) + ur(h))
      order = self.order if t not in self.moved else {"pre": "post", "post": "pre"}[self.order]
      pre_act = wn(x) + r * un(h)
      cand = drop(jnp.tanh(pre_act)) if order == "post" else jnp.tanh(drop(pre_act))
      h = (1 - z) * cand + z * h
    return h


def test_gru_unrolled_in_python_names_each_step_and_moves_one():
  xs = jax.random.normal(jax.random.key(4), (3, 2, 6))
  variables = _Gru("post").init(jax.random.key(0), xs)
  run = lambda **kw: lambda k, v: _Gru(**kw).apply(variables, v, rngs={"dropout": k})
  post = run(order="post")
  assert _sites(post, xs)[1] == [
    ("Dropout_0", "dropout", "tanh", "post"),
    ("Dropout_0#2", "dropout", "tanh", "post"),
    ("Dropout_0#3", "dropout", "tanh", "post"),
  ]
  _reorders(run(order="pre"), post, xs)
  got = jax.jit(jdrop.reorder(post, "pre", sites=["Dropout_0#2"]))(KEY, xs)
  assert _same(got, jax.jit(run(order="post", moved=(1,)))(KEY, xs))


# ----------------------------------------------------------------------------
# Mixture of experts: softmax gates, dropout on the router logits and on each expert.


def _moe(order):
  we = jnp.stack([W * (i + 1) / 3 for i in range(3)])  # (3, 6, 8)
  wg = jnp.linspace(-1.0, 1.0, 18, dtype=jnp.float32).reshape(6, 3)

  def f(key, x):
    k_router, k_expert = jax.random.split(key)
    gates = jax.nn.softmax(jdrop.dropout(k_router, x @ wg, rate=0.1), axis=-1)  # (4, 3)
    h = jnp.einsum("nd,edh->enh", x, we)
    d = lambda v: jdrop.dropout(k_expert, v, rate=RATE)
    h = d(jax.nn.gelu(h)) if order == "post" else jax.nn.gelu(d(h))
    return jnp.einsum("ne,enh->nh", gates, h)

  return f


def test_moe_router_dropout_is_not_moved_across_softmax():
  pre, post = _moe("pre"), _moe("post")
  assert _sites(pre, X)[1] == [
    ("dropout", "dropout", None, None),  # softmax is not elementwise
    ("dropout#2", "dropout", "gelu", "pre"),
  ]
  _reorders(pre, post, X)
  assert _same(jax.jit(jdrop.reorder(pre, "post", sites=["dropout"]))(KEY, X), jax.jit(pre)(KEY, X))


# ----------------------------------------------------------------------------
# Residual sums, embeddings, several outputs.


def test_dropout_on_a_residual_sum_before_an_activation():
  def make(order):
    def f(key, x):
      s = x @ W + jnp.tile(x, (1, 2))[:, :8]  # a residual sum of two data values
      d = lambda v: jdrop.dropout(key, v, rate=RATE)
      return (d(jnp.tanh(s)) if order == "post" else jnp.tanh(d(s))) @ W.T

    return f

  assert _sites(make("pre"), X)[1] == [("dropout", "dropout", "tanh", "pre")]
  assert _sites(make("post"), X)[1] == [("dropout", "dropout", "tanh", "post")]
  _reorders(make("pre"), make("post"), X)


class _Embedder(nn.Module):
  order: str

  @nn.compact
  def __call__(self, tokens):
    e = nn.Embed(11, 8)(tokens)
    drop = nn.Dropout(RATE, deterministic=False)
    e = drop(jnp.tanh(e)) if self.order == "post" else jnp.tanh(drop(e))
    return nn.Dense(3)(e)


def test_embedding_dropout_on_integer_tokens_reorder_and_grad():
  tokens = jnp.array([[1, 2, 3, 0], [10, 4, 4, 7]], jnp.int32)
  pre, post, variables = _linen(_Embedder, tokens)
  assert _sites(pre, tokens)[1] == [("Dropout_0", "dropout", "tanh", "pre")]
  _reorders(pre, post, tokens)
  as_args = lambda order: lambda k, p, t: _Embedder(order).apply(p, t, rngs={"dropout": k})
  loss = lambda f: lambda p: jnp.mean(f(KEY, p, tokens) ** 2)
  got = jax.jit(jax.grad(loss(jdrop.reorder(as_args("pre"), "post"))))(variables)
  assert _same(got, jax.jit(jax.grad(loss(as_args("post"))))(variables))


def _aux(order):
  def f(key, x):
    h = x @ W
    d = lambda v: jdrop.dropout(key, v, rate=RATE)
    a = d(jnp.tanh(h)) if order == "post" else jnp.tanh(d(h))
    logits = a @ W.T
    return {"logits": logits, "aux": jnp.mean(h**2), "z": jnp.mean(logits**2, axis=-1)}

  return f


def test_several_outputs_and_an_auxiliary_loss_on_the_pre_dropout_value():
  pre, post = _aux("pre"), _aux("post")
  assert _sites(pre, X)[1] == [("dropout", "dropout", "tanh", "pre")]
  _reorders(pre, post, X)
  key = jax.random.key(9)
  audit = jdrop.audit(pre, X, key=key, num_masks=32)
  evaluated = post(key, X)  # any order: evaluated with the site off
  evaluated = {"logits": jnp.tanh(X @ W) @ W.T, "aux": evaluated["aux"]}
  evaluated["z"] = jnp.mean(evaluated["logits"] ** 2, axis=-1)
  (site,) = audit.sites
  for f, estimate in ((pre, site.bias), (post, site.moved_bias)):
    brute = _brute(f, key, 32, X)
    for name in ("logits", "aux", "z"):
      np.testing.assert_allclose(estimate.mean[name], brute[name] - evaluated[name], atol=1e-5)
  assert float(np.abs(site.bias.mean["aux"])) == 0.0  # the aux loss reads no dropout


# ----------------------------------------------------------------------------
# Transforms of f: a jitted f, a checkpointed block, vmap over keys.


def _scoped(order):
  variables = _VitBlock(order="post", layer_scale=False).init(jax.random.key(0), XV)
  return lambda k, x: _VitBlock(order, layer_scale=False).apply(variables, x, rngs={"dropout": k})


def test_reorder_of_a_jitted_f_under_vmap_over_keys():
  pre, post = jax.jit(_scoped("pre")), jax.jit(_scoped("post"))
  keys = jax.random.split(KEY, 4)
  got = jax.jit(jax.vmap(jdrop.reorder(pre, "post"), in_axes=(0, None)))(keys, XV)
  assert _same(got, jax.jit(jax.vmap(post, in_axes=(0, None)))(keys, XV))
  assert not _same(got, jax.jit(jax.vmap(pre, in_axes=(0, None)))(keys, XV))


def test_paths_of_a_jitted_f_do_not_depend_on_its_call_history():
  fresh = jax.jit(_scoped("pre"))
  paths = [s.path for s in jdrop.audit(fresh, XV, num_masks=2).sites]
  assert paths == ["Dropout_0", "DropPath_0"]
  called = jax.jit(_scoped("pre"))
  called(KEY, XV)  # a training step ran before the audit
  assert [s.path for s in jdrop.audit(called, XV, num_masks=2).sites] == paths
  jax.jit(jdrop.reorder(called, "post", sites=["Dropout_0"]))(KEY, XV)

  class Net(nnx.Module):
    def __init__(self):
      self.lin = nnx.Linear(6, 6, rngs=nnx.Rngs(0))
      self.drop = nnx.Dropout(RATE)

    def __call__(self, x, rngs):
      return self.drop(jnp.tanh(self.lin(x)), rngs=rngs)

  net = Net()
  g = jax.jit(lambda k, x: net(x, nnx.Rngs(dropout=k)))
  g(KEY, X)
  assert [s.path for s in jdrop.audit(g, X, num_masks=2).sites] == ["drop"]


def test_checkpointed_block_with_a_policy_reorders_and_differentiates():
  def make(order):
    def block(key, p, x):
      h = x @ p["w1"]
      d = lambda v: jdrop.dropout(key, v, rate=RATE)
      return (d(jax.nn.elu(h)) if order == "post" else jax.nn.elu(d(h))) @ p["w3"]

    ckpt = jax.checkpoint(block, policy=jax.checkpoint_policies.nothing_saveable)
    return lambda k, p, x: ckpt(k, p, x)

  pre, post = make("pre"), make("post")
  audit, sites = _sites(pre, GLU, X)
  assert sites == [("dropout", "dropout", "elu", "pre")]
  assert any("checkpoint" in n for n in audit.notes)
  _reorders(pre, post, GLU, X)
  loss = lambda f: lambda p: jnp.sum(f(KEY, p, X) ** 2)
  got = jax.jit(jax.grad(loss(jdrop.reorder(pre, "post"))))(GLU)
  assert _same(got, jax.jit(jax.grad(loss(post)))(GLU))


class _Looped(nn.Module):
  """One Block module instance called three times (shared weights, as in a weight-tied
  universal transformer); ``moved`` calls are written in the other order."""

  order: str
  moved: tuple[int, ...] = ()

  @nn.compact
  def __call__(self, x):
    block = _Inner()
    for i in range(3):
      order = self.order if i not in self.moved else {"pre": "post", "post": "pre"}[self.order]
      x = block(x, order)
    return x


class _Inner(nn.Module):
  @nn.compact
  def __call__(self, x, order):
    h = nn.Dense(6)(x)
    drop = nn.Dropout(RATE, deterministic=False)
    return drop(jax.nn.swish(h)) if order == "post" else jax.nn.swish(drop(h))


def test_a_block_called_in_a_loop_gets_numbered_paths_that_reorder_accepts():
  variables = _Looped("pre").init(jax.random.key(0), X)
  run = lambda **kw: lambda k, x: _Looped(**kw).apply(variables, x, rngs={"dropout": k})
  pre = run(order="pre")
  audit = jdrop.audit(pre, X, num_masks=2)
  paths = [s.path for s in audit.sites]
  assert paths == ["_Inner_0/Dropout_0", "_Inner_0/Dropout_0#2", "_Inner_0/Dropout_0#3"]
  assert all((s.activation, s.order) == ("silu", "pre") for s in audit.sites)
  got = jax.jit(jdrop.reorder(pre, "post", sites=[paths[2]]))(KEY, X)
  assert _same(got, jax.jit(run(order="pre", moved=(2,)))(KEY, X))
  _reorders(pre, run(order="post"), X)


# ----------------------------------------------------------------------------
# Monte-Carlo plumbing: chunks that do not divide num_masks, a single mask.


@pytest.mark.parametrize("num_masks,chunk", [(1, None), (5, 2), (7, 3), (3, 64), (2, 1)])
def test_bias_with_odd_chunks_and_one_mask_is_brute_force(num_masks, chunk):
  f = lambda k, x: jnp.tanh(jdrop.dropout(k, x @ W, rate=RATE)) @ W.T
  g = lambda k, x: jdrop.dropout(k, jnp.tanh(x @ W), rate=RATE) @ W.T
  key = jax.random.key(11)
  audit = jdrop.audit(f, X, key=key, num_masks=num_masks, chunk=chunk)
  (site,) = audit.sites
  evaluated = jnp.tanh(X @ W) @ W.T
  np.testing.assert_allclose(site.bias.mean, _brute(f, key, num_masks, X) - evaluated, atol=1e-5)
  moved = _brute(g, key, num_masks, X) - evaluated
  np.testing.assert_allclose(site.moved_bias.mean, moved, atol=1e-5)
  json.dumps(audit.to_dict(), allow_nan=False)


def test_one_mask_claims_no_bias():
  f = lambda k, x: jdrop.dropout(k, jnp.tanh(x @ W), rate=RATE) @ W.T
  audit = jdrop.audit(f, X, num_masks=1)
  bias, noise = audit.summary(audit.sites[0])
  assert not bias > 2 * noise, (bias, noise)


def test_a_complex_output_gets_a_bias_or_none():
  f = lambda k, x: jnp.fft.fft(jnp.tanh(jdrop.dropout(k, x @ W, rate=RATE)))
  key = jax.random.key(2)
  audit = jdrop.audit(f, X, key=key, num_masks=16)
  (site,) = audit.sites
  summary = audit.summary(site)
  evaluated = jnp.fft.fft(jnp.tanh(X @ W))
  brute = _brute(f, key, 16, X) - evaluated
  assert float(jnp.abs(brute).max()) > 0.1  # the site is biased
  assert summary is None or summary[0] > 0


# ----------------------------------------------------------------------------
# Verdicts and biases agree: a proved site has moved_bias == bias.


@pytest.mark.parametrize(
  "act", [jax.nn.relu, jnp.abs, lambda h: jnp.maximum(h, 0.0) * 2.0], ids=["relu", "abs", "2relu"]
)
@pytest.mark.parametrize("order", ["pre", "post"])
def test_a_proved_site_has_moved_bias_equal_to_bias(act, order):
  def f(key, x):
    h = x @ W
    d = lambda v: jdrop.dropout(key, v, rate=RATE)
    return (d(act(h)) if order == "post" else act(d(h))) @ W.T

  (site,) = jdrop.audit(f, X, num_masks=16).sites
  assert site.verdict.pathwise.status == "proved"
  assert _same(site.moved_bias.mean, site.bias.mean)
  assert _same(site.moved_bias.stderr, site.bias.stderr)


# ----------------------------------------------------------------------------
# dtypes.


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_float16_models_reorder_bit_for_bit(dtype):
  class M(nn.Module):
    order: str

    @nn.compact
    def __call__(self, x):
      h = nn.Dense(8, dtype=dtype, param_dtype=dtype)(x.astype(dtype))
      drop = nn.Dropout(RATE, deterministic=False)
      h = drop(nn.gelu(h)) if self.order == "post" else nn.gelu(drop(h))
      return nn.Dense(3, dtype=dtype, param_dtype=dtype)(h)

  pre, post, _ = _linen(M, X)
  assert _sites(pre, X)[1] == [("Dropout_0", "dropout", "gelu", "pre")]
  _reorders(pre, post, X)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_the_rate_of_a_low_precision_flax_dropout_is_its_rate(dtype):
  def f(key, x):
    h = jnp.tanh((x @ W).astype(dtype))
    return nn.Dropout(RATE, deterministic=False).apply({}, h, rngs={"dropout": key})

  (site,) = jdrop.audit(f, X, num_masks=2).sites
  assert site.rate == RATE


# ----------------------------------------------------------------------------
# nnx: Sequential, eval()/train().


def test_nnx_sequential_paths_and_reorder():
  def make(order):
    lin1 = nnx.Linear(6, 8, rngs=nnx.Rngs(0))
    lin2 = nnx.Linear(8, 3, rngs=nnx.Rngs(1))
    layers = [nnx.Dropout(RATE), jnp.tanh] if order == "pre" else [jnp.tanh, nnx.Dropout(RATE)]
    seq = nnx.Sequential(lin1, *layers, lin2)
    return lambda k, x: seq(x, rngs=nnx.Rngs(dropout=k))

  pre, post = make("pre"), make("post")
  assert _sites(pre, X)[1] == [("layers/1", "dropout", "tanh", "pre")]
  assert _sites(post, X)[1] == [("layers/2", "dropout", "tanh", "post")]
  _reorders(pre, post, X)


def test_nnx_eval_and_train_toggle_the_sites_and_leave_the_model_alone():
  class Net(nnx.Module):
    def __init__(self):
      self.lin = nnx.Linear(6, 6, rngs=nnx.Rngs(0))
      self.drop = jdrop.nnx.Dropout(RATE)

    def __call__(self, x, rngs):
      return self.drop(jnp.tanh(self.lin(x)), rngs=rngs)

  net = Net()
  f = lambda k, x: net(x, nnx.Rngs(dropout=k))
  classes = (Net, jdrop.nnx.Dropout, nnx.Dropout, nnx.Linear)
  before = {cls: cls.__dict__.get("__call__") for cls in classes}
  net.eval()
  audit, sites = _sites(f, X)
  assert sites == [] and not audit.unseen and audit.notes
  assert _same(jax.jit(jdrop.reorder(f, "pre"))(KEY, X), jnp.tanh(net.lin(X)))
  net.train()
  assert _sites(f, X)[1] == [("drop", "dropout", "tanh", "post")]
  assert {cls: cls.__dict__.get("__call__") for cls in classes} == before
  assert net.drop.deterministic is False


# ----------------------------------------------------------------------------
# rng collections and randomness that is not dropout.


class _Collections(nn.Module):
  order: str
  collection: str = "noise"

  @nn.compact
  def __call__(self, x):
    h = nn.Dense(8)(x)
    drop = nn.Dropout(RATE, deterministic=False, rng_collection=self.collection)
    return nn.Dense(3)(drop(jnp.tanh(h)) if self.order == "post" else jnp.tanh(drop(h)))


def test_linen_dropout_with_another_rng_collection():
  variables = _Collections("post").init(jax.random.key(0), X)
  make = lambda o: lambda k, x: _Collections(o).apply(variables, x, rngs={"noise": k})
  assert _sites(make("pre"), X)[1] == [("Dropout_0", "dropout", "tanh", "pre")]
  _reorders(make("pre"), make("post"), X)
  # The same dropout fed from a key that is not f's: listed, never audited.
  fixed = lambda k, x: _Collections("pre").apply(
    variables, x, rngs={"noise": jax.random.key(1), "dropout": k}
  )
  audit, sites = _sites(fixed, X)
  assert sites == [] and any("not f's" in u for u in audit.unseen), audit.unseen


def test_input_noise_drawn_from_the_key_is_unseen_and_the_dropout_still_a_site():
  def make(order):
    def f(key, x):
      k_noise, k_drop = jax.random.split(key)
      x = x + 0.1 * jax.random.normal(k_noise, x.shape)
      h = x @ W
      d = lambda v: jdrop.dropout(k_drop, v, rate=RATE)
      return d(jnp.tanh(h)) if order == "post" else jnp.tanh(d(h))

    return f

  audit, sites = _sites(make("pre"), X)
  assert sites == [("dropout", "dropout", "tanh", "pre")]
  assert len(audit.unseen) == 1 and "`add`" in audit.unseen[0], audit.unseen
  assert not audit.notes
  _reorders(make("pre"), make("post"), X)


def test_a_key_folded_with_the_step_is_listed_never_skipped():
  f = lambda k, x, step: jnp.tanh(jdrop.dropout(jax.random.fold_in(k, step), x @ W, rate=RATE))
  audit, sites = _sites(f, X, jnp.uint32(3))
  assert sites == [] and any("random_fold_in" in u for u in audit.unseen)
  step = jnp.uint32(3)
  assert _same(jax.jit(jdrop.reorder(f, "post"))(KEY, X, step), jax.jit(f)(KEY, X, step))


def test_dropout_from_a_key_passed_as_an_argument_is_not_silent():
  f = lambda k, x, other: jnp.tanh(jdrop.dropout(other, x @ W, rate=RATE))
  audit, sites = _sites(f, X, jax.random.key(3))
  assert sites == [] and (audit.unseen or audit.notes)


# ----------------------------------------------------------------------------
# Never an internal traceback.


@pytest.mark.parametrize(
  "f,args",
  [
    (lambda k, x: jnp.tanh(jdrop.dropout(k, x, rate=RATE)), (jnp.zeros((0, 6)),)),
    (lambda k, x: None, (X,)),
    (lambda k, x: jdrop.dropout(k, x, rate=RATE).astype(jnp.complex64), (X,)),
    (lambda k, x: jnp.tanh(jdrop.dropout(k, x, rate=1.0)), (X,)),
    (lambda k, x: jdrop.dropout(k, x.astype(jnp.float16), rate=RATE).sum(), (X,)),
    (lambda k, x: jnp.tanh(jdrop.dropout(k, x[0, 0], rate=RATE)), (X,)),
    (lambda k, x: jax.nn.relu(jdrop.dropout(k, x, rate=RATE)) > 1.0, (X,)),
    (lambda k, *xs: jnp.tanh(jdrop.dropout(k, sum(xs), rate=RATE)), (X, X, X)),
  ],
  ids=["empty", "none", "complex-out", "rate-1", "f16-sum", "scalar", "bool-out", "varargs"],
)
def test_odd_models_never_crash_with_an_internal_error(f, args):
  try:
    audit = jdrop.audit(f, *args, num_masks=3, chunk=2)
  except (ValueError, TypeError) as err:
    assert str(err).startswith("jdrop.audit: "), err
    return
  audit.to_markdown()
  json.dumps(audit.to_dict(), allow_nan=False)
  jax.jit(jdrop.reorder(f, "pre"))(KEY, *args)


# ----------------------------------------------------------------------------
# The command line.


def _factory_module():
  """A module importable as ``jdrop_review2_models`` with factories in odd places."""
  module = types.ModuleType("jdrop_review2_models")
  f = lambda k, x: jnp.tanh(jdrop.dropout(k, x @ W, rate=RATE)) @ W.T

  class Models:
    tiny = staticmethod(lambda: (f, [X]))  # args as a list
    as_list = staticmethod(lambda: [f, (X,)])  # the pair as a list

    class Nested:
      tiny = staticmethod(lambda: (f, (X,)))

  module.Models = Models
  return module


@pytest.fixture
def review_models(monkeypatch):
  monkeypatch.setitem(sys.modules, "jdrop_review2_models", _factory_module())


def _cli(argv, capsys):
  from jdrop._src import cli

  status = cli.main(["audit", *argv])
  out = capsys.readouterr()
  return status, out.out, out.err


def test_cli_dotted_attributes_and_list_args(review_models, tmp_path, capsys):
  for spec in ("jdrop_review2_models:Models.tiny", "jdrop_review2_models:Models.Nested.tiny"):
    path = tmp_path / (spec.rsplit(".", 1)[0].replace(":", "_") + ".json")
    status, out, err = _cli([spec, "--num-masks", "3", "--json", str(path)], capsys)
    assert status == 0, err
    assert "tanh" in out and "pre" in out
    assert json.loads(path.read_text())["sites"][0]["activation"] == "tanh"
  status, out, err = _cli(["jdrop_review2_models:Models.as_list"], capsys)
  assert status in (0, 2), err
  if status == 2:
    assert "must return a pair (f, args)" in err and len(err.strip().splitlines()) == 1
  status, _, err = _cli(["jdrop_review2_models:Models.missing.tiny"], capsys)
  assert status == 2 and "does not have ('missing')" in err
