"""jdrop: dropout before or after the activation, and when the order does not matter.

Public names only; the implementation lives in ``jdrop._src``.
"""

import types as _types
import typing as _typing

from jdrop import activations as activations
from jdrop import checker as checker
from jdrop._src.audit import Audit as Audit
from jdrop._src.audit import Estimate as Estimate
from jdrop._src.audit import Site as Site
from jdrop._src.audit import audit as audit
from jdrop._src.audit import reorder as reorder
from jdrop._src.checker.api import check as check
from jdrop._src.dropout import alpha_dropout as alpha_dropout
from jdrop._src.dropout import apply_mask as apply_mask
from jdrop._src.dropout import drop_path as drop_path
from jdrop._src.dropout import dropout as dropout
from jdrop._src.dropout import gaussian_dropout as gaussian_dropout
from jdrop._src.dropout import selu_constants as selu_constants
from jdrop._src.masks import keep_mask as keep_mask
from jdrop._src.order import Orders as Orders
from jdrop._src.order import activation_dropout as activation_dropout
from jdrop._src.order import both_orders as both_orders

__version__ = "0.1.0"

if _typing.TYPE_CHECKING:  # imported on first use (below); type checkers see them as submodules
  from jdrop import flax as flax
  from jdrop import montecarlo as montecarlo
  from jdrop import nnx as nnx
  from jdrop import testing as testing


def __getattr__(name: str) -> _types.ModuleType:
  """Imports the Flax wrappers, the testing helpers and the Monte-Carlo engine on first use.

  ``jdrop.flax``, ``jdrop.nnx`` and ``jdrop.testing`` pull in Flax or Hypothesis, and
  ``jdrop.montecarlo`` is only needed for studies, so ``import jdrop`` alone stays light.
  """
  if name in ("flax", "nnx", "testing", "montecarlo"):
    import importlib

    return importlib.import_module(f"jdrop.{name}")
  raise AttributeError(f"module 'jdrop' has no attribute {name!r}")
