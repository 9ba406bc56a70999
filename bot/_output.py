"""The only door to stdout: results (tables, markdown, JSON) go through ``write`` so piped JSON stays clean.

Everything written here passes ``redact`` first: no token reaches a log, even when a service echoes it back.
"""

from __future__ import annotations

import os
import re
import sys

# Environment variables that hold secrets (GitHub and Hub tokens, the webhook secret, the Action's token inputs).
SECRET_VARIABLES = ("GITHUB_TOKEN", "GH_TOKEN", "INPUT_TOKEN", "INPUT_HF-TOKEN", "INPUT_HF_TOKEN", "HF_TOKEN",
                    "HUGGING_FACE_HUB_TOKEN", "REEFGUARD_WEBHOOK_SECRET")  # fmt: skip
# Token shapes GitHub and the Hub issue (classic and fine-grained PATs, app and Actions tokens, Hub tokens).
_TOKEN_SHAPES = re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|hf_[A-Za-z0-9]{20,})\b")
MASK = "***"


def redact(text: str) -> str:
    """``text`` with every secret from ``SECRET_VARIABLES`` and every token-shaped string replaced by ``***``.

    Example:
        >>> redact("401 for token ghp_0123456789abcdefghij0123")
        '401 for token ***'
    """
    for name in SECRET_VARIABLES:
        secret = os.environ.get(name, "").strip()
        if len(secret) >= 8:  # shorter values would mask ordinary words
            text = text.replace(secret, MASK)
    return _TOKEN_SHAPES.sub(MASK, text)


def write(text: str) -> None:
    """Write ``text`` (redacted) to stdout, adding a final newline if it lacks one."""
    text = redact(text)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    sys.stdout.flush()


def error(text: str) -> None:
    """Write a message for the user (redacted) to stderr (errors; never results)."""
    text = redact(text)
    sys.stderr.write(text if text.endswith("\n") else text + "\n")
    sys.stderr.flush()
