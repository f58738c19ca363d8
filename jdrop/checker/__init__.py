"""The symbolic commutation checker: :func:`check` and the types of its verdict.

``jdrop.check`` is the same function as :func:`jdrop.checker.check`.
"""

from jdrop._src.checker.api import check as check
from jdrop._src.checker.verdict import Counterexample as Counterexample
from jdrop._src.checker.verdict import DtypeFinding as DtypeFinding
from jdrop._src.checker.verdict import Finding as Finding
from jdrop._src.checker.verdict import FloatFinding as FloatFinding
from jdrop._src.checker.verdict import Verdict as Verdict
