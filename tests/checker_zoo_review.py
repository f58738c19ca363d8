"""Adversarial review cases for ``jdrop.check`` (a data module, like :mod:`checker_zoo`).

:data:`REVIEW` is a list of :class:`checker_zoo.Case` with hand-derived truths, under the
conventions of ``checker_zoo``'s docstring (real arithmetic, literals at their exact dtype
value, float casts the identity, float-to-int casts truncate toward zero, NaN/inf reached by
arithmetic makes f undefined, exact infinities in the extended reals where defined).

Categories: "bug:*" cases were wrong (or raised, or slow) when this file was written; the
rest probe the same rules and were right. Truths were checked numerically (mpmath/fractions)
in a scratch script. Every closed-over array is exact in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from checker_zoo import Case
from checker_zoo import F
from checker_zoo import H
from checker_zoo import U
from jax import lax

relu = jax.nn.relu
f32 = jnp.float32
FMAX = float(np.finfo(np.float32).max)

REVIEW: list[Case] = []


def _r(name, fn, pathwise, expectation, *, shape=None, rate=None, note="", category=""):
  if any(c.name == name for c in REVIEW):
    raise ValueError(f"duplicate case name {name!r}")
  REVIEW.append(Case(name, fn, rate, pathwise, expectation, shape, note, category))


# Closed-over constants (exact in float32). Shape-(4,) arrays: the polynomial engine folds
# constants of the traced shape (scalar literals crash its folding, see the report).
T30 = np.full(4, 2.0**-30, np.float32)  # T30 * T30 = 2**-60 exactly (float32: 8.7e-19)
T100 = np.full(4, 2.0**-100, np.float32)  # T100**20 = 2**-2000 exactly (float32: 0)
B100 = np.full(4, 2.0**100, np.float32)  # B100**20 = 2**2000 exactly (float32: inf)
ONE4 = np.ones(4, np.float32)
ZERO4 = np.zeros(4, np.float32)
ONE1 = np.array([1.0], np.float32)
IDX_OOB = np.array([[0], [1], [1], [0]], np.int32)  # rows 1 and 2 out of bounds for ONE1
GATHER_DN = lax.GatherDimensionNumbers(
  offset_dims=(), collapsed_slice_dims=(0,), start_index_map=(0,)
)
EYE4 = np.eye(4, dtype=np.float32)
OFF4 = (1 - np.eye(4)).astype(np.float32)
K3_T100 = np.array([2.0**-100, 1.0, 2.0**-100], np.float32)
W_DIAG = np.diag(np.array([2.0, -0.5, 0.0, 3.0], dtype=np.float32))
C256 = ((np.arange(256) - 128) / 8).astype(np.float32)
_RNG = np.random.default_rng(0)
W128 = _RNG.integers(-3, 4, size=(128, 128)).astype(np.float32)


def _tiny60():
  return lax.mul(jnp.asarray(T30), jnp.asarray(T30))  # 2**-60 exactly, per position


def _gather_fill(idx):
  return lax.gather(
    jnp.asarray(ONE1),
    idx,
    GATHER_DN,
    slice_sizes=(1,),
    mode=lax.GatherScatterMode.FILL_OR_DROP,
  )  # fill_value defaults to NaN


# =============================================================================================
# Wrong proofs found.
_C = "bug:false-proof"

_r(
  "cummin",
  lambda x: lax.cummin(x),
  F,
  F,
  category=_C,
  note="not elementwise: x=[1,2], drop unit 0 at q=1/2: cummin([0,4])=[0,0] vs D([1,1])=[0,2];"
  " E: x=[1,2,..] E cummin(D x)_1 = 1/2 != 1 (0/1 indicators under-approximate cummin's"
  " dependence: cummin(e_0) = e_0)",
)
_r(
  "cummin_reverse",
  lambda x: lax.cummin(x, reverse=True),
  F,
  F,
  category=_C,
  note="same as cummin, suffix minima",
)
_r(
  "dot_exact_tiny_offdiag",
  lambda x: (
    (jnp.asarray(EYE4) + lax.integer_pow(jnp.float32(2.0**-100), 20) * jnp.asarray(OFF4)) @ x
  ),
  F,
  H,
  category=_C,
  note="f_i = x_i + 2**-2000 sum_{j!=i} x_j: not elementwise (drop j, keep i: residual"
  " 2**-2000 x_j/q != 0); linear, so E holds. The exact ball 2**-2000 rounds to 0.0 in"
  " balls.infinities, so _support drops the dependence",
)
_r(
  "pow_exponent_1_plus_2m60",
  lambda x: x ** (1.0 + lax.mul(f32(2.0**-30), f32(2.0**-30))),
  U,
  U,
  category=_C,
  note="exponent 1 + 2**-60 (exact over the reals) is not an integer: x**y undefined for x<0;"
  " balls.exact_value rounds the exact 128-bit ball to the double 1.0",
)
_r(
  "pow_half_eps_squared",
  lambda x: (relu(x) ** (0.5 + lax.mul(f32(2.0**-30), f32(2.0**-30)))) ** 2,
  F,
  F,
  category=_C,
  note="= relu(x)**(1 + 2**-59): degree != 1, f(x/q) = q**(-1-2**-59) f(x) != f(x)/q for x>0",
)
_r(
  "nan_integer_pow0",
  lambda x: x * lax.integer_pow(f32(0.0) / f32(0.0), 0),
  U,
  U,
  category=_C,
  note="0/0 is reached (NaN); arb gives nan**0 = 1",
)
_r(
  "nan_pow_0_float",
  lambda x: x * jnp.power(f32(0.0) / f32(0.0), f32(0.0)),
  U,
  U,
  category=_C,
  note="0/0 reached; balls._pow sends an integer exponent to _integer_pow, nan**0 = 1",
)
_r(
  "inf_integer_pow0",
  lambda x: x * lax.integer_pow(f32(1.0) / f32(0.0), 0),
  U,
  U,
  category=_C,
  note="1/0 reached (x/0 is undefined per the spec), then inf**0 (indeterminate)",
)
_r(
  "poly_floor_rounded_const",
  lambda x: x + 1.0 - jnp.floor(jnp.asarray(ONE4) - _tiny60()),
  F,
  H,
  category=_C,
  note="floor(1 - 2**-60) = 0, so f = x + 1: f(0)=1 != 0; E holds (affine). The polynomial"
  " engine folds floor on float(1 - 2**-60) = 1.0",
)
_r(
  "poly_compare_rounded_const",
  lambda x: x + jnp.tanh(x) * (jnp.asarray(ONE4) - _tiny60() < jnp.asarray(ONE4)).astype(f32),
  F,
  F,
  category=_C,
  note="1 - 2**-60 < 1 is True: f = x + tanh(x), not piecewise linear/homogeneous (t=1,q=1/2:"
  " f(2) - f(1)/q = 2+tanh 2 - 2 - 2 tanh 1 != 0); the fold compares rounded doubles",
)
_r(
  "poly_while_rounded_pred",
  lambda x: lax.while_loop(
    lambda s: jnp.all(s[0] < jnp.asarray(ONE4)),
    lambda s: (s[0] + jnp.asarray(ONE4), jnp.tanh(s[1])),
    (jnp.asarray(ONE4) - _tiny60(), x),
  )[1],
  F,
  F,
  category=_C,
  note="over the reals the loop runs once: f = tanh (fails both); the polynomial engine's"
  " rounded predicate runs it 0 times and proves f = x",
)
_r(
  "poly_sign_exact_tiny",
  lambda x: x + jnp.sign(lax.integer_pow(jnp.asarray(T100), 20)) + jnp.tanh(x) - jnp.tanh(x),
  F,
  H,
  category=_C,
  note="sign(2**-2000) = 1: f = x + 1 (f(0)=1); E holds. Fold rounds 2**-2000 to 0.0",
)
_r(
  "poly_exp_exact_tiny",
  lambda x: (
    x
    + (jnp.exp(lax.integer_pow(jnp.asarray(T100), 20)) - 1.0)
    * lax.integer_pow(jnp.asarray(B100), 20)
  ),
  F,
  H,
  category=_C,
  note="(e**(2**-2000) - 1) 2**2000 = 1 + 2**-2001 + ...: f = x + c, c ~ 1 != 0; E holds."
  " Fold evaluates exp(float(2**-2000)) = exp(0.0) = 1 exactly",
)
_r(
  "poly_gather_fill_nan_times0",
  lambda x: x + jnp.asarray(ZERO4) * _gather_fill(jnp.asarray(IDX_OOB)) + jnp.tanh(x) - jnp.tanh(x),
  U,
  U,
  category=_C,
  note="positions 1, 2 gather out of bounds: NaN fill, 0 * NaN reached. The fold's NaN ball"
  " is not 'exact', so it becomes an opaque atom, and 0 * atom = 0",
)
_r(
  "hom_gather_fill_deg0_shape1",
  lambda x: x * jnp.take(jnp.asarray(ONE1), (x > 0).astype(jnp.int32), mode="fill"),
  U,
  U,
  shape=(1,),
  category=_C,
  note="x > 0 takes index 1 of a 1-element array: NaN fill, x * NaN. TOTAL lets a gather of"
  " degree-0 indices be degree 0 (a real number), ignoring the fill value",
)
_r(
  "hom_gather_fill_deg0_times0",
  lambda x: x + 0.0 * (x * jnp.take(jnp.asarray(ONE1), (x > 0).astype(jnp.int32), mode="fill")),
  U,
  U,
  category=_C,
  note="0 * (x * NaN) reached for x > 0; the algebra calls the product a known degree-1 h and"
  " 0 * h = 0, so E is 'proved'",
)

# =============================================================================================
# Crashes and slow cases.
_C = "bug:raise-or-slow"


def _huge_relu(x):
  c = jnp.float32(FMAX)
  for _ in range(9):
    c = c * FMAX
  return relu(x) + c


_r(
  "pl_f0_overflows_float64",
  _huge_relu,
  F,
  H,
  category=_C,
  note="f = relu + FMAX**10 (a finite real ~ 2e385): f(0) != 0; E holds (constant offset)."
  " api.check converts piecewise.f0 to float64 outside any guard: OverflowError",
)


def _exit_callback(v):
  raise SystemExit(3)


_r(
  "int_callback_sys_exit",
  lambda x: (
    x
    * jax.pure_callback(_exit_callback, jax.ShapeDtypeStruct((), jnp.int32), jnp.int32(1)).astype(
      f32
    )
  ),
  U,
  U,
  category="callbacks",
  note="the constant folding of an integer callback runs it (balls._concrete); JAX wraps the"
  " SystemExit in an ordinary exception, so check answers unknown (no crash)",
)
_r(
  "pl_repeated_squaring_20",
  lambda x: relu(x) + 0.0 * lax.fori_loop(0, 20, lambda i, c: c * c, jnp.full(4, 1.5, f32)),
  H,
  H,
  category=_C,
  note="0 * 1.5**(2**20) = 0 over the reals: f = relu. The exact Fraction 1.5**(2**k) doubles"
  " in size each step: k=20 ~18 s, k=22 ~280 s, k=40 never returns",
)
_r(
  "pl_loop_max_256_breaks",
  lambda x: lax.fori_loop(0, 20, lambda i, v: jnp.maximum(v - C256, 0.0) + C256, x),
  F,
  F,
  shape=(256,),
  category=_C,
  note="f_i = max(x_i, C_i) (idempotent step): f(0)_i = max(0, C_i) != 0 for C_i > 0; E: the"
  " kink at C_i != 0 (q max(t/q, C) + (1-q) max(0,C) != max(t, C))",
)
_r(
  "dense128_minus_itself",
  lambda x: jnp.asarray(W128) @ x - jnp.asarray(W128) @ x + x * 0,
  H,
  H,
  shape=(128,),
  category=_C,
  note="f = 0. Two matmul equations: the algebra sees deg 1 but not elementwise; the search"
  " evaluates a dense matmul in Python balls per mask (shape 256: ~180 s)",
)
_r(
  "loop_noop_sin_roll_8",
  lambda x: lax.fori_loop(0, 100, lambda i, v: v + 0.0 * jnp.sin(jnp.roll(v, 1)), x),
  H,
  H,
  shape=(8,),
  category=_C,
  note="0 * sin(...) = 0: f = x. The algebra cannot use 0 * unknown, the function is not"
  " shown elementwise, so the search runs 100-step loops per mask (300 steps: ~440 s)",
)
_r(
  "nested_fori_relu_150x150",
  lambda x: lax.fori_loop(0, 150, lambda i, v: lax.fori_loop(0, 150, lambda j, w: relu(w), v), x),
  H,
  H,
  category=_C,
  note="relu. 22500 unrolled steps in every engine (200x200: ~24 s; 1024x1024 is allowed)",
)

# =============================================================================================
# Loops: scan (xs/ys, reverse), while with float carries, weak literals.
_C = "loops"

_r(
  "scan_reverse_ys_relu",
  lambda x: lax.scan(lambda c, xi: (c, relu(xi)), f32(0.0), x, reverse=True)[1],
  H,
  H,
  category=_C,
  note="ys[i] = relu(x[i]) whatever the order",
)
_r(
  "scan_reverse_shift",
  lambda x: lax.scan(lambda c, xi: (xi, c), f32(0.0), x, reverse=True)[1],
  F,
  H,
  category=_C,
  note="reverse: ys = [x1, x2, x3, 0]: linear, not elementwise",
)
_r(
  "scan_forward_shift",
  lambda x: lax.scan(lambda c, xi: (xi, c), f32(0.0), x)[1],
  F,
  H,
  category=_C,
  note="ys = [0, x0, x1, x2]",
)
_r(
  "scan_reverse_cumsum",
  lambda x: lax.scan(lambda c, xi: (c + xi, c + xi), f32(0.0), x, reverse=True)[1],
  F,
  H,
  category=_C,
  note="suffix sums: linear, not elementwise",
)
_r(
  "scan_reverse_counter_scale",
  lambda x: lax.scan(lambda k, xi: (k + 1, xi * jnp.where(k == 0, -2.0, 1.0)), 0, x, reverse=True)[
    1
  ],
  H,
  H,
  category=_C,
  note="the first step (k=0) sees x[3]: f = [x0, x1, x2, -2 x3], linear elementwise",
)
_r(
  "scan_const_xs_product",
  lambda x: lax.scan(lambda c, a: (c * a, None), x, jnp.arange(1.0, 5.0, dtype=f32))[0],
  H,
  H,
  category=_C,
  note="24 x",
)
_r(
  "scan_length0",
  lambda x: lax.scan(lambda c, _: (c, c), x, None, length=0)[0],
  H,
  H,
  category=_C,
  note="no iteration: f = x",
)
_r(
  "while_float_carry_reals_terminate",
  lambda x: lax.while_loop(
    lambda s: s[0] < 1.0 + 2.0**-23,
    lambda s: (s[0] + f32(2.0**-25), relu(s[1])),
    (f32(1.0), x),
  )[1],
  H,
  H,
  category=_C,
  note="over the reals 4 steps (float32 would loop forever: 1 + 2**-25 rounds to 1): relu",
)
_r(
  "while_tanh_once",
  lambda x: lax.while_loop(lambda s: s[0] < 1, lambda s: (s[0] + 1, jnp.tanh(s[1])), (0, x))[1],
  F,
  F,
  category=_C,
  note="tanh",
)
_r(
  "while_pred_on_x",
  lambda x: lax.while_loop(lambda v: jnp.sum(v) > 1.0, lambda v: v * 0.5, x),
  F,
  F,
  category=_C,
  note="x=[1,0,0,0], q=1/2 all kept: f(D x) = [1,0,0,0] != D(f x) = [2,0,0,0]; E similar",
)
_r(
  "fori_halves_sum",
  lambda x: lax.fori_loop(0, 10, lambda i, v: v * 0.5 + v * 0.5, x),
  H,
  H,
  category=_C,
  note="x",
)
_r(
  "fori_third_sum_reals_gt1",
  lambda x: jnp.where(
    lax.fori_loop(0, 3, lambda i, c: c + 1.0 / 3.0, f32(0.0)) > 1.0, x, jnp.tanh(x)
  ),
  H,
  H,
  category=_C,
  note="3 * float32(1/3) = 1 + 2**-25 > 1 over the reals (float32 sums to 1.0): f = x",
)
_r(
  "fori_bf16_weak_literal",
  lambda x: lax.fori_loop(0, 3, lambda i, v: v * 1.001, x.astype(jnp.bfloat16)).astype(f32),
  H,
  H,
  category=_C,
  note="1.001 in bfloat16 is 1.0: f = x",
)
_r(
  "fori_int_counter_select",
  lambda x: jnp.where(lax.fori_loop(0, 5, lambda i, c: c + i, 0) == 10, x, jnp.tanh(x)),
  H,
  H,
  category=_C,
  note="0+1+2+3+4 = 10: f = x",
)

# =============================================================================================
# Data movement: scatter, dynamic_update_slice, gather modes, pad, sort, stack.
_C = "structural"

_r(
  "scatter_set_scaled",
  lambda x: x.at[0].set(2 * x[0]),
  H,
  H,
  category=_C,
  note="[2 x0, x1, x2, x3]",
)
_r(
  "scatter_swap",
  lambda x: x.at[jnp.array([0, 1])].set(x[jnp.array([1, 0])]),
  F,
  H,
  category=_C,
  note="permutation: linear, not elementwise",
)
_r(
  "scatter_duplicate_equal_updates",
  lambda x: x.at[jnp.array([0, 0])].set(jnp.stack([2 * x[0], 2 * x[0]])),
  H,
  H,
  category=_C,
  note="both duplicate writes are 2 x0: [2 x0, x1, x2, x3] whatever the order",
)
_r(
  "scatter_add_duplicates",
  lambda x: (
    jnp.zeros(4, f32).at[jnp.array([0, 0, 1, 1])].add(x[jnp.array([0, 0, 1, 1])])
    + x * jnp.array([0.0, 0.0, 1.0, 1.0])
  ),
  H,
  H,
  category=_C,
  note="[2 x0, 2 x1, x2, x3]",
)
_r(
  "scatter_oob_dropped",
  lambda x: x.at[7].set(5.0, mode="drop"),
  H,
  H,
  category=_C,
  note="out-of-bounds write dropped: f = x",
)
_r(
  "scatter_const_update",
  lambda x: x.at[2].set(5.0),
  F,
  H,
  category=_C,
  note="[x0, x1, 5, x3]: f(0)_2 = 5; E holds (affine)",
)
_r(
  "dus_relu_middle",
  lambda x: lax.dynamic_update_slice(x, relu(x[1:3]), (1,)),
  H,
  H,
  category=_C,
  note="[x0, relu x1, relu x2, x3]",
)
_r(
  "dus_clamped_start",
  lambda x: lax.dynamic_update_slice(x, x[:2] * 0, (3,)),
  H,
  H,
  category=_C,
  note="start clamped to 2: [x0, x1, 0, 0]",
)
_r(
  "dus_index_from_x",
  lambda x: lax.dynamic_update_slice(x, jnp.zeros(1, f32), ((x[0] > 0).astype(jnp.int32),)),
  F,
  F,
  category=_C,
  note="x=[1,5,0,0], drop unit 0: f(Dx)=[0,10,..] vs D(f x)=D([1,0,..])=[0,0,..]",
)
_r(
  "gather_clip_oob",
  lambda x: jnp.take(x, jnp.array([0, 1, 2, 7]), mode="clip"),
  H,
  H,
  category=_C,
  note="index 7 clips to 3: f = x",
)
_r(
  "gather_fill_zero",
  lambda x: jnp.take(x, jnp.array([0, 1, 2, 7]), mode="fill", fill_value=0.0),
  H,
  H,
  category=_C,
  note="[x0, x1, x2, 0]",
)
_r(
  "gather_fill_one",
  lambda x: jnp.take(x, jnp.array([0, 1, 2, 7]), mode="fill", fill_value=1.0),
  F,
  H,
  category=_C,
  note="[x0, x1, x2, 1]: f(0)_3 = 1; affine",
)
_r(
  "gather_fill_nan_const_idx",
  lambda x: jnp.take(x, jnp.array([0, 1, 2, 7]), mode="fill"),
  U,
  U,
  category=_C,
  note="position 3 is NaN",
)
_r(
  "pad_shift",
  lambda x: jnp.pad(x[1:], (1, 0)),
  H,
  H,
  category=_C,
  note="[0, x1, x2, x3]",
)
_r(
  "pad_value_exact_tiny",
  lambda x: jnp.concatenate([lax.integer_pow(jnp.asarray(T100), 20)[:1], x[1:]]),
  F,
  H,
  category=_C,
  note="f_0 = 2**-2000 != 0 (float32 0): f(0) != 0; E holds (constant at 0)",
)
_r("rev_rev", lambda x: x[::-1][::-1], H, H, category=_C, note="x")
_r("roll_unroll", lambda x: jnp.roll(jnp.roll(x, 1), -1), H, H, category=_C, note="x")
_r(
  "reshape_transpose_back",
  lambda x: x.reshape(2, 2).T.T.reshape(4),
  H,
  H,
  category=_C,
  note="x",
)
_r(
  "sort_stack_median",
  lambda x: jnp.sort(jnp.stack([x, 2 * x, -x]), axis=0)[1],
  H,
  H,
  category=_C,
  note="median of (x, 2x, -x) is x for either sign",
)
_r(
  "sort_stack_with_offset",
  lambda x: jnp.sort(jnp.stack([x, x + 1.0]), axis=0)[0],
  H,
  H,
  category=_C,
  note="min(x, x+1) = x",
)
_r(
  "sort_stack_min0",
  lambda x: jnp.sort(jnp.stack([x, jnp.zeros_like(x)]), axis=0)[0],
  H,
  H,
  category=_C,
  note="min(x, 0)",
)
_r(
  "sort_stack_offset_neg",
  lambda x: jnp.sort(jnp.stack([x, jnp.full_like(x, -1.0)]), axis=0)[1],
  F,
  F,
  category=_C,
  note="max(x, -1): f(0) = 0 but f(-2/q) = -1 != f(-2)/q; E: q max(-2/q,-1) + (1-q) 0 != -1",
)
_r(
  "sort_vector",
  jnp.sort,
  F,
  F,
  category=_C,
  note="x=[1,2,0,0] drop unit 0 at q=1/2: sort([0,4,0,0])=[0,0,0,4] vs D(sort x)=D([0,0,1,2])"
  "=[0,0,2,4]; E: E sort(Dx)_3 = E max != max x",
)
_r(
  "sort_axis_size1",
  lambda x: jnp.sort(x, axis=1),
  H,
  H,
  shape=(4, 1),
  category=_C,
  note="sorting a length-1 axis: f = x",
)
_r(
  "max_keepdims_size1",
  lambda x: x.max(axis=1, keepdims=True),
  H,
  H,
  shape=(4, 1),
  category=_C,
  note="f = x",
)
_r(
  "cumsum_axis_size1",
  lambda x: jnp.cumsum(x, axis=1),
  H,
  H,
  shape=(4, 1),
  category=_C,
  note="f = x",
)
_r("cummax", lambda x: lax.cummax(x), F, F, category=_C, note="prefix maxima: like cummin")
_r(
  "cummin_as_neg_cummax_neg",
  lambda x: -lax.cummax(-x),
  F,
  F,
  category=_C,
  note="= cummin",
)
_r(
  "cumsum_reverse",
  lambda x: lax.cumsum(x, reverse=True),
  F,
  H,
  category=_C,
  note="linear, not elementwise",
)
_r("dot_diag", lambda x: jnp.asarray(W_DIAG) @ x, H, H, category=_C, note="diag(2,-.5,0,3) x")
_r(
  "convolve_exact_tiny_neighbours",
  lambda x: jnp.convolve(x, lax.integer_pow(jnp.asarray(K3_T100), 20), mode="same"),
  F,
  H,
  category=_C,
  note="f_i = x_i + 2**-2000 (x_{i-1} + x_{i+1}): not elementwise, linear",
)
_r(
  "batched_dot_scale",
  lambda x: lax.dot_general(
    x.reshape(4, 1, 1), jnp.full((4, 1, 1), 3.0, f32), (([2], [1]), ([0], [0]))
  ).reshape(4),
  H,
  H,
  category=_C,
  note="3 x, batched per element",
)

# =============================================================================================
# Powers, roots and the nonneg rules.
_C = "powers"

_r(
  "sqrt_relu_times_relu",
  lambda x: jnp.sqrt(relu(x) * relu(x)),
  H,
  H,
  category=_C,
  note="relu",
)
_r(
  "pow_half_of_relu_sq",
  lambda x: (relu(x) * relu(x)) ** 0.5,
  H,
  H,
  category=_C,
  note="relu",
)
_r("sqrt_x_sq", lambda x: jnp.sqrt(x * x), H, H, category=_C, note="|x|")
_r(
  "sqrt_max_x_neg1",
  lambda x: jnp.sqrt(jnp.maximum(x, -1.0)),
  U,
  U,
  category=_C,
  note="sqrt(-1) at x <= -1",
)
_r(
  "sqrt_max_relu_neg1",
  lambda x: jnp.sqrt(jnp.maximum(relu(x), -1.0)),
  F,
  F,
  category=_C,
  note="sqrt(relu x): degree 1/2",
)
_r("sqrt_neg_relu", lambda x: jnp.sqrt(-relu(x)), U, U, category=_C, note="x > 0: sqrt(-x)")
_r("sqrt_x_abs_x", lambda x: jnp.sqrt(x * jnp.abs(x)), U, U, category=_C, note="x < 0")
_r("cbrt_cube", lambda x: jnp.cbrt(x**3), H, H, category=_C, note="x (real cube root)")
_r("cbrt_relu_cubed", lambda x: jnp.cbrt(relu(x)) ** 3, H, H, category=_C, note="relu")
_r(
  "cbrt_pow_1p5",
  lambda x: jnp.cbrt(x) ** 1.5,
  U,
  U,
  category=_C,
  note="(negative)**1.5 for x < 0",
)
_r("pow_x_third_f32", lambda x: x ** (1.0 / 3.0), U, U, category=_C, note="x < 0")
_r(
  "pow_relu_cubed_third_f32",
  lambda x: (relu(x) ** 3) ** (1.0 / 3.0),
  F,
  F,
  category=_C,
  note="3 * float32(1/3) = 1 + 2**-25: relu**(1 + 2**-25), degree != 1",
)
_r("pow_sq_half", lambda x: (x**2.0) ** 0.5, H, H, category=_C, note="|x|")
_r("pow_x_3_float", lambda x: x**3.0, F, F, category=_C, note="cube")
_r("pow_relu_1", lambda x: relu(x) ** 1.0, H, H, category=_C, note="relu")
_r(
  "integer_pow0_relu_times_x",
  lambda x: lax.integer_pow(relu(x), 0) * x,
  H,
  H,
  category=_C,
  note="relu**0 = 1 (integer_pow convention, also at 0): x",
)
_r(
  "integer_pow0_x_over_x",
  lambda x: lax.integer_pow(x / x, 0) * x,
  U,
  U,
  category=_C,
  note="x/x undefined at 0",
)
_r("x_times_inverse", lambda x: x * lax.integer_pow(x, -1), U, U, category=_C, note="1/0 at 0")
_r("sqrt_neg_square", lambda x: jnp.sqrt(-(x * x)), U, U, category=_C, note="x != 0")
_r(
  "sqrt_max_relu_relu_neg",
  lambda x: jnp.sqrt(jnp.maximum(relu(x), relu(-x))),
  F,
  F,
  category=_C,
  note="sqrt|x|",
)
_r(
  "sqrt_abs_squared",
  lambda x: lax.integer_pow(jnp.sqrt(jnp.abs(x)), 2),
  H,
  H,
  category=_C,
  note="|x|",
)
_r(
  "sqrt_relu_times_relu_rev",
  lambda x: jnp.sqrt(relu(x) * relu(x[::-1])),
  F,
  F,
  category=_C,
  note="defined (>= 0); not elementwise: x=[1,1,1,1] drop unit 3 keeps 0: 0 vs 2",
)
_r(
  "sqrt_cummax_relu",
  lambda x: jnp.sqrt(lax.cummax(relu(x))),
  F,
  F,
  category=_C,
  note="defined; degree 1/2, not elementwise",
)
_r(
  "sqrt_where_abs",
  lambda x: jnp.sqrt(jnp.where(x > 0, x, -x)),
  F,
  F,
  category=_C,
  note="sqrt|x|",
)
_r(
  "sqrt_where_same",
  lambda x: jnp.sqrt(jnp.where(x > 0, x, x)),
  U,
  U,
  category=_C,
  note="sqrt(x), x < 0",
)
_r("sqrt_neg2_relu", lambda x: jnp.sqrt(-2 * relu(x)), U, U, category=_C, note="x > 0")
_r("sqrt_relu_over_2", lambda x: jnp.sqrt(relu(x) / 2), F, F, category=_C, note="degree 1/2")
_r("sqrt_relu_over_neg2", lambda x: jnp.sqrt(relu(x) / -2), U, U, category=_C, note="x > 0")

# =============================================================================================
# Exact infinities and NaN.
_C = "infinities"

_r("max_x_neg_inf", lambda x: jnp.maximum(x, -jnp.inf), H, H, category=_C, note="x")
_r("min_relu_inf", lambda x: jnp.minimum(relu(x), jnp.inf), H, H, category=_C, note="relu")
_r("x_times_lt_inf", lambda x: x * (x < jnp.inf), H, H, category=_C, note="x")
_r("where_x_eq_inf", lambda x: jnp.where(x == jnp.inf, 0.0, x), H, H, category=_C, note="x")
_r("x_plus_inf_minus_inf", lambda x: x + jnp.inf - jnp.inf, U, U, category=_C, note="inf - inf")
_r(
  "relu_plus_x_exp_neg_inf",
  lambda x: relu(x) + x * jnp.exp(-jnp.inf),
  H,
  H,
  category=_C,
  note="exp(-inf) = 0",
)
_r("max_x_pos_inf", lambda x: jnp.maximum(x, jnp.inf), U, U, category=_C, note="f = inf")
_r(
  "max_mixed_inf_zero",
  lambda x: jnp.maximum(x, jnp.array([-jnp.inf, 0.0, -jnp.inf, 0.0])),
  H,
  H,
  category=_C,
  note="[x0, relu x1, x2, relu x3]",
)
_r("where_nan_else", lambda x: jnp.where(x > 0, x, jnp.nan), U, U, category=_C, note="NaN at x<=0")
_r("x_plus_0_times_nan", lambda x: x + 0.0 * jnp.nan, U, U, category=_C, note="0 * NaN")
_r(
  "x_times_tanh_inf",
  lambda x: x * jnp.tanh(jnp.float32(jnp.inf)),
  H,
  H,
  category=_C,
  note="tanh(+inf) = 1 in the extended reals: x",
)

# =============================================================================================
# Weak-typed literals, integers.
_C = "literals-and-integers"

_r(
  "f16_weak_literal_overflow",
  lambda x: (x.astype(jnp.float16) * 1e6).astype(f32),
  U,
  U,
  category=_C,
  note="the weak literal 1e6 is float16 inf: x * inf",
)
_r(
  "f16_weak_literal_underflow",
  lambda x: (x.astype(jnp.float16) * 1e-8).astype(f32),
  H,
  H,
  category=_C,
  note="float16(1e-8) = 0: f = 0",
)
_r(
  "bf16_weak_literal_plus",
  lambda x: (x.astype(jnp.bfloat16) + 1.001).astype(f32),
  F,
  H,
  category=_C,
  note="bfloat16(1.001) = 1: x + 1",
)
_r(
  "python_float_residue",
  lambda x: x * (0.1 + 0.2 - 0.3),
  H,
  H,
  category=_C,
  note="Python computes 5.55e-17, a weak literal != 0: c x",
)
_r("x_plus_1e50_tiny", lambda x: x + 1e-50, H, H, category=_C, note="float32(1e-50) = 0")
_r(
  "int_floor_div_gate",
  lambda x: x * ((jnp.int32(7) // 2) == 3),
  H,
  H,
  category=_C,
  note="7 // 2 = 3: x",
)
_r(
  "int32_wrap_gate",
  lambda x: jnp.where((jnp.int32(2**30) * 4) == 0, x, jnp.tanh(x)),
  H,
  H,
  category=_C,
  note="int32 arithmetic is modular (JAX integers): 2**32 = 0, f = x",
)
_r(
  "relu_int_mask",
  lambda x: x * (x > 0).astype(jnp.int32).astype(f32),
  H,
  H,
  category=_C,
  note="relu",
)
_r(
  "int_cast_large_deg0",
  lambda x: x * (jnp.sign(x) * 1e10).astype(jnp.int32).astype(f32) * 1e-10,
  H,
  H,
  category=_C,
  note="with truncation as DESIGN states (trunc(±1e10) = ±1e10): |x| * c. If an out-of-range"
  " cast is 'undefined' (README: never certified), this is U",
)
_r(
  "int_cast_large_times0_poly",
  lambda x: x + jnp.tanh(x) - jnp.tanh(x) + 0.0 * (x * 1e10).astype(jnp.int32).astype(f32),
  H,
  H,
  category=_C,
  note="x under truncation semantics; U if an out-of-range cast is undefined",
)

# =============================================================================================
# Polynomial normal forms and atoms.
_C = "polynomial"

_r("poly_sin_cancel", lambda x: x + jnp.sin(x) - jnp.sin(x), H, H, category=_C, note="x")
_r(
  "poly_square_expand",
  lambda x: (x + 1) ** 2 - x**2 - 2 * x - 1,
  H,
  H,
  category=_C,
  note="0",
)
_r("poly_log_cancel", lambda x: x + jnp.log(x) - jnp.log(x), U, U, category=_C, note="log 0")
_r("poly_inverse_cancel", lambda x: x + 1 / x - 1 / x, U, U, category=_C, note="1/0")
_r(
  "poly_sin_x_plus_0",
  lambda x: x + jnp.sin(x) - jnp.sin(x + 0.0),
  H,
  H,
  category=_C,
  note="x + 0 = x: the atoms agree",
)
_r(
  "poly_sin_f16_vs_f32",
  lambda x: x + jnp.sin(x) - jnp.sin(x.astype(jnp.float16)).astype(f32),
  H,
  H,
  category=_C,
  note="a float cast is the identity over the reals: x",
)
_r(
  "poly_round_methods_differ",
  lambda x: (
    x
    + lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO)
    - lax.round(x, lax.RoundingMethod.TO_NEAREST_EVEN)
  ),
  F,
  F,
  category=_C,
  note="at x = 2.5: 3 - 2 = 1, f = x + 1 there (and x elsewhere nearby): atoms must differ",
)
_r("poly_cube_cancel", lambda x: x**3 - x**3 + x, H, H, category=_C, note="x")
_r(
  "poly_bool_atom_cancel",
  lambda x: x + (x > 0).astype(f32) - (x > 0).astype(f32),
  H,
  H,
  category=_C,
  note="x",
)
_r("poly_x2_over_x", lambda x: x**2 / x, U, U, category=_C, note="0/0 at 0")
_r(
  "poly_scalar_const_fold",
  lambda x: x + jnp.sin(x) - jnp.sin(x) + jnp.floor(jnp.float32(0.5)),
  H,
  H,
  category=_C,
  note="floor(0.5) = 0: x (coverage: a scalar constant fold)",
)

# =============================================================================================
# Non-elementwise and conditionals.
_C = "mixing"

_r(
  "cond_on_sum",
  lambda x: lax.cond(jnp.sum(x) > 0, relu, jnp.tanh, x),
  F,
  F,
  category=_C,
  note="x = [1,-3,0,0] (sum<0: tanh) vs q=1/2 drop unit 1: sum>0, relu(2) = 2 != D(tanh 1)",
)
_r("mean_centre", lambda x: x - x.mean(), F, H, category=_C, note="linear, not elementwise")
_r("softmax", jax.nn.softmax, F, F, category=_C, note="f(0) = 1/4")
_r(
  "x_plus_0_times_sum_sign",
  lambda x: x * (jnp.sum(x) == jnp.sum(x)),
  H,
  H,
  category=_C,
  note="s == s for every real s: x",
)
