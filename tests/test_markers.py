"""Hidden markers: round trips, foreign and newer markers, awkward paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import report
from bot.report import Marker, find_marker, parse_markers

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "marker",
    [
        Marker(kind=report.ISSUE, path="models/a", source="gemma-3-270m"),
        Marker(kind=report.ISSUE, path="models/with space/x --> y", source="s"),
        Marker(kind=report.ISSUE, path="modèles/ü=1,2", source="a.b_c"),
        Marker(kind=report.PR_COMMENT),
        Marker(kind=report.CARD_PR, path="q/model-q4.gguf"),
        Marker(kind=report.HUB_DISCUSSION, repo="org/model.v2", source="gemma-3-270m"),
        Marker(kind=report.HUB_CARD_PR, repo="org/model"),
    ],
)
def test_round_trip(marker: Marker) -> None:
    body = f"# Title\n\nsome text\n{marker.render()}\nmore"
    assert "\n" not in marker.render()
    assert find_marker(body, kind=marker.kind) == marker


def test_other_versions_and_lookalikes_are_ignored() -> None:
    body = (
        "<!-- reefguard:v2 kind=issue path=a source=b -->\n"
        "<!-- reefguard:v1 path=a source=b -->\n"  # no kind
        "`<!-- reefguard:v1 kind=issue` quoted by a person\n"
        "<!-- reefguard:v1 kind=issue path=a source=b future=1 -->"
    )
    assert parse_markers(body) == (Marker(kind=report.ISSUE, path="a", source="b"),)
    assert parse_markers(None) == ()
    assert find_marker("no markers", kind=report.ISSUE) is None


def test_hub_markers_take_the_documented_form() -> None:
    """docs/hub-bot.md and docs/hub-scanning.md document ``repo=`` for posts on the Hub (a repo id, not a path)."""
    marker = Marker(kind=report.HUB_DISCUSSION, repo="org/name", source="demo-source")
    documented = "<!-- reefguard:v1 kind=hub-discussion repo=org/name source=demo-source -->"
    assert marker.render() == documented and parse_markers(documented) == (marker,)
    for doc in ("docs/hub-bot.md", "docs/hub-scanning.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert "kind=hub-discussion repo=" in text and "kind=hub-discussion path=" not in text, doc
