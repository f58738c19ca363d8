"""An adversarial zoo of functions with hand-derived truths for ``jdrop.check``.

A data module (no tests here): :data:`ZOO` is a list of :class:`Case`. Each case says what
``jdrop.check(case.fn, rate=case.rate, shape=case.shape)`` ought to conclude:

* ``pathwise``: ``f(D(x)) == D(f(x))`` for every real ``x`` and every mask (same mask both
  sides), ``D(x) = m * x / q``, ``q = 1 - rate``; for ``rate=None`` at every rate in (0, 1).
* ``expectation``: ``E_m f(D(x)) == f(x)`` (independent Bernoulli(q) keeps per element).

Truth values: ``"holds"`` (only "proved" or "unknown" are acceptable), ``"fails"`` (only
"refuted" or "unknown"), ``"undefined"`` (f is not a real function at some real input: an
undefined operation such as ``log(0)``, ``0/0``, ``x/0``, or a NaN/inf constant reaches the
value; "refuted" or "unknown" are acceptable, "proved" is not).

Conventions, as in DESIGN.md ("The mathematics", "The checker's verdicts"):

* real arithmetic, every literal of the jaxpr at its exact float32 value (``1e-7`` is
  ``float32(1e-7)``, ``0.1 + 0.2 - 0.3`` is not 0, ``2 * jnp.pi`` is not 2 pi); constant
  sub-expressions that JAX traces (``jnp.log(2.)`` is a ``log 2.0`` equation in jax 0.10) are
  real operations on their exact literals, while a Python float closed over (``LN2_F32``) is a
  rounded literal;
* a change of float precision (``astype(bfloat16)``, ``reduce_precision``) is the identity
  over the reals (float-level effects are a separate finding); ``isnan``/``isfinite`` of a
  real number are False/True; float-to-int conversion truncates toward zero;
* a ``where``/``select`` whose untaken branch is undefined (``where(x == 0, 0, x**2/|x|)``) is
  defined: only the selected value counts; comparing a real with a constant ``inf``
  (``nan_to_num``'s ``x == inf``) is False, as for every real; arithmetic that produces or
  consumes a NaN or an infinity (``0 * inf``, ``inf - inf``, ``log(0)``, ``x / 0``,
  ``nan_to_num(x / x)``) makes f undefined; ``max``/``min``/``exp`` of exact infinities
  follow the extended reals (``max(y, -inf) = y``, ``min(1, inf) = 1``, ``exp(-inf) = 0``).

Every closed-over array is exactly representable in float32. Every function traces on a
float32 array of shape ``case.shape or (4,)`` and returns the same shape and dtype.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jdrop

H, F, U = "holds", "fails", "undefined"


@dataclasses.dataclass(frozen=True)
class Case:
  """One function and the true answers for it (see the module docstring)."""

  name: str
  fn: Callable
  rate: float | None
  pathwise: str
  expectation: str
  shape: tuple | None = None
  note: str = ""
  category: str = ""


ZOO: list[Case] = []
_CATEGORY = [""]


def _section(name: str) -> None:
  _CATEGORY[0] = name


def _add(name, fn, pathwise, expectation, *, rate=None, shape=None, note=""):
  if any(c.name == name for c in ZOO):
    raise ValueError(f"duplicate case name {name!r}")
  ZOO.append(Case(name, fn, rate, pathwise, expectation, shape, note, _CATEGORY[0]))


relu = jax.nn.relu
f32 = jnp.float32

# Closed-over constants (all exact in float32).
W_DENSE = np.array(
  [[1.0, -0.5, 0.25, 2.0], [0.0, 1.5, -1.0, 0.5], [0.75, 0.0, 1.0, -2.0], [-1.0, 0.125, 0.5, 1.0]],
  dtype=np.float32,
)
W_DIAG = np.diag(np.array([2.0, -0.5, 0.0, 3.0], dtype=np.float32))
W_NEAR_DIAG = (np.eye(4) + 2.0**-30 * (np.ones((4, 4)) - np.eye(4))).astype(np.float32)
SLOPES = np.array([0.1, 0.2, -1.0, 0.0], dtype=np.float32)
LN2_F32 = float(np.float32(math.log(2.0)))  # a rounded literal: != ln 2
FMAX = float(np.finfo(np.float32).max)
LOG_INV_09_F32 = float(np.float32(math.log(1 / 0.9)))


# =============================================================================================
# 1. Odd spellings of relu / leaky relu / abs / identity / scalings, and near misses.
_section("odd spellings of relu")


@jax.custom_jvp
def _cj_relu(v):
  return jnp.maximum(v, 0.0)


@_cj_relu.defjvp
def _cj_relu_jvp(primals, tangents):
  (v,), (dv,) = primals, tangents
  return _cj_relu(v), jnp.where(v > 0, dv, 0.0)


@jax.custom_vjp
def _cv_abs(v):
  return jnp.abs(v)


_cv_abs.defvjp(lambda v: (jnp.abs(v), v), lambda v, g: (jnp.sign(v) * g,))


_add("relu_maximum", lambda x: jnp.maximum(x, 0.0), H, H)
_add("relu_mul_bool", lambda x: x * (x > 0), H, H)
_add("relu_where", lambda x: jnp.where(x > 0, x, 0.0), H, H)
_add("relu_half_abs", lambda x: (x + jnp.abs(x)) / 2, H, H)
_add("relu_clip_min", lambda x: jnp.clip(x, 0), H, H)
_add("relu_heaviside0", lambda x: x * jnp.heaviside(x, 0.0), H, H)
_add("relu_heaviside_half", lambda x: x * jnp.heaviside(x, 0.5), H, H, note="x*0.5 at 0 is 0")
_add("leaky_select", lambda x: jnp.select([x > 0, x < 0], [x, 0.1 * x], 0.0), H, H)
_add(
  "prelu_piecewise",
  lambda x: jnp.piecewise(x, [x < 0, x >= 0], [lambda t: -2 * t, lambda t: 3 * t]),
  H,
  H,
  note="3 max(t,0) - 2 min(t,0); jnp.piecewise lowers to argmax/cumsum/select_n",
)
_add("relu_lax_max", lambda x: lax.max(x, jnp.zeros_like(x)), H, H)
_add("relu_fmax", lambda x: jnp.fmax(x, 0.0), H, H)
_add("relu_sqrt_sq", lambda x: (x + jnp.sqrt(x**2)) / 2, H, H)
_add("identity_cbrt_cube", lambda x: jnp.cbrt(x**3), H, H)
_add("identity_sign_abs", lambda x: jnp.sign(x) * jnp.abs(x), H, H)
_add("abs_x_sign", lambda x: x * jnp.sign(x), H, H)
_add("abs_stack_max", lambda x: jnp.stack([x, -x]).max(0), H, H)
_add(
  "relu_sort_pair",
  lambda x: jnp.sort(jnp.stack([x, jnp.zeros_like(x)]), axis=0)[1],
  H,
  H,
  note="sort along the stacking axis: max(x_i, 0), elementwise",
)
_add("relu_fori3", lambda x: lax.fori_loop(0, 3, lambda i, v: relu(v), x), H, H)
_add(
  "leaky_while2",
  lambda x: lax.while_loop(
    lambda c: c[0] < 2, lambda c: (c[0] + 1, jax.nn.leaky_relu(c[1], 0.5)), (0, x)
  )[1],
  H,
  H,
  note="leaky 0.5 twice = leaky 0.25",
)
_add("relu_scan4", lambda x: lax.scan(lambda c, _: (relu(c), None), x, None, length=4)[0], H, H)
_add(
  "relu_cond_traced_true",
  lambda x: lax.cond(jnp.asarray(2.0) > 1.0, relu, lambda v: v, x),
  H,
  H,
  note="predicate is gt 2.0 1.0 in the jaxpr: True",
)
_add(
  "relu_cond_false_tanh",
  lambda x: lax.cond(jnp.asarray(0.0) > 1.0, jnp.tanh, relu, x),
  H,
  H,
  note="the untaken branch is tanh",
)
_add("relu_checkpoint", lambda x: jax.checkpoint(relu)(x), H, H)
_add("leaky02_jit", lambda x: jax.jit(lambda v: jax.nn.leaky_relu(v, 0.2))(x), H, H)
_add("relu_custom_jvp", lambda x: _cj_relu(x), H, H)
_add("abs_custom_vjp", lambda x: _cv_abs(x), H, H)
_add("relu_nan_to_num", lambda x: jnp.nan_to_num(relu(x)), H, H, note="no NaN is ever reached")
_add(
  "relu_reduce_precision_f32",
  lambda x: lax.reduce_precision(relu(x), exponent_bits=8, mantissa_bits=23),
  H,
  H,
  note="precision change = identity over the reals",
)
_add(
  "relu_bf16_roundtrip",
  lambda x: relu(x).astype(jnp.bfloat16).astype(f32),
  H,
  H,
  note="precision change = identity over the reals",
)
_add("identity_pow_1", lambda x: x**1.0, H, H, note="pow(x, 1.0) = x, also for x < 0")
_add("relu_power_1", lambda x: jnp.power(relu(x), 1.0), H, H)
_add("identity_where_x_eq_x", lambda x: x * jnp.where(x == x, 1.0, 0.0), H, H)
_add("relu_vmap_scalar", lambda x: jax.vmap(lambda s: jnp.where(s > 0, s, 0.0))(x), H, H)
_add(
  "relu_grad_half_relu_sq",
  lambda x: jax.vmap(jax.grad(lambda s: 0.5 * relu(s) ** 2))(x),
  H,
  H,
  note="d/ds relu(s)^2/2 = relu(s)",
)
_add("relu_jvp_self", lambda x: jax.jvp(relu, (x,), (x,))[1], H, H, note="relu'(x) x = relu(x)")
_add("abs_max_neg", lambda x: jnp.maximum(x, -x), H, H)
_add("prelu_2_m3", lambda x: jnp.where(x > 0, 2 * x, -3 * x), H, H)
_add("scale_m075", lambda x: -0.75 * x, H, H)
_add(
  "relu_times_1p1e7",
  lambda x: relu(x) * (1 + 1e-7),
  H,
  H,
  note="a near miss that is not one: float32(1.0000001) = 1 + 2**-23, still a scaling",
)
_add("relu_times_1p1e8", lambda x: relu(x) * (1 + 1e-8), H, H, note="float32(1+1e-8) = 1")
_add("elu_alpha0", lambda x: jax.nn.elu(x, alpha=0.0), H, H, note="0 * expm1(...) = 0: relu")
_add("leaky_minus1_is_abs", lambda x: jax.nn.leaky_relu(x, -1.0), H, H)
_add("max_x_1e30x", lambda x: jnp.maximum(x, 1e-30 * x), H, H, note="leaky, slope 1e-30")
_add(
  "leaky_denormal_slope",
  lambda x: jnp.where(x > 0, x, 1e-45 * x),
  H,
  H,
  note="float32(1e-45) = 2**-149, a denormal: still leaky",
)
_add(
  "relu_pow_1p1e8",
  lambda x: jnp.power(relu(x), 1.00000001),
  H,
  H,
  note="the exponent literal is float32(1.00000001) = 1.0",
)
# near misses
_add("relu_shift_1e7", lambda x: relu(x + 1e-7), F, F)
_add("max_1e30", lambda x: jnp.maximum(x, 1e-30), F, F)
_add(
  "leaky_above_1e5",
  lambda x: jnp.where(x > 1e-5, x, 0.01 * x),
  F,
  F,
  note="t = 1e-5 (f32): f(t/q) = t/q, f(t)/q = 0.01 t/q",
)
_add("relu_gt_1e6", lambda x: jnp.where(x > 1e-6, x, 0.0), F, F)
_add("x_tanh_1e6x", lambda x: x * jnp.tanh(1e6 * x), F, F)
_add("x_sigmoid_1e6x", lambda x: x * jax.nn.sigmoid(1e6 * x), F, F)
_add("softplus_sharp", lambda x: jax.nn.softplus(1e4 * x) / 1e4, F, F)
_add(
  "relu_minus_relu_1e20",
  lambda x: relu(x) - relu(x - 1e-20),
  F,
  F,
  note="= clip(x, 0, 1e-20): bounded",
)
_add(
  "relu_pow_1p1e7",
  lambda x: jnp.power(relu(x), 1.0000001),
  F,
  F,
  note="exponent float32(1.0000001) = 1 + 2**-23: degree != 1",
)
_add("relu_plus_jump_1e30_at_1", lambda x: relu(x) + 1e-30 * (x > 1.0), F, F)
_add(
  "relu_plus_jump_1e30_at_0",
  lambda x: relu(x) + 1e-30 * (x > 0),
  F,
  F,
  note="t > 0: f(t/q) = t/q + c, f(t)/q = (t + c)/q",
)

# =============================================================================================
# 2. Piecewise-linear functions with tiny breaks and jumps; clip / hard_tanh; affine c + relu.
_section("piecewise linear, tiny breaks")

_add("where_gt_1e20", lambda x: jnp.where(x > 1e-20, x, 0.0), F, F)
_add("clip_1e30", lambda x: jnp.clip(x, -1e30, 1e30), F, F, note="clips at float32(1e30)")
_add("clip_f32max", lambda x: jnp.clip(x, -FMAX, FMAX), F, F, note="clips at 3.4e38 over reals")
_add("hard_tanh", jax.nn.hard_tanh, F, F)
_add("relu6", jax.nn.relu6, F, F)
_add("hard_sigmoid", jax.nn.hard_sigmoid, F, F)
_add("one_plus_relu", lambda x: 1 + relu(x), F, H)
_add("abs_minus_2", lambda x: jnp.abs(x) - 2, F, H)
_add("relu_plus_1e30", lambda x: relu(x) + 1e-30, F, H)
_add("leaky03_minus_7", lambda x: jnp.where(x > 0, x, 0.3 * x) - 7.0, F, H)
_add("identity_max_plus_min", lambda x: jnp.maximum(x, 0) + jnp.minimum(x, 0), H, H)
_add("max_2x_x", lambda x: jnp.maximum(2 * x, x), H, H)
_add("abs_max3", lambda x: jnp.maximum(jnp.maximum(x, -x), 0.5 * x), H, H)
_add("relu_min_of_relus", lambda x: jnp.minimum(relu(x), relu(2 * x)), H, H)
_add("max_x_xplus1e30", lambda x: jnp.maximum(x, x + 1e-30), F, H, note="= x + 1e-30")
_add("relu_cancel_breaks", lambda x: relu(x - 1) - relu(x - 1) + relu(x), H, H)
_add(
  "identity_cancel_shift",
  lambda x: relu(x + 1) - relu(-(x + 1)) - 1,
  H,
  H,
  note="relu(y) - relu(-y) = y",
)
_add("abs_diff_clip", lambda x: jnp.abs(x + 1) - jnp.abs(x - 1), F, F, note="= clip(2x, -2, 2)")
_add("jump_at_0_to_5", lambda x: jnp.where(x > 0, x, jnp.where(x < 0, 2 * x, 5.0)), F, F)
_add("where_eq0_1", lambda x: jnp.where(x == 0, 1.0, x), F, F, note="E = t + 1 - q at t != 0")
_add("where_eq0_0_else_xp1", lambda x: jnp.where(x == 0, 0.0, x + 1), F, F)
_add("hole_at_1", lambda x: jnp.where(x == 1.0, 0.0, x), F, F, note="t = q: f(1) = 0 != q/q")
_add("hole_at_1e30", lambda x: jnp.where(x == 1e-30, 0.0, x), F, F)
_add("x_gate_gt_neg_tiny", lambda x: x * (x > -1e-30), F, F)
_add("relu_gate_gt_neg_tiny", lambda x: relu(x) * (x > -1e-30), H, H)
_add("break_at_1e6", lambda x: jnp.where(x > 1e6, 2 * x, x), F, F)
_add("leaky_1e30_where", lambda x: jnp.where(x > 0, x, 1e-30 * x), H, H)
_add(
  "leaky_two_wheres",
  lambda x: jnp.where(x > 0, x, 0.0) + jnp.where(x < 0, 1e-30 * x, 0.0),
  H,
  H,
)
_add("leaky_neg_tiny", lambda x: jnp.maximum(x, 0) - 1e-30 * jnp.minimum(x, 0), H, H)
_add("leaky_ge", lambda x: jnp.where(x >= 0, x, 2 * x), H, H)
_add("min0_clip_max", lambda x: jnp.clip(x, None, 0.0), H, H)
_add(
  "prelu_per_position",
  lambda x: jnp.where(x > 0, x, SLOPES * x),
  H,
  H,
  note="a different slope per position",
)
_add("shift_last_position", lambda x: x + jnp.array([0.0, 0.0, 0.0, 1e-30], f32), F, H)
_add("break_last_position", lambda x: jnp.where(x > jnp.array([0, 0, 0, 1e-20], f32), x, 0.0), F, F)
_add("relu_dyadic_sum", lambda x: 0.5 * relu(x) + 0.25 * relu(x) + 0.25 * relu(x), H, H)
_add("identity_add_sub_same", lambda x: (x + 0.1) - 0.1, H, H)
_add(
  "affine_01_02_03",
  lambda x: x + 0.1 + 0.2 - 0.3,
  F,
  H,
  note="float32 literals: 0.1+0.2-0.3 = -7.450580596923828125e-9 != 0",
)
_add("scale_01_10", lambda x: x * 0.1 * 10, H, H, note="scaling by 0.1f*10 != 1, still linear")
_add("relu_relu_minus_tiny", lambda x: relu(relu(x) - 1e-30), F, F)
_add("soft_threshold", lambda x: jnp.sign(x) * relu(jnp.abs(x) - 1e-3), F, F)
_add("hard_shrink", lambda x: jnp.where(jnp.abs(x) > 1e-3, x, 0.0), F, F)
_add("soft_threshold_zero", lambda x: jnp.sign(x) * relu(jnp.abs(x) - 0.0), H, H)
_add("leaky_via_abs_mix", lambda x: 0.6 * x + 0.4 * jnp.abs(x), H, H)

# =============================================================================================
# 3. Non-finite holes and where guards.
_section("non-finite holes")

_add("nan_hole_at_0", lambda x: x * jnp.where(x == 0, jnp.nan, 1.0), U, U)
_add("inf_for_nonpos", lambda x: x * jnp.where(x > 0, 1.0, jnp.inf), U, U)
_add("zero_times_log", lambda x: x + 0 * jnp.log(x), U, U)
_add("where_log0", lambda x: jnp.where(x > 0, x, jnp.log(0.0)), U, U)
_add("x_div_x_times_x", lambda x: x / x * x, U, U)
_add("zero_x_div_x", lambda x: 0 * x / x, U, U)
_add(
  "guarded_abs_sq_over_abs",
  lambda x: jnp.where(x == 0, 0.0, x**2 / jnp.abs(x)),
  H,
  H,
  note="= |x| everywhere; 0/0 only in the untaken branch",
)
_add("guarded_identity_xx_over_x", lambda x: jnp.where(x == 0, 0.0, x * x / x), H, H)
_add("relu_times_nan_gate", lambda x: relu(x) * jnp.where(x > 0, 1.0, jnp.nan), U, U)
_add("guarded_log", lambda x: jnp.where(x > 0, jnp.log(x), 0.0), F, F)
_add("guarded_sqrt_sq", lambda x: jnp.where(x > 0, jnp.sqrt(x) ** 2, 0.0), H, H)
_add("sqrt_relu_sq", lambda x: jnp.sqrt(relu(x)) ** 2, H, H)
_add("sqrt_then_sq", lambda x: jnp.sqrt(x) ** 2, U, U)
_add("exp_log", lambda x: jnp.exp(jnp.log(x)), U, U)
_add("exp_log_abs_sign", lambda x: jnp.exp(jnp.log(jnp.abs(x))) * jnp.sign(x), U, U)
_add(
  "guarded_exp_log_abs_sign",
  lambda x: jnp.where(x == 0, 0.0, jnp.exp(jnp.log(jnp.abs(x))) * jnp.sign(x)),
  H,
  H,
)
_add("isfinite_gate", lambda x: x * jnp.isfinite(x), H, H)
_add("isnan_gate_is_zero", lambda x: x * jnp.isnan(x), H, H, note="isnan(real) = False: f = 0")
_add(
  "nan_to_num_x_div_x",
  lambda x: jnp.nan_to_num(x / x) * x,
  U,
  U,
  note="0/0 is computed at x = 0 and its value is consumed (not a where guard)",
)
_add("x_recip_x_x", lambda x: x * (1 / x) * x, U, U)
_add("log_exp", lambda x: jnp.log(jnp.exp(x)), H, H)
_add("log1p_expm1", lambda x: jnp.log1p(jnp.expm1(x)), H, H)
_add("arctanh_tanh", lambda x: jnp.arctanh(jnp.tanh(x)), H, H)
_add("pole_at_1e3", lambda x: x + 0 * (1 / (x - 1e-3)), U, U, note="pole at x = float32(1e-3)")
_add("relu_plus_0_log_1p_sq", lambda x: relu(x) + 0 * jnp.log(1 + x**2), H, H)
_add("relu_plus_0_log_sq", lambda x: relu(x) + 0 * jnp.log(x**2), U, U)
_add("relu_exp_neg_inv_sq", lambda x: relu(x) * jnp.exp(-1 / x**2), U, U)
_add("guarded_flat_bump", lambda x: jnp.where(x == 0, 0.0, x * jnp.exp(-1 / x**2)), F, F)
_add("recip_recip", lambda x: 1 / (1 / x), U, U)
_add("int_pow_0_times_x", lambda x: x**0 * x, H, H, note="integer_pow[y=0] = 1")
_add("neg_pow_times_sq", lambda x: x**-1 * x**2, U, U)
_add("guarded_neg_pow", lambda x: jnp.where(x != 0, x**-1, 0.0) * x * x, H, H)
_add("arcsin_sin", lambda x: jnp.arcsin(jnp.sin(x)), F, F)
_add("log_relu", lambda x: jnp.log(relu(x)), U, U)
_add("sign_over_sign", lambda x: jnp.sign(x) / jnp.sign(x) * x, U, U)
_add(
  "logsumexp_singleton",
  lambda x: jax.nn.logsumexp(x[:, None], axis=1),
  H,
  H,
  note="logsumexp of one value is that value",
)
_add(
  "softsign_roundtrip",
  lambda x: x / (1 + jnp.abs(x)) * (1 + jnp.abs(x)),
  H,
  H,
)
_add("pole_at_abs_1", lambda x: x / (1 - jnp.abs(x)) * (1 - jnp.abs(x)), U, U)
_add("relu_plus_0_log_sumsq", lambda x: relu(x) + 0 * jnp.log(jnp.sum(x**2)), U, U)
_add("div_by_sum", lambda x: x / jnp.sum(x), U, U, note="undefined where sum(x) = 0")
_add("div_by_maxabs", lambda x: x / jnp.max(jnp.abs(x)), U, U)

# =============================================================================================
# 4. Integer casts, floor / round / ceil.
_section("integer casts")

_add("abs_via_int8_sign", lambda x: jnp.sign(x).astype(jnp.int8).astype(f32) * x, H, H)
_add("trunc_int32", lambda x: x.astype(jnp.int32).astype(f32), F, F, note="t=1, q=3/4")
_add("floor_uint8_clip", lambda x: jnp.clip(x, 0, 200).astype(jnp.uint8).astype(f32), F, F)
_add("floor", jnp.floor, F, F)
_add("round", jnp.round, F, F)
_add("ceil", jnp.ceil, F, F)
_add("quantize_1000", lambda x: (x * 1000).astype(jnp.int32).astype(f32) / 1000, F, F)
_add("sign_via_int32", lambda x: jnp.sign(x).astype(jnp.int32).astype(f32), F, F)
_add("identity_floor_plus_frac", lambda x: jnp.floor(x) + (x - jnp.floor(x)), H, H)
_add("relu_plus_0_round", lambda x: jnp.round(x) * 0.0 + relu(x), H, H)
_add(
  "relu_gate_int_clip",
  lambda x: relu(x) * (jnp.clip(x, -2, 2).astype(jnp.int32) >= 0),
  H,
  H,
  note="trunc(clip(x)) >= 0 iff x > -1, where relu is already 0",
)
_add(
  "x_gate_int_clip",
  lambda x: x * (jnp.clip(x, -2.0, 2.0).astype(jnp.int32) >= 0),
  F,
  F,
  note="x for x > -1, 0 for x <= -1",
)
_add("relu_bool_astype", lambda x: x * (x > 0).astype(f32), H, H)
_add("identity_ne0_int", lambda x: x * (x != 0).astype(jnp.int32), H, H)
_add("floor_divide_1", lambda x: jnp.floor_divide(x, 1.0), F, F)
_add("remainder_1", lambda x: jnp.remainder(x, 1.0), F, F)
_add("rint_grid_2p30", lambda x: jnp.rint(x * 2.0**30) / 2.0**30, F, F)
_add(
  "identity_plus_0_int8",
  lambda x: jnp.clip(x, -100, 100).astype(jnp.int8).astype(f32) * 0 + x,
  H,
  H,
)
_add("abs_floor_sign", lambda x: jnp.floor(jnp.sign(x)) * x, H, H, note="floor(sign) = sign")
_add("relu_ceil_clip_gate", lambda x: x * jnp.ceil(jnp.clip(x, 0.0, 1.0)), H, H)

# =============================================================================================
# 5. Loops.
_section("loops")


def _double_then_halve(x):
  x = lax.fori_loop(0, 200, lambda i, v: v * 2.0, x)
  return lax.fori_loop(0, 200, lambda i, v: v * 0.5, x)


def _while_trips_count_positive_relu(x):
  n = 1 + jnp.sum(x > 0)
  return lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, relu(c[1])), (0, x))[1]


def _while_halve_until_small(x):
  cond = lambda c: (c[0] < 10) & (jnp.max(jnp.abs(c[1])) > 1)
  return lax.while_loop(cond, lambda c: (c[0] + 1, c[1] / 2), (0, x))[1]


def _while_abs_count_nonzero(x):
  n = jnp.sum(x != 0)
  return lax.while_loop(lambda c: c[0] < n, lambda c: (c[0] + 1, jnp.abs(c[1])), (0, x))[1]


def _fori_cond_alternate(x):
  body = lambda i, v: lax.cond(i % 2 == 0, relu, lambda u: 2 * u, v)
  return lax.fori_loop(0, 4, body, x)


_add("fori_plus1_twice", lambda x: lax.fori_loop(0, 2, lambda i, v: v + 1, x), F, H)
_add("fori_tanh3", lambda x: lax.fori_loop(0, 3, lambda i, v: jnp.tanh(v), x), F, F)
_add("fori_zero_trips_tanh", lambda x: lax.fori_loop(0, 0, lambda i, v: jnp.tanh(v), x), H, H)
_add(
  "fori_index_scale",
  lambda x: lax.fori_loop(0, 3, lambda i, v: v * (i + 1).astype(f32), x),
  H,
  H,
  note="6x",
)
_add(
  "fori_index_add",
  lambda x: lax.fori_loop(0, 3, lambda i, v: v + i.astype(f32), x),
  F,
  H,
  note="x + 3",
)
_add(
  "fori_double_halve_200",
  _double_then_halve,
  H,
  H,
  note="x * 2**200 * 2**-200 = x over the reals (overflows in float32)",
)
_add(
  "fori_leaky_1000",
  lambda x: lax.fori_loop(0, 1000, lambda i, v: jnp.where(v > 0, v, 0.5 * v), x),
  H,
  H,
  note="leaky with slope 2**-1000",
)
_add(
  "while_xdep_trips_relu",
  _while_trips_count_positive_relu,
  H,
  H,
  note="relu applied 1..5 times (trip count depends on x): relu",
)
_add(
  "while_halve_until_small",
  _while_halve_until_small,
  F,
  F,
  note="x=(1,0,0,0), q=1/2: f(2,0,0,0) = (1,0,0,0) != (2,0,0,0)",
)
_add(
  "while_abs_count_nonzero",
  _while_abs_count_nonzero,
  H,
  H,
  note="0 trips only at x = 0, where |x| = x: f = |x|",
)
_add(
  "scan_xs_mul",
  lambda x: lax.scan(lambda c, a: (c * a, None), x, jnp.array([2.0, 0.5, 3.0], f32))[0],
  H,
  H,
  note="3x",
)
_add(
  "scan_accumulate_relu",
  lambda x: lax.scan(
    lambda c, a: (c + a * relu(x), None), jnp.zeros_like(x), jnp.array([1.0, 2.0, -0.5], f32)
  )[0],
  H,
  H,
  note="2.5 relu(x)",
)
_add(
  "scan_ys_sum",
  lambda x: lax.scan(lambda c, a: (c, a * x), 0.0, jnp.arange(3.0, dtype=f32))[1].sum(0),
  H,
  H,
  note="3x",
)
_add(
  "scan_tanh_last",
  lambda x: lax.scan(lambda c, _: (jnp.tanh(c), jnp.tanh(c)), x, None, length=2)[1][-1],
  F,
  F,
)
_add("associative_scan_cumsum", lambda x: lax.associative_scan(jnp.add, x), F, H)
_add(
  "while_float_counter_double",
  lambda x: lax.while_loop(lambda c: c[0] < 2.5, lambda c: (c[0] + 1.0, 2 * c[1]), (0.0, x))[1],
  H,
  H,
  note="3 trips: 8x",
)
_add(
  "fori_relu_minus1_twice",
  lambda x: lax.fori_loop(0, 2, lambda i, v: relu(v) - 1, x),
  F,
  F,
  note="f(0) = -1; f - f(0) = relu(relu(x) - 1) not homogeneous",
)
_add("fori_cond_alternate", _fori_cond_alternate, H, H, note="relu, *2, relu, *2: 4 relu(x)")

# =============================================================================================
# 6. Non-elementwise maps.
_section("non-elementwise maps")

_add("softmax", jax.nn.softmax, F, F)
_add("log_softmax", jax.nn.log_softmax, F, F)
_add("center", lambda x: x - jnp.mean(x), F, H)
_add("cumsum", jnp.cumsum, F, H)
_add("reverse", lambda x: x[::-1], F, H)
_add("roll1", lambda x: jnp.roll(x, 1), F, H)
_add("sort", jnp.sort, F, F, note="E[min(D x)] = q**3 at x = (1,2,3,4)")
_add("x_times_sum", lambda x: x * jnp.sum(x), F, F)
_add("l2_normalize", lambda x: x / jnp.linalg.norm(x), U, U)
_add("normalize_plus1", lambda x: x / (jnp.linalg.norm(x) + 1), F, F)
_add("dense_W", lambda x: x @ W_DENSE, F, H)
_add("diag_matmul", lambda x: x @ W_DIAG, H, H)
_add("eye_matmul", lambda x: x @ jnp.eye(4, dtype=f32), H, H)
_add("near_diag_matmul", lambda x: x @ W_NEAR_DIAG, F, H, note="off-diagonal 2**-30")
_add("max_broadcast", lambda x: jnp.max(x) * jnp.ones_like(x), F, F)
_add(
  "layernorm",
  lambda x: (x - jnp.mean(x)) / jnp.sqrt(jnp.var(x) + 1e-5),
  F,
  F,
)
_add("standardize", lambda x: jax.nn.standardize(x), F, F)
_add("dus_zero_middle", lambda x: lax.dynamic_update_slice(x, jnp.zeros(2, f32), (1,)), H, H)
_add("at_set_0", lambda x: x.at[0].set(0.0), H, H)
_add("at_set_1", lambda x: x.at[0].set(1.0), F, H, note="constant + linear")
_add("at_add_other", lambda x: x.at[0].add(x[1]), F, H)
_add(
  "at_mul_other",
  lambda x: x.at[1].multiply(x[2]),
  F,
  H,
  note="E[(m1 x1/q)(m2 x2/q)] = x1 x2: distinct units are independent",
)
_add("x_times_reverse", lambda x: x * x[::-1], F, H, note="pairs (0,3), (1,2): distinct")
_add(
  "x_times_reverse_odd",
  lambda x: x * x[::-1],
  F,
  F,
  shape=(3,),
  note="the middle output is x1**2",
)
_add("x_times_roll", lambda x: x * jnp.roll(x, 1), F, H)
_add("prod_broadcast", lambda x: jnp.prod(x) * jnp.ones_like(x), F, H)
_add("sum_sq_broadcast", lambda x: jnp.sum(x) ** 2 * jnp.ones_like(x), F, F)
_add("center_uncenter", lambda x: x - jnp.mean(x) + jnp.mean(x), H, H)
_add(
  "conv_identity",
  lambda x: jnp.convolve(x, jnp.array([0.0, 1.0, 0.0], f32), mode="same"),
  H,
  H,
)
_add("conv_box", lambda x: jnp.convolve(x, jnp.array([1.0, 1.0, 1.0], f32), mode="same"), F, H)
_add("argmax_gate", lambda x: x * (x == jnp.max(x)), F, F)
_add("sign_of_sum", lambda x: jnp.where(jnp.sum(x) > 0, x, -x), F, F)
_add("where_sum_eq_sum", lambda x: jnp.where(jnp.sum(x) == jnp.sum(x), x, 0.0), H, H)
_add("maxabs_nonneg_gate", lambda x: x * (jnp.max(jnp.abs(x)) >= 0), H, H)
_add("eye_broadcast_sum", lambda x: (x[:, None] * jnp.eye(4, dtype=f32)).sum(1), H, H)
_add("ones_broadcast_mean", lambda x: (x[:, None] * jnp.ones((4, 4), f32)).sum(1) / 4, H, H)
_add("diag_diag", lambda x: jnp.diag(jnp.diag(x)), H, H)
_add("transpose_2x2", lambda x: x.T, F, H, shape=(2, 2))
_add("matmul_self_2x2", lambda x: x @ x, F, F, shape=(2, 2))
_add("cumsum_diff", lambda x: jnp.diff(jnp.cumsum(x), prepend=0.0), H, H)
_add(
  "abs_then_mix",
  lambda x: jnp.abs(x) @ W_DENSE,
  F,
  H,
  note="E|D(x)| = |x|, then a linear map",
)
_add("relu_mix_relu", lambda x: relu(relu(x) @ W_DENSE), F, F)
_add("gather_identity", lambda x: x[jnp.array([0, 1, 2, 3])], H, H)
_add("gather_permute", lambda x: x[jnp.array([1, 0, 3, 2])], F, H)
_add("take_duplicate", lambda x: jnp.take(x, jnp.array([0, 0, 2, 3])), F, H)
_add("where_even_positions", lambda x: jnp.where(jnp.arange(4) % 2 == 0, x, 0.0), H, H)
_add(
  "segment_sum_identity",
  lambda x: jax.ops.segment_sum(x, jnp.arange(4), num_segments=4),
  H,
  H,
)
_add(
  "scatter_add_duplicate",
  lambda x: x.at[jnp.array([0, 0])].add(x[:2]),
  F,
  H,
  note="output 0 = 2 x0 + x1",
)
_add("pad_slice", lambda x: jnp.pad(x, 1)[1:-1], H, H)
_add("concat_slices", lambda x: jnp.concatenate([x[:2], x[2:]]), H, H)
_add("concat_swap", lambda x: jnp.concatenate([x[2:], x[:2]]), F, H)
_add("diag_outer_ones", lambda x: jnp.diag(jnp.outer(x, jnp.ones(4, f32))), H, H)
_add("diag_outer_self", lambda x: jnp.diag(jnp.outer(x, x)), F, F, note="x**2")
_add(
  "triu_outer_rowsum",
  lambda x: jnp.triu(jnp.outer(x, x), 1).sum(1),
  F,
  H,
  note="x_i * sum_{j>i} x_j: products of distinct units",
)
_add("cummax", lambda x: lax.cummax(x), F, F)
_add("plus_0_sum", lambda x: x + 0 * jnp.sum(x), H, H, note="elementwise in truth: = x")
_add("times_1p0_reverse", lambda x: x * (1 + 0 * x[::-1]), H, H)
_add("where_sum_pos_relu_relu", lambda x: jnp.where(jnp.sum(x) > 0, relu(x), relu(x)), H, H)
_add("norm_broadcast", lambda x: jnp.linalg.norm(x) * jnp.ones_like(x), F, F)

# =============================================================================================
# 7. Fixed-rate exotics.
_section("fixed-rate exotics")


def _frac_log2(x):
  lg = jnp.log2(jnp.abs(x))
  return lg - jnp.floor(lg)


def _logper(x):
  """t (1 + frac(log2|t|)/4), 0 at 0: f(2t) = 2 f(t), f(4t) = 4 f(t)."""
  safe = jnp.where(x == 0, 1.0, x)
  return jnp.where(x == 0, 0.0, x * (1 + 0.25 * _frac_log2(safe)))


def _logper_unguarded(x):
  return x * (1 + 0.25 * _frac_log2(x))


def _logsin(x):
  safe = jnp.where(x == 0, 1.0, x)
  return jnp.where(x == 0, 0.0, x * (1 + 0.1 * jnp.sin(2 * jnp.pi * jnp.log2(jnp.abs(safe)))))


def _logsin_unguarded(x):
  return x * (1 + 0.1 * jnp.sin(2 * jnp.pi * jnp.log2(jnp.abs(x))))


def _pow2floor(x):
  safe = jnp.where(x == 0, 1.0, x)
  return jnp.where(x == 0, 0.0, jnp.sign(x) * jnp.exp2(jnp.floor(jnp.log2(jnp.abs(safe)))))


def _parity4(x):
  """t (1 + parity(floor(log2|t|))): f(4t) = 4 f(t), not f(2t) = 2 f(t)."""
  safe = jnp.where(x == 0, 1.0, x)
  k = jnp.floor(jnp.log2(jnp.abs(safe)))
  par = k - 2 * jnp.floor(k / 2)
  return jnp.where(x == 0, 0.0, x * (1 + par))


def _half_gate(x):
  safe = jnp.where(x == 0, 1.0, x)
  return jnp.where(x == 0, 0.0, x * (_frac_log2(safe) < 0.5))


def _logper_base09(x):
  safe = jnp.where(x == 0, 1.0, x)
  lg = jnp.log(jnp.abs(safe)) / LOG_INV_09_F32
  return jnp.where(x == 0, 0.0, x * (1 + 0.25 * (lg - jnp.floor(lg))))


_add("logper_frac_r05", _logper, H, H, rate=0.5)
_add("logper_frac_r075", _logper, H, H, rate=0.75, note="q = 1/4 = 2**-2")
_add("logper_frac_r025", _logper, F, F, rate=0.25)
_add("logper_frac_all", _logper, F, F)
_add("logper_frac_unguarded_r05", _logper_unguarded, U, U, rate=0.5, note="log2(0): NaN at 0")
_add(
  "logsin_f32_2pi_r05",
  _logsin,
  F,
  F,
  rate=0.5,
  note="the literal is float32(2 pi) = 6.2831854820251465 != 2 pi, so not 1-periodic in log2",
)
_add("logsin_unguarded_r05", _logsin_unguarded, U, U, rate=0.5)
_add("pow2floor_r05", _pow2floor, H, H, rate=0.5)
_add("pow2floor_r075", _pow2floor, H, H, rate=0.75)
_add("pow2floor_all", _pow2floor, F, F)
_add("parity4_r075", _parity4, H, H, rate=0.75)
_add("parity4_r05", _parity4, F, F, rate=0.5)
_add("half_gate_r05", _half_gate, H, H, rate=0.5)
_add("half_gate_r025", _half_gate, F, F, rate=0.25, note="t = 1.5: f = 0, f(2) = 2")
_add("one_plus_logper_r05", lambda x: 1 + _logper(x), F, H, rate=0.5)
_add(
  "logper_base09_r01",
  _logper_base09,
  F,
  F,
  rate=0.1,
  note="log(1/q)/float32(log(1/0.9)) is not an integer (irrational vs rational)",
)
_add("relu_r03", relu, H, H, rate=0.3)
_add("leaky_r09", lambda x: jax.nn.leaky_relu(x, 0.01), H, H, rate=0.9)
_add("tanh_r05", jnp.tanh, F, F, rate=0.5)
_add("x_plus_1_r05", lambda x: x + 1, F, H, rate=0.5)
_add("hard_tanh_r05", jax.nn.hard_tanh, F, F, rate=0.5)
_add("sqrt_abs_signed_r05", lambda x: jnp.sign(x) * jnp.sqrt(jnp.abs(x)), F, F, rate=0.5)
_add("center_r05", lambda x: x - jnp.mean(x), F, H, rate=0.5)
_add("at_set_1_r05", lambda x: x.at[0].set(1.0), F, H, rate=0.5)
_add("affine_01_02_03_r05", lambda x: x + 0.1 + 0.2 - 0.3, F, H, rate=0.5)

# =============================================================================================
# 8. Identities the algebra may miss; randomness with a constant key.
_section("identities, randomness")

_add("expand_square_zero", lambda x: (x + 1) ** 2 - x**2 - 2 * x - 1, H, H, note="= 0")
_add("expand_square_half_zero", lambda x: (x + 0.5) ** 2 - x**2 - x - 0.25, H, H, note="= 0")
_add(
  "expand_square_01",
  lambda x: (x + 0.1) ** 2 - x**2 - 0.2 * x - 0.01,
  F,
  H,
  note="0.2f = 2*0.1f so the x terms cancel; 0.1f**2 - 0.01f != 0: a non-zero constant",
)
_add("sin_cancel", lambda x: x + jnp.sin(x) - jnp.sin(x), H, H)
_add("exp_log_relu_p1", lambda x: jnp.exp(jnp.log(relu(x) + 1)) - 1, H, H)
_add("tanh_cancel", lambda x: jnp.tanh(x) - jnp.tanh(x) + x, H, H)
_add("two_x_minus_x", lambda x: 2 * x - x, H, H)
_add("x_sq_over_x", lambda x: x * x / x, U, U)
_add("sqrt_x_x", lambda x: jnp.sqrt(x * x), H, H)
_add(
  "logaddexp_minus_traced_log2",
  lambda x: jnp.logaddexp(x, x) - jnp.log(2.0),
  H,
  H,
  note="jnp.log(2.) is a traced `log 2.0`: exactly ln 2",
)
_add(
  "logaddexp_minus_f32_ln2",
  lambda x: jnp.logaddexp(x, x) - LN2_F32,
  F,
  H,
  note="ln 2 - float32(ln 2) ~ -1.9e-9: x + c",
)
_add("logaddexp_self_cancel", lambda x: jnp.logaddexp(x, x) - jnp.logaddexp(0 * x, 0 * x), H, H)
_add(
  "random_uniform_scale",
  lambda x: x * jax.random.uniform(jax.random.key(0), x.shape),
  H,
  H,
)
_add("jdrop_dropout_inside", lambda x: jdrop.dropout(jax.random.key(1), x, rate=0.3), H, H)
_add(
  "random_normal_shift",
  lambda x: x + jax.random.normal(jax.random.key(0), x.shape),
  F,
  H,
)
_add(
  "bernoulli_gate",
  lambda x: x * jax.random.bernoulli(jax.random.key(3), 0.5, x.shape),
  H,
  H,
)
_add(
  "relu_random_scale",
  lambda x: relu(x * jax.random.normal(jax.random.key(2), x.shape)),
  H,
  H,
)
_add(
  "tanh_random_scale",
  lambda x: jnp.tanh(x * jax.random.normal(jax.random.key(2), x.shape)),
  F,
  F,
)
_add("pythagoras", lambda x: jnp.sin(x) ** 2 + jnp.cos(x) ** 2 - 1 + x, H, H)
_add("hyperbolic", lambda x: jnp.cosh(x) ** 2 - jnp.sinh(x) ** 2 - 1 + relu(x), H, H)
_add("exp_exp_neg", lambda x: jnp.exp(x) * jnp.exp(-x) * x, H, H)
_add("sigmoid_symmetry", lambda x: x * jax.nn.sigmoid(x) + x * jax.nn.sigmoid(-x), H, H)
_add("softplus_odd_part", lambda x: jax.nn.softplus(x) - jax.nn.softplus(-x), H, H)
_add("silu_odd_part", lambda x: jax.nn.silu(x) - jax.nn.silu(-x), H, H)
_add(
  "gelu_exact_odd_part",
  lambda x: jax.nn.gelu(x, approximate=False) - jax.nn.gelu(-x, approximate=False),
  H,
  H,
)
_add("gelu_tanh_odd_part", lambda x: jax.nn.gelu(x) - jax.nn.gelu(-x), H, H)
_add("gelu_even_part", lambda x: jax.nn.gelu(x) + jax.nn.gelu(-x), F, F)
_add("abs_max_identity", lambda x: jnp.abs(x) - jnp.maximum(x, -x) + x, H, H)
_add(
  "cube_pow_f32_third",
  lambda x: (relu(x) ** 3) ** (1 / 3),
  F,
  F,
  note="float32(1/3) = 0.3333333432674408: degree 1.0000000298",
)
_add("sqrt_sq_plus_1e30", lambda x: jnp.sqrt(x**2 + 1e-30), F, F)
_add("hypot_0", lambda x: jnp.hypot(x, 0.0), H, H)
_add("norm_per_element", lambda x: jnp.linalg.norm(x[:, None], axis=1), H, H)
_add("erf_odd_cancel", lambda x: jax.scipy.special.erf(x) + jax.scipy.special.erf(-x) + x, H, H)
_add(
  "tanh_via_exp_cancel",
  lambda x: (jnp.exp(2 * x) - 1) / (jnp.exp(2 * x) + 1) - jnp.tanh(x) + x,
  H,
  H,
)
_add("logit_sigmoid", lambda x: jax.scipy.special.logit(jax.nn.sigmoid(x)), H, H)
_add("sqrt_abs_sq", lambda x: jnp.sqrt(jnp.abs(x)) ** 2, H, H)
_add("sq_pow_half", lambda x: (x**2) ** 0.5, H, H)
_add("cbrt_abs_cube", lambda x: jnp.cbrt(jnp.abs(x) ** 3), H, H)
_add("expm1_log1p_relu", lambda x: jnp.expm1(jnp.log1p(relu(x))), H, H)
_add("tanh_arctanh_clip", lambda x: jnp.tanh(jnp.arctanh(jnp.clip(x, -0.5, 0.5))), F, F)
_add("elu", jax.nn.elu, F, F)
_add("selu", jax.nn.selu, F, F)
_add("gelu", jax.nn.gelu, F, F)
_add("soft_sign", jax.nn.soft_sign, F, F)
_add("square", jnp.square, F, F)

# =============================================================================================
# 9. Second wave: real-vs-float traps, sneaky cross-dependence, undefined values hidden behind
#    predicates, huge/tiny breakpoints, structural identities.
_section("second wave (mixed)")


def _while_float_counter_flip(x):
  """Counter c = 0, 0.1f, 2*0.1f, ... while c < 0.3f: over the reals 3*0.1f =
  0.30000000447 < 0.3f = 0.30000001192, so 4 trips (float32 rounds 3*0.1f up to 0.3f: 3 trips).
  The body v -> 1 - v is an involution: 4 trips give x (holds), 3 would give 1 - x."""
  return lax.while_loop(lambda c: c[0] < 0.3, lambda c: (c[0] + 0.1, 1.0 - c[1]), (0.0, x))[1]


def _unsort(x):
  return jnp.sort(x)[jnp.argsort(jnp.argsort(x))]


_BIG = 1e-38  # nine factors put the threshold at 1e342, beyond float64


def _break_beyond_f64(x):
  y = x
  for _ in range(9):
    y = y * _BIG
  return jnp.where(y > 1.0, x, 0.0)


def _break_below_f64(x):
  # traced as `mul 1e-45 1e-45` equations (jax 0.10): exactly 2**-447 over the reals
  return jnp.where(x > jnp.float32(1e-45) * jnp.float32(1e-45) * jnp.float32(1e-45), x, 0.0)


_add(
  "while_float_counter_real_4_trips",
  _while_float_counter_flip,
  H,
  H,
  note="over the reals 4 trips of v -> 1 - v: f = x (float32 does 3 trips: 1 - x)",
)
_add(
  "where_scaled_ne_self",
  lambda x: jnp.where(x * 0.1 * 10 != x, x, jnp.tanh(x)),
  H,
  H,
  note="0.1f*10 = 1.0000000149 != 1: over the reals only x = 0 picks tanh(0) = 0: f = x",
)
_add(
  "where_scaled_eq_self",
  lambda x: jnp.where(x * 0.1 * 10 == x, x, jnp.tanh(x)),
  F,
  F,
  note="over the reals f = tanh (x = 0 aside)",
)
_add(
  "where_plus_tiny_eq_self",
  lambda x: jnp.where(x + 1e-30 == x, jnp.tanh(x), x),
  H,
  H,
  note="x + 1e-30 != x for every real x: f = x (float32 absorbs 1e-30)",
)
_add(
  "where_add_sub_1_eq_self",
  lambda x: jnp.where((x + 1.0) - 1.0 == x, x, jnp.tanh(x)),
  H,
  H,
  note="(x + 1) - 1 = x over the reals",
)
_add(
  "x_sign_of_reverse",
  lambda x: x * jnp.sign(x[::-1]),
  F,
  F,
  note="E = q x0 sign(x3) at output 0",
)
_add("abs_sign_of_roll", lambda x: jnp.abs(x) * jnp.sign(jnp.roll(x, 1)), F, F)
_add("x_gate_first_positive", lambda x: x * (x[0] > 0), F, F)
_add("where_above_mean", lambda x: jnp.where(x > jnp.mean(x), x, 0.0), F, F)
_add(
  "x_gate_sumabs_pos",
  lambda x: x * (jnp.sum(jnp.abs(x)) > 0),
  H,
  H,
  note="sum|x| = 0 only at x = 0, where x = 0: f = x",
)
_add("x_gate_sum_pos", lambda x: x * (jnp.sum(x) > 0), F, F)
_add(
  "x_times_maxabs_over_maxabs",
  lambda x: x * jnp.max(jnp.abs(x)) / jnp.max(jnp.abs(x)),
  U,
  U,
)
_add(
  "sumpool_window1",
  lambda x: lax.reduce_window(x, 0.0, lax.add, (1,), (1,), "VALID"),
  H,
  H,
)
_add("sumpool_window2_same", lambda x: lax.reduce_window(x, 0.0, lax.add, (2,), (1,), "SAME"), F, H)
_add(
  "maxpool_window2_same",
  lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (2,), (1,), "SAME"),
  F,
  F,
  note="-inf init (the identity of max); refutable at finite inputs",
)
_add("max_with_reverse", lambda x: jnp.maximum(x, x[::-1]), F, F)
_add("zero_at_argmax", lambda x: x.at[jnp.argmax(x)].set(0.0), F, F)
_add(
  "dynamic_slice_index_always_0",
  lambda x: lax.dynamic_slice(jnp.concatenate([x, x]), (jnp.argmax(x) * 0,), (4,)),
  H,
  H,
)
_add("unsort_sort", _unsort, H, H, note="sort(x)[rank(x)] = x")
_add(
  "fori_set_relu_per_index",
  lambda x: lax.fori_loop(0, 4, lambda i, v: v.at[i].set(relu(v[i])), x),
  H,
  H,
  note="relu, one position per trip",
)
_add(
  "fori_double_per_index",
  lambda x: lax.fori_loop(0, 4, lambda i, v: v.at[i].multiply(2.0), x),
  H,
  H,
)
_add(
  "fori_running_sum",
  lambda x: lax.fori_loop(0, 3, lambda i, v: v.at[i + 1].add(v[i]), x),
  F,
  H,
  note="cumsum",
)
_add(
  "scan_exclusive_cumsum",
  lambda x: lax.scan(lambda c, xi: (c + xi, c), jnp.zeros((), f32), x)[1],
  F,
  H,
)
_add("vmap_sort_rows", lambda x: jax.vmap(jnp.sort)(x), F, F, shape=(2, 2))
_add("vmap_relu_rows", lambda x: jax.vmap(relu)(x), H, H, shape=(2, 2))
_add(
  "random_fold_in_count",
  lambda x: x * jax.random.uniform(jax.random.fold_in(jax.random.key(0), jnp.sum(x > 0)), (4,)),
  F,
  F,
  note="the multipliers change with the number of positive units",
)
_add(
  "relu_break_beyond_f64",
  _break_beyond_f64,
  F,
  F,
  note="threshold at 1e342 (exact reals): f(0) = 0, t at the threshold breaks it",
)
_add(
  "relu_break_tiny_1e135",
  _break_below_f64,
  F,
  F,
  note="threshold float32(1e-45)**3 ~ 2.8e-135 (computed in the jaxpr)",
)
_add("where_gt_denormal", lambda x: jnp.where(x > 1e-45, x, 0.0), F, F)
_add("relu_where_abs_eq_x", lambda x: jnp.where(jnp.abs(x) == x, x, 0.0), H, H)
_add("leaky_where_abs_gt_x", lambda x: jnp.where(jnp.abs(x) > x, 0.5 * x, x), H, H)
_add("where_2x_ge_x_plus_x", lambda x: jnp.where(2 * x >= x + x, x, -x), H, H)
_add("where_3x_gt_sum3", lambda x: jnp.where(3 * x > x + x + x, -x, x), H, H)
_add("relu_sq_over_relu", lambda x: relu(x) * relu(x) / relu(x), U, U)
_add(
  "relu_sq_over_max_tiny",
  lambda x: relu(x) ** 2 / jnp.maximum(relu(x), 1e-30),
  F,
  F,
  note="relu(x)**2 / 1e-30 below 1e-30",
)
_add("hypot_relu_parts", lambda x: jnp.sqrt(relu(x) ** 2 + relu(-x) ** 2), H, H)
_add("rsqrt_sq_times_sq", lambda x: lax.rsqrt(x**2) * x**2, U, U, note="1/sqrt(0) at 0")
_add("cube_over_sq", lambda x: x**3 / x**2, U, U)
_add("sq_over_sqrt_sq", lambda x: x**2 / jnp.sqrt(x**2), U, U)
_add("pow15_over_sqrt", lambda x: jnp.abs(x) ** 1.5 / jnp.sqrt(jnp.abs(x)), U, U)
_add("identity_sqrt_sq_sign", lambda x: jnp.sqrt(x**2) * jnp.sign(x), H, H)
_add("identity_cbrt_cubed", lambda x: jnp.cbrt(x) ** 3, H, H)
_add("abs_pow_half_squared", lambda x: jnp.power(jnp.abs(x), 0.5) ** 2, H, H)
_add(
  "abs_pow_03_times_07",
  lambda x: jnp.abs(x) ** 0.3 * jnp.abs(x) ** 0.7,
  H,
  H,
  note="float32: 0.3f + 0.7f = 1 exactly",
)
_add(
  "abs_pow_01_times_09",
  lambda x: jnp.abs(x) ** 0.1 * jnp.abs(x) ** 0.9,
  F,
  F,
  note="float32: 0.1f + 0.9f = 1 - 2**-27 != 1",
)
_add("cube_pow_third_signed", lambda x: jnp.power(x**3, 1 / 3), U, U, note="pow(negative, 1/3f)")
_add(
  "x_isfinite_recip",
  lambda x: x * jnp.isfinite(1 / x),
  U,
  U,
  note="1/x at x = 0 is reached (its finiteness is asked, not guarded by a where)",
)
_add("x_recip_eq_recip", lambda x: x * (1 / x == 1 / x), U, U, note="1/0 reached at x = 0")
_add(
  "relu_isfinite_log",
  lambda x: relu(x) * jnp.isfinite(jnp.log(x)),
  U,
  U,
  note="log(x) for x <= 0 is reached",
)
_add(
  "where_isnan_log",
  lambda x: jnp.where(jnp.isnan(jnp.log(x)), 0.0, x),
  U,
  U,
  note="log of negatives reached (float32 gives relu)",
)
_add("x_plus_log_minus_log", lambda x: x + jnp.log(jnp.abs(x)) - jnp.log(jnp.abs(x)), U, U)
_add("x_plus_recip_minus_recip", lambda x: x + 1 / x - 1 / x, U, U)
_add("x_minus_x_over_x_minus_1", lambda x: x - (x / x - 1), U, U)
_add("relu_plus_0_times_inf", lambda x: relu(x) + 0.0 * jnp.inf, U, U, note="0*inf = NaN")
_add("relu_plus_inf_minus_inf", lambda x: relu(x) + jnp.inf - jnp.inf, U, U)
_add(
  "relu_times_min_1_inf",
  lambda x: relu(x) * jnp.minimum(1.0, jnp.inf),
  H,
  H,
  note="min(1, inf) = 1 in the extended reals: f = relu",
)
_add(
  "relu_max_neg_inf",
  lambda x: jnp.maximum(relu(x), -jnp.inf),
  H,
  H,
  note="max(y, -inf) = y for every real y: f = relu",
)
_add("relu_max_nan", lambda x: jnp.maximum(relu(x), jnp.nan), U, U)
_add(
  "where_const_false_nan",
  lambda x: jnp.where(jnp.zeros_like(x) > 1, jnp.nan, relu(x)),
  H,
  H,
  note="the NaN branch is never selected (constant predicate)",
)
_add(
  "relu_plus_0_expexpexp",
  lambda x: relu(x) + 0 * jnp.exp(jnp.exp(jnp.exp(x))),
  H,
  H,
  note="defined for every real x (huge, but finite)",
)
_add("tanh_via_sinh_cosh_cancel", lambda x: jnp.sinh(x) / jnp.cosh(x) - jnp.tanh(x) + x, H, H)
_add("relu_signbit_min", lambda x: x * jnp.signbit(x), H, H, note="x [x < 0] = min(x, 0)")
_add("abs_copysign", lambda x: jnp.copysign(x, 1.0), H, H)
_add("abs_copysign_one", lambda x: jnp.copysign(1.0, x) * x, H, H)
_add("trunc", jnp.trunc, F, F)
_add("relu_int_floor", lambda x: relu(x).astype(jnp.int32).astype(f32), F, F)
_add(
  "identity_via_complex",
  lambda x: jnp.real(x.astype(jnp.complex64) * 1j * -1j),
  H,
  H,
)
_add("abs_via_complex", lambda x: jnp.abs(x.astype(jnp.complex64)), H, H)
_add("solve_2eye", lambda x: jnp.linalg.solve(2 * jnp.eye(4, dtype=f32), x), H, H)
_add("solve_dense", lambda x: jnp.linalg.solve(W_DENSE + 4 * jnp.eye(4, dtype=f32), x), F, H)
_add("einsum_diag", lambda x: jnp.einsum("i,ij->j", x, W_DIAG), H, H)
_add("relu_matmul_eye", lambda x: relu(x) @ jnp.eye(4, dtype=f32), H, H)
_add("stop_gradient_relu", lambda x: lax.stop_gradient(relu(x)), H, H)
_add("bf16_scale", lambda x: (x.astype(jnp.bfloat16) * jnp.bfloat16(0.1)).astype(f32), H, H)
_add("hole_at_1_r01", lambda x: jnp.where(x == 1.0, 0.0, x), F, F, rate=0.1)
_add("relu_r01", relu, H, H, rate=0.1)
_add("one_plus_relu_r01", lambda x: 1 + relu(x), F, H, rate=0.1)
_add("sort_r05", jnp.sort, F, F, rate=0.5)
_add("x_times_roll_r05", lambda x: x * jnp.roll(x, 1), F, H, rate=0.5)

# =============================================================================================
# 10. Constant sub-expressions (independent of x) are real arithmetic on exact literals too:
#     folding them in float32 changes the answer. (jax 0.10 traces them as equations.)


def _while_hidden_shift(x):
  """Counter 0, 0.1f, 2*0.1f, 3*0.1f (< 0.3f over the reals): the 4th trip, with c > 0.25,
  adds 1. Float32 rounds 3*0.1f to 0.3f and stops after 3 trips (f = x)."""
  body = lambda c: (c[0] + 0.1, c[1] + jnp.where(c[0] > 0.25, 1.0, 0.0))
  return lax.while_loop(lambda c: c[0] < 0.3, body, (0.0, x))[1]


_add(
  "const_01_02_03_traced",
  lambda x: x + (jnp.float32(0.1) + jnp.float32(0.2) - jnp.float32(0.3)),
  F,
  H,
  note="traced adds: -2**-27 over the reals (float32 gives exactly 0)",
)
_add(
  "const_underflow_shift",
  lambda x: relu(x) + jnp.float32(1e-30) * jnp.float32(1e-30),
  F,
  H,
  note="1e-60 > 0 over the reals (float32 underflows to 0)",
)
_add(
  "const_overflow_cancel",
  lambda x: (
    relu(x) + (jnp.float32(1e30) * jnp.float32(1e30) - jnp.float32(1e30) * jnp.float32(1e30))
  ),
  H,
  H,
  note="1e60 - 1e60 = 0 over the reals (float32: inf - inf = NaN)",
)
_add(
  "const_threshold_underflow",
  lambda x: jnp.where(x > jnp.float32(1e-30) * jnp.float32(1e-30), x, 0.0),
  F,
  F,
  note="threshold 1e-60 over the reals, 0 in float32 (which would make it relu)",
)
_add(
  "const_exp_log_3_eq",
  lambda x: jnp.where(x * jnp.exp(jnp.log(jnp.float32(3.0))) == 3 * x, x, jnp.tanh(x)),
  H,
  H,
  note="exp(log 3) = 3 over the reals: f = x",
)
_add(
  "const_pred_01x3_lt_03",
  lambda x: jnp.where(jnp.float32(0.1) * 3 < jnp.float32(0.3), x, jnp.tanh(x)),
  H,
  H,
  note="3*0.1f = 0.30000000447 < 0.3f = 0.30000001192 over the reals: f = x",
)
_add(
  "const_pred_underflow_pos",
  lambda x: jnp.where(jnp.float32(1e-30) * jnp.float32(1e-30) > 0, relu(x), jnp.tanh(x)),
  H,
  H,
  note="1e-60 > 0: f = relu",
)
_add(
  "cond_const_pred_01x3",
  lambda x: lax.cond(jnp.float32(0.1) * 3 < jnp.float32(0.3), relu, jnp.tanh, x),
  H,
  H,
  note="the predicate is True over the reals: relu",
)
_add(
  "while_float_counter_hidden_shift",
  _while_hidden_shift,
  F,
  H,
  note="over the reals 4 trips, the last adds 1: f = x + 1 (float32: 3 trips, f = x)",
)

# =============================================================================================
# 11. Weak-typed Python-float literals. An operation between a weak-typed value (jnp.asarray of a
#     Python float, a loop carry started from a Python float) and a Python float leaves the
#     literal in the jaxpr as jax's TypedFloat(v, dtype=float32): a Python float holding the
#     float64 value v, printed `v:f32[]`. Its value is float32(v) (XLA rounds it so), and the
#     spec takes literals at their exact float32 values.

_A, _B, _C = 0.5 + 2.0**-30, 2.0**-30, 0.5 + 2.0**-29  # float32: 0.5, 2**-30, 0.5


def _scan_weak_counter(x):
  c = lax.scan(lambda c, _: (c + 0.1, None), 0.0, None, length=3)[0]
  return jnp.where(c < 0.3, x, jnp.tanh(x))


def _while_weak_counter_out(x):
  c = lax.while_loop(lambda c: c < 0.25, lambda c: c + 0.1, 0.0)  # 3 trips: c = 3*0.1f
  return jnp.where(c < 0.3, x, jnp.tanh(x))


def _fori_weak_counter(x):
  c = lax.fori_loop(0, 3, lambda i, c: c + 0.1, 0.0)
  return jnp.where(c < 0.3, x, jnp.tanh(x))


def _while_strong_counter_flip(x):
  body = lambda c: (c[0] + jnp.float32(0.1), 1.0 - c[1])
  return lax.while_loop(lambda c: c[0] < jnp.float32(0.3), body, (jnp.float32(0.0), x))[1]


_add(
  "weak_01x3_lt_03",
  lambda x: jnp.where(jnp.asarray(0.1) * 3 < 0.3, x, jnp.tanh(x)),
  H,
  H,
  note="3*0.1f = 0.30000000447 < 0.3f = 0.30000001192: f = x (float64 literals would say tanh)",
)
_add(
  "weak_plus_1e50",
  lambda x: relu(x) + (jnp.asarray(0.0) + 1e-50),
  H,
  H,
  note="float32(1e-50) = 0: f = relu",
)
_add(
  "weak_scale_1p1e8_minus_1",
  lambda x: x + (jnp.asarray(1.0) * (1 + 1e-8) - 1.0),
  H,
  H,
  note="float32(1.00000001) = 1: f = x",
)
_add(
  "weak_threshold_1e50",
  lambda x: jnp.where(x > jnp.asarray(0.0) + 1e-50, x, 0.0),
  H,
  H,
  note="threshold float32(1e-50) = 0: relu",
)
_add(
  "weak_cancel_f64_only",
  lambda x: x + (jnp.asarray(0.0) + _A + _B - _C),
  F,
  H,
  note="float32 literals: 0.5 + 2**-30 - 0.5 = 2**-30 != 0 (float64 literals cancel to 0)",
)
_add(
  "weak_pred_f64_only",
  lambda x: jnp.where(jnp.asarray(0.0) + _A + _B - _C > 0, jnp.tanh(x), x),
  F,
  F,
  note="2**-30 > 0 over the reals with float32 literals: f = tanh",
)
_add("scan_weak_counter", _scan_weak_counter, H, H, note="3*0.1f < 0.3f: f = x")
_add("while_weak_counter_out", _while_weak_counter_out, H, H, note="3*0.1f < 0.3f: f = x")
_add("fori_weak_counter", _fori_weak_counter, H, H, note="3*0.1f < 0.3f: f = x")
_add(
  "while_strong_counter_flip",
  _while_strong_counter_flip,
  H,
  H,
  note="as while_float_counter_real_4_trips with strongly typed float32 literals: 4 trips, f = x",
)

# =============================================================================================
# 12. Third wave: multilinear expectations, x-dependent indices and branches, shapes, extreme
#     rates, callbacks.


def _np_relu(v):
  return np.maximum(v, 0).astype(np.float32)


def _debug_print_relu(x):
  jax.debug.print("{}", x[0])
  return relu(x)


_add(
  "cumprod",
  jnp.cumprod,
  F,
  H,
  note="output i = x0 x1 ... xi: a product of distinct units, unbiased under dropout",
)
_add("x_times_cumsum", lambda x: x * jnp.cumsum(x), F, F, note="contains x_i**2")
_add(
  "x_times_exclusive_cumsum",
  lambda x: x * (jnp.cumsum(x) - x),
  F,
  H,
  note="x_i (x_0 + ... + x_{i-1}): distinct products",
)
_add("sort_abs", lambda x: jnp.sort(jnp.abs(x)), F, F)
_add("relu_plus_relu_reverse", lambda x: relu(x) + relu(x[::-1]), F, H)
_add("abs_of_sum_with_reverse", lambda x: jnp.abs(x + x[::-1]), F, F)
_add("cumsum_relu", lambda x: jnp.cumsum(relu(x)), F, H)
_add(
  "rotate_by_argmax",
  lambda x: lax.dynamic_slice(jnp.concatenate([x, x]), (jnp.argmax(x),), (4,)),
  F,
  F,
)
_add("gather_by_sign", lambda x: jnp.take(x, (x > 0).astype(jnp.int32)), F, F)
_add("sort_via_argsort", lambda x: x[jnp.argsort(x)], F, F)
_add(
  "cond_on_x0",
  lambda x: lax.cond(x[0] > 0, lambda v: v, lambda v: 2 * v, x),
  F,
  F,
)
_add(
  "cond_on_sum_same_branches",
  lambda x: lax.cond(jnp.sum(x) > 0, relu, relu, x),
  H,
  H,
)
_add(
  "switch_on_count",
  lambda x: lax.switch(jnp.sum(x > 0), [relu, jnp.abs, lambda v: v, lambda v: -v, relu], x),
  F,
  F,
)
_add("select_n_const_index", lambda x: lax.select_n(jnp.int32(1), x, 2 * x), H, H)
_add("lax_sort_two_operands", lambda x: lax.sort((x, -x), num_keys=1)[1], F, F)
_add("conj_identity", jnp.conj, H, H)
_add("imag_plus_relu", lambda x: jnp.imag(x) + relu(x), H, H, note="imag of a real = 0")
_add("fabs", jnp.fabs, H, H)
_add("relu_sq_over_relu_plus_tiny", lambda x: relu(x) ** 2 / (relu(x) + 1e-30), F, F)
_add("sign_tiny_plus_x", lambda x: jnp.sign(x) * 1e-30 + x, F, F)
_add("max_neg_zero", lambda x: jnp.maximum(x, -0.0), H, H)
_add("where_gt_neg_zero", lambda x: jnp.where(x > -0.0, x, 0.0), H, H)
_add("times_neg_zero", lambda x: x * -0.0, H, H, note="f = 0")
_add("nan_to_num_kwargs", lambda x: jnp.nan_to_num(x, nan=1.0, posinf=0.0), H, H)
_add("clamp_unit", lambda x: lax.clamp(-1.0, x, 1.0), F, F)
_add("relu_stop_gradient_trick", lambda x: relu(x) - lax.stop_gradient(relu(x)) + relu(x), H, H)
_add(
  "pure_callback_relu",
  lambda x: jax.pure_callback(_np_relu, jax.ShapeDtypeStruct(x.shape, x.dtype), x),
  H,
  H,
  note="relu in NumPy: the checker cannot see it (never proved by its rules, unknown is right)",
)
_add("debug_print_relu", _debug_print_relu, H, H)
_add("fft_roundtrip", lambda x: jnp.fft.ifft(jnp.fft.fft(x)).real.astype(f32), H, H)
_add("softmax_singleton", jax.nn.softmax, F, H, shape=(1,), note="softmax of one value = 1")
_add("center_singleton", lambda x: x - jnp.mean(x), H, H, shape=(1,), note="= 0")
_add("sort_singleton", jnp.sort, H, H, shape=(1,))
_add("normalize_singleton", lambda x: x / jnp.linalg.norm(x), U, U, shape=(1,))
_add("x_times_sum_singleton", lambda x: x * jnp.sum(x), F, F, shape=(1,))
_add("relu_16x16", relu, H, H, shape=(16, 16))
_add("center_256", lambda x: x - jnp.mean(x), F, H, shape=(256,))
_add("softmax_256", jax.nn.softmax, F, F, shape=(256,))
_add("center_rows_2x2", lambda x: x - x.mean(axis=0), F, H, shape=(2, 2))
_add("x_times_rowsum_2x2", lambda x: x * x.sum(axis=1, keepdims=True), F, F, shape=(2, 2))
_add("relu_rate_1e9", relu, H, H, rate=1e-9)
_add("tanh_rate_0999999", jnp.tanh, F, F, rate=0.999999)
_add("hole_at_1_rate_1e9", lambda x: jnp.where(x == 1.0, 0.0, x), F, F, rate=1e-9)
_add("x_plus_1_rate_0999999", lambda x: x + 1, F, H, rate=0.999999)
_add("softmax_9", jax.nn.softmax, F, F, shape=(9,), note="too many masks to enumerate exactly")

# =============================================================================================
# 13. Constant functions and constant predicates with non-finite or float-dependent values.

_add("const_nan", lambda x: x * 0 + jnp.nan, U, U, note="NaN everywhere: not a real function")
_add("full_inf", lambda x: jnp.full_like(x, jnp.inf), U, U)
_add("zeros_plus_log0", lambda x: jnp.zeros_like(x) + jnp.log(0.0), U, U, note="log(0)")
_add(
  "relu_times_infminusinf_eq0",
  lambda x: relu(x) * (jnp.asarray(jnp.inf) - jnp.inf == 0),
  U,
  U,
  note="a traced inf - inf = NaN is reached (float32 gives f = 0)",
)
_add("relu_times_isnan_infminusinf", lambda x: relu(x) * jnp.isnan(jnp.inf - jnp.inf), U, U)
_add(
  "exp_neg_inf_times_relu",
  lambda x: relu(x) * jnp.exp(-jnp.inf),
  H,
  H,
  note="exp(-inf) = 0 in the extended reals: f = 0",
)
_add(
  "where_isinf_1e60",
  lambda x: jnp.where(jnp.isinf(jnp.float32(1e30) * jnp.float32(1e30)), relu(x), jnp.tanh(x)),
  F,
  F,
  note="1e60 is a finite real: f = tanh (float32 overflows and gives relu)",
)
_add(
  "where_isfinite_exp100",
  lambda x: jnp.where(jnp.isfinite(jnp.exp(jnp.float32(100.0))), relu(x), jnp.tanh(x)),
  H,
  H,
  note="e**100 is finite: relu (float32 overflows and gives tanh)",
)
_add("where_x_eq_x_zero_else_nan", lambda x: jnp.where(x == x, 0.0, jnp.nan) * x, H, H)
_add("relu_times_relu_neg", lambda x: relu(x) * relu(-x), H, H, note="= 0")
_add("min1_plus_relu_xm1", lambda x: jnp.minimum(x, 1.0) + jnp.maximum(x - 1.0, 0.0), H, H)
_add("clip_plus_residual", lambda x: jnp.clip(x, -1, 1) + (x - jnp.clip(x, -1, 1)), H, H)
_add("sqrt_abs_x_times_rev", lambda x: jnp.sqrt(jnp.abs(x * x[::-1])), F, F)
_add("sqrt_x_times_rev", lambda x: jnp.sqrt(x * x[::-1]), U, U)
_add("norm_stack_same", lambda x: jnp.linalg.norm(jnp.stack([x, x]), axis=0), H, H)
_add("norm_stack_rev", lambda x: jnp.linalg.norm(jnp.stack([x, x[::-1]]), axis=0), F, F)
_add("x_times_absrev_ge0", lambda x: x * (jnp.abs(x[::-1]) >= 0), H, H)
_add("relu_times_heaviside_sum", lambda x: relu(x) * jnp.heaviside(jnp.sum(x), 1.0), F, F)
