"""How honest is the p-value? Rates of p < alpha for independent models (run: .venv/bin/python bench/calibration.py).

Sixty random-init transformers (Llama, GPT-2, Qwen2 shapes; independent seeds) are fingerprinted on the first 64
default probes. Each of 2,000 draws picks a source, a suspect and ten null entries, all distinct, and computes the
suspect's p-value as `compare` does. Under independence, P(p < alpha) should be alpha.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot import _output
from bot.reef.fingerprint import fingerprint_model
from bot.reef.probes import load_probes
from bot.reef.verdict import compare
from tests.builders import DEMO_MODELS, probe_subset, random_model

N_MODELS, N_NULL, N_DRAWS = 60, 10, 2000


def main() -> None:
    from transformers import AutoTokenizer

    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODELS / "source")
    probes = probe_subset(load_probes(), 64)
    fps = [
        fingerprint_model(random_model(seed, tokenizer), probes, name=f"m{seed}", model=f"seed-{seed}")
        for seed in range(N_MODELS)
    ]
    rng = np.random.default_rng(0)
    p_values = []
    for _ in range(N_DRAWS):
        source, suspect, *null = rng.choice(N_MODELS, size=2 + N_NULL, replace=False)
        registry = [fps[source], *(replace(fps[i], role="reference") for i in null)]
        p_values.append(compare(fps[suspect], registry).matches[0].p_value)
    p = np.array(p_values, dtype=float)
    _output.write(f"{N_DRAWS} independent-pair draws, {N_MODELS} models, null of {N_NULL}, 64 probes")
    for alpha in (0.001, 0.01, 0.05, 0.1):
        _output.write(f"  P(p < {alpha:<5}) = {np.mean(p < alpha):.4f}   (nominal {alpha})")
    _output.write(f"  {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
