r"""``jdrop.audit`` and ``jdrop.reorder``: the dropout sites of a whole model, as transforms.

Both take ``f(key, *args)``, a function that runs a model in training mode and draws all of
its dropout randomness from ``key``, read its jaxpr, and find every **site** where a mask
drawn from the key is applied to data (``flax.linen.Dropout``, ``flax.nnx.Dropout``, jdrop's
modules and functions, the attention-weight dropout of Flax's attention, and hand-written
``where(bernoulli(key, q), x / q, 0)``). For each site they find the elementwise
**activation** next to it (see :mod:`jdrop._src.audit.sites`), if any.

* :func:`audit` reports each site: its module path, kind, rate, shape, activation and order,
  the checker's verdict on moving it across its activation, and Monte-Carlo estimates of its
  **bias**: with mask ``m`` drawn from ``fold_in(key, i)``,

  .. math::
     \mathrm{bias}_s = \mathbb{E}_m\left[f_s(m)\right] - f_{\mathrm{eval}},

  where :math:`f_s` runs the model with only site :math:`s` in training mode and
  :math:`f_{\mathrm{eval}}` with every site in evaluation mode; ``moved_bias`` is the same
  with site :math:`s` moved to the other side of its activation (same masks, so the two are
  compared on common random numbers). A post-activation site followed only by linear maps
  (``Dense -> relu -> Dropout -> Dense``) has zero bias in expectation, since
  :math:`\mathbb{E}[D(h)] = h` and linear maps commute with expectation; a pre-activation
  site does not, unless the activation is linear on the segment the unit can reach.
* :func:`reorder` returns a function like ``f`` whose sites sit on the requested side of
  their activations, built by an interpreter over the jaxpr: jittable, vmappable,
  differentiable, and under ``jit`` the same operations as ``f`` where nothing moves.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec

from jdrop._src import activations
from jdrop._src import errors
from jdrop._src import masks
from jdrop._src.audit import graph as graphs
from jdrop._src.audit import interpret
from jdrop._src.audit import sites as finder
from jdrop._src.checker import api as checker
from jdrop._src.checker.verdict import Finding
from jdrop._src.checker.verdict import Verdict

MAX_MASKS = 2**24
_ORDERS = ("pre", "post")
_CHUNK_ELEMENTS = 2**20  # output elements per chunk and variant (CPU cache-sized)


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A Monte-Carlo estimate: ``mean`` and ``stderr`` shaped like ``f``'s output (a pytree
  output gives pytrees of the same structure)."""

  mean: Any
  stderr: Any

  def to_dict(self) -> dict[str, Any]:
    return {"mean": _tolist(self.mean), "stderr": _tolist(self.stderr)}


@dataclasses.dataclass(frozen=True)
class Site:
  """One dropout application in a model.

  Attributes:
    path: where it is: the module path from the jaxpr's name stack
      (``decoder/encoderdecoderblock_0/MlpBlock_0/Dropout_0``), or the enclosing
      :func:`jax.named_scope` of a direct call (``"dropout"`` at the top level); a path
      that occurs twice gets ``#2``, ``#3``...
    kind: ``"dropout"`` or ``"attention"`` (dropout of attention weights).
    rate: the drop probability.
    shape: the shape of the array it applies to.
    activation: the elementwise nonlinearity next to it: a registry name (``"relu"``,
      ``"gelu"``) when it is exactly that function, a description of its primitives
      otherwise, ``None`` when its neighbours are linear maps, residuals or layers.
    order: ``"post"`` (activation, then dropout), ``"pre"`` (dropout, then activation), or
      ``None`` without an activation.
    verdict: :func:`jdrop.check` of the activation at ``rate``: whether moving the site across
      it changes the network pathwise and in expectation; ``None`` without an activation.
    bias: :class:`Estimate` of ``E[f with only this site in training mode] - f in eval mode``.
    moved_bias: the same with the site on the other side of its activation; ``None``
      without one.
  """

  path: str
  kind: str
  rate: float
  shape: tuple[int, ...]
  activation: str | None
  order: str | None
  verdict: Verdict | None
  bias: Estimate
  moved_bias: Estimate | None

  def to_dict(self) -> dict[str, Any]:
    return {
      "path": self.path,
      "kind": self.kind,
      "rate": self.rate,
      "shape": list(self.shape),
      "activation": self.activation,
      "order": self.order,
      "verdict": None if self.verdict is None else self.verdict.to_dict(),
      "bias": self.bias.to_dict(),
      "moved_bias": None if self.moved_bias is None else self.moved_bias.to_dict(),
    }


@dataclasses.dataclass(frozen=True)
class Audit:
  """The dropout sites of one model (see :func:`audit`).

  Attributes:
    sites: one :class:`Site` per dropout application, in program order.
    unseen: randomness that looks like dropout but is not attributed to a site, and sites
      inside constructs that are not rewritten (``scan``, ``while``, custom derivatives),
      each with the reason; these stay as they are in every estimate.
    notes: anything else worth knowing (no dropout found, a ``checkpoint`` inlined).
    num_masks: masks per site.
    eval_output: ``f`` with every site in evaluation mode.
  """

  sites: tuple[Site, ...]
  unseen: tuple[str, ...]
  notes: tuple[str, ...]
  num_masks: int
  eval_output: Any

  def summary(self, site: Site, moved: bool = False) -> tuple[float, float] | None:
    """``(|bias|, noise)`` of a site relative to the RMS of the eval output.

    ``|bias|`` is ``sqrt(max(mean(b**2) - mean(se**2), 0))``, the root mean square of the
    per-element bias with the Monte-Carlo noise taken out, and ``noise`` is
    ``sqrt(mean(se**2))``: a ``|bias|`` below about twice ``noise`` is not distinguishable
    from 0.
    """
    estimate = site.moved_bias if moved else site.bias
    if estimate is None:
      return None
    mean = _concat(estimate.mean)
    se = _concat(estimate.stderr)
    if not mean.size:
      return None  # no numeric output to take a mean of
    numeric = [v for v in jax.tree.leaves(self.eval_output) if np.asarray(v).dtype.kind in "biufc"]
    rms = math.sqrt(float(np.mean(_concat(numeric) ** 2))) if numeric else 1.0
    rms = rms or 1.0
    signal = float(np.mean(mean**2) - np.mean(se**2))
    return math.sqrt(max(signal, 0.0)) / rms, math.sqrt(float(np.mean(se**2))) / rms

  def to_markdown(self) -> str:
    """One table row per site, then the unseen randomness and the notes."""
    head = (
      "| site | kind | rate | activation | order | pathwise | expectation "
      "| \\|bias\\| / rms | \\|moved bias\\| / rms |\n"
      "|---|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for site in self.sites:
      verdict = site.verdict
      rows.append(
        f"| `{site.path}` | {site.kind} | {site.rate:g} | {site.activation or '-'} "
        f"| {site.order or '-'} | {verdict.pathwise.status if verdict else '-'} "
        f"| {verdict.expectation.status if verdict else '-'} "
        f"| {cell(self.summary(site))} | {cell(self.summary(site, moved=True))} |"
      )
    out = "\n".join(rows)
    out += (
      f"\n\n{self.num_masks} masks per site. |bias| is the root mean square over the output "
      "of E[f with only this site in training mode] - f in eval mode, less the Monte-Carlo "
      "noise, relative to the RMS of the eval output; ± is the noise (a |bias| under about "
      "twice it is not distinguishable from 0)."
    )
    if self.unseen:
      out += "\n\nNot audited:\n" + "\n".join(f"- {u}" for u in self.unseen)
    if self.notes:
      out += "\n\nNotes:\n" + "\n".join(f"- {n}" for n in self.notes)
    return out

  def to_dict(self) -> dict[str, Any]:
    """Everything above as JSON-ready values (non-finite floats as strings)."""
    return {
      "num_masks": self.num_masks,
      "sites": [
        {
          **site.to_dict(),
          "summary": _pair(self.summary(site)),
          "moved_summary": _pair(self.summary(site, moved=True)),
        }
        for site in self.sites
      ],
      "unseen": list(self.unseen),
      "notes": list(self.notes),
      "eval_output": _tolist(self.eval_output),
    }

  def __str__(self) -> str:
    return self.to_markdown()


def cell(pair: tuple[float, float] | None) -> str:
  """A ``(bias, noise)`` summary as a table cell: ``0.0123 ± 0.004``, or ``-``."""
  return "-" if pair is None else f"{pair[0]:.3g} ± {pair[1]:.2g}"


def _pair(pair: tuple[float, float] | None) -> dict[str, Any] | None:
  return None if pair is None else {"bias": _finite(pair[0]), "noise": _finite(pair[1])}


def _finite(value: Any) -> Any:
  """``value`` for JSON: non-finite floats as the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
  if isinstance(value, list):
    return [_finite(v) for v in value]
  if isinstance(value, float) and not math.isfinite(value):
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
  return value


def _concat(tree: Any) -> np.ndarray:
  """Every leaf's magnitudes as one float64 vector (complex leaves by their modulus)."""
  leaves = [np.abs(np.asarray(leaf)).astype(np.float64).ravel() for leaf in jax.tree.leaves(tree)]
  return np.concatenate(leaves) if leaves else np.zeros(0)


def _tolist(tree: Any) -> Any:
  def one(leaf: Any) -> Any:
    array = np.asarray(leaf)
    if np.iscomplexobj(array):  # JSON has no complex numbers: [real, imaginary] pairs
      array = np.stack([array.real, array.imag], axis=-1)
    return _finite(array.astype(np.float64).tolist())

  return jax.tree.map(one, tree)


# ----------------------------------------------------------------------------
# Tracing, shared by audit and reorder.


@dataclasses.dataclass(eq=False)
class _Traced:
  graph: graphs.Graph
  found: finder.Found
  leaves: list[Any]


def _trace(fn: str, f: Any, key: Any, args: tuple[Any, ...]) -> _Traced:
  if not callable(f):
    raise errors.type_error(
      fn,
      "f",
      "must be a callable f(key, *args) that runs the model in training mode",
      errors.short(f),
      "Pass e.g. lambda key, x: model.apply(variables, x, train=True, rngs={'dropout': key}).",
    )
  try:
    signature = inspect.signature(f)
  except (TypeError, ValueError):
    signature = None
  if signature is not None:
    try:
      signature.bind(key, *args)
    except TypeError as err:
      raise errors.type_error(
        fn,
        "f",
        f"must accept (key, *args) with the key first ({err})",
        errors.Described(f"a function with signature {signature}"),
        "Take the dropout key as the first argument: f(key, *args).",
      ) from err
  try:
    closed, out_tree = graphs.trace(f, key, args)
  except Exception as err:
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    raise errors.value_error(
      fn,
      "f",
      f"failed when traced as f(key, *args) ({type(err).__name__}: {first})",
      errors.short(f),
      "Check that f(key, *args) runs on these arguments; f must be a pure function of them "
      "(an nnx model's Rngs and state updates inside f are not supported).",
    ) from err
  graph = graphs.flatten(closed, out_tree)
  return _Traced(graph, finder.find(graph), jax.tree.leaves((key, *args)))


def _check_key(fn: str, key: Any) -> Any:
  if key is None:
    return jax.random.key(0)
  return masks.check_key(fn, key)


# ----------------------------------------------------------------------------
# reorder


def reorder(
  f: Callable[..., Any], order: str, *, sites: Sequence[str] | None = None
) -> Callable[..., Any]:
  """Moves every dropout site to one side of its activation: a new ``f`` built from the jaxpr.

  Each site with an adjacent activation (see :func:`audit`) that is on the other side is
  applied there instead, with the same mask; sites already there, and sites without an
  activation, are unchanged, so ``reorder(f, "post")(key, *args)`` equals ``f(key, *args)``
  for a network whose sites are all post-activation. The result re-traces ``f`` on each
  call (so it follows a model whose parameters change) and is meant to be used under
  :func:`jax.jit`, where it compiles to ``f``'s operations; it works under ``vmap`` and
  ``grad`` too.

  Args:
    f: ``f(key, *args)`` running a model in training mode with all dropout drawn from key.
    order: ``"pre"`` (dropout, then activation) or ``"post"`` (activation, then dropout).
    sites: paths (``Site.path`` of :func:`audit`) to move; ``None`` moves every site.

  Returns:
    A function with ``f``'s signature.

  Raises:
    ValueError: ``order`` is not ``"pre"`` or ``"post"``; on a call, a path in ``sites`` that
      the model does not have (the message lists those it has).
    TypeError: ``f`` is not callable, ``sites`` is not a sequence of strings.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> def f(key, x):
    ...   return jax.nn.relu(jdrop.dropout(key, x, rate=0.5))  # pre-activation
    >>> g = jdrop.reorder(f, "post")
    >>> x = jnp.array([-1.0, 2.0, 3.0])
    >>> bool((g(jax.random.key(0), x) == jdrop.dropout(jax.random.key(0), jax.nn.relu(x),
    ...                                                rate=0.5)).all())
    True
  """
  fn = "jdrop.reorder"
  if not callable(f):
    raise errors.type_error(
      fn, "f", "must be a callable f(key, *args)", errors.short(f), "Pass the model's function."
    )
  if not isinstance(order, str) or order not in _ORDERS:
    raise errors.value_error(
      fn,
      "order",
      'must be "pre" (dropout, then activation) or "post" (activation, then dropout)',
      errors.short(order),
      'Pass order="pre" or order="post".',
    )
  wanted = _check_paths(fn, sites)

  @functools.wraps(f)
  def reordered(key: Any, *args: Any) -> Any:
    traced = _trace(fn, f, key, args)
    found = traced.found.sites
    if wanted is not None:
      paths = [site.path for site in found]
      unknown = [p for p in wanted if p not in paths]
      if unknown:
        raise errors.value_error(
          fn,
          "sites",
          "must name sites of the model",
          errors.short(unknown),
          f"Its sites are {paths}." if paths else "The model has no dropout sites.",
        )
    modes = {
      i: "moved"
      for i, site in enumerate(found)
      if site.order is not None and site.order != order and (wanted is None or site.path in wanted)
    }
    outs = interpret.run(traced.graph, found, traced.leaves, modes)
    return jax.tree.unflatten(traced.graph.out_tree, outs)

  return reordered


def _check_paths(fn: str, sites: Any) -> tuple[str, ...] | None:
  if sites is None:
    return None
  if isinstance(sites, str) or not isinstance(sites, Sequence):
    raise errors.type_error(
      fn,
      "sites",
      "must be a sequence of site paths (or None for every site)",
      errors.short(sites),
      'Pass e.g. sites=["MlpBlock_0/Dropout_0"] (the paths jdrop.audit reports).',
    )
  if not all(isinstance(p, str) for p in sites):
    raise errors.type_error(
      fn,
      "sites",
      "must hold strings",
      errors.short(sites),
      'Pass e.g. sites=["MlpBlock_0/Dropout_0"].',
    )
  return tuple(sites)


# ----------------------------------------------------------------------------
# audit


def audit(
  f: Callable[..., Any],
  *args: Any,
  key: Any = None,
  num_masks: int = 1024,
  chunk: int | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> Audit:
  """Finds every dropout site of a model and says what moving it across its activation does.

  Args:
    f: ``f(key, *args)`` running the model in training mode with all dropout randomness
      drawn from ``key``, e.g. ``lambda key, x: model.apply(variables, x, train=True,
      rngs={"dropout": key})``, or for nnx a closure that calls ``model(x,
      rngs=nnx.Rngs(dropout=key))``. Parameters should be closed over (they are constants
      of the trace); ``args`` are the inputs.
    *args: the inputs: arrays or pytrees of arrays (they are traced; close over Python values
      such as ``train=True`` in ``f`` instead).
    key: the key masks are derived from (``fold_in(key, i)`` for mask ``i``); default
      ``jax.random.key(0)``.
    num_masks: Monte-Carlo masks per site.
    chunk: masks per compiled step (default: about 2**20 output elements per step, at most
      ``num_masks``); rounded up to a multiple of the number of devices.
    progress: called as ``progress(done, total)`` after each site.

  Returns:
    An :class:`Audit`. A model without dropout gives an empty audit with a note.

  Raises:
    TypeError: ``f`` is not callable or does not take the key first, a bad ``key``,
      ``num_masks`` or ``chunk``.
    ValueError: ``f`` fails to trace on ``(key, *args)``; out-of-range counts.

  Example:
    >>> import jax, jax.numpy as jnp, jdrop
    >>> w = jnp.linspace(-1, 1, 12).reshape(3, 4)
    >>> def f(key, x):
    ...   h = jdrop.dropout(key, jax.nn.relu(x @ w), rate=0.5)
    ...   return h @ w.T
    >>> report = jdrop.audit(f, jnp.ones((2, 3)), num_masks=256)
    >>> site = report.sites[0]
    >>> site.activation, site.order, site.verdict.pathwise.status
    ('relu', 'post', 'proved')
  """
  fn = "jdrop.audit"
  num_masks = errors.check_count(fn, "num_masks", num_masks, upper=MAX_MASKS, example="1024")
  if chunk is not None:
    chunk = errors.check_count(fn, "chunk", chunk, upper=MAX_MASKS, example="256")
  key = _check_key(fn, key)
  traced = _trace(fn, f, key, args)
  graph, found = traced.graph, traced.found
  env: dict[int, Any] = {}
  interpret.run(graph, found.sites, traced.leaves, {}, "on", record=env)
  notes = []
  if not found.sites and not found.unseen:
    notes.append(
      "f draws no dropout mask from its key: is the model in training mode (train=True, "
      "deterministic=False) and does it take its dropout rng from the key?"
    )
  if graph.inlined_checkpoint:
    notes.append(
      "a jax.checkpoint around a dropout was inlined: the estimates are exact, but "
      "reorder's output does not rematerialise that block"
    )
  unseen = list(found.unseen)
  kept: list[finder.RawSite] = []
  rates: list[float] = []
  for site in found.sites:
    rate = _rate(site, graph, env)
    if isinstance(rate, str):  # not inverted dropout: it stays as it is, like other unseen
      unseen.append(f"`{site.path}`: {rate}; it is not audited and stays as it is")
    else:
      kept.append(site)
      rates.append(rate)
  program = _Program(graph, kept, traced.leaves, key, num_masks, chunk)
  out_sites = []
  for index, (site, rate) in enumerate(zip(kept, rates, strict=True)):
    bias, moved = program.estimates(index, site.activation is not None)
    name, verdict = _activation(site, env, rate)
    out_sites.append(
      Site(
        path=site.path,
        kind=site.kind,
        rate=rate,
        shape=tuple(graph.avals[site.x_in].shape),
        activation=name,
        order=site.order if name is not None else None,
        verdict=verdict,
        bias=_estimate(bias, graph.out_tree),
        moved_bias=None if moved is None else _estimate(moved, graph.out_tree),
      )
    )
    if progress is not None:
      progress(index + 1, len(kept))
  return Audit(
    tuple(out_sites),
    tuple(unseen),
    tuple(notes),
    num_masks,
    jax.tree.unflatten(graph.out_tree, program.eval),
  )


def _estimate(pair: _Pair, out_tree: Any) -> Estimate:
  return Estimate(jax.tree.unflatten(out_tree, pair[0]), jax.tree.unflatten(out_tree, pair[1]))


def _rate(site: finder.RawSite, graph: graphs.Graph, env: dict[int, Any]) -> float | str:
  """The site's drop rate, from its multiplier ``site(ones)``: values in ``{0, 1/q}``."""
  aval = graph.avals[site.x_in]
  ones = jnp.ones(aval.shape, aval.dtype)
  values = np.asarray(
    interpret._evaluate(site.nodes, env, {site.x_in: ones}, site.y_out), np.float64
  ).ravel()
  kept = values[values != 0]
  if kept.size and not ((kept == kept[0]).all() and kept[0] >= 1):
    return "a multiplier that is not 0 or one scale 1/(1 - rate) >= 1 (not inverted dropout)"
  zeros = jnp.zeros(aval.shape, aval.dtype)
  if np.any(np.asarray(interpret._evaluate(site.nodes, env, {site.x_in: zeros}, site.y_out))):
    return "it maps 0 to something other than 0 (not inverted dropout)"
  keep = _bernoulli_probability(site, graph, env)
  if keep is None:  # jdrop's fused masks: the keep probability it divides by (float32 or wider)
    keep = _divisor(site, graph, env)
  if keep is not None:
    return float(f"{1.0 - keep:.6g}")
  if not kept.size:
    return 1.0 if values.size else 0.0
  return float(f"{1.0 - 1.0 / kept[0]:.6g}")


def _bernoulli_probability(
  site: finder.RawSite, graph: graphs.Graph, env: dict[int, Any]
) -> float | None:
  """The ``p`` of a ``jax.random.bernoulli(key, p)`` that the site's mask comes from (Flax's
  dropout divides in the input's dtype, so its divisor is rounded in bfloat16; ``p`` is not)."""
  todo = [r for n in site.nodes for r in n.ins if isinstance(r, int) and graph.flag(r) == 1]
  seen: set[int] = set()
  while todo and len(seen) < 64:
    ref = todo.pop()
    node = graph.producer.get(ref)
    if ref in seen or node is None:
      continue
    seen.add(ref)
    if node.name in ("jit", "pjit") and node.params.get("name") == "_bernoulli":
      p = node.ins[1]
      value = np.asarray(p.value if isinstance(p, graphs.Const) else env[p], np.float64)
      return float(value) if value.size == 1 else None
    todo += [r for r in node.ins if isinstance(r, int)]
  return None


def _divisor(site: finder.RawSite, graph: graphs.Graph, env: dict[int, Any]) -> float | None:
  """The keep probability ``q`` where the site divides by a uniform constant."""
  candidates = []
  for node in site.nodes:
    if node.name == "div":
      candidates.append(node.ins[1])
  for node in site.nodes:  # attention: x * (mask / q)
    for ref in node.ins:
      producer = graph.producer.get(ref) if isinstance(ref, int) else None
      while producer is not None and producer.name in ("convert_element_type", "div", "mul"):
        if producer.name == "div":
          candidates.append(producer.ins[1])
          break
        nxt = producer.ins[0]
        producer = graph.producer.get(nxt) if isinstance(nxt, int) else None
  for ref in candidates:
    value = np.asarray(ref.value if isinstance(ref, graphs.Const) else env[ref], np.float64)
    flat = value.ravel()
    if flat.size and (flat == flat[0]).all() and 0 < flat[0] <= 1:
      return float(flat[0])
  return None


def _activation(
  site: finder.RawSite, env: dict[int, Any], rate: float
) -> tuple[str | None, Verdict | None]:
  act = site.activation
  if act is None:
    return None, None
  dtype = env[site.x_in].dtype
  function = interpret.elementwise_function(act.nodes, act.entry, act.exit, env, dtype)
  try:
    spec = jax.ShapeDtypeStruct((4,), jnp.float32)
    closed = jax.make_jaxpr(function)(spec)
  except interpret.NotElementwise as err:
    name = "elementwise (" + ", ".join(n.name for n in act.nodes) + ")"
    return name, _unknown(name, rate, f"the activation cannot be checked on its own: {err}")
  name = _registry_name(closed, dtype) or _describe(closed)
  if not 0 < rate < 1:
    return name, _unknown(name, rate, f"the rate is {rate}: nothing to move")
  return name, _check(name, function, closed, rate)


def _unknown(name: str, rate: float, reason: str) -> Verdict:
  finding = Finding("unknown", "audit", reason)
  return Verdict(name, rate, (4,), None, None, np.full((4,), np.nan), finding, finding)


_VERDICTS: dict[tuple[str, float], Verdict] = {}


def _check(name: str, function: Callable, closed: Any, rate: float) -> Verdict:
  cache = (_text(closed), rate)
  if cache not in _VERDICTS:
    verdict = checker.check(function, rate=rate, float_level=False)
    _VERDICTS[cache] = dataclasses.replace(verdict, function=name)
  return _VERDICTS[cache]


def _text(closed: Any) -> str:
  consts = ";".join(np.asarray(c).tobytes().hex() for c in closed.consts)
  return f"{closed.jaxpr}|{consts}"


@functools.lru_cache(maxsize=32)
def _registry_texts(dtype: Any) -> dict[str, str]:
  """The canonical jaxpr text of every elementwise registry activation at ``dtype``."""
  out: dict[str, str] = {}
  spec = jax.ShapeDtypeStruct((4,), jnp.float32)
  for name in activations.names():
    entry = activations.info(name)
    if not entry.elementwise:
      continue
    try:
      traced = jax.make_jaxpr(entry.fn)(jax.ShapeDtypeStruct((4,), dtype))
      canonical = jax.make_jaxpr(interpret.jaxpr_function(traced, dtype))(spec)
    except Exception:  # an activation that this evaluator cannot take apart
      continue
    out.setdefault(_text(canonical), name)
  return {text: name for text, name in out.items()}


def _registry_name(closed: Any, dtype: Any) -> str | None:
  return _registry_texts(np.dtype(dtype)).get(_text(closed))


def _describe(closed: Any) -> str:
  names = [
    eqn.primitive.name for eqn in closed.jaxpr.eqns if eqn.primitive.name != "broadcast_in_dim"
  ]
  names = [n for n in names if n != "convert_element_type"] or names
  if len(names) > 6:
    names = [*names[:5], "..."]
  return "elementwise (" + ", ".join(names) + ")"


# ----------------------------------------------------------------------------
# Monte Carlo


# Per output leaf: means and standard errors (None for a leaf that is not a number, a key).
_Pair = tuple[list[np.ndarray | None], list[np.ndarray | None]]


def _numeric(value: Any) -> bool:
  dtype = getattr(value, "dtype", None)
  if dtype is None:
    return False
  return not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and np.dtype(dtype).kind in "biufc"


def _accumulator(value: Any) -> Any:
  """float32 for real outputs, complex64 for complex ones."""
  return jnp.complex64 if np.iscomplexobj(value) else jnp.float32


def _wide(value: Any) -> Any:
  return np.complex128 if np.iscomplexobj(value) else np.float64


def _plain(value: Any) -> Any:
  """A leaf that is not a number, for the eval output: a key's data, else the value."""
  try:
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
      return np.asarray(jax.random.key_data(value))
  except (AttributeError, TypeError):
    pass
  return value


class _Program:
  """The compiled Monte-Carlo estimates of one traced model.

  One program serves every site: which site is on (or moved) is a traced argument
  (:func:`interpret.run`'s ``switches``), so the model is compiled once, not once per site.
  Step ``s`` covers masks ``[s * chunk, (s + 1) * chunk)``; mask ``i`` comes from
  ``fold_in(key, i)``, so the estimates do not depend on the chunk or the devices (up to the
  rounding of a different summation order). The mask axis is sharded over all devices.
  """

  def __init__(
    self,
    graph: graphs.Graph,
    found: list[finder.RawSite],
    leaves: list[Any],
    key: jax.Array,
    num_masks: int,
    chunk: int | None,
  ) -> None:
    self.key, self.num_masks = key, num_masks
    self.count = len(found)
    devices = jax.devices()
    mesh = Mesh(np.array(devices), ("masks",))
    sizes = [math.prod(graph.avals[r].shape) if isinstance(r, int) else 1 for r in graph.outputs]
    default = max(1, min(256, _CHUNK_ELEMENTS // max(sum(sizes), 1)))
    chunk = min(chunk or default, num_masks)
    self.chunk = -(-chunk // len(devices)) * len(devices)
    self.args = leaves[1:]
    self.consts = dict(graph.consts)
    evaluated = interpret.run(graph, found, leaves, {}, "off")
    # Keys (f returning its next key) and other non-numbers have no mean: they get None.
    self.numeric = [_numeric(v) for v in evaluated]
    self.eval = [
      np.asarray(v) if ok else _plain(v) for v, ok in zip(evaluated, self.numeric, strict=True)
    ]
    sharding = NamedSharding(mesh, PartitionSpec("masks"))
    reference = [
      jnp.asarray(v, _accumulator(v)) for v, ok in zip(self.eval, self.numeric, strict=True) if ok
    ]
    numeric = self.numeric

    def sample(key: jax.Array, switches: jax.Array, consts: Any, args: Any) -> list[jax.Array]:
      leaves = interpret.run(graph, found, [key, *args], {}, consts=consts, switches=switches)
      leaves = [v for v, ok in zip(leaves, numeric, strict=True) if ok]
      return [jnp.asarray(v, e.dtype) - e for v, e in zip(leaves, reference, strict=True)]

    def step(
      key: jax.Array, start: jax.Array, switches: jax.Array, consts: Any, args: Any
    ) -> list[tuple[jax.Array, jax.Array]]:
      index = start + jnp.arange(self.chunk, dtype=jnp.uint32)
      index = jax.lax.with_sharding_constraint(index, sharding)
      keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
      outs = jax.vmap(sample, in_axes=(0, None, None, None))(keys, switches, consts, args)
      valid = index < self.num_masks

      def moments(d: jax.Array) -> tuple[jax.Array, jax.Array]:
        d = jnp.where(valid.reshape((-1,) + (1,) * (d.ndim - 1)), d, 0)
        return jnp.sum(d, axis=0), jnp.sum(jnp.abs(d) ** 2, axis=0)

      return [moments(d) for d in outs]

    self.step = jax.jit(step)

  def _moments(self, switches: np.ndarray) -> _Pair:
    totals: list[tuple[np.ndarray, np.ndarray]] = []
    on = jnp.asarray(switches, jnp.int32)
    for start in range(0, self.num_masks, self.chunk):
      chunk = self.step(self.key, jnp.uint32(start), on, self.consts, self.args)
      part = [(np.asarray(a, _wide(a)), np.asarray(b, np.float64)) for a, b in chunk]
      totals = (
        part
        if not totals
        else [(a + c, b + d) for (a, b), (c, d) in zip(totals, part, strict=True)]
      )
    n = self.num_masks
    means: list[np.ndarray | None] = []
    errs: list[np.ndarray | None] = []
    sums = iter(totals)
    for ok in self.numeric:
      if not ok:
        means.append(None)
        errs.append(None)
        continue
      s1, s2 = next(sums)
      if n < 2:  # one mask: no standard error, and so no claim of a bias
        var = np.full(np.shape(s2), np.nan)
      else:
        var = np.maximum(s2 - np.abs(s1) ** 2 / n, 0) / (n - 1)
      means.append(s1 / n)
      errs.append(np.sqrt(var / n))
    return means, errs

  def estimates(self, index: int, movable: bool) -> tuple[_Pair, _Pair | None]:
    """``(bias, moved bias or None)`` of site ``index``, each ``(means, stderrs)``."""
    switches = np.zeros(self.count, np.int32)
    switches[index] = 1
    bias = self._moments(switches)
    if not movable:
      return bias, None
    switches[index] = 2
    return bias, self._moments(switches)
