"""Flax linen modules: thin wrappers around jdrop's pure functions.

:class:`Dropout` is a drop-in replacement for ``flax.linen.Dropout``: same fields, same call,
same rng use, the same numbers.
"""

from jdrop._src.linen import ActivationDropout as ActivationDropout
from jdrop._src.linen import AlphaDropout as AlphaDropout
from jdrop._src.linen import Dropout as Dropout
from jdrop._src.linen import DropPath as DropPath
from jdrop._src.linen import GaussianDropout as GaussianDropout
