"""The studies behind ``python -m jdrop report``: each measures one thing the order changes.

Every study module exposes the same four names, so the report can run them in turn:

* ``Config``: a frozen dataclass of the study's parameters; ``DEFAULT`` is the embedded
  configuration the report runs (minutes on 2 CPU cores) and ``FULL`` the full-size run
  that ``experiments/`` commits;
* ``run(config, *, progress=None) -> dict``: the raw results, JSON-serialisable;
  ``progress(done, total, what)`` is called as work completes;
* ``figures(results, out_dir) -> list[str]``: writes PNG figures (matplotlib, Agg backend)
  and returns their file names, relative to ``out_dir``;
* ``section(results, figures) -> str``: the study's Markdown section of REPORT.md.

``literature`` is not a study: its ``section(results)`` sets published results beside the
numbers of the studies that ran.
"""
