"""Tests of jdrop.testing: what each strategy draws, what it can reach, and its errors."""

from __future__ import annotations

import importlib
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import Phase
from hypothesis import find
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

import jdrop
from jdrop import testing as jt

# Few examples: these tests check the strategies, not jdrop. `find` searches further for a
# value that shows a strategy reaches a case, and returns the first one (no shrinking).
SETTINGS = settings(max_examples=30, deadline=None, database=None)
FIND = settings(max_examples=1000, deadline=None, database=None, phases=[Phase.generate])


def is_typed(key: jax.Array) -> bool:
  return jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)


# ----------------------------------------------------------------------------
# keys


@SETTINGS
@given(jt.keys())
def test_keys_are_single_typed_or_raw_keys(key):
  if is_typed(key):
    assert key.shape == ()
    assert str(jax.random.key_impl(key)) == "threefry2x32"
  else:
    assert key.dtype == jnp.uint32 and key.shape == (2,)
  jdrop.keep_mask(key, (2,), rate=0.5)  # jdrop accepts every drawn key


def test_keys_reach_both_kinds_and_the_high_key_word():
  find(jt.keys(), is_typed, settings=FIND)
  find(jt.keys(), lambda key: not is_typed(key), settings=FIND)
  # A seed below 2**32 leaves the first word 0; drawn key data sets it too.
  find(jt.keys(kinds=("typed",)), lambda key: jax.random.key_data(key)[0] != 0, settings=FIND)


@SETTINGS
@given(jt.keys(kinds=("typed",), impls=("rbg", "threefry2x32")))
def test_keys_kinds_and_impls(key):
  assert is_typed(key)
  assert str(jax.random.key_impl(key)) in ("rbg", "threefry2x32")


@SETTINGS
@given(jt.keys(kinds=("raw",)))
def test_keys_raw_only(key):
  assert not is_typed(key) and key.shape == (2,)


@pytest.mark.parametrize(
  "kwargs, arg",
  [
    ({"kinds": "typed"}, "kinds"),
    ({"kinds": ()}, "kinds"),
    ({"kinds": ("typed", "seed")}, "kinds"),
    ({"impls": ()}, "impls"),
    ({"impls": ("no_such_impl",)}, "impls"),
  ],
)
def test_keys_bad_arguments(kwargs, arg):
  with pytest.raises(ValueError, match=rf"^jdrop\.testing\.keys: `{arg}` .*, got .*\. \S"):
    jt.keys(**kwargs)


# ----------------------------------------------------------------------------
# rates


@SETTINGS
@given(jt.rates())
def test_rates_are_floats_in_unit_interval(rate):
  assert isinstance(rate, float) and 0.0 <= rate <= 1.0


@pytest.mark.parametrize(
  "name, condition",
  [
    ("zero", lambda r: r == 0.0),
    ("one", lambda r: r == 1.0),
    ("tiny", lambda r: 0.0 < r < 1e-20),
    ("keep probability rounds to 1 in float32", lambda r: 0.0 < r and np.float32(1 - r) == 1),
    ("within an ulp of one", lambda r: r == 1.0 - 2.0**-53),
    ("ordinary", lambda r: 0.2 < r < 0.8 and r not in (0.25, 0.5, 0.75)),
  ],
)
def test_rates_reach_the_edges(name, condition):
  del name
  find(jt.rates(), condition, settings=FIND)


@SETTINGS
@given(jt.rates(include_edges=False))
def test_rates_without_edges_exclude_the_ends(rate):
  assert 0.0 < rate < 1.0


@SETTINGS
@given(jt.rates(min_rate=0.25, max_rate=0.75), jt.rates(max_rate=0.99))
def test_rates_respect_bounds(bounded, below_one):
  assert 0.25 <= bounded <= 0.75
  assert below_one <= 0.99


def test_rates_with_max_below_one_still_reach_the_ends():
  find(jt.rates(max_rate=0.99), lambda r: r == 0.99, settings=FIND)
  find(jt.rates(max_rate=0.99), lambda r: r == 0.0, settings=FIND)


@pytest.mark.parametrize(
  "kwargs, arg, error",
  [
    ({"max_rate": 1.5}, "max_rate", ValueError),
    ({"min_rate": -0.1}, "min_rate", ValueError),
    ({"max_rate": math.nan}, "max_rate", ValueError),
    ({"max_rate": True}, "max_rate", TypeError),
    ({"max_rate": "0.5"}, "max_rate", TypeError),
    ({"min_rate": 0.6, "max_rate": 0.5}, "max_rate", ValueError),
    ({"min_rate": 0.5, "max_rate": 0.5, "include_edges": False}, "max_rate", ValueError),
  ],
)
def test_rates_bad_arguments(kwargs, arg, error):
  with pytest.raises(error, match=rf"^jdrop\.testing\.rates: `{arg}` .*, got .*\. \S"):
    jt.rates(**kwargs)


# ----------------------------------------------------------------------------
# float_arrays


@SETTINGS
@given(jt.float_arrays())
def test_float_arrays_defaults(x):
  assert isinstance(x, jax.Array)
  assert x.dtype in (jnp.float16, jnp.bfloat16, jnp.float32)
  assert 0 <= x.ndim <= 3 and all(1 <= n <= 4 for n in x.shape)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize(
  "name, condition",
  [
    ("inf", lambda x, finfo: np.isposinf(x).any()),
    ("-inf", lambda x, finfo: np.isneginf(x).any()),
    ("nan", lambda x, finfo: np.isnan(x).any()),
    ("-0", lambda x, finfo: ((x == 0) & np.signbit(x)).any()),
    ("subnormal", lambda x, finfo: ((x != 0) & (np.abs(x) < float(finfo.tiny))).any()),
    ("largest finite", lambda x, finfo: (np.abs(x) == float(finfo.max)).any()),
    ("ordinary", lambda x, finfo: ((np.abs(x) > 1e-3) & (np.abs(x) < 1e3) & (x != 1)).all()),
  ],
)
def test_float_arrays_reach_special_values(dtype, name, condition):
  del name
  finfo = jnp.finfo(dtype)
  # NumPy (not XLA, which flushes subnormals on CPU) inspects the values, in float32.
  find(
    jt.float_arrays(dtypes=(dtype,), shapes=(4,)),
    lambda x: bool(condition(np.asarray(x).astype(np.float32), finfo)),
    settings=FIND,
  )


@SETTINGS
@given(
  jt.float_arrays(allow_inf=False, allow_nan=False, allow_subnormal=False, shapes=(6,)),
  jt.float_arrays(allow_nan=False, min_value=-1.005, max_value=2.3, shapes=(6,)),
)
def test_float_arrays_options(finite, bounded):
  assert bool(jnp.isfinite(finite).all())
  tiny = jnp.finfo(finite.dtype).tiny
  assert bool(((finite == 0) | (jnp.abs(finite) >= tiny)).all())
  # The bounds are not representable in float16/bfloat16: values are rounded inwards.
  as_f32 = bounded.astype(jnp.float32)
  assert bool(((as_f32 >= -1.005) & (as_f32 <= 2.3)).all())


@SETTINGS
@given(
  jt.float_arrays(dtypes=(jnp.bfloat16,), shapes=st.sampled_from([(3,), (2, 5)])),
  jt.float_arrays(min_dims=2, max_dims=2, min_side=3, max_side=3),
)
def test_float_arrays_shapes(some, square):
  assert some.dtype == jnp.bfloat16 and some.shape in ((3,), (2, 5))
  assert square.shape == (3, 3)


def test_float_arrays_float64():
  strategy = jt.float_arrays(dtypes=(jnp.float64,), shapes=(2,))
  with jax.enable_x64(True):
    x = find(strategy, lambda x: True, settings=FIND)
    assert x.dtype == jnp.float64
  with pytest.raises(ValueError, match=r"jdrop\.testing\.float_arrays: `dtypes`.*enable_x64"):
    find(strategy, lambda x: True, settings=FIND)


@pytest.mark.parametrize(
  "kwargs, arg, error",
  [
    ({"dtypes": ()}, "dtypes", TypeError),
    ({"dtypes": jnp.float32}, "dtypes", TypeError),
    ({"dtypes": (jnp.int32,)}, "dtypes", TypeError),
    ({"dtypes": ("not a dtype",)}, "dtypes", TypeError),
    ({"min_value": math.inf}, "min_value", ValueError),
    ({"max_value": math.nan}, "max_value", ValueError),
    ({"min_value": 1.0, "max_value": 0.0}, "max_value", ValueError),
  ],
)
def test_float_arrays_bad_arguments(kwargs, arg, error):
  pattern = rf"^jdrop\.testing\.float_arrays: `{arg}` .*, got .*\. \S"
  with pytest.raises(error, match=pattern):
    jt.float_arrays(**kwargs)


# ----------------------------------------------------------------------------
# activations


@SETTINGS
@given(jt.activations())
def test_activations_are_elementwise_registry_names(name):
  assert name in jdrop.activations.names()
  assert jdrop.activations.info(name).elementwise


def test_activations_elementwise_only_filters():
  elementwise = [n for n in jdrop.activations.names() if jdrop.activations.info(n).elementwise]
  assert len(elementwise) < len(jdrop.activations.names())  # softmax and friends exist
  non_elementwise = lambda n: not jdrop.activations.info(n).elementwise
  find(jt.activations(elementwise_only=False), non_elementwise, settings=FIND)
  with pytest.raises(NoSuchExample):
    find(jt.activations(), non_elementwise, settings=FIND)


def test_activations_sees_registered_names():
  jdrop.activations.register("jdrop_test_strategies_double", lambda x: 2 * x)
  try:
    find(jt.activations(), lambda n: n == "jdrop_test_strategies_double", settings=FIND)
  finally:
    jdrop.activations.unregister("jdrop_test_strategies_double")


# ----------------------------------------------------------------------------
# The optional dependency.


def test_import_without_hypothesis_says_how_to_install(monkeypatch):
  for name in list(sys.modules):
    if name == "hypothesis" or name.startswith("hypothesis."):
      monkeypatch.setitem(sys.modules, name, None)
  for name in ("jdrop.testing", "jdrop._src.strategies"):
    monkeypatch.delitem(sys.modules, name)
  with pytest.raises(ImportError, match=r'pip install "jdrop\[testing\]"'):
    importlib.import_module("jdrop.testing")


def test_import_jdrop_does_not_import_testing_or_hypothesis():
  code = (
    "import sys, jdrop\n"
    "assert 'jdrop.testing' not in sys.modules\n"
    "assert 'hypothesis' not in sys.modules\n"
  )
  subprocess.run([sys.executable, "-c", code], check=True, env=None)
