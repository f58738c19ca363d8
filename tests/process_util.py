"""Helpers for tests that run jdrop in a child process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def finish(proc: subprocess.Popen, limit: float, what: str) -> tuple[int, str, str]:
  """``(returncode, stdout, stderr)`` of ``proc``; fails the test (killing it) after ``limit`` s."""
  try:
    out, err = proc.communicate(timeout=limit)
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail(f"{what} within {limit} s: {proc.communicate()}")
  return proc.returncode, out, err


def announce_ready() -> None:
  """Writes this process's id to ``$JDROP_TEST_READY`` atomically (a temporary file renamed into
  place), so a test that sees the file never reads it half-written."""
  ready = Path(os.environ["JDROP_TEST_READY"])
  partial = ready.with_name(ready.name + ".partial")
  partial.write_text(str(os.getpid()))
  partial.rename(ready)
