"""Stage 1 of a check: what the registry says before any suspect is seen.

Each source's null (its scores against every entry not related to it, on the representations and on each weight
statistic; rules 2 and 5 of ``bot.reef.verdict``'s docstring) and the ceilings over all of them. None of it depends
on the suspect, so a registry computes it once, keeps it beside its entries (``bot.registry``) and updates it
when an entry is added (one score per source, plus the null of a new source) or removed; a check then compares
the suspect with the sources alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from bot.errors import RegistryError
from bot.reef.fingerprint import Fingerprint
from bot.reef.verdict import reasons
from bot.reef.verdict.nulls import NullSummary, Stack, approximate_parameters, measure_named, related, unrelated_masks
from bot.reef.verdict.thresholds import MIN_NULL, NULL_SIZE_RATIO
from bot.reef.verdict.weighing import WeightNull, weight_ceilings
from bot.reef.weights import STATISTICS, weight_scores

CALIBRATION_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryKey:
    """What the nulls depend on about one registry entry (its arrays through ``digest``)."""

    name: str
    digest: str
    role: str
    related: tuple[str, ...]
    parameters: int

    @classmethod
    def of(cls, fp: Fingerprint) -> EntryKey:
        return cls(
            name=fp.name,
            digest=fp.digest,
            role=fp.role,
            related=fp.related,
            parameters=approximate_parameters(fp),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceNull:
    """One source and what it is compared with.

    Attributes:
        source: the source's fingerprint.
        members: per registry entry, whether it is in the null (not the source, not related to it).
        scores: the source's layer-aligned scores against the members, in registry order (rule 2).
        weight_members: per registry entry, whether it is in the weight null (a member whose anchor tokens
            overlap the source's enough).
        weight_scores: per weight statistic, the source's scores against those entries, in registry order.
        parameters: the smallest and largest size of the null's models (``approximate_parameters``); None for an
            empty null.
        warning: set when no model of the null is within ``NULL_SIZE_RATIO`` times the source's size.
        mean: the mean score of the null; None for an empty one.
        summary: what a p-value needs of the null (rule 3); None when it has fewer than ``MIN_NULL`` scores.
    """

    source: Fingerprint
    members: NDArray[np.bool_] = field(compare=False, repr=False)
    scores: NDArray[np.float64] = field(compare=False, repr=False)
    weight_members: NDArray[np.bool_] = field(compare=False, repr=False)
    weight_scores: WeightNull = field(compare=False, repr=False)
    parameters: tuple[int, int] | None
    warning: str | None
    mean: float | None
    summary: NullSummary | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Calibration:
    """Every source's null and the ceilings over them, for one measure.

    Attributes:
        measure: the similarity measure (a key of ``bot.reef.cka.MEASURES``); conditioned: rule 0 applied.
        entries: the registry entries it was computed from, in registry order; entries_digest their
            ``entries_digest``.
        sources: the ``role == "source"`` entries' nulls, in registry order.
        ceiling: the highest representation score of any null (rule 4); None without any.
        weight_ceilings: the same per weight statistic (rule 5); empty without weight evidence.
    """

    measure: str
    conditioned: bool
    entries: tuple[EntryKey, ...]
    entries_digest: str
    sources: tuple[SourceNull, ...]
    ceiling: float | None
    weight_ceilings: Mapping[str, float]

    def with_entry(
        self, entry: Fingerprint, sources: Sequence[Fingerprint], everyone: Sequence[Fingerprint]
    ) -> Calibration:
        """The calibration after ``entry`` joins the registry: one score per source, and its own null if it is one.

        Args:
            entry: the new entry (its name not among the current ones), as the registry reads it back.
            sources: the fingerprints of ``self.sources``, in order.
            everyone: every entry's fingerprint, ``entry`` included, in registry order; read only when ``entry`` is
                a source (pass ``()`` otherwise).
        """
        return _with_entry(self, entry, sources, everyone)

    def without_entry(self, name: str) -> Calibration:
        """The calibration after the entry ``name`` leaves the registry."""
        return _without_entry(self, name)

    def to_store(self) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
        """The calibration as arrays (for safetensors) and plain metadata (for JSON); ``from_store`` reads them."""
        return _to_store(self)

    @classmethod
    def from_store(
        cls, arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any], sources: Mapping[str, Fingerprint]
    ) -> Calibration:
        """Inverse of ``to_store``, with the sources' fingerprints by name.

        Raises:
            RegistryError: another schema version, or arrays and metadata that disagree.
        """
        return _from_store(arrays, meta, sources)


@runtime_checkable
class Calibrated(Protocol):
    """A registry that keeps its calibration (``bot.registry.Registry``): ``compare`` and ``WeightJudge`` use it
    instead of recomputing every null."""

    def calibration(self, entries: Sequence[Fingerprint], *, measure: str, conditioned: bool) -> Calibration | None:
        """The calibration of ``entries`` (the registry's, as just read) for this measure; None if not kept."""


def entries_digest(entries: Sequence[EntryKey] | Sequence[Fingerprint]) -> str:
    """sha256 over what the nulls depend on: each entry's name, digest, role and declared relations, in order."""
    digest = hashlib.sha256(f"calibration v{CALIBRATION_SCHEMA_VERSION}".encode())
    for entry in entries:
        digest.update(f"\n{entry.name}\t{entry.digest}\t{entry.role}\t{','.join(entry.related)}".encode())
    return digest.hexdigest()


def calibrate(entries: Sequence[Fingerprint], *, measure: str = "linear", conditioned: bool = True) -> Calibration:
    """Every source's null among ``entries`` and the ceilings (the entries must share probes and preprocessing).

    Raises:
        ConfigError: unknown measure.
    """
    sources = [index for index, entry in enumerate(entries) if entry.role == "source"]
    masks = unrelated_masks(entries, sources)
    # Preparing every entry's Grams is the costly part (about 0.2 GB for one Gemma entry): skip it when no source
    # has anything to be compared with, as in a registry's first entry.
    scores = (
        Stack(entries, measure_named(measure), conditioned=conditioned).null_scores(sources, range(len(entries)), masks)
        if any(mask.any() for mask in masks)
        else [np.empty(0) for _ in sources]
    )
    keys = tuple(EntryKey.of(entry) for entry in entries)
    sizes = _sizes(keys)
    nulls = []
    for index, null, mask in zip(sources, scores, masks, strict=True):
        weight_members, weight_scores_ = weight_null(entries[index], entries, mask)
        nulls.append(_source_null(entries[index], sizes, mask, null, weight_members, weight_scores_))
    return _with_ceilings(measure, conditioned, keys, nulls)


def _with_entry(
    calibration: Calibration, entry: Fingerprint, sources: Sequence[Fingerprint], everyone: Sequence[Fingerprint]
) -> Calibration:
    position = sum(key.name < entry.name for key in calibration.entries)
    keys = (*calibration.entries[:position], EntryKey.of(entry), *calibration.entries[position:])
    sizes = _sizes(keys)
    scores = _scores_against(entry, sources, calibration)
    nulls = []
    for null, source, score in zip(calibration.sources, sources, scores, strict=True):
        unrelated = not related(source, entry)
        members = np.insert(null.members, position, unrelated)
        found = None
        if unrelated and source.anchors is not None and entry.anchors is not None:
            found = weight_scores(source.anchors, entry.anchors)
        weight_members = np.insert(null.weight_members, position, found is not None)
        rank, weight_rank = int(null.members[:position].sum()), int(null.weight_members[:position].sum())
        nulls.append(
            _source_null(
                source,
                sizes,
                members,
                np.insert(null.scores, rank, score) if unrelated else null.scores,
                weight_members,
                {
                    name: np.insert(values, weight_rank, found.scores[name]) if found is not None else values
                    for name, values in null.weight_scores.items()
                },
            )
        )
    if entry.role == "source":
        if [fp.name for fp in everyone] != [key.name for key in keys]:
            raise ValueError("with_entry: everyone must be the registry's entries with the new one, in order")
        nulls.insert(sum(fp.name < entry.name for fp in sources), _own_null(everyone, position, calibration, sizes))
    return _with_ceilings(calibration.measure, calibration.conditioned, keys, nulls)


def _without_entry(calibration: Calibration, name: str) -> Calibration:
    position = next(i for i, key in enumerate(calibration.entries) if key.name == name)
    keys = calibration.entries[:position] + calibration.entries[position + 1 :]
    sizes = _sizes(keys)
    nulls = []
    for null in calibration.sources:
        if null.source.name == name:
            continue
        rank, weight_rank = int(null.members[:position].sum()), int(null.weight_members[:position].sum())
        scores = np.delete(null.scores, rank) if null.members[position] else null.scores
        weights = {
            stat: np.delete(values, weight_rank) if null.weight_members[position] else values
            for stat, values in null.weight_scores.items()
        }
        members, weight_members = np.delete(null.members, position), np.delete(null.weight_members, position)
        nulls.append(_source_null(null.source, sizes, members, scores, weight_members, weights))
    return _with_ceilings(calibration.measure, calibration.conditioned, keys, nulls)


def _to_store(calibration: Calibration) -> tuple[dict[str, NDArray[Any]], dict[str, Any]]:
    arrays: dict[str, NDArray[Any]] = {}
    sources = []
    for null in calibration.sources:
        name = null.source.name
        arrays[f"{name}/members"] = null.members.astype(np.uint8)
        arrays[f"{name}/scores"] = null.scores
        arrays[f"{name}/weight_members"] = null.weight_members.astype(np.uint8)
        for statistic, values in null.weight_scores.items():
            arrays[f"{name}/weights/{statistic}"] = values
        sources.append(name)
    meta = {
        "schema_version": CALIBRATION_SCHEMA_VERSION,
        "measure": calibration.measure,
        "conditioned": calibration.conditioned,
        "entries_digest": calibration.entries_digest,
        "entries": [[k.name, k.digest, k.role, list(k.related), k.parameters] for k in calibration.entries],
        "sources": sources,
    }
    return arrays, meta


def _from_store(
    arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any], sources: Mapping[str, Fingerprint]
) -> Calibration:
    if meta.get("schema_version") != CALIBRATION_SCHEMA_VERSION:
        raise RegistryError(
            f"calibration schema_version {meta.get('schema_version')!r} is not {CALIBRATION_SCHEMA_VERSION}"
        )
    try:
        keys = tuple(
            EntryKey(name=name, digest=digest, role=role, related=tuple(rel), parameters=int(parameters))
            for name, digest, role, rel, parameters in meta["entries"]
        )
        if entries_digest(keys) != meta["entries_digest"]:
            raise RegistryError("its entry list does not match its entries_digest")
        sizes = _sizes(keys)
        nulls = [
            _source_null(
                sources[name],
                sizes,
                arrays[f"{name}/members"].astype(bool),
                arrays[f"{name}/scores"],
                arrays[f"{name}/weight_members"].astype(bool),
                {statistic: arrays[f"{name}/weights/{statistic}"] for statistic in STATISTICS},
            )
            for name in meta["sources"]
        ]
        return _with_ceilings(meta["measure"], meta["conditioned"], keys, nulls)
    except (KeyError, TypeError, ValueError) as e:
        raise RegistryError(f"malformed calibration ({type(e).__name__}: {e})") from e


def null_composition(source: Fingerprint, members: NDArray[np.float64]) -> tuple[tuple[int, int] | None, str | None]:
    """The size range of the null's models (their ``approximate_parameters``) and, when none is within
    ``NULL_SIZE_RATIO`` of the source's size, why that weakens its p-value."""
    if not len(members):
        return None, None
    size = approximate_parameters(source)
    smallest, largest = int(members.min()), int(members.max())
    if np.any((members >= size / NULL_SIZE_RATIO) & (members <= size * NULL_SIZE_RATIO)):
        return (smallest, largest), None
    return (smallest, largest), reasons.small_null(source.name, size, smallest, largest)


def _source_null(
    source: Fingerprint,
    sizes: NDArray[np.float64],
    members: NDArray[np.bool_],
    scores: NDArray[np.float64],
    weight_members: NDArray[np.bool_],
    weight_scores: WeightNull,
) -> SourceNull:
    parameters, warning = null_composition(source, sizes[members])
    return SourceNull(
        source=source,
        members=members,
        scores=scores,
        weight_members=weight_members,
        weight_scores=weight_scores,
        parameters=parameters,
        warning=warning,
        mean=float(scores.mean()) if len(scores) else None,
        summary=NullSummary.of(scores) if len(scores) >= MIN_NULL else None,
    )


def _sizes(keys: Sequence[EntryKey]) -> NDArray[np.float64]:
    """Each entry's ``approximate_parameters``, in registry order."""
    return np.array([key.parameters for key in keys], dtype=np.float64)


def _with_ceilings(
    measure: str, conditioned: bool, keys: tuple[EntryKey, ...], nulls: Sequence[SourceNull]
) -> Calibration:
    return Calibration(
        measure=measure,
        conditioned=conditioned,
        entries=keys,
        entries_digest=entries_digest(keys),
        sources=tuple(nulls),
        ceiling=max((float(null.scores.max()) for null in nulls if len(null.scores)), default=None),
        weight_ceilings=weight_ceilings([null.weight_scores for null in nulls]),
    )


def weight_null(
    source: Fingerprint, entries: Sequence[Fingerprint], mask: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], WeightNull]:
    """Which entries form the source's weight null (the unrelated ones whose vocabulary overlaps enough), and
    each statistic's scores against them."""
    members = np.zeros(len(entries), dtype=bool)
    scores: dict[str, list[float]] = {name: [] for name in STATISTICS}
    if source.anchors is not None:
        for index, (entry, unrelated) in enumerate(zip(entries, mask, strict=True)):
            if unrelated and entry.anchors is not None:
                found = weight_scores(source.anchors, entry.anchors)
                if found is not None:
                    members[index] = True
                    for name, value in found.scores.items():
                        scores[name].append(value)
    return members, {name: np.asarray(values, dtype=np.float64) for name, values in scores.items()}


def _own_null(
    everyone: Sequence[Fingerprint], position: int, calibration: Calibration, sizes: NDArray[np.float64]
) -> SourceNull:
    """The null of the source at ``position`` among ``everyone``, by the engine that computes every null."""
    (mask,) = unrelated_masks(everyone, [position])
    stack = Stack(everyone, measure_named(calibration.measure), conditioned=calibration.conditioned)
    (scores,) = stack.null_scores([position], range(len(everyone)), [mask])
    weight_members, weight_scores_ = weight_null(everyone[position], everyone, mask)
    return _source_null(everyone[position], sizes, mask, scores, weight_members, weight_scores_)


def _scores_against(entry: Fingerprint, sources: Sequence[Fingerprint], calibration: Calibration) -> list[float]:
    """Each source's layer-aligned score against ``entry``, by the engine that computes whole nulls."""
    if not sources:
        return []
    stack = Stack([*sources, entry], measure_named(calibration.measure), conditioned=calibration.conditioned)
    everyone = np.ones(1, dtype=bool)
    found = stack.null_scores(
        list(range(len(sources))), range(len(sources), len(sources) + 1), [everyone] * len(sources)
    )
    return [float(scores[0]) for scores in found]
