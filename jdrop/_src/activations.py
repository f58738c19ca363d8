"""The activation zoo and its registry.

Every activation in :mod:`jax.nn` is registered as the ``jax.nn`` function itself (or a
:func:`functools.partial` of it), so the checker and the studies see exactly the code users
run. The activations that PyTorch and Keras users expect and :mod:`jax.nn` lacks are written
here in :mod:`jax.numpy`, following PyTorch's (or Keras') conventions at the edge cases.

Each of these functions validates its input in Python (dtype, and hyperparameters whenever
they are concrete) and then calls a jitted private core, so hyperparameters may be traced
(``jit``, ``vmap`` over them, ``grad`` with respect to them).

The registry maps a name to an :class:`Activation`: :func:`get` returns the function (configured
by keyword parameters), :func:`names` lists the canonical names, :func:`info` describes one and
:func:`register` / :func:`unregister` manage user entries. The registry stores facts about the
functions only; whether an activation commutes with dropout is derived by the checker.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jdrop._src import dropout as _dropout
from jdrop._src import errors
from jdrop._src import masks

_PREFIX = "jdrop.activations."


# ----------------------------------------------------------------------------------------------
# Validation helpers.


def _concrete(value: ArrayLike) -> np.ndarray | None:
  """Returns ``value`` as a NumPy array, or None when it is traced (its value is unknown)."""
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def _require(
  fn: str, arg: str, value: ArrayLike, holds: Callable[[np.ndarray], Any], problem: str, fix: str
) -> None:
  """Raises a ValueError if ``value`` is concrete and ``holds`` is not True for all of it.

  A traced value is not checked: its value is unknown until the function runs.
  """
  concrete = _concrete(value)
  if concrete is not None and not np.all(holds(concrete)):
    raise errors.value_error(_PREFIX + fn, arg, problem, _shown(value), fix)


def _shown(value: object) -> errors.Described:
  """A value as an error message quotes it: a non-scalar array by its shape and dtype."""
  shape = getattr(value, "shape", ())
  if shape and hasattr(value, "dtype"):
    dtype = value.dtype
    return errors.Described(f"an array of shape {shape} and dtype {dtype}")
  return errors.short(value)


# ----------------------------------------------------------------------------------------------
# Activations written here (jax.nn lacks them).


@jax.jit
def _threshold(x: jax.Array, threshold: ArrayLike, value: ArrayLike) -> jax.Array:
  # `x <= threshold` (not `x > threshold`) so that a NaN input stays NaN, as in PyTorch.
  return jnp.where(x <= jnp.asarray(threshold, x.dtype), jnp.asarray(value, x.dtype), x)


def threshold(x: ArrayLike, *, threshold: ArrayLike, value: ArrayLike) -> jax.Array:
  r"""Threshold activation function (PyTorch's ``nn.Threshold``).

  Computes the element-wise function

  .. math::
    \mathrm{threshold}(x) = \begin{cases}
      x, & x > \theta\\
      v, & x \le \theta
    \end{cases}

  where :math:`\theta` = ``threshold`` and :math:`v` = ``value``. As in PyTorch, an input
  equal to the threshold is replaced (the comparison is strict), and a NaN input stays NaN.
  The registry entry ``"threshold"`` uses ``threshold=0, value=0`` (which equals relu).

  Args:
    x: input array, of a floating-point dtype.
    threshold: the value to compare against.
    value: the value that replaces inputs at or below the threshold.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.threshold(jnp.array([0., 1., 2.]), threshold=1., value=-5.)
    Array([-5., -5.,  2.], dtype=float32)
  """
  return _threshold(_dropout.check_x(_PREFIX + "threshold", x), threshold, value)


@jax.jit
def _hard_shrink(x: jax.Array, lambd: ArrayLike) -> jax.Array:
  lambd = jnp.asarray(lambd, x.dtype)
  # Written as PyTorch's kernel is, so that a NaN input stays NaN.
  return jnp.where((x >= -lambd) & (x <= lambd), jnp.zeros_like(x), x)


def hard_shrink(x: ArrayLike, *, lambd: ArrayLike = 0.5) -> jax.Array:
  r"""Hard shrinkage (PyTorch's ``nn.Hardshrink``).

  Computes the element-wise function

  .. math::
    \mathrm{hard\_shrink}(x) = \begin{cases}
      x, & |x| > \lambda\\
      0, & |x| \le \lambda
    \end{cases}

  where :math:`\lambda` = ``lambd``. As in PyTorch, :math:`x = \pm\lambda` gives 0 (the
  comparison is strict) and a NaN input stays NaN.

  Args:
    x: input array, of a floating-point dtype.
    lambd: the half-width of the dead zone, at least 0 (PyTorch's default 0.5).

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.
    ValueError: if ``lambd`` is concrete and negative.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.hard_shrink(jnp.array([-1., -0.5, 0.25, 0.5, 2.]))
    Array([-1.,  0.,  0.,  0.,  2.], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "hard_shrink", x)
  _require(
    "hard_shrink",
    "lambd",
    lambd,
    lambda v: v >= 0,
    "must be >= 0",
    "PyTorch's default is lambd=0.5.",
  )
  return _hard_shrink(x, lambd)


@jax.jit
def _soft_shrink(x: jax.Array, lambd: ArrayLike) -> jax.Array:
  lambd = jnp.asarray(lambd, x.dtype)
  # `x * 0` rather than zeros, as in PyTorch's kernel, so that a NaN input stays NaN.
  return jnp.where(x > lambd, x - lambd, jnp.where(x < -lambd, x + lambd, x * 0))


def soft_shrink(x: ArrayLike, *, lambd: ArrayLike = 0.5) -> jax.Array:
  r"""Soft shrinkage (PyTorch's ``nn.Softshrink``), the proximal operator of the L1 norm.

  Computes the element-wise function

  .. math::
    \mathrm{soft\_shrink}(x) = \begin{cases}
      x - \lambda, & x > \lambda\\
      x + \lambda, & x < -\lambda\\
      0, & |x| \le \lambda
    \end{cases}

  where :math:`\lambda` = ``lambd``. The function is continuous, so the edge case does not
  matter for its value; a NaN input stays NaN.

  Args:
    x: input array, of a floating-point dtype.
    lambd: the half-width of the dead zone, at least 0 (PyTorch's default 0.5).

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.
    ValueError: if ``lambd`` is concrete and negative.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.soft_shrink(jnp.array([-2., 0.25, 0.5, 1.]))
    Array([-1.5,  0. ,  0. ,  0.5], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "soft_shrink", x)
  _require(
    "soft_shrink",
    "lambd",
    lambd,
    lambda v: v >= 0,
    "must be >= 0",
    "PyTorch's default is lambd=0.5.",
  )
  return _soft_shrink(x, lambd)


def tanh_shrink(x: ArrayLike) -> jax.Array:
  r"""Tanh shrinkage (PyTorch's ``nn.Tanhshrink``).

  Computes the element-wise function

  .. math::
    \mathrm{tanh\_shrink}(x) = x - \tanh(x)

  Args:
    x: input array, of a floating-point dtype.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.tanh_shrink(jnp.array([-30., 0., 30.]))
    Array([-29.,   0.,  29.], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "tanh_shrink", x)
  return x - jnp.tanh(x)


def exponential(x: ArrayLike) -> jax.Array:
  r"""Exponential activation function (Keras' ``exponential``).

  Computes the element-wise function

  .. math::
    \mathrm{exponential}(x) = e^x

  Args:
    x: input array, of a floating-point dtype.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.exponential(jnp.array([-jnp.inf, 0.]))
    Array([0., 1.], dtype=float32)
  """
  return jnp.exp(_dropout.check_x(_PREFIX + "exponential", x))


def abs(x: ArrayLike) -> jax.Array:
  r"""Absolute value as an activation function.

  Computes the element-wise function

  .. math::
    \mathrm{abs}(x) = |x|

  It is positively homogeneous (:math:`|cx| = c|x|` for :math:`c > 0`), a textbook case where
  dropout before and after the activation agree.

  Args:
    x: input array, of a floating-point dtype.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.abs(jnp.array([-2., 0., 3.]))
    Array([2., 0., 3.], dtype=float32)
  """
  return jnp.abs(_dropout.check_x(_PREFIX + "abs", x))


def quick_gelu(x: ArrayLike) -> jax.Array:
  r"""Quick GELU, the sigmoid approximation of GELU used by CLIP (Radford et al., 2021).

  Computes the element-wise function

  .. math::
    \mathrm{quick\_gelu}(x) = x \, \sigma(1.702 x)

  Args:
    x: input array, of a floating-point dtype.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.quick_gelu(jnp.array([-100., 0., 100.]))
    Array([ -0.,   0., 100.], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "quick_gelu", x)
  return x * jax.nn.sigmoid(1.702 * x)


def softmin(
  x: ArrayLike, *, axis: int | tuple[int, ...] | None = -1, where: ArrayLike | None = None
) -> jax.Array:
  r"""Softmin (PyTorch's ``nn.Softmin``): the softmax of ``-x``.

  Computes

  .. math::
    \mathrm{softmin}(x)_i = \frac{\exp(-x_i)}{\sum_j \exp(-x_j)}

  along ``axis``. It is not element-wise.

  Args:
    x: input array, of a floating-point dtype.
    axis: the axis or axes to normalise over (default: the last).
    where: elements to include, as in :func:`jax.nn.softmax`.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.softmin(jnp.array([0., 0., 0., 0.]))
    Array([0.25, 0.25, 0.25, 0.25], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "softmin", x)
  return jax.nn.softmax(-x, axis=axis, where=where)


def prelu(x: ArrayLike, slope: ArrayLike) -> jax.Array:
  r"""Parametric rectified linear unit (He et al., 2015; PyTorch's ``nn.PReLU``).

  Computes the element-wise function

  .. math::
    \mathrm{prelu}(x) = \begin{cases}
      x, & x \ge 0\\
      a x, & x < 0
    \end{cases}

  where :math:`a` = ``slope`` is a learnable parameter: a scalar, or an array that broadcasts
  to ``x`` (e.g. one slope per channel, shape ``(C,)`` for channels-last ``x``). It is
  :func:`jax.nn.leaky_relu` with ``slope`` cast to the dtype of ``x``. The registry entry
  ``"prelu"`` uses PyTorch's initial slope 0.25.

  Args:
    x: input array, of a floating-point dtype.
    slope: the negative slope, broadcastable to ``x.shape``.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.
    ValueError: if ``slope`` does not broadcast to ``x.shape``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.prelu(jnp.array([[-4., -4.], [4., 4.]]), jnp.array([0.25, 0.5]))
    Array([[-1., -2.],
           [ 4.,  4.]], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "prelu", x)
  slope_shape = np.shape(slope)
  try:
    broadcast_ok = jnp.broadcast_shapes(slope_shape, x.shape) == x.shape
  except ValueError:
    broadcast_ok = False
  if not broadcast_ok:
    raise errors.value_error(
      _PREFIX + "prelu",
      "slope",
      f"must broadcast to the shape of x {x.shape}",
      _shown(slope),
      "Pass a scalar, or one slope per channel with shape (x.shape[-1],).",
    )
  return jax.nn.leaky_relu(x, jnp.asarray(slope, x.dtype))


@jax.jit
def _rrelu(key: jax.Array, x: jax.Array, lower: ArrayLike, upper: ArrayLike) -> jax.Array:
  # Slopes are drawn and applied in at least float32, so that f16/bf16 inputs do not round
  # the uniform's support; only the product is rounded to the input dtype.
  dtype = masks.compute_dtype(x.dtype)
  slope = jax.random.uniform(key, x.shape, dtype, lower, upper)
  return jnp.where(x >= 0, x, (slope * x.astype(dtype)).astype(x.dtype))


def rrelu(
  key: ArrayLike | None,
  x: ArrayLike,
  *,
  lower: ArrayLike = 1 / 8,
  upper: ArrayLike = 1 / 3,
  deterministic: bool = False,
) -> jax.Array:
  r"""Randomized leaky rectified linear unit (Xu et al., 2015; PyTorch's ``nn.RReLU``).

  Computes the element-wise function

  .. math::
    \mathrm{rrelu}(x) = \begin{cases}
      x, & x \ge 0\\
      a x, & x < 0
    \end{cases}
    \qquad a \sim U(\mathrm{lower}, \mathrm{upper})

  with an independent slope :math:`a` per element in training, and the fixed slope
  :math:`(\mathrm{lower} + \mathrm{upper}) / 2` when ``deterministic`` (PyTorch's eval mode).
  The registry entry ``"rrelu"`` is the deterministic function.

  Args:
    key: a PRNG key, typed (:func:`jax.random.key`) or legacy (:func:`jax.random.PRNGKey`);
      may be None when ``deterministic``. One key per call: use :func:`jax.vmap` for a
      batch of keys.
    x: input array, of a floating-point dtype.
    lower: the lower bound of the slope distribution (PyTorch's default 1/8).
    upper: the upper bound of the slope distribution (PyTorch's default 1/3).
    deterministic: a Python bool; if True, use the mean slope and ignore ``key``.

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point, or ``key`` is not a PRNG key (and
      ``deterministic`` is False).
    ValueError: if ``lower > upper`` (when concrete), or ``key`` is a batch of keys.

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jdrop import activations
    >>> x = jnp.array([-4., 0., 4.])
    >>> activations.rrelu(None, x, lower=0.25, upper=0.75, deterministic=True)
    Array([-2.,  0.,  4.], dtype=float32)
    >>> y = activations.rrelu(jax.random.key(0), x, lower=0.25, upper=0.75)
    >>> bool(-3. <= y[0] <= -1.), y[1:]
    (True, Array([0., 4.], dtype=float32))
  """
  x = _dropout.check_x(_PREFIX + "rrelu", x)
  upper_value = _concrete(upper)
  if upper_value is not None:
    _require(
      "rrelu",
      "lower",
      lower,
      lambda v: v <= upper_value,
      f"must be <= upper={upper!r}",
      "PyTorch's defaults are lower=1/8, upper=1/3.",
    )
  if deterministic:
    return jax.nn.leaky_relu(x, jnp.asarray((lower + upper) / 2, x.dtype))
  return _rrelu(masks.check_key(_PREFIX + "rrelu", key), x, lower, upper)


# ----------------------------------------------------------------------------------------------
# Parametric versions of jax.nn activations (the registry routes `get(name, **params)` here).


@jax.jit
def _parametric_relu(
  x: jax.Array, negative_slope: ArrayLike | None, max_value: ArrayLike | None, threshold: ArrayLike
) -> jax.Array:
  # None is an empty pytree, so it reaches the traced function as None: a structural choice.
  threshold = jnp.asarray(threshold, x.dtype)
  above = x if max_value is None else jnp.minimum(x, jnp.asarray(max_value, x.dtype))
  if negative_slope is None:
    below = jnp.zeros_like(x)
  else:
    below = jnp.asarray(negative_slope, x.dtype) * (x - threshold)
  # `x <= threshold` selects `below`, so that a NaN input stays NaN (it takes `above`).
  return jnp.where(x <= threshold, below, above)


def parametric_relu(
  x: ArrayLike,
  *,
  negative_slope: ArrayLike = 0.0,
  max_value: ArrayLike | None = None,
  threshold: ArrayLike = 0.0,
) -> jax.Array:
  r"""Rectified linear unit with Keras' parameters (``keras.activations.relu``).

  Computes the element-wise function

  .. math::
    \mathrm{parametric\_relu}(x) = \begin{cases}
      \min(x, m), & x > t\\
      s (x - t), & x \le t
    \end{cases}

  where :math:`s` = ``negative_slope``, :math:`m` = ``max_value`` (no cap when None) and
  :math:`t` = ``threshold``. As in Keras, an input equal to the threshold gives
  :math:`s \cdot 0 = 0`, so with :math:`t > 0` the function jumps from 0 to :math:`t`.
  With the defaults it equals :func:`jax.nn.relu`; ``max_value=6`` gives relu6 and
  ``negative_slope=a`` gives a leaky relu. ``get("relu", **params)`` returns this function.
  When ``negative_slope`` is a concrete 0 the negative part is exactly 0, also at ``-inf``.

  Args:
    x: input array, of a floating-point dtype.
    negative_slope: the slope below the threshold, at least 0 (default 0).
    max_value: the saturation value, at least 0, or None for no cap (default).
    threshold: the threshold, at least 0 (default 0).

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.
    ValueError: if a concrete parameter is negative (Keras' ``ReLU`` layer forbids it).

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> x = jnp.array([-10., -5., 0., 5., 10.])
    >>> activations.parametric_relu(x, negative_slope=0.5, max_value=5.)
    Array([-5. , -2.5,  0. ,  5. ,  5. ], dtype=float32)
    >>> activations.parametric_relu(x, threshold=5.)
    Array([ 0.,  0.,  0.,  0., 10.], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "parametric_relu", x)
  fix = "Keras' ReLU layer requires negative_slope, max_value and threshold to be >= 0."
  _require(
    "parametric_relu", "negative_slope", negative_slope, lambda v: v >= 0, "must be >= 0", fix
  )
  if max_value is not None:
    _require("parametric_relu", "max_value", max_value, lambda v: v >= 0, "must be >= 0", fix)
  _require("parametric_relu", "threshold", threshold, lambda v: v >= 0, "must be >= 0", fix)
  slope = _concrete(negative_slope)
  # A concrete zero slope: None skips `0 * (x - t)`, which is NaN at -inf.
  negative_part = None if slope is not None and not np.any(slope) else negative_slope
  return _parametric_relu(x, negative_part, max_value, threshold)


@jax.jit
def _parametric_hard_tanh(x: jax.Array, min_val: ArrayLike, max_val: ArrayLike) -> jax.Array:
  min_val = jnp.asarray(min_val, x.dtype)
  max_val = jnp.asarray(max_val, x.dtype)
  # The same selects as jax.nn.hard_tanh, so the defaults agree with it in value and gradient.
  return jnp.where(x > max_val, max_val, jnp.where(x < min_val, min_val, x))


def parametric_hard_tanh(
  x: ArrayLike, *, min_val: ArrayLike = -1.0, max_val: ArrayLike = 1.0
) -> jax.Array:
  r"""Hard tanh with PyTorch's ``nn.Hardtanh`` parameters.

  Computes the element-wise function

  .. math::
    \mathrm{parametric\_hard\_tanh}(x) = \begin{cases}
      a, & x < a\\
      x, & a \le x \le b\\
      b, & x > b
    \end{cases}

  where :math:`a` = ``min_val`` and :math:`b` = ``max_val``, with :math:`a < b` as PyTorch
  requires. With the defaults it equals :func:`jax.nn.hard_tanh`.
  ``get("hard_tanh", **params)`` returns this function.

  Args:
    x: input array, of a floating-point dtype.
    min_val: the lower clipping value (default -1).
    max_val: the upper clipping value (default 1).

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.
    ValueError: if both bounds are concrete and ``min_val >= max_val``.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.parametric_hard_tanh(jnp.array([-3., 0.5, 3.]), min_val=0., max_val=2.)
    Array([0. , 0.5, 2. ], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "parametric_hard_tanh", x)
  upper = _concrete(max_val)
  if upper is not None:
    _require(
      "parametric_hard_tanh",
      "min_val",
      min_val,
      lambda v: v < upper,
      f"must be < max_val={max_val!r}",
      "PyTorch's defaults are min_val=-1, max_val=1.",
    )
  return _parametric_hard_tanh(x, min_val, max_val)


@jax.jit
def _parametric_softplus(x: jax.Array, beta: ArrayLike, threshold: ArrayLike) -> jax.Array:
  beta = jnp.asarray(beta, x.dtype)
  z = beta * x
  # jax.nn.softplus is stable for large z, so the unselected branch has finite gradients.
  return jnp.where(z > jnp.asarray(threshold, x.dtype), x, jax.nn.softplus(z) / beta)


def parametric_softplus(
  x: ArrayLike, *, beta: ArrayLike = 1.0, threshold: ArrayLike = 20.0
) -> jax.Array:
  r"""Softplus with PyTorch's ``nn.Softplus`` parameters.

  Computes the element-wise function

  .. math::
    \mathrm{parametric\_softplus}(x) = \begin{cases}
      \frac{1}{\beta} \log(1 + e^{\beta x}), & \beta x \le t\\
      x, & \beta x > t
    \end{cases}

  where :math:`t` = ``threshold``: as in PyTorch, the function reverts to the identity where
  :math:`\beta x > t` (strictly). ``get("softplus", **params)`` returns this function; note
  that :func:`jax.nn.softplus` itself never switches to the identity.

  Args:
    x: input array, of a floating-point dtype.
    beta: the sharpness, > 0 (default 1).
    threshold: above this value of :math:`\beta x` the identity is used (default 20).

  Returns:
    An array with the shape and dtype of ``x``.

  Raises:
    TypeError: if ``x`` is not floating point.
    ValueError: if ``beta`` is concrete and not positive.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.parametric_softplus(jnp.array([-100., 0., 3.]), beta=2., threshold=5.)
    Array([0.       , 0.3465736, 3.       ], dtype=float32)
  """
  x = _dropout.check_x(_PREFIX + "parametric_softplus", x)
  _require(
    "parametric_softplus",
    "beta",
    beta,
    lambda v: v > 0,
    "must be > 0",
    "PyTorch's default is beta=1.",
  )
  return _parametric_softplus(x, beta, threshold)


# ----------------------------------------------------------------------------------------------
# The registry.


@dataclasses.dataclass(frozen=True)
class Activation:
  """One registry entry: what an activation is, not how it interacts with dropout.

  Attributes:
    name: the canonical name.
    fn: the function ``get(name)`` returns, callable on an array alone.
    elementwise: whether each output element depends only on the same input element (False
      for softmax, log_softmax, softmin and glu).
    source: whose function and conventions it is: ``"jax.nn"``, ``"pytorch"``, ``"keras"``,
      ``"jdrop"``, or ``"user"`` for :func:`register`.
    aliases: other names that resolve to this entry.
    description: one line.
    params: the keyword parameters ``get(name, **params)`` accepts.
    parametric: the function ``get(name, **params)`` binds the parameters to (with
      :func:`functools.partial`); None means ``fn``.
  """

  name: str
  fn: Callable[..., jax.Array]
  elementwise: bool
  source: str
  aliases: tuple[str, ...]
  description: str
  params: tuple[str, ...] = ()
  parametric: Callable[..., jax.Array] | None = None


_ENTRIES: dict[str, Activation] = {}
_ALIASES: dict[str, str] = {}


def _keyword_params(fn: Callable[..., Any]) -> tuple[str, ...]:
  """The parameters of ``fn`` after the first that can be passed by keyword."""
  try:
    parameters = list(inspect.signature(fn).parameters.values())
  except (TypeError, ValueError):  # No signature (some builtins): no parameters.
    return ()
  kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
  return tuple(p.name for p in parameters[1:] if p.kind in kinds)


def _resolve(fn: str, name: object, *, arg: str = "name") -> Activation:
  """The entry for a canonical name or alias, with jdrop's errors for anything else.

  ``fn`` is a function of this module (``"get"``) or a full public name
  (``"jdrop.both_orders"``), and ``arg`` the argument that held ``name``.
  """
  if not fn.startswith("jdrop."):
    fn = _PREFIX + fn
  if not isinstance(name, str):
    raise errors.type_error(
      fn,
      arg,
      "must be a str naming an activation",
      errors.short(name),
      "Pass e.g. name='relu'; see jdrop.activations.names().",
    )
  canonical = _ALIASES.get(name, name)
  if canonical in _ENTRIES:
    return _ENTRIES[canonical]
  close = difflib.get_close_matches(name, sorted({*_ENTRIES, *_ALIASES}), n=3)
  hint = f"Did you mean {', '.join(map(repr, close))}? " if close else ""
  raise errors.value_error(
    fn,
    arg,
    "is not a registered activation",
    name,
    hint + "See jdrop.activations.names().",
  )


def lookup(fn: str, arg: str, name: object) -> Callable[[ArrayLike], jax.Array]:
  """``get(name)`` for another public function ``fn`` whose argument ``arg`` held ``name``."""
  return _resolve(fn, name, arg=arg).fn


def get(name: str, **params: Any) -> Callable[[ArrayLike], jax.Array]:
  """Returns the activation registered as ``name``, configured by ``params``.

  Without parameters this is the registered function itself: ``get("relu")`` is
  :func:`jax.nn.relu`. With parameters it is ``functools.partial(parametric, **params)``,
  where ``parametric`` is the entry's :attr:`Activation.parametric` (e.g. ``get("relu",
  max_value=6.)`` binds :func:`parametric_relu`, ``get("leaky_relu", negative_slope=0.2)``
  binds :func:`jax.nn.leaky_relu`). A parameter that takes numbers is refused anything else
  here; its value (a negative slope, say) is checked when the function is called.

  Args:
    name: a canonical name (see :func:`names`) or an alias such as ``"swish"``.
    **params: keyword parameters; :attr:`Activation.params` lists the accepted ones.

  Returns:
    A function of one array.

  Raises:
    TypeError: if ``name`` is not a str, or a parameter is not accepted or not numbers.
    ValueError: if ``name`` is not registered (the message lists close matches).

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from jdrop import activations
    >>> activations.get("relu") is jax.nn.relu
    True
    >>> activations.get("swish") is jax.nn.silu
    True
    >>> activations.get("relu", max_value=1.)(jnp.array([-1., 0.5, 2.]))
    Array([0. , 0.5, 1. ], dtype=float32)
  """
  entry = _resolve("get", name)
  if not params:
    return entry.fn
  unknown = sorted(set(params) - set(entry.params))
  if unknown:
    accepted = f"accepts {', '.join(entry.params)}" if entry.params else "takes no parameters"
    close = difflib.get_close_matches(unknown[0], entry.params, n=1)
    hint = f"Did you mean {close[0]!r}? " if close else ""
    raise errors.type_error(
      _PREFIX + "get",
      unknown[0],
      f"is not a parameter of activation {entry.name!r}",
      errors.short(params[unknown[0]]),
      f"{hint}{entry.name!r} {accepted}.",
    )
  for param, value in params.items():
    _check_param(entry, param, value)
  return functools.partial(entry.parametric or entry.fn, **params)


def _check_param(entry: Activation, param: str, value: Any) -> None:
  """A parameter whose default is None or numbers (every one of the built-in activations:
  a slope, a bool, an axis, a ``where`` mask) must be given None or numbers: anything else
  would fail later, deep inside JAX. Traced values pass."""
  signature = inspect.signature(entry.parametric or entry.fn).parameters.get(param)
  default = None if signature is None else signature.default
  if value is None or masks.is_traced(value) or not _numeric(default):
    return
  if not _numeric(value):
    raise errors.type_error(
      _PREFIX + "get",
      param,
      f"must be a number, an array of numbers or None (a parameter of {entry.name!r})",
      errors.short(value),
      f"Pass e.g. {param}={default!r}, its default.",
    )


def _numeric(value: Any) -> bool:
  """None, a bool, a number, or an array or sequence of them."""
  if value is None:
    return True
  try:
    return np.asarray(value).dtype.kind in "biuf"
  except (TypeError, ValueError):  # a ragged sequence, and the like
    return False


def names() -> tuple[str, ...]:
  """Returns the canonical names of the registered activations, sorted, without aliases.

  Examples:
    >>> from jdrop import activations
    >>> "gelu_exact" in activations.names(), "swish" in activations.names()
    (True, False)
  """
  return tuple(sorted(_ENTRIES))


def info(name: str) -> Activation:
  """Returns the registry entry for a canonical name or alias.

  Raises:
    TypeError: if ``name`` is not a str.
    ValueError: if ``name`` is not registered (the message lists close matches).

  Examples:
    >>> from jdrop import activations
    >>> entry = activations.info("swish")
    >>> entry.name, entry.source, entry.elementwise, entry.aliases
    ('silu', 'jax.nn', True, ('swish',))
  """
  return _resolve("info", name)


def is_elementwise(activation: object) -> bool | None:
  """What the registry says about ``activation`` (a name, or a registered function itself):
  whether it is elementwise; None for a name or callable the registry does not know."""
  if isinstance(activation, str):
    entry = _ENTRIES.get(_ALIASES.get(activation, activation))
    return None if entry is None else entry.elementwise
  for entry in _ENTRIES.values():
    if entry.fn is activation:
      return entry.elementwise
  return None


def _add(entry: Activation, *, overwrite: bool, fn: str = "register") -> Activation:
  """Adds ``entry``; only its own name may be replaced, and only with ``overwrite``."""
  if not isinstance(entry.name, str) or not entry.name:
    raise errors.type_error(
      _PREFIX + fn, "name", "must be a non-empty str", entry.name, "Pass e.g. name='my_activation'."
    )
  if not all(isinstance(alias, str) and alias for alias in entry.aliases):
    raise errors.type_error(
      _PREFIX + fn,
      "aliases",
      "must be non-empty strs",
      entry.aliases,
      "Pass e.g. aliases=('my_alias',).",
    )
  if len(set(entry.aliases) | {entry.name}) != len(entry.aliases) + 1:
    raise errors.value_error(
      _PREFIX + fn,
      "aliases",
      "must be distinct from each other and from the name",
      entry.aliases,
      "Remove the repeated names.",
    )
  if entry.name in _ALIASES:
    raise errors.value_error(
      _PREFIX + fn,
      "name",
      f"is an alias of {_ALIASES[entry.name]!r}",
      entry.name,
      f"Choose another name, or register {_ALIASES[entry.name]!r} itself.",
    )
  if entry.name in _ENTRIES and not overwrite:
    raise errors.value_error(
      _PREFIX + fn,
      "name",
      "is already registered",
      entry.name,
      "Pass overwrite=True to replace it, or choose another name.",
    )
  for alias in entry.aliases:
    owner = _ALIASES.get(alias, alias if alias in _ENTRIES else None)
    if owner is not None and owner != entry.name:
      raise errors.value_error(
        _PREFIX + fn,
        "aliases",
        f"contains a name taken by {owner!r}",
        alias,
        "Choose another alias.",
      )
  if entry.name in _ENTRIES:
    _remove(entry.name)
  _ENTRIES[entry.name] = entry
  _ALIASES.update(dict.fromkeys(entry.aliases, entry.name))
  return entry


def _remove(name: str) -> Activation:
  entry = _ENTRIES.pop(name)
  for alias in entry.aliases:
    del _ALIASES[alias]
  return entry


def register(
  name: str,
  fn: Callable[..., jax.Array],
  *,
  elementwise: bool = True,
  description: str = "",
  aliases: Sequence[str] = (),
  overwrite: bool = False,
) -> Activation:
  """Registers a user activation so that :func:`get`, :func:`info` and :func:`names` see it.

  The keyword parameters :func:`get` accepts for it are those of ``fn`` after the first.
  Replacing an entry (``overwrite=True``) also drops the old entry's aliases.

  Args:
    name: the canonical name; must not be registered yet (as a name or alias) unless
      ``overwrite`` is True (names only: an alias cannot be overwritten).
    fn: the activation, callable on one array (more parameters by keyword).
    elementwise: whether each output element depends only on the same input element.
    description: one line.
    aliases: other names for it; none may be taken.
    overwrite: whether to replace an existing entry called ``name``.

  Returns:
    The new :class:`Activation`, with ``source="user"``.

  Raises:
    TypeError: if ``name`` or an alias is not a non-empty str, ``fn`` is not callable, or
      ``elementwise`` is not a bool.
    ValueError: if ``name`` or an alias is taken.

  Examples:
    >>> import jax.numpy as jnp
    >>> from jdrop import activations
    >>> def cube(x, scale=1.):
    ...   return scale * x ** 3
    >>> activations.register("jdrop_doc_cube", cube, description="scale * x^3").params
    ('scale',)
    >>> activations.get("jdrop_doc_cube", scale=2.)(jnp.array([1., 2.]))
    Array([ 2., 16.], dtype=float32)
    >>> activations.unregister("jdrop_doc_cube").name
    'jdrop_doc_cube'
  """
  if not callable(fn):
    raise errors.type_error(
      _PREFIX + "register",
      "fn",
      "must be callable",
      errors.short(fn),
      "Pass the activation function itself, e.g. fn=jax.nn.relu.",
    )
  if not isinstance(elementwise, bool):
    raise errors.type_error(
      _PREFIX + "register",
      "elementwise",
      "must be a bool",
      elementwise,
      "Pass elementwise=False for functions like softmax.",
    )
  if isinstance(aliases, str):
    raise errors.type_error(
      _PREFIX + "register",
      "aliases",
      "must be a sequence of str",
      aliases,
      f"Pass aliases=({aliases!r},).",
    )
  entry = Activation(
    name=name,
    fn=fn,
    elementwise=elementwise,
    source="user",
    aliases=tuple(aliases),
    description=description,
    params=_keyword_params(fn),
  )
  return _add(entry, overwrite=overwrite)


def unregister(name: str) -> Activation:
  """Removes the entry registered as canonical ``name`` (with its aliases) and returns it.

  Raises:
    TypeError: if ``name`` is not a str.
    ValueError: if ``name`` is not registered, or is an alias.

  Examples:
    >>> from jdrop import activations
    >>> _ = activations.register("jdrop_doc_square", lambda x: x * x)
    >>> activations.unregister("jdrop_doc_square").source
    'user'
  """
  entry = _resolve("unregister", name)
  if entry.name != name:
    raise errors.value_error(
      _PREFIX + "unregister",
      "name",
      f"is an alias of {entry.name!r}",
      name,
      f"Pass the canonical name {entry.name!r}.",
    )
  return _remove(name)


def _builtin(
  name: str,
  fn: Callable[..., jax.Array],
  source: str,
  description: str,
  *,
  elementwise: bool = True,
  aliases: tuple[str, ...] = (),
  parametric: Callable[..., jax.Array] | None = None,
  params: tuple[str, ...] | None = None,
) -> None:
  if params is None:
    params = _keyword_params(parametric or fn)
  _add(
    Activation(name, fn, elementwise, source, aliases, description, params, parametric),
    overwrite=False,
    fn="_builtin",
  )


# jax.nn, reused as is.
_builtin("celu", jax.nn.celu, "jax.nn", "Continuously differentiable ELU (Barron, 2017).")
_builtin("elu", jax.nn.elu, "jax.nn", "Exponential linear unit (Clevert et al., 2016).")
_builtin("gelu", jax.nn.gelu, "jax.nn", "GELU, tanh approximation (jax.nn's default).")
_builtin(
  "gelu_exact",
  functools.partial(jax.nn.gelu, approximate=False),
  "jax.nn",
  "GELU with the exact erf form (PyTorch's default).",
  params=(),
)
_builtin(
  "glu",
  jax.nn.glu,
  "jax.nn",
  "Gated linear unit: a * sigmoid(b), halves of `axis`.",
  elementwise=False,
)
_builtin("hard_sigmoid", jax.nn.hard_sigmoid, "jax.nn", "relu6(x + 3) / 6.")
_builtin(
  "hard_silu",
  jax.nn.hard_silu,
  "jax.nn",
  "x * hard_sigmoid(x) (MobileNetV3).",
  aliases=("hard_swish",),
)
_builtin(
  "hard_tanh",
  jax.nn.hard_tanh,
  "jax.nn",
  "Clip to [-1, 1]; min_val/max_val give PyTorch's Hardtanh.",
  parametric=parametric_hard_tanh,
)
_builtin("identity", jax.nn.identity, "jax.nn", "x (Keras calls it 'linear').", aliases=("linear",))
_builtin(
  "leaky_relu",
  jax.nn.leaky_relu,
  "jax.nn",
  "x for x >= 0, negative_slope * x otherwise (default 0.01).",
)
_builtin("log_sigmoid", jax.nn.log_sigmoid, "jax.nn", "log(sigmoid(x)) = -softplus(-x).")
_builtin(
  "log_softmax",
  jax.nn.log_softmax,
  "jax.nn",
  "Logarithm of softmax along `axis`.",
  elementwise=False,
)
_builtin("mish", jax.nn.mish, "jax.nn", "x * tanh(softplus(x)) (Misra, 2019).")
_builtin(
  "relu",
  jax.nn.relu,
  "jax.nn",
  "max(x, 0); negative_slope/max_value/threshold give Keras' relu.",
  parametric=parametric_relu,
)
_builtin("relu6", jax.nn.relu6, "jax.nn", "min(max(x, 0), 6).")
_builtin(
  "selu", jax.nn.selu, "jax.nn", "Scaled ELU (Klambauer et al., 2017); pair it with alpha dropout."
)
_builtin("sigmoid", jax.nn.sigmoid, "jax.nn", "Logistic function 1 / (1 + exp(-x)).")
_builtin("silu", jax.nn.silu, "jax.nn", "x * sigmoid(x), also called swish.", aliases=("swish",))
_builtin("soft_sign", jax.nn.soft_sign, "jax.nn", "x / (|x| + 1).")
_builtin(
  "softmax", jax.nn.softmax, "jax.nn", "Normalised exponential along `axis`.", elementwise=False
)
_builtin(
  "softplus",
  jax.nn.softplus,
  "jax.nn",
  "log(1 + exp(x)); beta/threshold give PyTorch's Softplus.",
  parametric=parametric_softplus,
)
_builtin(
  "sparse_plus",
  jax.nn.sparse_plus,
  "jax.nn",
  "Piecewise-quadratic smooth relu: 0, (x + 1)^2 / 4, x.",
)
_builtin(
  "sparse_sigmoid", jax.nn.sparse_sigmoid, "jax.nn", "Derivative of sparse_plus: 0, (x + 1) / 2, 1."
)
_builtin("squareplus", jax.nn.squareplus, "jax.nn", "(x + sqrt(x^2 + b)) / 2 (So, 2021).")
_builtin("tanh", jax.nn.tanh, "jax.nn", "Hyperbolic tangent.")

# Written here, with PyTorch's or Keras' conventions.
_builtin(
  "threshold",
  functools.partial(threshold, threshold=0.0, value=0.0),
  "pytorch",
  "x if x > threshold else value (registry default threshold=0, value=0).",
)
_builtin("hard_shrink", hard_shrink, "pytorch", "x if |x| > lambd else 0 (default 0.5).")
_builtin(
  "soft_shrink", soft_shrink, "pytorch", "x - lambd * sign(x) if |x| > lambd else 0 (default 0.5)."
)
_builtin("tanh_shrink", tanh_shrink, "pytorch", "x - tanh(x).")
_builtin(
  "prelu",
  functools.partial(prelu, slope=0.25),
  "pytorch",
  "x for x >= 0, slope * x otherwise; learnable slope (default 0.25).",
)
_builtin(
  "rrelu",
  functools.partial(rrelu, None, deterministic=True),
  "pytorch",
  "Randomized leaky relu in eval mode: slope (lower + upper) / 2.",
  params=("lower", "upper"),
)
_builtin("softmin", softmin, "pytorch", "softmax(-x) along `axis`.", elementwise=False)
_builtin("exponential", exponential, "keras", "exp(x).")
_builtin("quick_gelu", quick_gelu, "jdrop", "x * sigmoid(1.702 x), CLIP's GELU approximation.")
_builtin("abs", abs, "jdrop", "|x|, positively homogeneous.")
