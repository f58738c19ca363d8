"""What ``python -m jdrop``'s subcommands share: argument types and a one-line-error parser."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


class Parser(argparse.ArgumentParser):
  def error(self, message: str) -> None:  # one readable line, exit status 2
    self.exit(2, f"{self.prog}: error: {message}\n")


def checked(parse: Callable[[str], Any], holds: Callable[[Any], bool], problem: str):
  """An argparse ``type``: ``parse`` the text, then require ``holds`` of the value.

  Either failure raises one line, ``"{problem}, got '{text}'"``.
  """

  def convert(text: str) -> Any:
    try:
      value = parse(text)
    except ValueError:
      value = None
    if value is None or not holds(value):
      raise argparse.ArgumentTypeError(f"{problem}, got {text!r}")
    return value

  return convert


def _finite(value: float) -> bool:
  return math.isfinite(value)


open_rate = checked(
  float, lambda v: 0.0 < v < 1.0, "rate must be a drop probability in the open interval (0, 1)"
)
closed_rate = checked(float, lambda v: 0.0 <= v <= 1.0, "rate must be a drop probability in [0, 1]")
positive_int = checked(int, lambda v: v > 0, "must be a positive integer")
finite = checked(float, _finite, "must be a finite float")
non_negative = checked(float, lambda v: _finite(v) and v >= 0, "must be a finite number >= 0")
