"""One place that formats jdrop's error messages, and the number checks many functions share.

Every user-facing error names the public function, the argument, the bad value
and the fix, in that order, so messages read the same across the library::

    jdrop.dropout: `rate` must be a drop probability in [0, 1], got 1.5. Pass the
    probability of *dropping* a unit, e.g. rate=0.1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class Described(str):
  """A description of a bad value (``"an array of dtype int32"``), shown without quotes."""

  def __repr__(self) -> str:
    return str(self)


def message(fn: str, arg: str, problem: str, value: object, fix: str) -> str:
  """Returns ``"{fn}: `{arg}` {problem}, got {value!r}. {fix}"``.

  Wrap a description of the value (rather than the value) in :class:`Described`.
  """
  return f"{fn}: `{arg}` {problem}, got {value!r}. {fix}"


def value_error(fn: str, arg: str, problem: str, value: object, fix: str) -> ValueError:
  return ValueError(message(fn, arg, problem, value, fix))


def type_error(fn: str, arg: str, problem: str, value: object, fix: str) -> TypeError:
  return TypeError(message(fn, arg, problem, value, fix))


def short(value: object, limit: int = 80) -> Described:
  """``repr(value)``, cut to ``limit`` characters, for quoting a bad value in a message."""
  text = repr(value)
  return Described(text if len(text) <= limit else text[: limit - 3] + "...")


def check_count(fn: str, arg: str, value: Any, *, upper: int, example: str) -> int:
  """``value`` as a Python int in [1, upper], or a clear error."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise type_error(
      fn, arg, "must be a positive integer", short(value), f"Pass e.g. {arg}={example}."
    )
  if not 1 <= value <= upper:
    raise value_error(
      fn,
      arg,
      f"must be a positive integer of at most {upper}",
      int(value),
      f"Pass e.g. {arg}={example}.",
    )
  return int(value)


def check_real(fn: str, arg: str, value: Any, *, positive: bool = False) -> float:
  """``value`` as a finite (positive, or non-negative) Python float, or a clear error."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
    raise type_error(fn, arg, "must be a real number", short(value), f"Pass e.g. {arg}=1e-6.")
  number = float(value)
  if not math.isfinite(number) or number < 0 or (positive and number == 0):
    kind = "positive" if positive else "non-negative"
    raise value_error(fn, arg, f"must be a finite {kind} number", value, f"Pass e.g. {arg}=1e-6.")
  return number
