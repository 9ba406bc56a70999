"""Loading every supported local form, and refusing bad or unsafe weights with one clear line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bot.engine import fingerprint
from bot.errors import ModelLoadError, UnsafeWeightsError
from bot.reef.extraction import extract_states
from bot.reef.loading import load_model
from bot.reef.probes import ProbeSet
from tests import builders


def states(path: Path, probes: ProbeSet, **kwargs: object) -> np.ndarray:
    loaded = load_model(path, **kwargs)  # type: ignore[arg-type]
    return extract_states(loaded, probes.texts, layers=range(loaded.n_layers))


def test_safetensors_folder_records_facts(tiny_llama: Path) -> None:
    loaded = load_model(tiny_llama)
    assert (loaded.architecture, loaded.model_type, loaded.n_layers, loaded.hidden_size) == (
        "LlamaForCausalLM",
        "llama",
        2,
        32,
    )
    assert loaded.loader == "safetensors"
    assert loaded.dtype == "float32"
    assert next(loaded.model.parameters()).dtype == torch.float32
    (name, sha), *_ = loaded.weight_sha256.items()
    assert name == "model.safetensors" and len(sha) == 64


def test_explicit_dtype_is_used(tiny_llama: Path) -> None:
    loaded = load_model(tiny_llama, dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


def test_sharded_folder_equals_single_file(tiny_llama: Path, tmp_path: Path, few_probes: ProbeSet) -> None:
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).save_pretrained(
        sharded, max_shard_size="60KB"
    )
    builders.copy_tokenizer(tiny_llama, sharded)
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(load_model(sharded).weight_sha256) > 1
    np.testing.assert_allclose(states(sharded, few_probes), states(tiny_llama, few_probes), atol=1e-6)


def test_missing_shard_is_named(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).save_pretrained(
        sharded, max_shard_size="60KB"
    )
    builders.copy_tokenizer(tiny_llama, sharded)
    victim = sorted(sharded.glob("*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(ModelLoadError, match=victim.name):
        load_model(sharded)


def test_pytorch_bin_loads_through_weights_only(tiny_llama: Path, tmp_path: Path, few_probes: ProbeSet) -> None:
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save(load_file(tiny_llama / "model.safetensors"), folder / "pytorch_model.bin")
    shutil.copy2(tiny_llama / "config.json", folder / "config.json")
    builders.copy_tokenizer(tiny_llama, folder)
    loaded = load_model(folder)
    assert loaded.loader == "pytorch-bin" and list(loaded.weight_sha256) == ["pytorch_model.bin"]
    np.testing.assert_allclose(states(folder, few_probes), states(tiny_llama, few_probes), atol=1e-6)


class _Exploit:
    """A pickle whose loading would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_runs_code_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "evil"
    folder.mkdir()
    shutil.copy2(tiny_llama / "config.json", folder / "config.json")
    marker = tmp_path / "pwned"
    torch.save({"weight": _Exploit(marker)}, folder / "pytorch_model.bin")
    with pytest.raises(UnsafeWeightsError, match="refused"):
        load_model(folder)
    assert not marker.exists()


def test_lfs_pointer_names_the_fix(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "lfs"
    shutil.copytree(tiny_llama, folder)
    (folder / "model.safetensors").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 123456\n"
    )
    with pytest.raises(ModelLoadError, match="git lfs pull"):
        load_model(folder)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: (10**9).to_bytes(8, "little") + data[8:], "corrupt or truncated safetensors header"),
        (lambda data: data[:8] + b"{not json" + data[17:], "corrupt safetensors header"),
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: data[:5], "truncated"),
    ],
    ids=["header-length", "header-json", "half-file", "five-bytes"],
)
def test_damaged_safetensors_fail_clearly(tiny_llama: Path, tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "damaged"
    shutil.copytree(tiny_llama, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(ModelLoadError, match=message):
        load_model(folder)


def test_header_that_lies_about_a_tensor_size(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "liar"
    shutil.copytree(tiny_llama, folder)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [1]  # the bytes stay; the header now lies about how many it holds
    text = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    weights.write_bytes(data[:8] + text[:n] + data[8 + n :])
    with pytest.raises(ModelLoadError, match="claims"):
        load_model(folder)


def test_folder_without_config(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "noconfig"
    shutil.copytree(tiny_llama, folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(folder)


def test_folder_without_weights(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_model(tmp_path)


def test_remote_code_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    shutil.copytree(tiny_llama, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeWeightsError, match="trust_remote_code"):
        load_model(folder)


def test_encoder_loads(tiny_bert: Path) -> None:
    loaded = load_model(tiny_bert)
    assert (loaded.model_type, loaded.n_layers, loaded.hidden_size) == ("bert", 2, 32)


def _lora_adapter(base: Path, folder: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(base)
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def test_lora_adapter_is_merged_onto_its_base(tiny_llama: Path, tmp_path: Path, few_probes: ProbeSet) -> None:
    adapter = _lora_adapter(tiny_llama, tmp_path / "adapter")
    loaded = load_model(adapter)
    assert loaded.loader == "peft-adapter"
    assert "adapter_model.safetensors" in loaded.weight_sha256
    merged, base = states(adapter, few_probes), states(tiny_llama, few_probes)
    assert np.abs(merged - base).max() > 1e-3  # the adapter changed the model
    np.testing.assert_allclose(states(adapter, few_probes, base=tiny_llama), merged, atol=1e-6)


def test_adapter_on_the_wrong_base(tiny_llama: Path, tiny_gpt2: Path, tmp_path: Path) -> None:
    adapter = _lora_adapter(tiny_llama, tmp_path / "adapter")
    with pytest.raises(ModelLoadError, match="does the adapter belong to this base"):
        load_model(adapter, base=tiny_gpt2)


def test_adapter_whose_base_is_not_local(tiny_llama: Path, tmp_path: Path) -> None:
    adapter = _lora_adapter(tiny_llama, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/base-model"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="--base"):
        load_model(adapter)


@pytest.mark.parametrize("extraction", ["full", "stream"])
@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])  # transformers makes GPT-2 an empty tokenizer
def test_folder_without_tokenizer_fails_clearly(
    model: str, extraction: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    folder = tmp_path / "notokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(request.getfixturevalue(model) / name, folder / name)
    with pytest.raises(ModelLoadError, match=r"notokenizer: cannot load the tokenizer"):
        fingerprint(str(folder), extraction=extraction)


# PEFT's ordinary layout: ``get_peft_model`` on the model class at hand, ``save_pretrained``. The stored keys name
# modules as that class does (``base_model.model.model.layers.0…`` under a causal LM, ``…layers.0…`` on the bare
# model), whichever class the base folder's config names.
LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"], "gpt2": ["c_attn"],
                "gemma3_text": ["q_proj", "v_proj", "o_proj"]}  # fmt: skip


def _tiny_base(kind: str, folder: Path) -> Path:
    if kind != "gemma3_text":
        return builders.tiny_model(folder, kind, seed=3)
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(3)
    config = Gemma3TextConfig(vocab_size=builders.VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16,
                              max_position_embeddings=512, bos_token_id=0, eos_token_id=0)  # fmt: skip
    Gemma3ForCausalLM(config).save_pretrained(folder)
    builders.copy_tokenizer(builders.DEMO_MODELS / "source", folder)
    return folder


@pytest.mark.parametrize("trained_on", ["causal-lm", "bare-model"])
@pytest.mark.parametrize("saved_as", ["causal-lm", "bare-model"])
@pytest.mark.parametrize("kind", list(LORA_TARGETS))
def test_peft_adapter_in_the_ordinary_layout_is_applied(
    kind: str, saved_as: str, trained_on: str, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM

    base = _tiny_base(kind, tmp_path / "base")
    if saved_as == "bare-model":  # a base folder written from the bare model: its config names e.g. LlamaModel
        AutoModel.from_pretrained(base, dtype=torch.float32).save_pretrained(tmp_path / "bare")
        builders.copy_tokenizer(base, tmp_path / "bare")
        base = tmp_path / "bare"
    auto = AutoModelForCausalLM if trained_on == "causal-lm" else AutoModel
    config = LoraConfig(r=4, target_modules=LORA_TARGETS[kind], init_lora_weights=False, fan_in_fan_out=kind == "gpt2",
                        task_type="CAUSAL_LM" if trained_on == "causal-lm" else None)  # fmt: skip
    trained = get_peft_model(auto.from_pretrained(base, dtype=torch.float32), config)
    trained.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base
    )
    expected = trained.merge_and_unload().base_model.state_dict()

    loaded = load_model(tmp_path / "adapter")

    got = loaded.model.state_dict()
    assert set(got) == set(expected)
    before = load_model(base).model.state_dict()
    changed = [name for name in got if not torch.equal(got[name], before[name])]
    assert changed and all(target in " ".join(changed) for target in LORA_TARGETS[kind])
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6)
