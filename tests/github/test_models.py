"""Choosing models from changed files and reading LFS pointers, without loading anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import ConfigError, ModelLoadError
from bot.github.models import expand_patterns, inspect_model, models_from_files


def test_changed_weights_select_their_folder_or_gguf_file() -> None:
    files = [
        "models/a/model-00001-of-00002.safetensors",
        "models/a/model-00002-of-00002.safetensors",
        "models/a/config.json",
        "models/b/pytorch_model.bin",
        "models/b/training_args.bin",
        "quant/model-q4_k_m.gguf",
        "adapters/lora/adapter_model.safetensors",
        "fingerprints/gemma/grams.safetensors",
        "reefguard-report/x.safetensors",
        "README.md",
    ]
    assert models_from_files(files, excluded=["fingerprints", "reefguard-report"]) == [
        "adapters/lora", "models/a", "models/b", "quant/model-q4_k_m.gguf"]  # fmt: skip


def test_patterns(tmp_path: Path) -> None:
    for name in ("models/a", "models/b", "other"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "q.gguf").write_bytes(b"GGUF")
    assert expand_patterns(["models/*", "q.gguf", "other"], workspace=tmp_path) == [
        "models/a", "models/b", "other", "q.gguf"]  # fmt: skip
    with pytest.raises(ConfigError, match="'nothing/\\*' matches no model"):
        expand_patterns(["nothing/*"], workspace=tmp_path)


def test_pointer_sizes_count_without_fetching(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model-1.safetensors").write_bytes(b"\0" * 100)
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 5000\n"
    (folder / "model-2.safetensors").write_text(pointer, encoding="utf-8")
    model = inspect_model("m", workspace=tmp_path)
    assert model.size_bytes == 5100
    assert model.pointers == ("m/model-2.safetensors",)
    assert model.weight_files == ("m/model-1.safetensors", "m/model-2.safetensors")


def test_a_folder_without_weights(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no weight files"):
        inspect_model("empty", workspace=tmp_path)
    with pytest.raises(ModelLoadError, match="no such model"):
        inspect_model("absent", workspace=tmp_path)
