"""What :func:`jdrop.check` returns: a verdict per mode, with its evidence.

Two questions are asked about a function ``f`` and inverted dropout ``D`` with
keep probability ``q = 1 - rate``:

* **pathwise**: ``f(D(x)) == D(f(x))`` for every ``x`` and every mask (the same
  mask on both sides);
* **expectation**: ``E f(D(x)) == E D(f(x)) = f(x)`` for every ``x``.

Each answer is a :class:`Finding` whose ``status`` is ``"proved"`` (true over
the reals, with every literal at its exact float value), ``"refuted"`` (with a
:class:`Counterexample` whose residual is certified non-zero by ball arithmetic)
or ``"unknown"`` (with the reason). How the two orders compare in floating point
is a separate :class:`FloatFinding`: a float-level mismatch is not a refutation.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any
from typing import Literal

import numpy as np

Status = Literal["proved", "refuted", "unknown"]
STATUSES = ("proved", "refuted", "unknown")


def _fmt(value: float) -> str:
  return f"{value:.6g}"


def _fmt_vector(values: np.ndarray) -> str:
  flat = np.asarray(values, dtype=np.float64).ravel()
  if flat.size == 1:
    return _fmt(float(flat[0]))
  return "[" + ", ".join(_fmt(float(v)) for v in flat) + "]"


def _listify(values: np.ndarray | None) -> Any:
  if values is None:
    return None
  array = np.asarray(values)
  if array.dtype == bool:
    return array.tolist()
  return [_json_float(v) for v in array.astype(np.float64).ravel()]


def _json_float(value: float) -> float | str:
  value = float(value)
  if math.isfinite(value):
    return value
  return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


@dataclasses.dataclass(frozen=True)
class Counterexample:
  """A certified witness that the two orders differ.

  Attributes:
    x: the input (shaped like the traced input), exactly representable in float64.
    rate: the drop rate of the witness (exact as a Python float).
    mask: the keep mask (pathwise witnesses), or ``None`` for an expectation
      witness, where both sides are expectations over every mask.
    pre: ``f(D(x))`` (pathwise) or ``E f(D(x))`` (expectation), midpoints.
    post: ``D(f(x))`` (pathwise) or ``E D(f(x)) = f(x)`` (expectation), midpoints.
    index: the flat position whose residual is certified.
    residual: ``(lo, hi)``: an interval that contains ``pre - post`` at ``index``
      exactly and excludes 0.
    method: how the residual was certified.
    elementwise: ``f`` was shown elementwise, so ``x_at`` alone is the witness.
    certificate: the residual as certified: an Arb ball (``"[0.27 +/- 3e-39]"``) or an
      exact fraction. ``residual`` is this rounded outward to floats, which can reach 0
      only when the residual underflows float64 (below 1e-308).
  """

  x: np.ndarray
  rate: float
  mask: np.ndarray | None
  pre: np.ndarray
  post: np.ndarray
  index: int
  residual: tuple[float, float]
  method: str
  elementwise: bool = False
  certificate: str = ""

  @property
  def x_at(self) -> float:
    """The input at the certified position (the scalar witness of an elementwise ``f``)."""
    return float(np.asarray(self.x).ravel()[self.index])

  def __str__(self) -> str:
    lo, hi = self.residual
    i = self.index
    pre = float(np.asarray(self.pre).ravel()[i])
    post = float(np.asarray(self.post).ravel()[i])
    if self.elementwise:
      where = f"x = {_fmt(self.x_at)}, rate = {self.rate!r}"
      at = ""
      if self.mask is not None:
        where += ", unit " + ("kept" if np.asarray(self.mask).ravel()[i] else "dropped")
    else:
      where = f"x = {_fmt_vector(self.x)}, rate = {self.rate!r}"
      if self.mask is not None:
        where += f", mask = {np.asarray(self.mask).astype(int).ravel().tolist()}"
      at = f"[{i}]"
    side = "f(D(x))" if self.mask is not None else "E f(D(x))"
    other = "D(f(x))" if self.mask is not None else "f(x)"
    return (
      f"{where}: {side}{at} = {_fmt(pre)}, {other}{at} = {_fmt(post)}; "
      f"the difference lies in [{lo:.6g}, {hi:.6g}] ({self.method})"
    )

  def to_dict(self) -> dict[str, Any]:
    return {
      "x": _listify(self.x),
      "rate": self.rate,
      "mask": _listify(self.mask),
      "pre": _listify(self.pre),
      "post": _listify(self.post),
      "index": self.index,
      "residual": [_json_float(self.residual[0]), _json_float(self.residual[1])],
      "method": self.method,
      "elementwise": self.elementwise,
      "certificate": self.certificate,
    }


@dataclasses.dataclass(frozen=True)
class Finding:
  """One mode's answer: ``status``, the ``method`` that decided it, and why."""

  status: Status
  method: str
  reason: str
  counterexample: Counterexample | None = None

  def __str__(self) -> str:
    text = f"{self.status} ({self.method}): {self.reason}"
    if self.counterexample is not None:
      text += f"\n    counterexample: {self.counterexample}"
    return text

  def to_dict(self) -> dict[str, Any]:
    return {
      "status": self.status,
      "method": self.method,
      "reason": self.reason,
      "counterexample": None if self.counterexample is None else self.counterexample.to_dict(),
    }


@dataclasses.dataclass(frozen=True)
class DtypeFinding:
  """How the two orders compare bit for bit in one dtype under ``jit``.

  Attributes:
    dtype: ``"float32"`` or ``"bfloat16"``.
    bit_identical: every sampled input, mask and rate gave identical bits (NaN
      matches NaN).
    max_ulps: the largest disagreement in units in the last place (``inf`` when
      one side is NaN or infinite and the other is not).
    worst_x: an input value that shows ``max_ulps``, or ``None`` when identical.
    worst_rate: the rate at which it shows, or ``None``.
    worst_mask: whether the unit at ``worst_x`` was kept, or ``None``.
    num_samples: how many (input, rate, mask) triples were compared.
  """

  dtype: str
  bit_identical: bool
  max_ulps: float
  worst_x: float | None
  worst_rate: float | None
  worst_mask: bool | None
  num_samples: int

  def __str__(self) -> str:
    if self.bit_identical:
      return f"{self.dtype}: bit-identical on {self.num_samples} samples"
    if self.worst_x is None:
      return f"{self.dtype}: not compared (f does not run in {self.dtype})"
    kept = {True: "kept", False: "dropped", None: "?"}[self.worst_mask]
    return (
      f"{self.dtype}: differ by up to {_fmt(self.max_ulps)} ulp "
      f"(x = {_fmt(self.worst_x)}, rate = {self.worst_rate!r}, unit {kept})"
    )

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["max_ulps"] = _json_float(self.max_ulps)
    return out


@dataclasses.dataclass(frozen=True)
class FloatFinding:
  """The float-level comparison of both orders, per dtype, on the current backend."""

  backend: str
  dtypes: tuple[DtypeFinding, ...]
  note: str = ""  # why the comparison was skipped, when ``dtypes`` is empty

  def __str__(self) -> str:
    if not self.dtypes:
      return f"skipped: {self.note}"
    return f"on {self.backend} under jit: " + "; ".join(str(d) for d in self.dtypes)

  def to_dict(self) -> dict[str, Any]:
    out = {"backend": self.backend, "dtypes": [d.to_dict() for d in self.dtypes]}
    if self.note:
      out["note"] = self.note
    return out


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The checker's answer for one function.

  Attributes:
    function: a readable name for the function.
    rate: the rate asked about, or ``None`` for every rate in (0, 1).
    shape: the shape of the input the function was traced on.
    elementwise: ``True`` when output ``i`` is shown to depend on input ``i`` only;
      ``None`` when that is not shown (the dependence analysis is conservative).
    zero_preserving: ``f(0) == 0`` exactly (``None`` when it cannot be decided).
    f0: ``f(0)`` (midpoints), shaped like the input; NaN where undefined (``log``).
    pathwise: the pathwise :class:`Finding`.
    expectation: the in-expectation :class:`Finding`.
    float_level: the :class:`FloatFinding`, or ``None`` when not computed.
  """

  function: str
  rate: float | None
  shape: tuple[int, ...]
  elementwise: bool | None
  zero_preserving: bool | None
  f0: np.ndarray
  pathwise: Finding
  expectation: Finding
  float_level: FloatFinding | None = None

  def __str__(self) -> str:
    rate = "every rate in (0, 1)" if self.rate is None else f"rate {self.rate!r}"
    zero = {True: "yes", False: "no", None: "undecided"}[self.zero_preserving]
    f0 = "undefined" if np.isnan(self.f0).all() else _fmt_vector(_uniform(self.f0))
    elementwise = {True: "yes", False: "no", None: "not shown"}[self.elementwise]
    lines = [
      f"{self.function}: dropout before vs after, for {rate} (input shape {self.shape})",
      f"  elementwise: {elementwise}",
      f"  f(0) = {f0}; f(0) == 0: {zero}",
      f"  pathwise: {self.pathwise}",
      f"  expectation: {self.expectation}",
    ]
    if self.float_level is not None:
      lines.append(f"  float level: {self.float_level}")
    return "\n".join(lines)

  def to_dict(self) -> dict[str, Any]:
    """A JSON-ready dict (non-finite floats as the strings ``"inf"``/``"nan"``)."""
    return {
      "function": self.function,
      "rate": self.rate,
      "shape": list(self.shape),
      "elementwise": self.elementwise,
      "zero_preserving": self.zero_preserving,
      "f0": _listify(self.f0),
      "pathwise": self.pathwise.to_dict(),
      "expectation": self.expectation.to_dict(),
      "float_level": None if self.float_level is None else self.float_level.to_dict(),
    }


def _uniform(values: np.ndarray) -> np.ndarray:
  """One value when every position holds the same one (an elementwise f's f(0))."""
  flat = np.asarray(values, dtype=np.float64).ravel()
  if flat.size and np.all((flat == flat[0]) | (np.isnan(flat) & np.isnan(flat[0]))):
    return flat[:1]
  return flat
