"""Helpers for tests that run jdrop in a child process."""

from __future__ import annotations

import subprocess

import pytest


def finish(proc: subprocess.Popen, limit: float, what: str) -> tuple[int, str, str]:
  """``(returncode, stdout, stderr)`` of ``proc``; fails the test (killing it) after ``limit`` s."""
  try:
    out, err = proc.communicate(timeout=limit)
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail(f"{what} within {limit} s: {proc.communicate()}")
  return proc.returncode, out, err
