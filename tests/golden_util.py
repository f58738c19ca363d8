"""Comparison of a rendered text with its reviewed copy in ``tests/golden/``."""

from __future__ import annotations

import difflib
import os
import pathlib

import pytest

GOLDEN = pathlib.Path(__file__).parent / "golden"


def check(name: str, text: str, what: str) -> None:
  """Fails with the diff where ``text`` is not ``tests/golden/NAME``, the copy read by hand.

  After a deliberate change, read the diff, then rewrite the copy by running the test with
  ``JDROP_UPDATE_GOLDEN=1``.
  """
  path = GOLDEN / name
  if os.environ.get("JDROP_UPDATE_GOLDEN"):
    path.write_text(text, encoding="utf-8")
  expected = path.read_text(encoding="utf-8")
  if text != expected:
    diff = difflib.unified_diff(expected.splitlines(), text.splitlines(), "reviewed", "now")
    pytest.fail(f"{what} changed:\n" + "\n".join(list(diff)[:80]))
