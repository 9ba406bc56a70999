"""Every sentence the verdict writes: why a check decided as it did, and what weakens a source's null.

The rules decide; these only put their facts into words, so the wording can change without touching a rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.reef.verdict.results import Evidence, SourceMatch, WeightEvidence
from bot.reef.verdict.thresholds import FLOORS, MIN_NULL, NULL_SIZE_RATIO
from bot.sizes import format_parameters

NO_SOURCES = "the registry has no sources to check against"
JUDGE_NO_SOURCES = "the registry has no sources"


def small_null(source: str, size: int, smallest: int, largest: int) -> str:
    """Why a null of models all far from the source's size weakens its p-value."""
    return (
        f"no model in {source}'s null is within {NULL_SIZE_RATIO:g}x of its size ({format_parameters(size)}; null "
        f"{format_parameters(smallest)} to {format_parameters(largest)}): add reference entries of its size class "
        "(reefguard hub add-references)"
    )


def cleared(alpha: float) -> str:
    return f"no source reaches adjusted p < {alpha}"


def derived(best: SourceMatch, alpha: float) -> str:
    return f"{best.source} matches at adjusted p = {best.p_adjusted:.2g} < {alpha}, on {best.evidence}"


def merged(family_heads: Sequence[SourceMatch], alpha: float) -> str:
    listed = " and ".join(f"{head.source} (on {head.evidence})" for head in family_heads)
    return f"{len(family_heads)} unrelated sources match at adjusted p < {alpha}: {listed}"


def merged_with_unregistered(best: SourceMatch, held: Mapping[str, float], alpha: float) -> str:
    parts = " and ".join(f"{name} (share {share:.2f})" for name, share in held.items())
    return (
        f"merged from {parts} and an unregistered parent: adjusted p = {best.p_adjusted:.2g} < {alpha}, "
        f"on {best.evidence}"
    )


def unsure(
    unsure: Sequence[SourceMatch], alpha: float, ceiling: float | None, weight_ceilings: Mapping[str, float]
) -> str:
    """Why no source matched although some were not cleared, most telling reason first."""
    lookalikes = [m for m in unsure if m.weights is not None and m.evidence is Evidence.WEIGHTS]
    lookalikes = [m for m in lookalikes if m.p_value is not None and m.p_value < alpha]
    if lookalikes:
        scores = ", ".join(
            f"{m.source} {m.weights.score:.2f} on {m.weights.statistic}, a copy scores at least "
            f"{_bar(m.weights, weight_ceilings):.2f}"
            for m in lookalikes
            if m.weights is not None
        )
        return (
            f"representations match but weights were not inherited ({scores}): a distilled student or "
            "convergent training"
        )
    significant = [m for m in unsure if m.p_adjusted is not None and m.p_adjusted < alpha]
    if significant:
        limits = ", ".join(
            f"{m.source} under the {m.weights.statistic} floor / ceiling {_bar(m.weights, weight_ceilings):.3f}"
            if m.evidence is Evidence.WEIGHTS and m.weights is not None
            else f"{m.source} under the null ceiling {ceiling or 0.0:.3f}"
            for m in significant
        )
        return f"evidence the registry's nulls do not cover: p < {alpha} but {limits}"
    return f"weak or uncalibrated evidence for {', '.join(m.source for m in unsure)} (no source at p < {alpha})"


def judge_uncalibrated(missing: Sequence[str]) -> str:
    return (
        f"no calibrated weight evidence for {', '.join(missing)} (too few shared anchor tokens or fewer than "
        f"{MIN_NULL} unrelated entries)"
    )


def judge_closest(name: str, evidence: WeightEvidence, adjusted: float) -> str:
    return f"{name} {evidence.score:.3f} on {evidence.statistic}, adjusted p {adjusted:.2g}"


def judge_not_cleared(closest: str) -> str:
    return f"not cleared: {closest}"


def judge_cleared(n_sources: int, closest: str) -> str:
    return f"unrelated on the weights to all {n_sources} sources (closest: {closest})"


def _bar(weights: WeightEvidence, weight_ceilings: Mapping[str, float]) -> float:
    """The score a copy reaches at least on the deciding statistic: its floor or its ceiling (rule 5)."""
    return max(FLOORS[weights.statistic], weight_ceilings.get(weights.statistic, 0.0))
