"""Running a flat graph with its dropout sites switched on, off, or moved.

:func:`run` is an interpreter in the style of :func:`jax.core.eval_jaxpr`: it binds each
node's primitive to its inputs, so it runs eagerly and under ``jit``, ``vmap`` and ``grad``
alike, and under ``jit`` it emits the original program's operations (plus, for a moved
site, the site applied on the other side of its activation). A site is

* ``"on"``: as traced (training mode);
* ``"off"``: its output is its input (evaluation mode: inverted dropout is the identity);
* ``"moved"``: applied on the other side of its activation with the same mask: a
  post-activation site ``D(g(u))`` becomes ``g(D(u))`` and a pre-activation site
  ``g(D(x))`` becomes ``D(g(x))``. The original branch is left in place (XLA removes it
  when nothing reads it), so other readers of the values around the site are unchanged.

:func:`elementwise_function` turns an activation region, traced at the model's shapes, into
a function of an array of any shape, for :func:`jdrop.check`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from jdrop._src.audit.graph import ELEMENTWISE
from jdrop._src.audit.graph import Const
from jdrop._src.audit.graph import Graph
from jdrop._src.audit.graph import Node
from jdrop._src.audit.graph import Ref
from jdrop._src.audit.sites import RawSite
from jdrop._src.checker import jaxprs

MODES = ("on", "off", "moved")


def bind(primitive: Any, params: dict[str, Any], inputs: Sequence[Any]) -> list[Any]:
  bind_params = primitive.get_bind_params(params)
  subfuns: Sequence[Any] = ()
  if isinstance(bind_params, tuple):  # JAX before 0.8: (subfuns, params)
    subfuns, bind_params = bind_params
  out = primitive.bind(*subfuns, *inputs, **bind_params)
  return list(out) if primitive.multiple_results else [out]


def _read(env: Any, ref: Ref) -> Any:
  return ref.value if isinstance(ref, Const) else env[ref]


def _evaluate(nodes: Sequence[Node], env: Any, overrides: dict[int, Any], target: int) -> Any:
  """The value of ``target`` after ``nodes`` with some values replaced; ``env`` unchanged."""
  local = collections.ChainMap(dict(overrides), env)
  for node in nodes:
    outs = bind(node.primitive, node.params, [_read(local, r) for r in node.ins])
    local.maps[0].update(zip(node.outs, outs, strict=True))
  return local[target]


def run(
  graph: Graph,
  sites: Sequence[RawSite],
  inputs: Sequence[Any],
  modes: dict[int, str],
  default: str = "on",
  *,
  consts: dict[int, Any] | None = None,
  record: dict[int, Any] | None = None,
  switches: Any = None,
) -> list[Any]:
  """The flat outputs of ``graph`` on ``inputs`` with site ``i`` in ``modes.get(i, default)``.

  ``consts`` replaces the graph's constants (to pass them to ``jit`` as arguments rather than
  embed them); ``record``, when given, receives every value computed. ``switches``, an int
  array with one entry per site (0 off, 1 on, 2 moved), chooses the modes at run time
  instead, so that one compiled program serves every choice (``modes`` is then ignored).
  """
  hooks: dict[int, list[Callable[[dict[int, Any]], None]]] = collections.defaultdict(list)
  for i, site in enumerate(sites):
    if switches is not None:
      _switched(graph, site, switches[i], hooks)
      continue
    mode = modes.get(i, default)
    if mode == "off":
      hooks[site.nodes[-1].index].append(_off(site))
    elif mode == "moved" and site.activation is not None:
      if site.order == "post":
        hooks[site.nodes[-1].index].append(_before(site))
      else:
        exit_node = graph.producer[site.activation.exit]
        hooks[exit_node.index].append(_after(site))
  env: dict[int, Any] = dict(graph.consts if consts is None else consts)
  env.update(zip(graph.inputs, inputs, strict=True))
  for node in graph.nodes:
    outs = bind(node.primitive, node.params, [_read(env, r) for r in node.ins])
    env.update(zip(node.outs, outs, strict=True))
    for hook in hooks.get(node.index, ()):
      hook(env)
  if record is not None:
    record.update(env)
  return [_read(env, r) for r in graph.outputs]


def _switched(graph: Graph, site: RawSite, switch: Any, hooks: dict) -> None:
  """Hooks that choose a site's mode by the traced ``switch`` (0 off, 1 on, 2 moved)."""
  off, before, after = _off(site), _before(site), _after(site)

  def choose(hook: Callable, when: Any, value: int) -> Callable[[dict[int, Any]], None]:
    def run_hook(env: dict[int, Any]) -> None:
      previous = env[value]
      hook(env)
      env[value] = jnp.where(when, env[value], previous)

    return run_hook

  end = site.nodes[-1].index
  hooks[end].append(choose(off, switch == 0, site.y_out))
  if site.activation is None:
    return
  if site.order == "post":
    hooks[end].append(choose(before, switch == 2, site.y_out))
  else:
    exit_node = graph.producer[site.activation.exit]
    hooks[exit_node.index].append(choose(after, switch == 2, site.activation.exit))


def _off(site: RawSite) -> Callable[[dict[int, Any]], None]:
  def hook(env: dict[int, Any]) -> None:
    env[site.y_out] = env[site.x_in]

  return hook


def _before(site: RawSite) -> Callable[[dict[int, Any]], None]:
  """A post-activation site moved before its activation: ``g(D(u))``."""
  act = site.activation

  def hook(env: dict[int, Any]) -> None:
    dropped = _evaluate(site.nodes, env, {site.x_in: env[act.entry]}, site.y_out)
    env[site.y_out] = _evaluate(act.nodes, env, {act.entry: dropped}, act.exit)

  return hook


def _after(site: RawSite) -> Callable[[dict[int, Any]], None]:
  """A pre-activation site moved after its activation: ``D(g(x))``."""
  act = site.activation

  def hook(env: dict[int, Any]) -> None:
    activated = _evaluate(act.nodes, env, {act.entry: env[site.x_in]}, act.exit)
    env[act.exit] = _evaluate(site.nodes, env, {site.x_in: activated}, site.y_out)

  return hook


# ----------------------------------------------------------------------------
# Activations as functions of any shape.


class NotElementwise(Exception):
  """The region cannot be evaluated at another shape (a per-element constant, ...)."""


def elementwise_function(
  nodes: Sequence[Node], entry: int, exit: int, env: dict[int, Any], dtype: Any
) -> Callable[[jax.Array], jax.Array]:
  """The activation ``nodes`` (``entry -> exit``) as a function of an array of any shape.

  Every operand that does not come from ``entry`` must be the same in every element (it
  is a scalar of the activation, not a per-unit parameter); otherwise NotElementwise.
  The function takes and returns float32 (the checker's dtype) and computes in ``dtype``.
  """

  def fn(x: jax.Array) -> jax.Array:
    values: dict[Any, tuple[Any, bool]] = {entry: (x.astype(dtype), True)}
    for node in nodes:
      inputs = [values[r] if r in values else (_read(env, r), False) for r in node.ins]
      outs = _apply(node.primitive, node.params, node.eqn, inputs, x.shape)
      values.update(zip(node.outs, outs, strict=True))
    return values[exit][0].astype(jnp.float32)

  return fn


def jaxpr_function(closed: core.ClosedJaxpr, dtype: Any) -> Callable[[jax.Array], jax.Array]:
  """A one-input ``closed`` jaxpr through the same evaluator as :func:`elementwise_function`
  (so that two activations can be compared by the jaxprs these functions trace to)."""

  def fn(x: jax.Array) -> jax.Array:
    out = _jaxpr(closed.jaxpr, closed.consts, [(x.astype(dtype), True)], x.shape)
    return out[0][0].astype(jnp.float32)

  return fn


def _apply(
  primitive: Any,
  params: dict[str, Any],
  eqn: Any,
  inputs: list[tuple[Any, bool]],
  shape: tuple[int, ...],
) -> list[tuple[Any, bool]]:
  if not any(varying for _, varying in inputs):
    # A constant of the activation (jnp.clip's converted bounds): computed now, not traced,
    # so that it can be checked to hold one value.
    with jax.ensure_compile_time_eval():
      outs = bind(primitive, params, [value for value, _ in inputs])
    return [(out, False) for out in outs]
  name = primitive.name
  if name in ELEMENTWISE:
    args = [value if varying else _broadcast(value, shape) for value, varying in inputs]
    return [(out, True) for out in bind(primitive, params, args)]
  sub = jaxprs.callee(eqn)
  if sub is not None:
    inner, consts = sub
    return _jaxpr(inner, consts, inputs, shape)
  raise NotElementwise(f"`{name}` is not elementwise")


def _jaxpr(
  jaxpr: core.Jaxpr,
  consts: Sequence[Any],
  inputs: list[tuple[Any, bool]],
  shape: tuple[int, ...],
) -> list[tuple[Any, bool]]:
  env: dict[Any, tuple[Any, bool]] = {}
  for var, value in zip(jaxpr.constvars, consts, strict=True):
    env[var] = (value, False)
  for var, value in zip(jaxpr.invars, inputs, strict=True):
    env[var] = value

  def read(atom: Any) -> tuple[Any, bool]:
    if isinstance(atom, core.Literal):
      return (jaxprs.literal_value(atom), False)
    return env[atom]

  for eqn in jaxpr.eqns:
    outs = _apply(eqn.primitive, dict(eqn.params), eqn, [read(a) for a in eqn.invars], shape)
    env.update(zip(eqn.outvars, outs, strict=True))
  return [read(atom) for atom in jaxpr.outvars]


def _broadcast(value: Any, shape: tuple[int, ...]) -> Any:
  """A fixed operand as an array of ``shape``: it must hold one value."""
  if isinstance(value, jax.core.Tracer):
    raise NotElementwise("an operand of the activation is traced")
  array = np.asarray(value)
  flat = array.reshape(-1)
  if flat.size == 0 or not (flat == flat[0]).all():
    raise NotElementwise("the activation has a per-unit parameter (a non-uniform constant)")
  return jnp.broadcast_to(jnp.asarray(flat[0], dtype=array.dtype), shape)
