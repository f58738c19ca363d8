"""Hypothesis strategies for property-based tests of code that uses jdrop.

Install the optional dependency with ``pip install "jdrop[testing]"``; ``import
jdrop`` does not import this module.

* :func:`keys`: single PRNG keys, typed (``jax.random.key``) and raw
  (``jax.random.PRNGKey``).
* :func:`rates`: drop rates, favouring 0, 1, tiny rates and rates within an ulp of 1.
* :func:`float_arrays`: float16, bfloat16 and float32 JAX arrays with ``inf``,
  ``NaN``, signed zeros and subnormals.
* :func:`activations`: names from :mod:`jdrop.activations`, elementwise by default.

* :func:`assert_commutes` / :func:`assert_not_commutes`: the checker's verdict
  (:func:`jdrop.check`) as a test assertion, failing with the counterexample or
  the reason.

A property a user might test: dropout keeps or zeroes every element, scales what
it keeps by ``1 / (1 - rate)``, never turns a dropped ``inf`` or ``NaN`` into
``NaN``, and keeps the dtype:

>>> import jax.numpy as jnp
>>> import jdrop
>>> from hypothesis import given, settings
>>> from jdrop.testing import float_arrays, keys, rates
>>> @settings(max_examples=10, deadline=None)
... @given(keys(), float_arrays(shapes=(8,)), rates(include_edges=False))
... def test_dropout_keeps_or_zeroes(key, x, rate):
...   y = jdrop.dropout(key, x, rate=rate)
...   mask = jdrop.keep_mask(key, x.shape, rate=rate)
...   kept = (x.astype(jnp.float32) / (1 - rate)).astype(x.dtype)
...   assert y.dtype == x.dtype
...   assert bool((y[~mask] == 0).all())
...   assert bool(((y == kept) | jnp.isnan(kept))[mask].all())
>>> test_dropout_keeps_or_zeroes()
"""

from jdrop._src.checker.assertions import assert_commutes as assert_commutes
from jdrop._src.checker.assertions import assert_not_commutes as assert_not_commutes
from jdrop._src.strategies import activations as activations
from jdrop._src.strategies import float_arrays as float_arrays
from jdrop._src.strategies import keys as keys
from jdrop._src.strategies import rates as rates
