"""pytest collects the pages' examples (``--doctest-glob``), not Sphinx's configuration."""

collect_ignore = ["conf.py"]
