"""jdrop.check on functions it has never seen: lambdas, closures, modules, rates, bad input.

Every refutation is re-verified here independently of the checker: both sides are
recomputed with mpmath at 50 digits from the counterexample's (x, rate, mask), and
must differ by far more than mpmath's error.
"""

import functools

import flax.linen as linen
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from flax import nnx

import jdrop
from jdrop.testing import assert_commutes
from jdrop.testing import assert_not_commutes

mpmath.mp.dps = 50


def check(f, **kwargs):
  return jdrop.check(f, float_level=False, **kwargs)


def _mp(f_mp, x):
  return [f_mp(mpmath.mpf(float(v))) for v in np.ravel(x)]


def assert_genuine_pathwise(cx, f_mp):
  """Recomputes f(D(x)) and D(f(x)) at the witness with mpmath (elementwise f)."""
  q = 1 - mpmath.mpf(cx.rate)
  i = cx.index
  xi = mpmath.mpf(float(np.ravel(cx.x)[i]))
  kept = bool(np.ravel(cx.mask)[i])
  pre = f_mp(xi / q) if kept else f_mp(mpmath.mpf(0))
  post = f_mp(xi) / q if kept else mpmath.mpf(0)
  _agrees(cx, pre - post)


def _agrees(cx, exact):
  """The certified interval excludes 0 and matches the ideal function's residual.

  The ideal functions here use exact constants (sqrt(2), ...); the jaxpr holds their
  float32 roundings, so the two residuals agree to about 1e-7 relative, not exactly.
  """
  lo, hi = cx.residual
  assert lo > 0 or hi < 0, cx
  mid = (lo + hi) / 2
  assert abs(exact - mid) <= 1e-5 * max(1.0, abs(mid)), (cx, exact)


def assert_genuine_expectation(cx, f_mp):
  q = 1 - mpmath.mpf(cx.rate)
  xi = mpmath.mpf(float(np.ravel(cx.x)[cx.index]))
  mean = q * f_mp(xi / q) + (1 - q) * f_mp(mpmath.mpf(0))
  _agrees(cx, mean - f_mp(xi))


# ----------------------------------------------------------------------------
# The thread's claims, for the registry's own functions.

COMMUTING = ["relu", "leaky_relu", "prelu", "abs", "identity", "rrelu", "threshold"]
ZERO_KEEPING_BUT_NOT_COMMUTING = {
  "tanh": mpmath.tanh,
  "gelu_exact": lambda x: x * (1 + mpmath.erf(x / mpmath.sqrt(2))) / 2,
  "gelu": lambda x: x * (1 + mpmath.tanh(mpmath.sqrt(2 / mpmath.pi) * (x + 0.044715 * x**3))) / 2,
  "silu": lambda x: x / (1 + mpmath.exp(-x)),
  "elu": lambda x: x if x > 0 else mpmath.expm1(x),
  "relu6": lambda x: min(max(x, 0), 6),
  "hard_tanh": lambda x: min(max(x, -1), 1),
  "soft_sign": lambda x: x / (1 + abs(x)),
  "mish": lambda x: x * mpmath.tanh(mpmath.log1p(mpmath.exp(x))),
}


@pytest.mark.parametrize("name", COMMUTING)
def test_positively_homogeneous_activations_are_proved_both_ways(name):
  v = check(name)
  assert v.pathwise.status == "proved" and v.expectation.status == "proved", v
  assert v.zero_preserving is True and v.elementwise is True


@pytest.mark.parametrize("name", sorted(ZERO_KEEPING_BUT_NOT_COMMUTING))
def test_f0_zero_is_not_enough(name):
  v = check(name)
  assert v.zero_preserving is True
  assert v.pathwise.status == "refuted" and v.expectation.status == "refuted", v
  f_mp = ZERO_KEEPING_BUT_NOT_COMMUTING[name]
  assert_genuine_pathwise(v.pathwise.counterexample, f_mp)
  assert_genuine_expectation(v.expectation.counterexample, f_mp)


def test_sigmoid_is_refuted_at_a_dropped_unit():
  v = check(jax.nn.sigmoid)
  assert v.zero_preserving is False
  cx = v.pathwise.counterexample
  assert not cx.mask.any() and cx.pre[cx.index] == 0.5 and cx.post[cx.index] == 0
  np.testing.assert_allclose(v.f0, 0.5)


def test_piecewise_linear_functions_are_decided_exactly():
  for name in ("relu6", "hard_tanh", "hard_shrink", "soft_shrink", "hard_sigmoid"):
    v = check(name)
    assert "exact" in v.pathwise.method or "f(0)" in v.pathwise.method, (name, v)
  # A feature narrower than any sampling grid: only exact breakpoints find it.
  v = check(lambda x: jnp.where(x > 1e-5, x, 0.0))
  assert v.pathwise.status == "refuted" and v.pathwise.method == "exact piecewise-linear analysis"
  cx = v.pathwise.counterexample
  assert 0 < cx.x_at <= 1e-5


# ----------------------------------------------------------------------------
# Functions it has never seen.


def test_affine_commutes_in_expectation_only():
  v = check(lambda x: 3 * x + 1)
  assert v.expectation.status == "proved" and v.pathwise.status == "refuted"
  assert v.zero_preserving is False
  assert_commutes(lambda x: jax.nn.relu(x) - 2.5, mode="expectation")
  assert_not_commutes(lambda x: jax.nn.relu(x) - 2.5)


def test_closed_over_arrays_are_constants_at_their_exact_values():
  w = jnp.array([1.0, -2.0, 0.5, 3.0])
  assert check(lambda x: w * x).pathwise.status == "proved"
  assert check(lambda x: jnp.maximum(w * x, 0.0)).pathwise.status == "proved"
  # A per-position threshold breaks homogeneity only at the position where it is non-zero.
  b = jnp.array([0.0, 0.0, 0.25, 0.0])
  v = check(lambda x: jax.nn.relu(x - b))
  assert v.pathwise.status == "refuted" and v.pathwise.counterexample.index == 2


def test_a_literal_is_taken_at_its_float32_value():
  # 0.1 is not 1/10 in float32: x * 0.1 * 10 is not x, but it is still homogeneous.
  assert check(lambda x: x * 0.1 * 10).pathwise.status == "proved"
  # x - 0.1 * 10 + 1 leaves float32(0.1) * 10 - 1 != 0 behind: not zero at 0.
  v = check(lambda x: x - jnp.float32(0.1) * 10 + 1)
  assert v.zero_preserving is False and v.pathwise.status == "refuted"
  lo, hi = v.pathwise.counterexample.residual
  assert 0 < abs(lo) < 1e-6 and 0 < abs(hi) < 1e-6  # a residual of about 1.5e-8, certified


def test_non_elementwise_functions_are_never_proved_pathwise():
  for f in (
    lambda x: x - x.mean(),
    jnp.cumsum,
    lambda x: x[::-1],
    lambda x: jnp.full_like(x, x.sum()),
    lambda x: jnp.dot(2 * jnp.eye(4) + jnp.eye(4, k=1), x),  # a bidiagonal matrix
  ):
    v = check(f)
    assert v.pathwise.status != "proved", v
    assert v.elementwise is None
  # a diagonal matrix is elementwise, and the dependence analysis sees it exactly
  v = check(lambda x: jnp.dot(2 * jnp.eye(4), x))
  assert v.elementwise and v.pathwise.status == "proved", v
  # ... but linear maps commute in expectation: E f(D(x)) = f(E D(x)) = f(x).
  for f in (lambda x: x - x.mean(), jnp.cumsum, lambda x: jnp.dot(jnp.ones((4, 4)), x)):
    assert check(f).expectation.status == "proved"
  # A non-linear, non-elementwise map does not: the exact mean over all 16 masks differs.
  v = check(lambda x: jax.nn.relu(x - x.mean()))
  assert v.expectation.status == "refuted" and v.expectation.counterexample.mask is None


def test_softmax_is_refuted_with_a_certified_witness():
  v = check(jax.nn.softmax)
  assert v.pathwise.status == "refuted" and v.zero_preserving is False
  assert v.expectation.status == "refuted"


def test_rate_specific_questions_differ_from_every_rate():
  # f(2x) = 2 f(x) exactly over the reals (log2 shifts by 1, the sawtooth is 1-periodic),
  # so the orders agree at rate 1/2 -- and at no other rate.
  def sawtooth(x):
    safe = jnp.where(x == 0, 1.0, jnp.abs(x))
    frac = jnp.log2(safe) - jnp.floor(jnp.log2(safe))
    return jnp.where(x == 0, 0.0, x * (1 + 0.1 * frac))

  at_half = check(sawtooth, rate=0.5)
  assert at_half.pathwise.status != "refuted" and at_half.expectation.status != "refuted"
  every = check(sawtooth)
  assert every.pathwise.status == "refuted" and every.pathwise.counterexample.rate != 0.5
  assert check(sawtooth, rate=0.25).pathwise.status == "refuted"


def test_rate_is_used_for_the_witness():
  v = check("gelu", rate=0.3)
  assert v.rate == 0.3 and v.pathwise.counterexample.rate == 0.3
  assert_genuine_pathwise(v.pathwise.counterexample, ZERO_KEEPING_BUT_NOT_COMMUTING["gelu"])


def test_transformed_functions_are_seen_through():
  assert check(jax.jit(jax.nn.relu)).pathwise.status == "proved"
  assert check(jax.checkpoint(jax.nn.leaky_relu)).pathwise.status == "proved"
  assert check(jax.jit(jax.checkpoint(jnp.tanh))).pathwise.status == "refuted"

  @jax.custom_vjp
  def clipped_identity(x):
    return x

  clipped_identity.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1, 1),))
  assert check(clipped_identity).pathwise.status == "proved"
  assert check(lambda x: jax.lax.cond(True, jax.nn.relu, jnp.tanh, x)).pathwise.status == "proved"


def test_degree_and_domain_edge_cases():
  assert check(lambda x: x**3).pathwise.status == "refuted"  # homogeneous of degree 3
  assert check(lambda x: x * jnp.sign(x)).pathwise.status == "proved"  # |x|
  v = check(jnp.log)  # undefined at 0 and below: f(0) is undefined
  assert v.zero_preserving is None and np.isnan(v.f0).all()
  assert v.pathwise.status == "refuted" and v.pathwise.counterexample.x_at > 0
  # A NaN check jnp emits (ne(d, d)) is false over the reals: softplus is decided.
  assert check(jax.nn.softplus).pathwise.status == "refuted"


def _callback_relu(x):
  return jax.pure_callback(np.maximum, jax.ShapeDtypeStruct(x.shape, x.dtype), x, 0.0)


def test_unsupported_primitive_is_unknown_never_proved():
  v = jdrop.check(_callback_relu)
  assert v.pathwise.status == "unknown" and v.expectation.status == "unknown"
  # the reason names the primitive, not a false "not elementwise"
  assert "pure_callback" in v.pathwise.reason and "not known to be elementwise" in v.pathwise.reason
  assert "pure_callback" in v.float_level.note and not v.float_level.dtypes


def test_sort_is_refuted_with_a_certified_witness():
  v = check(jnp.sort)
  assert v.pathwise.status == "refuted" and v.elementwise is None
  cx = v.pathwise.counterexample
  x, mask = cx.x.astype(np.float32), cx.mask
  pre = np.sort(np.where(mask, x / np.float32(0.5), 0))
  post = np.where(mask, np.sort(x) / np.float32(0.5), 0)
  assert cx.rate == 0.5 and not np.array_equal(pre, post)


def test_flax_linen_modules_bound_and_with_variables():
  class Scale(linen.Module):
    @linen.compact
    def __call__(self, x):
      w = self.param("w", lambda key, shape: jnp.array([1.0, 2.0, -1.0, 0.5]), (4,))
      return jax.nn.relu(w * x)

  module = Scale()
  variables = module.init(jax.random.key(0), jnp.ones(4))
  assert check((module, variables)).pathwise.status == "proved"
  assert check(module.bind(variables)).pathwise.status == "proved"
  dense = linen.Dense(4)
  params = dense.init(jax.random.key(0), jnp.ones(4))
  v = check((dense, params))  # a Dense layer mixes units (and has a bias)
  assert v.pathwise.status == "refuted" and v.expectation.status == "proved"
  with pytest.raises(TypeError, match="unbound Flax linen module"):
    check(module)


def test_nnx_modules():
  layer = nnx.Linear(4, 4, use_bias=False, rngs=nnx.Rngs(0))
  assert check(layer).expectation.status == "proved"
  assert check(nnx.Sequential(layer, jax.nn.tanh)).expectation.status == "refuted"


def test_import_paths_and_registry_names():
  assert check("jax.nn:relu").pathwise.status == "proved"
  assert check("swish").function == "swish"  # an alias
  assert check("jdrop.activations:hard_shrink").pathwise.status == "refuted"


# ----------------------------------------------------------------------------
# Bad input: one clear error naming jdrop.check, the argument and the fix.


@pytest.mark.parametrize(
  ("kwargs", "error", "needle"),
  [
    ({"f": 3}, TypeError, "`f` must be a callable"),
    ({"f": "tanhh"}, ValueError, "Did you mean 'tanh'"),
    ({"f": "nope.nothing:f"}, ValueError, "cannot be imported"),
    ({"f": "jax.nn:nothing"}, ValueError, "does not have"),
    ({"f": lambda x: x[:2]}, ValueError, "must keep the input's shape"),
    ({"f": lambda x: x.astype(jnp.int32)}, TypeError, "must return a float array"),
    ({"f": lambda x: (x, x)}, ValueError, "must return one array"),
    ({"f": lambda x: x @ jnp.ones((3, 3))}, ValueError, "failed when traced"),
    ({"f": jnp.tanh, "rate": 1.0}, ValueError, "open interval (0, 1)"),
    ({"f": jnp.tanh, "rate": 0.0}, ValueError, "open interval (0, 1)"),
    ({"f": jnp.tanh, "rate": float("nan")}, ValueError, "open interval (0, 1)"),
    ({"f": jnp.tanh, "rate": "0.5"}, TypeError, "`rate` must be a float"),
    ({"f": jnp.tanh, "shape": (0,)}, ValueError, "`shape` must be"),
    ({"f": jnp.tanh, "shape": (1000,)}, ValueError, "at most 256"),
  ],
)
def test_bad_input(kwargs, error, needle):
  with pytest.raises(error, match=r"^jdrop\.check: ") as info:
    check(**kwargs)
  assert needle in str(info.value), info.value


def test_a_user_error_is_reported_with_its_own_message():
  def broken(x):
    raise RuntimeError("boom in user code")

  with pytest.raises(ValueError, match="RuntimeError: boom in user code"):
    check(broken)


def test_assertions_fail_with_the_reason():
  with pytest.raises(AssertionError, match="counterexample"):
    assert_commutes(jnp.tanh)
  with pytest.raises(AssertionError, match="proved"):
    assert_not_commutes(jax.nn.relu)
  with pytest.raises(ValueError, match="`mode` must be"):
    assert_commutes(jax.nn.relu, mode="pathwize")
  assert_commutes(functools.partial(jax.nn.leaky_relu, negative_slope=0.3), rate=0.1)


def test_verdict_renders_and_serialises():
  import json

  v = check("relu6")
  text = str(v)
  assert "pathwise: refuted" in text and "counterexample" in text
  data = json.loads(json.dumps(v.to_dict()))
  assert data["pathwise"]["status"] == "refuted"
  assert data["pathwise"]["counterexample"]["rate"] == 0.5


# ----------------------------------------------------------------------------
# Regressions from an adversarial review: each was once unsound or crashed.

_I32, _F32 = jnp.int32, jnp.float32
_IDX = jnp.array([0, 1, 2, 7], _I32).reshape(4, 1)


def _gather_fill(fill):
  dims = jax.lax.GatherDimensionNumbers((), (0,), (0,))
  return lambda x: jax.lax.gather(x, _IDX, dims, (1,), mode="fill", fill_value=fill)


def _select3(x):
  z, o = jnp.zeros(4, _I32), jnp.ones(4, _I32)
  return jax.lax.select_n(x > 0, z, jax.lax.select_n(x > 1, o, 2 * o))


NOT_PROVED = {  # true over the reals: f(0) is undefined, or f does not commute
  "x*inf": lambda x: x * jnp.inf,
  "x/0": lambda x: x / 0.0,
  "x*nan": lambda x: x * jnp.nan,
  "x/w with a zero": lambda x: x / jnp.array([1.0, 2.0, 0.0, 4.0]),
  "x + 0*log(x)": lambda x: x + 0.0 * jnp.log(x),
  "celu(alpha=0)": lambda x: jax.nn.celu(x, alpha=0.0),
  "integer floor division": lambda x: (
    x + jax.lax.div(jnp.zeros_like(x, _I32) + 3, _I32(2)).astype(_F32) - 1.5 + 0.0 * jnp.tanh(x)
  ),
  "bitwise not": lambda x: x * (~_select3(x)).astype(_F32),
  "gather filling 3": _gather_fill(3.0),
  "gather filling NaN": _gather_fill(None),
  "a permutation": lambda x: x[jnp.array([1, 0, 3, 2])],
  "isnan(log x)": lambda x: jnp.where(jnp.isnan(jnp.log(x)), 1.0, x),
}
NOT_REFUTED = {  # these commute pathwise
  "gather filling 0": _gather_fill(0.0),
  "div of an integer that is always 1": lambda x: (
    x * jax.lax.div((x > 1).astype(_I32) + 2, _I32(2)).astype(_F32)
  ),
  "relu with a bitwise not": lambda x: (
    jnp.maximum(x + 1.0, 1.0) - 1.0 + (~jnp.zeros_like(x, _I32)).astype(_F32) + 1.0
  ),
  "dynamic_slice of everything": lambda x: jax.lax.dynamic_slice(x, (_I32(0),), (4,)),
  "x * sign(x) as int": lambda x: x * jnp.sign(x).astype(_I32).astype(_F32),
}


@pytest.mark.parametrize("name", sorted(NOT_PROVED))
def test_review_never_proved(name):
  v = check(NOT_PROVED[name])
  assert v.pathwise.status != "proved", v
  if name == "integer floor division":  # f(0) = 3 // 2 - 1.5 = -0.5
    assert v.zero_preserving is False and v.pathwise.status == "refuted"


@pytest.mark.parametrize("name", sorted(NOT_REFUTED))
def test_review_never_refuted(name):
  v = check(NOT_REFUTED[name])
  assert v.pathwise.status != "refuted" and v.zero_preserving is not False, v


def test_review_no_internal_errors():
  for f in (
    lambda x: x.astype(_I32).astype(_F32),
    lambda x: x * x[jnp.argmax(x)],
    lambda x: jnp.take(x, jnp.array([1, 0, 3, 2])),
    lambda x: (
      x + (jax.lax.select_n(x > 1, *([jnp.zeros(4, _I32), jnp.ones(4, _I32)]))).astype(_F32)
    ),
    lambda x: jnp.where(x > 0, (x > 0).astype(_F32) ** -1, 0.0),
    lambda x: jax.nn.relu(x * 1e-30 * 1e-30 * 1e-30 * 1e-30 * 1e-30 * 1e-30 * 1e-30 * 1e-30 - 1),
    _gather_fill(9.0),
  ):
    # none of these commutes pathwise over the reals (truncation, a permutation, a constant
    # offset, a step, relu(1e-240 x - 1) beyond float32's range, a fill value of 9)
    v = check(f)
    assert v.pathwise.status != "proved", v
  assert check(jnp.tanh, rate=5e-324).pathwise.status != "proved"
  with pytest.raises(ValueError, match="non-empty tuple"):
    check(jnp.tanh, shape=())
