"""Dropout sites of a flat graph, and the activation each one sits next to.

A **site** is where a mask drawn from ``f``'s key meets data: a chain of elementwise nodes
from the site's input ``x_in`` to its output ``y_out`` that selects (``select_n(mask, 0, x)``)
or multiplies (``x * mask / q``) by a value that depends on the key alone, with the inverted
dropout scale ``1 / q`` inside the chain or right next to it in the same module (Flax
divides by the keep probability just before it selects). Everything here is structural, so
:func:`jdrop.reorder` can find the sites of a function whose parameters are traced.

The **activation** of a site is the elementwise region between the site and the nearest
node that is not elementwise (``dot_general``, ``conv``, reductions), that reads a second
data value (a residual), that adds a non-uniform constant (a bias), or that belongs to a
neighbouring layer: a module scope that is neither the site's nor one of its ancestors and
that holds more than elementwise nodes (a ``Dense``'s bias add is in the ``Dense``'s scope).
A region has one entry and one exit and nothing else reads its insides, so moving the site
across it changes nothing but the order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
from jax.extend import core

from jdrop._src.audit.graph import DATA
from jdrop._src.audit.graph import ELEMENTWISE
from jdrop._src.audit.graph import FIXED_RANDOM
from jdrop._src.audit.graph import RANDOM
from jdrop._src.audit.graph import Const
from jdrop._src.audit.graph import Graph
from jdrop._src.audit.graph import Node
from jdrop._src.audit.graph import Ref
from jdrop._src.checker import jaxprs

MAX_REGION = 64  # nodes in one activation region
_LOOKAHEAD = 4  # nodes between two mask applications of one site (jdrop selects twice)
_PASS_THROUGH = frozenset(
  {"broadcast_in_dim", "reshape", "squeeze", "expand_dims", "convert_element_type", "copy"}
)
_CALLS = frozenset(
  {"jit", "pjit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call", "checkpoint"}
)


@dataclasses.dataclass(eq=False)
class Region:
  """An activation: nodes in program order, one entry value, one exit value."""

  nodes: list[Node]
  entry: int
  exit: int


@dataclasses.dataclass(eq=False)
class RawSite:
  """A site found in the graph, before any evaluation."""

  nodes: list[Node]
  x_in: int
  y_out: int
  scope: str
  kind: str
  activation: Region | None = None
  order: str | None = None
  path: str = ""


@dataclasses.dataclass(eq=False)
class Found:
  sites: list[RawSite]
  unseen: list[str]


def find(graph: Graph) -> Found:
  """The sites of ``graph`` in program order, and what could not be attributed to one."""
  finder = _Finder(graph)
  sites: list[RawSite] = []
  unseen: list[str] = []
  claimed: set[int] = set()
  reported: set[int] = {opaque.node.index for opaque in graph.opaque}
  for node in graph.nodes:
    if node.index in claimed or node.index in reported or not finder.meets(node):
      continue
    site = finder.site(node)
    if isinstance(site, str):
      unseen.append(f"{_where(node)}: {site}; it is not audited and stays as it is")
      reported.add(node.index)
      continue
    claimed.update(n.index for n in site.nodes)
    sites.append(site)
  unseen.extend(_unexplained(graph, sites, claimed, reported))
  finder.claimed = claimed
  for opaque in graph.opaque:
    unseen.append(f"{_where(opaque.node)}: randomness from the key meets data {opaque.reason}")
  for site in sites:
    backward = finder.nonlinear(finder.backward(site), site)
    forward = None if backward else finder.nonlinear(finder.forward(site), site)
    site.activation = backward or forward
    site.order = "post" if backward else ("pre" if forward else None)
  _name(sites)
  return Found(sites, list(dict.fromkeys(unseen)))


def _where(node: Node) -> str:
  return f"`{node.name}` at {node.scope or '(top level)'}"


def _name(sites: list[RawSite]) -> None:
  counts: dict[str, int] = {}
  for site in sites:
    base = site.scope or site.kind
    counts[base] = counts.get(base, 0) + 1
    site.path = base if counts[base] == 1 else f"{base}#{counts[base]}"


class _Finder:
  def __init__(self, graph: Graph):
    self.graph = graph
    self.claimed: set[int] = set()  # the nodes of every site, once they are found
    self._uniform: dict[int, bool] = {}
    self._module: dict[str, bool] = {}

  # --- values ---

  def data(self, ref: Ref) -> bool:
    return bool(self.graph.flag(ref) & DATA)

  def mask(self, ref: Ref) -> bool:
    return self.graph.flag(ref) == RANDOM

  def fixed(self, ref: Ref) -> bool:
    return self.graph.flag(ref) == 0

  def meets(self, node: Node) -> bool:
    return any(self.mask(r) for r in node.ins) and any(self.data(r) for r in node.ins)

  def root(self, ref: Ref) -> Ref:
    """The value a mask operand was broadcast, reshaped or converted from."""
    while isinstance(ref, int):
      node = self.graph.producer.get(ref)
      if node is None or node.name not in _PASS_THROUGH:
        break
      ref = node.ins[0]
    return ref

  def uniform(self, ref: Ref) -> bool:
    """Whether a fixed value is one number by construction: a literal, a scalar constant, or
    built from those by broadcasts and elementwise maps. An array constant is a parameter
    and never uniform, whatever its values (a bias initialised to zeros is still a bias)."""
    if isinstance(ref, Const):
      return np.size(ref.value) == 1
    if not self.fixed(ref):
      return False
    if ref not in self._uniform:
      self._uniform[ref] = False  # cycles cannot occur; this guards deep recursion
      self._uniform[ref] = self._uniform_value(ref)
    return self._uniform[ref]

  def _uniform_value(self, ref: int) -> bool:
    if ref in self.graph.consts:
      return math.prod(self.graph.avals[ref].shape) == 1
    node = self.graph.producer.get(ref)
    if node is None:
      return False
    if node.name in ("broadcast_in_dim", "reshape", "squeeze", "expand_dims"):
      return self.uniform(node.ins[0])
    if node.name in ELEMENTWISE or node.name in _CALLS:
      return all(self.uniform(r) for r in node.ins)
    return False

  def zero(self, ref: Ref) -> bool:
    if isinstance(ref, Const):
      return _all_zero(ref.value)
    if not self.fixed(ref):
      return False
    if ref in self.graph.consts:
      return _all_zero(self.graph.consts[ref])
    node = self.graph.producer.get(ref)
    return bool(node and node.name in _PASS_THROUGH and self.zero(node.ins[0]))

  def scale(self, node: Node, chain: int) -> bool:
    """``chain * c`` or ``chain / c`` for a uniform fixed ``c``."""
    if node.name == "mul" and len(node.ins) == 2:
      other = node.ins[1] if node.ins[0] == chain else node.ins[0]
      return chain in node.ins and self.uniform(other)
    if node.name == "div":
      return node.ins[0] == chain and self.uniform(node.ins[1])
    return False

  # --- sites ---

  def applies_mask(self, node: Node) -> tuple[Ref, Ref, bool] | str:
    """``(x, mask root, scaled)`` for a node that applies a mask to one data value."""
    datas = [r for r in node.ins if self.data(r)]
    if node.name not in ELEMENTWISE:
      return f"randomness from the key meets data in a `{node.name}`, which is not a mask"
    if len(datas) != 1:
      return "randomness from the key meets two data values (not a dropout mask)"
    x = datas[0]
    if node.name == "select_n":
      predicate, *cases = node.ins
      if not self.mask(predicate) or x not in cases:
        return "a `select_n` on data that is not a dropout mask"
      if not all(self.zero(c) for c in cases if c != x):
        return "a mask that selects something other than 0 for dropped units (alpha dropout?)"
      return x, self.root(predicate), False
    if node.name == "mul" and len(node.ins) == 2:
      multiplier = node.ins[1] if node.ins[0] == x else node.ins[0]
      derived = self.from_bool(multiplier)
      if derived is None:
        return "multiplicative noise that is not a 0/1 mask (Gaussian dropout?)"
      return x, derived[0], derived[1]
    return f"randomness from the key meets data in a `{node.name}` (not a dropout mask)"

  def roots(self, node: Node) -> set[Any]:
    """The mask roots of a node's key-only operands."""
    out = set()
    for ref in node.ins:
      if self.mask(ref):
        derived = self.from_bool(ref)
        out.add(self.root(ref) if derived is None else derived[0])
    return out

  def from_bool(self, ref: Ref) -> tuple[Ref, bool] | None:
    """``(bool mask root, scaled)`` for a multiplier built from a boolean mask by converts,
    broadcasts and uniform scales, else None."""
    scaled = False
    for _ in range(16):
      if not isinstance(ref, int) or not self.mask(ref):
        return None
      if np.dtype(self.graph.avals[ref].dtype) == np.bool_:
        return self.root(ref), scaled
      node = self.graph.producer.get(ref)
      if node is None:
        return None
      if node.name in _PASS_THROUGH:
        ref = node.ins[0]
      elif node.name in ("mul", "div") and len(node.ins) == 2:
        random = [r for r in node.ins if not self.fixed(r)]
        if len(random) != 1 or not self.scale(node, random[0]):
          return None
        ref, scaled = random[0], True
      else:
        return None
    return None

  def site(self, node: Node) -> RawSite | str:
    applied = self.applies_mask(node)
    if isinstance(applied, str):
      return applied
    x_in, root, scaled = applied
    if not isinstance(x_in, int):
      return "a mask applied to a literal"
    chain, pending, value = [node], [], node.outs[0]
    for _ in range(_LOOKAHEAD):
      nxt = self._single_elementwise_user(value)
      if nxt is None:
        break
      pending.append(nxt)
      if self.meets(nxt):
        again = self.applies_mask(nxt)
        if isinstance(again, str) or again[1] != root:
          break
        chain += pending
        pending = []
      value = nxt.outs[0]
    inside = {n.index for n in chain}
    if any(
      n.index not in inside and self.meets(n) and root in self.roots(n) for n in self.graph.nodes
    ):
      return (
        "a mask that is also applied elsewhere (to other data, or to set dropped units to a "
        "constant, as alpha dropout does): moving one application would separate them"
      )
    scaled = scaled or any(
      self.scale(n, r) for n in chain[1:] for r in n.ins if isinstance(r, int) and self.data(r)
    )
    y_out = chain[-1].outs[0]
    if not scaled:
      before = self.graph.producer.get(x_in)
      after = self._single_elementwise_user(y_out)
      if (
        before is not None
        and before.scope == node.scope
        and self.graph.users(x_in) == [node]
        and x_in not in self.graph.output_ids
        and any(self.scale(before, r) and self.data(r) for r in before.ins)
      ):
        chain.insert(0, before)
        x_in = next(r for r in before.ins if self.data(r))
      elif after is not None and after.scope == node.scope and self.scale(after, y_out):
        chain.append(after)
        y_out = after.outs[0]
      else:
        return "a mask applied without the inverted-dropout scale 1 / (1 - rate)"
    return RawSite(chain, x_in, y_out, node.scope, _kind(node))

  def _single_elementwise_user(self, value: int) -> Node | None:
    users = self.graph.users(value)
    if len(users) != 1 or value in self.graph.output_ids:
      return None
    user = users[0]
    if user.name not in ELEMENTWISE:
      return None
    if [r for r in user.ins if self.data(r)] != [value]:
      return None
    if any(self.graph.flag(r) & FIXED_RANDOM for r in user.ins):
      return None
    return user

  # --- activations ---

  def flowing(self, ref: Ref, site: RawSite) -> bool:
    """Data that flows through an activation, as opposed to one of its parameters: a value
    computed from ``f``'s arguments, unless it is a single number (a PReLU slope or a
    temperature passed in with the parameters) and the site's array is not."""
    if not self.data(ref):
      return False
    size = math.prod(self.graph.avals[ref].shape) if isinstance(ref, int) else 1
    return size > 1 or math.prod(self.graph.avals[site.x_in].shape) == 1

  def allowed(self, node: Node, site: RawSite) -> bool:
    if node.index in self.claimed:
      return False  # part of a site: another site's scale or mask is not an activation
    live = tuple(self.flowing(r, site) for r in node.ins)
    if not self.elementwise(node, live):
      return False
    for ref, flows in zip(node.ins, live, strict=True):
      flag = self.graph.flag(ref)
      if flag & (RANDOM | FIXED_RANDOM) and not flag & DATA:
        return False  # a mask or noise: not part of an activation
      if not flows and node.name in ("add", "sub") and not self.uniform(ref) and not self.data(ref):
        return False  # a bias
    return self.scope_allowed(node.scope, site.scope)

  def elementwise(self, node: Node, live: tuple[bool, ...]) -> bool:
    """Whether each output element depends on the same element of the ``live`` inputs."""
    if node.name in ELEMENTWISE:
      return True
    if node.name in _CALLS:
      sub = jaxprs.callee(node.eqn)
      return sub is not None and _elementwise_jaxpr(sub[0], live)
    return False

  def scope_allowed(self, scope: str, site_scope: str) -> bool:
    mine, theirs = _parts(scope), _parts(site_scope)
    if theirs[: len(mine)] == mine:
      return True  # the site's own module or one that encloses it
    common = 0
    while common < min(len(mine), len(theirs)) and mine[common] == theirs[common]:
      common += 1
    neighbour = "/".join(mine[: common + 1])
    if neighbour not in self._module:
      self._module[neighbour] = self._activation_module(neighbour)
    return self._module[neighbour]

  def _activation_module(self, scope: str) -> bool:
    """A module scope that holds elementwise nodes only and no dropout (an activation)."""
    for n in self.graph.nodes:
      if not _within(n.scope, scope) or not any(self.data(r) for r in n.ins):
        continue
      if n.index in self.claimed or self.meets(n):
        return False
      if not self.elementwise(n, tuple(self.data(r) for r in n.ins)):
        return False
      if n.name in ("add", "sub") and any(not self.uniform(r) for r in n.ins if self.fixed(r)):
        return False
    return True

  def nonlinear(self, region: Region | None, site: RawSite) -> Region | None:
    """``region`` unless it is a linear map only: scalings by constants or parameters
    (``x / 255``, a LayerScale's ``x * gamma``), negations, float casts. Those are not
    activations, and moving a dropout across them changes only the rounding."""
    if region is None:
      return None
    for node in region.nodes:
      flowing = [r for r in node.ins if self.flowing(r, site)]
      if len(flowing) != 1:
        return region
      if node.name in ("neg", "copy", "convert_element_type"):
        continue
      if node.name == "mul" or (node.name == "div" and node.ins[0] is flowing[0]):
        continue
      return region
    return None

  def same_dtype(self, a: int, b: int) -> bool:
    """An activation keeps the site's dtype, so the site can be applied on either side."""
    return self.graph.avals[a].dtype == self.graph.avals[b].dtype

  def backward(self, site: RawSite) -> Region | None:
    """The activation whose output the site consumes (post-activation dropout)."""
    graph, x = self.graph, site.x_in
    if x in graph.output_ids or graph.users(x) != [site.nodes[0]]:
      return None
    first = graph.producer.get(x)
    if first is None or not self.allowed(first, site):
      return None
    region = {first.index: first}
    best = None
    for _ in range(MAX_REGION):
      produced = {out for n in region.values() for out in n.outs}
      inner = produced - {x}
      if any(
        v in graph.output_ids or any(u.index not in region for u in graph.users(v)) for v in inner
      ):
        break
      entries = {
        r for n in region.values() for r in n.ins if isinstance(r, int) and self.flowing(r, site)
      } - produced
      if len(entries) == 1 and self.same_dtype(next(iter(entries)), x):
        best = Region(sorted(region.values(), key=lambda n: n.index), next(iter(entries)), x)
      latest = max(entries, key=lambda r: graph.producer[r].index if r in graph.producer else -1)
      node = graph.producer.get(latest)
      if node is None or not self.allowed(node, site):
        break
      region[node.index] = node
    return best

  def forward(self, site: RawSite) -> Region | None:
    """The activation that consumes the site's output (pre-activation dropout)."""
    graph, y = self.graph, site.y_out
    if y in graph.output_ids:
      return None
    taken: list[Node] = []
    values = {y}
    for node in graph.nodes[site.nodes[-1].index + 1 :]:
      if not any(r in values for r in node.ins if isinstance(r, int)):
        continue
      datas = [r for r in node.ins if self.flowing(r, site)]
      if not self.allowed(node, site) or not all(r in values for r in datas):
        break
      taken.append(node)
      values.update(node.outs)
      if len(taken) >= MAX_REGION:
        break
    for j in range(len(taken), 0, -1):
      part = taken[:j]
      indices = {n.index for n in part}
      produced = {out for n in part for out in n.outs}
      exits = [
        v
        for v in {y} | produced
        if v in graph.output_ids or any(u.index not in indices for u in graph.users(v))
      ]
      if len(exits) == 1 and exits[0] in produced and self.same_dtype(exits[0], y):
        return Region(part, y, exits[0])
    return None


def _unexplained(
  graph: Graph, sites: list[RawSite], claimed: set[int], reported: set[int]
) -> list[str]:
  """Randomness that reaches data other than through a site, found by propagating the
  key's taint with every site switched off (its output carries its input's flags only)."""
  ends = {site.nodes[-1].index: site for site in sites}
  flags = dict(graph.flags)
  notes = []
  for node in graph.nodes:
    ins = [0 if isinstance(r, Const) else flags[r] for r in node.ins]
    if node.index in ends:
      flags[ends[node.index].y_out] = flags[ends[node.index].x_in]
      continue
    if node.index in claimed:
      continue
    combined = 0
    for flag in ins:
      combined |= flag
    for out in node.outs:
      flags[out] = combined | (graph.flags[out] & FIXED_RANDOM)
    random = [flag for flag in ins if flag & (RANDOM | FIXED_RANDOM) and not flag & DATA]
    if random and any(flag & DATA for flag in ins) and node.index not in reported:
      source = "the key" if any(flag & RANDOM for flag in random) else "a key that is not f's"
      notes.append(
        f"{_where(node)}: randomness from {source} meets data and is not a recognised "
        "dropout site (a rate that depends on f's arguments, noise, a module that holds its "
        "own Rngs, or a custom dropout); it is not audited and stays as it is in every estimate"
      )
  for ref in graph.outputs:
    if isinstance(ref, int) and flags[ref] & RANDOM and not flags[ref] & DATA:
      notes.append("an output of f depends on the key other than through a dropout site")
  return notes


@functools.lru_cache(maxsize=256)
def _elementwise_jaxpr(jaxpr: core.Jaxpr, live_inputs: tuple[bool, ...]) -> bool:
  """Whether every equation that reads the ``live_inputs`` of ``jaxpr`` is elementwise (the
  others, such as ``jnp.where`` broadcasting its scalar, are constants of the activation)."""
  if len(live_inputs) != len(jaxpr.invars):
    return False
  live = {v for v, flag in zip(jaxpr.invars, live_inputs, strict=True) if flag}
  for eqn in jaxpr.eqns:
    reads = tuple(not isinstance(v, core.Literal) and v in live for v in eqn.invars)
    if not any(reads):
      continue
    name = eqn.primitive.name
    if name in ELEMENTWISE:
      pass
    elif name in _CALLS:
      sub = jaxprs.callee(eqn)
      if sub is None or not _elementwise_jaxpr(sub[0], reads):
        return False
    else:
      return False
    live.update(eqn.outvars)
  return True


def _parts(scope: str) -> list[str]:
  return [part for part in scope.split("/") if part]


def _within(scope: str, module: str) -> bool:
  mine, theirs = _parts(scope), _parts(module)
  return mine[: len(theirs)] == theirs


def _kind(node: Node) -> str:
  """``"attention"`` where the mask is applied inside an attention function of Flax or JAX
  (``dot_product_attention_weights``) or one named ``*attention_weights``."""
  traceback = getattr(node.eqn.source_info, "traceback", None)
  for frame in getattr(traceback, "frames", None) or ():
    name = str(getattr(frame, "function_name", "")).lower()
    path = str(getattr(frame, "file_name", "")).replace("\\", "/")
    library = "/flax/" in path or "/jax/" in path
    if name.endswith("attention_weights") or (library and "attention" in name):
      return "attention"
  return "dropout"


def _all_zero(value: Any) -> bool:
  try:
    array = np.asarray(value)
  except Exception:  # a tracer
    return False
  return bool(array.size and (array == 0).all())
