"""The ``reefguard`` subcommands of ``bot.hub``: parsers and thin handlers (heavy imports inside handlers)."""

from __future__ import annotations

import argparse


def register(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], parents: list[argparse.ArgumentParser]
) -> None:
    """Add this package's subcommands to `commands`; each sets `handler` (args -> exit code) as a default."""
