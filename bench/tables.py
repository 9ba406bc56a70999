"""Measured tables in README.md and docs/ are written by the bench that measures them (issue 15).

A markdown file marks a table's place with a pair of comments; everything between them belongs to the bench:

    <!-- table:lineage -->
    (replaced on every run)
    <!-- /table:lineage -->

``publish`` puts the table there with a last line naming the command that wrote it, so every number in the
docs says how to reproduce it. A bench calls it once per table after writing its results.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

WRITTEN_BY = "Written by `{command}`."
_OPENING = "<!-- table:{name} -->"
_CLOSING = "<!-- /table:{name} -->"
_ANY_BLOCK = re.compile(r"<!-- table:([\w.-]+) -->(.*?)<!-- /table:\1 -->", re.DOTALL)


def publish(doc: Path, name: str, table: str, command: str) -> None:
    """Replace the contents of block ``name`` in ``doc`` by ``table`` and the line naming ``command``.

    Args:
        doc: the markdown file holding the block.
        name: the block's name, as in ``<!-- table:NAME -->``.
        table: the markdown to put in the block (a table, optionally with a sentence or two around it).
        command: the command line that measured it, e.g. ``.venv/bin/python bench/lineage.py``.

    Raises:
        ValueError: the file has no block of that name, more than one, or a closing comment before its opening.
    """
    text = doc.read_text(encoding="utf-8")
    opening, closing = _OPENING.format(name=name), _CLOSING.format(name=name)
    if text.count(opening) != 1 or text.count(closing) != 1:
        raise ValueError(
            f"{doc}: expected one '{opening}' ... '{closing}' block, found {text.count(opening)} opening and "
            f"{text.count(closing)} closing comments; add the block where the table belongs"
        )
    start, end = text.index(opening) + len(opening), text.index(closing)
    if end < start:
        raise ValueError(f"{doc}: '{closing}' comes before '{opening}'")
    body = f"\n{table.strip()}\n\n{WRITTEN_BY.format(command=command)}\n"
    _replace_file(doc, text[:start] + body + text[end:])


def blocks(text: str) -> dict[str, str]:
    """Every table block's contents in a markdown text, by name (for the docs' tests)."""
    return {match[1]: match[2].strip() for match in _ANY_BLOCK.finditer(text)}


def _replace_file(path: Path, text: str) -> None:
    """Write to a temp file beside ``path``, then rename it into place, so a failed write leaves the old doc."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
