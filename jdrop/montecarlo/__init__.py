"""Monte-Carlo studies of dropout before and after the activation, and exact references.

``compare_orders`` runs both orders on thousands to billions of masks with ``jit`` and
``vmap``, sharded over every device of every process; ``exact_moments``, ``gaussian_shift``
and ``variance_shift`` give the exact numbers to check them against. See
:mod:`jdrop._src.montecarlo`.
"""

from jdrop._src.montecarlo import MAX_ENUMERATED_SIZE as MAX_ENUMERATED_SIZE
from jdrop._src.montecarlo import Comparison as Comparison
from jdrop._src.montecarlo import Exact as Exact
from jdrop._src.montecarlo import Moments as Moments
from jdrop._src.montecarlo import OrderShifts as OrderShifts
from jdrop._src.montecarlo import Shift as Shift
from jdrop._src.montecarlo import compare_orders as compare_orders
from jdrop._src.montecarlo import default_rtol as default_rtol
from jdrop._src.montecarlo import dense_preactivations as dense_preactivations
from jdrop._src.montecarlo import exact_moments as exact_moments
from jdrop._src.montecarlo import gaussian_shift as gaussian_shift
from jdrop._src.montecarlo import initialize as initialize
from jdrop._src.montecarlo import load_digits as load_digits
from jdrop._src.montecarlo import variance_shift as variance_shift
