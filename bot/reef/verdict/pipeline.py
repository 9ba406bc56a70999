"""``compare``: a check as a sequence of typed stages.

1. calibration (``bot.reef.verdict.calibration``): each source's null and the ceilings, stored or computed;
2. observation: the suspect against each source, each signal on its own (rules 1-3 and 5);
3. merge components (rule 6): weight evidence net of the other candidate sources;
4. facts: the signals fused and Holm-adjusted (rules 4 and 5), then each source's verdict (``rules.SOURCE_RULES``);
5. decision: the overall verdict, the sources it names and their shares (``rules.RULES``, rule 7).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConfigError
from bot.reef.fingerprint import Fingerprint
from bot.reef.verdict import rules
from bot.reef.verdict.calibration import Calibrated, Calibration, SourceNull, calibrate, entries_digest
from bot.reef.verdict.nulls import Stack, aligned_score, check_compatible, measure_named, prediction_p
from bot.reef.verdict.results import Report, SourceMatch, WeightEvidence
from bot.reef.verdict.thresholds import DEFAULT_ALPHA
from bot.reef.verdict.weighing import look_for_more_sources, merge_shares, weight_evidence


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """Stage 2: the suspect against one source, each signal on its own.

    Attributes:
        null: the source and its null (stage 1).
        grid: CKA of every (source block, suspect block) pair; score its layer-aligned mean (rule 1).
        best_pair: (source block, suspect block) of the grid's highest cell; best_pair_score its CKA.
        z, p_value: the score against the source's null (rule 3); None when the null is too small.
        above_ceiling: the score is over the null ceiling (rule 4), or there is no ceiling.
        direct_weights: the weight evidence of the suspect's own rows (rule 5); None where it does not apply.
    """

    null: SourceNull
    grid: NDArray[np.float64] = field(compare=False, repr=False)
    score: float
    best_pair: tuple[int, int]
    best_pair_score: float
    z: float | None
    p_value: float | None
    above_ceiling: bool
    direct_weights: WeightEvidence | None


def compare(
    fp: Fingerprint,
    registry: Iterable[Fingerprint],
    *,
    measure: str = "linear",
    alpha: float = DEFAULT_ALPHA,
    conditioned: bool = True,
) -> Report:
    """Check a suspect fingerprint against every source in a registry and decide.

    Args:
        fp: the suspect's fingerprint.
        registry: the known fingerprints (a ``Registry`` or any iterable); ``role == "source"`` entries are
            checked, and all entries calibrate the nulls. A registry that stores its calibration
            (``Calibrated``) is not asked to compute it again.
        measure: a key of ``MEASURES``.
        alpha: significance level for a match, after Holm adjustment.
        conditioned: project the probes' surface features out first (rule 0); False gives REEF's plain CKA.

    Returns:
        The report with per-source evidence and the overall verdict.

    Raises:
        RegistryError: an entry made with other probes or preprocessing.
        ConfigError: unknown measure or alpha outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}", key="alpha")
    calibration = _calibration(fp, registry, measure=measure, conditioned=conditioned)
    observations = _observe(fp, calibration)
    facts = _fuse(fp, observations, calibration, alpha)
    matches = sorted(
        (_source_match(o, f, fp, alpha) for o, f in zip(observations, facts, strict=True)),
        key=lambda m: (m.p_adjusted if m.p_adjusted is not None else 2.0, -m.score),
    )
    return _report(fp, matches, calibration, alpha)


def _calibration(fp: Fingerprint, registry: Iterable[Fingerprint], *, measure: str, conditioned: bool) -> Calibration:
    """Stage 1: the registry's kept calibration when it has a current one, else computed here.

    Raises:
        RegistryError: an entry made with other probes or preprocessing.
        ConfigError: unknown measure.
    """
    # The suspect may itself be in the registry (a rerun on a registered model): never its own null.
    everything = list(registry)
    entries = [entry for entry in everything if entry.digest != fp.digest or entry.name != fp.name]
    for entry in entries:
        check_compatible(fp, entry)
    measure_named(measure)
    kept = None
    if len(entries) == len(everything):  # a kept calibration's nulls would hold the suspect otherwise
        kept = _kept(registry, entries, measure=measure, conditioned=conditioned)
    return kept if kept is not None else calibrate(entries, measure=measure, conditioned=conditioned)


def _fuse(
    fp: Fingerprint, observations: Sequence[Observation], calibration: Calibration, alpha: float
) -> list[rules.SourceFacts]:
    """Stages 3 and 4: the merge components' evidence (rule 6), then each source's signals fused and adjusted."""
    weights = look_for_more_sources(
        fp.anchors,
        [o.null.source for o in observations],
        [o.null.weight_scores for o in observations],
        [o.direct_weights for o in observations],
        alpha,
        calibration.weight_ceilings,
    )
    return rules.adjust(
        [
            rules.fuse(o.p_value, o.above_ceiling, w, alpha, calibration.weight_ceilings)
            for o, w in zip(observations, weights, strict=True)
        ]
    )


def _report(fp: Fingerprint, matches: Sequence[SourceMatch], calibration: Calibration, alpha: float) -> Report:
    """Stage 5: the first overall rule that applies, the sources it names and their shares of the suspect."""
    sources = {null.source.name: null.source for null in calibration.sources}
    findings = rules.Findings.of(matches, sources, alpha, calibration.ceiling, calibration.weight_ceilings)
    rule = rules.decide(findings)
    named = tuple(head.source for head in findings.family_heads) if rule.names_sources else ()
    coefficients, fit = merge_shares(fp.anchors, [sources[name] for name in named])
    unregistered = None
    if rule is rules.MERGED_WITH_UNREGISTERED and findings.held is not None:
        # rule 7: shares on the rows' fine parts, which the unregistered parent does not bias
        coefficients, fit = dict(findings.held), None
        unregistered = max(0.0, 1.0 - sum(findings.held.values()))
    return Report(
        suspect=fp.name,
        suspect_model=fp.model,
        measure=calibration.measure,
        conditioned=calibration.conditioned,
        alpha=alpha,
        null_ceiling=calibration.ceiling,
        weight_ceilings=calibration.weight_ceilings,
        verdict=rule.verdict,
        sources=named,
        merge_coefficients=coefficients,
        merge_fit=fit,
        unregistered_share=unregistered,
        reason=rule.reason(findings),
        matches=tuple(matches),
    )


def _kept(
    registry: Iterable[Fingerprint], entries: list[Fingerprint], *, measure: str, conditioned: bool
) -> Calibration | None:
    """The calibration the registry keeps of ``entries``, if it keeps one that is current."""
    if not isinstance(registry, Calibrated):
        return None
    kept = registry.calibration(entries, measure=measure, conditioned=conditioned)
    return kept if kept is not None and kept.entries_digest == entries_digest(entries) else None


def _observe(fp: Fingerprint, calibration: Calibration) -> list[Observation]:
    """Stage 2: each source's grid, score and p-value against its null, and its direct weight evidence."""
    if not calibration.sources:
        return []
    sources = [null.source for null in calibration.sources]
    stack = Stack([*sources, fp], measure_named(calibration.measure), conditioned=calibration.conditioned)
    suspect = len(sources)
    grids = stack.grids_against(suspect, range(len(sources)))
    observations = []
    for index, null in enumerate(calibration.sources):
        grid = grids[index]
        best = np.unravel_index(int(np.argmax(grid)), grid.shape)
        score = aligned_score(grid, stack.depths[index], stack.depths[suspect])
        z, p = prediction_p(score, null.summary) if null.summary is not None else (None, None)
        observations.append(
            Observation(
                null=null,
                grid=grid,
                score=score,
                best_pair=(null.source.layers[best[0]], fp.layers[best[1]]),
                best_pair_score=float(grid[best]),
                z=z,
                p_value=p,
                above_ceiling=calibration.ceiling is None or score > calibration.ceiling,
                direct_weights=weight_evidence(
                    null.source.anchors, fp.anchors, null.weight_scores, calibration.weight_ceilings
                ),
            )
        )
    return observations


def _source_match(o: Observation, f: rules.SourceFacts, fp: Fingerprint, alpha: float) -> SourceMatch:
    """Stage 4's result for one source: its verdict by the first rule of ``rules.SOURCE_RULES`` that applies."""
    verdict = rules.source_verdict(f, alpha)
    return SourceMatch(
        source=o.null.source.name,
        score=o.score,
        best_pair=o.best_pair,
        best_pair_score=o.best_pair_score,
        z=o.z,
        p_value=o.p_value,
        n_null=len(o.null.scores),
        null_mean=o.null.mean,
        null_parameters=o.null.parameters,
        null_warning=o.null.warning,
        weights=f.weights,
        evidence=rules.deciding_evidence(f, verdict),
        p_fused=f.p_fused,
        p_adjusted=f.p_adjusted,
        verdict=verdict,
        source_layers=o.null.source.layers,
        suspect_layers=fp.layers,
        grid=o.grid,
    )
