"""Gaussian pre-activations and layers: mean and variance shifts by quadrature and mixtures."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks
from jdrop._src import order
from jdrop._src.montecarlo.common import PREFIX
from jdrop._src.montecarlo.common import Comparison
from jdrop._src.montecarlo.common import Exact
from jdrop._src.montecarlo.common import Moments
from jdrop._src.montecarlo.common import OrderShifts
from jdrop._src.montecarlo.common import Shift
from jdrop._src.montecarlo.common import check_not_traced
from jdrop._src.montecarlo.exact import exact_moments

MAX_DEGREE = 256  # numpy's Gauss-Hermite nodes overflow beyond about 300
DEFAULT_DEGREE = 128
_TAIL_SIGMAS = 12.0  # piecewise quadrature covers mu +- 12 sigma (tail mass 4e-33)
_QUADRATURE_TOLERANCE = 1e-6  # gaussian_shift warns above this estimated relative error


# ----------------------------------------------------------------------------
# Gaussian pre-activations and layers.


def _mixture(
  means: jax.Array, variances: jax.Array, weights: ArrayLike
) -> tuple[jax.Array, jax.Array]:
  """Mean and variance of a mixture over the last axis (law of total variance)."""
  mean = jnp.sum(weights * means, axis=-1)
  var = jnp.sum(weights * (variances + jnp.square(means - mean[..., None])), axis=-1)
  return mean, var


def order_shifts(
  pre: Moments, pre_weights: ArrayLike, post: Moments, reference: jax.Array, weights: ArrayLike
) -> OrderShifts:
  """Train and eval statistics of mixtures over the last axis (eval: ``reference``)."""
  eval_mean, eval_var = _mixture(reference, jnp.zeros_like(reference), weights)
  return OrderShifts(
    pre=Shift(*_mixture(pre.mean, pre.var, pre_weights), eval_mean, eval_var),
    post=Shift(*_mixture(post.mean, post.var, weights), eval_mean, eval_var),
  )


def quadrature_error(fine: OrderShifts, coarse: OrderShifts) -> float:
  """The largest relative change between two quadratures of the same statistics.

  Means are compared on the scale of the distribution (``sqrt(eval_var) + |eval_mean|``),
  variances relative to themselves.
  """
  worst = 0.0
  for a, b in zip(fine, coarse, strict=True):
    scale = np.sqrt(np.abs(a.eval_var)) + np.abs(a.eval_mean)
    for got, want, size in (
      (a.train_mean, b.train_mean, scale),
      (a.eval_mean, b.eval_mean, scale),
      (a.train_var, b.train_var, np.abs(a.train_var)),
      (a.eval_var, b.eval_var, np.abs(a.eval_var)),
    ):
      with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(size > 0, np.abs(got - want) / size, np.abs(got - want))
      worst = max(worst, float(np.nanmax(change, initial=0.0)))
  return worst


def quadrature(
  mu: np.ndarray, sigma: np.ndarray, degree: int, breakpoints: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Nodes and weights (last axis) of E[g(X)], X ~ N(mu, sigma^2), in float64.

  No breakpoints: Gauss-Hermite (probabilists'), exact for polynomials of degree < 2 *
  degree. With breakpoints: Gauss-Legendre of ``degree`` nodes on each piece of
  [mu - 12 sigma, mu + 12 sigma] cut at the breakpoints, for integrands with kinks there.
  """
  if breakpoints.size == 0:
    t, w = np.polynomial.hermite_e.hermegauss(degree)
    return mu[..., None] + sigma[..., None] * t, np.broadcast_to(w / w.sum(), mu.shape + w.shape)
  low, high = mu - _TAIL_SIGMAS * sigma, mu + _TAIL_SIGMAS * sigma
  cuts = np.clip(breakpoints, low[..., None], high[..., None])
  edges = np.sort(np.concatenate([low[..., None], cuts, high[..., None]], axis=-1), axis=-1)
  t, w = np.polynomial.legendre.leggauss(degree)
  middle = (edges[..., 1:] + edges[..., :-1]) / 2
  half = (edges[..., 1:] - edges[..., :-1]) / 2
  nodes = middle[..., None] + half[..., None] * t
  z = (nodes - mu[..., None, None]) / sigma[..., None, None]
  weights = (
    half[..., None] * w * np.exp(-z * z / 2) / (sigma[..., None, None] * math.sqrt(2 * np.pi))
  )
  flat = (*nodes.shape[:-2], -1)
  return nodes.reshape(flat), weights.reshape(flat)


def gaussian_shift(
  f: Callable | str,
  *,
  mu: ArrayLike,
  sigma: ArrayLike,
  rate: float,
  degree: int = DEFAULT_DEGREE,
  breakpoints: Sequence[float] = (),
) -> OrderShifts:
  r"""Train-versus-eval mean shift and variance ratio of both orders for ``x ~ N(mu, sigma^2)``.

  For a random pre-activation ``X`` and an independent mask, eval mode computes ``f(X)``;
  training computes ``f(D(X))`` (pre) or ``D(f(X))`` (post). With the two-point moments
  ``m(x), v(x)`` of :func:`exact_moments`,

  .. math::
     \mathbb{E}_\text{train} = \mathbb{E}_X[m(X)], \quad
     \mathrm{Var}_\text{train} = \mathbb{E}_X\bigl[v(X) + (m(X) - \mathbb{E}_\text{train})^2\bigr],
     \quad \mathbb{E}_\text{eval} = \mathbb{E}_X[f(X)], \quad
     \mathrm{Var}_\text{eval} = \mathrm{Var}_X[f(X)],

  computed by Gauss-Hermite quadrature with ``degree`` nodes in float64. For a linear
  ``f`` and ``mu = 0`` the variance ratio of both orders is ``1 / q``, Li et al.'s variance
  shift ("Understanding the Disharmony between Dropout and Batch Normalization by Variance
  Shift", CVPR 2019). Post-activation dropout has no mean shift.

  Accuracy: Gauss-Hermite converges fast where ``f`` is smooth on the scale of ``sigma``
  (1e-12 for tanh or gelu with ``sigma / q`` about 1). Across a kink (relu) or a steep
  transition (tanh, sigmoid with ``sigma / q`` of 5 or more) it converges slowly, so the
  result is also computed with 3/4 of the nodes, and a ``RuntimeWarning`` says when the two
  differ by more than 1e-6 (relative). Then pass the kinks or steep points of ``f`` as
  ``breakpoints`` (``(0.,)`` for relu, tanh, sigmoid, gelu; ``(0., 6.)`` for relu6): each
  order is then integrated piecewise between them (Gauss-Legendre with ``degree`` nodes per
  piece on ``mu +- 12 sigma``), accurate to about 1e-12 there.

  Args:
    f: an elementwise callable or a name from :mod:`jdrop.activations`.
    mu: the mean of the pre-activation (an array broadcasts).
    sigma: its standard deviation, positive (broadcasts with ``mu``).
    rate: the drop probability in [0, 1], concrete.
    degree: quadrature nodes (per piece), 1 to 256.
    breakpoints: the points where ``f`` has a kink or a jump.

  Returns:
    :class:`OrderShifts` of float32 arrays shaped like ``broadcast(mu, sigma)``; read
    ``.pre.mean_shift``, ``.pre.var_ratio`` and the same for ``.post``.

  Example:
    >>> from jdrop import montecarlo
    >>> out = montecarlo.gaussian_shift("identity", mu=0.0, sigma=1.0, rate=0.5)
    >>> float(out.pre.var_ratio), float(out.post.mean_shift)
    (2.0, 0.0)
    >>> out = montecarlo.gaussian_shift("relu", mu=0.0, sigma=1.0, rate=0.5, breakpoints=(0.,))
    >>> round(float(out.post.var_ratio), 5)  # (E relu^2 / q - (E relu)^2) / Var relu
    2.46694
  """
  fn = PREFIX + "gaussian_shift"
  check_not_traced(fn, mu=mu, sigma=sigma, rate=rate)
  masks.check_rate(fn, rate)
  f = order.resolve_activation(fn, f)
  degree = errors.check_count(fn, "degree", degree, upper=MAX_DEGREE, example=str(DEFAULT_DEGREE))
  try:
    mu_np, sigma_np = np.broadcast_arrays(np.asarray(mu, np.float64), np.asarray(sigma, np.float64))
    points = np.asarray(breakpoints, np.float64).reshape(-1)
  except (TypeError, ValueError) as err:
    raise errors.type_error(
      fn,
      "mu, sigma, breakpoints",
      "must be real numbers or arrays that broadcast together",
      errors.short((mu, sigma, breakpoints)),
      "Pass e.g. mu=0.0, sigma=1.0, breakpoints=(0.,).",
    ) from err
  if not (np.isfinite(mu_np).all() and np.isfinite(sigma_np).all() and (sigma_np > 0).all()):
    raise errors.value_error(
      fn,
      "sigma",
      "must be positive and finite (with a finite mu)",
      errors.short((mu, sigma)),
      "Pass a standard deviation such as sigma=1.0.",
    )
  if not np.isfinite(points).all():
    raise errors.value_error(
      fn, "breakpoints", "must be finite", tuple(points), "Pass the kinks of f, e.g. (0.,)."
    )
  keep = 1.0 - float(np.asarray(rate))

  def integrate(nodes_per_piece: int) -> OrderShifts:
    # Eval mode and post-activation dropout see f(x): cut at the kinks b of f. Pre-activation
    # dropout sees f(x / q): cut at q * b.
    nodes, weights = quadrature(mu_np, sigma_np, nodes_per_piece, points)
    scaled_nodes, scaled_weights = quadrature(mu_np, sigma_np, nodes_per_piece, keep * points)
    at_nodes = exact_moments(f, jnp.asarray(nodes), rate=rate)
    at_scaled = exact_moments(f, jnp.asarray(scaled_nodes), rate=rate)
    shifts = order_shifts(at_scaled.pre, scaled_weights, at_nodes.post, at_nodes.reference, weights)
    return jax.tree.map(np.asarray, shifts)

  with jax.enable_x64(True):
    shifts = integrate(degree)
    coarser = integrate(max(1, 3 * degree // 4))
  error = quadrature_error(shifts, coarser)
  if error > _QUADRATURE_TOLERANCE:
    warnings.warn(
      f"{fn}: the quadrature has not converged: {degree} and {max(1, 3 * degree // 4)} nodes"
      f" differ by {error:.1e} (relative). f varies on a scale much smaller than sigma, or"
      " has a kink: pass its kinks or its steepest point as breakpoints (e.g. (0.,) for"
      " relu, tanh, sigmoid), or a higher degree.",
      RuntimeWarning,
      stacklevel=2,
    )
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), shifts)


def variance_shift(moments: Exact | Comparison, *, weights: ArrayLike | None = None) -> OrderShifts:
  r"""Train-versus-eval statistics of a layer's units over a batch of pre-activations.

  ``moments`` holds the per-element moments of both orders for pre-activations ``h`` of
  shape ``(samples, units)`` (from :func:`exact_moments` or :func:`compare_orders` with
  ``x = h``). Over the data and the masks, by the law of total variance,

  .. math::
     \mathrm{Var}_\text{train} = \mathrm{Var}_b\bigl[\mathbb{E}_m y_b\bigr]
       + \mathbb{E}_b\bigl[\mathrm{Var}_m y_b\bigr], \qquad
     \mathrm{Var}_\text{eval} = \mathrm{Var}_b\bigl[f(h_b)\bigr]

  (population moments over the samples ``b``; for a :class:`Comparison` the within-sample
  variances are scaled by ``1 - 1/num_masks``, which removes the mask noise of the estimated
  means from ``Var_b``, so ``Var_train`` is unbiased). This is the variance shift that a
  normalisation layer placed right after dropout suffers (its statistics are collected in
  training and applied in eval mode; Li et al., CVPR 2019): ``1 / q`` for zero-mean
  pre-activations and a linear ``f``. With ``weights`` (``units x outputs``), dropout feeds a
  linear layer and then the normalisation; masks are independent across units, so the
  per-sample moments of ``y @ W`` are ``mean @ W`` and ``var @ W**2``.

  Args:
    moments: an :class:`Exact` or a :class:`Comparison` whose arrays have shape
      ``(samples, units)``.
    weights: optional ``(units, outputs)`` weights of a linear layer after dropout.

  Returns:
    :class:`OrderShifts` with arrays of shape ``(units,)`` (or ``(outputs,)``).

  Example:
    >>> import jax.numpy as jnp
    >>> from jdrop import montecarlo
    >>> h = jnp.array([[-1.0], [1.0]])  # zero mean, unit variance
    >>> shifts = montecarlo.variance_shift(montecarlo.exact_moments("identity", h, rate=0.75))
    >>> shifts.pre.var_ratio, shifts.post.var_ratio
    (Array([4.], dtype=float32), Array([4.], dtype=float32))
  """
  fn = PREFIX + "variance_shift"
  if not isinstance(moments, (Exact, Comparison)):
    raise errors.type_error(
      fn,
      "moments",
      "must be the result of exact_moments or compare_orders",
      errors.short(moments),
      "Pass e.g. exact_moments(f, h, rate=rate) for pre-activations h of shape (samples, units).",
    )
  if jnp.ndim(moments.reference) != 2:
    raise errors.value_error(
      fn,
      "moments",
      "must hold statistics of shape (samples, units)",
      errors.Described(f"shape {jnp.shape(moments.reference)}"),
      "Compute them for pre-activations h of shape (samples, units).",
    )
  samples, units = jnp.shape(moments.reference)
  acc = masks.compute_dtype(moments.reference.dtype)
  w = None
  if weights is not None:
    w = jnp.asarray(weights, acc)
    if w.ndim != 2 or w.shape[0] != units:
      raise errors.value_error(
        fn,
        "weights",
        f"must have shape (units, outputs) with units = {units}",
        errors.Described(f"shape {w.shape}"),
        "Pass the kernel of the linear layer that follows dropout.",
      )

  def per_unit(values: jax.Array, power: int = 1) -> jax.Array:
    """(samples, units) -> (units or outputs, samples): the mixture runs over the last axis."""
    values = jnp.asarray(values, acc)
    return (values if w is None else values @ w**power).T

  # A Monte-Carlo mean carries mask noise: E_b[Var_b(mean)] exceeds the spread of the exact
  # means by E_b[var] / num_masks. Shrinking the within-sample variances by 1 - 1/num_masks
  # makes Var_train unbiased (the exact references need no correction).
  shrink = 1.0 - 1.0 / moments.num_masks if isinstance(moments, Comparison) else 1.0

  def linear(m: Moments) -> Moments:
    return Moments(per_unit(m.mean), shrink * per_unit(m.var, power=2), m.stderr)

  uniform = jnp.full((samples,), 1 / samples, acc)
  return order_shifts(
    linear(moments.pre), uniform, linear(moments.post), per_unit(moments.reference), uniform
  )


def dense_preactivations(
  key: ArrayLike, inputs: ArrayLike, *, features: int, standardize: bool = True
) -> jax.Array:
  r"""Pre-activations ``h = x W`` of a freshly initialised Dense layer on ``inputs``.

  ``W`` is LeCun-normal (truncated normal with variance ``1 / fan_in``, Flax's default
  Dense kernel), the bias zero. With ``standardize=True`` every input column is first
  scaled to mean 0 and variance 1 (constant columns become 0), so the units of ``h`` have
  mean about 0 and variance about 1, the setting of Li et al.'s ``1 / q``.

  Args:
    key: a PRNG key for the kernel.
    inputs: a floating-point array of shape ``(samples, fan_in)``, e.g. :func:`load_digits`.
    features: the number of units.
    standardize: whether to standardise the input columns first.

  Returns:
    An array of shape ``(samples, features)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdrop import montecarlo
    >>> data = jax.random.uniform(jax.random.key(1), (100, 8))
    >>> montecarlo.dense_preactivations(jax.random.key(0), data, features=4).shape
    (100, 4)
  """
  fn = PREFIX + "dense_preactivations"
  key = masks.check_key(fn, key)
  inputs = _dropout.check_x(fn, inputs)
  if inputs.ndim != 2:
    raise errors.value_error(
      fn,
      "inputs",
      "must have shape (samples, fan_in)",
      errors.Described(f"shape {inputs.shape}"),
      "Flatten each sample into one row, e.g. inputs.reshape(len(inputs), -1).",
    )
  features = errors.check_count(fn, "features", features, upper=2**20, example="64")
  if standardize:
    std = inputs.std(axis=0)
    inputs = (inputs - inputs.mean(axis=0)) / jnp.where(std > 0, std, 1)
  kernel = jax.nn.initializers.lecun_normal()(key, (inputs.shape[1], features), inputs.dtype)
  return inputs @ kernel
