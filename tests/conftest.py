"""Shared fixtures: every test owns its world (env, caches, registry) and builds its own small models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

# Imported at collection, before any fixture edits the environment: huggingface_hub reads HF_HUB_OFFLINE,
# HF_HOME and the token path once, at import (constants.py).
import huggingface_hub
import pytest

from bot.reef import ProbeSet, load_probes
from tests import builders
from tests.doubles.hub_server import HubServer

REPO = Path(__file__).resolve().parents[1]
# Tokens, endpoints and proxies that would point a test at the real services (any case, as curl reads them).
LEAKY_VARIABLES = {"CI", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "REEFGUARD_WEBHOOK_SECRET",
                   "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    """The test run follows the CLI's thread policy (``bot.cli.thread_count``): on cores busy with other work,
    torch's default of one thread per core ran a ``check`` about 3x slower, and the whole suite 6x slower.
    Tests that call ``main()`` and subprocesses inherit it; ``REEFGUARD_THREADS`` or ``OMP_NUM_THREADS``
    override it."""
    import os

    from bot.cli import apply_threads, thread_count

    apply_threads(thread_count(None, os.environ))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No CI, GitHub or Hub settings leak in; caches go to tmp; the default registry location is a trap."""
    import os

    for key in list(os.environ):
        if key.startswith(("GITHUB_", "INPUT_")) or key.upper() in LEAKY_VARIABLES:
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("REEFGUARD_NO_PROGRESS", "1")
    # Reading the default registry fails (it does not exist); a test must name its registry.
    monkeypatch.setenv("REEFGUARD_REGISTRY", str(tmp_path / "no-default-registry"))
    yield


@pytest.fixture
def hub() -> Iterator[HubServer]:
    """The Hub double, started; aim the real huggingface_hub client at ``hub.url``."""
    if huggingface_hub.is_offline_mode():
        pytest.fail("HF_HUB_OFFLINE was set when huggingface_hub was imported; the Hub double cannot be reached")
    with HubServer() as server:
        yield server


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session folder of tiny seeded models (see tests/builders.py), built on first use."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_llama(models_dir: Path) -> Path:
    return builders.tiny_model(models_dir / "llama", "llama", seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2(models_dir: Path) -> Path:
    return builders.tiny_model(models_dir / "gpt2", "gpt2", seed=0)


@pytest.fixture(scope="session")
def tiny_bert(models_dir: Path) -> Path:
    return builders.tiny_bert(models_dir / "bert", seed=0)


@pytest.fixture(scope="session")
def few_probes() -> ProbeSet:
    """The first 32 default probes: enough for CKA, fast on any model."""
    probes = load_probes()
    return builders.probe_subset(probes, 32)


@pytest.fixture
def demo_registry(tmp_path: Path) -> Path:
    """A writable copy of the repository's committed fingerprints/ (demo entries and references)."""
    import shutil

    target = tmp_path / "fingerprints"
    shutil.copytree(REPO / "fingerprints", target)
    return target
