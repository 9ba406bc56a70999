"""What the Actions runner reads from a step: workflow commands on stdout, ``$GITHUB_OUTPUT``, the job summary.

This is the only module that writes ``::error::`` lines, step outputs and the job summary. The file paths come
from the environment the entry point was given (never read at import time), so the module also works, and
writes nothing, outside Actions.

Formats (GitHub docs, "Workflow commands for GitHub Actions"): outputs are ``name<<DELIMITER`` blocks, which
keep multiline values intact; command data escapes ``%``, CR and LF, and properties also ``:`` and ``,``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from pathlib import Path

from bot import _output

logger = logging.getLogger(__name__)

# GitHub shows at most 1 MiB of summary per step and drops the whole summary beyond that.
MAX_SUMMARY_BYTES = 1024 * 1024
LEVELS = ("error", "warning", "notice")


def escape_data(text: str) -> str:
    """Escape a workflow command's message.

    Example:
        >>> escape_data("50% done\\nnext")
        '50%25 done%0Anext'
    """
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command property value (``file=``, ``title=``).

    Example:
        >>> escape_property("a:b,c")
        'a%3Ab%2Cc'
    """
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


class Runner:
    """Writes a step's annotations, outputs and job summary.

    Args:
        output_file: ``$GITHUB_OUTPUT``; outputs are logged instead when None.
        summary_file: ``$GITHUB_STEP_SUMMARY``; the summary is skipped when None.
    """

    def __init__(self, *, output_file: Path | None, summary_file: Path | None) -> None:
        self.output_file = output_file
        self.summary_file = summary_file
        self._summary_bytes = 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Runner:
        """The runner for the files named by ``GITHUB_OUTPUT`` and ``GITHUB_STEP_SUMMARY`` in ``environ``."""
        output, summary = environ.get("GITHUB_OUTPUT"), environ.get("GITHUB_STEP_SUMMARY")
        return cls(output_file=Path(output) if output else None, summary_file=Path(summary) if summary else None)

    def annotate(self, level: str, message: str, *, file: str | None = None, title: str | None = None) -> None:
        """Print an ``::error::``, ``::warning::`` or ``::notice::`` annotation.

        Args:
            level: one of ``LEVELS``.
            message: the text; newlines are kept (escaped).
            file: a workspace-relative path the annotation points at.
            title: a short title.
        """
        if level not in LEVELS:
            raise ValueError(f"annotation level must be one of {LEVELS}, got {level!r}")
        properties = [f"{name}={escape_property(value)}" for name, value in (("file", file), ("title", title)) if value]
        head = f"{level} {','.join(properties)}" if properties else level
        _output.write(f"::{head}::{escape_data(message)}")

    def error(self, message: str, *, title: str | None = None) -> None:
        """An ``::error::`` annotation."""
        self.annotate("error", message, title=title)

    def warning(self, message: str, *, title: str | None = None) -> None:
        """A ``::warning::`` annotation."""
        self.annotate("warning", message, title=title)

    def set_output(self, name: str, value: str) -> None:
        """Append one output to ``$GITHUB_OUTPUT`` in the multiline-safe delimiter form."""
        if self.output_file is None:
            logger.info("output %s=%s (no GITHUB_OUTPUT file)", name, value)
            return
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        while delimiter in value:  # vanishingly unlikely, and then a new one is drawn
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        with self.output_file.open("a", encoding="utf-8") as handle:
            handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")

    def add_summary(self, markdown: str) -> None:
        """Append markdown to the job summary, keeping the step under GitHub's 1 MiB limit."""
        if self.summary_file is None:
            return
        text = markdown if markdown.endswith("\n") else markdown + "\n"
        data = text.encode("utf-8")
        if self._summary_bytes + len(data) > MAX_SUMMARY_BYTES:
            note = "\n> The rest of this summary was cut at GitHub's 1 MiB limit; see the report files.\n"
            room = MAX_SUMMARY_BYTES - self._summary_bytes - len(note.encode("utf-8"))
            if room <= 0:
                return
            text = data[:room].decode("utf-8", errors="ignore") + note
            data = text.encode("utf-8")
        with self.summary_file.open("a", encoding="utf-8") as handle:
            handle.write(text)
        self._summary_bytes += len(data)
