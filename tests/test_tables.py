"""bench/tables.py: a bench rewrites only its own block of a doc, and says which command wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.tables import blocks, publish

DOC = """# Results

Intro stays.

<!-- table:speed -->
| old | table |
<!-- /table:speed -->

Between stays.

<!-- table:other -->
| other | table |
<!-- /table:other -->
"""


def test_publish_replaces_only_the_named_block_and_names_the_command(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(DOC, encoding="utf-8")
    publish(doc, "speed", "| new | table |\n|---|---|\n| 1 | 2 |\n", ".venv/bin/python bench/speed.py --fast")
    text = doc.read_text(encoding="utf-8")
    assert blocks(text) == {
        "speed": "| new | table |\n|---|---|\n| 1 | 2 |\n\nWritten by `.venv/bin/python bench/speed.py --fast`.",
        "other": "| other | table |",
    }
    assert "| old | table |" not in text
    assert text.startswith("# Results\n\nIntro stays.\n") and "\nBetween stays.\n" in text


def test_publishing_twice_gives_the_same_file(tmp_path: Path) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(DOC, encoding="utf-8")
    publish(doc, "speed", "| a |", "cmd")
    once = doc.read_text(encoding="utf-8")
    publish(doc, "speed", "| a |", "cmd")
    assert doc.read_text(encoding="utf-8") == once


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("no block here\n", "found 0 opening and 0 closing"),
        (DOC + DOC, "found 2 opening and 2 closing"),
        ("<!-- table:speed -->\nno end\n", "found 1 opening and 0 closing"),
        ("<!-- /table:speed -->\n<!-- table:speed -->\n", "comes before"),
    ],
    ids=["missing", "doubled", "unclosed", "reversed"],
)
def test_a_missing_or_doubled_block_fails_and_leaves_the_doc_alone(tmp_path: Path, text: str, found: str) -> None:
    doc = tmp_path / "results.md"
    doc.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=found):
        publish(doc, "speed", "| new |", "cmd")
    assert doc.read_text(encoding="utf-8") == text
