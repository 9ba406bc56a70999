"""README.md stays a front door, its links lead somewhere, and every measured table in the docs names its bench."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.tables import blocks

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md"))]
MAX_README_LINES = 250  # issue 15: what a user needs; the rest lives in docs/
# A markdown link or image target that is not a web address or a mail address.
LOCAL_LINK = re.compile(r"\]\((?!https?:|mailto:)([^)\s]+)\)")
# A command line in backticks that runs a bench script, e.g. `OMP_NUM_THREADS=1 .venv/bin/python bench/perf.py`.
BENCH_COMMAND = re.compile(r"`[^`]*?\b(bench/\w+\.py)\b[^`]*`")


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"
    text = "\n".join(lines)
    assert "make demo" in text and "make test" in text  # the two quick-start commands; .ci/run calls make test


def test_readme_links_every_example_workflow() -> None:
    links = set(LOCAL_LINK.findall(_outside_code(README.read_text(encoding="utf-8"))))
    workflows = {str(path.relative_to(REPO)) for path in (REPO / "docs" / "workflows").glob("*.yml")}
    assert workflows and workflows <= links, f"not linked from README.md: {sorted(workflows - links)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))
def test_every_table_block_names_the_bench_that_wrote_it(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    found = blocks(text)
    assert len(found) == text.count("<!-- table:"), f"{doc.name}: a table block is unclosed or misnamed"
    for name, body in found.items():
        if not body:
            continue  # a place kept for a bench that has not written yet: no numbers in it
        command = BENCH_COMMAND.search(body.splitlines()[-1])
        assert command, f"{doc.name}: block {name!r} does not end with the command that wrote it"
        assert (REPO / command[1]).is_file(), f"{doc.name}: block {name!r} names {command[1]}, which does not exist"


@pytest.mark.parametrize("doc", DOCS, ids=lambda doc: str(doc.relative_to(REPO)))
def test_local_links_lead_to_a_file_and_heading(doc: Path) -> None:
    broken = []
    for target in LOCAL_LINK.findall(_outside_code(doc.read_text(encoding="utf-8"))):
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        heading_missing = bool(anchor) and linked.suffix == ".md" and linked.exists() and anchor not in _anchors(linked)
        if not linked.exists() or heading_missing:
            broken.append(target)
    assert not broken, f"{doc.name}: links to nothing: {broken}"


def _outside_code(text: str) -> str:
    """The text with fenced code blocks removed (a '# comment' or '](x)' inside one is not markdown)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)


def _anchors(doc: Path) -> set[str]:
    """The anchors GitHub gives a markdown file's headings: lower case, punctuation dropped, spaces as hyphens,
    a repeated heading numbered from -1."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", _outside_code(doc.read_text(encoding="utf-8")), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors
