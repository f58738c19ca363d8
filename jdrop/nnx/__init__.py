"""Flax NNX modules: thin wrappers around jdrop's pure functions.

:class:`Dropout` is a drop-in replacement for ``flax.nnx.Dropout``: same constructor, same
call, same use of ``nnx.Rngs``, the same numbers.
"""

from jdrop._src.nnx import ActivationDropout as ActivationDropout
from jdrop._src.nnx import AlphaDropout as AlphaDropout
from jdrop._src.nnx import Dropout as Dropout
from jdrop._src.nnx import DropPath as DropPath
from jdrop._src.nnx import GaussianDropout as GaussianDropout
