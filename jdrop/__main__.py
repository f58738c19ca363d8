"""``python -m jdrop``: see :mod:`jdrop._src.cli`."""

import sys

from jdrop._src.cli import main

if __name__ == "__main__":
  sys.exit(main())
