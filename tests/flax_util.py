"""Comparisons shared by the Flax tests (linen and nnx): bits, and equality to rounding."""

import jax
import numpy as np


def as_numpy(leaf) -> np.ndarray:
  """An array leaf as numpy; a typed PRNG key as its key data."""
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    leaf = jax.random.key_data(leaf)
  return np.asarray(leaf)


def assert_bits_equal(actual, expected):
  """Same shape, dtype and bytes (keys compared by their data): stricter than ==, which
  equates 0.0 with -0.0."""
  actual, expected = as_numpy(actual), as_numpy(expected)
  assert actual.shape == expected.shape and actual.dtype == expected.dtype
  np.testing.assert_array_equal(actual, expected)
  assert actual.tobytes() == expected.tobytes()


def assert_trees_bits_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    assert_bits_equal(a, e)


def ulp_distance(actual, expected) -> np.ndarray:
  """How many representable values of the (same) float dtype lie between each pair."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.dtype == expected.dtype and actual.dtype.kind in "fV"
  bits = np.dtype(f"int{8 * actual.dtype.itemsize}")

  def ordered(a: np.ndarray) -> np.ndarray:  # monotone in the float's value, 0 and -0 equal
    i = a.view(bits).astype(np.int64)
    return np.where(i < 0, np.iinfo(bits).min - i, i)

  return np.abs(ordered(actual) - ordered(expected))


# A model that holds a jdrop dropout is equal to the same model with Flax's "to rounding":
# every dropout output is bit-identical, but XLA may fuse jdrop's mask code (other HLO than
# jax.random's) into neighbouring ops differently, e.g. into a LayerNorm's reductions or a GPU
# matmul kernel, which then sum in another order. Each output then differs by a few ulp of the
# magnitude of what was summed: measured up to 3.2 (test_jitted_model_is_equal_to_rounding).
ROUNDING_ULPS = 8


def assert_equal_to_rounding(actual, expected):
  """Every leaf within ``ROUNDING_ULPS`` ulp of its largest magnitude (a sum's rounding error
  scales with its terms, not with its result, which may be near 0)."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
    a, e = np.asarray(a), np.asarray(e)
    assert a.shape == e.shape and a.dtype == e.dtype
    eps = float(np.finfo(e.dtype).eps)
    scale = max(float(np.abs(e).max(initial=0.0)), float(np.finfo(e.dtype).tiny))
    np.testing.assert_allclose(a, e, rtol=ROUNDING_ULPS * eps, atol=ROUNDING_ULPS * eps * scale)
