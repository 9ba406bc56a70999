"""From CKA grids to a calibrated verdict: derived, merged, unrelated or inconclusive.

A bare CKA threshold does not work: an independently trained model of the same architecture on the same data
scores 0.76-0.94 (REEF appendix F, and the same on our tiny models), so what counts as "high" depends on the
source. The rule:

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
4. **Decision.** A source with adjusted p < ``alpha`` (0.01) whose score also exceeds the null ceiling (the
   highest score between any source checked and an entry unrelated to it) is a match. A significant score at
   or under the ceiling is inconclusive: the null of that source does not cover models like the suspect (a
   registry whose only references are tiny models puts two real pretrained LMs far out in the tail of each
   other's null; measured: MiniLM against Gemma 3 270M scores 0.38, its toy-only null 0.22-0.31, while toy
   pairs reach 0.49). Adjusted p ≥ ``UNRELATED_P`` (0.1) is unrelated; between is inconclusive, and so is a
   source whose null is too small. Matches are grouped into
   families by declared relations: one family → derived (from its best-scoring source), two or more →
   merged (naming the best source of each family). No match → unrelated, or inconclusive if any source was.
5. **Weights** (``bot.reef.weights``). When the source and the suspect both carry anchor rows, share at
   least ``MIN_SHARED`` anchor tokens, and the source has ``MIN_NULL`` unrelated entries to compare with,
   the weights decide that source instead of CKA. Two statistics are computed on the rows' fine parts:
   *units* (hidden units paired one to one; survives permutations and per-unit scales) and *geometry*
   (linear CKA of the rows; survives any rotation of the residual stream). Each gets the same prediction
   p-value against the source's null (rule 3) and its own ceiling (rule 4, over that statistic's null
   scores). The statistic that decides is the one with the smaller p-value among those over their floor
   (``FLOORS``: 0.8 for units, 0.9 for geometry) and ceiling, else the one with the smaller p-value; its
   p-value is doubled (Bonferroni, which stays valid since the chosen p is never below the smaller one), and
   a match needs its score over floor and ceiling. Representations cannot tell a fine-tune from an independent model
   of the same architecture and data; the weights separate them by tens of standard deviations (lineage
   zoo: every derivative 0.97 or more, every independent model 0.53 or less). The floor is there because
   a registry rarely holds the hardest null: two GPT-2 seeds on the same data and tokenizer score 0.56 on
   the demo models, four standard deviations above the cross-architecture pairs (0.44-0.52), and briefly
   trained same-data models reach 0.74 (bench/calibration.py), so without such a twin in the null their
   p-value alone could accuse. A merge's components are judged on what the other components leave
   (rule 6), where they score near 1.0 although each correlates only 0.72 with the merge. Where the
   weights fall short but CKA is significant, the source is inconclusive, not a match: the suspect
   computes like the source without its weights (a distilled student, or convergent training), which is
   not evidence of copying. Without weight evidence (other tokenizer families, old entries) rules 1-4
   decide alone. The Holm adjustment runs over each source's deciding p-value (``p_fused``), and every
   match says which evidence carried it.
6. **Merge components.** A merge correlates only partly with each component (an equal two-way average:
   about 0.72; a 0.4 share: 0.55). Each source is also aligned with the suspect's rows less the fitted
   share (non-negative least squares) of the other *candidates*, the sources whose weight p-value is under
   alpha, and that evidence replaces the direct one where stronger (``WeightEvidence.net_of`` names what was
   taken out); a source that becomes significant joins the candidates, until nothing changes. A merge's
   components then score near 1.0; an independent model gains nothing. ``Report.merge_coefficients``
   gives each named source's share.
7. **Merges with an unregistered parent.** A merge scales each parent's rows by its coefficient, so a
   suspect that holds a source's own units (units score at least ``MERGE_FLOOR``, 0.5, above that
   statistic's ceiling, adjusted p < alpha) at a share of at most ``MAX_MERGE_SHARE`` (0.8; a fine-tune
   holds about 1.0), the source explaining at most ``MAX_MERGE_EXPLAINED`` (0.87) of its rows, is merged: the
   verdict names the source, its share (``bot.reef.weights.WeightScores.share``)
   and an unregistered parent holding the rest (``Report.unregistered_share``). On the demo models a 50/50
   merge with a model outside the registry scores 0.62 on the units, independent models 0.24-0.33.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConfigError, RegistryError
from bot.reef.cka import MEASURES, Measure, condition_grams
from bot.reef.fingerprint import Fingerprint
from bot.reef.weights import STATISTICS, Alignment, Anchors, align, fit_sources, weight_scores

REPORT_SCHEMA_VERSION = 3
ALIGN_WINDOW = 0.1
MIN_NULL = 3
DEFAULT_ALPHA = 0.01
UNRELATED_P = 0.1
NULL_SIZE_RATIO = 10.0
WEIGHT_FLOOR = 0.8
GEOMETRY_FLOOR = 0.9
# The score a weight statistic must reach to convict (rule 5). Geometry needs more: a student distilled through
# tied embeddings learns its teacher's token geometry without its weights (lineage zoo: 0.85, against 0.93 or
# more for every derivative).
FLOORS = {"units": WEIGHT_FLOOR, "geometry": GEOMETRY_FLOOR}
MERGE_FLOOR = 0.5
MAX_MERGE_SHARE = 0.8
# A merge's other parent explains the rest of the suspect's rows; a derivative leaves only what training changed.
# Lineage zoo: 70/30 merges with an outside model 0.82-0.84 explained by the source, fine-tunes and merges of
# fine-tunes 0.885-0.967. This keeps a copy whose residual stream was rescaled (its share drops, nothing is added)
# from reading as a merge.
MAX_MERGE_EXPLAINED = 0.87
_MAX_ATANH_INPUT = 1 - 1e-7


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
        """The JSON schema documented in the README."""
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


def approximate_parameters(fp: Fingerprint) -> int:
    """A model's size as ``12 · blocks · width²``, its parameters outside the embeddings for the usual
    transformer shapes (attention 4·d², MLP 8·d²); enough to say whether two models are of one size class.

    Example:
        >>> from types import SimpleNamespace
        >>> approximate_parameters(SimpleNamespace(n_layers=32, hidden_size=4096))  # Llama 2 7B: 6.5B outside
        6442450944
    """
    return 12 * fp.n_layers * fp.hidden_size**2


def _null_composition(
    source: Fingerprint, sizes: NDArray[np.float64], mask: NDArray[np.bool_]
) -> tuple[tuple[int, int] | None, str | None]:
    """The size range of the null's models (``sizes[mask]``) and, when none is within ``NULL_SIZE_RATIO`` of
    the source's size, why that weakens its p-value."""
    members = sizes[mask]
    if not len(members):
        return None, None
    size = approximate_parameters(source)
    smallest, largest = int(members.min()), int(members.max())
    if np.any((members >= size / NULL_SIZE_RATIO) & (members <= size * NULL_SIZE_RATIO)):
        return (smallest, largest), None
    return (smallest, largest), (
        f"no model in {source.name}'s null is within {NULL_SIZE_RATIO:g}x of its size ({format_parameters(size)}; null "
        f"{format_parameters(smallest)}-{format_parameters(largest)}): add reference entries of its size class "
        "(reefguard hub add-references)"
    )


def format_parameters(parameters: int) -> str:
    """A parameter count in three digits.

    Example:
        >>> format_parameters(6_442_450_944), format_parameters(88_473_600), format_parameters(196_608)
        ('6.44B', '88.5M', '197k')
    """
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if parameters >= scale:
            return f"{parameters / scale:.3g}{unit}"
    return str(parameters)


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
    return float(np.where(_near(source_depths, suspect_depths), grid, -np.inf).max(axis=1).mean())


def _related(a: Fingerprint, b: Fingerprint) -> bool:
    return a.name in b.related or b.name in a.related or bool(set(a.related) & set(b.related))


def _prediction_p(score: float, null: NDArray[np.float64]) -> tuple[float, float]:
    """(z, one-sided p) of ``score`` as one more draw from the null, on Fisher's atanh scale."""
    from scipy import special  # stdtr(df, -t) is what stats.t.sf computes, without importing scipy.stats

    fisher = np.arctanh(np.clip(null, -_MAX_ATANH_INPUT, _MAX_ATANH_INPUT))
    value = float(np.arctanh(np.clip(score, -_MAX_ATANH_INPUT, _MAX_ATANH_INPUT)))
    mean, std = float(fisher.mean()), max(float(fisher.std(ddof=1)), 1e-6)
    n = len(fisher)
    t = (value - mean) / (std * np.sqrt(1 + 1 / n))
    return (value - mean) / std, float(special.stdtr(n - 1, -t))


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


# Grams prepared per group are stacked this many bytes at a time (float64), to bound the temporary copies.
_PREPARE_CHUNK_BYTES = 8 << 20
# Null scores are computed for this many sources at a time: (sources x entries) float64 per block pair.
_NULL_CHUNK_SOURCES = 256


class _Stack:
    """Every fingerprint of one check, prepared once and stacked row by row (one row per stored block).

    Grids of one fingerprint against many are then one matrix product, and the aligned scores of sources
    against every entry with the same block depths are one masked reduction; this is what makes checking a
    model against a registry of thousands of entries a few matrix products (issue 7). Prepared rows are
    flattened symmetric m x m matrices, so each is stored as its upper triangle with the off-diagonal scaled
    by sqrt(2): dot products are unchanged (up to float64 roundoff, ~1e-16) at half the work.
    """

    def __init__(self, fps: Sequence[Fingerprint], measure: Measure, *, conditioned: bool) -> None:
        self.starts = np.cumsum([0, *(len(fp.layers) for fp in fps)])
        self.depths = [relative_depths(fp.layers, fp.n_layers) for fp in fps]
        self.rows = self._prepare(fps, measure, conditioned=conditioned)

    def _prepare(self, fps: Sequence[Fingerprint], measure: Measure, *, conditioned: bool) -> NDArray[np.float64]:
        """Packed prepared rows of every fingerprint; fingerprints sharing a probe basis are conditioned together."""
        by_basis: dict[tuple[tuple[int, ...], bytes], list[int]] = {}
        for index, fp in enumerate(fps):
            key = (fp.probe_basis.shape, fp.probe_basis.tobytes()) if conditioned else ((), b"")
            by_basis.setdefault(key, []).append(index)
        m = fps[-1].n_probes
        upper = np.triu_indices(m)
        weights = np.where(upper[0] == upper[1], 1.0, np.sqrt(2.0))
        rows = np.empty((int(self.starts[-1]), len(weights)), dtype=np.float64)
        for members in by_basis.values():
            basis = fps[members[0]].probe_basis
            chunk: list[int] = []
            chunk_bytes = 0
            for position, index in enumerate(members):
                chunk.append(index)
                chunk_bytes += 2 * fps[index].grams.nbytes  # float32 -> float64
                if chunk_bytes >= _PREPARE_CHUNK_BYTES or position == len(members) - 1:
                    grams = np.concatenate([fps[i].grams for i in chunk])
                    prepared = measure.prepare(condition_grams(grams, basis) if conditioned else grams)
                    packed = prepared.reshape(-1, m, m)[:, upper[0], upper[1]] * weights
                    if chunk[-1] - chunk[0] == len(chunk) - 1:  # consecutive entries: one copy
                        rows[self.starts[chunk[0]] : self.starts[chunk[-1] + 1]] = packed
                    else:
                        offset = 0
                        for i in chunk:
                            size = len(fps[i].layers)
                            rows[self.starts[i] : self.starts[i + 1]] = packed[offset : offset + size]
                            offset += size
                    chunk, chunk_bytes = [], 0
        return rows

    def block(self, index: int) -> NDArray[np.float64]:
        """The packed prepared rows of fingerprint ``index``."""
        return self.rows[self.starts[index] : self.starts[index + 1]]

    def grids_against(self, index: int, others: Iterable[int]) -> dict[int, NDArray[np.float64]]:
        """Grid of each of ``others`` (rows) against fingerprint ``index`` (columns), from one product."""
        product = self.rows @ self.block(index).T
        return {other: product[self.starts[other] : self.starts[other + 1]] for other in others}

    def null_scores(
        self, sources: Sequence[int], others: range, masks: Sequence[NDArray[np.bool_]]
    ) -> list[NDArray[np.float64]]:
        """For each source, its aligned scores against the ``others`` its mask keeps, in ``others``' order.

        Only the (source block, entry block) pairs that ``aligned_score`` compares are computed: for models of
        equal depth, one entry block per source block instead of all of them.
        """
        groups = self._depth_groups(others)
        scores: dict[int, NDArray[np.float64]] = {}
        by_depths: dict[bytes, list[int]] = {}
        for position, source in enumerate(sources):
            by_depths.setdefault(self.depths[source].tobytes(), []).append(position)
        for positions in by_depths.values():
            source_depths = self.depths[sources[positions[0]]]
            for first in range(0, len(positions), _NULL_CHUNK_SOURCES):
                chunk = positions[first : first + _NULL_CHUNK_SOURCES]
                source_blocks = np.stack([self.block(sources[p]) for p in chunk])  # (sources, blocks, row)
                all_scores = np.empty((len(chunk), len(others)), dtype=np.float64)
                for members, entry_blocks, depths in groups:
                    near = _near(source_depths, depths)
                    total = np.zeros((len(chunk), len(members)))
                    for i, compared in enumerate(near):
                        best = np.full((len(chunk), len(members)), -np.inf)
                        for j in np.flatnonzero(compared):
                            np.maximum(best, source_blocks[:, i, :] @ entry_blocks[j].T, out=best)
                        total += best
                    all_scores[:, members] = total / len(source_depths)
                for k, p in enumerate(chunk):
                    scores[p] = all_scores[k][masks[p]]
        return [scores[p] for p in range(len(sources))]

    def _depth_groups(
        self, others: range
    ) -> list[tuple[NDArray[np.intp], list[NDArray[np.float64]], NDArray[np.float64]]]:
        """Entries with the same block depths: (their positions in ``others``, per block the (entry, row) rows
        of that block, the depths). Entries laid out evenly (all of one width) give strided views, not copies."""
        keyed: dict[bytes, list[int]] = {}
        for position, index in enumerate(others):
            keyed.setdefault(self.depths[index].tobytes(), []).append(position)
        groups = []
        for positions in keyed.values():
            depths = self.depths[others[positions[0]]]
            starts = self.starts[[others[p] for p in positions]]
            step = int(starts[1] - starts[0]) if len(starts) > 1 else 1
            if np.all(np.diff(starts) == step):
                blocks = [self.rows[starts[0] + j : starts[-1] + j + 1 : step] for j in range(len(depths))]
            else:
                blocks = [self.rows[starts + j] for j in range(len(depths))]
            groups.append((np.asarray(positions, dtype=np.intp), blocks, depths))
        return groups


def _near(source_depths: NDArray[np.floating], suspect_depths: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Which (source block, suspect block) pairs ``aligned_score`` compares (rule 1 of the module docstring)."""
    gaps = np.abs(source_depths[:, None] - suspect_depths[None, :])
    near: NDArray[np.bool_] = (gaps <= ALIGN_WINDOW + 1e-9) | (gaps == gaps.min(axis=1, keepdims=True))
    return near


def _unrelated_masks(entries: Sequence[Fingerprint], sources: Sequence[int]) -> list[NDArray[np.bool_]]:
    """For each source, which entries form its null: every other entry not related to it (``_related``)."""
    declaring: dict[str, list[int]] = {}  # name -> entries that declare it in ``related``
    for index, entry in enumerate(entries):
        for name in entry.related:
            declaring.setdefault(name, []).append(index)
    by_name: dict[str, list[int]] = {}
    for index, entry in enumerate(entries):
        by_name.setdefault(entry.name, []).append(index)
    masks = []
    for index in sources:
        source = entries[index]
        mask = np.ones(len(entries), dtype=bool)
        mask[index] = False
        mask[declaring.get(source.name, [])] = False
        for name in source.related:
            mask[by_name.get(name, [])] = False
            mask[declaring.get(name, [])] = False
        masks.append(mask)
    return masks


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
    # The suspect may itself be in the registry (a rerun on a registered model): never its own null.
    entries = [entry for entry in registry if entry.digest != fp.digest or entry.name != fp.name]
    for entry in entries:
        check_compatible(fp, entry)
    stack = _Stack([*entries, fp], measure_named(measure), conditioned=conditioned)
    suspect = len(entries)
    sources = [index for index, entry in enumerate(entries) if entry.role == "source"]
    suspect_grids = stack.grids_against(suspect, range(len(entries)))
    masks = _unrelated_masks(entries, sources)
    nulls = stack.null_scores(sources, range(len(entries)), masks)
    weight_nulls = [_weight_null(entries[index], entries, mask) for index, mask in zip(sources, masks, strict=True)]
    ceiling = max((float(null.max()) for null in nulls if len(null)), default=None)
    weight_ceilings = _weight_ceilings(weight_nulls)
    evidence: list[dict[str, Any]] = []
    sizes = np.array([approximate_parameters(entry) for entry in entries], dtype=np.float64)
    for index, null, weight_null, mask in zip(sources, nulls, weight_nulls, masks, strict=True):
        source = entries[index]
        null_parameters, null_warning = _null_composition(source, sizes, mask)
        grid = suspect_grids[index]
        best = np.unravel_index(int(np.argmax(grid)), grid.shape)
        score = aligned_score(grid, stack.depths[index], stack.depths[suspect])
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
                "null_parameters": null_parameters,
                "null_warning": null_warning,
                "above_ceiling": ceiling is None or score > ceiling,
                "weight_null": weight_null,
                "direct_weights": _weight_evidence(source.anchors, fp.anchors, weight_null, weight_ceilings),
            }
        )
    for item in evidence:
        item["weights"] = item["direct_weights"]
    _look_for_more_sources(evidence, fp, alpha, weight_ceilings)
    matches = _judge(evidence, fp, alpha, weight_ceilings)
    sources_by_name = {entries[index].name: entries[index] for index in sources}
    verdict, named, reason = _decide(matches, sources_by_name, alpha, ceiling, weight_ceilings)
    coefficients, fit = _merge_shares(fp, [sources_by_name[name] for name in named])
    unregistered = None
    held = _held_shares(matches, named)
    if held is not None:  # rule 7: shares on the rows' fine parts, which the unregistered parent does not bias
        coefficients, fit, unregistered = held, None, max(0.0, 1.0 - sum(held.values()))
        verdict, reason = Verdict.MERGED, _unregistered_reason(matches, held, alpha)
    return Report(
        suspect=fp.name,
        suspect_model=fp.model,
        measure=measure,
        conditioned=conditioned,
        alpha=alpha,
        null_ceiling=ceiling,
        weight_ceilings=weight_ceilings,
        verdict=verdict,
        sources=named,
        merge_coefficients=coefficients,
        merge_fit=fit,
        unregistered_share=unregistered,
        reason=reason,
        matches=tuple(matches),
    )


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


class WeightJudge:
    """The registry's sources with their weight nulls and ceilings, prepared once, to judge many suspects by their
    anchor rows alone (rules 2, 3 and 5): the first stage of a Hub scan, which reads only those rows.

    Args:
        registry: the known fingerprints; ``role == "source"`` entries are judged against, all calibrate.

    Example:
        >>> WeightJudge([]).judge(Anchors(("a",), np.zeros((1, 2), dtype=np.float32))).reason
        'the registry has no sources'
    """

    def __init__(self, registry: Iterable[Fingerprint]) -> None:
        entries = list(registry)
        sources = [index for index, entry in enumerate(entries) if entry.role == "source"]
        masks = _unrelated_masks(entries, sources)
        self.sources = [entries[index] for index in sources]
        self.nulls = [_weight_null(entries[i], entries, mask) for i, mask in zip(sources, masks, strict=True)]
        self.ceilings = _weight_ceilings(self.nulls)

    def judge(self, suspect: Anchors) -> WeightJudgement:
        """Whether the weights clear ``suspect`` of every source; anything short of that is for the full check."""
        if not self.sources:
            return WeightJudgement(unrelated=False, reason="the registry has no sources", evidence={})
        found = {
            source.name: _weight_evidence(source.anchors, suspect, null, self.ceilings)
            for source, null in zip(self.sources, self.nulls, strict=True)
        }
        calibrated = {name: e for name, e in found.items() if e is not None and e.p_value is not None}
        if len(calibrated) < len(found):
            missing = ", ".join(name for name in found if name not in calibrated)
            return WeightJudgement(
                unrelated=False,
                reason=f"no calibrated weight evidence for {missing} (too few shared anchor tokens or fewer than "
                f"{MIN_NULL} unrelated entries)",
                evidence=found,
            )
        p_values = [e.p_value if e.p_value is not None else 1.0 for e in calibrated.values()]
        adjusted = dict(zip(calibrated, _holm(p_values), strict=True))
        closest = min(adjusted, key=lambda name: adjusted[name])
        evidence = calibrated[closest]
        described = f"{closest} {evidence.score:.3f} on {evidence.statistic}, adjusted p {adjusted[closest]:.2g}"
        if adjusted[closest] < UNRELATED_P:
            return WeightJudgement(unrelated=False, reason=f"not cleared: {described}", evidence=found)
        return WeightJudgement(
            unrelated=True,
            reason=f"unrelated on the weights to all {len(found)} sources (closest: {described})",
            evidence=found,
        )


def _judge(
    evidence: Sequence[dict[str, Any]], fp: Fingerprint, alpha: float, weight_ceilings: Mapping[str, float]
) -> list[SourceMatch]:
    """Fuse each source's evidence (rule 5), Holm-adjust the deciding p-values, and decide per source."""
    for item in evidence:
        p, weights = item["p_value"], item["weights"]
        item["representations_match"] = p is not None and p < alpha and item["above_ceiling"]
        item["part_of_merge"] = False
        if weights is None or weights.p_value is None:
            item["p_fused"], item["clears_ceiling"] = p, item["above_ceiling"]
        else:
            item["p_fused"], item["clears_ceiling"] = (
                weights.p_value,
                _convicts(weights.statistic, weights.score, weight_ceilings),
            )
            units_above = weights.scores["units"] > weight_ceilings.get("units", -np.inf)
            item["part_of_merge"] = units_above and _holds_a_share(weights)
        item["p_adjusted"] = None
    tested = [item for item in evidence if item["p_fused"] is not None]
    for item, adjusted in zip(tested, _holm([item["p_fused"] for item in tested]), strict=True):
        item["p_adjusted"] = adjusted
    return sorted(
        (_source_match(item, fp, alpha) for item in evidence),
        key=lambda m: (m.p_adjusted if m.p_adjusted is not None else 2.0, -m.score),
    )


def _look_for_more_sources(
    evidence: Sequence[dict[str, Any]], fp: Fingerprint, alpha: float, weight_ceilings: Mapping[str, float]
) -> None:
    """Rule 6: align each source with what the other candidate sources leave of the suspect's rows.

    Candidates are the sources whose weight p-value is under ``alpha``; they are fitted together (strongest
    direct alignment first, ``bot.reef.weights.fit_sources``), and each source is aligned with the suspect's
    rows less the other candidates' terms. A merge's components each stand out once the others are gone (an
    equal average correlates about 0.72 with each, what one leaves about 1.0), while an independent model
    gains nothing. A source's weight evidence is replaced where the residual's is stronger, and it joins the
    candidates when that reaches ``alpha``; repeated until nothing changes.
    """
    if fp.anchors is None:
        return
    comparable = [item for item in evidence if item["source"].anchors is not None and _null_size(item["weight_null"])]
    for _ in range(len(comparable)):
        candidates = sorted(
            (item for item in comparable if _significant(item, alpha)),
            key=lambda item: _score(item["direct_weights"]),
            reverse=True,
        )
        fit = fit_sources(fp.anchors, [item["source"].anchors for item in candidates]) if candidates else None
        if fit is None:
            return
        changed = False
        for item in comparable:
            others = [c["source"].name for c in candidates if c is not item]
            if not others:
                continue
            left = fit.residual.rows
            if item in candidates:
                left = left + fit.parts[candidates.index(item)].rows
            found = _weight_evidence(
                item["source"].anchors,
                Anchors(fit.residual.tokens, left),
                item["weight_null"],
                weight_ceilings,
                net_of=tuple(others),
            )
            if found is not None and found.p_value is not None and found.score > _score(item["weights"]):
                item["weights"] = found
                changed = True
        if not changed:
            return


def _holds_a_share(weights: WeightEvidence | None) -> bool:
    """Rule 7: the suspect holds the source's own units, scaled down as a merge scales its parents."""
    return weights is not None and weights.share is not None and weights.share <= MAX_MERGE_SHARE


def _significant(item: dict[str, Any], alpha: float) -> bool:
    weights: WeightEvidence | None = item["weights"]
    return weights is not None and weights.p_value is not None and weights.p_value < alpha


def _score(weights: WeightEvidence | None) -> float:
    return -1.0 if weights is None else weights.score


def _weight_null(
    source: Fingerprint, entries: Sequence[Fingerprint], mask: NDArray[np.bool_]
) -> dict[str, NDArray[np.float64]]:
    """Each statistic's scores of the source against the unrelated entries its vocabulary overlaps enough."""
    scores: dict[str, list[float]] = {name: [] for name in STATISTICS}
    if source.anchors is not None:
        for entry, unrelated in zip(entries, mask, strict=True):
            if unrelated and entry.anchors is not None:
                found = weight_scores(source.anchors, entry.anchors)
                if found is not None:
                    for name, value in found.scores.items():
                        scores[name].append(value)
    return {name: np.asarray(values, dtype=np.float64) for name, values in scores.items()}


def _null_size(null: Mapping[str, NDArray[np.float64]]) -> int:
    return min(len(values) for values in null.values())


def _weight_ceilings(nulls: Sequence[Mapping[str, NDArray[np.float64]]]) -> dict[str, float]:
    """Per statistic, the highest score between any source and an entry unrelated to it (rule 5)."""
    usable = [null for null in nulls if _null_size(null) >= MIN_NULL]
    return {name: max(float(null[name].max()) for null in usable) for name in STATISTICS} if usable else {}


def _convicts(statistic: str, score: float, weight_ceilings: Mapping[str, float]) -> bool:
    """Whether a weight score is over its statistic's floor and ceiling (rule 5)."""
    return score >= FLOORS[statistic] and score > weight_ceilings.get(statistic, -np.inf)


def _weight_evidence(
    source: Anchors | None,
    suspect: Anchors | None,
    null: Mapping[str, NDArray[np.float64]],
    weight_ceilings: Mapping[str, float],
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
    calibrated = _null_size(null) >= MIN_NULL
    tests = {name: _prediction_p(score, null[name]) if calibrated else (None, None) for name, score in scores.items()}
    if calibrated:
        convicting = [name for name in scores if _convicts(name, scores[name], weight_ceilings)]
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
        n_null=_null_size(null),
        null_mean=float(null[statistic].mean()) if _null_size(null) else None,
        net_of=net_of,
    )


def _merge_shares(fp: Fingerprint, named: Sequence[Fingerprint]) -> tuple[dict[str, float], float | None]:
    """Each named source's share of the suspect's anchor rows, when every one of them has anchors.

    They are fitted strongest unit alignment first: a minor component aligns well only with what the major one
    leaves.
    """
    if not named or fp.anchors is None or any(source.anchors is None for source in named):
        return {}, None
    suspect = fp.anchors
    alignments = {source.name: align(source.anchors, suspect) for source in named if source.anchors is not None}
    ordered = sorted(named, key=lambda source: -_alignment_score(alignments[source.name]))
    fit = fit_sources(suspect, [source.anchors for source in ordered if source.anchors is not None])
    if fit is None:
        return {}, None
    return {source.name: share for source, share in zip(ordered, fit.shares, strict=True)}, fit.r2


def _alignment_score(alignment: Alignment | None) -> float:
    return -1.0 if alignment is None else alignment.score


def _source_match(item: dict[str, Any], fp: Fingerprint, alpha: float) -> SourceMatch:
    adjusted = item.get("p_adjusted")
    weights: WeightEvidence | None = item["weights"]
    carried_by_weights = weights is not None and weights.p_value is not None
    if adjusted is None:
        verdict = Verdict.INCONCLUSIVE
    elif adjusted < alpha and item["clears_ceiling"]:
        verdict = Verdict.DERIVED
    elif adjusted < alpha:
        verdict = Verdict.MERGED if item["part_of_merge"] else Verdict.INCONCLUSIVE
    elif carried_by_weights and item["representations_match"]:
        verdict = Verdict.INCONCLUSIVE  # computes like the source without its weights (rule 5)
    elif adjusted >= UNRELATED_P:
        verdict = Verdict.UNRELATED
    else:
        verdict = Verdict.INCONCLUSIVE
    if not carried_by_weights:
        evidence = Evidence.REPRESENTATIONS
    elif verdict in (Verdict.DERIVED, Verdict.MERGED) and item["representations_match"]:
        evidence = Evidence.BOTH
    else:
        evidence = Evidence.WEIGHTS
    source: Fingerprint = item["source"]
    return SourceMatch(
        source=source.name,
        score=item["score"],
        best_pair=item["best_pair"],
        best_pair_score=item["best_pair_score"],
        z=item["z"],
        p_value=item["p_value"],
        n_null=item["n_null"],
        null_mean=item["null_mean"],
        null_parameters=item["null_parameters"],
        null_warning=item["null_warning"],
        weights=weights,
        evidence=evidence,
        p_fused=item["p_fused"],
        p_adjusted=adjusted,
        verdict=verdict,
        source_layers=source.layers,
        suspect_layers=fp.layers,
        grid=item["grid"],
    )


def _decide(
    matches: Sequence[SourceMatch],
    sources: dict[str, Fingerprint],
    alpha: float,
    ceiling: float | None,
    weight_ceilings: Mapping[str, float],
) -> tuple[Verdict, tuple[str, ...], str]:
    """Overall verdict, the sources it names, and the reason, from per-source evidence (rules 4, 5 and 7)."""
    hits = [m for m in matches if m.verdict in (Verdict.DERIVED, Verdict.MERGED)]
    if not hits:
        if not matches:
            return Verdict.INCONCLUSIVE, (), "the registry has no sources to check against"
        unsure = [m for m in matches if m.verdict is Verdict.INCONCLUSIVE]
        if not unsure:
            return Verdict.UNRELATED, (), f"no source reaches adjusted p < {alpha}"
        return Verdict.INCONCLUSIVE, (), _unsure_reason(unsure, alpha, ceiling, weight_ceilings)
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
            f"{named[0]} matches at adjusted p = {hits[0].p_adjusted:.2g} < {alpha}, on {hits[0].evidence}",
        )
    listed = " and ".join(f"{family[0].source} (on {family[0].evidence})" for family in families)
    return Verdict.MERGED, named, f"{len(named)} unrelated sources match at adjusted p < {alpha}: {listed}"


def _held_shares(matches: Sequence[SourceMatch], named: Sequence[str]) -> dict[str, float] | None:
    """Rule 7: the named sources' shares of the suspect when they leave part of it to a parent the registry does
    not hold (a source matched only as part of a merge, or one source held at most ``MAX_MERGE_SHARE``)."""
    found = [m for m in matches if m.source in named and m.weights is not None and m.weights.share is not None]
    if len(found) != len(named):
        return None
    partial = any(m.verdict is Verdict.MERGED for m in found)
    if not partial and not (len(found) == 1 and _holds_a_share(found[0].weights)):
        return None
    return {m.source: m.weights.share for m in found if m.weights is not None and m.weights.share is not None}


def _unregistered_reason(matches: Sequence[SourceMatch], held: Mapping[str, float], alpha: float) -> str:
    best = next(m for m in matches if m.source in held)
    parts = " and ".join(f"{name} (share {share:.2f})" for name, share in held.items())
    return (
        f"merged from {parts} and an unregistered parent: adjusted p = {best.p_adjusted:.2g} < {alpha}, "
        f"on {best.evidence}"
    )


def _unsure_reason(
    unsure: Sequence[SourceMatch], alpha: float, ceiling: float | None, weight_ceilings: Mapping[str, float]
) -> str:
    """Why no source matched although some were not cleared, most telling reason first."""
    lookalikes = [m for m in unsure if m.weights is not None and m.evidence is Evidence.WEIGHTS]
    lookalikes = [m for m in lookalikes if m.p_value is not None and m.p_value < alpha]
    if lookalikes:
        scores = ", ".join(
            f"{m.source} {m.weights.score:.2f} on {m.weights.statistic}, a copy scores at least "
            f"{max(FLOORS[m.weights.statistic], weight_ceilings.get(m.weights.statistic, 0.0)):.2f}"
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
            f"{m.source} under the {m.weights.statistic} floor / ceiling "
            f"{max(FLOORS[m.weights.statistic], weight_ceilings.get(m.weights.statistic, 0.0)):.3f}"
            if m.evidence is Evidence.WEIGHTS and m.weights is not None
            else f"{m.source} under the null ceiling {ceiling or 0.0:.3f}"
            for m in significant
        )
        return f"evidence the registry's nulls do not cover: p < {alpha} but {limits}"
    return f"weak or uncalibrated evidence for {', '.join(m.source for m in unsure)} (no source at p < {alpha})"
