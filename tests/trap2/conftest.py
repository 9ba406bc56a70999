"""Trap² fixtures: a tiny GPT-2 base, code text, and one protect run (protected + twin + one other update) per session.

Runs are a few dozen steps on a width-32 model: enough to check files, numbers and behaviour on bad input, not the
protection's strength (bench/trap2_demo.py measures that; numbers in README.md, "Trap² protection").
"""

from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from bot.trap2.config import ProtectConfig
from bot.trap2.training import ProtectRun, protect
from tests import builders

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
