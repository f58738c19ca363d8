r"""Study 6: auditing the architectures people train, in both orders, with :func:`jdrop.audit`.

Three architectures, each built twice, once with its activation's dropout after the
activation (``post``) and once before it (``pre``), with the same parameters:

* a **pre-LN Transformer block**: LayerNorm -> multi-head self-attention (attention-weight
  dropout) -> Dropout -> residual; LayerNorm -> Dense -> GELU and Dropout in the chosen order
  -> Dense -> Dropout -> residual (``flax.linen.Dropout`` throughout);
* a **ResNet-style convolution block** with spatial dropout (one mask per channel,
  ``broadcast_dims`` over height and width, ``jdrop.flax.Dropout``): Conv -> GroupNorm ->
  ReLU and Dropout in the chosen order -> Conv -> GroupNorm -> residual -> ReLU;
* the report's **digits MLP** (two hidden layers of 64, relu and tanh), trained briefly with
  Adam in the order it is audited in, so that the audit sees trained weights.

The Transformer and convolution blocks are audited at initialisation on standard-normal
inputs (a random block is what the audit's bias measures most plainly: how far the mean
training-mode output of the block is from its evaluation-mode output, per site). For each
site the audit reports the checker's verdict for its activation and the Monte-Carlo bias
``E[f with only this site in training mode] - f in eval mode`` relative to the RMS of the
eval output, with the Monte-Carlo noise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jdrop._src import errors
from jdrop._src.audit import api as audit_api
from jdrop._src.linen import Dropout as JdropDropout
from jdrop._src.studies import data as _data

ORDERS = ("post", "pre")


@dataclasses.dataclass(frozen=True)
class Config:
  """The audit study's parameters.

  Attributes:
    num_masks: Monte-Carlo masks per site.
    rate: the drop rate of every dropout layer.
    width: the Transformer's model width and the convolution block's channels.
    length: the Transformer's sequence length; the convolution block's images are
      ``length x length``.
    batch: inputs per audit.
    mlp_steps: Adam steps for each digits MLP (0: audit the initial weights).
    seed: the seed of parameters, inputs and masks.
  """

  num_masks: int = 512
  rate: float = 0.1
  width: int = 32
  length: int = 8
  batch: int = 4
  mlp_steps: int = 300
  seed: int = 0


DEFAULT = Config()
FULL = Config(num_masks=4096, width=64, length=16, batch=8, mlp_steps=1500)


def _check(config: Config) -> None:
  for name in ("num_masks", "width", "length", "batch"):
    errors.check_count(
      f"audit study config.{name}", name, getattr(config, name), upper=2**20, example="8"
    )
  if not 0 < config.rate < 1:
    raise errors.value_error(
      "audit study", "config.rate", "must be in (0, 1)", config.rate, "Use e.g. rate=0.1."
    )


def _place(order: str, drop: Callable, act: Callable, h: jax.Array) -> jax.Array:
  return drop(act(h)) if order == "post" else act(drop(h))


class TransformerBlock(nn.Module):
  """A pre-LN Transformer block with attention, residual and MLP dropout."""

  order: str
  rate: float
  heads: int = 4

  @nn.compact
  def __call__(self, x):
    width = x.shape[-1]
    h = nn.LayerNorm()(x)
    h = nn.MultiHeadDotProductAttention(self.heads, dropout_rate=self.rate, deterministic=False)(h)
    x = x + nn.Dropout(self.rate, deterministic=False)(h)
    h = nn.Dense(2 * width)(nn.LayerNorm()(x))
    h = _place(self.order, nn.Dropout(self.rate, deterministic=False), nn.gelu, h)
    h = nn.Dense(width)(h)
    return x + nn.Dropout(self.rate, deterministic=False)(h)


class ConvBlock(nn.Module):
  """A ResNet-style basic block with spatial dropout (one mask per image and channel)."""

  order: str
  rate: float

  @nn.compact
  def __call__(self, x):  # NHWC
    channels = x.shape[-1]
    h = nn.GroupNorm(num_groups=4)(nn.Conv(channels, (3, 3))(x))
    drop = JdropDropout(self.rate, broadcast_dims=(1, 2), deterministic=False)
    h = _place(self.order, drop, nn.relu, h)
    h = nn.GroupNorm(num_groups=4)(nn.Conv(channels, (3, 3))(h))
    return nn.relu(x + h)


class DigitsMLP(nn.Module):
  """The report's MLP: two hidden layers, each Dense -> activation and dropout -> readout."""

  order: str
  activation: str
  rate: float
  train: bool = True

  @nn.compact
  def __call__(self, x):
    act = getattr(jax.nn, self.activation)
    for width in (64, 64):
      drop = nn.Dropout(self.rate, deterministic=not self.train)
      x = _place(self.order, drop, act, nn.Dense(width)(x))
    return nn.Dense(10)(x)


def _train_mlp(model: DigitsMLP, dataset: _data.Dataset, steps: int, seed: int) -> Any:
  import optax

  x, y = jnp.asarray(dataset.x_train), jnp.asarray(dataset.y_train)
  params = model.init(jax.random.key(seed), x[:1])
  optimizer = optax.adam(1e-3)

  def loss(p, key, batch):
    logits = model.apply(p, x[batch], rngs={"dropout": key})
    return optax.softmax_cross_entropy_with_integer_labels(logits, y[batch]).mean()

  def step(carry, i):
    p, state = carry
    key = jax.random.fold_in(jax.random.key(seed + 1), i)
    batch = jax.random.choice(jax.random.fold_in(key, 1), x.shape[0], (64,), replace=False)
    grads = jax.grad(loss)(p, key, batch)
    updates, state = optimizer.update(grads, state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), jnp.arange(steps)))(
    params
  )
  return params


def _summary(result: audit_api.Audit) -> list[dict[str, Any]]:
  rows = []
  for site in result.sites:
    bias, noise = result.summary(site)
    moved = result.summary(site, moved=True)
    rows.append(
      {
        "path": site.path,
        "kind": site.kind,
        "rate": site.rate,
        "shape": list(site.shape),
        "activation": site.activation,
        "order": site.order,
        "pathwise": site.verdict.pathwise.status if site.verdict else None,
        "expectation": site.verdict.expectation.status if site.verdict else None,
        "bias": bias,
        "noise": noise,
        "moved_bias": None if moved is None else moved[0],
        "moved_noise": None if moved is None else moved[1],
      }
    )
  return rows


def _models(config: Config) -> list[tuple[str, Callable[[str], tuple[Callable, tuple]]]]:
  key = jax.random.key(config.seed)
  tokens = jax.random.normal(key, (config.batch, config.length, config.width))
  images = jax.random.normal(key, (config.batch, config.length, config.length, config.width))

  def transformer(order: str):
    block = TransformerBlock(order, config.rate)
    variables = TransformerBlock("post", config.rate).init({"params": key, "dropout": key}, tokens)
    return (lambda k, x: block.apply(variables, x, rngs={"dropout": k})), (tokens,)

  def conv(order: str):
    block = ConvBlock(order, config.rate)
    variables = ConvBlock("post", config.rate).init({"params": key, "dropout": key}, images)
    return (lambda k, x: block.apply(variables, x, rngs={"dropout": k})), (images,)

  def mlp(activation: str):
    def build(order: str):
      dataset = _data.load_digits(seed=config.seed)
      model = DigitsMLP(order, activation, config.rate)
      params = _train_mlp(model, dataset, config.mlp_steps, config.seed)
      x = jnp.asarray(dataset.x_test[: 8 * config.batch])
      return (lambda k, v: model.apply(params, v, rngs={"dropout": k})), (x,)

    return build

  return [
    ("Transformer block (pre-LN, GELU MLP)", transformer),
    ("ResNet-style conv block (spatial dropout, ReLU)", conv),
    ("digits MLP, relu (trained)", mlp("relu")),
    ("digits MLP, tanh (trained)", mlp("tanh")),
  ]


def run(config: Config = DEFAULT, *, progress: Callable[..., None] | None = None) -> dict:
  """Audits each architecture in both orders; JSON-ready results."""
  _check(config)
  models = _models(config)
  out = []
  total = len(models) * len(ORDERS)
  for i, (name, build) in enumerate(models):
    entry: dict[str, Any] = {"name": name}
    for j, order in enumerate(ORDERS):
      start = time.perf_counter()
      f, args = build(order)
      result = audit_api.audit(
        f, *args, key=jax.random.key(config.seed + 7), num_masks=config.num_masks
      )
      entry[order] = {
        "sites": _summary(result),
        "unseen": list(result.unseen),
        "seconds": time.perf_counter() - start,
      }
      if progress is not None:
        progress(i * len(ORDERS) + j + 1, total, f"audit: {name}, {order}")
    out.append(entry)
  return {"config": dataclasses.asdict(config), "architectures": out}


def figures(results: dict, out_dir: Path) -> list[str]:
  """Per-site |bias| relative to the eval output's RMS, both orders, one panel each."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  archs = results["architectures"]
  fig, axes = plt.subplots(1, len(archs), figsize=(4.2 * len(archs), 4.2), squeeze=False)
  for ax, arch in zip(axes[0], archs, strict=True):
    labels = [_short(s["path"]) for s in arch["post"]["sites"]]
    x = np.arange(len(labels))
    for offset, order, color in ((-0.2, "post", "tab:blue"), (0.2, "pre", "tab:orange")):
      sites = arch[order]["sites"]
      ax.bar(
        x + offset,
        [s["bias"] for s in sites],
        0.4,
        yerr=[2 * s["noise"] for s in sites],
        color=color,
        label=f"built {order}-activation",
      )
    ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=7)
    ax.set_title(arch["name"], fontsize=9)
    ax.set_ylabel("|bias| / RMS of eval output")
  axes[0][0].legend(fontsize=8)
  fig.suptitle(
    f"Per-site bias of each dropout site ({results['config']['num_masks']} masks; bars ±2 noise)"
  )
  fig.tight_layout()
  fig.savefig(out_dir / "audit.png", dpi=110)
  plt.close(fig)
  return ["audit.png"]


def _short(path: str) -> str:
  parts = path.split("/")
  return "/".join(parts[-2:]) if len(parts) > 1 else path


def _cell(value: float | None, noise: float | None) -> str:
  return "-" if value is None else f"{value:.3g} ± {noise:.2g}"


def section(results: dict, figures: list[str]) -> str:
  """Markdown: one table per architecture, the figure, and a reading from the numbers."""
  config = results["config"]
  lines = [
    "## 6. Auditing whole architectures",
    "",
    "`jdrop.audit` reads each model's jaxpr, finds every dropout site, the elementwise"
    " activation next to it, the checker's verdict for moving the site across it, and the"
    f" Monte-Carlo bias of the site ({config['num_masks']} masks, rate {config['rate']:g}):"
    " the root mean square over the output of E[model with only this site in training mode]"
    " - model in eval mode, relative to the RMS of the eval output, less the Monte-Carlo"
    " noise (± the noise; below about twice the noise it is not distinguishable from 0)."
    " Each architecture is built post-activation and pre-activation with the same"
    " parameters; 'moved' is the same site on the other side of its activation.",
    "",
  ]
  reading = []
  for arch in results["architectures"]:
    lines += [
      f"**{arch['name']}**",
      "",
      "| site | kind | activation | pathwise | expectation | bias, built post | moved (pre) |"
      " bias, built pre | moved (post) |",
      "|---|---|---|---|---|---|---|---|---|",
    ]
    for post, pre in zip(arch["post"]["sites"], arch["pre"]["sites"], strict=True):
      lines.append(
        f"| `{post['path']}` | {post['kind']} | {post['activation'] or '-'} "
        f"| {post['pathwise'] or '-'} | {post['expectation'] or '-'} "
        f"| {_cell(post['bias'], post['noise'])} "
        f"| {_cell(post['moved_bias'], post['moved_noise'])} "
        f"| {_cell(pre['bias'], pre['noise'])} | {_cell(pre['moved_bias'], pre['moved_noise'])} |"
      )
      if post["activation"]:
        reading.append(_reading(arch["name"], post, pre))
    lines.append("")
  lines += [f"![Per-site bias in both orders]({figures[0]})", "", "**Reading.**", ""]
  lines += reading
  lines.append(
    "- Sites without an activation (after attention, after a Dense before a residual, on"
    " attention weights) have nothing to move across; their bias is what dropout costs there."
  )
  return "\n".join(lines) + "\n"


def _reading(name: str, post: dict, pre: dict) -> str:
  act = post["activation"]
  same = post["pathwise"] == "proved"
  verdict = (
    f"{act} commutes with dropout (proved), so the two orders are the same network"
    if same
    else f"{act} does not commute with dropout ({post['pathwise']} pathwise,"
    f" {post['expectation']} in expectation)"
  )
  return (
    f"- {name}, `{post['path']}`: {verdict}; the site's bias is"
    f" {_cell(post['bias'], post['noise'])} after the activation ({_seen(post)}) and"
    f" {_cell(pre['bias'], pre['noise'])} before it ({_seen(pre)})."
  )


def _seen(site: dict) -> str:
  """Whether a bias is distinguishable from 0: above twice its Monte-Carlo noise."""
  return "distinguishable from 0" if site["bias"] > 2 * site["noise"] else "not distinguishable"
