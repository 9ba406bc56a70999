"""Trap² fixtures: a tiny GPT-2 base, code text, and one protect run (protected + twin + one other update) per session.

Runs are a few dozen steps on a width-32 random-init model: enough to check files, numbers and behaviour on bad
input, not the protection's strength (its loss cannot move far from ln 512: margins of ~1e-3 nats, which differ
between torch's CPU kernels, issue 14). Tests of the trap itself train on ``DEMO_BASE``, a trained model whose
loss on Python source drops by tenths of a nat and whose trap forms with margins of tenths of a nat.
"""

from __future__ import annotations

import importlib
import inspect
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from bot.trap2.config import ProtectConfig
from bot.trap2.training import ProtectRun, protect
from tests import builders

REPO = Path(__file__).resolve().parents[2]
# GPT-2, 4 blocks, width 64, trained on English docstrings (demo/make_models.py); read-only here.
DEMO_BASE = REPO / "demo" / "models" / "source"
# Python source the demo base never saw in training: the protected task, and held-out validation text.
TASK_MODULES = ("json.decoder", "textwrap", "string", "heapq", "bisect", "csv")
VALIDATION_MODULES = ("tarfile",)

FAST = ProtectConfig(form="lora", lam=0.5, lr=5e-3, steps=12, eval_every=4, batch_size=4, context=32,
                     max_val_windows=8, lora_r=4, lora_alpha=8, loss_cap=8.0)  # fmt: skip


@pytest.fixture(scope="session")
def trap2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trap2")


@pytest.fixture(scope="session")
def base(trap2_dir: Path) -> Path:
    return builders.tiny_model(trap2_dir / "base", "gpt2", seed=0)


@pytest.fixture(scope="session")
def code_text(trap2_dir: Path) -> Path:
    import json
    import textwrap as module

    path = trap2_dir / "code.txt"
    path.write_text(inspect.getsource(module) + inspect.getsource(json), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def prose_text(trap2_dir: Path) -> Path:
    path = trap2_dir / "prose.txt"
    path.write_text(textwrap.dedent(inspect.getdoc(inspect) or "") * 8, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def lora_run(base: Path, code_text: Path, trap2_dir: Path) -> ProtectRun:
    return protect(base, [code_text], trap2_dir / "lora", config=FAST)


@pytest.fixture(scope="session")
def other_update(base: Path, prose_text: Path, trap2_dir: Path) -> Path:
    config = ProtectConfig(**{**FAST.twin().to_dict(), "seed": 7, "target_modules": ()})
    return protect(base, [prose_text], trap2_dir / "other", config=config, twin=False).protected


def stdlib_source(modules: Sequence[str]) -> str:
    """The Python source of standard-library modules, joined by blank lines (fixed for a Python version)."""
    return "\n\n".join(inspect.getsource(importlib.import_module(name)) for name in modules)


@pytest.fixture(scope="session")
def task_text(trap2_dir: Path) -> Path:
    path = trap2_dir / "task.txt"
    path.write_text(stdlib_source(TASK_MODULES), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def task_validation(trap2_dir: Path) -> Path:
    path = trap2_dir / "task-validation.txt"
    path.write_text(stdlib_source(VALIDATION_MODULES), encoding="utf-8")
    return path
