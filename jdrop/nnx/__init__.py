"""Flax NNX modules: thin wrappers around jdrop's pure functions.

:class:`Dropout` is a drop-in replacement for ``flax.nnx.Dropout`` and a subclass of it: same
constructor, same call, same use of ``nnx.Rngs``, the same exceptions (a rate outside [0, 1]
is the one intended difference: jdrop refuses it, Flax returns zeros or a wrong scale). Every
dropout output is bit-identical to Flax's in float32 and a jitted model equal to rounding, as
stated in :mod:`jdrop.flax`.
"""

from jdrop._src.nnx import ActivationDropout as ActivationDropout
from jdrop._src.nnx import AlphaDropout as AlphaDropout
from jdrop._src.nnx import Dropout as Dropout
from jdrop._src.nnx import DropPath as DropPath
from jdrop._src.nnx import GaussianDropout as GaussianDropout
