"""The checker is never wrong and never crashes: disguises, poisons, casts, loops, randomness.

Each property wraps a random piecewise-linear tree (whose truth ``checker_truth`` decides
exactly over fractions) in a construction whose effect on the truth is known:

* a **disguise** leaves the real function unchanged (a loop that applies it, a power 1.0, a
  float cast, ``nan_to_num``, ``x + sin(x) - sin(x)``, a constant-key random term times 0,
  ...): the verdict must agree with the tree's truth, with genuine counterexamples; the
  disguises the checker sees through must also leave it decided;
* a **poison** makes the function undefined at some real input (a NaN or inf constant that a
  ``where`` picks on one side of a breakpoint, ``0 * log(x - c)``): never "proved".

Then the issue-11 regressions, one per class: float powers, out-of-range integer casts,
randomness inside ``f``, ``sys.exit``, loops and ``stack`` with honest reasons, callbacks
(no float-level compile per row), identities the algebra misses, tiny features.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from fractions import Fraction

import checker_truth as truth
import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from test_checker_properties import pl_trees

import jdrop

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
RATES = (None, 0.5, 0.25, 0.1)
Wrap = Callable[[Callable[[jax.Array], jax.Array]], Callable[[jax.Array], jax.Array]]


def check(f, rate=None, **kwargs):
  return jdrop.check(f, rate=rate, float_level=False, **kwargs)


# Disguises the checker must see through: the verdict stays decided.
TRANSPARENT: dict[str, Wrap] = {
  "jit": lambda g: jax.jit(g),
  "checkpoint": lambda g: jax.checkpoint(g),
  "fori_loop": lambda g: lambda x: jax.lax.fori_loop(0, 3, lambda i, y: y, g(x)),
  "while_loop": lambda g: (
    lambda x: jax.lax.while_loop(lambda c: c[0] < 2, lambda c: (c[0] + 1, c[1]), (0, g(x)))[1]
  ),
  "scan": lambda g: lambda x: jax.lax.scan(lambda c, _: (c, None), g(x), None, length=2)[0],
  "power 1.0": lambda g: lambda x: jnp.power(g(x), 1.0),
  "bf16 round trip": lambda g: lambda x: g(x).astype(jnp.bfloat16).astype(jnp.float32),
  "reduce_precision": lambda g: lambda x: jax.lax.reduce_precision(g(x), 5, 10),
  "nan_to_num": lambda g: lambda x: jnp.nan_to_num(g(x)),
  "stack and max": lambda g: lambda x: jnp.stack([g(x), g(x)]).max(0),
  "cond on a constant": lambda g: lambda x: jax.lax.cond(True, g, lambda y: -g(y), x),
}
# Disguises that may leave the checker undecided, but never wrong.
OPAQUE: dict[str, Wrap] = {
  "plus sin minus sin": lambda g: lambda x: g(x) + jnp.sin(x) - jnp.sin(x),
  "random times 0": lambda g: lambda x: g(x) + 0.0 * jax.random.uniform(jax.random.key(0), x.shape),
  "cube root of the cube": lambda g: lambda x: jnp.cbrt(g(x) ** 3),
  "sort of a sorted pair": lambda g: lambda x: jnp.sort(jnp.stack([g(x), g(x)]), axis=0)[0],
  "scatter of itself": lambda g: lambda x: g(x).at[1].set(g(x)[1]),
}


@settings(max_examples=60, **SETTINGS)
@given(
  tree=pl_trees,
  wrap=st.sampled_from(sorted(TRANSPARENT)),
  rate=st.sampled_from(RATES),
)
def test_transparent_disguises_keep_the_exact_verdict(tree, wrap, rate):
  verdict = check(TRANSPARENT[wrap](truth.to_jax(tree)), rate)
  truth.assert_pl_verdict(tree, verdict, rate)


@settings(max_examples=40, **SETTINGS)
@given(tree=pl_trees, wrap=st.sampled_from(sorted(OPAQUE)), rate=st.sampled_from(RATES))
def test_opaque_disguises_are_never_wrong(tree, wrap, rate):
  verdict = check(OPAQUE[wrap](truth.to_jax(tree)), rate)
  truth.assert_pl_verdict(tree, verdict, rate, decided=False)


# A poison: f is undefined on one side of c (NaN or inf reached there, or a log of a
# non-positive number), so f is not a real function and neither order can be proved.
POISONS: dict[str, Callable[[jax.Array, float], jax.Array]] = {
  "times where(x > c, 1, nan)": lambda x, c: jnp.where(x > c, 1.0, jnp.nan),
  "times where(x < c, 1, inf)": lambda x, c: jnp.where(x < c, 1.0, jnp.inf),
  "times where(x == c, -inf, 1)": lambda x, c: jnp.where(x == c, -jnp.inf, 1.0),
  "times where(x > c, 1, log(0))": lambda x, c: jnp.where(x > c, 1.0, jnp.log(0.0)),
  "plus 0 * log(x - c)": lambda x, c: 1.0 + 0.0 * jnp.log(x - c),
  "times (x - c) / (x - c)": lambda x, c: (x - c) / (x - c),
  "times max(nan, 1)": lambda x, c: jnp.maximum(jnp.nan, 1.0) + 0.0 * x,
}


@settings(max_examples=60, **SETTINGS)
@given(
  tree=pl_trees,
  poison=st.sampled_from(sorted(POISONS)),
  at=st.sampled_from([0.0, 0.5, -1.0, 2.0**-20, 3.0]),
  rate=st.sampled_from(RATES),
)
def test_poisoned_functions_are_never_proved(tree, poison, at, rate):
  f = truth.to_jax(tree)
  verdict = check(lambda x: f(x) * POISONS[poison](x, at), rate)
  assert verdict.pathwise.status != "proved", verdict
  assert verdict.expectation.status != "proved", verdict


@pytest.mark.parametrize("name", sorted(POISONS))
def test_poisoned_relu_and_identity_are_never_proved(name):
  for f in (jax.nn.relu, lambda x: x, jnp.abs):
    for c in (0.0, 1.0, -0.5):
      verdict = check(lambda x, f=f, c=c: f(x) * POISONS[name](x, c))
      assert "proved" not in (verdict.pathwise.status, verdict.expectation.status), verdict


# --------------------------------------------------------------------------------------------
# Regressions of issue 11, with the truth recomputed independently where refuted.


def _mp_pathwise(f_mp: Callable, cx) -> tuple[mpmath.mpf, mpmath.mpf]:
  """Both orders at the witness's certified position, with mpmath (elementwise f)."""
  q = 1 - mpmath.mpf(cx.rate)
  x = mpmath.mpf(float(np.ravel(cx.x)[cx.index]))
  kept = bool(np.ravel(cx.mask)[cx.index])
  if not kept:
    return f_mp(mpmath.mpf(0)), mpmath.mpf(0)
  return f_mp(x / q), f_mp(x) / q


REFUTED = {  # f, f over mpmath (60 digits), each refuted pathwise with a genuine witness
  "x ** 2.0": (lambda x: x**2.0, lambda t: t**2),
  "jnp.power(x, 3.0)": (lambda x: jnp.power(x, 3.0), lambda t: t**3),
  "2.0 ** x": (lambda x: 2.0**x, lambda t: mpmath.power(2, t)),
  "relu(x) ** 0.5": (lambda x: jax.nn.relu(x) ** 0.5, lambda t: mpmath.sqrt(max(t, 0))),
  "x as uint8": (
    lambda x: x.astype(jnp.uint8).astype(jnp.float32),
    lambda t: mpmath.mpf(int(t)) if 0 <= t < 256 else None,
  ),
  "x * 1000 as int8": (
    lambda x: (x * 1000).astype(jnp.int8).astype(jnp.float32),
    lambda t: mpmath.mpf(int(t * 1000)) if abs(t * 1000) < 128 else None,
  ),
  "x * 1e9 as int32": (
    lambda x: (x * 1e9).astype(jnp.int32).astype(jnp.float32),
    lambda t: mpmath.mpf(int(t * mpmath.mpf(float(np.float32(1e9))))),
  ),
  "x * tanh(1e6 x)": (
    lambda x: x * jnp.tanh(1e6 * x),
    lambda t: t * mpmath.tanh(mpmath.mpf(float(np.float32(1e6))) * t),
  ),
  "x // 1": (lambda x: x // 1, mpmath.floor),
  "jnp.remainder(x, 1)": (lambda x: jnp.remainder(x, 1.0), lambda t: t - mpmath.floor(t)),
  "jnp.fmod(x, 1.5)": (lambda x: jnp.fmod(x, 1.5), lambda t: mpmath.fmod(t, 1.5)),
  "x * sigmoid(2**20 x)": (
    lambda x: x * jax.nn.sigmoid(x * 2.0**20),
    lambda t: t / (1 + mpmath.exp(-t * 2**20)),
  ),
}


@pytest.mark.parametrize("name", sorted(REFUTED))
def test_regressions_refuted_with_genuine_witnesses(name):
  f, f_mp = REFUTED[name]
  verdict = check(f)
  assert verdict.pathwise.status == "refuted", verdict
  with mpmath.workdps(60):
    pre, post = _mp_pathwise(f_mp, verdict.pathwise.counterexample)
    assert pre is not None and post is not None and pre != post, (pre, post, verdict)


def _callback_relu(x):
  return jax.pure_callback(np.maximum, jax.ShapeDtypeStruct(x.shape, x.dtype), x, 0.0)


PROVED = {  # commute pathwise (and so in expectation) at every rate
  "relu(x) ** 1.0": lambda x: jax.nn.relu(x) ** 1.0,
  "x * uniform(key(0))": lambda x: x * jax.random.uniform(jax.random.key(0), x.shape),
  "x * uniform(PRNGKey(0))": lambda x: x * jax.random.uniform(jax.random.PRNGKey(0), x.shape),
  "jdrop.dropout with a fixed key": lambda x: jdrop.dropout(jax.random.key(1), x, rate=0.3),
  "fori_loop of relu": lambda x: jax.lax.fori_loop(0, 3, lambda i, y: jax.nn.relu(y), x),
  "while_loop of relu": lambda x: jax.lax.while_loop(
    lambda c: c[0] < 3, lambda c: (c[0] + 1, jax.nn.relu(c[1])), (0, x)
  )[1],
  "scan of leaky relu": lambda x: jax.lax.scan(
    lambda c, _: (jax.nn.leaky_relu(c, 0.25), None), x, None, length=4
  )[0],
  "stack([x, -x]).max(0)": lambda x: jnp.stack([x, -x]).max(0),
  "sqrt(x ** 2)": lambda x: jnp.sqrt(x**2),
  "cbrt(x ** 3)": lambda x: jnp.cbrt(x**3),
  "sqrt(relu(x) * relu(x))": lambda x: jnp.sqrt(jax.nn.relu(x) * jax.nn.relu(x)),
  "x.at[0].set(0.0)": lambda x: x.at[0].set(0.0),
  "dynamic_update_slice with zeros": lambda x: jax.lax.dynamic_update_slice(x, jnp.zeros(2), (1,)),
  "x + sin(x) - sin(x)": lambda x: x + jnp.sin(x) - jnp.sin(x),
  "(x + 1)**2 - x**2 - 2x - 1": lambda x: (x + 1) ** 2 - x**2 - 2 * x - 1,
  "tanh(x) - tanh(x) + 3x": lambda x: jnp.tanh(x) - jnp.tanh(x) + 3 * x,
  "nan_to_num(x)": jnp.nan_to_num,
  "relu with a debug print": lambda x: (jax.debug.print("x={x}", x=x), jax.nn.relu(x))[1],
  "x * where(x < inf, 1, 0)": lambda x: x * jnp.where(x < jnp.inf, 1.0, 0.0),
  "max(x, -inf)": lambda x: jnp.maximum(x, -jnp.inf),
}


@pytest.mark.parametrize("name", sorted(PROVED))
def test_regressions_proved(name):
  verdict = check(PROVED[name])
  assert verdict.pathwise.status == "proved", verdict
  assert verdict.expectation.status == "proved", verdict


EXPECTATION_ONLY = {
  "x + normal(key(0))": lambda x: x + jax.random.normal(jax.random.key(0), x.shape),
  "(x + 1)**2 - x**2 - x": lambda x: (x + 1) ** 2 - x**2 - x,
  "x + sin(1) - sin(1) + 2": lambda x: x + jnp.sin(1.0) - jnp.sin(1.0) + 2.0,
}


@pytest.mark.parametrize("name", sorted(EXPECTATION_ONLY))
def test_regressions_in_expectation_only(name):
  verdict = check(EXPECTATION_ONLY[name])
  assert verdict.expectation.status == "proved", verdict
  assert verdict.pathwise.status == "refuted", verdict


NEVER_PROVED = {  # undefined somewhere over the reals, or not commuting
  "x * where(x == 0, nan, 1)": lambda x: x * jnp.where(x == 0, jnp.nan, 1.0),
  "x * where(x > 0, 1, inf)": lambda x: x * jnp.where(x > 0, 1.0, jnp.inf),
  "relu(x) * where(x > 0, 1, nan)": lambda x: jax.nn.relu(x) * jnp.where(x > 0, 1.0, jnp.nan),
  "x * where(x > 0, 1, log(0))": lambda x: x * jnp.where(x > 0, 1.0, jnp.log(0.0)),
  "x + log(x) - log(x)": lambda x: x + jnp.log(x) - jnp.log(x),
  "x * x / x": lambda x: x * x / x,
  "x * (inf - inf + 1)": lambda x: x * (jnp.inf - jnp.inf + 1.0),
  "max(x, nan)": lambda x: jnp.maximum(x, jnp.nan),
  "max(x, inf) - inf + x": lambda x: jnp.maximum(x, jnp.inf) - jnp.inf + x,
  "x * isfinite(1 / (x - 1))": lambda x: x * jnp.isfinite(1 / (x - 1)),
  "where(x > 0, x, nan) + 0": lambda x: jnp.where(x > 0, x, jnp.nan),
  "x * (x > 0) * where(x < -1, nan, 1)": lambda x: x * (x > 0) * jnp.where(x < -1, jnp.nan, 1.0),
  "scan that stops on x": lambda x: jax.lax.while_loop(
    lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * jnp.nan), (0, x)
  )[1],
}


@pytest.mark.parametrize("name", sorted(NEVER_PROVED))
def test_regressions_never_proved(name):
  verdict = check(NEVER_PROVED[name])
  assert verdict.pathwise.status != "proved", verdict
  assert verdict.expectation.status != "proved", verdict


def _exits(x):
  sys.exit(3)


def _raises_keyboard_interrupt(x):
  raise KeyboardInterrupt


def test_a_function_that_exits_is_a_value_error_not_an_exit():
  with pytest.raises(ValueError, match="SystemExit"):
    check(_exits)
  with pytest.raises(KeyboardInterrupt):  # Ctrl-C still stops the program
    check(_raises_keyboard_interrupt)


@pytest.mark.parametrize(
  "f",
  [
    lambda x: jax.lax.fori_loop(0, 3, lambda i, y: jax.nn.relu(y), x),
    lambda x: jnp.stack([x, -x]).max(0),
    lambda x: jax.lax.while_loop(
      lambda c: c[0] < 5000, lambda c: (c[0] + 1, jax.nn.relu(c[1])), (0, x)
    )[1],
    _callback_relu,
  ],
)
def test_reasons_never_claim_a_false_non_elementwise(f):
  verdict = check(f)
  if verdict.pathwise.status != "proved":
    assert "not elementwise (an output depends" not in verdict.pathwise.reason, verdict


def test_an_unrollable_loop_is_named():
  body = lambda c: (c[0] + 1, jax.nn.relu(c[1]))
  long = lambda x: jax.lax.while_loop(lambda c: c[0] < 5000, body, (0, x))[1]
  verdict = check(long)
  assert verdict.pathwise.status == "unknown" and "while" in verdict.pathwise.reason


def test_a_callback_skips_the_float_level_search_quickly():
  start = time.perf_counter()
  verdict = jdrop.check(lambda x: (jax.debug.print("{}", x), jax.nn.relu(x))[1])
  assert time.perf_counter() - start < 30  # was 289 s: XLA compiled a print per row
  assert verdict.pathwise.status == "proved"
  assert not verdict.float_level.dtypes and "debug_print" in verdict.float_level.note
  assert "skipped" in str(verdict) and verdict.to_dict()["float_level"]["note"]


def test_an_engine_failure_is_unknown_with_the_reason(monkeypatch):
  from jdrop._src.checker import homogeneity

  def broken(*args, **kwargs):
    raise RuntimeError("injected")

  monkeypatch.setattr(homogeneity, "analyse", broken)
  verdict = check(jnp.tanh)
  assert verdict.pathwise.status == "refuted"  # the search still refutes it
  verdict = check(jax.nn.relu)  # the piecewise engine needs the algebra's dependence: unknown
  assert verdict.pathwise.status == "unknown", verdict
  assert "RuntimeError: injected" in verdict.pathwise.reason


def test_a_ball_evaluation_failure_is_unknown_and_reported(monkeypatch):
  from jdrop._src.checker import balls

  def broken(eqn, *args):
    raise OverflowError("injected")

  monkeypatch.setitem(balls.RULES, jax.lax.tanh_p, broken)
  verdict = check(jnp.tanh)
  assert verdict.pathwise.status == "unknown", verdict
  assert "OverflowError: injected" in verdict.pathwise.reason


def test_non_elementwise_search_drops_several_units():
  # The orders agree (for x without zeros) unless two or more units are dropped together.
  f = lambda x: x * jnp.where(jnp.sum(x != 0) >= x.size - 1, 1.0, 2.0)
  verdict = check(f)
  assert verdict.pathwise.status == "refuted" and verdict.expectation.status == "refuted"
  cx = verdict.pathwise.counterexample
  assert cx.mask.sum() <= cx.mask.size - 2 and np.all(cx.x != 0), cx


def test_sort_witness_is_genuine():
  verdict = check(jnp.sort)
  cx = verdict.pathwise.counterexample
  q = Fraction(1) - Fraction(cx.rate)
  x = [Fraction(float(v)) for v in cx.x]
  dropped = [v / q if m else Fraction(0) for v, m in zip(x, cx.mask, strict=True)]
  post = [v / q if m else Fraction(0) for v, m in zip(sorted(x), cx.mask, strict=True)]
  assert sorted(dropped) != post and math.isfinite(cx.residual[0])


def test_identity_at_x_as_written_uses_exact_literals():
  # 0.1 * 3 - 0.3 is not 0 over the reals at float32's 0.1 and 0.3: x * that is homogeneous
  # (proved), and the polynomial engine must not round the constant to 0 either.
  c = np.float32(0.1) * 3 - np.float32(0.3)
  verdict = check(lambda x: x + (x * 0.1 * 3 - x * 0.3) ** 2)
  assert verdict.pathwise.status == "refuted", (c, verdict)


def test_truth_of_x_times_tanh_feature_scale():
  # the witness sits where tanh(1e6 x) is neither 0 nor 1: near 1e-6
  cx = check(lambda x: x * jnp.tanh(1e6 * x)).pathwise.counterexample
  t = abs(float(np.ravel(cx.x)[cx.index]))
  assert 1e-9 < t < 1e-3, cx


@pytest.mark.parametrize("spec", [".cli:main", "..x:y", ":relu", "jax.nn:"])
def test_bad_import_paths_are_one_value_error(spec):
  with pytest.raises(ValueError, match="module:attribute"):
    check(spec)
