"""Helper of ``test_montecarlo_distributed.py``: one study on 1, 2 and 4 of this process's
devices, printed as one JSON line. Run it with 4 forced host devices::

  XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
    python tests/run_mc_devices.py
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from jdrop import montecarlo

X = np.linspace(-3.0, 3.0, 13)
STUDY = dict(rate=0.3, num_masks=10_007, chunk_size=32)  # 10_007: a partial last chunk


def study(devices) -> dict:
  out = montecarlo.compare_orders(
    jax.random.key(0), "tanh", jnp.asarray(X, jnp.float32), devices=devices, **STUDY
  )
  data = {f"{o}.{s}": np.asarray(getattr(getattr(out, o), s)).tolist() for o in ("pre", "post")
          for s in ("mean", "var", "stderr")}  # fmt: skip
  return data | {"mismatch_fraction": out.mismatch_fraction, "max_abs_diff": out.max_abs_diff}


if __name__ == "__main__":
  devices = jax.devices()
  print(json.dumps({n: study(devices[:n]) for n in (1, 2, 4) if n <= len(devices)}))
