"""``python -m jdrop``: see :mod:`jdrop._src.cli`."""

from jdrop._src.cli import entry

if __name__ == "__main__":
  entry()
