"""Release folders: weights, tokenizer and a model card whose metadata records the protection; upload and copy."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import ConfigError, RemoteError
from bot.reef import load_model
from bot.trap2.data import validation_windows
from bot.trap2.release import copy_release, push_release, write_release
from bot.trap2.scaling import mean_loss
from bot.trap2.training import ProtectRun
from tests.doubles.hub_server import HubServer

# What a user runs: plain transformers + peft, the base found by the Hub id the adapter names (HF_ENDPOINT is read
# at import, so this runs in a fresh interpreter aimed at the Hub double). Prints the base it used and the loss.
PLAIN_LOAD = """
import json, sys, torch
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM
release, windows = sys.argv[1], torch.tensor(json.loads(sys.argv[2]))
base_id = PeftConfig.from_pretrained(release).base_model_name_or_path
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_id, dtype=torch.float32), release).eval()
with torch.inference_mode():
    loss = sum(float(model(input_ids=w[None], labels=w[None]).loss) for w in windows) / len(windows)
print(json.dumps({"base": base_id, "loss": loss}))
"""


def _card(folder: Path) -> dict[str, Any]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    header = text.split("---\n")[1]
    data: dict[str, Any] = yaml.safe_load(header)
    return data


def test_release_folder_records_the_protection(lora_run: ProtectRun, base: Path, tmp_path: Path) -> None:
    folder = write_release(lora_run.protected, tmp_path / "release", base_model="org/tiny-base")
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "trap2.json", "README.md"} <= {
        p.name for p in folder.iterdir()
    }
    card = _card(folder)
    assert card["base_model"] == ["org/tiny-base"] and card["base_model_relation"] == "adapter"
    assert card["library_name"] == "peft"
    block = card["reefguard"]
    assert block["protection"] == "trap2" and block["authorised_scale"] == 1.0 and block["form"] == "lora"
    assert block["lora_scaling"]["r"] == 4 and block["lora_scaling"]["lora_alpha"] == 8
    assert block["lora_scaling"]["alpha_over_r"] == 2.0 and block["lora_scaling"]["use_rslora"] is False
    assert block["objective"]["s_min"] == 0.05 and block["objective"]["lam"] == 0.5
    load_model(folder, base=base, with_lm_head=True)  # the released adapter loads on its base
    with pytest.raises(ConfigError, match="already exists"):
        write_release(lora_run.protected, folder)
    with pytest.raises(ConfigError, match="is a local path"):  # a path is never written as the base
        write_release(lora_run.protected, tmp_path / "other", base_model=str(base))
    assert "base_model" not in _card(write_release(lora_run.protected, tmp_path / "no-id"))
    copied = copy_release(folder, tmp_path / "checkout")
    assert (copied / "README.md").read_bytes() == (folder / "README.md").read_bytes()


class RecordingApi:
    """A stand-in HfApi that records calls (injected, not patched)."""

    def __init__(self, fail_status: int | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_status = fail_status

    def create_repo(self, **kwargs: Any) -> None:
        self.calls.append(("create_repo", kwargs))

    def upload_folder(self, **kwargs: Any) -> str:
        self.calls.append(("upload_folder", kwargs))
        if self.fail_status:
            import httpx
            from huggingface_hub.errors import HfHubHTTPError

            request = httpx.Request("POST", "https://hub.example/api")
            raise HfHubHTTPError("denied", response=httpx.Response(self.fail_status, request=request))
        return "https://hub.example/org/name/commit/abc"


def test_push_uploads_the_folder(lora_run: ProtectRun, tmp_path: Path) -> None:
    folder = write_release(lora_run.protected, tmp_path / "release")
    api = RecordingApi()
    assert push_release(folder, "org/name", api=api) == "https://hub.example/org/name/commit/abc"
    assert [c[0] for c in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[1][1]["folder_path"] == str(folder) and api.calls[1][1]["repo_id"] == "org/name"
    with pytest.raises(RemoteError, match=r"org/name: upload .* failed \(403\)"):
        push_release(folder, "org/name", api=RecordingApi(fail_status=403))


def test_a_copied_release_loads_with_plain_peft_and_the_base_from_the_hub(
    lora_run: ProtectRun, base: Path, code_text: Path, tmp_path: Path, hub: HubServer
) -> None:
    folder = write_release(lora_run.protected, tmp_path / "release", base_model="org/tiny-base")
    # published files: readable by everyone (the staging folder was 0700, transformers writes weights 0600)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o644}
    # no trace of the trainer's machine: the base is named by its Hub id everywhere
    for name in ("adapter_config.json", "trap2.json", "README.md"):
        assert str(base.resolve()) not in (folder / name).read_text(encoding="utf-8"), name
    assert json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"] == (
        "org/tiny-base"
    )
    assert json.loads((folder / "trap2.json").read_text(encoding="utf-8"))["base"] == "org/tiny-base"

    copy = shutil.copytree(folder, tmp_path / "elsewhere" / "downloaded")
    hub.add_repo("org/tiny-base", base, sha="b" * 40)
    loaded = load_model(base, with_lm_head=True)
    windows = validation_windows(loaded.load_tokenizer(), [code_text], context=32, max_windows=4)
    expected = mean_loss(load_model(folder, base=base, with_lm_head=True).model, windows)
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "user-hf-home"), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", PLAIN_LOAD, str(copy), json.dumps(windows.tolist())],
                          capture_output=True, text=True, env=env, cwd=tmp_path / "elsewhere", timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["base"] == "org/tiny-base"
    assert out["loss"] == pytest.approx(expected, abs=1e-4)
    assert any("/org/tiny-base/resolve/" in r.path for r in hub.requests)  # the base came from the Hub


def test_a_path_as_base_model_id_is_refused_before_verifying(
    lora_run: ProtectRun, base: Path, code_text: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    code = main(["verify-protection", str(base), str(lora_run.protected), "--data", str(code_text), "--release",
                 str(tmp_path / "release"), "--base-model-id", str(base)])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and "is a local path" in captured.err and captured.out == ""
    assert not (tmp_path / "release").exists()
