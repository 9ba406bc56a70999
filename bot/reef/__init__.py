"""The science: probes, loading, extraction, CKA, weight evidence and the verdict (local files and tensors only).

Code outside ``bot/reef/`` imports these names from here, never from a module inside, so a name's home can move
without its callers changing::

    from bot.reef import Fingerprint, Verdict, compare

    report = compare(suspect, registry)
    report.verdict  # Verdict.DERIVED, MERGED, UNRELATED or INCONCLUSIVE

Names resolve on first use (PEP 562): ``import bot.reef`` imports neither torch nor numpy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot._lazy import lazy_attributes

if TYPE_CHECKING:
    from bot.reef.cka import MEASURES, centered_gram, cka_grid
    from bot.reef.extraction import probe_batches, token_limit
    from bot.reef.fingerprint import (
        Fingerprint,
        fingerprint_digest,
        fingerprint_model,
        pack_grams,
        select_layers,
        share_probes,
        unpack_grams,
    )
    from bot.reef.gguf import (
        GGUF_TOKEN_EMBEDDING,
        GGUFHeader,
        decode_gguf_rows,
        gguf_bits_per_value,
        gguf_row_bytes,
        read_gguf_header,
    )
    from bot.reef.loading import (
        DTYPES,
        EXTRACTION_MODES,
        LFS_POINTER_PREFIX,
        SIDE_FILES,
        LoadedModel,
        TokenizerFiles,
        adapter_base_reference,
        check_model_files,
        load_model,
        read_config,
        tokenizer_files,
    )
    from bot.reef.probes import DEFAULT_PROBES, ProbeSet, load_probes
    from bot.reef.safetensors import SafetensorsHeader, TensorSpan, byte_count, read_header
    from bot.reef.streaming import load_for_extraction
    from bot.reef.tokenizing import tokenize_apart
    from bot.reef.verdict import (
        MIN_NULL,
        UNRELATED_P,
        WEIGHT_FLOOR,
        Calibration,
        Evidence,
        Report,
        SourceMatch,
        Verdict,
        WeightEvidence,
        WeightJudge,
        WeightJudgement,
        calibrate,
        compare,
        entries_digest,
        pair_grid,
    )
    from bot.reef.weights import STATISTICS, Anchors, anchor_count

_HOMES = {
    # Results and the verdict.
    "Calibration": "bot.reef.verdict",
    "Evidence": "bot.reef.verdict",
    "calibrate": "bot.reef.verdict",
    "entries_digest": "bot.reef.verdict",
    "MIN_NULL": "bot.reef.verdict",
    "Report": "bot.reef.verdict",
    "SourceMatch": "bot.reef.verdict",
    "UNRELATED_P": "bot.reef.verdict",
    "Verdict": "bot.reef.verdict",
    "WEIGHT_FLOOR": "bot.reef.verdict",
    "WeightEvidence": "bot.reef.verdict",
    "WeightJudge": "bot.reef.verdict",
    "WeightJudgement": "bot.reef.verdict",
    "compare": "bot.reef.verdict",
    "pair_grid": "bot.reef.verdict",
    # Fingerprints and their stored form.
    "Fingerprint": "bot.reef.fingerprint",
    "fingerprint_digest": "bot.reef.fingerprint",
    "fingerprint_model": "bot.reef.fingerprint",
    "pack_grams": "bot.reef.fingerprint",
    "select_layers": "bot.reef.fingerprint",
    "share_probes": "bot.reef.fingerprint",
    "unpack_grams": "bot.reef.fingerprint",
    # Similarity measures and weight evidence.
    "MEASURES": "bot.reef.cka",
    "centered_gram": "bot.reef.cka",
    "cka_grid": "bot.reef.cka",
    "STATISTICS": "bot.reef.weights",
    "Anchors": "bot.reef.weights",
    "anchor_count": "bot.reef.weights",
    # Probes and extraction.
    "DEFAULT_PROBES": "bot.reef.probes",
    "ProbeSet": "bot.reef.probes",
    "load_probes": "bot.reef.probes",
    "probe_batches": "bot.reef.extraction",
    "token_limit": "bot.reef.extraction",
    "tokenize_apart": "bot.reef.tokenizing",
    # Loading model files.
    "DTYPES": "bot.reef.loading",
    "EXTRACTION_MODES": "bot.reef.loading",
    "LFS_POINTER_PREFIX": "bot.reef.loading",
    "LoadedModel": "bot.reef.loading",
    "SIDE_FILES": "bot.reef.loading",
    "TokenizerFiles": "bot.reef.loading",
    "adapter_base_reference": "bot.reef.loading",
    "check_model_files": "bot.reef.loading",
    "load_for_extraction": "bot.reef.streaming",
    # Safetensors headers, read through any ``read(offset, length)`` (a file or HTTP Range requests).
    "SafetensorsHeader": "bot.reef.safetensors",
    "TensorSpan": "bot.reef.safetensors",
    "byte_count": "bot.reef.safetensors",
    "read_header": "bot.reef.safetensors",
    # GGUF headers and rows, read the same way.
    "GGUFHeader": "bot.reef.gguf",
    "GGUF_TOKEN_EMBEDDING": "bot.reef.gguf",
    "decode_gguf_rows": "bot.reef.gguf",
    "gguf_bits_per_value": "bot.reef.gguf",
    "gguf_row_bytes": "bot.reef.gguf",
    "read_gguf_header": "bot.reef.gguf",
    "load_model": "bot.reef.loading",
    "read_config": "bot.reef.loading",
    "tokenizer_files": "bot.reef.loading",
}

# Plain sorted() order (tests/test_layers.py pins it), not ruff's constants-first order.
__all__ = [  # noqa: RUF022
    "Anchors",
    "Calibration",
    "DEFAULT_PROBES",
    "DTYPES",
    "EXTRACTION_MODES",
    "Evidence",
    "Fingerprint",
    "GGUFHeader",
    "GGUF_TOKEN_EMBEDDING",
    "LFS_POINTER_PREFIX",
    "LoadedModel",
    "MEASURES",
    "MIN_NULL",
    "ProbeSet",
    "Report",
    "SIDE_FILES",
    "STATISTICS",
    "SafetensorsHeader",
    "SourceMatch",
    "TensorSpan",
    "TokenizerFiles",
    "UNRELATED_P",
    "Verdict",
    "WEIGHT_FLOOR",
    "WeightEvidence",
    "WeightJudge",
    "WeightJudgement",
    "adapter_base_reference",
    "anchor_count",
    "byte_count",
    "calibrate",
    "centered_gram",
    "check_model_files",
    "cka_grid",
    "compare",
    "decode_gguf_rows",
    "entries_digest",
    "fingerprint_digest",
    "fingerprint_model",
    "gguf_bits_per_value",
    "gguf_row_bytes",
    "load_for_extraction",
    "load_model",
    "load_probes",
    "pack_grams",
    "pair_grid",
    "probe_batches",
    "read_config",
    "read_gguf_header",
    "read_header",
    "select_layers",
    "share_probes",
    "token_limit",
    "tokenize_apart",
    "tokenizer_files",
    "unpack_grams",
]


__getattr__ = lazy_attributes(__name__, _HOMES)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
