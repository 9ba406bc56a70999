"""Release folders: weights, tokenizer and a model card whose metadata records the protection; upload and copy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import ConfigError, RemoteError
from bot.reef.loading import load_model
from bot.trap2.release import copy_release, push_release, write_release
from bot.trap2.training import ProtectRun


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
    assert card["base_model"] == "org/tiny-base" and card["library_name"] == "peft"
    block = card["reefguard"]
    assert block["protection"] == "trap2" and block["authorised_scale"] == 1.0 and block["form"] == "lora"
    assert block["lora_scaling"]["r"] == 4 and block["lora_scaling"]["lora_alpha"] == 8
    assert block["lora_scaling"]["alpha_over_r"] == 2.0 and block["lora_scaling"]["use_rslora"] is False
    assert block["objective"]["s_min"] == 0.05 and block["objective"]["lam"] == 0.5
    load_model(folder, base=base, with_lm_head=True)  # the released adapter loads on its base
    with pytest.raises(ConfigError, match="already exists"):
        write_release(lora_run.protected, folder)
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
