"""One place that formats jdrop's error messages.

Every user-facing error names the public function, the argument, the bad value
and the fix, in that order, so messages read the same across the library::

    jdrop.dropout: `rate` must be a drop probability in [0, 1], got 1.5. Pass the
    probability of *dropping* a unit, e.g. rate=0.1.
"""

from __future__ import annotations


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
