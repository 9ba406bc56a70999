"""The decision rules as two ordered tables: one decides each source, one the whole check.

Each rule is a named predicate and the verdict it yields; the first rule that applies wins. The facts the rules
read are frozen stages computed before them (``SourceFacts``, ``Findings``), and the sentences they give are in
``bot.reef.verdict.reasons``. Rule numbers refer to ``bot.reef.verdict``'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from bot.reef.fingerprint import Fingerprint
from bot.reef.verdict import reasons
from bot.reef.verdict.nulls import holm, related
from bot.reef.verdict.results import Evidence, SourceMatch, Verdict, WeightEvidence
from bot.reef.verdict.thresholds import UNRELATED_P
from bot.reef.verdict.weighing import convicts, holds_a_share


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceFacts:
    """One source's evidence fused (rule 5): what its per-source rule reads.

    Attributes:
        representations_match: the CKA p-value (rule 3) is under alpha and the score over the null ceiling (rule 4).
        weights: the weight evidence after rule 6; None where the weights cannot be compared.
        carried_by_weights: the weights are calibrated, so they decide this source instead of CKA.
        p_fused: the deciding p-value; clears_ceiling: its score is over the deciding ceiling (and floor).
        part_of_merge: the suspect holds a share of the source's own units (rule 7).
        p_adjusted: ``p_fused`` Holm-adjusted over the sources checked; None when there is no ``p_fused``.
    """

    representations_match: bool
    weights: WeightEvidence | None
    carried_by_weights: bool
    p_fused: float | None
    clears_ceiling: bool
    part_of_merge: bool
    p_adjusted: float | None


def fuse(
    representations_p: float | None,
    above_ceiling: bool,
    weights: WeightEvidence | None,
    alpha: float,
    weight_ceilings: Mapping[str, float],
) -> SourceFacts:
    """One source's facts before the Holm adjustment (rule 5: calibrated weights decide, else CKA)."""
    carried_by_weights = weights is not None and weights.p_value is not None
    if weights is None or weights.p_value is None:
        p_fused, clears_ceiling, part_of_merge = representations_p, above_ceiling, False
    else:
        p_fused = weights.p_value
        clears_ceiling = convicts(weights.statistic, weights.score, weight_ceilings)
        units_above = weights.scores["units"] > weight_ceilings.get("units", -np.inf)
        part_of_merge = units_above and holds_a_share(weights)
    return SourceFacts(
        representations_match=representations_p is not None and representations_p < alpha and above_ceiling,
        weights=weights,
        carried_by_weights=carried_by_weights,
        p_fused=p_fused,
        clears_ceiling=clears_ceiling,
        part_of_merge=part_of_merge,
        p_adjusted=None,
    )


def adjust(facts: Sequence[SourceFacts]) -> list[SourceFacts]:
    """Holm-adjust the deciding p-values over the sources that have one."""
    tested = [f.p_fused for f in facts if f.p_fused is not None]
    adjusted = iter(holm(tested))
    return [f if f.p_fused is None else replace(f, p_adjusted=next(adjusted)) for f in facts]


# ------------------------------------------------------------------------------------------- per source


def _uncalibrated(f: SourceFacts, alpha: float) -> bool:
    return f.p_adjusted is None


def _matches(f: SourceFacts, alpha: float) -> bool:
    return f.p_adjusted is not None and f.p_adjusted < alpha and f.clears_ceiling


def _part_of_a_merge(f: SourceFacts, alpha: float) -> bool:
    return f.p_adjusted is not None and f.p_adjusted < alpha and f.part_of_merge


def _under_the_ceiling(f: SourceFacts, alpha: float) -> bool:
    return f.p_adjusted is not None and f.p_adjusted < alpha


def _alike_without_weights(f: SourceFacts, alpha: float) -> bool:
    return f.carried_by_weights and f.representations_match


def _cleared(f: SourceFacts, alpha: float) -> bool:
    return f.p_adjusted is not None and f.p_adjusted >= UNRELATED_P


def _otherwise(f: SourceFacts, alpha: float) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class SourceRule:
    """A rule for one source: its name, when it applies (facts, alpha), and the verdict it gives."""

    name: str
    applies: Callable[[SourceFacts, float], bool]
    verdict: Verdict


SOURCE_RULES = (
    SourceRule("no calibrated p-value (rule 3)", _uncalibrated, Verdict.INCONCLUSIVE),
    SourceRule("significant, over floor and ceiling (rules 4, 5)", _matches, Verdict.DERIVED),
    SourceRule("significant, holds a share of the source's units (rule 7)", _part_of_a_merge, Verdict.MERGED),
    SourceRule("significant, at or under the ceiling (rule 4)", _under_the_ceiling, Verdict.INCONCLUSIVE),
    # The suspect computes like the source without its weights: a distilled student or convergent training.
    SourceRule("representations match, weights do not (rule 5)", _alike_without_weights, Verdict.INCONCLUSIVE),
    SourceRule(f"adjusted p at least {UNRELATED_P}", _cleared, Verdict.UNRELATED),
    SourceRule("between alpha and the unrelated level", _otherwise, Verdict.INCONCLUSIVE),
)


def source_verdict(facts: SourceFacts, alpha: float) -> Verdict:
    """The verdict of the first per-source rule that applies."""
    return next(rule.verdict for rule in SOURCE_RULES if rule.applies(facts, alpha))


def deciding_evidence(facts: SourceFacts, verdict: Verdict) -> Evidence:
    """Which signal decided the source (rule 5): the weights when calibrated, both when CKA agrees on a match."""
    if not facts.carried_by_weights:
        return Evidence.REPRESENTATIONS
    if verdict in (Verdict.DERIVED, Verdict.MERGED) and facts.representations_match:
        return Evidence.BOTH
    return Evidence.WEIGHTS


# ------------------------------------------------------------------------------------------- overall


@dataclass(frozen=True, slots=True, kw_only=True)
class Findings:
    """Every source decided: what the overall rules read.

    Attributes:
        matches: per-source evidence, most significant first.
        hits: the matches decided DERIVED or MERGED; unsure those decided INCONCLUSIVE.
        family_heads: the best hit of each family of declared relations (rule 4), most significant first.
        held: the named sources' shares when they leave part of the suspect to a parent the registry does not
            hold (rule 7); None otherwise.
        alpha, ceiling, weight_ceilings: as in the report.
    """

    matches: tuple[SourceMatch, ...]
    hits: tuple[SourceMatch, ...]
    unsure: tuple[SourceMatch, ...]
    family_heads: tuple[SourceMatch, ...]
    held: Mapping[str, float] | None
    alpha: float
    ceiling: float | None
    weight_ceilings: Mapping[str, float]

    @classmethod
    def of(
        cls,
        matches: Sequence[SourceMatch],
        sources: Mapping[str, Fingerprint],
        alpha: float,
        ceiling: float | None,
        weight_ceilings: Mapping[str, float],
    ) -> Findings:
        hits = tuple(m for m in matches if m.verdict in (Verdict.DERIVED, Verdict.MERGED))
        heads = _family_heads(hits, sources)
        return cls(
            matches=tuple(matches),
            hits=hits,
            unsure=tuple(m for m in matches if m.verdict is Verdict.INCONCLUSIVE),
            family_heads=heads,
            held=_held_shares(matches, [head.source for head in heads]),
            alpha=alpha,
            ceiling=ceiling,
            weight_ceilings=weight_ceilings,
        )


def _family_heads(hits: Sequence[SourceMatch], sources: Mapping[str, Fingerprint]) -> tuple[SourceMatch, ...]:
    """The first (most significant) hit of each group of hits linked by declared relations."""
    families: list[list[SourceMatch]] = []
    for hit in hits:
        family = next((f for f in families if any(related(sources[hit.source], sources[m.source]) for m in f)), None)
        if family is None:
            families.append([hit])
        else:
            family.append(hit)
    return tuple(family[0] for family in families)


def _held_shares(matches: Sequence[SourceMatch], named: Sequence[str]) -> dict[str, float] | None:
    """Rule 7: the named sources' shares of the suspect when they leave part of it to a parent the registry does
    not hold (a source matched only as part of a merge, or one source held at most ``MAX_MERGE_SHARE``)."""
    found = [m for m in matches if m.source in named and m.weights is not None and m.weights.share is not None]
    if len(found) != len(named):
        return None
    partial = any(m.verdict is Verdict.MERGED for m in found)
    if not partial and not (len(found) == 1 and holds_a_share(found[0].weights)):
        return None
    return {m.source: m.weights.share for m in found if m.weights is not None and m.weights.share is not None}


@dataclass(frozen=True, slots=True)
class Rule:
    """An overall rule: its name, when it applies, the verdict it gives, whether it names the family heads as
    the suspect's sources, and the sentence it writes."""

    name: str
    applies: Callable[[Findings], bool]
    verdict: Verdict
    names_sources: bool
    reason: Callable[[Findings], str]


def _no_sources(f: Findings) -> bool:
    return not f.matches


def _every_source_cleared(f: Findings) -> bool:
    return not f.hits and not f.unsure


def _no_hit(f: Findings) -> bool:
    return not f.hits


def _leaves_a_part_unexplained(f: Findings) -> bool:
    return f.held is not None


def _one_family(f: Findings) -> bool:
    return len(f.family_heads) == 1


def _several_families(f: Findings) -> bool:
    return len(f.family_heads) > 1


def _unregistered_reason(f: Findings) -> str:
    held = f.held or {}
    return reasons.merged_with_unregistered(next(m for m in f.matches if m.source in held), held, f.alpha)


MERGED_WITH_UNREGISTERED = Rule(
    "merged with a parent the registry does not hold (rule 7)",
    _leaves_a_part_unexplained,
    Verdict.MERGED,
    True,
    _unregistered_reason,
)
RULES = (
    Rule("no sources", _no_sources, Verdict.INCONCLUSIVE, False, lambda f: reasons.NO_SOURCES),
    Rule("every source cleared", _every_source_cleared, Verdict.UNRELATED, False, lambda f: reasons.cleared(f.alpha)),
    Rule(
        "some source neither matched nor cleared",
        _no_hit,
        Verdict.INCONCLUSIVE,
        False,
        lambda f: reasons.unsure(f.unsure, f.alpha, f.ceiling, f.weight_ceilings),
    ),
    MERGED_WITH_UNREGISTERED,
    Rule("one family matches", _one_family, Verdict.DERIVED, True, lambda f: reasons.derived(f.hits[0], f.alpha)),
    Rule(
        "unrelated sources match (rule 4)",
        _several_families,
        Verdict.MERGED,
        True,
        lambda f: reasons.merged(f.family_heads, f.alpha),
    ),
)


def decide(findings: Findings) -> Rule:
    """The first overall rule that applies."""
    return next(rule for rule in RULES if rule.applies(findings))
