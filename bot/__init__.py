"""reefguard: detect fine-tuned, pruned, quantized or merged derivatives of released model weights.

The public API::

    from bot import Registry, compare, fingerprint

    fp = fingerprint("org/suspect@<sha>")
    report = compare(fp, Registry(Path("fingerprints")))
    report.verdict  # Verdict.DERIVED, MERGED, UNRELATED or INCONCLUSIVE

Names resolve on first use (PEP 562), so ``import bot.reef`` loads the science alone and ``reefguard --help``
loads neither torch nor the Hub client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot._lazy import lazy_attributes

if TYPE_CHECKING:
    from bot.engine import compare, fingerprint
    from bot.errors import ReefguardError
    from bot.reef import Fingerprint, Report, Verdict
    from bot.registry import Registry
    from bot.sources import ModelSource

_HOMES = {
    "Fingerprint": "bot.reef",
    "ModelSource": "bot.sources",
    "ReefguardError": "bot.errors",
    "Registry": "bot.registry",
    "Report": "bot.reef",
    "Verdict": "bot.reef",
    "compare": "bot.engine",
    "fingerprint": "bot.engine",
}

__all__ = [
    "Fingerprint",
    "ModelSource",
    "ReefguardError",
    "Registry",
    "Report",
    "Verdict",
    "compare",
    "fingerprint",
]


__getattr__ = lazy_attributes(__name__, _HOMES)
