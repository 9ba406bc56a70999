"""The public entry points: ``fingerprint(model)`` and ``compare(fp, registry)``.

``fingerprint`` joins the two halves the science keeps apart: ``bot.sources`` turns a reference (a path or
``org/name@sha``) into local files, then ``bot.reef`` tokenizes the probes (in a child process), loads the
model, extracts and builds the fingerprint.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

from bot.reef import (
    DEFAULT_PROBES,
    Fingerprint,
    adapter_base_reference,
    check_model_files,
    compare,
    fingerprint_model,
    load_for_extraction,
    load_probes,
    tokenize_apart,
    tokenizer_files,
)
from bot.sources import ModelSource, resolve

__all__ = ["compare", "default_name", "fingerprint"]

logger = logging.getLogger(__name__)


def default_name(source: ModelSource) -> str:
    """A registry name from a reference: its last path or repo component, lowercased, other characters -> '-'.

    Example:
        >>> default_name(ModelSource.parse("google/Gemma-3-270m@main"))
        'gemma-3-270m'
    """
    stem = Path(source.ref).name
    stem = stem.removesuffix(".gguf").removesuffix(".safetensors")
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"


def fingerprint(
    source: ModelSource | str,
    *,
    name: str | None = None,
    probes: str = DEFAULT_PROBES,
    dtype: str = "float32",
    base: ModelSource | str | None = None,
    standardize: bool = True,
    role: str = "source",
    related: Sequence[str] = (),
    batch_size: int = 16,
    extraction: str = "auto",
    show_progress: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
) -> Fingerprint:
    """Fingerprint a model given by reference.

    Args:
        source: a local path (folder, ``.gguf``, adapter folder) or a Hub reference ``org/name@revision``.
        name: the registry name; default from the reference.
        probes: ``"default"`` or a ``.txt`` / ``.jsonl`` / ``.csv`` file of probe texts.
        dtype: the dtype to load weights in (``float32`` unless you know why).
        base: the base model of a PEFT adapter (default: the adapter config's ``base_model_name_or_path``).
        standardize: z-score features before the Gram, as REEF's code does.
        role: ``"source"`` or ``"reference"`` when the result goes into a registry.
        related: registry names this model is declared to derive from.
        batch_size: probes per forward pass.
        extraction: ``"stream"`` runs the model one block at a time (safetensors folders), ``"full"`` loads it
            whole, ``"auto"`` streams whenever the architecture allows (``bot.reef.streaming``); the states are
            the same either way.
        show_progress: draw progress bars on stderr.
        endpoint: Hub endpoint for Hub references (default: ``HF_ENDPOINT`` or huggingface.co).
        token: Hub token for gated or private repos.

    Returns:
        The fingerprint, recording the reference, the pinned revision and the weights' sha256.

    Raises:
        ConfigError: bad probes, dtype, role, extraction mode or reference; ``stream`` on a source that cannot.
        ModelLoadError: the model cannot be fetched or loaded (UnsafeWeightsError for pickles / remote code).
        RemoteError: the Hub failed.

    Example:
        >>> fp = fingerprint("demo/models/source", name="demo-source")  # doctest: +SKIP
        >>> fp.layers, fp.n_probes  # doctest: +SKIP
        ((0, 1, 2, 3), 560)
    """
    parsed = source if isinstance(source, ModelSource) else ModelSource.parse(source)
    probe_set = load_probes(probes)
    resolved = resolve(parsed, endpoint=endpoint, token=token)
    base_path = _base_path(resolved.path, base, endpoint=endpoint, token=token)
    check_model_files(resolved.path, base=base_path)  # bad files fail here, before any process starts on them
    # Before the model loads, so that the tokenizer's peak never adds to the model's; nothing above imports torch,
    # which would sit beside the child's peak (0.25 GB).
    tokens = tokenize_apart(tokenizer_files(resolved.path, base=base_path), probe_set.texts, batch_size=batch_size)
    loaded = load_for_extraction(resolved.path, base=base_path, dtype=dtype, extraction=extraction)
    logger.info("fingerprinting %s: %d blocks, %d probes", parsed, loaded.n_layers, len(probe_set))
    return fingerprint_model(
        loaded,
        probe_set,
        name=name or default_name(parsed),
        model=str(parsed),
        revision=resolved.revision,
        standardize=standardize,
        role=role,
        related=related,
        tokens=tokens,
        show_progress=show_progress,
    )


def _base_path(path: Path, base: ModelSource | str | None, *, endpoint: str | None, token: str | None) -> Path | None:
    """Local files of an adapter's base: the given base, else the one its adapter config names."""
    if base is None:
        if not (path.is_dir() and (path / "adapter_config.json").is_file()):
            return None
        named = adapter_base_reference(path)
        if named is None:
            return None
        base = named
    return resolve(base, endpoint=endpoint, token=token).path
