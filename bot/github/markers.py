"""Hidden markers in bot posts: how a rerun finds the issue or comment it wrote before.

Every issue, comment and pull request the bot writes carries one HTML comment, invisible on GitHub::

    <!-- reefguard:v1 kind=issue path=models/my-model source=gemma-3-270m -->

Before writing, the bot lists what is there and looks for the marker of the thing it is about to write; if it
finds one it edits that post instead of creating another, so reruns never duplicate. Values are
percent-encoded, so paths with spaces or ``-->`` stay inside one marker.

The style guide keeps markers in ``bot/report.py``; they live here until that module takes them over.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

MARKER_VERSION = "v1"
_MARKER = re.compile(r"<!-- reefguard:(?P<version>v\d+)(?P<fields>(?: [a-z-]+=\S*)*) -->")
_SAFE = "/@._-:+"

# The kinds of post the bot writes.
ISSUE = "issue"  # one issue per (model path, source)
CLEARED = "cleared"  # a comment on that issue: the model no longer matches
MATCHED_AGAIN = "matched-again"  # a comment on that issue: it matches again after a cleared comment
PR_COMMENT = "pr-comment"  # the one sticky comment on a pull request
CARD_PR = "card-pr"  # the pull request that declares base_model in a model card


@dataclass(frozen=True, slots=True, kw_only=True)
class Marker:
    """What a bot post is about.

    Attributes:
        kind: one of ``ISSUE``, ``CLEARED``, ``MATCHED_AGAIN``, ``PR_COMMENT``, ``CARD_PR``.
        path: the model path (workspace-relative), empty for a pull request comment.
        source: the registry source name, empty where the post is not about one source.

    Example:
        >>> marker = Marker(kind=ISSUE, path="models/my model", source="demo-source")
        >>> marker.render()
        '<!-- reefguard:v1 kind=issue path=models/my%20model source=demo-source -->'
        >>> find_marker("text\\n" + marker.render(), kind=ISSUE) == marker
        True
    """

    kind: str
    path: str = ""
    source: str = ""

    def render(self) -> str:
        """The HTML comment to put in a post body."""
        fields = [("kind", self.kind), ("path", self.path), ("source", self.source)]
        text = " ".join(f"{name}={quote(value, safe=_SAFE)}" for name, value in fields if value)
        return f"<!-- reefguard:{MARKER_VERSION} {text} -->"


def parse_markers(text: str | None) -> tuple[Marker, ...]:
    """Every reefguard marker of this version in ``text`` (a post body), in order.

    Markers of other versions and unknown fields are ignored, so a newer bot's posts do not confuse this one.

    Example:
        >>> parse_markers("<!-- reefguard:v1 kind=pr-comment --> <!-- reefguard:v9 kind=x -->")
        (Marker(kind='pr-comment', path='', source=''),)
    """
    found = []
    for match in _MARKER.finditer(text or ""):
        if match.group("version") != MARKER_VERSION:
            continue
        fields = dict(item.split("=", 1) for item in match.group("fields").split())
        if "kind" not in fields:
            continue
        found.append(
            Marker(
                kind=unquote(fields["kind"]),
                path=unquote(fields.get("path", "")),
                source=unquote(fields.get("source", "")),
            )
        )
    return tuple(found)


def find_marker(text: str | None, *, kind: str) -> Marker | None:
    """The first marker of ``kind`` in ``text``, or None."""
    return next((marker for marker in parse_markers(text) if marker.kind == kind), None)
