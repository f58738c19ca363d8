"""What machine a result was measured on, for results files and reports."""

from __future__ import annotations

import platform
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")


def processor(cpuinfo: Path = CPUINFO) -> str:
  """The CPU's model name: the first ``model name`` of ``cpuinfo`` (Linux), else
  ``platform.processor()`` (which on Linux is often only ``x86_64`` or empty), else
  ``platform.machine()``, else ``"unknown processor"``.

  Example:
    >>> isinstance(processor(), str) and processor() != ""
    True
  """
  try:
    lines = cpuinfo.read_text().splitlines()
  except OSError:
    lines = []
  for line in lines:
    if line.startswith("model name") and ":" in line:
      return line.split(":", 1)[1].strip()
  return platform.processor() or platform.machine() or "unknown processor"
