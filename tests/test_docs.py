"""The API reference lists every public name, and the site's pages are where the build and the
doctests look for them (the build itself, `python -m sphinx -W`, runs in CI)."""

import importlib
import pathlib
import re
import types

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
MODULES = {
  "jdrop": "jdrop.md",
  "jdrop.flax": "flax.md",
  "jdrop.nnx": "nnx.md",
  "jdrop.checker": "checker.md",
  "jdrop.montecarlo": "montecarlo.md",
  "jdrop.activations": "activations.md",
  "jdrop.testing": "testing.md",
}


def public_names(module: types.ModuleType) -> set[str]:
  """What users of the module see: names without a leading underscore, submodules aside
  (each has a page of its own)."""
  return {
    name
    for name, value in vars(module).items()
    if not name.startswith("_") and not isinstance(value, types.ModuleType)
  }


def listed_names(text: str) -> list[str]:
  """The entries of a page's ``autosummary`` tables."""
  tables = re.findall(r"\.\. autosummary::\n(?:   :.*\n)*\n((?:   \S.*\n)+)", text)
  return [line.strip() for table in tables for line in table.splitlines()]


def problems(module_name: str, text: str) -> list[str]:
  """What is wrong with the API page ``text`` of ``module_name``; empty when nothing is."""
  listed = listed_names(text)
  public = public_names(importlib.import_module(module_name))
  found = []
  if f".. automodule:: {module_name}\n" not in text:
    found.append(f"no automodule for {module_name}")
  if len(listed) != len(set(listed)):
    found.append("a name listed twice")
  if extra := sorted(set(listed) - public):
    found.append(f"lists {extra}, which {module_name} does not have")
  if missing := sorted(public - set(listed)):
    found.append(f"misses {missing} of {module_name}")
  return found


@pytest.mark.parametrize(("module_name", "page"), MODULES.items())
def test_every_public_name_has_an_entry(module_name, page):
  assert problems(module_name, (DOCS / "api" / page).read_text()) == []


def test_a_missing_or_unknown_name_is_found():
  text = (DOCS / "api" / "flax.md").read_text()
  assert len(listed_names(text)) == 5
  assert problems("jdrop.flax", text.replace("   DropPath\n", "")) == [
    "misses ['DropPath'] of jdrop.flax"
  ]
  assert problems("jdrop.flax", text.replace("   DropPath\n", "   Drop\n")) == [
    "lists ['Drop'], which jdrop.flax does not have",
    "misses ['DropPath'] of jdrop.flax",
  ]


def test_every_api_page_is_in_the_index():
  index = (DOCS / "index.md").read_text()
  pages = sorted(p.name for p in (DOCS / "api").glob("*.md"))
  assert pages == sorted(MODULES.values())
  for page in pages:
    assert f"\napi/{page.removesuffix('.md')}\n" in index
