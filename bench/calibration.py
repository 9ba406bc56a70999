"""How honest are the p-values? Rates of p < alpha for independent models (run: .venv/bin/python bench/calibration.py).

Two populations, each fingerprinted on the first 64 default probes:

- sixty random-init transformers (Llama, GPT-2, Qwen2 shapes; independent seeds), for the CKA p-value;
- twenty-four trained ones (8 seeds of each of the three architectures, all on the same text with the same
  tokenizer: the hardest case for both signals, since same-architecture pairs on the same data look alike),
  for the CKA and the weight p-values. Trained models are cached in .cache/calibration/ (about 5 minutes to
  build on 2 cores).

Each of 2,000 draws picks a source, a suspect and ten null entries, all distinct, and computes the suspect's
p-values as `compare` does. Under independence, P(p < alpha) should be alpha.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot import _output  # noqa: E402
from bot.reef.fingerprint import Fingerprint, fingerprint_model  # noqa: E402
from bot.reef.loading import LoadedModel, load_model  # noqa: E402
from bot.reef.probes import ProbeSet, load_probes  # noqa: E402
from bot.reef.verdict import SourceMatch, compare  # noqa: E402
from bot.reef.weights import STATISTICS  # noqa: E402
from tests.builders import ARCHITECTURES, DEMO_MODELS, probe_subset, random_model  # noqa: E402

N_RANDOM, N_SEEDS, N_NULL, N_DRAWS = 60, 8, 10, 2000
TRAIN_STEPS = 150
CACHE = REPO / ".cache" / "calibration"


def trained_models() -> list[Path]:
    """Three architectures x ``N_SEEDS`` seeds trained on the demo's prose with its prose tokenizer (cached)."""
    import torch
    from transformers import AutoTokenizer

    from demo.make_models import new_model, prose_corpus, train

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODELS / "source")
    ids: torch.Tensor | None = None
    folders = []
    for seed in range(N_SEEDS * len(ARCHITECTURES)):
        folder = CACHE / f"{ARCHITECTURES[seed % 3]}-{seed}"
        if not (folder / "config.json").is_file():
            ids = ids if ids is not None else torch.tensor(tokenizer(prose_corpus())["input_ids"])
            model = train(new_model(ARCHITECTURES[seed % 3], 100 + seed), ids, steps=TRAIN_STEPS, lr=3e-3, seed=seed)
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


def rates(
    fps: list[Fingerprint], picks: dict[str, Callable[[SourceMatch], float | None]], rng: np.random.Generator
) -> dict[str, NDArray[np.float64]]:
    """Per entry of ``picks``, the p-value it takes from each draw's single source match."""
    p_values: dict[str, list[float | None]] = {name: [] for name in picks}
    for _ in range(N_DRAWS):
        source, suspect, *null = rng.choice(len(fps), size=2 + N_NULL, replace=False)
        registry = [fps[source], *(replace(fps[i], role="reference") for i in null)]
        match = compare(fps[suspect], registry).matches[0]
        for name, pick in picks.items():
            p_values[name].append(pick(match))
    return {name: np.array([np.nan if p is None else p for p in ps], dtype=float) for name, ps in p_values.items()}


def weight_p(statistic: str | None) -> Callable[[SourceMatch], float | None]:
    """The weight p-value of one statistic, or the doubled smaller one (what decides) for None."""

    def pick(match: SourceMatch) -> float | None:
        if match.weights is None:
            return None
        return match.weights.p_value if statistic is None else match.weights.p_values[statistic]

    return pick


def report(title: str, p: NDArray[np.float64]) -> None:
    _output.write(f"{title}: {N_DRAWS} independent-pair draws, null of {N_NULL}, 64 probes")
    missing = int(np.isnan(p).sum())
    if missing:
        _output.write(f"  {missing} draws without a p-value (too few shared tokens)")
    p = p[~np.isnan(p)]
    for alpha in (0.001, 0.01, 0.05, 0.1):
        _output.write(f"  P(p < {alpha:<5}) = {np.mean(p < alpha):.4f}   (nominal {alpha})")


def fingerprints(models: list[LoadedModel], probes: ProbeSet) -> list[Fingerprint]:
    return [fingerprint_model(model, probes, name=f"m{i}", model=f"model-{i}") for i, model in enumerate(models)]


def main() -> None:
    from transformers import AutoTokenizer

    started = time.perf_counter()
    probes = probe_subset(load_probes(), 64)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODELS / "source")
    random_fps = fingerprints([random_model(seed, tokenizer) for seed in range(N_RANDOM)], probes)
    picks = {"CKA": lambda m: m.p_value, "weights (either, doubled)": weight_p(None)}
    picks |= {f"weights ({name})": weight_p(name) for name in STATISTICS}
    for label, p in rates(random_fps, picks, np.random.default_rng(0)).items():
        report(f"{label}, {N_RANDOM} random-init models", p)
    trained_fps = fingerprints([load_model(folder) for folder in trained_models()], probes)
    title = f"{len(trained_fps)} trained models (3 architectures, same data and tokenizer)"
    for label, p in rates(trained_fps, picks, np.random.default_rng(1)).items():
        report(f"{label}, {title}", p)
    _output.write(f"  {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
