"""Workflow commands, outputs and the job summary, read back the way the runner reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.github.runner import MAX_SUMMARY_BYTES, Runner
from tests.github.conftest import parse_outputs


def test_outputs_use_the_delimiter_form_and_keep_newlines(tmp_path: Path) -> None:
    runner = Runner(output_file=tmp_path / "out", summary_file=None)
    runner.set_output("verdict", "derived")
    runner.set_output("matches", '[{"a": 1}]\nsecond line\nEOF')

    text = (tmp_path / "out").read_text(encoding="utf-8")
    assert parse_outputs(text) == {"verdict": "derived", "matches": '[{"a": 1}]\nsecond line\nEOF'}
    assert text.startswith("verdict<<ghadelimiter_")


def test_annotations_escape_data_and_properties(capsys: pytest.CaptureFixture[str]) -> None:
    runner = Runner(output_file=None, summary_file=None)
    runner.annotate("error", "100% sure\nline two", file="models/a,b/x:y.safetensors", title="reefguard: derived")
    runner.warning("plain ::notice:: text")

    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "::error file=models/a%2Cb/x%3Ay.safetensors,title=reefguard%3A derived::100%25 sure%0Aline two",
        "::warning::plain ::notice:: text",
    ]
    with pytest.raises(ValueError):
        runner.annotate("debug", "x")


def test_summary_appends_and_stops_at_the_limit(tmp_path: Path) -> None:
    runner = Runner(output_file=None, summary_file=tmp_path / "summary")
    runner.add_summary("# one")
    runner.add_summary("x" * MAX_SUMMARY_BYTES)
    runner.add_summary("never shown")

    text = (tmp_path / "summary").read_text(encoding="utf-8")
    assert text.startswith("# one\n")
    assert len(text.encode("utf-8")) <= MAX_SUMMARY_BYTES
    assert "cut at GitHub's 1 MiB limit" in text and "never shown" not in text


def test_without_runner_files_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = Runner.from_environ({})
    runner.set_output("verdict", "none")
    runner.add_summary("text")
    assert runner.output_file is None and runner.summary_file is None
