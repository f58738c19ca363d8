"""Helper of ``test_mc_faults.py``: ``python -m jdrop mc`` with a fault injected where the
study runs (in this process, or in the supervised child of a multi-process run)::

  python tests/run_mc_fault.py POINT MC-ARGUMENTS...

POINT is ``handshake`` (SIGKILL after the rendezvous, before ``jax.distributed.initialize``),
``running`` (SIGKILL at the first progress report, in the middle of the computation),
``abort`` (``jax.distributed.initialize`` calls ``abort()``, as JAX's C++ runtime does on a
fatal error), ``hang`` (the computation writes this process's id to the file named by
``$JDROP_TEST_READY`` and sleeps for a minute) or ``none``.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from process_util import announce_ready

from jdrop._src import cli
from jdrop._src import cli_mc
from jdrop._src import distributed
from jdrop._src import montecarlo


def die(*args, **kwargs) -> None:
  os.kill(os.getpid(), signal.SIGKILL)


def hang(*args, **kwargs) -> None:
  announce_ready()
  time.sleep(60)


def inject(point: str) -> None:
  if point == "handshake":
    rendezvous = distributed.rendezvous

    def rendezvous_then_die(*args, **kwargs):
      rendezvous(*args, **kwargs)
      die()

    distributed.rendezvous = rendezvous_then_die
  elif point in ("running", "hang"):
    compare_orders = montecarlo.compare_orders

    def compare_orders_with_fault(*args, progress, **kwargs):
      return compare_orders(*args, progress=die if point == "running" else hang, **kwargs)

    montecarlo.compare_orders = compare_orders_with_fault
  elif point == "abort":
    distributed.jax.distributed.initialize = lambda *args, **kwargs: os.abort()


if __name__ == "__main__":
  if sys.argv[1] == "--child":
    inject(sys.argv[2])
    sys.exit(cli_mc.worker())
  inject(sys.argv[1])  # a single-process run computes here
  cli_mc.WORKER = (sys.executable, __file__, "--child", sys.argv[1])
  sys.argv = ["jdrop", "mc", *sys.argv[2:]]
  cli.entry()
