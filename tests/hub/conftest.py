"""The Hub world of these tests: the Hub double on a loopback socket, a small registry, planted model repos.

Every Hub call goes through the real huggingface_hub client (endpoint passed explicitly) to
`tests.doubles.hub_server.HubServer`; nothing is patched and nothing reaches the internet.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.engine import fingerprint
from bot.registry import Registry
from tests.builders import DEMO_MODELS
from tests.doubles.hub_server import HubServer

SOURCE = "demo-source"
SOURCE_REPO = "acme/source"
NULL_MODELS = ("ref-gpt2-code", "ref-gpt2-code-b", "ref-llama-code", "ref-llama-prose", "ref-qwen2-code",
               "ref-qwen2-prose")  # fmt: skip
BOT_TOKEN = "hf_" + "B0tT0ken" * 4
OWNER_TOKEN = "hf_" + "0wnerT0ken" * 3


@pytest.fixture
def hub(hub: HubServer) -> HubServer:
    """The Hub double (tests/conftest.py) with the bot's and a repo owner's accounts."""
    hub.add_user(BOT_TOKEN, "reefbot", orgs=("reefguard-org",))
    hub.add_user(OWNER_TOKEN, "alice")
    return hub


@pytest.fixture(scope="session")
def probe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 32 default probes as a probe file: the scan and the registry must share their probes."""
    from bot.reef import load_probes

    path = tmp_path_factory.mktemp("probes") / "probes.txt"
    path.write_text("\n".join(load_probes().texts[:32]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def hub_registry(tmp_path_factory: pytest.TempPathFactory, probe_file: Path) -> Path:
    """The demo source plus six unrelated references (its null), fingerprinted once on 32 probes. Read-only."""
    registry = Registry(tmp_path_factory.mktemp("registry") / "fingerprints")
    registry.add(fingerprint(str(DEMO_MODELS / "source"), name=SOURCE, probes=str(probe_file)))
    for name in NULL_MODELS:
        registry.add(fingerprint(str(DEMO_MODELS / name), name=name, probes=str(probe_file), role="reference"))
    return registry.root


def sha_of(repo_id: str, version: int = 0) -> str:
    return hashlib.sha1(f"{repo_id}#{version}".encode()).hexdigest()


def plant(
    hub: HubServer,
    root: Path,
    repo_id: str,
    demo: str,
    *,
    card: dict[str, Any] | None = None,
    version: int = 0,
    **flags: Any,
) -> str:
    """Serve a copy of demo/models/<demo> (plus a README with `card` as front matter) as `repo_id`; its sha."""
    folder = root / "repos" / f"{repo_id.replace('/', '--')}-{version}"
    shutil.copytree(DEMO_MODELS / demo, folder)
    front = f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n" if card else ""
    (folder / "README.md").write_text(f"{front}# {repo_id}\n\nA model card.\n", encoding="utf-8")
    sha = sha_of(repo_id, version)
    hub.add_repo(repo_id, folder, sha=sha, **flags)
    return sha


def report_of(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "hub-report.json").read_text(encoding="utf-8"))
    return data


def findings_of(report: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """repo id -> [(finding kind, source)] for every result (empty lists for clean ones)."""
    return {r["repo_id"]: [(f["kind"], f["source"]) for f in r["findings"]] for r in report["results"]}


def bodies_fetched(hub: HubServer, repo_id: str | None = None) -> list[str]:
    """File body GETs (resolve or CDN), optionally only the resolves of one repo."""
    paths = [r.path for r in hub.requests if r.method == "GET" and not r.path.startswith("/api/")]
    return [p for p in paths if repo_id is None or p.startswith(f"/{repo_id}/")]


def weight_downloads(hub: HubServer, repo_id: str) -> list[str]:
    """Full (not Range) GETs of a repo's weight files: what a header read must never turn into."""
    return [
        r.path
        for r in hub.requests
        if r.method == "GET"
        and r.path.startswith(f"/{repo_id}/resolve/")
        and r.path.endswith((".safetensors", ".bin", ".gguf"))
        and "range" not in r.headers
    ]
