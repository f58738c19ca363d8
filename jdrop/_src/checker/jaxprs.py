"""Walking a jaxpr with a domain's rules: the checker's one interpreter.

A *domain* says what a value is (a ball of reals, a homogeneity fact, a
piecewise-linear function, ...) and gives one rule per primitive, registered
beside the rule's definition in the domain's module. The interpreter keeps an
environment from variables to domain values, recurses into the call-like
primitives that ``jit``, ``jax.nn``, ``jnp`` and Flax emit (``jit``,
``custom_jvp_call``, ``custom_vjp_call``, ``closed_call``, ``remat``), and asks
the domain what to do with a primitive that has no rule: never a silent pass.

Loops with a trip count the domain can see are unrolled: ``scan`` (its length is
static; ``fori_loop`` with constant bounds becomes one) and ``while`` (whose
predicate the domain must decide at every step, as for ``cond``), up to
:data:`MAX_UNROLL` iterations. A loop past that bound, or one whose predicate is
not known, goes to the domain's ``missing``, like a primitive without a rule.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any
from typing import Protocol

import jax
import numpy as np
from jax.extend import core

Rule = Callable[..., Any]
MAX_UNROLL = 1024  # iterations of a `scan` or `while` the interpreter unrolls
_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("deadline", default=math.inf)


class TimeLimit(Exception):
  """An evaluation ran past the time given to it with :func:`time_limit`."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
  """Every :func:`evaluate` in the block raises :class:`TimeLimit` once ``seconds`` have
  passed (checked at each equation: unrolled loops and exact arithmetic stay bounded)."""
  token = _DEADLINE.set(min(_DEADLINE.get(), time.monotonic() + seconds))
  try:
    yield
  finally:
    _DEADLINE.reset(token)


# Primitives that only call a sub-jaxpr on their operands (the operands map one
# to one onto the sub-jaxpr's inputs). Their sub-jaxpr lives under one of these
# parameters, as a ClosedJaxpr (with constants) or an open Jaxpr.
CALL_PRIMITIVES = frozenset(
  {
    "jit",
    "pjit",
    "closed_call",
    "core_call",
    "custom_jvp_call",
    "custom_vjp_call",
    "custom_vjp_call_jaxpr",
    "remat",
    "remat2",
    "checkpoint",
    "name",
  }
)
_CALLEE_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")


class Domain(Protocol):
  """What the interpreter needs from a domain."""

  def rule(self, eqn: core.JaxprEqn) -> Rule | None:
    """The rule for ``eqn``'s primitive, or ``None``."""

  def literal(self, value: Any, aval: Any) -> Any:
    """The domain value of a literal (a scalar baked into the jaxpr)."""

  def constant(self, value: Any) -> Any:
    """The domain value of a closed-over constant array."""

  def index(self, value: Any) -> int | None:
    """The branch index a `cond` takes, when the domain knows it, else None."""

  def missing(self, eqn: core.JaxprEqn, inputs: Sequence[Any]) -> list[Any]:
    """Output values for a primitive without a rule (an "unknown" or an error)."""

  def take(self, value: Any, i: int) -> Any:
    """Row ``i`` of ``value`` along its leading axis (a ``scan`` over ``xs``)."""

  def stack(self, values: Sequence[Any], aval: Any) -> Any:
    """The rows ``values`` stacked along a new leading axis (a ``scan``'s ``ys``)."""


def concrete(value: Any) -> Any:
  """A constant as a NumPy array; PRNG key arrays (whose dtype NumPy has no
  equivalent of) stay JAX arrays, to be passed to JAX's own primitives."""
  if is_key(value):
    return value
  return np.asarray(value)


def literal_value(var: core.Literal) -> Any:
  """A literal at the value the program computes with: its aval's dtype. A weak-typed
  Python float stays in the jaxpr as a float64 (``TypedFloat``) even where it stands
  for a float32: 0.1 must be read as float32's 0.1, and 1e-50 as 0."""
  dtype = getattr(var.aval, "dtype", None)
  if dtype is None or is_key_dtype(dtype):
    return var.val
  return np.asarray(var.val, dtype=dtype)


def is_key(value: Any) -> bool:
  return isinstance(value, jax.Array) and is_key_dtype(value.dtype)


def is_key_dtype(dtype: Any) -> bool:
  return bool(jax.dtypes.issubdtype(dtype, jax.dtypes.extended))


def callee(
  eqn: core.JaxprEqn, domain: Domain | None = None, inputs: Sequence[Any] = ()
) -> tuple[core.Jaxpr, Sequence[Any]] | None:
  """The sub-jaxpr and its constants of a call-like equation, else ``None``.

  A ``cond`` whose branch index the domain knows is a call of that branch (its
  operands after the index)."""
  if eqn.primitive.name == "cond" and domain is not None:
    index = domain.index(inputs[0])
    if index is None:
      return None
    branches = eqn.params["branches"]
    branch = branches[min(max(index, 0), len(branches) - 1)]  # lax.cond clamps
    return branch.jaxpr, branch.consts
  if eqn.primitive.name not in CALL_PRIMITIVES:
    return None
  for name in _CALLEE_PARAMS:
    sub = eqn.params.get(name)
    if isinstance(sub, core.ClosedJaxpr):
      return sub.jaxpr, sub.consts
    if isinstance(sub, core.Jaxpr):
      return sub, ()
  return None


def evaluate(domain: Domain, jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any]):
  """Runs ``jaxpr`` on domain values; ``consts`` are raw arrays, ``args`` domain values."""
  env: dict[core.Var, Any] = {}

  def read(var: Any) -> Any:
    if isinstance(var, core.Literal):
      return domain.literal(literal_value(var), var.aval)
    return env[var]

  for var, value in zip(jaxpr.constvars, consts, strict=False):
    env[var] = domain.constant(concrete(value))
  for var, value in zip(jaxpr.invars, args, strict=False):
    env[var] = value
  deadline = _DEADLINE.get()
  for eqn in jaxpr.eqns:
    if time.monotonic() > deadline:
      raise TimeLimit("the analysis ran out of time (a long loop or very large exact numbers)")
    inputs = [read(v) for v in eqn.invars]
    sub = callee(eqn, domain, inputs)
    if sub is not None:
      operands = inputs[1:] if eqn.primitive.name == "cond" else inputs
      outputs = evaluate(domain, sub[0], sub[1], operands)
    elif eqn.primitive.name in LOOPS:
      outputs = LOOPS[eqn.primitive.name](domain, eqn, inputs)
    else:
      rule = domain.rule(eqn)
      if rule is None:
        outputs = domain.missing(eqn, inputs)
      else:
        outputs = rule(eqn, *inputs)
        if not eqn.primitive.multiple_results:
          outputs = [outputs]
    for var, value in zip(eqn.outvars, outputs, strict=False):
      if not isinstance(var, core.DropVar):
        env[var] = value
  return [read(v) for v in jaxpr.outvars]


def _scan(domain: Domain, eqn: core.JaxprEqn, inputs: list[Any]) -> list[Any]:
  """A ``scan`` unrolled: the body run ``length`` times (``reverse`` walks xs backwards)."""
  p = eqn.params
  length, consts_n, carry_n = p["length"], p["num_consts"], p["num_carry"]
  body = p["jaxpr"]
  consts = inputs[:consts_n]
  carry, xs = inputs[consts_n : consts_n + carry_n], inputs[consts_n + carry_n :]
  ys_avals = [v.aval for v in eqn.outvars[carry_n:]]
  if length > MAX_UNROLL or ((xs or ys_avals) and not _can_slice(domain)):
    return domain.missing(eqn, inputs)
  if length == 0:  # no iteration: the carry as it is, and empty ys
    empty = [domain.constant(np.zeros(a.shape, a.dtype)) for a in ys_avals]
    return [*carry, *empty]
  rows: list[list[Any]] = []
  order = range(length - 1, -1, -1) if p.get("reverse") else range(length)
  for i in order:
    row = [domain.take(x, i) for x in xs]
    outs = evaluate(domain, body.jaxpr, body.consts, [*consts, *carry, *row])
    carry, ys = list(outs[:carry_n]), outs[carry_n:]
    rows.append(ys)
  if p.get("reverse"):
    rows.reverse()
  stacked = [domain.stack([row[k] for row in rows], aval) for k, aval in enumerate(ys_avals)]
  return [*carry, *stacked]


def _can_slice(domain: Domain) -> bool:
  return callable(getattr(domain, "take", None)) and callable(getattr(domain, "stack", None))


def _while(domain: Domain, eqn: core.JaxprEqn, inputs: list[Any]) -> list[Any]:
  """A ``while`` unrolled while the domain decides its predicate (at most MAX_UNROLL times)."""
  p = eqn.params
  cond_n, body_n = p["cond_nconsts"], p["body_nconsts"]
  cond_consts, body_consts = inputs[:cond_n], inputs[cond_n : cond_n + body_n]
  carry = inputs[cond_n + body_n :]
  cond, body = p["cond_jaxpr"], p["body_jaxpr"]
  for _ in range(MAX_UNROLL + 1):
    (pred,) = evaluate(domain, cond.jaxpr, cond.consts, [*cond_consts, *carry])
    go = domain.index(pred)
    if go is None:
      return domain.missing(eqn, inputs)
    if not go:
      return list(carry)
    carry = evaluate(domain, body.jaxpr, body.consts, [*body_consts, *carry])
  return domain.missing(eqn, inputs)


LOOPS: dict[str, Callable[[Domain, core.JaxprEqn, list[Any]], list[Any]]] = {
  "scan": _scan,
  "while": _while,
}


def primitive_names(jaxpr: core.Jaxpr) -> set[str]:
  """Every primitive ``jaxpr`` uses, looking inside call-like primitives."""
  names: set[str] = set()
  for eqn in jaxpr.eqns:
    sub = callee(eqn)
    if sub is None:
      names.add(eqn.primitive.name)
    else:
      names |= primitive_names(sub[0])
  return names


def structural_indices(eqn: core.JaxprEqn, shapes: Sequence[tuple[int, ...] | None], inputs):
  """Where each output element of a data-movement primitive comes from.

  Runs the primitive itself on integer *index* arrays in place of the operands
  whose shape is given (``shapes[i] is None`` passes ``inputs[i]`` through as a
  concrete value, e.g. a start index), so every data-movement primitive JAX has
  (reshape, transpose, broadcast, slice, gather, pad, concatenate, ...) is
  covered by JAX's own implementation. Returns, per output, an integer array of
  indices into the concatenation of the flattened operands.
  """
  import jax.numpy as jnp

  args, start = [], 0
  for shape, value in zip(shapes, inputs, strict=True):
    if shape is None:
      args.append(jnp.asarray(value))
    else:
      size = int(np.prod(shape, dtype=np.int64))
      args.append(jnp.arange(start, start + size, dtype=jnp.int32).reshape(shape))
      start += size
  params = dict(eqn.params)
  if _fills(eqn):
    params["fill_value"] = -1  # an out-of-bounds gather reads index -1: the fill value
  outs = eqn.primitive.bind(*args, **params)
  if not eqn.primitive.multiple_results:
    outs = [outs]
  return [np.asarray(o) for o in outs]


def _fills(eqn: core.JaxprEqn) -> bool:
  mode = eqn.params.get("mode")
  return eqn.primitive.name == "gather" and "FILL" in str(getattr(mode, "name", mode)).upper()


def fill_value(eqn: core.JaxprEqn) -> float:
  """What a gather writes out of bounds (NaN for floats by default); 0 for others."""
  if not _fills(eqn):
    return 0.0
  value = eqn.params.get("fill_value")
  return math.nan if value is None else float(value)


# Primitives that only move data: each output element is one operand element.
STRUCTURAL = frozenset(
  {
    "broadcast_in_dim",
    "concatenate",
    "dynamic_slice",
    "dynamic_update_slice",
    "expand_dims",
    "gather",
    "pad",
    "reshape",
    "rev",
    "scatter",
    "slice",
    "split",
    "squeeze",
    "stack",
    "transpose",
  }
)


def data_operands(eqn: core.JaxprEqn) -> tuple[int, ...]:
  """The positions of a structural primitive's operands that carry data (the
  rest are indices, which must be known for the data movement to be)."""
  n = len(eqn.invars)
  name = eqn.primitive.name
  if name in ("dynamic_slice", "gather"):
    return (0,)
  if name == "dynamic_update_slice":
    return (0, 1)
  if name == "scatter":  # operand, indices, updates
    return (0, 2)
  return tuple(range(n))
