"""Sphinx configuration: `python -m sphinx -W -b html docs docs/_build/html` (the `docs` extra).

The README is the source of the narrative pages: at build time its intro is written to
`_readme/intro.inc` and each of its `## ` sections to `_readme/<slug>.md` (ignored by git),
with its headings raised one level and its links made to work from there, so the site and
the README cannot drift. The API pages list
every public name (tests/test_docs.py checks that none is missing) and autosummary writes a
page for each from its docstring.
"""

from __future__ import annotations

import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document this checkout, installed or not

project = "jdrop"
author = "the jdrop authors"
copyright = "the jdrop authors, Apache-2.0"

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]
html_theme = "alabaster"
html_title = "jdrop"

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields, not a second description of each member
myst_heading_anchors = 3


# ----------------------------------------------------------------------------
# The README's sections as pages.


def slug(title: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def readme_pages(text: str) -> dict[str, tuple[str, str]]:
  """``{slug: (title, body)}`` for the README's intro (slug "intro") and each ``## `` section."""
  parts = re.split(r"^## (.+)\n", text, flags=re.M)
  intro = parts[0].split("\n", 1)[1]  # without the "# jdrop" title
  pages = {"intro": ("jdrop", intro)}
  for title, body in zip(parts[1::2], parts[2::2], strict=True):
    pages[slug(title)] = (title, body)
  return pages


def fix_links(body: str, slugs: set[str], *, up: str) -> str:
  """Links that work from a page ``up`` below the repository root (``"../"`` for ``docs/``):
  sections are pages, the report is a page, images are found where they are, other files of
  the repository are named (they are not pages)."""
  here = "" if up == "../" else "../"  # from docs/_readme/ to docs/

  def link(match: re.Match) -> str:
    bang, text, target = match.group(1), match.group(2), match.group(3)
    if re.match(r"[a-z]+://", target):
      return match.group(0)
    if target.startswith("#"):
      page = f"{here}_readme/{target[1:]}.md" if here == "" else f"{target[1:]}.md"
      return f"[{text}]({page})" if target[1:] in slugs else match.group(0)
    if target == "experiments/results/report/REPORT.md":
      return f"[{text}]({here}report.md)"
    if bang:
      return f"![{text}]({up}{target})"
    return text if text.strip("`") == target else f"{text} (`{target}`)"

  return re.sub(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)", link, body)


def write_readme_pages() -> None:
  pages = readme_pages((ROOT / "README.md").read_text())
  out = DOCS / "_readme"
  out.mkdir(exist_ok=True)
  for name, (title, body) in pages.items():
    # A section's ### headings become ## under the page's # title.
    # The intro is included by docs/index.md, so its links start from docs/.
    up = "../" if name == "intro" else "../../"
    body = re.sub(r"^#(#+) ", r"\1 ", fix_links(body, set(pages), up=up), flags=re.M)
    text = f"# {title}\n{body}" if name != "intro" else body
    # The intro is no page of its own (it is not .md): index.md includes it.
    path = out / ("intro.inc" if name == "intro" else f"{name}.md")
    if not path.exists() or path.read_text() != text:  # unchanged files are not rebuilt
      path.write_text(text)


write_readme_pages()
