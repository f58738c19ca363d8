"""The README's Python examples run, so the front door stays true."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_python_examples():
  assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index):
  exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {})


def test_readme_quotes_the_committed_reports_short_answer():
  # The README quotes the committed full report's answer; regenerating the report without
  # updating the quote (or the other way round) would leave the front door saying something
  # the evidence no longer says.
  report = README.parent / "experiments" / "results" / "report" / "REPORT.md"
  answer = next(line for line in report.read_text().splitlines() if line.startswith("**Short"))
  assert f"> {answer}" in README.read_text().splitlines()
