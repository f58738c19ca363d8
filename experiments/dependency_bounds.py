"""Runs a subset of the tests against the oldest and the newest dependency versions jdrop claims.

For each of ``oldest`` and ``newest`` it makes a fresh virtual environment and installs
``-e .[test]`` there (the tests import this checkout) with every direct dependency of
``pyproject.toml`` (core and the test extras) pinned at its lower bound (``oldest``) or left
to pip's newest allowed version (``newest``), then runs ``SUBSET`` with pytest. Transitive
dependencies are whatever pip picks. It writes the versions, the pytest summary and the time
to ``experiments/results/dependency-bounds.md``. It needs PyPI; about 5 minutes per
environment on 2 cores.

  python experiments/dependency_bounds.py                 # both
  python experiments/dependency_bounds.py --which oldest  # one
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUBSET = [
  "tests/test_flax.py",
  "tests/test_nnx.py",
  "tests/flax_upstream",
  "tests/test_masks.py",
  "tests/test_contract.py",
  "tests/test_order.py",
  "tests/test_activations.py",
  "tests/test_checker.py",
  "tests/test_montecarlo.py",
  "tests/test_docs.py",
  "jdrop",
]
SHOWN = ["jax", "jaxlib", "flax", "numpy", "python-flint", "optax", "hypothesis", "scipy"]


def requirements(which: str) -> list[str]:
  """The direct dependencies of ``.[test]``, pinned at their lower bounds for ``oldest``."""
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  extras = project["optional-dependencies"]
  reqs, todo = list(project["dependencies"]), ["test"]
  while todo:
    for req in extras[todo.pop()]:
      if req.startswith("jdrop["):
        todo += req[len("jdrop[") : -1].split(",")
      else:
        reqs.append(req)
  if which == "newest":
    return reqs
  pinned = []
  for req in reqs:
    match = re.match(r"([A-Za-z0-9_.-]+)>=([^,]+)", req)
    if match is None:
      raise SystemExit(f"dependency_bounds: no lower bound in {req!r}; give it one")
    pinned.append(f"{match.group(1)}=={match.group(2)}")
  return pinned


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
  print("+", " ".join(cmd), flush=True)
  return subprocess.run(cmd, check=False, text=True, capture_output=True, **kwargs)


def one(which: str) -> str:
  with tempfile.TemporaryDirectory(prefix=f"jdrop-{which}-") as tmp:
    venv = pathlib.Path(tmp) / "venv"
    run([sys.executable, "-m", "venv", str(venv)]).check_returncode()
    python = str(venv / "bin" / "python")
    reqs = requirements(which)
    install = run(
      [python, "-m", "pip", "install", "-q", "--prefer-binary", "-e", ".[test]", *reqs],
      cwd=ROOT,
    )
    if install.returncode:
      errors = [line for line in install.stderr.splitlines() if "ignored" not in line]
      text = "\n".join(errors)[-3000:]
      return f"## {which}\n\npip could not install `{' '.join(reqs)}`:\n\n```\n{text}\n```\n"
    versions = run([python, "-m", "pip", "list", "--format=freeze"]).stdout
    shown = [line for line in versions.splitlines() if line.split("==")[0].lower() in SHOWN]
    start = time.monotonic()
    # The checkout's code (pytest puts the repository first on the path) with these versions.
    tests = run(
      [python, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--rootdir", str(ROOT)]
      + [str(ROOT / path) for path in SUBSET],
      cwd=tmp,
    )
    seconds = time.monotonic() - start
    summary = [
      line for line in tests.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)
    ]
    failures = [line for line in tests.stdout.splitlines() if line.startswith("FAILED")]
    lines = [
      f"## {which}",
      "",
      f"Pinned: `{' '.join(reqs)}`" if which == "oldest" else f"Allowed: `{' '.join(reqs)}`",
      "",
      f"Installed: {', '.join(shown)}",
      "",
      f"pytest (exit {tests.returncode}, {seconds:.0f} s): `{summary[-1] if summary else '?'}`",
    ]
    if failures:
      lines += ["", "```", *failures[:40], "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--which", nargs="+", choices=["oldest", "newest"], default=None)
  parser.add_argument("--out", default=str(ROOT / "experiments/results/dependency-bounds.md"))
  args = parser.parse_args()
  sections = [one(which) for which in args.which or ["oldest", "newest"]]
  head = (
    "# Oldest and newest dependencies\n\n"
    f"`python experiments/dependency_bounds.py`, {datetime.date.today()}, Python"
    f" {platform.python_version()}, {platform.machine()}. Tests: `{' '.join(SUBSET)}`.\n"
  )
  text = head + "\n" + "\n".join(sections)
  pathlib.Path(args.out).write_text(text)
  print(text)


if __name__ == "__main__":
  main()
