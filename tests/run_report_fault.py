"""Helper of ``test_report_signals.py``: ``python -m jdrop report`` with fake studies that do
no work, so that a test can signal it at a known point::

  python tests/run_report_fault.py MODE REPORT-ARGUMENTS...

MODE ``wait``: the first study writes this process's id to the file named by
``$JDROP_TEST_READY``, then sleeps for a minute; ``quick``: no study waits.
"""

from __future__ import annotations

import sys
import time
import types

from process_util import announce_ready

from jdrop._src import cli
from jdrop._src import report


def study(name: str, wait: bool) -> types.SimpleNamespace:
  def run(config, *, progress=None):
    if wait:
      announce_ready()
      time.sleep(60)
    return {"config": {}, "value": 1.0}

  def figures(results, out_dir):
    (out_dir / f"{name}.png").write_bytes(b"\x89PNG fake")
    return [f"{name}.png"]

  return types.SimpleNamespace(
    DEFAULT=1, FULL=1, run=run, figures=figures, section=lambda results, figures: f"## {name}\n"
  )


if __name__ == "__main__":
  wait = sys.argv[1] == "wait"
  studies = {name: study(name, wait and name == "variance") for name in report.STUDIES}
  report._module = studies.__getitem__
  report.literature = types.SimpleNamespace(section=lambda results: "")  # reads real results
  sys.argv = ["jdrop", "report", *sys.argv[2:]]
  cli.entry()
