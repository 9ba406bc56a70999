"""The weight evidence (rules 5-7 of ``bot.reef.verdict``'s docstring): the suspect's anchor rows against each
source's, calibrated by the source's scores against unrelated entries, and the merge components they reveal."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from bot.reef.fingerprint import Fingerprint
from bot.reef.verdict.nulls import prediction_p
from bot.reef.verdict.results import WeightEvidence
from bot.reef.verdict.thresholds import FLOORS, MAX_MERGE_EXPLAINED, MAX_MERGE_SHARE, MERGE_FLOOR, MIN_NULL
from bot.reef.weights import STATISTICS, Alignment, Anchors, align, fit_sources, weight_scores

WeightNull = Mapping[str, NDArray[np.float64]]
"""Per statistic (a key of ``bot.reef.weights.STATISTICS``), a source's scores against unrelated entries."""


def null_size(null: WeightNull) -> int:
    return min(len(values) for values in null.values())


def weight_ceilings(nulls: Sequence[WeightNull]) -> dict[str, float]:
    """Per statistic, the highest score between any source and an entry unrelated to it (rule 5)."""
    usable = [null for null in nulls if null_size(null) >= MIN_NULL]
    return {name: max(float(null[name].max()) for null in usable) for name in STATISTICS} if usable else {}


def convicts(statistic: str, score: float, ceilings: Mapping[str, float]) -> bool:
    """Whether a weight score is over its statistic's floor and ceiling (rule 5)."""
    return score >= FLOORS[statistic] and score > ceilings.get(statistic, -np.inf)


def weight_evidence(
    source: Anchors | None,
    suspect: Anchors | None,
    null: WeightNull,
    ceilings: Mapping[str, float],
    *,
    net_of: tuple[str, ...] = (),
) -> WeightEvidence | None:
    """The suspect's weight statistics against the source and their p-values; None where the weights cannot
    be compared. The deciding statistic is the most significant of those that convict, else of all (rule 5)."""
    if source is None or suspect is None:
        return None
    found = weight_scores(source, suspect)
    if found is None:
        return None
    scores = found.scores
    calibrated = null_size(null) >= MIN_NULL
    tests = {name: prediction_p(score, null[name]) if calibrated else (None, None) for name, score in scores.items()}
    if calibrated:
        convicting = [name for name in scores if convicts(name, scores[name], ceilings)]
        statistic = min(convicting or scores, key=lambda name: (tests[name][1], -scores[name]))
    else:
        statistic = max(scores, key=lambda name: scores[name])
    z, p = tests[statistic]
    return WeightEvidence(
        statistic=statistic,
        score=scores[statistic],
        scores=scores,
        shared_tokens=found.shared_tokens,
        z=z,
        p_values={name: p_value for name, (_, p_value) in tests.items()},
        p_value=None if p is None else min(1.0, len(scores) * p),
        share=found.share if scores["units"] >= MERGE_FLOOR and found.explained <= MAX_MERGE_EXPLAINED else None,
        n_null=null_size(null),
        null_mean=float(null[statistic].mean()) if null_size(null) else None,
        net_of=net_of,
    )


def look_for_more_sources(
    suspect: Anchors | None,
    sources: Sequence[Fingerprint],
    nulls: Sequence[WeightNull],
    direct: Sequence[WeightEvidence | None],
    alpha: float,
    ceilings: Mapping[str, float],
) -> tuple[WeightEvidence | None, ...]:
    """Rule 6: each source's weight evidence, also aligned with what the other candidate sources leave of the
    suspect's rows.

    Candidates are the sources whose weight p-value is under ``alpha``; they are fitted together (strongest
    direct alignment first, ``bot.reef.weights.fit_sources``), and each source is aligned with the suspect's
    rows less the other candidates' terms. A merge's components each stand out once the others are gone (an
    equal average correlates about 0.72 with each, what one leaves about 1.0), while an independent model
    gains nothing. A source's weight evidence is replaced where the residual's is stronger, and it joins the
    candidates when that reaches ``alpha``; repeated until nothing changes.

    Returns:
        Per source (in ``sources``' order), its direct evidence or the stronger evidence net of the others.
    """
    found = list(direct)
    if suspect is None:
        return tuple(found)
    rows = {i: anchors for i, source in enumerate(sources) if (anchors := source.anchors) is not None}
    comparable = [i for i in rows if null_size(nulls[i])]
    for _ in range(len(comparable)):
        candidates = sorted((i for i in comparable if _significant(found[i], alpha)), key=lambda i: -_score(direct[i]))
        fit = fit_sources(suspect, [rows[i] for i in candidates]) if candidates else None
        if fit is None:
            break
        changed = False
        for i in comparable:
            others = tuple(sources[c].name for c in candidates if c != i)
            if not others:
                continue
            left = fit.residual.rows
            if i in candidates:
                left = left + fit.parts[candidates.index(i)].rows
            residual = Anchors(fit.residual.tokens, left)
            evidence = weight_evidence(rows[i], residual, nulls[i], ceilings, net_of=others)
            if evidence is not None and evidence.p_value is not None and evidence.score > _score(found[i]):
                found[i] = evidence
                changed = True
        if not changed:
            break
    return tuple(found)


def holds_a_share(weights: WeightEvidence | None) -> bool:
    """Rule 7: the suspect holds the source's own units, scaled down as a merge scales its parents."""
    return weights is not None and weights.share is not None and weights.share <= MAX_MERGE_SHARE


def merge_shares(suspect: Anchors | None, named: Sequence[Fingerprint]) -> tuple[dict[str, float], float | None]:
    """Each named source's share of the suspect's anchor rows, when every one of them has anchors, and the fit's R².

    They are fitted strongest unit alignment first: a minor component aligns well only with what the major one
    leaves.
    """
    if not named or suspect is None or any(source.anchors is None for source in named):
        return {}, None
    alignments = {source.name: align(source.anchors, suspect) for source in named if source.anchors is not None}
    ordered = sorted(named, key=lambda source: -_alignment_score(alignments[source.name]))
    fit = fit_sources(suspect, [source.anchors for source in ordered if source.anchors is not None])
    if fit is None:
        return {}, None
    return {source.name: share for source, share in zip(ordered, fit.shares, strict=True)}, fit.r2


def _significant(weights: WeightEvidence | None, alpha: float) -> bool:
    return weights is not None and weights.p_value is not None and weights.p_value < alpha


def _score(weights: WeightEvidence | None) -> float:
    return -1.0 if weights is None else weights.score


def _alignment_score(alignment: Alignment | None) -> float:
    return -1.0 if alignment is None else alignment.score
