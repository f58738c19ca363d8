"""Monte-Carlo studies of the two orders of dropout, and the exact references they check.

One module per idea:

* :mod:`.engine`: :func:`compare_orders`, both orders on many masks, chunked and sharded
  over every device of every process;
* :mod:`.exact`: :func:`exact_moments`, the same statistics in closed form (elementwise f) or
  summed over every mask (small non-elementwise f);
* :mod:`.shifts`: Gaussian pre-activations and layers (:func:`gaussian_shift`,
  :func:`variance_shift`, :func:`dense_preactivations`);
* :mod:`.common`: the result types, the argument checks and the tolerances they share.

The multi-process start-up (:func:`initialize`) lives in :mod:`jdrop._src.distributed`, which
the ``mc`` command uses too; the digits loader in :mod:`jdrop._src.studies.data`.
"""

from jdrop._src.distributed import MAX_TIMEOUT as MAX_TIMEOUT
from jdrop._src.distributed import address_problem as address_problem
from jdrop._src.distributed import initialize as initialize
from jdrop._src.distributed import parse_address as parse_address
from jdrop._src.distributed import rendezvous as rendezvous
from jdrop._src.montecarlo.common import MAX_MASKS as MAX_MASKS
from jdrop._src.montecarlo.common import Comparison as Comparison
from jdrop._src.montecarlo.common import Exact as Exact
from jdrop._src.montecarlo.common import Moments as Moments
from jdrop._src.montecarlo.common import OrderShifts as OrderShifts
from jdrop._src.montecarlo.common import Shift as Shift
from jdrop._src.montecarlo.common import default_rtol as default_rtol
from jdrop._src.montecarlo.common import representable as representable
from jdrop._src.montecarlo.engine import compare_orders as compare_orders
from jdrop._src.montecarlo.exact import MAX_ENUMERATED_SIZE as MAX_ENUMERATED_SIZE
from jdrop._src.montecarlo.exact import exact_moments as exact_moments
from jdrop._src.montecarlo.shifts import dense_preactivations as dense_preactivations
from jdrop._src.montecarlo.shifts import gaussian_shift as gaussian_shift
from jdrop._src.montecarlo.shifts import variance_shift as variance_shift
from jdrop._src.studies import data as _data

load_digits = _data.digit_pixels
