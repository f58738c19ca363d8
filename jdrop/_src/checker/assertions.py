"""Assertions for users' tests: the checker's verdict, or a failure that says why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jdrop._src import errors
from jdrop._src.checker.api import check
from jdrop._src.checker.verdict import Finding
from jdrop._src.checker.verdict import Verdict

MODES = ("pathwise", "expectation")


def _verdict(
  fn: str, f: Any, rate: float | None, mode: str, shape: Sequence[int] | None
) -> tuple[Verdict, Finding]:
  if mode not in MODES:
    raise errors.value_error(
      fn, "mode", "must be 'pathwise' or 'expectation'", mode, "Pass e.g. mode='pathwise'."
    )
  verdict = check(f, rate=rate, shape=shape, float_level=False)
  return verdict, getattr(verdict, mode)


def _question(verdict: Verdict, mode: str) -> str:
  rate = "every rate" if verdict.rate is None else f"rate {verdict.rate!r}"
  return f"{verdict.function}: dropout before and after it, {mode}, at {rate}"


def assert_commutes(
  f: Any, *, rate: float | None = None, mode: str = "pathwise", shape: Sequence[int] | None = None
) -> Verdict:
  """Fails unless :func:`jdrop.check` *proves* that the two orders agree.

  Args:
    f: what :func:`jdrop.check` accepts (a callable, a registry name, a module).
    rate: ``None`` for every rate in (0, 1), or one rate.
    mode: ``"pathwise"`` (every mask) or ``"expectation"``.
    shape: the input shape to trace on (default ``(4,)``).

  Returns:
    The verdict, for further checks.

  Raises:
    AssertionError: with the counterexample when refuted, or the reason when unknown.

  Examples:
    >>> import jax
    >>> from jdrop.testing import assert_commutes
    >>> _ = assert_commutes(jax.nn.relu)
    >>> _ = assert_commutes(lambda x: 2 * x + 1, mode="expectation")
  """
  verdict, finding = _verdict("jdrop.testing.assert_commutes", f, rate, mode, shape)
  if finding.status != "proved":
    raise AssertionError(f"{_question(verdict, mode)}: not proved to commute: {finding}")
  return verdict


def assert_not_commutes(
  f: Any, *, rate: float | None = None, mode: str = "pathwise", shape: Sequence[int] | None = None
) -> Verdict:
  """Fails unless :func:`jdrop.check` *refutes* commutation with a certified counterexample.

  Arguments as in :func:`assert_commutes`.

  Examples:
    >>> import jax
    >>> from jdrop.testing import assert_not_commutes
    >>> v = assert_not_commutes(jax.nn.gelu)
    >>> v.pathwise.counterexample.rate
    0.5
  """
  verdict, finding = _verdict("jdrop.testing.assert_not_commutes", f, rate, mode, shape)
  if finding.status != "refuted":
    raise AssertionError(f"{_question(verdict, mode)}: not refuted: {finding}")
  return verdict
