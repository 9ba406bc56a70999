"""Tokenizing in a child process: the same batches and anchors as in-process, without torch, errors as one line."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.engine import fingerprint
from bot.errors import ConfigError, ModelLoadError, UnsafeWeightsError
from bot.reef.extraction import token_limit
from bot.reef.fingerprint import fingerprint_model
from bot.reef.loading import load_model, tokenizer_files
from bot.reef.probes import ProbeSet, load_probes
from bot.reef.tokenizing import ProbeTokens, TokenizingApart, tokenize_apart, tokenize_probes

LONG_PROBE = "a probe long enough to be cut at the token limit " * 40


def _tokenized_here(path: Path, texts: list[str], *, batch_size: int) -> ProbeTokens:
    loaded = load_model(path)
    max_tokens = token_limit(loaded.model.config)
    return tokenize_probes(loaded.load_tokenizer(), texts, batch_size=batch_size, max_tokens=max_tokens)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_the_child_tokenizes_as_the_loaded_model_does(
    model: str, few_probes: ProbeSet, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    path = request.getfixturevalue(model)
    texts = [*few_probes.texts, LONG_PROBE]
    with caplog.at_level(logging.WARNING, logger="bot.reef.extraction"):
        apart = tokenize_apart(tokenizer_files(path), texts, batch_size=8)
    assert "1 probe(s) reached" in caplog.text  # the child's warning, logged again here
    here = _tokenized_here(path, texts, batch_size=8)
    assert apart.anchor_candidates == here.anchor_candidates
    assert [batch.rows for batch in apart.batches] == [batch.rows for batch in here.batches]
    for got, expected in zip(apart.batches, here.batches, strict=True):
        assert got.inputs.keys() == expected.inputs.keys()
        for key, value in expected.inputs.items():
            np.testing.assert_array_equal(got.inputs[key], value)
        np.testing.assert_array_equal(got.last_index, expected.last_index)


def test_the_engine_fingerprint_equals_the_in_process_one(
    tiny_llama: Path, few_probes: ProbeSet, tmp_path: Path
) -> None:
    probe_file = tmp_path / "probes.txt"
    probe_file.write_text("\n".join(few_probes.texts) + "\n", encoding="utf-8")
    engine = fingerprint(str(tiny_llama), probes=str(probe_file), name="llama")
    here = fingerprint_model(load_model(tiny_llama), load_probes(probe_file), name="llama", model=str(tiny_llama))
    assert engine.digest == here.digest


def test_the_model_opens_while_the_child_tokenizes(tiny_llama: Path, few_probes: ProbeSet) -> None:
    with TokenizingApart(tokenizer_files(tiny_llama), few_probes.texts, batch_size=8) as tokenizing:
        loaded = load_model(tiny_llama)  # meanwhile, in this process
        tokens = tokenizing.result()
        assert tokenizing.result() is tokens
    here = _tokenized_here(tiny_llama, list(few_probes.texts), batch_size=8)
    assert [batch.rows for batch in tokens.batches] == [batch.rows for batch in here.batches]
    assert tokens.anchor_candidates == here.anchor_candidates
    assert loaded.n_layers == 2


def test_the_child_never_imports_torch(tiny_llama: Path, few_probes: ProbeSet) -> None:
    request = {"folder": str(tiny_llama), "gguf_file": None, "source": str(tiny_llama)}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bot.reef.tokenizing"],
        input=json.dumps({**request, "texts": list(few_probes.texts), "batch_size": 8}),
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(done.stdout)["tokens"]["batches"]) == 4
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "transformers" in imported and "tokenizers" in imported
    assert "torch" not in imported


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2", "tiny_bert"])
def test_checking_a_model_imports_no_torch(model: str, request: pytest.FixtureRequest) -> None:
    # What runs before the tokenizer child: torch imported here would sit beside the child's peak (0.25 GB).
    path = request.getfixturevalue(model)
    code = (
        "import sys; from pathlib import Path; from bot.reef import check_model_files, tokenizer_files; "
        f"check_model_files(Path({str(path)!r})); tokenizer_files(Path({str(path)!r})); "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_an_unknown_model_type_is_refused_by_the_child(tiny_llama: Path, tmp_path: Path) -> None:
    unknown = _copy(tiny_llama, tmp_path / "unknown", "config.json", "tokenizer.json", "tokenizer_config.json")
    config = json.loads((unknown / "config.json").read_text(encoding="utf-8"))
    (unknown / "config.json").write_text(json.dumps({**config, "model_type": "no-such-type"}), encoding="utf-8")
    with pytest.raises(UnsafeWeightsError, match="'no-such-type' needs custom code"):
        tokenize_apart(tokenizer_files(unknown), ["a probe"], batch_size=1)


def _copy(model: Path, folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        shutil.copy2(model / name, folder / name)
    return folder


def test_child_errors_come_back_as_one_line(tiny_llama: Path, tmp_path: Path) -> None:
    bare = _copy(tiny_llama, tmp_path / "bare", "config.json", "model.safetensors")
    with pytest.raises(ModelLoadError, match=r"bare: cannot load the tokenizer: none of tokenizer.json") as caught:
        tokenize_apart(tokenizer_files(bare), ["a probe"], batch_size=1)
    assert caught.value.source == str(bare)

    custom = _copy(tiny_llama, tmp_path / "custom", "config.json", "tokenizer.json", "tokenizer_config.json")
    config = json.loads((custom / "config.json").read_text(encoding="utf-8"))
    (custom / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}), encoding="utf-8")
    with pytest.raises(UnsafeWeightsError, match="needs custom code"):
        tokenize_apart(tokenizer_files(custom), ["a probe"], batch_size=1)

    with pytest.raises(ConfigError, match="batch size must be at least 1"):
        tokenize_apart(tokenizer_files(tiny_llama), ["a probe"], batch_size=0)


def test_tokenizer_files_of_each_form(tiny_llama: Path, tmp_path: Path) -> None:
    files = tokenizer_files(tiny_llama / "model.safetensors")
    assert (files.folder, files.gguf_file) == (tiny_llama, None)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_llama)}))
    assert tokenizer_files(adapter).folder == tiny_llama
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(60))
    assert (tokenizer_files(gguf).folder, tokenizer_files(gguf).gguf_file) == (tmp_path, "model.gguf")
    gguf.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n")
    with pytest.raises(ModelLoadError, match="a Git LFS pointer"):
        tokenizer_files(gguf)
    with pytest.raises(ModelLoadError, match="no such file or folder"):
        tokenizer_files(tmp_path / "absent")
