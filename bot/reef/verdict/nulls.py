"""The statistics engine: layer-aligned CKA scores, every source's null of them, and prediction p-values.

Rules 1-3 of ``bot.reef.verdict``'s docstring: scores of blocks paired by relative depth, the null of each source
(its scores against the entries not related to it), and the p-value of one more score against that null.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from bot.errors import ConfigError, RegistryError
from bot.reef.cka import MEASURES, Measure, condition_grams
from bot.reef.fingerprint import Fingerprint
from bot.reef.verdict.thresholds import ALIGN_WINDOW

_MAX_ATANH_INPUT = 1 - 1e-7


def approximate_parameters(fp: Fingerprint) -> int:
    """A model's size as ``12 · blocks · width²``, its parameters outside the embeddings for the usual
    transformer shapes (attention 4·d², MLP 8·d²); enough to say whether two models are of one size class.

    Example:
        >>> from types import SimpleNamespace
        >>> approximate_parameters(SimpleNamespace(n_layers=32, hidden_size=4096))  # Llama 2 7B: 6.5B outside
        6442450944
    """
    return 12 * fp.n_layers * fp.hidden_size**2


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
    return float(np.where(near(source_depths, suspect_depths), grid, -np.inf).max(axis=1).mean())


def related(a: Fingerprint, b: Fingerprint) -> bool:
    return a.name in b.related or b.name in a.related or bool(set(a.related) & set(b.related))


@dataclass(frozen=True, slots=True)
class NullSummary:
    """What a prediction p-value needs of a null: its size, and its mean and standard deviation on Fisher's atanh
    scale (rule 3). A null's summary does not depend on the suspect, so a kept calibration holds it."""

    n: int
    mean: float
    std: float

    @classmethod
    def of(cls, null: NDArray[np.float64]) -> NullSummary:
        fisher = np.arctanh(np.clip(null, -_MAX_ATANH_INPUT, _MAX_ATANH_INPUT))
        return cls(len(fisher), float(fisher.mean()), max(float(fisher.std(ddof=1)), 1e-6))


def prediction_p(score: float, null: NDArray[np.float64] | NullSummary) -> tuple[float, float]:
    """(z, one-sided p) of ``score`` as one more draw from the null, on Fisher's atanh scale."""
    from scipy import special  # stdtr(df, -t) is what stats.t.sf computes, without importing scipy.stats

    summary = null if isinstance(null, NullSummary) else NullSummary.of(null)
    value = float(np.arctanh(np.clip(score, -_MAX_ATANH_INPUT, _MAX_ATANH_INPUT)))
    t = (value - summary.mean) / (summary.std * np.sqrt(1 + 1 / summary.n))
    return (value - summary.mean) / summary.std, float(special.stdtr(summary.n - 1, -t))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error over the sources checked)."""
    order = np.argsort(p_values)
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


class Grids:
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


class Stack:
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
                    pairs = near(source_depths, depths)
                    total = np.zeros((len(chunk), len(members)))
                    for i, compared in enumerate(pairs):
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


def near(source_depths: NDArray[np.floating], suspect_depths: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Which (source block, suspect block) pairs ``aligned_score`` compares (rule 1 of the module docstring)."""
    gaps = np.abs(source_depths[:, None] - suspect_depths[None, :])
    near: NDArray[np.bool_] = (gaps <= ALIGN_WINDOW + 1e-9) | (gaps == gaps.min(axis=1, keepdims=True))
    return near


def unrelated_masks(entries: Sequence[Fingerprint], sources: Sequence[int]) -> list[NDArray[np.bool_]]:
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
    grids = Grids(measure_named(measure), conditioned=conditioned)
    return grids.grid(a, b), grids.score(a, b)
