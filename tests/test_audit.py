"""jdrop.audit and jdrop.reorder: sites found in real models, moved bit for bit, biases checked
against brute force, and clear errors.

The oracles are independent of the audit's interpreter: for ``reorder``, the same model
written in the other order (same parameters, same rng paths, hence the same masks); for the
bias, the model run with only one dropout layer in training mode, mask by mask.
"""

from __future__ import annotations

import json

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
from tests import lm1b_like

pytestmark = pytest.mark.filterwarnings("ignore:SelfAttention will be deprecated")

X = models.X
KEY = jax.random.key(7)


_same = models.same


# ----------------------------------------------------------------------------
# A model nobody here wrote: the lm1b-shaped Transformer.


@pytest.fixture(scope="module", params=[nn.Dropout, jdrop.flax.Dropout], ids=["flax", "jdrop"])
def lm1b(request):
  config = lm1b_like.Config(dropout=request.param)
  model = lm1b_like.TransformerLM(config)
  tokens = lm1b_like.tokens()
  variables = model.init(jax.random.key(0), tokens)
  f = lambda key, t: model.apply(variables, t, rngs={"dropout": key})
  return f, tokens, jdrop.audit(f, tokens, num_masks=8)


def test_lm1b_every_dropout_is_found_with_its_path_and_activation(lm1b):
  _, _, audit = lm1b
  expected = ["decoder/Dropout_0"]
  for layer in range(2):
    block = f"decoder/encoderdecoderblock_{layer}"
    expected += [
      f"{block}/SelfAttention_0",
      f"{block}/Dropout_0",
      f"{block}/MlpBlock_0/Dropout_0",
      f"{block}/MlpBlock_0/Dropout_1",
    ]
  assert [s.path for s in audit.sites] == expected
  assert not audit.unseen and not audit.notes
  for site in audit.sites:
    assert site.rate == pytest.approx(0.1)
    if site.path.endswith("SelfAttention_0"):
      assert site.kind == "attention" and site.shape == (4, 4, 16, 16)
      assert site.activation is None
    elif site.path.endswith("MlpBlock_0/Dropout_0"):  # Dense -> relu -> Dropout
      assert (site.kind, site.activation, site.order) == ("dropout", "relu", "post")
      assert site.verdict.pathwise.status == site.verdict.expectation.status == "proved"
      assert site.shape == (4, 16, 64)
    else:  # after an embedding, an attention output or a Dense: a bias or a residual
      assert (site.kind, site.activation, site.order, site.verdict) == ("dropout", None, None, None)
      assert site.moved_bias is None


def test_lm1b_reorder_post_is_the_model_itself(lm1b):
  f, tokens, _ = lm1b
  g = jdrop.reorder(f, "post")
  assert _same(jax.jit(g)(KEY, tokens), jax.jit(f)(KEY, tokens))
  # relu commutes with dropout bit for bit, so moving its site before relu changes nothing.
  assert _same(jax.jit(jdrop.reorder(f, "pre"))(KEY, tokens), jax.jit(f)(KEY, tokens))


# ----------------------------------------------------------------------------
# reorder against the model written in the other order.


FAMILIES = {
  "linen": lambda order, act: models.linen(order, act)[0],
  "jdrop.flax": lambda order, act: models.linen(order, act, dropout=jdrop.flax.Dropout)[0],
  "nnx": lambda order, act: models.nnx_model(order, act, nnx.Dropout),
  "jdrop.nnx": lambda order, act: models.nnx_model(order, act, jdrop.nnx.Dropout),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
def test_reorder_gives_the_model_written_in_the_other_order(family, activation):
  pre, post = (FAMILIES[family](order, activation) for order in ("pre", "post"))
  want_pre, want_post = jax.jit(pre)(KEY, X), jax.jit(post)(KEY, X)
  assert not _same(want_pre, want_post)  # the orders differ: the test can fail
  assert _same(jax.jit(jdrop.reorder(pre, "post"))(KEY, X), want_post)
  assert _same(jax.jit(jdrop.reorder(post, "pre"))(KEY, X), want_pre)
  assert _same(jax.jit(jdrop.reorder(pre, "pre"))(KEY, X), want_pre)
  assert _same(jax.jit(jdrop.reorder(post, "post"))(KEY, X), want_post)
  assert _same(jdrop.reorder(post, "post")(KEY, X), post(KEY, X))  # eagerly too


def _direct(order, activation="tanh", rate=0.4):
  w = jnp.linspace(-1.0, 1.0, 48).reshape(6, 8)
  act = getattr(jax.nn, activation)

  def f(key, x):
    h = x @ w
    h = (
      jdrop.dropout(key, act(h), rate=rate)
      if order == "post"
      else act(jdrop.dropout(key, h, rate=rate))
    )
    return h.sum(axis=-1)

  return f


def _explicit(order, activation="tanh", rate=0.4):
  """The same function by explicit composition with one mask (no jdrop.dropout call)."""
  w = jnp.linspace(-1.0, 1.0, 48).reshape(6, 8)
  act = getattr(jax.nn, activation)

  def f(key, x):
    h = x @ w
    mask = jdrop.keep_mask(key, h.shape, rate=rate)
    drop = lambda v: jdrop.apply_mask(v, mask, rate=rate)
    return (drop(act(h)) if order == "post" else act(drop(h))).sum(axis=-1)

  return f


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
def test_reorder_of_direct_calls_matches_explicit_composition(activation):
  for source, target in (("pre", "post"), ("post", "pre")):
    moved = jax.jit(jdrop.reorder(_direct(source, activation), target))(KEY, X)
    assert _same(moved, jax.jit(_explicit(target, activation))(KEY, X))
    assert not _same(moved, jax.jit(_explicit(source, activation))(KEY, X))


def test_reorder_eagerly_under_vmap_and_under_grad():
  pre, post = _direct("pre"), _direct("post")
  g = jdrop.reorder(pre, "post")
  # Eagerly and batched, XLA may round tanh and the sum differently from one fused program.
  np.testing.assert_allclose(g(KEY, X), jax.jit(post)(KEY, X), rtol=1e-6)
  keys = jax.random.split(KEY, 3)
  batched = jax.jit(jax.vmap(g, in_axes=(0, None)))(keys, X)
  for i in range(3):
    np.testing.assert_allclose(batched[i], jax.jit(post)(keys[i], X), rtol=1e-6)
    assert not np.allclose(batched[i], jax.jit(pre)(keys[i], X), rtol=1e-3)
  grad = jax.jit(jax.grad(lambda x: g(KEY, x).sum()))(X)
  want = jax.jit(jax.grad(lambda x: post(KEY, x).sum()))(X)
  np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-7)
  assert float(jnp.abs(want).sum()) > 0


def test_reorder_moves_only_the_sites_named():
  pre, _ = models.linen("pre", "tanh")
  first_only = models.Ordered(order="pre", activation="tanh")
  variables = models.Ordered(activation="tanh").init(jax.random.key(0), X)

  class Mixed(nn.Module):  # layer 0 post, layer 1 pre: what moving Dropout_0 alone gives
    @nn.compact
    def __call__(self, x):
      h = nn.Dropout(0.3, deterministic=False)(jnp.tanh(nn.Dense(8)(x)))
      h = jnp.tanh(nn.Dropout(0.3, deterministic=False)(nn.Dense(8)(h)))
      return nn.Dense(3)(h)

  del first_only
  want = Mixed().apply(variables, X, rngs={"dropout": KEY})
  got = jax.jit(jdrop.reorder(pre, "post", sites=["Dropout_0"]))(KEY, X)
  np.testing.assert_array_equal(got, want)
  with pytest.raises(ValueError, match=r"jdrop.reorder: `sites` must name sites.*Dropout_1"):
    jdrop.reorder(pre, "post", sites=["Dropout_9"])(KEY, X)


# ----------------------------------------------------------------------------
# The Monte-Carlo bias against brute force.


def _brute_force(order, activation, site, rate, num_masks, key):
  """Mean and standard error of f with only ``site`` active, minus f in eval mode."""
  _, variables = models.linen(order, activation)
  active = tuple(i == site for i in range(2))
  only = models.Ordered(order=order, activation=activation, rate=rate, active=active)
  evaluated = models.Ordered(order=order, activation=activation, active=(False, False))
  base = evaluated.apply(variables, X)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(num_masks))
  outs = jax.vmap(lambda k: only.apply(variables, X, rngs={"dropout": k}))(keys) - base
  outs = np.asarray(outs, np.float64)
  return outs.mean(0), outs.std(0, ddof=1) / np.sqrt(num_masks)


def _max_z(audit_estimate, brute):
  mean, se = np.asarray(audit_estimate.mean, np.float64), np.asarray(audit_estimate.stderr)
  return float(np.max(np.abs(mean - brute[0]) / np.sqrt(se**2 + brute[1] ** 2 + 1e-30)))


# Each comparison tests 12 output elements; |z| > 5 has probability 6e-7 per element under
# the null, so the family-wise level is below 1e-5.
Z_LIMIT = 5.0


@pytest.mark.parametrize("order,activation", [("pre", "tanh"), ("post", "softplus")])
def test_bias_agrees_with_brute_force(order, activation):
  f, _ = models.linen(order, activation)
  audit = jdrop.audit(f, X, key=jax.random.key(1), num_masks=4096)
  for site in range(2):
    estimate = audit.sites[site].bias
    brute = _brute_force(order, activation, site, 0.3, 4096, jax.random.key(2))
    assert _max_z(estimate, brute) < Z_LIMIT
    if order == "pre":  # biased enough that a wrong rate shows: the comparison has power
      wrong = _brute_force(order, activation, site, 0.6, 4096, jax.random.key(2))
      assert _max_z(estimate, wrong) > Z_LIMIT
  # With the same masks (the audit's keys), brute force agrees to rounding.
  same = _brute_force(order, activation, 0, 0.3, 4096, jax.random.key(1))
  np.testing.assert_allclose(audit.sites[0].bias.mean, same[0], atol=1e-5)


def test_moved_bias_is_the_bias_of_the_model_in_the_other_order():
  pre, _ = models.linen("pre", "tanh")
  audit = jdrop.audit(pre, X, key=jax.random.key(1), num_masks=2048)
  for site in range(2):
    brute = _brute_force("post", "tanh", site, 0.3, 2048, jax.random.key(1))
    np.testing.assert_allclose(audit.sites[site].moved_bias.mean, brute[0], atol=1e-5)


def test_post_activation_dropout_before_linear_maps_only_has_zero_bias():
  """E[D(h)] = h, and the maps after the last hidden layer's dropout are linear."""
  last = 1  # Dense -> tanh -> Dropout_1 -> Dense: only linear maps follow
  post, _ = models.linen("post", "tanh")
  site = jdrop.audit(post, X, num_masks=8192).sites[last]
  assert site.order == "post"
  z = np.abs(np.asarray(site.bias.mean)) / np.asarray(site.bias.stderr)
  assert z.max() < Z_LIMIT
  # The pre-activation site (dropout -> tanh -> Dense) is biased: the same test rejects it.
  moved = np.abs(np.asarray(site.moved_bias.mean)) / np.asarray(site.moved_bias.stderr)
  assert moved.max() > Z_LIMIT


# ----------------------------------------------------------------------------
# Kinds of dropout, and randomness that is not a site.


def _sites(f, *args):
  return models.site_rows(f, *args, num_masks=4)


def test_jdrop_module_family_and_attention():
  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      h = jdrop.flax.DropPath(0.2, deterministic=False)(nn.relu(nn.Dense(8)(x)))
      h = jdrop.flax.ActivationDropout("gelu", 0.1, order="pre", deterministic=False)(
        nn.Dense(8)(h)
      )
      h = jdrop.flax.Dropout(0.2, broadcast_dims=(0,), deterministic=False)(jnp.abs(nn.Dense(8)(h)))
      h = nn.MultiHeadDotProductAttention(2, dropout_rate=0.1, deterministic=False)(h[None])
      return h

  variables = Net().init(jax.random.key(0), X)
  audit, sites = _sites(lambda k, x: Net().apply(variables, x, rngs={"dropout": k}), X)
  assert sites == [
    ("DropPath_0", "dropout", "relu", "post"),
    ("ActivationDropout_0", "dropout", "gelu", "pre"),
    ("Dropout_0", "dropout", "abs", "post"),
    ("MultiHeadDotProductAttention_0", "attention", None, None),
  ]
  assert audit.sites[2].verdict.pathwise.status == "proved"
  assert audit.sites[1].verdict.pathwise.status == "refuted"


def test_nnx_paths_and_attention():
  class Net(nnx.Module):
    def __init__(self):
      rngs = nnx.Rngs(0)
      self.lin = nnx.Linear(6, 6, rngs=rngs)
      self.drop = nnx.Dropout(0.2)
      self.att = nnx.MultiHeadAttention(2, 6, dropout_rate=0.1, decode=False, rngs=rngs)

    def __call__(self, x, rngs):
      h = self.drop(nnx.relu(self.lin(x)), rngs=rngs)
      return self.att(h[None], rngs=rngs, deterministic=False)

  net = Net()
  classes = (Net, nnx.Dropout, nnx.Linear, nnx.MultiHeadAttention)
  before = [cls.__dict__.get("__call__") for cls in classes]
  _, sites = _sites(lambda k, x: net(x, nnx.Rngs(dropout=k)), X)
  assert sites == [("drop", "dropout", "relu", "post"), ("att", "attention", None, None)]
  assert [cls.__dict__.get("__call__") for cls in classes] == before  # the scopes are undone


def test_hand_written_dropout_and_direct_calls_in_named_scopes():
  def f(key, x):
    k1, k2 = jax.random.split(key)
    with jax.named_scope("block"):
      h = jdrop.dropout(k1, jax.nn.sigmoid(x), rate=0.25)
      keep = jax.random.bernoulli(k2, 0.8, h.shape)
      return jax.nn.softplus(jnp.where(keep, h / 0.8, 0.0))

  audit, sites = _sites(f, X)
  assert sites == [
    ("block", "dropout", "sigmoid", "post"),
    ("block#2", "dropout", "softplus", "pre"),
  ]
  assert [s.rate for s in audit.sites] == [0.25, pytest.approx(0.2)]


@jax.custom_jvp
def _custom(key, x):
  return jnp.tanh(jdrop.dropout(key, x, rate=0.1))


_custom.defjvp(lambda primals, tangents: (_custom(*primals), tangents[1]))


@pytest.mark.parametrize(
  "name,f,args,reason",
  [
    (
      "scan",
      lambda k, x: jax.lax.scan(
        lambda c, kk: (jnp.tanh(jdrop.dropout(kk, c, rate=0.1)), None), x, jax.random.split(k, 2)
      )[0],
      (X,),
      "inside a `scan`",
    ),
    (
      "traced rate",
      lambda k, x, r: jax.nn.relu(jdrop.dropout(k, x, rate=r)),
      (X, jnp.float32(0.2)),
      "not a dropout mask",
    ),
    (
      "gaussian",
      lambda k, x: jnp.tanh(jdrop.gaussian_dropout(k, x, rate=0.2)),
      (X,),
      "Gaussian dropout",
    ),
    ("alpha", lambda k, x: jdrop.alpha_dropout(k, jax.nn.selu(x), rate=0.2), (X,), "alpha"),
    (
      "custom_jvp",
      lambda k, x: _custom(k, x),
      (X,),
      "custom derivative",
    ),
  ],
)
def test_randomness_that_is_not_a_site_is_listed_never_skipped(name, f, args, reason):
  audit, sites = _sites(f, *args)
  assert sites == [], name
  assert any(reason in u for u in audit.unseen), audit.unseen
  assert not audit.notes  # "no dropout" would be wrong: there is randomness


def test_a_model_without_dropout_gives_an_empty_audit_with_a_note():
  audit = jdrop.audit(lambda key, x: jnp.tanh(x) * 2, X)
  assert audit.sites == () and audit.unseen == ()
  assert "no dropout mask" in audit.notes[0]
  assert "| site |" in audit.to_markdown()


def test_pytree_outputs_and_serialisation():
  def f(key, x):
    h = jdrop.dropout(key, jnp.tanh(x), rate=0.5)
    return {"sum": h.sum(-1), "pair": (h[:, :2], jnp.float32(1.0))}

  audit = jdrop.audit(f, X, num_masks=64)
  site = audit.sites[0]
  assert jax.tree.structure(site.bias.mean) == jax.tree.structure(f(KEY, X))
  assert site.bias.stderr["sum"].shape == (4,)
  assert float(site.bias.stderr["pair"][1]) == 0.0
  data = json.loads(json.dumps(audit.to_dict(), allow_nan=False))
  assert data["sites"][0]["activation"] == "tanh"
  assert data["sites"][0]["verdict"]["pathwise"]["status"] == "refuted"
  assert data["sites"][0]["summary"]["bias"] >= 0
  assert "`dropout` | dropout | 0.5 | tanh | post | refuted | refuted" in audit.to_markdown()


def test_results_do_not_depend_on_the_chunk():
  f, _ = models.linen("pre", "tanh")
  a = jdrop.audit(f, X, num_masks=100, chunk=7)
  b = jdrop.audit(f, X, num_masks=100, chunk=100)
  for s, t in zip(a.sites, b.sites, strict=True):
    np.testing.assert_allclose(s.bias.mean, t.bias.mean, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------
# Errors.


def test_bad_arguments_get_one_clear_error():
  f, _ = models.linen()
  with pytest.raises(TypeError, match=r"jdrop.audit: `f` must be a callable"):
    jdrop.audit("model", X)
  with pytest.raises(TypeError, match=r"jdrop.audit: `f` must accept \(key, \*args\)"):
    jdrop.audit(lambda x: x, X)
  with pytest.raises(TypeError, match=r"jdrop.audit: `key`"):
    jdrop.audit(f, X, key=3)
  with pytest.raises(ValueError, match=r"jdrop.audit: `num_masks` must be a positive integer"):
    jdrop.audit(f, X, num_masks=0)
  with pytest.raises(TypeError, match=r"jdrop.audit: `num_masks`"):
    jdrop.audit(f, X, num_masks=1.5)
  with pytest.raises(ValueError, match=r"jdrop.audit: `chunk`"):
    jdrop.audit(f, X, chunk=-1)
  with pytest.raises(
    ValueError, match=r"jdrop.audit: `f` failed when traced.*ScopeParamShapeError"
  ):
    jdrop.audit(f, jnp.ones((4, 5)))
  with pytest.raises(ValueError, match=r'jdrop.reorder: `order` must be "pre".*got \'before\''):
    jdrop.reorder(f, "before")
  with pytest.raises(TypeError, match=r"jdrop.reorder: `f` must be a callable"):
    jdrop.reorder(None, "pre")
  with pytest.raises(TypeError, match=r"jdrop.reorder: `sites` must be a sequence"):
    jdrop.reorder(f, "pre", sites="Dropout_0")


# ----------------------------------------------------------------------------
# The command line.


def _cli(argv, capsys):
  from jdrop._src import cli

  status = cli.main(["audit", *argv])
  out = capsys.readouterr()
  return status, out.out, out.err


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
  path = tmp_path / "audit.json"
  status, out, err = _cli(
    ["tests.audit_models:tiny", "--num-masks", "16", "--json", str(path)], capsys
  )
  assert status == 0, err
  assert "Dropout_0" in out and "relu" in out and "proved" in out
  data = json.loads(path.read_text())
  assert [s["path"] for s in data["sites"]] == ["Dropout_0", "Dropout_1"]
  assert data["num_masks"] == 16
  status, out, _ = _cli(["tests.audit_models:tiny_pre", "--num-masks", "8", "--markdown"], capsys)
  assert status == 0 and "| `Dropout_0` | dropout | 0.3 | gelu | pre | refuted |" in out


def test_cli_refuses_to_overwrite_and_explains_bad_models(tmp_path, capsys):
  path = tmp_path / "audit.json"
  path.write_text("mine")
  status, _, err = _cli(["tests.audit_models:tiny", "--json", str(path)], capsys)
  assert status == 2 and "exists; pass --force" in err and path.read_text() == "mine"
  cases = {
    "tests.audit_models:not_a_pair": "must return a pair (f, args)",
    "tests.audit_models:broken": "failed when called (RuntimeError: no model today)",
    "tests.audit_models:X": "must name a callable of no arguments",
    "tests.audit_models:nothing": "does not have ('nothing')",
    "tests.no_such_module:f": "cannot be imported",
    "tests.audit_models": "must be 'module:attribute'",
  }
  for spec, message in cases.items():
    status, out, err = _cli([spec], capsys)
    assert status == 2, spec
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert out == ""


def test_the_mask_axis_is_sharded_over_devices_with_the_same_estimates():
  """Two forced CPU devices in a child process give the estimates of one device."""
  import os
  import subprocess
  import sys
  from pathlib import Path

  child = (
    "import json, jax, jdrop\n"
    "from tests import audit_models as m\n"
    "assert len(jax.devices()) == 2\n"
    "f, _ = m.linen('pre', 'tanh')\n"
    "a = jdrop.audit(f, m.X, num_masks=1001, chunk=64)\n"
    "print(json.dumps([s.bias.mean.tolist() for s in a.sites]))\n"
  )
  root = Path(__file__).resolve().parent.parent
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=str(root),
  )
  out = subprocess.run(
    [sys.executable, "-c", child], capture_output=True, text=True, env=env, cwd=root, timeout=300
  )
  assert out.returncode == 0, out.stderr[-2000:]
  sharded = json.loads(out.stdout.strip().splitlines()[-1])
  f, _ = models.linen("pre", "tanh")
  local = jdrop.audit(f, X, num_masks=1001, chunk=64)
  for site, means in zip(local.sites, sharded, strict=True):
    np.testing.assert_allclose(site.bias.mean, means, rtol=1e-4, atol=1e-6)


def test_wmt_like_encoder_decoder_with_cross_attention():
  config = lm1b_like.Config(num_layers=1)
  model = lm1b_like.Translator(config)
  sources, targets = lm1b_like.tokens(2, 6), lm1b_like.tokens(2, 5, seed=1)
  variables = model.init(jax.random.key(0), sources, targets)
  f = lambda key, s, t: model.apply(variables, s, t, rngs={"dropout": key})
  audit = jdrop.audit(f, sources, targets, num_masks=8)
  found = [(s.path, s.kind, s.activation, s.order) for s in audit.sites]
  enc, dec = "encoderblock_0", "encoderdecoderblock_0"
  assert found == [
    ("Dropout_0", "dropout", None, None),
    (f"{enc}/MultiHeadDotProductAttention_0", "attention", None, None),
    (f"{enc}/Dropout_0", "dropout", None, None),
    (f"{enc}/MlpBlock_0/Dropout_0", "dropout", "relu", "post"),
    (f"{enc}/MlpBlock_0/Dropout_1", "dropout", None, None),
    ("Dropout_1", "dropout", None, None),
    (f"{dec}/MultiHeadDotProductAttention_0", "attention", None, None),
    (f"{dec}/Dropout_0", "dropout", None, None),
    (f"{dec}/MultiHeadDotProductAttention_1", "attention", None, None),  # cross-attention
    (f"{dec}/Dropout_1", "dropout", None, None),
    (f"{dec}/MlpBlock_0/Dropout_0", "dropout", "relu", "post"),
    (f"{dec}/MlpBlock_0/Dropout_1", "dropout", None, None),
  ]
  assert audit.sites[8].shape == (2, 4, 5, 6)  # batch, heads, target length, source length
  assert _same(
    jax.jit(jdrop.reorder(f, "post"))(KEY, sources, targets), jax.jit(f)(KEY, sources, targets)
  )
