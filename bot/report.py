"""Rendering a ``Report`` for people and machines: a terminal table, JSON, markdown and CKA heatmaps.

Everything here is pure rendering: functions return strings, and only ``write_heatmap`` and ``write_report``
touch the disk (each file through a temporary file renamed into place, so a reader never sees half a report).
The markdown is written to be posted as a GitHub issue or job summary: a title with the verdict, the evidence
table, a short guide to reading it, a mermaid lineage graph and links to the heatmaps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

import numpy as np
from numpy.typing import NDArray

from bot.reef import MEASURES, MIN_NULL, UNRELATED_P, Report, SourceMatch, Verdict
from bot.sizes import format_parameters

if TYPE_CHECKING:
    from bot.reef import Fingerprint

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
_MISSING = "-"
_MAX_TICKS = 24
_TABLE_HEADER = (
    "source", "score", "best pair", "z", "p", "weights", "weights p", "evidence", "adj. p", "n_null", "verdict",
)  # fmt: skip
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Mermaid entity codes: '#' first, so the codes added for the other characters are not escaped again.
_MERMAID_ESCAPES = (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("`", "#96;"))


# Formatting pieces shared by every renderer


def _format_p(p: float | None) -> str:
    """A p-value in two-significant-digit scientific form, ``-`` when there is none.

    Example:
        >>> _format_p(3.14159e-05)
        '3.1e-05'
        >>> _format_p(0.5)
        '5.0e-01'
        >>> _format_p(None)
        '-'
    """
    return _MISSING if p is None else f"{p:.1e}"


def _format_number(value: float | None, *, decimals: int) -> str:
    """A fixed-point number, ``-`` when there is none.

    Example:
        >>> _format_number(0.93127, decimals=3), _format_number(None, decimals=1)
        ('0.931', '-')
    """
    return _MISSING if value is None else f"{value:.{decimals}f}"


def _format_pair(pair: tuple[int, int]) -> str:
    """A (source block, suspect block) pair, e.g. ``'11->13'``."""
    return f"{pair[0]}->{pair[1]}"


def _join_names(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``.

    Example:
        >>> _join_names(["a", "b", "c"])
        'a, b and c'
    """
    if len(names) <= 1:
        return "".join(names) or "no named source"
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _describe(report: Report, quote: Callable[[str], str]) -> str:
    """The verdict in words, each source name passed through ``quote`` (plain text or markdown code)."""
    names = [quote(name) for name in report.sources]
    if report.verdict is Verdict.DERIVED:
        return f"derived from {_join_names(names)}"
    if report.verdict is Verdict.MERGED and report.unregistered_share is not None:
        return f"merged from {_join_names([*names, 'an unregistered parent'])}"
    if report.verdict is Verdict.MERGED:
        return f"merged from {_join_names(names)}"
    if report.verdict is Verdict.UNRELATED:
        return "unrelated to every registry source"
    return f"inconclusive: {report.reason}"


def verdict_line(report: Report) -> str:
    """The overall verdict as one line of plain text.

    Args:
        report: the result of a check.

    Returns:
        ``'derived from X'``, ``'merged from X and Y'``, ``'unrelated to every registry source'`` or
        ``'inconclusive: <reason>'``.
    """
    return _describe(report, str)


def evidence_summary(match: SourceMatch) -> str:
    """One source's evidence in a few words: ``CKA 0.852, weights 0.981, adj. p 1.2e-08 (weights)``."""
    weights = "" if match.weights is None else f", weights {match.weights.score:.3f} ({match.weights.statistic})"
    return f"CKA {match.score:.3f}{weights}, adj. p {_format_p(match.p_adjusted)} ({match.evidence})"


def _match_cells(match: SourceMatch) -> list[str]:
    """One evidence row, in the order of ``_TABLE_HEADER`` (the source name left to the caller)."""
    return [
        _format_number(match.score, decimals=3),
        _format_pair(match.best_pair),
        _format_number(match.z, decimals=1),
        _format_p(match.p_value),
        "-" if match.weights is None else f"{match.weights.score:.3f} {match.weights.statistic}",
        "-" if match.weights is None else _format_p(match.weights.p_value),
        str(match.evidence),
        _format_p(match.p_adjusted),
        str(match.n_null),
        str(match.verdict),
    ]


def _align(rows: Sequence[Sequence[str]], *, text_columns: Container[int] = (0,)) -> list[str]:
    """Pad cells into columns: ``text_columns`` flush left, the others (numbers) flush right.

    Example:
        >>> _align([["name", "score"], ["gemma", "0.9"]])
        ['name   score', 'gemma    0.9']
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i in text_columns else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


# Terminal and JSON


def render_table(report: Report) -> str:
    """A plain-text table for the terminal: one row per source, then the verdict.

    Args:
        report: the result of a check.

    Returns:
        Aligned lines ending with ``verdict: <verdict line> (<reason>)`` and a newline.
    """
    rows = [_TABLE_HEADER, *([match.source, *_match_cells(match)] for match in report.matches)]
    lines = [
        f"suspect {report.suspect} ({report.suspect_model}), measure {_measure_name(report)}, alpha {report.alpha}",
        *_align(rows, text_columns=(0, len(_TABLE_HEADER) - 1)),
    ]
    # The inconclusive line already carries its reason.
    reason = "" if report.verdict is Verdict.INCONCLUSIVE else f" ({report.reason})"
    lines += [f"warning: {warning}" for warning in null_warnings(report)]
    lines.append(f"verdict: {verdict_line(report)}{reason}")
    return "\n".join(lines) + "\n"


def null_warnings(report: Report) -> list[str]:
    """The sources whose null holds no model of their size class, one sentence each."""
    return [match.null_warning for match in report.matches if match.null_warning]


def _null_line(report: Report) -> str:
    """What each source's null is made of: how many entries, from what size to what size."""
    parts = [
        f"{_code(match.source)} {match.n_null} entries"
        + ("" if match.null_parameters is None else f", {_parameters(match.null_parameters)}")
        for match in report.matches
    ]
    return (
        "**Nulls** (unrelated registry entries, approximate parameters outside the embeddings): "
        + "; ".join(parts)
        + "."
    )


def _parameters(bounds: tuple[int, int]) -> str:
    low, high = (format_parameters(value) for value in bounds)
    return low if low == high else f"{low} to {high}"


def render_json(report: Report) -> str:
    """The report as JSON (the schema of ``Report.to_dict``), key order kept, with a final newline.

    Args:
        report: the result of a check.

    Returns:
        Indented JSON text.
    """
    return json.dumps(report.to_dict(), indent=2, sort_keys=False) + "\n"


def render_grid(grid: NDArray[np.floating], a: Fingerprint, b: Fingerprint, *, score: float, measure: str) -> str:
    """The full layer-by-layer CKA grid of two fingerprints as a plain-text table.

    Args:
        grid: CKA of every (``a`` block, ``b`` block) pair.
        a: the fingerprint along the rows.
        b: the fingerprint along the columns.
        score: their layer-aligned score.
        measure: the similarity measure that made the grid.

    Returns:
        A title line, then one row per block of ``a``, ending with a newline.
    """
    header = [f"{a.name} \\ {b.name}", *(str(layer) for layer in b.layers)]
    rows = [
        [str(layer), *(f"{value:.2f}" for value in grid_row)] for layer, grid_row in zip(a.layers, grid, strict=True)
    ]
    title = f"{measure} CKA, rows {a.name} blocks, columns {b.name} blocks; aligned score {score:.3f}"
    return "\n".join([title, *_align([header, *rows])]) + "\n"


# Markdown


def _code(text: str) -> str:
    """Markdown inline code, safe for names containing backticks or table pipes.

    Example:
        >>> _code("org/model@v1.0"), _code("a`b|c")
        ('`org/model@v1.0`', '`` a`b\\\\|c ``')
    """
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _mermaid_label(text: str) -> str:
    """A double-quoted mermaid label: quotes, angle brackets, ``#`` and backticks as entity codes.

    Example:
        >>> _mermaid_label('org/model@v1 "best" <3')
        '"org/model@v1 #quot;best#quot; #lt;3"'
    """
    for char, code in _MERMAID_ESCAPES:
        text = text.replace(char, code)
    return '"' + " ".join(text.split()) + '"'


def _mermaid(report: Report) -> str:
    """A flowchart from the sources the verdict names to the suspect, each edge labelled with its evidence."""
    by_source = {match.source: match for match in report.matches}
    lines = ["```mermaid", "flowchart LR", f"  suspect[{_mermaid_label(report.suspect)}]"]
    for index, source in enumerate(report.sources):
        node = f"source{index}"
        lines.append(f"  {node}[{_mermaid_label(source)}]")
        match = by_source.get(source)
        if match is None:
            lines.append(f"  {node} --> suspect")
        else:
            label = evidence_summary(match)
            lines.append(f"  {node} -->|{_mermaid_label(label)}| suspect")
    if not report.sources:
        lines += [
            f"  note[{_mermaid_label(verdict_line(report))}]:::note",
            "  suspect ~~~ note",
            "  classDef note fill:#fff8c5,stroke:#d4a72c",
        ]
    lines.append("```")
    return "\n".join(lines)


def _null_sizes(matches: Sequence[SourceMatch]) -> str:
    """The null sizes across sources, ``n = 5`` or ``n = 3-7``."""
    sizes = sorted({match.n_null for match in matches})
    if not sizes:
        return "n"
    return f"n = {sizes[0]}" if len(sizes) == 1 else f"n = {sizes[0]}-{sizes[-1]}"


def _measure_name(report: Report) -> str:
    """The measure as reports name it: ``linear`` or ``linear (raw)`` when not conditioned."""
    return report.measure if report.conditioned else f"{report.measure} (raw)"


def _how_to_read(report: Report) -> str:
    """The paragraph explaining score, null, p-values and the decision rule, with this report's numbers."""
    measure = f"{report.measure} CKA"
    if report.measure in MEASURES:
        measure = f"[{measure}]({MEASURES[report.measure].reference})"
    conditioning = (
        ", after projecting out what the probes' surface alone predicts (last characters, length)"
        if report.conditioned
        else ""
    )
    return (
        f"**Score** is the layer-aligned {measure} of last-token hidden states on a fixed probe set "
        f"(REEF){conditioning}: each source block is paired with the best suspect block at a similar relative depth, "
        "1.0 meaning identical representational geometry. Unrelated models of the same architecture can "
        "still score high, so each score is judged against its source's own **null**: the scores of "
        f"{_null_sizes(report.matches)} unrelated registry entries. The **p-value** is the chance that an "
        "unrelated model scores this high; **adj. p** is Holm-adjusted over the sources checked. A source "
        f"matches at adj. p < {report.alpha}, is unrelated at adj. p ≥ {UNRELATED_P}, and is inconclusive "
        f"between the two or with fewer than {MIN_NULL} entries in its null. **Best pair** is the "
        "(source block, suspect block) of the highest cell in the layer-by-layer grid. **Weights** compares "
        "the two models' input-embedding rows of the tokens they share, less the few directions every trained "
        "embedding shares, by two statistics: *units* pairs hidden units one to one (permuted or rescaled "
        "copies score 1.0), *geometry* compares the tokens' inner products (rotated copies score 1.0); the one "
        "with the smaller p-value against the same unrelated entries is shown, its p-value doubled. Where it "
        "can be measured it decides the source (**evidence**): representations alone do not tell a fine-tune "
        "from an independent model trained on the same data."
    )


def _merge_line(report: Report) -> str:
    """The named sources' shares of the suspect's embedding rows, in one sentence."""
    shares = ", ".join(f"{_code(name)} {share:.2f}" for name, share in report.merge_coefficients.items())
    if report.unregistered_share is not None:
        shares += f", an unregistered parent {report.unregistered_share:.2f}"
    fit = "least squares" if report.merge_fit is None else f"non-negative least squares, R² {report.merge_fit:.3f}"
    return f"**Shares of the suspect's embedding rows** ({fit}): {shares}."


def _markdown_link_target(path: str) -> str:
    """A link target; angle brackets keep spaces and parentheses from ending it early."""
    return f"<{path}>" if re.search(r"[\s()<>]", path) else path


def render_markdown(report: Report, *, heatmaps: Mapping[str, str] | None = None) -> str:
    """A markdown report for people, fit for a GitHub issue or job summary.

    Args:
        report: the result of a check.
        heatmaps: source name -> path of its heatmap image, relative to where the markdown will live.

    Returns:
        Markdown text with a title, the reason, an evidence table, a reading guide, a mermaid lineage graph
        and, when ``heatmaps`` is given, one image per source; ends with a newline.
    """
    header = ["source", *_TABLE_HEADER[1:]]
    table = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", *["--:"] * (len(header) - 2), "---"]) + "|",
        *("| " + " | ".join([_code(match.source), *_match_cells(match)]) + " |" for match in report.matches),
    ]
    parts = [
        f"## reefguard: {_code(report.suspect)} is {_describe(report, _code)}",
        f"**Why:** {report.reason.rstrip('.')}.",
        f"Suspect {_code(report.suspect)} ({_code(report.suspect_model)}) checked against "
        f"{len(report.matches)} registry source{'' if len(report.matches) == 1 else 's'} "
        f"with {_code(report.measure)} CKA at alpha {report.alpha}.",
        "### Evidence",
        "\n".join(table) if report.matches else "_The registry had no sources to check against._",
        *([_merge_line(report)] if report.merge_coefficients else []),
        *([_null_line(report)] if report.matches else []),
        *(f"> **Warning:** {warning}" for warning in null_warnings(report)),
        "### How to read this",
        _how_to_read(report),
        "### Lineage",
        _mermaid(report),
    ]
    heatmaps = heatmaps or {}
    images = [(match.source, heatmaps[match.source]) for match in report.matches if match.source in heatmaps]
    if images:
        parts.append("### Layer × layer CKA")
        for source, path in images:
            alt = re.sub(r"([\[\]\\])", r"\\\1", f"layer×layer CKA: {source}")
            parts.append(f"![{alt}]({_markdown_link_target(path)})")
    return "\n\n".join(parts) + "\n"


# Files


def _write_atomically(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temporary = Path(name)
    try:
        write(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes it 0600; reports are meant to be read and uploaded
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def _write_text(path: Path, text: str) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return _write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def _file_stem(name: str) -> str:
    """A file-name-safe form of a source name; a short hash keeps two rewritten names apart.

    Example:
        >>> _file_stem("gemma-3-270m")
        'gemma-3-270m'
        >>> _file_stem("org/my model")
        'org-my-model-c6df4634'
    """
    stem = _UNSAFE_FILE_CHARS.sub("-", name).strip(".-") or "source"
    if stem == name:
        return stem
    return f"{stem}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:8]}"


def write_heatmap(match: SourceMatch, path: Path, *, suspect: str) -> Path:
    """Draw a source's layer-by-layer CKA grid as a PNG heatmap, its best pair marked.

    Args:
        match: the evidence about one source (rows: its blocks, columns: the suspect's).
        path: where to write the PNG; its folder must exist.
        suspect: the suspect's name, for the title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on CI runners; select before pyplot is imported
    import matplotlib.pyplot as plt

    rows, columns = match.grid.shape
    figure, axes = plt.subplots(figsize=(min(12.0, 3.0 + 0.35 * columns), min(10.0, 2.5 + 0.3 * rows)))
    try:
        image = axes.imshow(match.grid, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto")
        figure.colorbar(image, ax=axes, label="CKA")
        # Label at most _MAX_TICKS blocks per axis so deep models stay legible.
        x_step, y_step = math.ceil(columns / _MAX_TICKS), math.ceil(rows / _MAX_TICKS)
        axes.set_xticks(range(0, columns, x_step), [str(n) for n in match.suspect_layers[::x_step]])
        axes.set_yticks(range(0, rows, y_step), [str(n) for n in match.source_layers[::y_step]])
        axes.tick_params(labelsize=7)
        axes.set_xlabel(f"{suspect} block")
        axes.set_ylabel(f"{match.source} block")
        source_block, suspect_block = match.best_pair
        if source_block in match.source_layers and suspect_block in match.suspect_layers:
            axes.scatter(
                [match.suspect_layers.index(suspect_block)],
                [match.source_layers.index(source_block)],
                marker="s",
                s=120,
                facecolors="none",
                edgecolors="red",
                linewidths=2,
                label=f"best pair {_format_pair(match.best_pair)} ({match.best_pair_score:.3f})",
            )
            axes.legend(loc="upper left", fontsize=7)
        else:
            logger.warning("best pair %s of %s is outside its grid; not marked", match.best_pair, match.source)
        axes.set_title(f"{match.source} vs {suspect}: score {match.score:.3f}", fontsize=9)
        figure.tight_layout()
        _write_atomically(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))
    finally:
        plt.close(figure)
    return path


def write_report(report: Report, folder: Path) -> Path:
    """Write ``report.json``, ``report.md`` and one ``heatmap-<source>.png`` per source into ``folder``.

    Args:
        report: the result of a check.
        folder: created if missing; existing files of the same names are replaced.

    Returns:
        The path of ``report.md``, which links the heatmaps relatively.
    """
    folder.mkdir(parents=True, exist_ok=True)
    heatmaps: dict[str, str] = {}
    for match in report.matches:
        name = f"heatmap-{_file_stem(match.source)}.png"
        write_heatmap(match, folder / name, suspect=report.suspect)
        heatmaps[match.source] = name
    _write_text(folder / REPORT_JSON, render_json(report))
    return _write_text(folder / REPORT_MARKDOWN, render_markdown(report, heatmaps=heatmaps))


# Hidden markers: how a rerun finds the post it wrote before.
#
# Every issue, comment, discussion and pull request the bots write carries one HTML comment, invisible when
# rendered: ``<!-- reefguard:v1 kind=issue path=models/my-model source=gemma-3-270m -->``. Before writing, a bot
# lists what is there and looks for the marker of the post it is about to write; if it finds one it edits that
# post instead of creating another, so reruns never duplicate. Values are percent-encoded, so paths with spaces
# or ``-->`` stay inside one marker. Markers are built and parsed here only.

MARKER_VERSION = "v1"
_MARKER = re.compile(r"<!-- reefguard:(?P<version>v\d+)(?P<fields>(?: [a-z-]+=\S*)*) -->")
_SAFE = "/@._-:+"

# The kinds of post the bot writes.
ISSUE = "issue"  # one issue per (model path, source)
CLEARED = "cleared"  # a comment on that issue: the model no longer matches
MATCHED_AGAIN = "matched-again"  # a comment on that issue: it matches again after a cleared comment
PR_COMMENT = "pr-comment"  # the one sticky comment on a pull request
CARD_PR = "card-pr"  # the pull request that declares base_model in a model card
HUB_DISCUSSION = "hub-discussion"  # a Hub discussion on a repo we do not own (repo: the repo id)
HUB_CARD_PR = "hub-card-pr"  # a Hub pull request adding base_model to a card of ours (repo: the repo id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Marker:
    """What a bot post is about.

    Attributes:
        kind: one of ``ISSUE``, ``CLEARED``, ``MATCHED_AGAIN``, ``PR_COMMENT``, ``CARD_PR``.
        path: the model path (workspace-relative), empty for a pull request comment and for Hub posts.
        repo: the Hub repo id a Hub post is about, empty for GitHub posts.
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
    repo: str = ""
    source: str = ""

    def render(self) -> str:
        """The HTML comment to put in a post body."""
        fields = [("kind", self.kind), ("path", self.path), ("repo", self.repo), ("source", self.source)]
        text = " ".join(f"{name}={quote(value, safe=_SAFE)}" for name, value in fields if value)
        return f"<!-- reefguard:{MARKER_VERSION} {text} -->"


def parse_markers(text: str | None) -> tuple[Marker, ...]:
    """Every reefguard marker of this version in ``text`` (a post body), in order.

    Markers of other versions and unknown fields are ignored, so a newer bot's posts do not confuse this one.

    Example:
        >>> parse_markers("<!-- reefguard:v1 kind=pr-comment --> <!-- reefguard:v9 kind=x -->")
        (Marker(kind='pr-comment', path='', repo='', source=''),)
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
                repo=unquote(fields.get("repo", "")),
                source=unquote(fields.get("source", "")),
            )
        )
    return tuple(found)


def find_marker(text: str | None, *, kind: str) -> Marker | None:
    """The first marker of ``kind`` in ``text``, or None."""
    return next((marker for marker in parse_markers(text) if marker.kind == kind), None)
