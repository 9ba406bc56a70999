"""Trap² protection: train an update that works at its released scale and breaks when merged (issue 4).

The public API (torch loads only when one of these is first used, so ``reefguard --help`` stays fast)::

    run = protect(base, [train_txt], out, config=ProtectConfig(form="lora"))        # bot.trap2.training
    report = verify(base, run.protected, data=[val_txt], twin=run.twin, others=[other_update], out=report_dir)
    write_release(run.protected, release_dir, base_model="org/base", report=report)  # bot.trap2.release
    push_release(release_dir, "org/name", api=make_api(token=hub_token()))           # bot._http; optional

Modules: ``config`` (settings), ``data`` (text -> windows), ``scaling`` (s sampling and application),
``training`` (the objective), ``merging`` (merge attacks), ``verification`` (report), ``release`` (card, upload),
``commands`` (the CLI).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.trap2.config import ProtectConfig
    from bot.trap2.merging import MERGES
    from bot.trap2.release import copy_release, push_release, write_release
    from bot.trap2.training import ProtectRun, TrainingSummary, protect
    from bot.trap2.verification import VerifyReport, verify

__all__ = [
    "MERGES",
    "ProtectConfig",
    "ProtectRun",
    "TrainingSummary",
    "VerifyReport",
    "copy_release",
    "protect",
    "push_release",
    "verify",
    "write_release",
]

_HOMES = {
    "MERGES": "merging",
    "ProtectConfig": "config",
    "ProtectRun": "training",
    "TrainingSummary": "training",
    "VerifyReport": "verification",
    "copy_release": "release",
    "protect": "training",
    "push_release": "release",
    "verify": "verification",
    "write_release": "release",
}


def __getattr__(name: str) -> Any:
    """Import the public names lazily from their modules (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module 'bot.trap2' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bot.trap2.{_HOMES[name]}"), name)
