"""reefguard: detect fine-tuned, pruned, quantized or merged derivatives of released model weights.

The public API (heavy libraries such as torch load only when a model is loaded)::

    from bot import Registry, compare, fingerprint

    fp = fingerprint("org/suspect@<sha>")
    report = compare(fp, Registry(Path("fingerprints")))
    report.verdict  # Verdict.DERIVED, MERGED, UNRELATED or INCONCLUSIVE
"""

from bot.engine import compare, fingerprint
from bot.errors import ReefguardError
from bot.reef.fingerprint import Fingerprint
from bot.reef.verdict import Report, Verdict
from bot.registry import Registry
from bot.sources import ModelSource

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
