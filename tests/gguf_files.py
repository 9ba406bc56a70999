"""GGUF files for tests: a GPT-2 folder written as GGUF, and a big sparse GGUF whose bytes are made on demand.

``gguf_of`` writes what llama.cpp's converter writes for GPT-2 (its tensor names, the Conv1D weights transposed,
the byte-level BPE tokenizer in the metadata), so transformers loads the file back into the same model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# GPT-2's Conv1D weights are stored (in, out); GGUF stores them as linear layers, (out, in).
_GPT2_POSITIONS = 1024  # what transformers gives a GPT-2 read from GGUF, whatever the file says
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def tokenizer_metadata(writer: object, folder: Path) -> None:
    """Write the byte-level BPE tokenizer of ``folder`` (``tokenizer.json``) as GGUF ``tokenizer.*`` metadata."""
    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    special = {token["content"] for token in data.get("added_tokens", []) if token.get("special")}
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")  # type: ignore[attr-defined]
    writer.add_token_list(tokens)  # type: ignore[attr-defined]
    writer.add_token_types([3 if t in special else 1 for t in tokens])  # type: ignore[attr-defined]
    writer.add_token_merges(merges)  # type: ignore[attr-defined]
    writer.add_bos_token_id(0)  # type: ignore[attr-defined]
    writer.add_eos_token_id(0)  # type: ignore[attr-defined]


def gguf_of(folder: Path, path: Path, *, embedding: str = "Q8_0") -> Path:
    """Write the GPT-2 model in ``folder`` as the GGUF file ``path``: the token embedding stored as
    ``embedding`` (a ggml type name), every other tensor as F32. The position embedding is padded with zero rows
    to 1024 positions (the same states for the probes, which are far shorter)."""
    from gguf import MODEL_ARCH, GGMLQuantizationType, GGUFWriter, get_tensor_name_map
    from gguf.quants import quantize
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tensors = load_file(folder / "model.safetensors")
    names = get_tensor_name_map(MODEL_ARCH.GPT2, config["n_layer"])
    writer = GGUFWriter(str(path), "gpt2")
    writer.add_block_count(config["n_layer"])
    writer.add_context_length(_GPT2_POSITIONS)
    writer.add_embedding_length(config["n_embd"])
    writer.add_feed_forward_length(config.get("n_inner") or 4 * config["n_embd"])
    writer.add_head_count(config["n_head"])
    writer.add_layer_norm_eps(config["layer_norm_epsilon"])
    writer.add_file_type(0)
    tokenizer_metadata(writer, folder)
    for name, value in tensors.items():
        bare = name.removeprefix("transformer.")
        if bare.endswith((".attn.bias", ".attn.masked_bias")) or name == "lm_head.weight":  # buffers, tied head
            continue
        gguf_name = names.get_name(bare, try_suffixes=(".weight", ".bias"))
        assert gguf_name is not None, name
        array = np.ascontiguousarray(value.T if bare.endswith(_TRANSPOSED) else value, dtype=np.float32)
        if gguf_name == "position_embd.weight":  # transformers builds GPT-2 from GGUF with its default 1024
            array = np.concatenate([array, np.zeros((_GPT2_POSITIONS - len(array), array.shape[1]), np.float32)])
        if gguf_name == "token_embd.weight" and embedding != "F32":
            kind = GGMLQuantizationType[embedding]
            writer.add_tensor(gguf_name, quantize(array, kind), raw_dtype=kind)
        else:
            writer.add_tensor(gguf_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
