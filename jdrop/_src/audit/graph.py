"""A model's jaxpr as a flat graph whose values know where their randomness comes from.

:func:`trace` runs ``f(key, *args)`` under :func:`jax.make_jaxpr` with every Flax module
call inside a :func:`jax.named_scope` of the module's relative name, so each equation's name
stack is its module path (``decoder/encoderdecoderblock_0/MlpBlock_0/Dropout_0``), for
linen (by :func:`flax.linen.intercept_methods`) and for nnx (nnx modules found in ``f``'s
closure get a scope named by their path in the module graph; nnx has no interception hook,
so the classes' ``__call__`` is wrapped for the duration of the trace only).

:func:`flatten` turns the jaxpr into a list of :class:`Node` over integer value ids, inlining
call-like equations (``jit``, ``closed_call``, ``checkpoint``) where the key's randomness
meets data inside them, so that a dropout whose mask and scaling live inside one ``jit``
(``jdrop.dropout``, ``jnp.where``) is seen primitive by primitive. Every value carries taint
flags: :data:`RANDOM` (depends on the key), :data:`DATA` (depends on ``args``) and
:data:`FIXED_RANDOM` (drawn from a key that is not ``f``'s, e.g. a module's own ``Rngs``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
from collections.abc import Iterator
from collections.abc import Sequence
from typing import Any

import jax
from jax.extend import core

from jdrop._src.checker import homogeneity
from jdrop._src.checker import jaxprs

RANDOM = 1  # depends on f's key
DATA = 2  # depends on f's other arguments
FIXED_RANDOM = 4  # drawn from a key that is not f's

# Primitives that draw or derive randomness.
RANDOM_PRIMITIVES = frozenset(
  {
    "random_bits",
    "random_fold_in",
    "random_split",
    "random_seed",
    "random_wrap",
    "random_unwrap",
    "threefry2x32",
    "rng_bit_generator",
    "rng_uniform",
  }
)
# Calls that are inlined where randomness meets data inside them (values are unchanged;
# ``checkpoint`` loses only its rematerialisation, which the audit notes).
INLINED = frozenset({"jit", "pjit", "closed_call", "core_call", "checkpoint", "remat", "remat2"})
# Constructs whose body is not rewritten: sites inside them are reported as unseen.
OPAQUE_CALLS = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})
ELEMENTWISE = homogeneity.ELEMENTWISE | {"convert_element_type", "reduce_precision"}


@dataclasses.dataclass(frozen=True, eq=False)
class Const:
  """A literal operand."""

  value: Any


Ref = int | Const


@dataclasses.dataclass(eq=False)
class Node:
  """One primitive application of the flat graph."""

  index: int
  primitive: Any
  params: dict[str, Any]
  ins: tuple[Ref, ...]
  outs: tuple[int, ...]
  scope: str
  eqn: Any  # the jaxpr equation it came from (source information)

  @property
  def name(self) -> str:
    return self.primitive.name


@dataclasses.dataclass(eq=False)
class Opaque:
  """An equation whose body mixes the key with data and is not looked into."""

  node: Node
  reason: str


@dataclasses.dataclass(eq=False)
class Graph:
  """The flat graph of one trace of ``f(key, *args)``."""

  nodes: list[Node]
  avals: dict[int, Any]
  flags: dict[int, int]
  consts: dict[int, Any]  # value id -> the concrete (or outer-traced) constant
  inputs: list[int]  # the key's leaf first, then the leaves of args
  outputs: list[Ref]
  out_tree: Any
  opaque: list[Opaque]
  inlined_checkpoint: bool = False
  producer: dict[int, Node] = dataclasses.field(default_factory=dict)
  uses: dict[int, list[Node]] = dataclasses.field(default_factory=dict)
  output_ids: set[int] = dataclasses.field(default_factory=set)

  def __post_init__(self) -> None:
    for node in self.nodes:
      for out in node.outs:
        self.producer[out] = node
      for ref in node.ins:
        if isinstance(ref, int):
          self.uses.setdefault(ref, []).append(node)
    self.output_ids = {ref for ref in self.outputs if isinstance(ref, int)}

  def flag(self, ref: Ref) -> int:
    return 0 if isinstance(ref, Const) else self.flags.get(ref, 0)

  def users(self, ref: int) -> list[Node]:
    """The nodes that read ``ref`` (each once)."""
    return list(dict.fromkeys(self.uses.get(ref, [])))


# ----------------------------------------------------------------------------
# Tracing with module scopes.


def trace(f: Any, key: Any, args: Sequence[Any]) -> tuple[core.ClosedJaxpr, Any]:
  """``make_jaxpr(f)(key, *args)`` with module paths in the name stacks, and the output tree."""
  # A new function each time: make_jaxpr caches the trace of a function it has seen (and
  # jit's traces too), with the name stacks of that earlier trace.
  # A jitted f keeps its own cache too: trace the function inside it.
  while type(f).__name__ == "PjitFunction" and callable(getattr(f, "__wrapped__", None)):
    f = f.__wrapped__
  fresh = lambda key, *args: f(key, *args)
  with _module_scopes(f, args):
    closed, shapes = jax.make_jaxpr(fresh, return_shape=True)(key, *args)
  return closed, jax.tree.structure(shapes)


@contextlib.contextmanager
def _module_scopes(f: Any, args: Sequence[Any]) -> Iterator[None]:
  with contextlib.ExitStack() as stack:
    stack.enter_context(_linen_scopes())
    stack.enter_context(_nnx_scopes(f, args))
    yield


@contextlib.contextmanager
def _linen_scopes() -> Iterator[None]:
  try:
    import flax.linen as nn
  except ImportError:  # pragma: no cover - flax is a dependency
    yield
    return
  active: list[Any] = []

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if module.name is None or (active and active[-1] is module):
      return next_fun(*args, **kwargs)
    active.append(module)
    try:
      with jax.named_scope(module.name):
        return next_fun(*args, **kwargs)
    finally:
      active.pop()

  with nn.override_named_call(False), nn.intercept_methods(interceptor):
    yield


def nnx_roots(f: Any, args: Sequence[Any]) -> list[Any]:
  """The nnx modules that ``f`` reaches: through its closure, globals it names, a bound
  method's ``self``, a :func:`functools.partial`'s arguments, and ``args``."""
  try:
    from flax import nnx
  except ImportError:  # pragma: no cover - flax is a dependency
    return []
  roots: list[Any] = []
  seen: set[int] = set()

  def visit(obj: Any, depth: int) -> None:
    if depth > 4 or id(obj) in seen:
      return
    seen.add(id(obj))
    if isinstance(obj, nnx.Module):
      roots.append(obj)
      return
    if isinstance(obj, functools.partial):
      for inner in (obj.func, *obj.args, *obj.keywords.values()):
        visit(inner, depth + 1)
    elif inspect.ismethod(obj):
      visit(obj.__self__, depth + 1)
      visit(obj.__func__, depth + 1)
    elif isinstance(obj, (list, tuple)):
      for inner in obj[:64]:
        visit(inner, depth + 1)
    elif isinstance(obj, dict):
      for inner in list(obj.values())[:64]:
        visit(inner, depth + 1)
    elif inspect.isfunction(obj):
      for cell in obj.__closure__ or ():
        with contextlib.suppress(ValueError):  # an empty cell
          visit(cell.cell_contents, depth + 1)
      for name in obj.__code__.co_names:
        if name in obj.__globals__:
          visit(obj.__globals__[name], depth + 1)
    wrapped = getattr(obj, "__wrapped__", None)
    if wrapped is not None:
      visit(wrapped, depth + 1)

  visit(f, 0)
  for arg in args:
    visit(arg, 1)
  return roots


@contextlib.contextmanager
def _nnx_scopes(f: Any, args: Sequence[Any]) -> Iterator[None]:
  roots = nnx_roots(f, args)
  if not roots:
    yield
    return
  from flax import nnx

  # Containers are modules that are never called: their children are named through them.
  containers = tuple(c for c in (getattr(nnx, "List", None), getattr(nnx, "Dict", None)) if c)
  names: dict[int, str] = {}
  for root in roots:
    modules = {
      tuple(path): node
      for path, node in nnx.iter_graph(root)
      if isinstance(node, nnx.Module) and not isinstance(node, containers)
    }
    modules[()] = root
    for path, node in modules.items():
      if not path or id(node) in names:
        continue
      parent = max((p for p in modules if len(p) < len(path) and path[: len(p)] == p), key=len)
      names[id(node)] = "/".join(str(part) for part in path[len(parent) :])
  classes: dict[type, Any] = {}
  for root in roots:
    for _, node in nnx.iter_graph(root):
      if isinstance(node, nnx.Module) and id(node) in names and not isinstance(node, containers):
        classes.setdefault(type(node), type(node).__call__)
  active: list[int] = []

  def wrap(call: Any) -> Any:
    @functools.wraps(call)
    def scoped(self, *a, **k):
      name = names.get(id(self))
      if name is None or (active and active[-1] == id(self)):
        return call(self, *a, **k)
      active.append(id(self))
      try:
        with jax.named_scope(name):
          return call(self, *a, **k)
      finally:
        active.pop()

    return scoped

  missing = object()
  saved = {cls: cls.__dict__.get("__call__", missing) for cls in classes}
  try:
    for cls, call in classes.items():
      cls.__call__ = wrap(call)
    yield
  finally:
    for cls, original in saved.items():
      if original is missing:
        del cls.__call__
      else:
        cls.__call__ = original


# ----------------------------------------------------------------------------
# Flattening.


def flatten(closed: core.ClosedJaxpr, out_tree: Any) -> Graph:
  """The flat graph of a traced ``f(key, *args)`` (the key is the first input)."""
  builder = _Builder()
  jaxpr = closed.jaxpr
  refs: dict[Any, Ref] = {}
  for var, value in zip(jaxpr.constvars, closed.consts, strict=True):
    refs[var] = builder.const(var.aval, value)
  inputs = []
  for i, var in enumerate(jaxpr.invars):
    vid = builder.value(var.aval, RANDOM if i == 0 else DATA)
    refs[var] = vid
    inputs.append(vid)
  outputs = builder.run(jaxpr, refs, "")
  return Graph(
    builder.nodes,
    builder.avals,
    builder.flags,
    builder.consts,
    inputs,
    outputs,
    out_tree,
    builder.opaque,
    builder.inlined_checkpoint,
  )


class _Builder:
  def __init__(self) -> None:
    self.nodes: list[Node] = []
    self.avals: dict[int, Any] = {}
    self.flags: dict[int, int] = {}
    self.consts: dict[int, Any] = {}
    self.opaque: list[Opaque] = []
    self.inlined_checkpoint = False

  def value(self, aval: Any, flag: int) -> int:
    vid = len(self.avals)
    self.avals[vid] = aval
    self.flags[vid] = flag
    return vid

  def const(self, aval: Any, value: Any) -> int:
    vid = self.value(aval, 0)
    self.consts[vid] = value
    return vid

  def flag(self, ref: Ref) -> int:
    return 0 if isinstance(ref, Const) else self.flags[ref]

  def run(self, jaxpr: core.Jaxpr, refs: dict[Any, Ref], scope: str) -> list[Ref]:
    def read(atom: Any) -> Ref:
      if isinstance(atom, core.Literal):
        return Const(jaxprs.literal_value(atom))
      return refs[atom]

    for eqn in jaxpr.eqns:
      ins = tuple(read(atom) for atom in eqn.invars)
      flags = [self.flag(ref) for ref in ins]
      here = _join(scope, _scopes(eqn.source_info.name_stack))
      name = eqn.primitive.name
      meets = any(fl == RANDOM for fl in flags) and any(fl & DATA for fl in flags)
      if meets and name in INLINED:
        sub = jaxprs.callee(eqn)
        if sub is not None:
          inner, consts = sub
          self.inlined_checkpoint |= name in ("checkpoint", "remat", "remat2")
          inner_refs: dict[Any, Ref] = {}
          for var, value in zip(inner.constvars, consts, strict=True):
            inner_refs[var] = self.const(var.aval, value)
          for var, ref in zip(inner.invars, ins, strict=True):
            inner_refs[var] = ref
          for var, ref in zip(eqn.outvars, self.run(inner, inner_refs, here), strict=True):
            refs[var] = ref
          continue
      flag = 0
      for fl in flags:
        flag |= fl
      if name in RANDOM_PRIMITIVES and not flag & RANDOM:
        flag |= FIXED_RANDOM
      outs = tuple(self.value(var.aval, flag) for var in eqn.outvars)
      node = Node(len(self.nodes), eqn.primitive, dict(eqn.params), ins, outs, here, eqn)
      self.nodes.append(node)
      if meets and name not in ELEMENTWISE and (name in OPAQUE_CALLS or _has_body(eqn)):
        self.opaque.append(Opaque(node, _opaque_reason(name)))
      for var, out in zip(eqn.outvars, outs, strict=True):
        refs[var] = out
    return [read(atom) for atom in jaxpr.outvars]


def _has_body(eqn: Any) -> bool:
  return any(isinstance(v, (core.Jaxpr, core.ClosedJaxpr)) for v in eqn.params.values()) or any(
    isinstance(v, (tuple, list)) and v and isinstance(v[0], (core.Jaxpr, core.ClosedJaxpr))
    for v in eqn.params.values()
  )


def _opaque_reason(name: str) -> str:
  if name in OPAQUE_CALLS:
    return (
      f"inside a `{name}` (a function with a custom derivative), which is not rewritten "
      "because inlining it would change its gradient"
    )
  return f"inside a `{name}` (a loop or a branch), which is not rewritten"


def _scopes(name_stack: Any) -> str:
  """The scopes of a name stack without its transforms: ``vmap(Block_0)/Dropout_0`` is the
  module path ``Block_0/Dropout_0``."""
  stack = getattr(name_stack, "stack", None)
  if stack is None:  # pragma: no cover - a JAX without NameStack.stack
    return str(name_stack)
  return "/".join(e.name for e in stack if type(e).__name__ == "Scope" and e.name)


def _join(outer: str, inner: str) -> str:
  return "/".join(part for part in (outer, inner) if part)
