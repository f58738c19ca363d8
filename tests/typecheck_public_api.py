"""What a user's type checker sees of jdrop's public API: checked by mypy (see pyproject.toml),
never run by pytest (its name does not start with ``test_``).

Each ``assert_type`` fails the type check if a public signature loses or changes its
annotation; the calls below are the documented ones.
"""

from collections.abc import Callable
from typing import Literal
from typing import assert_type

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from hypothesis import strategies as st
from jax.typing import ArrayLike

import jdrop
import jdrop.flax
import jdrop.montecarlo
import jdrop.nnx
import jdrop.testing

key = jax.random.key(0)
x = jnp.ones((2, 4))

assert_type(jdrop.keep_mask(key, x.shape, rate=0.5), jax.Array)
assert_type(jdrop.apply_mask(x, jdrop.keep_mask(key, x.shape, rate=0.5), rate=0.5), jax.Array)
assert_type(jdrop.dropout(key, x, rate=0.1, broadcast_dims=(0,)), jax.Array)
assert_type(jdrop.alpha_dropout(key, x, rate=0.1), jax.Array)
assert_type(jdrop.gaussian_dropout(key, x, rate=0.1), jax.Array)
assert_type(jdrop.drop_path(key, x, rate=0.1), jax.Array)
assert_type(jdrop.activation_dropout(key, x, "relu", rate=0.1, order="post"), jax.Array)
assert_type(jdrop.both_orders(key, x, jax.nn.tanh, rate=0.1), jdrop.Orders)
assert_type(jdrop.both_orders(key, x, "tanh", rate=0.1).pre, jax.Array)

verdict = jdrop.check(jax.nn.relu, rate=0.5)
assert_type(verdict.pathwise.status, Literal["proved", "refuted", "unknown"])
assert_type(verdict.zero_preserving, bool | None)

assert_type(jdrop.activations.get("relu"), Callable[[ArrayLike], jax.Array])
assert_type(jdrop.activations.names(), tuple[str, ...])

comparison = jdrop.montecarlo.compare_orders(key, jax.nn.relu, x, rate=0.5, num_masks=8)
assert_type(comparison, jdrop.montecarlo.Comparison)
assert_type(jdrop.montecarlo.exact_moments(jax.nn.relu, x, rate=0.5), jdrop.montecarlo.Exact)

# The Flax modules are Flax's dropout to a type checker too.
linen_dropout: nn.Dropout = jdrop.flax.Dropout(0.1)
nnx_dropout: nnx.Dropout = jdrop.nnx.Dropout(0.1, rngs=nnx.Rngs(dropout=0))
assert_type(nnx_dropout(x), jax.Array)
assert_type(jdrop.nnx.ActivationDropout("relu", 0.1, order="post")(x, rngs=key), jax.Array)
assert_type(jdrop.testing.rates(), st.SearchStrategy[float])
assert_type(jdrop.testing.float_arrays(shapes=(8,)), st.SearchStrategy[jax.Array])
