"""Rendering reports: terminal table, JSON, markdown with mermaid lineage, heatmaps and the report folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from bot.reef import Evidence, Report, SourceMatch, Verdict
from bot.report import (
    _TABLE_HEADER,
    render_json,
    render_markdown,
    render_table,
    verdict_line,
    write_heatmap,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SUSPECT = "suspect-7b"


def make_match(
    source: str,
    *,
    score: float,
    p_adjusted: float | None,
    verdict: Verdict,
    n_layers: int = 4,
    seed: int = 0,
) -> SourceMatch:
    """Evidence about one source over a small seeded grid whose diagonal is ``score``."""
    rng = np.random.default_rng(seed)
    grid = rng.uniform(0.1, 0.5, size=(n_layers, n_layers))
    np.fill_diagonal(grid, score)
    return SourceMatch(
        source=source,
        score=score,
        best_pair=(n_layers - 1, n_layers - 1),
        best_pair_score=score,
        z=None if p_adjusted is None else 6.2,
        p_value=None if p_adjusted is None else p_adjusted / 2,
        n_null=2 if p_adjusted is None else 5,
        null_mean=None if p_adjusted is None else 0.41,
        weights=None,
        evidence=Evidence.REPRESENTATIONS,
        p_fused=None if p_adjusted is None else p_adjusted / 2,
        p_adjusted=p_adjusted,
        verdict=verdict,
        source_layers=tuple(range(n_layers)),
        suspect_layers=tuple(range(n_layers)),
        grid=grid,
    )


def make_report(verdict: Verdict, sources: tuple[str, ...], reason: str, *matches: SourceMatch) -> Report:
    return Report(
        suspect=SUSPECT,
        suspect_model="org/suspect-7b@0123abcd",
        measure="linear",
        conditioned=True,
        alpha=0.01,
        null_ceiling=0.52,
        weight_ceilings={},
        verdict=verdict,
        sources=sources,
        merge_coefficients={},
        merge_fit=None,
        reason=reason,
        matches=matches,
    )


@pytest.fixture
def derived() -> Report:
    return make_report(
        Verdict.DERIVED,
        ("gemma-3-270m",),
        "gemma-3-270m matches at adjusted p = 3.1e-05 < 0.01",
        make_match("gemma-3-270m", score=0.97, p_adjusted=3.14e-05, verdict=Verdict.DERIVED),
        make_match("qwen-0.5b", score=0.42, p_adjusted=0.63, verdict=Verdict.UNRELATED, seed=1),
    )


@pytest.fixture
def merged() -> Report:
    return make_report(
        Verdict.MERGED,
        ("llama-1b", "org/mistral-7b@v0.3"),
        "2 unrelated sources match at adjusted p < 0.01: llama-1b and org/mistral-7b@v0.3",
        make_match("llama-1b", score=0.91, p_adjusted=1.2e-4, verdict=Verdict.DERIVED),
        make_match("org/mistral-7b@v0.3", score=0.88, p_adjusted=4.5e-3, verdict=Verdict.DERIVED, seed=2),
    )


@pytest.fixture
def unrelated() -> Report:
    return make_report(
        Verdict.UNRELATED,
        (),
        "no source reaches adjusted p < 0.01",
        make_match("gemma-3-270m", score=0.44, p_adjusted=0.71, verdict=Verdict.UNRELATED),
    )


@pytest.fixture
def inconclusive() -> Report:
    return make_report(
        Verdict.INCONCLUSIVE,
        (),
        "weak or uncalibrated evidence for tiny-source (no source at p < 0.01)",
        make_match("tiny-source", score=0.8, p_adjusted=None, verdict=Verdict.INCONCLUSIVE),
    )


# verdict line and table


def test_verdict_line_for_every_verdict(
    derived: Report, merged: Report, unrelated: Report, inconclusive: Report
) -> None:
    assert verdict_line(derived) == "derived from gemma-3-270m"
    assert verdict_line(merged) == "merged from llama-1b and org/mistral-7b@v0.3"
    assert verdict_line(unrelated) == "unrelated to every registry source"
    assert verdict_line(inconclusive) == f"inconclusive: {inconclusive.reason}"


def test_table_has_a_row_per_source_and_the_verdict(derived: Report) -> None:
    lines = render_table(derived).splitlines()
    gemma = next(line for line in lines if line.startswith("gemma-3-270m"))
    assert "0.970" in gemma and "3->3" in gemma and "3.1e-05" in gemma and "derived" in gemma
    assert any(line.startswith("qwen-0.5b") for line in lines)
    assert lines[-1] == f"verdict: derived from gemma-3-270m ({derived.reason})"


def test_table_columns_are_aligned(merged: Report) -> None:
    lines = render_table(merged).splitlines()
    header = next(line for line in lines if line.startswith("source"))
    rows = [line for line in lines if line.startswith(("llama-1b", "org/mistral"))]
    # Right-aligned numeric columns: every row ends its verdict cell at the header's last column.
    assert {len(row) for row in rows} == {len(header)}
    score_end = header.index("score") + len("score")
    assert all(row[score_end - 5 : score_end] in {"0.910", "0.880"} for row in rows)


def test_table_shows_missing_values_as_dash(inconclusive: Report) -> None:
    text = render_table(inconclusive)
    row = next(line for line in text.splitlines() if line.startswith("tiny-source"))
    assert row.split()[3:6] == ["-", "-", "-"]  # z, p, adjusted p
    assert text.splitlines()[-1] == f"verdict: inconclusive: {inconclusive.reason}"


def test_table_of_unrelated_names_no_source(unrelated: Report) -> None:
    assert render_table(unrelated).splitlines()[-1].startswith("verdict: unrelated to every registry source (")


# JSON


def test_json_round_trips_with_documented_keys(merged: Report) -> None:
    text = render_json(merged)
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data == merged.to_dict()
    assert list(data)[:2] == ["schema_version", "suspect"]  # key order kept
    assert data["verdict"] == "merged"
    assert data["sources"] == ["llama-1b", "org/mistral-7b@v0.3"]
    for match in data["matches"]:
        assert {"score", "p_value", "best_pair", "verdict"} <= set(match)
        assert match["best_pair"] == {"source_layer": 3, "suspect_layer": 3}


def test_json_keeps_missing_p_as_null(inconclusive: Report) -> None:
    (match,) = json.loads(render_json(inconclusive))["matches"]
    assert match["p_value"] is None and match["p_adjusted"] is None and match["z"] is None


# markdown


def mermaid_block(markdown: str) -> str:
    found = re.search(r"```mermaid\n(.*?)\n```", markdown, flags=re.DOTALL)
    assert found, "no mermaid block"
    return found.group(1)


def mermaid_edges(block: str) -> list[str]:
    return [line.strip() for line in block.splitlines() if "-->" in line]


def node_of(block: str, label: str) -> str:
    found = re.search(r"^\s*(\w+)\[\"" + re.escape(label) + r"\"\]", block, flags=re.MULTILINE)
    assert found, f"no node labelled {label!r}"
    return found.group(1)


def test_markdown_derived(derived: Report) -> None:
    markdown = render_markdown(derived)
    title = markdown.splitlines()[0]
    assert title.startswith("## ") and "derived from `gemma-3-270m`" in title and SUSPECT in title
    assert derived.reason in markdown
    assert "| `gemma-3-270m` | 0.970 |" in markdown and "| `qwen-0.5b` |" in markdown
    assert "How to read this" in markdown and "alpha 0.01" in markdown
    block = mermaid_block(markdown)
    (edge,) = mermaid_edges(block)
    assert edge.startswith(node_of(block, "gemma-3-270m") + " -->") and edge.endswith("suspect")
    assert "0.970" in edge and "3.1e-05" in edge


def test_markdown_merged_has_an_edge_from_each_source(merged: Report) -> None:
    markdown = render_markdown(merged)
    assert "merged from `llama-1b` and `org/mistral-7b@v0.3`" in markdown.splitlines()[0]
    block = mermaid_block(markdown)
    edges = mermaid_edges(block)
    assert len(edges) == 2
    for source in merged.sources:
        assert any(edge.startswith(node_of(block, source) + " -->") for edge in edges)


@pytest.mark.parametrize("case", ["unrelated", "inconclusive"])
def test_markdown_without_named_sources_has_no_edges(case: str, request: pytest.FixtureRequest) -> None:
    report: Report = request.getfixturevalue(case)
    markdown = render_markdown(report)
    assert case in markdown.splitlines()[0]
    block = mermaid_block(markdown)
    assert mermaid_edges(block) == []
    assert node_of(block, SUSPECT) == "suspect"
    assert verdict_line(report).split(":")[0] in block  # the note says why


def test_markdown_escapes_awkward_names_for_mermaid_and_tables() -> None:
    name = 'org/odd"name <v2> #1 | `x`'
    report = make_report(
        Verdict.DERIVED,
        (name,),
        "matches",
        make_match(name, score=0.9, p_adjusted=1e-4, verdict=Verdict.DERIVED),
    )
    markdown = render_markdown(report)
    block = mermaid_block(markdown)
    node_line = next(line for line in block.splitlines() if line.strip().startswith("source0["))
    label = node_line.split("[", 1)[1].rsplit("]", 1)[0]
    assert label.startswith('"') and label.endswith('"') and '"' not in label[1:-1]
    assert "<" not in label and "`" not in label and "#quot;" in label
    row = next(line for line in markdown.splitlines() if "0.900" in line and line.startswith("|"))
    assert len(re.findall(r"(?<!\\)\|", row)) == len(_TABLE_HEADER) + 1  # the pipe in the name is escaped


def test_markdown_links_heatmaps(derived: Report) -> None:
    markdown = render_markdown(
        derived, heatmaps={"gemma-3-270m": "heatmap-gemma-3-270m.png", "qwen-0.5b": "maps/qwen 0.5b.png"}
    )
    assert "![layer×layer CKA: gemma-3-270m](heatmap-gemma-3-270m.png)" in markdown
    assert "![layer×layer CKA: qwen-0.5b](<maps/qwen 0.5b.png>)" in markdown
    assert "![" not in render_markdown(derived)


# files


def test_write_heatmap_writes_a_png(tmp_path: Path, derived: Report) -> None:
    path = write_heatmap(derived.matches[0], tmp_path / "map.png", suspect=SUSPECT)
    assert path == tmp_path / "map.png"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000
    assert [p.name for p in tmp_path.iterdir()] == ["map.png"]  # no temporary file left behind


def test_write_report_writes_json_markdown_and_heatmaps(tmp_path: Path, merged: Report) -> None:
    folder = tmp_path / "out" / "report"
    markdown_path = write_report(merged, folder)
    assert markdown_path == folder / "report.md"
    names = sorted(p.name for p in folder.iterdir())
    heatmaps = [name for name in names if name.startswith("heatmap-")]
    assert len(heatmaps) == 2 and set(names) == {"report.json", "report.md", *heatmaps}
    assert json.loads((folder / "report.json").read_text(encoding="utf-8")) == merged.to_dict()
    markdown = markdown_path.read_text(encoding="utf-8")
    for heatmap in heatmaps:
        assert f"]({heatmap})" in markdown  # linked relatively
        data = (folder / heatmap).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_write_report_gives_safe_distinct_file_names(tmp_path: Path) -> None:
    names = ("org/model name", "org model/name", "../escape")
    report = make_report(
        Verdict.UNRELATED,
        (),
        "no source reaches adjusted p < 0.01",
        *(make_match(name, score=0.3, p_adjusted=0.9, verdict=Verdict.UNRELATED) for name in names),
    )
    write_report(report, tmp_path)
    heatmaps = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("heatmap-"))
    assert len(heatmaps) == 3
    assert all(re.fullmatch(r"heatmap-[A-Za-z0-9._-]+\.png", name) for name in heatmaps)
    assert not (tmp_path.parent / "heatmap-escape.png").exists()


def test_write_report_replaces_an_earlier_report(tmp_path: Path, derived: Report, unrelated: Report) -> None:
    write_report(derived, tmp_path)
    write_report(unrelated, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))["verdict"] == "unrelated"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_render_grid_lays_out_blocks() -> None:
    from types import SimpleNamespace

    from bot.report import render_grid

    a = SimpleNamespace(name="src", layers=(0, 5))
    b = SimpleNamespace(name="sus", layers=(0, 3, 7))
    grid = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.95]])
    text = render_grid(grid, a, b, score=0.925, measure="linear")  # type: ignore[arg-type]
    lines = text.splitlines()
    assert "0.925" in lines[0]
    assert lines[1].split()[-3:] == ["0", "3", "7"]
    assert lines[3].split() == ["5", "0.30", "0.80", "0.95"]
