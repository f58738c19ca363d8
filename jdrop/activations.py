"""The activation zoo: every :mod:`jax.nn` activation plus PyTorch's and Keras' extras.

Look activations up by name with :func:`get` (``get("relu") is jax.nn.relu``), list them with
:func:`names`, describe one with :func:`info` and add your own with :func:`register`. The
functions below are the ones :mod:`jax.nn` lacks, written with PyTorch's (or Keras')
conventions.
"""

from jdrop._src.activations import Activation as Activation
from jdrop._src.activations import abs as abs
from jdrop._src.activations import exponential as exponential
from jdrop._src.activations import get as get
from jdrop._src.activations import hard_shrink as hard_shrink
from jdrop._src.activations import info as info
from jdrop._src.activations import names as names
from jdrop._src.activations import parametric_hard_tanh as parametric_hard_tanh
from jdrop._src.activations import parametric_relu as parametric_relu
from jdrop._src.activations import parametric_softplus as parametric_softplus
from jdrop._src.activations import prelu as prelu
from jdrop._src.activations import quick_gelu as quick_gelu
from jdrop._src.activations import register as register
from jdrop._src.activations import rrelu as rrelu
from jdrop._src.activations import soft_shrink as soft_shrink
from jdrop._src.activations import softmin as softmin
from jdrop._src.activations import tanh_shrink as tanh_shrink
from jdrop._src.activations import threshold as threshold
from jdrop._src.activations import unregister as unregister
