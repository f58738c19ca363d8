"""The dropout sites of a whole model: found, audited and moved by jaxpr transforms."""

from jdrop._src.audit.api import Audit as Audit
from jdrop._src.audit.api import Estimate as Estimate
from jdrop._src.audit.api import Site as Site
from jdrop._src.audit.api import audit as audit
from jdrop._src.audit.api import reorder as reorder
