"""The Fingerprint: per-layer centred Gram matrices of a model's last-token states on a probe set.

A fingerprint stores, for each kept block, the m×m centred Gram of the z-scored m×d states (unit Frobenius
norm), not the states themselves: every CKA variant needs only the Gram, it does not grow with the model's
width, and it hides the activations. Grams are symmetric, so the file keeps the upper triangle in float16
(error in CKA below 1e-4). Beside them sit the input-embedding rows of the anchor tokens, the weight-level
evidence of ``bot.reef.weights`` (at most 2 MB). The rest of a 10 MB budget decides how many blocks are kept:
all of them when they fit (0.37 MB a block with the 610 default probes: up to 20 blocks), otherwise evenly
spaced blocks from first to last, so a 32-block 7B model keeps 20; the choice is recorded in
``layer_selection``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bot.errors import RegistryError
from bot.reef.cka import centered_gram
from bot.reef.extraction import batch_states, token_limit
from bot.reef.loading import LoadedModel
from bot.reef.probes import ProbeSet, surface_basis
from bot.reef.tokenizing import ProbeTokens, tokenize_probes
from bot.reef.weights import ANCHOR_BYTES, Anchors, anchors_of

SCHEMA_VERSION = 1
MAX_FINGERPRINT_BYTES = 10_000_000
STORAGE_DTYPE = "float16"
ROLES = ("source", "reference")
TOOL_VERSION = "0.1.0"
_ARRAYS = ("grams", "probe_basis", "anchors")


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerprint:
    """One model's fingerprint and the facts needed to trust and compare it.

    Attributes:
        name: registry name (lowercase, ``[a-z0-9._-]``).
        model: the model reference it was made from (path or ``org/name``).
        revision: the commit sha of a Hub model, or None for local files.
        weight_sha256: weight file name -> sha256 (the Git LFS oid and the Hub's ``lfs.sha256``).
        architecture: e.g. ``"LlamaForCausalLM"``.
        model_type: e.g. ``"llama"``.
        n_layers: blocks in the model.
        hidden_size: residual-stream width.
        layers: the 0-based blocks whose Grams are stored, ascending.
        layer_selection: how ``layers`` was chosen, in words.
        probe_set: probe set name; probe_sha256 its content hash; n_probes its size.
        dtype: the dtype the model ran in.
        standardize: whether features were z-scored before the Gram (REEF's code does).
        storage_dtype: precision of the stored Grams.
        role: ``"source"`` (checked against) or ``"reference"`` (only calibrates the null).
        related: registry names this model is declared to derive from or share lineage with.
        hub_id: the model's Hugging Face Hub id (``org/name``), what a model card's ``base_model`` names; None
            when unknown (a local path is never one). Metadata only: not part of ``digest``.
        tool_version: reefguard version that made it; created: UTC date-time, ISO 8601.
        grams: ``(len(layers), n_probes, n_probes)`` float32, read-only.
        probe_basis: ``(n_probes, r)`` orthonormal basis of the probes' surface features
            (``bot.reef.probes.surface_basis``), projected out of the Grams by conditioned comparisons.
        anchors: the input-embedding rows of the anchor tokens (``bot.reef.weights``); None for fingerprints
            made before weight evidence existed.
        digest: sha256 of the stored arrays and the probe hash; equal digests mean equal fingerprints.
    """

    schema_version: int = SCHEMA_VERSION
    name: str
    model: str
    revision: str | None
    weight_sha256: Mapping[str, str]
    architecture: str
    model_type: str
    n_layers: int
    hidden_size: int
    layers: tuple[int, ...]
    layer_selection: str
    probe_set: str
    probe_sha256: str
    n_probes: int
    dtype: str
    standardize: bool
    storage_dtype: str = STORAGE_DTYPE
    role: str = "source"
    related: tuple[str, ...] = ()
    hub_id: str | None = None
    tool_version: str = TOOL_VERSION
    created: str
    grams: NDArray[np.float32] = field(compare=False, repr=False)
    probe_basis: NDArray[np.float32] = field(compare=False, repr=False)
    anchors: Anchors | None = field(default=None, compare=False, repr=False)
    digest: str

    def to_dict(self) -> dict[str, Any]:
        """Metadata as plain data (no arrays), keys sorted; the inverse of ``from_dict``."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in _ARRAYS}
        data["weight_sha256"] = dict(self.weight_sha256)
        data["layers"] = list(self.layers)
        data["related"] = list(self.related)
        if self.hub_id is None:
            del data["hub_id"]  # entries without one keep the bytes they had before hub_id existed
        return dict(sorted(data.items()))

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        grams: NDArray[np.floating],
        probe_basis: NDArray[np.floating],
        anchors: Anchors | None = None,
    ) -> Fingerprint:
        """Rebuild a fingerprint from ``to_dict()`` output and its arrays.

        Raises:
            RegistryError: unknown schema version, missing or unknown keys, or Grams that disagree with the
                metadata (shape or digest).
        """
        if data.get("schema_version") != SCHEMA_VERSION:
            raise RegistryError(
                f"fingerprint schema_version {data.get('schema_version')!r} is not {SCHEMA_VERSION}; "
                "upgrade reefguard or re-fingerprint the model"
            )
        expected = set(cls.__dataclass_fields__) - set(_ARRAYS)
        unknown, missing = set(data) - expected, expected - set(data) - {"hub_id"}
        if unknown or missing:
            raise RegistryError(
                f"fingerprint metadata has unknown keys {sorted(unknown)} / lacks keys {sorted(missing)}"
            )
        values = dict(data)
        values["weight_sha256"] = dict(values["weight_sha256"])
        values["layers"] = tuple(int(x) for x in values["layers"])
        values["related"] = tuple(str(x) for x in values["related"])
        if not isinstance(values.get("hub_id"), str | None):
            raise RegistryError(f"fingerprint {values['name']!r}: hub_id is not a string")
        stack = _read_only(np.asarray(grams, dtype=np.float32))
        basis = _read_only(np.asarray(probe_basis, dtype=np.float32))
        if stack.shape != (len(values["layers"]), values["n_probes"], values["n_probes"]):
            raise RegistryError(f"fingerprint {values['name']!r}: Gram stack has shape {stack.shape}")
        if basis.ndim != 2 or basis.shape[0] != values["n_probes"]:
            raise RegistryError(f"fingerprint {values['name']!r}: probe basis has shape {basis.shape}")
        if fingerprint_digest(stack, basis, str(values["probe_sha256"]), anchors) != values["digest"]:
            raise RegistryError(f"fingerprint {values['name']!r}: arrays do not match the recorded digest")
        return cls(grams=stack, probe_basis=basis, anchors=anchors, **values)


def share_probes(entries: Iterable[Fingerprint]) -> bool:
    """Whether ``entries`` were all taken on one probe set, standardized alike: only then are their Grams
    comparable."""
    return len({(entry.probe_sha256, entry.standardize) for entry in entries}) <= 1


def select_layers(
    n_layers: int, n_probes: int, *, max_bytes: int = MAX_FINGERPRINT_BYTES - ANCHOR_BYTES
) -> tuple[tuple[int, ...], str]:
    """Which blocks to keep so the stored fingerprint stays within ``max_bytes``.

    Returns:
        The ascending block indices and a sentence saying how they were chosen.

    Example:
        >>> select_layers(4, 610)
        ((0, 1, 2, 3), 'all 4 blocks')
        >>> layers, how = select_layers(80, 610)
        >>> len(layers), layers[0], layers[-1], how
        (20, 0, 79, '20 of 80 blocks, evenly spaced (10 MB budget)')
    """
    itemsize = np.dtype(STORAGE_DTYPE).itemsize
    per_layer = n_probes * (n_probes + 1) // 2 * itemsize
    basis_bytes = n_probes * (n_probes // 4) * itemsize  # the largest probe basis surface_basis returns
    budget = max(1, (max_bytes - basis_bytes) // per_layer)
    if n_layers <= budget:
        return tuple(range(n_layers)), f"all {n_layers} blocks"
    picks = np.unique(np.round(np.linspace(0, n_layers - 1, budget)).astype(int))
    return tuple(int(x) for x in picks), f"{len(picks)} of {n_layers} blocks, evenly spaced (10 MB budget)"


def pack_grams(grams: NDArray[np.floating]) -> NDArray[np.float16]:
    """(L, m, m) symmetric Grams -> (L, m(m+1)/2) float16 upper triangles, the stored form."""
    rows, cols = np.triu_indices(grams.shape[-1])
    return np.ascontiguousarray(grams[:, rows, cols].astype(np.float16))


def unpack_grams(packed: NDArray[np.floating], n_probes: int) -> NDArray[np.float32]:
    """Inverse of ``pack_grams``: float16 triangles -> (L, m, m) symmetric float32 Grams."""
    rows, cols = np.triu_indices(n_probes)
    grams = np.zeros((packed.shape[0], n_probes, n_probes), dtype=np.float32)
    grams[:, rows, cols] = packed
    grams[:, cols, rows] = packed
    return grams


def fingerprint_digest(
    grams: NDArray[np.floating], probe_basis: NDArray[np.floating], probe_sha256: str, anchors: Anchors | None = None
) -> str:
    """sha256 over the stored (float16) Grams, probe basis and anchor rows and tokens, and the probe hash."""
    digest = hashlib.sha256(probe_sha256.encode("ascii"))
    digest.update(pack_grams(grams).tobytes())
    digest.update(np.ascontiguousarray(probe_basis, dtype=np.float16).tobytes())
    if anchors is not None:
        digest.update(json.dumps(anchors.tokens, ensure_ascii=False).encode("utf-8"))
        digest.update(np.ascontiguousarray(anchors.rows, dtype=np.float16).tobytes())
    return digest.hexdigest()


def _read_only(array: NDArray[np.float32]) -> NDArray[np.float32]:
    array.setflags(write=False)
    return array


def fingerprint_model(
    loaded: LoadedModel,
    probes: ProbeSet,
    *,
    name: str,
    model: str,
    revision: str | None = None,
    standardize: bool = True,
    role: str = "source",
    related: Sequence[str] = (),
    tokens: ProbeTokens | None = None,
    batch_size: int = 16,
    show_progress: bool = False,
) -> Fingerprint:
    """Fingerprint a loaded model on a probe set.

    Args:
        loaded: the model, from ``bot.reef.loading.load_model``.
        probes: the probe set; its hash is recorded.
        name: registry name for the result.
        model: the reference the model was loaded from, recorded as given.
        revision: its commit sha, for Hub models.
        standardize: z-score each feature over the probes first (REEF's code; on by default).
        role: ``"source"`` or ``"reference"``.
        related: registry names of declared relatives.
        tokens: the probes already tokenized for this model (``bot.reef.tokenizing.tokenize_apart``); by
            default they are tokenized here, in batches of ``batch_size``, with ``loaded.load_tokenizer()``.
        batch_size: probes per forward pass, when they are tokenized here.
        show_progress: draw a progress bar.

    Returns:
        The fingerprint; its Grams are already rounded to the stored precision, so saving and loading it
        gives an equal digest.

    Raises:
        ConfigError: a bad role, too few probes, or features that are all constant.
    """
    from bot.errors import ConfigError

    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r} (known: {', '.join(ROLES)})", key="role")
    layers, how = select_layers(loaded.n_layers, len(probes))
    if tokens is None:
        tokens = tokenize_probes(
            loaded.load_tokenizer(), probes.texts, batch_size=batch_size, max_tokens=token_limit(loaded.model.config)
        )
    elif sum(len(batch.rows) for batch in tokens.batches) != len(probes):
        raise ConfigError(f"the tokenized probes are not the {len(probes)} probes of {probes.name!r}")
    states = batch_states(loaded, tokens.batches, layers=layers, show_progress=show_progress)
    # One float64 Gram at a time, packed at once: a stack of them all was the run's memory peak (0.2 GB on Gemma).
    packed = np.concatenate(
        [pack_grams(centered_gram(layer_states, standardize=standardize)[None]) for layer_states in states]
    )
    grams = _read_only(unpack_grams(packed, len(probes)))
    basis = _read_only(surface_basis(probes.texts).astype(np.float16).astype(np.float32))
    anchors = anchors_of(loaded, tokens.anchor_candidates)
    return Fingerprint(
        name=name,
        model=model,
        revision=revision,
        weight_sha256=dict(loaded.weight_sha256),
        architecture=loaded.architecture,
        model_type=loaded.model_type,
        n_layers=loaded.n_layers,
        hidden_size=loaded.hidden_size,
        layers=layers,
        layer_selection=how,
        probe_set=probes.name,
        probe_sha256=probes.sha256,
        n_probes=len(probes),
        dtype=loaded.dtype,
        standardize=standardize,
        role=role,
        related=tuple(sorted(related)),
        created=datetime.now(UTC).replace(microsecond=0).isoformat(),
        grams=grams,
        probe_basis=basis,
        anchors=anchors,
        digest=fingerprint_digest(grams, basis, probes.sha256, anchors),
    )
