r"""Training study: what the order of dropout and activation does to a trained network.

Flax models are trained with Optax (Adam, minibatches) on several tasks (:data:`TASKS`), each
with its own architecture: an MLP on scikit-learn's digits (shipped with scikit-learn, no
download) and on MNIST-1D, a 1-D CNN with spatial dropout on MNIST-1D, a small pre-LN
Transformer (dropout inside its MLP) on modular addition, or an MLP on a user's arrays
(:func:`jdrop._src.studies.data.load_npz`). Every dropout site of a model is one of

* ``"none"``: Dense -> f,
* ``"pre"``:  Dense -> dropout -> f   (``f(D(h))``),
* ``"post"``: Dense -> f -> dropout   (``D(f(h))``),

for the activations relu, leaky_relu, tanh, sigmoid, gelu, elu, softplus and selu with
standard dropout, and selu with alpha dropout (``"selu_alpha"``), at several rates.

**How it is computed.** One activation variant is one compiled program: the whole training
loop (``lax.scan`` over steps) is ``vmap``-ed over the seeds and over the runs (order and
rate), so every seed of every order and rate trains at once. Both the rate and the order are
traced values, so they share the program: ``order`` is a boolean ``pre`` that selects where the
mask is applied,

.. math::
   u = \begin{cases} D(h) & \text{pre} \\ h & \text{post} \end{cases}, \qquad
   a = f(u), \qquad
   \text{out} = \begin{cases} a & \text{pre} \\ D(a) & \text{post,} \end{cases}

and ``"none"`` is ``pre`` at rate 0, where the mask keeps every unit and ``D`` is the identity
bit for bit. On CPU compilation dominates a study of this size, so this gives 9 programs per
task instead of 27. A task may train fewer variants or with other steps, learning rate or
batch size (:class:`TaskSettings` in ``Config.per_task``; the default trains the CNN and the
Transformer on :data:`SMALL_VARIANTS` only), always the same for both orders.

**Pairing.** Seed ``s`` fixes the initial parameters, the minibatch order and the dropout
keys, identically for every order and rate, and each block draws one mask
(:func:`jdrop.keep_mask`; for the CNN shared along the length axis) that both orders apply
(:func:`jdrop.apply_mask`). The pre-minus-post
difference of seed ``s`` therefore isolates the order, and its mean over seeds gets a paired
t-interval. relu commutes with dropout exactly in floating point (``relu(x/q) = relu(x)/q``,
and the same holds for its gradient), so for relu the two orders must end with bit-identical
parameters; the study checks it for every variant and rate.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import math
import os
import platform
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.typing import ArrayLike

from jdrop._src import activations
from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import machine
from jdrop._src import masks
from jdrop._src.studies import data as _data
from jdrop._src.studies import stats as _stats

_FN = "jdrop.studies.training"

# Variant name -> (activation in jdrop.activations, alpha dropout?).
VARIANTS: dict[str, tuple[str, bool]] = {
  "relu": ("relu", False),
  "leaky_relu": ("leaky_relu", False),
  "tanh": ("tanh", False),
  "sigmoid": ("sigmoid", False),
  "gelu": ("gelu", False),
  "elu": ("elu", False),
  "softplus": ("softplus", False),
  "selu": ("selu", False),
  "selu_alpha": ("selu", True),
}
ORDERS = ("none", "pre", "post")


class Task(NamedTuple):
  """A task of the study: the model trained on it and a line for the report."""

  model: str  # "mlp" | "cnn" | "transformer"
  about: str


# Task name -> its model and what it is. "npz" is a user's file (Config.data).
TASKS: dict[str, Task] = {
  "digits": Task("mlp", "scikit-learn's 8x8 handwritten digits, the easy baseline"),
  "mnist1d": Task(
    "mlp",
    "1-D signals generated procedurally from ten templates (Greydanus 2020), where an MLP"
    " reaches only about 68% test accuracy, so differences between the orders have room to"
    " show",
  ),
  "mnist1d_cnn": Task(
    "cnn",
    "the same MNIST-1D signals for a 1-D CNN with spatial dropout (one keep or drop per example"
    " and channel, shared along the signal), the architecture Greydanus reports 94% for",
  ),
  "modadd": Task(
    "transformer",
    "(a + b) mod p as two-token sequences, a fixed 60% of the pairs trained on and the unseen"
    " rest tested (Power et al. 2022): a small Transformer learns it from the MLP block's"
    " features (Nanda et al. 2023), so dropout in that block sits where the answer is"
    " computed, and within the step budget the test error is far from both chance and 0",
  ),
  "npz": Task("mlp", "the user's arrays (Config.data)"),
}
# The variants the default configuration trains on the CNN and Transformer tasks (every
# variant runs there in FULL): four activations that span the classes of the algebra
# (relu commutes exactly; tanh and gelu keep f(0) = 0 but do not commute; sigmoid has f(0) != 0).
SMALL_VARIANTS = ("relu", "tanh", "sigmoid", "gelu")
LEVEL = _stats.LEVEL  # the confidence level of every per-comparison interval
LOSS_TAIL = 0.1  # the reported training loss is the mean over this final fraction of steps


@dataclasses.dataclass(frozen=True)
class Config:
  """The training study's parameters.

  Attributes:
    variants: activation variants, names from :data:`VARIANTS`.
    rates: drop rates of the pre and post runs, each in (0, 1).
    seeds: how many seeds (at least 2, for an interval); seed ``i`` is ``first_seed + i``.
    first_seed: the first seed.
    hidden: widths of the hidden layers.
    steps: Adam steps per model.
    batch_size: examples per minibatch (epochs are shuffled per seed; the remainder of an
      epoch that does not fill a batch is skipped).
    learning_rate: Adam's learning rate.
    learning_rates: a grid of Adam learning rates, each trained with every order, rate and
      seed in the same program (the learning rate is a traced, vmapped value, like the rate);
      empty: ``learning_rate`` alone. Each learning rate is its own comparison in the family.
    tasks: the datasets, names from :data:`TASKS`, each trained with its model
      (:data:`TASKS`) and these hyperparameters except where ``per_task`` says otherwise;
      ``"npz"`` (only) is the file ``data``.
    data: an ``.npz`` file (see :func:`jdrop._src.studies.data.load_npz`) for the task
      ``"npz"``, else None.
    split_seed: the seed of the digits' stratified train/test split and of modular
      addition's split.
    test_fraction: the digits' held-out fraction.
    channels: the CNN's convolution channels (task ``"mnist1d_cnn"``).
    kernel_size: the CNN's kernel width.
    width: the Transformer's model width (task ``"modadd"``).
    mlp_width: the width of the Transformer's MLP, where dropout is.
    heads: the Transformer's attention heads.
    layers: the Transformer's blocks.
    modulus: ``p`` of the task ``"modadd"`` (its vocabulary and number of classes).
    per_task: task name -> :class:`TaskSettings`, the hyperparameters in which a task differs
      from the fields above (fewer variants, other steps, learning rates or batch size).
  """

  variants: tuple[str, ...] = tuple(VARIANTS)
  rates: tuple[float, ...] = (0.1, 0.3, 0.5)
  seeds: int = 8
  first_seed: int = 0
  hidden: tuple[int, ...] = (64, 64)
  steps: int = 300
  batch_size: int = 64
  learning_rate: float = 3e-3
  learning_rates: tuple[float, ...] = ()
  tasks: tuple[str, ...] = ("digits", "mnist1d", "mnist1d_cnn", "modadd")
  data: str | None = None
  split_seed: int = 0
  test_fraction: float = 0.25
  channels: tuple[int, ...] = (16, 16, 16)
  kernel_size: int = 5
  width: int = 32
  mlp_width: int = 64
  heads: int = 2
  layers: int = 1
  modulus: int = 31
  per_task: Mapping[str, TaskSettings] = dataclasses.field(
    default_factory=lambda: {
      "mnist1d_cnn": TaskSettings(variants=SMALL_VARIANTS),
      "modadd": TaskSettings(variants=SMALL_VARIANTS),
    }
  )


@dataclasses.dataclass(frozen=True)
class TaskSettings:
  """How one task's training differs from the :class:`Config`: a field that is not None
  replaces the config's (``variants`` keeps the config's variants that it names).

  Both orders and the ``none`` baseline of a task always share these values.
  """

  variants: tuple[str, ...] | None = None
  steps: int | None = None
  learning_rate: float | None = None
  learning_rates: tuple[float, ...] | None = None
  batch_size: int | None = None


# The default trains the CNN and Transformer tasks on SMALL_VARIANTS only, to keep the report
# within minutes on 2 CPU cores; FULL trains every variant on every task, longer, with more
# seeds, and a grid of learning rates on the MLP tasks (cheap there: a grid multiplies the
# runs of a program).
DEFAULT = Config()
FULL = Config(
  seeds=16,
  steps=1500,
  per_task={
    task: TaskSettings(learning_rates=(1e-3, 3e-3, 1e-2)) for task in ("digits", "mnist1d")
  },
)


def learning_rates(config: Config) -> tuple[float, ...]:
  """The learning rates a (task's) config trains: its grid, else its one learning rate."""
  return tuple(config.learning_rates) or (config.learning_rate,)


def task_config(config: Config, task: str) -> Config:
  """``config`` as it trains ``task``: with the fields that ``config.per_task[task]`` sets."""
  settings = config.per_task.get(task)
  if settings is None:
    return config
  changes = {
    f.name: getattr(settings, f.name)
    for f in dataclasses.fields(settings)
    if getattr(settings, f.name) is not None
  }
  if "variants" in changes:
    changes["variants"] = tuple(v for v in config.variants if v in changes["variants"])
  return dataclasses.replace(config, **changes)


# ----------------------------------------------------------------------------
# The model and one training run.


def hidden_block(
  key: jax.Array,
  h: jax.Array,
  f: Callable[[jax.Array], jax.Array],
  *,
  rate: ArrayLike,
  pre: bool | ArrayLike,
  alpha: bool = False,
  broadcast_dims: Sequence[int] = (),
) -> jax.Array:
  r"""``f(D(h))`` if ``pre`` else ``D(f(h))``, with one mask drawn from ``key`` for both.

  ``pre`` may be traced (a vmapped batch of orders); ``f`` is evaluated once either way. With
  ``alpha`` the dropout is :func:`jdrop.alpha_dropout`, which draws the same mask from the same
  key in both places; otherwise :func:`jdrop.keep_mask` draws it once and
  :func:`jdrop.apply_mask` applies it. At rate 0 every unit is kept and the result is ``f(h)``.
  The mask is shared along ``broadcast_dims`` (size 1 there): e.g. ``(1,)`` for a convolution's
  ``(batch, length, channels)`` output is spatial dropout, one draw per example and channel.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> h = jnp.linspace(-2.0, 2.0, 8)
    >>> pre = hidden_block(jax.random.key(0), h, jax.nn.relu, rate=0.5, pre=True)
    >>> post = hidden_block(jax.random.key(0), h, jax.nn.relu, rate=0.5, pre=False)
    >>> bool((pre == post).all())
    True
  """
  if alpha:
    drop = functools.partial(
      _dropout.alpha_dropout, key, rate=rate, broadcast_dims=tuple(broadcast_dims)
    )
  else:
    mask = masks.keep_mask(key, mask_shape(h.shape, broadcast_dims), rate=rate)
    drop = lambda y: _dropout.apply_mask(y, mask, rate=rate)
  a = f(jnp.where(pre, drop(h), h))
  return jnp.where(pre, a, drop(a))


def mask_shape(shape: Sequence[int], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
  """``shape`` with 1 along ``broadcast_dims``: the shape of a mask shared along those axes."""
  shared = {d % len(shape) for d in broadcast_dims}
  return tuple(1 if i in shared else n for i, n in enumerate(shape))


class MLP(nn.Module):
  """Hidden blocks (:func:`hidden_block`) of ``hidden`` widths, then a Dense readout.

  Called without a key it evaluates (no dropout); with one, block ``i`` draws its mask from
  ``fold_in(key, i)``.

  Attributes:
    hidden: the hidden layers' widths.
    num_classes: the readout's width.
    activation: a name from :mod:`jdrop.activations`.
    alpha: use alpha dropout (for selu) instead of inverted dropout.
  """

  hidden: tuple[int, ...]
  num_classes: int
  activation: str
  alpha: bool = False

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    rate: ArrayLike = 0.0,
    pre: bool | ArrayLike = True,
  ) -> jax.Array:
    """Logits for the rows of ``x``; dropout (``rate``, order ``pre``) only if ``key`` is given."""
    f = activations.get(self.activation)
    for i, width in enumerate(self.hidden):
      h = nn.Dense(width)(x)
      if key is None:
        x = f(h)
      else:
        x = hidden_block(jax.random.fold_in(key, i), h, f, rate=rate, pre=pre, alpha=self.alpha)
    return nn.Dense(self.num_classes)(x)


def patches(x: jax.Array, size: int, *, stride: int) -> jax.Array:
  """The windows of a ``SAME``-padded 1-D convolution: ``(..., length, channels)`` to
  ``(..., ceil(length / stride), size * channels)``, so that a Dense layer on them is the
  convolution.

  Written as strided slices, so that under ``vmap`` over models the convolution is a batched
  matrix product: a vmapped ``lax.conv`` becomes a grouped convolution, which XLA runs about
  ten times slower on CPU.
  """
  length = x.shape[-2]
  out = -(-length // stride)
  pad = max((out - 1) * stride + size - length, 0)
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(pad // 2, pad - pad // 2), (0, 0)])
  windows = [x[..., j : j + (out - 1) * stride + 1 : stride, :] for j in range(size)]
  return jnp.concatenate(windows, axis=-1)


class CNN(nn.Module):
  """1-D convolutions over the length axis (:func:`hidden_block` with spatial dropout), then a
  Dense readout of the flattened features.

  Input rows ``(batch, length)`` are one-channel signals. Each convolution has stride 2 and
  ``SAME`` padding (a Dense layer on :func:`patches`); its dropout mask is shared along the
  length axis (one keep or drop per example and channel, Tompson et al. 2015), drawn from
  ``fold_in(key, i)`` for block ``i``.

  Attributes:
    channels: the convolutions' output channels.
    kernel_size: the convolutions' width.
    num_classes: the readout's width.
    activation: a name from :mod:`jdrop.activations`.
    alpha: use alpha dropout (for selu) instead of inverted dropout.
  """

  channels: tuple[int, ...]
  kernel_size: int
  num_classes: int
  activation: str
  alpha: bool = False

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    *,
    key: jax.Array | None = None,
    rate: ArrayLike = 0.0,
    pre: bool | ArrayLike = True,
  ) -> jax.Array:
    """Logits for the signals ``x``; dropout (``rate``, order ``pre``) only if ``key`` is given."""
    f = activations.get(self.activation)
    x = x[..., None]
    for i, width in enumerate(self.channels):
      h = nn.Dense(width)(patches(x, self.kernel_size, stride=2))
      if key is None:
        x = f(h)
      else:
        k = jax.random.fold_in(key, i)
        x = hidden_block(k, h, f, rate=rate, pre=pre, alpha=self.alpha, broadcast_dims=(-2,))
    return nn.Dense(self.num_classes)(x.reshape(*x.shape[:-2], -1))


class Transformer(nn.Module):
  """Pre-LN Transformer blocks over token sequences, then mean pooling and a Dense readout.

  Each block is ``x + Attention(LN(x))`` then ``x + Dense(MLP(LN(x)))`` where the MLP is
  ``Dense(mlp_width)`` followed by :func:`hidden_block` (the activation with dropout before or
  after it, block ``i``'s mask drawn from ``fold_in(key, i)``). Attention and the residual
  stream have no dropout, so the order inside the MLP is the only difference between runs.
  Tokens get a learned embedding plus a learned position embedding.

  Attributes:
    vocab: the number of distinct tokens.
    width: the model (residual stream) width.
    mlp_width: the MLP's hidden width.
    heads: attention heads per block.
    layers: the number of blocks.
    num_classes: the readout's width.
    activation: a name from :mod:`jdrop.activations`.
    alpha: use alpha dropout (for selu) instead of inverted dropout.
  """

  vocab: int
  width: int
  mlp_width: int
  heads: int
  layers: int
  num_classes: int
  activation: str
  alpha: bool = False

  @nn.compact
  def __call__(
    self,
    tokens: jax.Array,
    *,
    key: jax.Array | None = None,
    rate: ArrayLike = 0.0,
    pre: bool | ArrayLike = True,
  ) -> jax.Array:
    """Logits for the token rows; dropout (``rate``, order ``pre``) only if ``key`` is given."""
    f = activations.get(self.activation)
    position = self.param("position", nn.initializers.normal(0.02), (tokens.shape[-1], self.width))
    x = nn.Embed(self.vocab, self.width)(tokens) + position
    for i in range(self.layers):
      attention = nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=True)
      x = x + attention(nn.LayerNorm()(x))
      h = nn.Dense(self.mlp_width)(nn.LayerNorm()(x))
      if key is None:
        h = f(h)
      else:
        h = hidden_block(jax.random.fold_in(key, i), h, f, rate=rate, pre=pre, alpha=self.alpha)
      x = x + nn.Dense(self.width)(h)
    return nn.Dense(self.num_classes)(nn.LayerNorm()(x).mean(axis=-2))


class Trained(NamedTuple):
  """What one training run returns (with leading axes under ``vmap``)."""

  params: Any
  test_error: jax.Array  # the fraction of test examples misclassified by the final parameters
  loss: jax.Array  # the mean minibatch loss (dropout on) over the last LOSS_TAIL of the steps


def batch_indices(key: jax.Array, n: int, steps: int, batch_size: int) -> jax.Array:
  """Minibatch indices ``(steps, batch_size)``: epochs of ``n // batch_size`` shuffled batches."""
  per_epoch = n // batch_size
  epochs = -(-steps // per_epoch)
  keys = jax.random.split(key, epochs)
  order = jax.vmap(lambda k: jax.random.permutation(k, n)[: per_epoch * batch_size])(keys)
  return order.reshape(-1, batch_size)[:steps]


def build_model(task: str, variant: str, config: Config, num_classes: int) -> nn.Module:
  """The model of ``task`` (:data:`TASKS`) for ``variant``: an :class:`MLP`, a :class:`CNN` or
  a :class:`Transformer`, shaped by ``config``."""
  activation, alpha = VARIANTS[variant]
  kind = TASKS[task].model
  if kind == "cnn":
    return CNN(config.channels, config.kernel_size, num_classes, activation, alpha)
  if kind == "transformer":
    return Transformer(
      vocab=config.modulus,
      width=config.width,
      mlp_width=config.mlp_width,
      heads=config.heads,
      layers=config.layers,
      num_classes=num_classes,
      activation=activation,
      alpha=alpha,
    )
  return MLP(hidden=config.hidden, num_classes=num_classes, activation=activation, alpha=alpha)


def trainer(
  variant: str, config: Config, num_classes: int, *, task: str | None = None
) -> Callable[..., Trained]:
  """The pure function that trains one model of ``variant`` on ``task`` (default the config's
  first): ``train(key, rate, pre, x_train, y_train, x_test, y_test, learning_rate=None) ->
  Trained``.

  The model comes from the task (:func:`build_model`), the optimiser (Adam) from
  ``task_config(config, task)`` (``steps``, ``batch_size``, ``learning_rate``); a
  ``learning_rate`` argument, which may be traced, replaces the config's. ``key`` (one
  seed) is split into the initialisation key, the minibatch-order key and the dropout key;
  step ``t`` draws its masks from ``fold_in(dropout_key, t)``. ``rate`` and ``pre`` may be
  traced. ``jax.vmap`` it over keys for seeds and over ``(rate, pre)`` for runs; ``jax.jit``
  it for one model.
  """
  task = config.tasks[0] if task is None else task
  config = task_config(config, task)
  model = build_model(task, variant, config, num_classes)
  adam = optax.scale_by_adam()  # optax.adam is this, then a scaling by -learning_rate
  steps, batch_size = config.steps, config.batch_size
  tail = max(1, round(LOSS_TAIL * steps))

  def train(
    key: jax.Array,
    rate: ArrayLike,
    pre: ArrayLike,
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    learning_rate: ArrayLike | None = None,
  ) -> Trained:
    lr = config.learning_rate if learning_rate is None else learning_rate
    init_key, data_key, dropout_key = jax.random.split(key, 3)
    params = model.init(init_key, x_train[:1])
    batches = batch_indices(data_key, x_train.shape[0], steps, batch_size)

    def loss_fn(params: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> jax.Array:
      logits = model.apply(params, x, key=key, rate=rate, pre=pre)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    def step(state: tuple[Any, Any], inputs: tuple[jax.Array, jax.Array]):
      params, opt_state = state
      t, idx = inputs
      step_key = jax.random.fold_in(dropout_key, t)
      loss, grads = jax.value_and_grad(loss_fn)(params, x_train[idx], y_train[idx], step_key)
      updates, opt_state = adam.update(grads, opt_state, params)
      updates = jax.tree.map(lambda u: -lr * u, updates)
      return (optax.apply_updates(params, updates), opt_state), loss

    state = (params, adam.init(params))
    (params, _), losses = lax.scan(step, state, (jnp.arange(steps), batches))
    wrong = jnp.argmax(model.apply(params, x_test), axis=-1) != y_test
    return Trained(params, wrong.mean(), losses[-tail:].mean())

  return train


def compiler_options(model: str = "mlp") -> dict[str, Any]:
  """XLA options for the study's programs: LLVM at -O1 on CPU, except for the CNN.

  On CPU nearly all of a default-size study's time is compilation, and most of that is
  LLVM's -O2 pipeline: at -O1 an MLP's or a Transformer's training program compiles 2 to 4
  times faster and runs about as fast (measured on a 2-core Xeon and a 2-core EPYC). The
  CNN's program (``model="cnn"``) runs 1.6 times faster at -O2 (12.3 s against 7.7 s for the
  default's relu program, compiling in 4.5 s against 9.5 s), so it keeps -O2: the same total
  for the default, minutes saved for the full study. Other backends keep their defaults.
  """
  if jax.default_backend() != "cpu" or model == "cnn":
    return {}
  return {"xla_backend_optimization_level": 1}


def study_program(
  variant: str, config: Config, num_classes: int, *, task: str | None = None
) -> Callable[..., Trained]:
  """``train`` (:func:`trainer`) vmapped over seeds (keys) and over runs (``rate``, ``pre``),
  jitted once.

  Call it as ``program(keys, rates, pres, x_train, y_train, x_test, y_test, lrs=None)`` with
  ``keys`` of shape ``(seeds,)`` and ``rates``, ``pres`` (and ``lrs``, learning rates) of shape
  ``(runs,)``; outputs have leading axes ``(runs, seeds)``.
  """
  train = trainer(variant, config, num_classes, task=task)
  data_axes = (None, None, None, None)

  def program(
    keys: jax.Array,
    rates: jax.Array,
    pres: jax.Array,
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    lrs: jax.Array | None = None,
  ) -> Trained:
    over_seeds = jax.vmap(train, in_axes=(0, None, None, *data_axes, None))
    lr_axis = None if lrs is None else 0
    over_runs = jax.vmap(over_seeds, in_axes=(None, 0, 0, *data_axes, lr_axis))
    return over_runs(keys, rates, pres, x_train, y_train, x_test, y_test, lrs)

  model = TASKS[config.tasks[0] if task is None else task].model
  return jax.jit(program, compiler_options=compiler_options(model))


# The statistics live in studies/stats.py; these names stay here for the study's users.
Interval = _stats.Interval
t_interval = _stats.t_interval


# ----------------------------------------------------------------------------
# The study.


def runs(config: Config) -> list[tuple[str, float]]:
  """The ``(order, rate)`` of each run of one program: none at rate 0, then pre, then post."""
  return [("none", 0.0)] + [(o, r) for o in ("pre", "post") for r in config.rates]


def check_config(config: Config) -> Config:
  """Returns ``config`` if every field is usable, else raises a ValueError or TypeError."""
  fn = f"{_FN}.run"
  if not isinstance(config, Config):
    raise errors.type_error(
      fn, "config", "must be a training Config", errors.short(config), "Pass e.g. DEFAULT."
    )
  unknown = [v for v in config.variants if v not in VARIANTS]
  if unknown or not config.variants:
    raise errors.value_error(
      fn,
      "config.variants",
      f"must be a non-empty tuple of {', '.join(VARIANTS)}",
      config.variants,
      "Use names from jdrop._src.studies.training.VARIANTS.",
    )
  rates = config.rates
  if not rates or len(set(rates)) < len(rates) or not all(0.0 < float(r) < 1.0 for r in rates):
    raise errors.value_error(
      fn,
      "config.rates",
      "must be a non-empty tuple of distinct drop rates in (0, 1)",
      config.rates,
      "Use e.g. rates=(0.1, 0.3, 0.5); the no-dropout run is always included.",
    )
  counts = {"seeds": 2, "first_seed": 0, "steps": 1, "batch_size": 1, "kernel_size": 1}
  counts |= {"width": 1, "mlp_width": 1, "heads": 1, "layers": 1, "modulus": 2}
  for name, low in counts.items():
    _check_int(fn, f"config.{name}", getattr(config, name), low, DEFAULT_VALUES[name])
  for name in ("hidden", "channels"):
    widths = getattr(config, name)
    if not widths or not all(_is_int(w) and w >= 1 for w in widths):
      raise errors.value_error(
        fn,
        f"config.{name}",
        "must be a non-empty tuple of positive widths",
        widths,
        f"Use e.g. {name}={DEFAULT_VALUES[name]}.",
      )
  if config.width % config.heads:
    raise errors.value_error(
      fn,
      "config.heads",
      f"must divide config.width ({config.width})",
      config.heads,
      "Use e.g. width=32, heads=2.",
    )
  tasks = config.tasks
  if not tasks or len(set(tasks)) < len(tasks) or any(t not in TASKS for t in tasks):
    raise errors.value_error(
      fn,
      "config.tasks",
      f"must be a non-empty tuple of distinct names from {', '.join(TASKS)}",
      config.tasks,
      'Use e.g. tasks=("digits", "mnist1d").',
    )
  if ("npz" in tasks) != (config.data is not None):
    raise errors.value_error(
      fn,
      "config.tasks",
      'must hold "npz" exactly when config.data names a file',
      config.tasks,
      "Use with_data(config, path), which sets both.",
    )
  if not config.learning_rate > 0:
    raise errors.value_error(
      fn, "config.learning_rate", "must be positive", config.learning_rate, "Use e.g. 3e-3."
    )
  _check_learning_rates(fn, "config.learning_rates", config.learning_rates)
  _check_per_task(fn, config)
  return config


def _check_learning_rates(fn: str, arg: str, values: Any) -> None:
  """A grid of learning rates must be a tuple of distinct positive numbers (or empty)."""
  ok = isinstance(values, tuple) and len(set(values)) == len(values)
  if not ok or not all(_is_number(v) and v > 0 for v in values):
    raise errors.value_error(
      fn,
      arg,
      "must be a tuple of distinct positive learning rates",
      values,
      "Use e.g. (1e-3, 3e-3, 1e-2), or () for the single learning_rate.",
    )


def _is_number(value: Any) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


DEFAULT_VALUES = {f.name: getattr(Config(), f.name) for f in dataclasses.fields(Config)}


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_int(fn: str, arg: str, value: Any, low: int, example: Any) -> None:
  if not _is_int(value) or value < low:
    name = arg.rsplit(".", 1)[-1]
    raise errors.value_error(
      fn, arg, f"must be an int >= {low}", value, f"Use e.g. {name}={example}."
    )


def _check_per_task(fn: str, config: Config) -> None:
  """Raises a ValueError or TypeError for a bad ``config.per_task``."""
  if not isinstance(config.per_task, Mapping):
    raise errors.type_error(
      fn,
      "config.per_task",
      "must be a dict of task names to TaskSettings",
      errors.short(config.per_task),
      "Use e.g. per_task={'modadd': TaskSettings(steps=500)}.",
    )
  for task, settings in config.per_task.items():
    if task not in TASKS:
      raise errors.value_error(
        fn,
        "config.per_task",
        f"must have task names from {', '.join(TASKS)} as keys",
        task,
        "Use the names of jdrop._src.studies.training.TASKS.",
      )
    where = f"config.per_task[{task!r}]"
    if not isinstance(settings, TaskSettings):
      raise errors.type_error(
        fn, where, "must be a TaskSettings", errors.short(settings), "Use TaskSettings(...)."
      )
    variants = settings.variants
    if variants is not None and (
      any(v not in VARIANTS for v in variants)
      or (task in config.tasks and not set(variants) & set(config.variants))
    ):
      raise errors.value_error(
        fn,
        f"{where}.variants",
        f"must name variants of config.variants ({', '.join(config.variants)})",
        variants,
        "Use None for all of them, or a subset such as ('relu', 'tanh').",
      )
    for name in ("steps", "batch_size"):
      if getattr(settings, name) is not None:
        _check_int(fn, f"{where}.{name}", getattr(settings, name), 1, DEFAULT_VALUES[name])
    if settings.learning_rates is not None:
      _check_learning_rates(fn, f"{where}.learning_rates", settings.learning_rates)
    if settings.learning_rate is not None and not settings.learning_rate > 0:
      raise errors.value_error(
        fn, f"{where}.learning_rate", "must be positive", settings.learning_rate, "Use e.g. 3e-3."
      )


def with_data(config: Config, path: str | os.PathLike[str]) -> Config:
  """``config`` training on the ``.npz`` file ``path`` only (the task ``"npz"``), which is
  read and checked now.

  Raises the ValueError of :func:`jdrop._src.studies.data.load_npz` for a file that cannot be
  read or holds a mis-shaped array, before anything is trained.
  """
  _data.load_npz(path)
  return dataclasses.replace(config, data=os.fspath(path), tasks=("npz",))


def load(config: Config, task: str | None = None) -> _data.Dataset:
  """The dataset of ``task`` (default the config's first): the digits (split by
  ``split_seed`` and ``test_fraction``), MNIST-1D (for the MLP or the CNN), modular addition
  (``modulus``, split by ``split_seed``), or the ``.npz`` file ``config.data``."""
  task = config.tasks[0] if task is None else task
  if task == "npz":
    if config.data is None:
      raise errors.value_error(
        f"{_FN}.load", "config.data", "must name a file for the task 'npz'", None, "Use with_data."
      )
    return _data.load_npz(config.data)
  if task == "mnist1d":
    return _mnist1d()
  if task == "mnist1d_cnn":
    return dataclasses.replace(_mnist1d(), name="MNIST-1D (CNN)")
  if task == "modadd":
    return _data.load_modadd(modulus=config.modulus, seed=config.split_seed)
  if task not in TASKS:
    raise errors.value_error(
      f"{_FN}.load", "task", f"must be a name from {', '.join(TASKS)}", task, "Use e.g. 'digits'."
    )
  return _data.load_digits(seed=config.split_seed, test_fraction=config.test_fraction)


@functools.lru_cache(maxsize=1)
def _mnist1d() -> _data.Dataset:
  """MNIST-1D, generated once for both of its tasks (a few seconds of NumPy); never mutated."""
  return _data.load_mnist1d()


def run(config: Config = DEFAULT, *, progress: Callable[[int, int, str], None] | None = None):
  """Trains every task, variant, order, rate and seed of ``config`` and summarises the test
  errors.

  Returns a JSON-serialisable dict: ``config``, ``tasks``, ``task_configs`` (per task: its
  model, variants, steps, learning rate and batch size), ``data`` (sizes), ``seeds``, ``runs``
  (test error and final training loss per seed of every task, variant, order and rate),
  ``summary`` (per task, variant and rate: the mean test error of none, pre and post with 95%
  t-intervals, and the paired pre-minus-post difference with its interval), ``replication``,
  ``identity`` (per task, variant and rate: the largest absolute difference between the final
  parameters of pre and post, and whether they are bit-identical), ``timing`` and ``meta``
  (versions, machine, date).

  Args:
    config: the study's parameters.
    progress: called as ``progress(done, total, "task/variant")`` after each program.
  """
  start = time.perf_counter()
  config = check_config(config)
  configs = {task: task_config(config, task) for task in config.tasks}
  datasets = {task: load(config, task) for task in config.tasks}
  for task, data in datasets.items():
    if configs[task].batch_size > len(data.x_train):
      raise errors.value_error(
        f"{_FN}.run",
        "config.batch_size",
        f"must be at most the number of training examples of {task} ({len(data.x_train)})",
        configs[task].batch_size,
        "Use a smaller batch_size.",
      )
  seeds = [config.first_seed + i for i in range(config.seeds)]
  keys = jnp.stack([jax.random.key(s) for s in seeds])
  records, identity, compile_s, run_s = [], [], {}, {}
  total, done = sum(len(c.variants) for c in configs.values()), 0
  models = 0

  for task, data in datasets.items():
    # One program's runs: every (order, rate) of runs() at each learning rate of the task.
    plan = [(o, r, lr) for lr in learning_rates(configs[task]) for o, r in runs(config)]
    rates = jnp.asarray([r for _, r, _ in plan], jnp.float32)
    pres = jnp.asarray([o != "post" for o, _, _ in plan])
    lrs = jnp.asarray([lr for _, _, lr in plan], jnp.float32)
    arrays = [jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test, data.y_test)]
    for variant in configs[task].variants:
      t0 = time.perf_counter()
      program = study_program(variant, config, data.num_classes, task=task)
      compiled = program.lower(keys, rates, pres, *arrays, lrs).compile()
      t1 = time.perf_counter()
      out = jax.block_until_ready(compiled(keys, rates, pres, *arrays, lrs))
      name = f"{task}/{variant}"
      compile_s[name], run_s[name] = t1 - t0, time.perf_counter() - t1
      models += len(plan) * len(seeds)
      errors_, losses = np.asarray(out.test_error), np.asarray(out.loss)
      for i, (order, rate, lr) in enumerate(plan):
        records.append(
          {
            "task": task,
            "variant": variant,
            "order": order,
            "rate": rate,
            "learning_rate": lr,
            "test_error": [float(e) for e in errors_[i]],
            "loss": [float(v) for v in losses[i]],
          }
        )
      identity.extend(dict(row, task=task) for row in _identity(variant, out.params, plan))
      done += 1
      if progress is not None:
        progress(done, total, name)
  summary = summarize(records)
  return {
    "study": "training",
    "config": dataclasses.asdict(config),
    "tasks": list(config.tasks),
    "task_configs": {task: _task_description(task, c) for task, c in configs.items()},
    "data": {task: d.describe() for task, d in datasets.items()},
    "seeds": seeds,
    "runs": records,
    "summary": summary,
    "family": family(summary),
    "replication": replication(summary),
    "identity": identity,
    "timing": {
      "wall_s": time.perf_counter() - start,
      "compile_s": compile_s,
      "run_s": run_s,
      "programs": total,
      "models": models,
    },
    "meta": metadata(),
  }


def _task_description(task: str, config: Config) -> dict[str, Any]:
  """What trains on ``task`` (``config`` already :func:`task_config`-ed), for the results."""
  kind = TASKS[task].model
  shape: dict[str, Any] = {
    "mlp": {"hidden": list(config.hidden)},
    "cnn": {"channels": list(config.channels), "kernel_size": config.kernel_size},
    "transformer": {
      "width": config.width,
      "mlp_width": config.mlp_width,
      "heads": config.heads,
      "layers": config.layers,
    },
  }[kind]
  return {
    "model": kind,
    **shape,
    "variants": list(config.variants),
    "steps": config.steps,
    "learning_rate": config.learning_rate,
    "learning_rates": list(learning_rates(config)),
    "batch_size": config.batch_size,
  }


def _identity(variant: str, params: Any, plan: Sequence[tuple[str, float, float]]) -> list[dict]:
  """Per rate and learning rate: max |pre - post| over every parameter of every seed, and
  bit-identity."""
  leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(params)]
  rows = []
  for i, (order, rate, lr) in enumerate(plan):
    if order != "pre":
      continue
    j = plan.index(("post", rate, lr))
    rows.append(
      {
        "variant": variant,
        "rate": rate,
        "learning_rate": lr,
        "max_abs_diff": max(float(np.abs(leaf[i] - leaf[j]).max()) for leaf in leaves),
        "bit_identical": all(np.array_equal(leaf[i], leaf[j]) for leaf in leaves),
      }
    )
  return rows


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per task, variant, learning rate and rate: intervals of the test error of none, pre and
  post (none at the same learning rate), and the paired comparison of pre - post.

  ``records`` are the ``runs`` of :func:`run`; seeds are paired by position. The family of the
  Holm correction is every row, over all tasks. ``pre_minus_post``
  holds the mean difference with its t-interval, ``dz``, the raw p-values of the paired t-test
  and of the sign-flip permutation test, their Holm adjustments over every row (the family),
  ``significant`` (the adjusted t-test below :data:`jdrop._src.studies.stats.ALPHA`) and the
  family-wise (Bonferroni) interval: see :func:`jdrop._src.studies.stats.adjust`.
  """
  by_key = {
    (r.get("task", ""), r["variant"], r.get("learning_rate"), r["order"], r["rate"]): np.asarray(
      r["test_error"]
    )
    for r in records
  }
  rows, differences = [], []
  for (task, variant, lr, order, rate), pre in by_key.items():
    if order != "pre":
      continue
    none = by_key[(task, variant, lr, "none", 0.0)]
    post = by_key[(task, variant, lr, "post", rate)]
    differences.append(pre - post)
    rows.append(
      {
        "task": task,
        "variant": variant,
        "rate": rate,
        "learning_rate": lr,
        "none": t_interval(none).as_dict(),
        "pre": t_interval(pre).as_dict(),
        "post": t_interval(post).as_dict(),
        "pre_minus_post": _stats.paired(pre - post),
      }
    )
  _stats.adjust([row["pre_minus_post"] for row in rows], differences)
  return rows


def replication(summary: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per variant, rate and learning rate: the pre - post comparison on each task, and whether
  it replicates.

  Each row has ``tasks`` (task -> mean difference, Holm-adjusted p-value and ``significant``),
  ``signs_agree`` (every task's mean difference has the same sign, none 0), ``significant_in``
  (the tasks where the corrected test rejects) and ``verdict``: ``"everywhere"`` (significant,
  with one sign, on every task), ``"somewhere"`` (significant on some tasks only, or with
  opposite signs) or ``"nowhere"``. A task that did not train the variant has no entry in
  ``tasks`` (never a 0), and "every task" means every task where it was trained.
  """
  cells: dict[tuple[str, float, float | None], dict[str, dict[str, Any]]] = {}
  for row in summary:
    d = row["pre_minus_post"]
    key = (row["variant"], row["rate"], row.get("learning_rate"))
    cells.setdefault(key, {})[row.get("task", "")] = {
      "mean": d["mean"],
      "p_t_holm": d["p_t_holm"],
      "significant": d["significant"],
    }
  rows = []
  for (variant, rate, lr), tasks in cells.items():
    signs = {int(np.sign(cell["mean"])) for cell in tasks.values()}
    significant = [task for task, cell in tasks.items() if cell["significant"]]
    found = {int(np.sign(tasks[t]["mean"])) for t in significant}
    if significant and len(significant) == len(tasks) and len(found) == 1:
      verdict = "everywhere"
    else:
      verdict = "somewhere" if significant else "nowhere"
    rows.append(
      {
        "variant": variant,
        "rate": rate,
        "learning_rate": lr,
        "tasks": tasks,
        "signs_agree": len(signs) == 1 and 0 not in signs,
        "significant_in": significant,
        "verdict": verdict,
      }
    )
  return rows


def family(summary: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """How the study's conclusions are corrected: the family's size, test and level."""
  return {
    "size": len(summary),
    "alpha": _stats.ALPHA,
    "method": "holm",
    "test": "paired t-test of the per-seed pre - post test error",
    "check": "sign-flip permutation test (exact up to 16 seeds)",
  }


def metadata() -> dict[str, Any]:
  """Versions, machine and date, for a results file."""
  import flax
  import jaxlib
  import scipy

  import jdrop

  versions = {
    "python": platform.python_version(),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
    "flax": flax.__version__,
    "optax": optax.__version__,
    "numpy": np.__version__,
    "scipy": scipy.__version__,
    "jdrop": jdrop.__version__,
  }
  try:
    import sklearn

    versions["scikit-learn"] = sklearn.__version__
  except ImportError:
    pass
  device = jax.devices()[0]
  return {
    "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "versions": versions,
    "backend": device.platform,
    "device": device.device_kind,
    "processor": processor(),
    "cpu_count": os.cpu_count(),
    "uname": " ".join(platform.uname()),
    "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg())
    if hasattr(os, "getloadavg")
    else "n/a",
    "compiler_options": {model: compiler_options(model) for model in ("mlp", "cnn", "transformer")},
  }


def processor() -> str:
  """The CPU's model name (:func:`jdrop._src.machine.processor`)."""
  return machine.processor()


# ----------------------------------------------------------------------------
# Figures and the report's section.


def _label(variant: str) -> str:
  return "selu (alpha)" if variant == "selu_alpha" else variant


def figures(results: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[str]:
  """Writes the test-error and pre-minus-post figures into ``out_dir``; returns their names.

  The test-error figure has a row of panels per task (one panel per rate), the difference
  figure one panel per task (two per row). A variant that a task does not train has no marker
  there.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  summary = _one_learning_rate(results)
  tasks = list(dict.fromkeys(row["task"] for row in summary))
  variants = list(dict.fromkeys(row["variant"] for row in summary))
  rates = list(dict.fromkeys(row["rate"] for row in summary))
  cell = {(row["task"], row["variant"], row["rate"]): row for row in summary}
  x = np.arange(len(variants))
  names = []

  def whisker(iv: Sequence[dict[str, float] | None]) -> tuple[np.ndarray, np.ndarray]:
    # A variant that the task does not train is NaN: no marker, not a fake 0.
    nan = {"mean": np.nan, "low": np.nan, "high": np.nan}
    iv = [nan if i is None else i for i in iv]
    mean = np.array([i["mean"] for i in iv]) * 100
    return mean, np.array([[i["mean"] - i["low"], i["high"] - i["mean"]] for i in iv]).T * 100

  def at(task: str, variant: str, rate: float, what: str) -> dict[str, float] | None:
    row = cell.get((task, variant, rate))
    return None if row is None else row[what]

  fig, axes = plt.subplots(
    len(tasks), len(rates), figsize=(4.2 * len(rates), 3.8 * len(tasks)), squeeze=False
  )
  for row_axes, task in zip(axes, tasks, strict=True):
    for ax, rate in zip(row_axes, rates, strict=True):
      for k, (order, color) in enumerate(zip(ORDERS, ("0.5", "C0", "C3"), strict=True)):
        mean, err = whisker([at(task, v, rate, order) for v in variants])
        ax.errorbar(
          x + (k - 1) * 0.22, mean, yerr=err, fmt="o", ms=4, capsize=2, color=color, label=order
        )
      ax.set_title(f"{results['data'][task]['name']}, rate {rate:g}")
      ax.set_xticks(x, [_label(v) for v in variants], rotation=60, ha="right")
      ax.grid(axis="y", alpha=0.3)
    row_axes[0].set_ylabel(f"test error (%), mean and {LEVEL:.0%} CI")
  axes[0][0].legend(title="dropout")
  grid = (
    " (a task with a grid of learning rates: at the config's)"
    if len(summary) < len(results["summary"])
    else ""
  )
  fig.suptitle(f"Test error by order ({len(results['seeds'])} seeds){grid}")
  fig.tight_layout()
  names.append("training-error.png")
  fig.savefig(os.path.join(out_dir, names[-1]), dpi=100)
  plt.close(fig)

  cols = min(2, len(tasks))
  rows = -(-len(tasks) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 3.8 * rows), squeeze=False)
  for ax in axes.flat[len(tasks) :]:
    ax.set_visible(False)
  width = 0.8 / len(rates)
  for ax, task in zip(axes.flat, tasks, strict=False):
    for k, rate in enumerate(rates):
      mean, err = whisker([at(task, v, rate, "pre_minus_post") for v in variants])
      offset = (k - (len(rates) - 1) / 2) * width
      ax.errorbar(x + offset, mean, yerr=err, fmt="o", ms=4, capsize=2, label=f"rate {rate:g}")
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_xticks(x, [_label(v) for v in variants], rotation=60, ha="right")
    ax.set_title(f"{results['data'][task]['name']}: pre minus post")
    ax.grid(axis="y", alpha=0.3)
  for row_axes in axes:
    row_axes[0].set_ylabel(f"pre - post test error (points), {LEVEL:.0%} CI")
  axes[0][0].legend()
  fig.tight_layout()
  names.append("training-difference.png")
  fig.savefig(os.path.join(out_dir, names[-1]), dpi=100)
  plt.close(fig)
  return names


def _one_learning_rate(results: dict[str, Any]) -> list[dict[str, Any]]:
  """The summary's rows at one learning rate per task, for the figures: the config's
  ``learning_rate`` where the task trained it, else the task's first."""
  seen: dict[str, list[Any]] = {}
  for row in results["summary"]:
    lrs = seen.setdefault(row["task"], [])
    if row.get("learning_rate") not in lrs:
      lrs.append(row.get("learning_rate"))
  base = results["config"]["learning_rate"]
  pick = {task: base if base in lrs else lrs[0] for task, lrs in seen.items()}
  return [row for row in results["summary"] if row.get("learning_rate") == pick[row["task"]]]


def _pct(interval: dict[str, float], *, signed: bool = False) -> str:
  sign = "+" if signed else ""
  return (
    f"{interval['mean'] * 100:{sign}.2f} [{interval['low'] * 100:{sign}.2f},"
    f" {interval['high'] * 100:{sign}.2f}]"
  )


def section(results: dict[str, Any], figures: Sequence[str]) -> str:
  """The study's Markdown section: setup, the table, the replication table, relu's
  bit-identity, the corrected findings, the figures."""
  data, timing = results["data"], results["timing"]
  seeds = results["seeds"]
  m = len(results["summary"])
  lines = [
    "## 2. Training: dropout before or after the activation in trained networks",
    "",
    f"Each task trains its own model with Adam, the same model and hyperparameters for every"
    f" order and for the no-dropout baseline ({len(data)} task{'s' if len(data) > 1 else ''}):",
    "",
    *[f"- {_task_line(task, results)}" for task in data],
    "",
    f"{len(seeds)} seeds ({seeds[0]}..{seeds[-1]}) per configuration. A seed fixes the initial"
    " parameters, the minibatch order and the dropout masks, the same for every order, so pre"
    f" and post are paired. Test error in %, mean over seeds with its {LEVEL:.0%} t-interval;"
    " pre − post is the mean of the per-seed differences (percentage points) with its paired"
    f" interval and its family-wise interval (Bonferroni, level 1 − {_stats.ALPHA:g}/m), then"
    " the two-sided p-values of the paired t-test and of the sign-flip permutation test, raw"
    f" and Holm-adjusted over the family of all m = {m} comparisons (every task, activation and"
    f" rate). All {timing['models']} models trained in {timing['programs']} compiled programs"
    " (one per task and variant; seeds, orders and rates vmapped) in"
    f" {timing['wall_s']:.0f} s.",
    "",
  ]
  size = _size_note(results)
  if size:
    lines += [size, ""]
  several = _several_lrs(results["summary"])
  lines += [
    f"| task | activation | rate |{' lr |' if several else ''} none | pre | post"
    " | pre − post [95% CI] | family-wise CI | p (t) | p (t, Holm) | p (sign-flip)"
    " | p (sign-flip, Holm) |",
    "|---|---|---|" + ("---|" if several else "") + "---|---|---|---|---|---|---|---|---|",
  ]
  for row in results["summary"]:
    d = row["pre_minus_post"]
    lr = f" | {row['learning_rate']:g}" if several else ""
    lines.append(
      f"| {data[row['task']]['name']} | {_label(row['variant'])} | {row['rate']:g}{lr}"
      f" | {_pct(row['none'])} | {_pct(row['pre'])} | {_pct(row['post'])}"
      f" | {_pct(d, signed=True)}"
      f" | [{d['family_low'] * 100:+.2f}, {d['family_high'] * 100:+.2f}]"
      f" | {_p(d['p_t'])} | {_p(d['p_t_holm'])}{' *' if d['significant'] else ''}"
      f" | {_p(d['p_sign_flip'])} | {_p(d['p_sign_flip_holm'])} |"
    )
  lines += ["", _identity_sentence(results["identity"]), "", _findings(results), ""]
  if "mnist1d" in data or "mnist1d_cnn" in data:
    lines += [_mnist1d_baseline(results), ""]
  if "modadd" in data:
    lines += [_modadd_baseline(results), ""]
  if len(data) > 1:
    lines += replication_table(results)
  lines += [f"![{name}]({name})" for name in figures]
  return "\n".join(lines).rstrip() + "\n"


def _task_line(task: str, results: dict[str, Any]) -> str:
  """One task's bullet: its data, its model, its hyperparameters and the variants it trains."""
  d = results["data"][task]
  c = results.get("task_configs", {}).get(task) or dict(results["config"], model="mlp")
  if d.get("vocab"):
    sizes = f"sequences of {d['features']} tokens from a vocabulary of {d['vocab']}"
  else:
    sizes = f"{d['features']} features"
  model = {
    "mlp": lambda: f"an MLP, hidden widths {', '.join(map(str, c['hidden']))}",
    "cnn": lambda: (
      f"a 1-D CNN, {len(c['channels'])} convolutions of {', '.join(map(str, c['channels']))}"
      f" channels (kernel {c['kernel_size']}, stride 2) each followed by the activation with"
      " spatial dropout (one keep or drop per example and channel, shared along the length"
      " axis, the same mask in both orders), then a Dense readout"
    ),
    "transformer": lambda: (
      f"a pre-LN Transformer, {c['layers']} block{'s' if c['layers'] > 1 else ''} of width"
      f" {c['width']} with {c['heads']} attention head{'s' if c['heads'] > 1 else ''} and an"
      f" MLP of width {c['mlp_width']};"
      " dropout only inside the MLP, before or after its activation (the same mask in both"
      " orders), no attention or residual dropout; mean pooling, then a Dense readout"
    ),
  }[c["model"]]()
  variants = c.get("variants", results["config"]["variants"])
  grid = c.get("learning_rates") or [c["learning_rate"]]
  lr = (
    f"learning rate {grid[0]:g}"
    if len(grid) == 1
    else f"learning rates {', '.join(f'{v:g}' for v in grid)} (each its own comparison)"
  )
  return (
    f"**{d['name']}** ({sizes}, {d['classes']} classes, {d['train']} training and {d['test']}"
    f" test examples): {TASKS[task].about}. Model: {model}. {c['steps']} steps of"
    f" {c['batch_size']} examples, {lr}; variants: {', '.join(_label(v) for v in variants)}."
  )


def _several_lrs(rows: Sequence[dict[str, Any]]) -> bool:
  """Whether the rows (summary or replication) hold more than one learning rate."""
  return len({row.get("learning_rate") for row in rows}) > 1


def _lr_note(row: dict[str, Any], several: bool) -> str:
  return f" (lr {row['learning_rate']:g})" if several else ""


def _size_note(results: dict[str, Any]) -> str:
  """Which tasks train fewer variants than the others, and what ``--full`` trains instead."""
  every = results["config"]["variants"]
  fewer = [
    task for task, c in results.get("task_configs", {}).items() if len(c["variants"]) < len(every)
  ]
  if not fewer:
    return ""
  names = " and ".join(results["data"][t]["name"] for t in fewer)
  return (
    f"This is a smaller configuration: {names} train only some of the variants (listed above),"
    " so those tasks have no row for the others and the replication table says *not run*."
    f" `python -m jdrop report --full` trains every variant on every task, with {FULL.seeds}"
    f" seeds and {FULL.steps} steps."
  )


def _accuracy_range(results: dict[str, Any], task: str) -> str:
  """``"50% to 60% (relu best) with 300 steps"``: the no-dropout test accuracy of the task's
  variants."""
  none = {
    row["variant"]: 1 - row["none"]["mean"] for row in results["summary"] if row["task"] == task
  }
  best = max(none, key=none.__getitem__)
  steps = (results.get("task_configs", {}).get(task) or results["config"])["steps"]
  return f"{min(none.values()):.0%} to {none[best]:.0%} ({_label(best)} best) with {steps} steps"


def _mnist1d_baseline(results: dict[str, Any]) -> str:
  """Our no-dropout MNIST-1D accuracies (MLP, CNN) next to the published baselines."""
  tasks = {row["task"] for row in results["summary"]}
  reached = []
  if "mnist1d" in tasks:
    reached.append(f"the MLP's variants reach {_accuracy_range(results, 'mnist1d')}")
  if "mnist1d_cnn" in tasks:
    reached.append(f"the CNN's variants reach {_accuracy_range(results, 'mnist1d_cnn')}")
  return (
    "MNIST-1D baseline: Greydanus (2020) reports 68% test accuracy for an MLP (two hidden layers"
    " of 100, 6000 steps of 100 examples) and 94% for a CNN; here, without dropout,"
    f" {'; '.join(reached)}."
  )


def _modadd_baseline(results: dict[str, Any]) -> str:
  """The Transformer's no-dropout accuracy on modular addition, next to chance."""
  classes = results["data"]["modadd"]["classes"]
  return (
    f"Modular addition: chance is 1/{classes} = {1 / classes:.1%}; without dropout the"
    f" Transformer's variants reach {_accuracy_range(results, 'modadd')} on the held-out pairs."
  )


def replication_table(results: dict[str, Any]) -> list[str]:
  """The replication table's Markdown lines: per variant and rate, pre − post on each task."""
  data = results["data"]
  tasks = list(data)
  several = _several_lrs(results["replication"])
  lines = [
    "### Which findings replicate across tasks",
    "",
    "Per activation and rate: pre − post (points) on each task, with its Holm-adjusted p-value"
    " (* significant at the family-wise level; the family is every row of every task);"
    " whether the signs agree on every task; and the verdict: *everywhere* (significant with"
    " one sign on every task), *somewhere* (significant on some tasks only, or with opposite"
    " signs), *nowhere*. *not run*: the configuration does not train that activation on that"
    " task; signs and verdict are then over the tasks where it ran.",
    "",
    f"| activation | rate |{' lr |' if several else ''} "
    + " | ".join(data[t]["name"] for t in tasks)
    + " | signs agree | order matters |",
    "|---|---|" + "---|" * (len(tasks) + several) + "---|---|",
  ]
  for row in results["replication"]:
    cells = []
    for task in tasks:
      c = row["tasks"].get(task)
      cells.append(
        "not run"
        if c is None
        else f"{c['mean'] * 100:+.2f} (p {_p(c['p_t_holm'])}){' *' if c['significant'] else ''}"
      )
    lines.append(
      f"| {_label(row['variant'])} | {row['rate']:g}"
      + (f" | {row['learning_rate']:g}" if several else "")
      + f" | {' | '.join(cells)}"
      f" | {_agree(row)} | {row['verdict']} |"
    )
  return [*lines, ""]


def _p(value: float) -> str:
  return f"{value:.2g}" if value >= 1e-3 else f"{value:.1e}"


def _agree(row: dict[str, Any]) -> str:
  if all(c["mean"] == 0 for c in row["tasks"].values()):
    return "all 0"
  return "yes" if row["signs_agree"] else "no"


def _findings(results: dict[str, Any]) -> str:
  """The corrected conclusion of the table, and what chance alone would give uncorrected."""
  summary, alpha = results["summary"], _stats.ALPHA
  m = len(summary)
  several = _several_lrs(summary)
  found = [row for row in summary if row["pre_minus_post"]["significant"]]
  raw = sum(row["pre_minus_post"]["p_t"] < alpha for row in summary)
  text = (
    f"Corrected for the m = {m} comparisons (Holm, family-wise level {alpha:g}; * in the table): "
  )
  if found:
    text += "the order made a difference for " + ", ".join(
      f"{_label(r['variant'])} at {r['rate']:g}{_lr_note(r, several)} on"
      f" {results['data'][r['task']]['name']}"
      f" ({r['pre_minus_post']['mean'] * 100:+.2f},"
      f" {'pre' if r['pre_minus_post']['mean'] < 0 else 'post'} better)"
      for r in found
    )
  else:
    text += "no comparison shows a difference between the orders"
  text += (
    f". Uncorrected, {raw} of the {m} t-tests have p < {alpha:g}, where about {alpha * m:.1f}"
    " would by chance if the order never mattered."
  )
  seeds = len(results["seeds"])
  if seeds <= _stats.MAX_EXACT and 2.0 ** (1 - seeds) * m >= alpha:
    text += (
      f" With {seeds} seeds the sign-flip test's smallest p-value is 2/2^{seeds} ="
      f" {2.0 ** (1 - seeds):.2g}, so after Holm over {m} tests it cannot reject anything: here"
      " it only checks the t-test's normality assumption (their raw p-values should agree)."
    )
  return text


def _identity_sentence(identity: Sequence[dict[str, Any]]) -> str:
  parts = []
  relu = [row for row in identity if row["variant"] == "relu"]
  if relu and all(row["bit_identical"] for row in relu):
    tasks = len({row.get("task") for row in relu})
    where = f"on each of the {tasks} tasks, " if tasks > 1 else ""
    parts.append(
      f"relu: the final parameters of pre and post are bit-identical {where}at every rate and"
      " seed (max |pre − post| = 0), as the algebra predicts (relu(x/q) = relu(x)/q exactly, for"
      " the values and their gradients, whatever the mask's shape)"
    )
  elif relu:
    parts.append(
      "relu: the final parameters of pre and post DIFFER, against the algebra; see `identity`"
      " in the results"
    )
  others = [row for row in identity if row["variant"] != "relu"]
  same = [row for row in others if row["bit_identical"]]
  if same:
    text = "also bit-identical: " + ", ".join(
      f"{_label(row['variant'])} at rate {row['rate']:g}"
      + (f" ({row['task']})" if "task" in row else "")
      for row in same
    )
    if all(math.frexp(1.0 - row["rate"])[0] == 0.5 for row in same):
      text += (
        " (the keep probability is a power of two, so dividing by it is exact and"
        " f(x/q) = f(x)/q holds in floating point too)"
      )
    parts.append(text)
  worst: dict[str, float] = {}
  for row in others:
    if not row["bit_identical"]:
      worst[row["variant"]] = max(worst.get(row["variant"], 0.0), row["max_abs_diff"])
  if worst:
    parts.append(
      "otherwise the two orders end with different parameters (largest |pre − post|: "
      + ", ".join(f"{_label(v)} {d:.2g}" for v, d in worst.items())
      + ")"
    )
  return "Bit-identity. " + "; ".join(parts) + "."
