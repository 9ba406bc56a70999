"""What a check returns: the per-source evidence, the report and the weights-only judgement (frozen values)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPORT_SCHEMA_VERSION = 3


class Verdict(StrEnum):
    """What the evidence says about a suspect (overall) or about one source (MERGED: a part of the suspect,
    the rest from a parent the registry does not hold; rule 7)."""

    DERIVED = "derived"
    MERGED = "merged"
    UNRELATED = "unrelated"
    INCONCLUSIVE = "inconclusive"


class Evidence(StrEnum):
    """Which signal decided a source (rule 5 of the module docstring)."""

    WEIGHTS = "weights"
    REPRESENTATIONS = "representations"
    BOTH = "weights and representations"


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightEvidence:
    """What the input-embedding rows say about one source (``bot.reef.weights``).

    Attributes:
        statistic: the statistic that decided (a key of ``bot.reef.weights.STATISTICS``: the one with the
            smaller p-value, or the higher score without a null).
        score: that statistic's score; scores every statistic's.
        shared_tokens: anchor tokens both models have.
        z: the deciding statistic's standard score against the source's unrelated entries (rule 3).
        p_values: each statistic's prediction p-value (rule 3); None without a null.
        p_value: the smallest of them times their number (Bonferroni), so that taking the better of the two
            statistics stays honest under independence; None without a null.
        share: how much of the source's rows the suspect holds (``bot.reef.weights.WeightScores.share``), where its
            units pair up (units score at least ``MERGE_FLOOR``) and leave a part for another parent (the source
            explains at most ``MAX_MERGE_EXPLAINED`` of the suspect's rows: a rescaled copy leaves nothing);
            None otherwise.
        n_null: how many entries formed the null; null_mean their mean score on the deciding statistic.
        net_of: the sources whose fitted share was taken out of the suspect's rows before aligning (a
            merge's further source, rule 6); empty for a direct comparison.
    """

    statistic: str
    score: float
    scores: Mapping[str, float]
    shared_tokens: int
    z: float | None
    p_values: Mapping[str, float | None]
    p_value: float | None
    share: float | None
    n_null: int
    null_mean: float | None
    net_of: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return {
            "statistic": self.statistic,
            "score": round(self.score, 4),
            "scores": {name: round(value, 4) for name, value in self.scores.items()},
            "shared_tokens": self.shared_tokens,
            "z": None if self.z is None else round(self.z, 3),
            "p_values": dict(self.p_values),
            "p_value": self.p_value,
            "share": None if self.share is None else round(self.share, 4),
            "n_null": self.n_null,
            "null_mean": None if self.null_mean is None else round(self.null_mean, 4),
            "net_of": list(self.net_of),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceMatch:
    """The evidence about one registry source.

    Attributes:
        source: the source's registry name.
        score: layer-aligned CKA (rule 1 of the module docstring).
        best_pair: (source block, suspect block) of the highest cell of the grid; best_pair_score its CKA.
        z: standard score of ``atanh(score)`` against the source's null; None without a null.
        p_value: one-sided prediction p-value of the CKA score.
        n_null: how many unrelated entries formed the null; null_mean its mean CKA.
        null_parameters: the smallest and largest size of the null's models, in approximate parameters
            (``approximate_parameters``); None for an empty null.
        null_warning: set when no model of the null is within ``NULL_SIZE_RATIO`` times the source's size: a
            p-value against much smaller or larger models says little about models like the source.
        weights: the weight evidence, None where it does not apply (rule 5).
        evidence: the signal that decided this source; p_fused its p-value, and p_adjusted that p-value
            Holm-adjusted over all sources checked.
        verdict: DERIVED (a match), UNRELATED or INCONCLUSIVE for this source alone.
        source_layers, suspect_layers: the blocks along the grid's rows and columns.
        grid: CKA of every (source block, suspect block) pair.
    """

    source: str
    score: float
    best_pair: tuple[int, int]
    best_pair_score: float
    z: float | None
    p_value: float | None
    n_null: int
    null_mean: float | None
    null_parameters: tuple[int, int] | None = None
    null_warning: str | None = None
    weights: WeightEvidence | None
    evidence: Evidence
    p_fused: float | None
    p_adjusted: float | None
    verdict: Verdict
    source_layers: tuple[int, ...]
    suspect_layers: tuple[int, ...]
    grid: NDArray[np.float64] = field(compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON (the grid as nested lists, rounded to 4 decimals)."""
        return {
            "source": self.source,
            "score": round(self.score, 4),
            "best_pair": {"source_layer": self.best_pair[0], "suspect_layer": self.best_pair[1]},
            "best_pair_score": round(self.best_pair_score, 4),
            "z": None if self.z is None else round(self.z, 3),
            "p_value": self.p_value,
            "n_null": self.n_null,
            "null_mean": None if self.null_mean is None else round(self.null_mean, 4),
            "null_parameters": None if self.null_parameters is None else list(self.null_parameters),
            "null_warning": self.null_warning,
            "weights": None if self.weights is None else self.weights.to_dict(),
            "evidence": str(self.evidence),
            "p_fused": self.p_fused,
            "p_adjusted": self.p_adjusted,
            "verdict": str(self.verdict),
            "source_layers": list(self.source_layers),
            "suspect_layers": list(self.suspect_layers),
            "grid": np.round(self.grid, 4).tolist(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    """The result of checking one suspect against a registry.

    Attributes:
        suspect: the suspect fingerprint's name; suspect_model its model reference.
        measure: the similarity measure (a key of ``bot.reef.cka.MEASURES``).
        conditioned: whether the probes' surface features were projected out first (rule 0).
        alpha: significance level of a match.
        null_ceiling: the highest null score over all sources checked (rule 4); None without any null.
        weight_ceilings: the same per weight statistic (rule 5); empty without weight evidence.
        verdict: the overall verdict; sources: the sources it names (one if derived, two or more if merged,
            one or more if merged with an unregistered parent).
        merge_coefficients: for a match with weight evidence, each named source's share of the suspect's
            embedding rows (non-negative least squares, ``bot.reef.weights.fit_sources``); merge_fit
            the fit's R². Empty and None otherwise.
        unregistered_share: for a merge with a parent the registry does not hold (rule 7), the share of the
            suspect's rows that no registered source explains; None otherwise.
        reason: one sentence saying which rule decided.
        matches: per-source evidence, most significant first.
    """

    schema_version: int = REPORT_SCHEMA_VERSION
    suspect: str
    suspect_model: str
    measure: str
    conditioned: bool
    alpha: float
    null_ceiling: float | None
    weight_ceilings: Mapping[str, float]
    verdict: Verdict
    sources: tuple[str, ...]
    merge_coefficients: Mapping[str, float]
    merge_fit: float | None
    unregistered_share: float | None = None
    reason: str
    matches: tuple[SourceMatch, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON schema documented in docs/how-it-works.md."""
        return {
            "schema_version": self.schema_version,
            "suspect": self.suspect,
            "suspect_model": self.suspect_model,
            "measure": self.measure,
            "conditioned": self.conditioned,
            "alpha": self.alpha,
            "null_ceiling": None if self.null_ceiling is None else round(self.null_ceiling, 4),
            "weight_ceilings": {name: round(value, 4) for name, value in self.weight_ceilings.items()},
            "verdict": str(self.verdict),
            "sources": list(self.sources),
            "merge_coefficients": {name: round(value, 4) for name, value in self.merge_coefficients.items()},
            "merge_fit": None if self.merge_fit is None else round(self.merge_fit, 4),
            "unregistered_share": None if self.unregistered_share is None else round(self.unregistered_share, 4),
            "reason": self.reason,
            "matches": [match.to_dict() for match in self.matches],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightJudgement:
    """What the weights alone say about a suspect (``WeightJudge``).

    Attributes:
        unrelated: True when every source is cleared on the weights: each has weight evidence and a Holm-adjusted
            weight p-value of at least ``UNRELATED_P``, so the full check could not call the suspect derived.
        reason: one sentence: the closest source, or why the weights cannot decide.
        evidence: per source, its weight evidence (None where the weights cannot be compared).
    """

    unrelated: bool
    reason: str
    evidence: Mapping[str, WeightEvidence | None]
