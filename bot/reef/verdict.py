"""From CKA grids to a calibrated verdict: derived, merged, unrelated or inconclusive.

A bare CKA threshold does not work: an independently trained model of the same architecture on the same data
scores 0.76-0.94 (REEF appendix F; DESIGN.md), so what counts as "high" depends on the source. The rule:

0. **Conditioning** (on by default; ``conditioned=False`` gives REEF's plain CKA). The part of each Gram that
   the probes' surface alone predicts (last characters, length; ``bot.reef.probes.surface_basis``) is
   projected out before the measure. Every model's last-token state encodes its last token, which makes
   unrelated models with similar tokenizers look alike; measured on the demo registry, independent tiny
   models drop from 0.81-0.87 to 0.44-0.47 while a fine-tune of the source stays at 0.86 (plain: 0.95).
1. **Layer alignment.** Each stored block sits at relative depth ``(i + 1) / n_layers``. For every source
   block, take the best CKA over suspect blocks within ``ALIGN_WINDOW`` (0.1) of its depth, or the nearest
   block when none is that close; the score is the mean over source blocks. This pairs blocks of models with
   different depths (pruned, grown) by position, and tolerates a dropped block.
2. **Null per source.** The same score between the source and every other registry entry that is not
   declared related to it (``related`` in either direction, or a shared declared relative), reference entries
   included. At least ``MIN_NULL`` (3) such scores are needed.
3. **p-value.** Scores are mapped by Fisher's ``atanh``; with null mean μ, standard deviation s over n
   values, ``T = (atanh(score) − μ) / (s·√(1 + 1/n))`` follows Student's t with n − 1 degrees of freedom
   when the suspect is one more unrelated model, so ``p = P(t ≥ T)`` is a prediction-interval p-value.
   ``z = (atanh(score) − μ) / s`` is reported beside it. p-values are Holm-adjusted over the sources checked.
4. **Decision.** A source with adjusted p < ``alpha`` (0.01) is a match; ≥ ``UNRELATED_P`` (0.1) is
   unrelated; between is inconclusive, and so is a source whose null is too small. Matches are grouped into
   families by declared relations: one family → derived (from its best-scoring source), two or more →
   merged (naming the best source of each family). No match → unrelated, or inconclusive if any source was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConfigError, RegistryError
from bot.reef.cka import MEASURES, Measure, condition_grams
from bot.reef.fingerprint import Fingerprint

REPORT_SCHEMA_VERSION = 1
ALIGN_WINDOW = 0.1
MIN_NULL = 3
DEFAULT_ALPHA = 0.01
UNRELATED_P = 0.1
_MAX_ATANH_INPUT = 1 - 1e-7


class Verdict(StrEnum):
    """What the evidence says about a suspect (overall) or about one source."""

    DERIVED = "derived"
    MERGED = "merged"
    UNRELATED = "unrelated"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceMatch:
    """The evidence about one registry source.

    Attributes:
        source: the source's registry name.
        score: layer-aligned CKA (rule 1 of the module docstring).
        best_pair: (source block, suspect block) of the highest cell of the grid; best_pair_score its CKA.
        z: standard score of ``atanh(score)`` against the source's null; None without a null.
        p_value: one-sided prediction p-value; p_adjusted: Holm-adjusted over all sources checked.
        n_null: how many unrelated entries formed the null; null_mean its mean CKA.
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
    p_adjusted: float | None
    n_null: int
    null_mean: float | None
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
            "p_adjusted": self.p_adjusted,
            "n_null": self.n_null,
            "null_mean": None if self.null_mean is None else round(self.null_mean, 4),
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
        verdict: the overall verdict; sources: the sources it names (one if derived, two or more if merged).
        reason: one sentence saying which rule decided.
        matches: per-source evidence, most significant first.
    """

    schema_version: int = REPORT_SCHEMA_VERSION
    suspect: str
    suspect_model: str
    measure: str
    conditioned: bool
    alpha: float
    verdict: Verdict
    sources: tuple[str, ...]
    reason: str
    matches: tuple[SourceMatch, ...]

    def to_dict(self) -> dict[str, Any]:
        """The JSON schema documented in the README."""
        return {
            "schema_version": self.schema_version,
            "suspect": self.suspect,
            "suspect_model": self.suspect_model,
            "measure": self.measure,
            "conditioned": self.conditioned,
            "alpha": self.alpha,
            "verdict": str(self.verdict),
            "sources": list(self.sources),
            "reason": self.reason,
            "matches": [match.to_dict() for match in self.matches],
        }


def relative_depths(layers: Sequence[int], n_layers: int) -> NDArray[np.float64]:
    """Relative depth ``(i + 1) / n_layers`` of each block index."""
    return (np.asarray(layers, dtype=np.float64) + 1.0) / n_layers


def aligned_score(
    grid: NDArray[np.floating], source_depths: NDArray[np.floating], suspect_depths: NDArray[np.floating]
) -> float:
    """Mean over source blocks of the best CKA among suspect blocks at a similar relative depth.

    Example:
        >>> grid = np.array([[0.9, 0.2], [0.3, 0.8]])
        >>> round(aligned_score(grid, np.array([0.5, 1.0]), np.array([0.5, 1.0])), 6)
        0.85
    """
    gaps = np.abs(source_depths[:, None] - suspect_depths[None, :])
    near = (gaps <= ALIGN_WINDOW + 1e-9) | (gaps == gaps.min(axis=1, keepdims=True))
    return float(np.where(near, grid, -np.inf).max(axis=1).mean())


def _related(a: Fingerprint, b: Fingerprint) -> bool:
    return a.name in b.related or b.name in a.related or bool(set(a.related) & set(b.related))


def _prediction_p(score: float, null: NDArray[np.float64]) -> tuple[float, float]:
    """(z, one-sided p) of ``score`` as one more draw from the null, on Fisher's atanh scale."""
    from scipy import stats

    fisher = np.arctanh(np.clip(null, -_MAX_ATANH_INPUT, _MAX_ATANH_INPUT))
    value = float(np.arctanh(np.clip(score, -_MAX_ATANH_INPUT, _MAX_ATANH_INPUT)))
    mean, std = float(fisher.mean()), max(float(fisher.std(ddof=1)), 1e-6)
    n = len(fisher)
    t = (value - mean) / (std * np.sqrt(1 + 1 / n))
    return (value - mean) / std, float(stats.t.sf(t, df=n - 1))


def _holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error over the sources checked)."""
    order = np.argsort(p_values)
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


class _Grids:
    """Layer-by-layer CKA between fingerprints, each fingerprint prepared for the measure once."""

    def __init__(self, measure: Measure, *, conditioned: bool) -> None:
        self.measure = measure
        self.conditioned = conditioned
        self._prepared: dict[str, NDArray[np.float64]] = {}

    def grid(self, a: Fingerprint, b: Fingerprint) -> NDArray[np.float64]:
        result: NDArray[np.float64] = self._prepare(a) @ self._prepare(b).T
        return result

    def score(self, a: Fingerprint, b: Fingerprint) -> float:
        return aligned_score(
            self.grid(a, b), relative_depths(a.layers, a.n_layers), relative_depths(b.layers, b.n_layers)
        )

    def _prepare(self, fp: Fingerprint) -> NDArray[np.float64]:
        if fp.digest not in self._prepared:
            grams = condition_grams(fp.grams, fp.probe_basis) if self.conditioned else fp.grams
            self._prepared[fp.digest] = self.measure.prepare(grams)
        return self._prepared[fp.digest]


def check_compatible(suspect: Fingerprint, entry: Fingerprint) -> None:
    """Raise unless two fingerprints were made with the same probes and preprocessing.

    Raises:
        RegistryError: naming the entry and what differs, with the fix.
    """
    if entry.probe_sha256 != suspect.probe_sha256:
        raise RegistryError(
            f"registry entry {entry.name!r} was made with probe set {entry.probe_set!r} "
            f"({entry.probe_sha256[:12]}), this run used {suspect.probe_set!r} ({suspect.probe_sha256[:12]}); "
            "re-fingerprint one of them with the same --probes"
        )
    if entry.standardize != suspect.standardize:
        raise RegistryError(
            f"registry entry {entry.name!r} was made with standardize={entry.standardize}, "
            f"this run with standardize={suspect.standardize}; re-fingerprint one of them"
        )


def measure_named(name: str) -> Measure:
    """The similarity measure called ``name``.

    Raises:
        ConfigError: unknown measure.
    """
    if name not in MEASURES:
        raise ConfigError(f"unknown measure {name!r} (known: {', '.join(MEASURES)})", key="measure")
    return MEASURES[name]


def pair_grid(
    a: Fingerprint, b: Fingerprint, *, measure: str = "linear", conditioned: bool = True
) -> tuple[NDArray[np.float64], float]:
    """The full layer×layer CKA grid of two fingerprints (rows: ``a``'s blocks) and their aligned score.

    Raises:
        RegistryError: the fingerprints used different probes or preprocessing.
        ConfigError: unknown measure.
    """
    check_compatible(a, b)
    grids = _Grids(measure_named(measure), conditioned=conditioned)
    return grids.grid(a, b), grids.score(a, b)


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
            checked, and all entries calibrate the nulls.
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
    grids = _Grids(measure_named(measure), conditioned=conditioned)
    # The suspect may itself be in the registry (a rerun on a registered model): never its own null.
    entries = [entry for entry in registry if entry.digest != fp.digest or entry.name != fp.name]
    for entry in entries:
        check_compatible(fp, entry)
    sources = [entry for entry in entries if entry.role == "source"]
    evidence: list[dict[str, Any]] = []
    for source in sources:
        null = np.array(
            [grids.score(source, other) for other in entries if other is not source and not _related(source, other)]
        )
        grid = grids.grid(source, fp)
        best = np.unravel_index(int(np.argmax(grid)), grid.shape)
        score = grids.score(source, fp)
        z, p = _prediction_p(score, null) if len(null) >= MIN_NULL else (None, None)
        evidence.append(
            {
                "source": source,
                "grid": grid,
                "score": score,
                "best_pair": (source.layers[best[0]], fp.layers[best[1]]),
                "best_pair_score": float(grid[best]),
                "z": z,
                "p_value": p,
                "n_null": len(null),
                "null_mean": float(null.mean()) if len(null) else None,
            }
        )
    tested = [item for item in evidence if item["p_value"] is not None]
    for item, adjusted in zip(tested, _holm([item["p_value"] for item in tested]), strict=True):
        item["p_adjusted"] = adjusted
    matches = sorted(
        (_source_match(item, fp, alpha) for item in evidence),
        key=lambda m: (m.p_adjusted if m.p_adjusted is not None else 2.0, -m.score),
    )
    verdict, named, reason = _decide(matches, {s.name: s for s in sources}, alpha)
    return Report(
        suspect=fp.name,
        suspect_model=fp.model,
        measure=measure,
        conditioned=conditioned,
        alpha=alpha,
        verdict=verdict,
        sources=named,
        reason=reason,
        matches=tuple(matches),
    )


def _source_match(item: dict[str, Any], fp: Fingerprint, alpha: float) -> SourceMatch:
    adjusted = item.get("p_adjusted")
    if adjusted is None:
        verdict = Verdict.INCONCLUSIVE
    elif adjusted < alpha:
        verdict = Verdict.DERIVED
    elif adjusted >= UNRELATED_P:
        verdict = Verdict.UNRELATED
    else:
        verdict = Verdict.INCONCLUSIVE
    source: Fingerprint = item["source"]
    return SourceMatch(
        source=source.name,
        score=item["score"],
        best_pair=item["best_pair"],
        best_pair_score=item["best_pair_score"],
        z=item["z"],
        p_value=item["p_value"],
        p_adjusted=adjusted,
        n_null=item["n_null"],
        null_mean=item["null_mean"],
        verdict=verdict,
        source_layers=source.layers,
        suspect_layers=fp.layers,
        grid=item["grid"],
    )


def _decide(
    matches: Sequence[SourceMatch], sources: dict[str, Fingerprint], alpha: float
) -> tuple[Verdict, tuple[str, ...], str]:
    """Overall verdict, the sources it names, and the reason, from per-source evidence (rule 4)."""
    hits = [m for m in matches if m.verdict is Verdict.DERIVED]
    if not hits:
        unsure = [m for m in matches if m.verdict is Verdict.INCONCLUSIVE]
        if not matches:
            return Verdict.INCONCLUSIVE, (), "the registry has no sources to check against"
        if unsure:
            names = ", ".join(m.source for m in unsure)
            return (
                Verdict.INCONCLUSIVE,
                (),
                f"weak or uncalibrated evidence for {names} (no source at p < {alpha})",
            )
        return Verdict.UNRELATED, (), f"no source reaches adjusted p < {alpha}"
    families: list[list[SourceMatch]] = []
    for hit in hits:  # most significant first, so each family's first member is its best source
        family = next((f for f in families if any(_related(sources[hit.source], sources[m.source]) for m in f)), None)
        if family is None:
            families.append([hit])
        else:
            family.append(hit)
    named = tuple(family[0].source for family in families)
    if len(families) == 1:
        return (
            Verdict.DERIVED,
            named,
            f"{named[0]} matches at adjusted p = {hits[0].p_adjusted:.2g} < {alpha}",
        )
    listed = " and ".join(named)
    return Verdict.MERGED, named, f"{len(named)} unrelated sources match at adjusted p < {alpha}: {listed}"
