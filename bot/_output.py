"""The only door to stdout: results (tables, markdown, JSON) go through ``write`` so piped JSON stays clean."""

from __future__ import annotations

import sys


def write(text: str) -> None:
    """Write ``text`` to stdout, adding a final newline if it lacks one."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def error(text: str) -> None:
    """Write a message for the user to stderr (errors; never results)."""
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()
