"""Prints one command of the README's Quick start block: `main` (first) or `test` (second).

Fails loudly if the block does not hold exactly two commands, so the README's
promise ("one fenced block of exactly two commands") is checked by CI.
"""

import pathlib
import re
import sys

text = pathlib.Path(__file__).resolve().parent.parent.joinpath("README.md").read_text()
section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
if section is None:
  sys.exit("README.md has no '## Quick start' section")
blocks = re.findall(r"```[a-z]*\n(.*?)```", section.group(1), re.S)
if len(blocks) != 1:
  sys.exit(f"Quick start must hold one fenced block, found {len(blocks)}")
commands = [line for line in blocks[0].splitlines() if line.strip()]
if len(commands) != 2:
  sys.exit(f"Quick start block must hold exactly two commands, found {len(commands)}")
print(commands[{"main": 0, "test": 1}[sys.argv[1]]])
