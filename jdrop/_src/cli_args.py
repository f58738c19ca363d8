"""What ``python -m jdrop``'s subcommands share: argument types, a one-line-error parser, and
SIGINT/SIGTERM as an exception."""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import signal
import threading
from collections.abc import Callable
from collections.abc import Iterator
from typing import Any


class Parser(argparse.ArgumentParser):
  """An argument parser whose errors are one line, and that reads ``-1e-3`` as a number."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    # argparse takes "-1e-3" (or "-inf") for an option, so --x -1e-3 failed with "expected
    # at least one argument"; every option here starts with a letter.
    self._negative_number_matcher = re.compile(
      r"^-((\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|inf|infinity|nan)$", re.IGNORECASE
    )

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
non_negative = checked(float, lambda v: _finite(v) and v >= 0, "must be a finite number >= 0")
seed = checked(int, lambda v: -(2**63) <= v < 2**63, "must be an integer in [-2**63, 2**63)")


def one_line(err: BaseException | str) -> str:
  """An error's text on one line (whitespace runs, newlines included, become one space)."""
  return " ".join(str(err).split())


class Interrupted(KeyboardInterrupt):
  """SIGINT or SIGTERM arrived (see :func:`interrupts`); ``status`` is the exit status."""

  def __init__(self, signum: int):
    super().__init__(signal.Signals(signum).name)
    self.signum = signum

  @property
  def status(self) -> int:
    """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, as a shell reports them."""
    return 128 + self.signum


class _Signals:
  """The state of :func:`interrupts` (one per process: signals go to the main thread)."""

  fired = False  # an Interrupted was raised: further signals are ignored
  held: int | None = None  # a signal that arrived inside deferred()
  depth = 0  # how many deferred() blocks are open


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
  """Raises :class:`Interrupted` in the main thread on the first SIGINT or SIGTERM.

  SIGTERM (what ``kill``, ``timeout`` and CI send) is then handled like Ctrl-C: ``finally``
  blocks clean up. Further signals are ignored until the block ends, so that the clean-up
  itself is not interrupted; a signal that was ignored when the block began (SIGINT of a
  background job) stays ignored. Outside the main thread this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _Signals.fired, _Signals.held = False, None

  def handler(signum: int, frame: Any) -> None:
    if _Signals.fired or _Signals.held is not None:
      return
    if _Signals.depth:
      _Signals.held = signum
      return
    _Signals.fired = True
    raise Interrupted(signum)

  previous = {}
  for signum in (signal.SIGINT, signal.SIGTERM):
    if signal.getsignal(signum) is not signal.SIG_IGN:
      previous[signum] = signal.signal(signum, handler)
  try:
    yield
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
  """Inside :func:`interrupts`, holds SIGINT and SIGTERM back until the block ends, so that
  it runs whole (the last, atomic step of writing an output); then raises
  :class:`Interrupted` for a signal that arrived meanwhile. The block's own exception, if it
  raises one, wins. Outside the main thread (where no signal arrives) this does nothing: a
  worker thread's block must not hold back the main thread's signals."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _Signals.depth += 1
  try:
    yield
  finally:
    _Signals.depth -= 1
  if _Signals.depth == 0 and _Signals.held is not None:
    signum, _Signals.held = _Signals.held, None
    _Signals.fired = True
    raise Interrupted(signum)
