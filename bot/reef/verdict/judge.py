"""``WeightJudge``: the weights-only first stage of a Hub scan (rules 2, 3 and 5 of ``bot.reef.verdict``)."""

from __future__ import annotations

from collections.abc import Iterable

from bot.reef.fingerprint import Fingerprint, share_probes
from bot.reef.verdict import reasons
from bot.reef.verdict.calibration import Calibrated, entries_digest, weight_null
from bot.reef.verdict.nulls import holm, unrelated_masks
from bot.reef.verdict.results import WeightJudgement
from bot.reef.verdict.thresholds import UNRELATED_P
from bot.reef.verdict.weighing import WeightNull, weight_ceilings, weight_evidence
from bot.reef.weights import Anchors


class WeightJudge:
    """The registry's sources with their weight nulls and ceilings, prepared once, to judge many suspects by their
    anchor rows alone (rules 2, 3 and 5): the first stage of a Hub scan, which reads only those rows.

    Args:
        registry: the known fingerprints; ``role == "source"`` entries are judged against, all calibrate. A
            registry that stores its calibration (``Calibrated``) lends its weight nulls.

    Example:
        >>> import numpy as np
        >>> WeightJudge([]).judge(Anchors(("a",), np.zeros((1, 2), dtype=np.float32))).reason
        'the registry has no sources'
    """

    def __init__(self, registry: Iterable[Fingerprint]) -> None:
        entries = list(registry)
        stored = None
        if isinstance(registry, Calibrated) and share_probes(entries):  # else only the weights can be calibrated
            stored = registry.calibration(entries, measure="linear", conditioned=True)
        if stored is not None and stored.entries_digest == entries_digest(entries):
            self.sources = [null.source for null in stored.sources]
            self.nulls: list[WeightNull] = [null.weight_scores for null in stored.sources]
            self.ceilings = dict(stored.weight_ceilings)
            return
        sources = [index for index, entry in enumerate(entries) if entry.role == "source"]
        masks = unrelated_masks(entries, sources)
        self.sources = [entries[index] for index in sources]
        self.nulls = [weight_null(entries[i], entries, mask)[1] for i, mask in zip(sources, masks, strict=True)]
        self.ceilings = weight_ceilings(self.nulls)

    def judge(self, suspect: Anchors) -> WeightJudgement:
        """Whether the weights clear ``suspect`` of every source; anything short of that is for the full check."""
        if not self.sources:
            return WeightJudgement(unrelated=False, reason=reasons.JUDGE_NO_SOURCES, evidence={})
        found = {
            source.name: weight_evidence(source.anchors, suspect, null, self.ceilings)
            for source, null in zip(self.sources, self.nulls, strict=True)
        }
        calibrated = {name: e for name, e in found.items() if e is not None and e.p_value is not None}
        if len(calibrated) < len(found):
            missing = [name for name in found if name not in calibrated]
            return WeightJudgement(unrelated=False, reason=reasons.judge_uncalibrated(missing), evidence=found)
        p_values = [e.p_value if e.p_value is not None else 1.0 for e in calibrated.values()]
        adjusted = dict(zip(calibrated, holm(p_values), strict=True))
        closest = min(adjusted, key=lambda name: adjusted[name])
        described = reasons.judge_closest(closest, calibrated[closest], adjusted[closest])
        if adjusted[closest] < UNRELATED_P:
            return WeightJudgement(unrelated=False, reason=reasons.judge_not_cleared(described), evidence=found)
        return WeightJudgement(unrelated=True, reason=reasons.judge_cleared(len(found), described), evidence=found)
