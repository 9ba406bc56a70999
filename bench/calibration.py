"""How honest are the p-values? Rates of p < alpha for independent models (run: .venv/bin/python bench/calibration.py).

Two populations, each fingerprinted on the first 64 default probes:

- sixty random-init transformers (Llama, GPT-2, Qwen2 shapes; independent seeds), for the CKA p-value;
- twenty-four trained ones (8 seeds of each of the three architectures, all on the same text with the same
  tokenizer: the hardest case for both signals, since same-architecture pairs on the same data look alike),
  for the CKA and the weight p-values. Trained models are cached in .cache/calibration/ (about 5 minutes to
  build on 2 cores).

Each of 2,000 draws picks a source, a suspect and ten null entries, all distinct, and computes the suspect's
p-values as `compare` does. Under independence, P(p < alpha) should be alpha. The rates go to
bench/results/calibration.json and, as a table, into docs/benchmarks.md (block ``calibration``);
``--from-results`` measures nothing and writes the table of the last run's JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tables import publish  # noqa: E402
from bot import _output  # noqa: E402
from bot.reef import (  # noqa: E402
    STATISTICS,
    Fingerprint,
    LoadedModel,
    ProbeSet,
    SourceMatch,
    compare,
    fingerprint_model,
    load_model,
    load_probes,
)
from tests.builders import ARCHITECTURES, DEMO_MODELS, probe_subset, random_model  # noqa: E402

N_RANDOM, N_SEEDS, N_NULL, N_DRAWS = 60, 8, 10, 2000
ALPHAS = (0.001, 0.01, 0.05, 0.1)
TRAIN_STEPS = 150
CACHE = REPO / ".cache" / "calibration"
RESULTS = REPO / "bench" / "results" / "calibration.json"
DOC = REPO / "docs" / "benchmarks.md"
COMMAND = ".venv/bin/python bench/calibration.py"


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


def rate_row(population: str, signal: str, p: NDArray[np.float64]) -> dict[str, Any]:
    """P(p < alpha) at each of ``ALPHAS`` over the draws that have a p-value."""
    present = p[~np.isnan(p)]
    return {
        "signal": signal,
        "population": population,
        "draws_without_p": int(np.isnan(p).sum()),
        "rates": {str(alpha): float(np.mean(present < alpha)) for alpha in ALPHAS},
    }


def table(record: dict[str, Any]) -> str:
    """The markdown table of a calibration.json record: one row per (p-value, population)."""
    header = ["p-value, population", *(f"P(p < {alpha})" for alpha in ALPHAS)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "--:|" * len(ALPHAS)]
    for row in record["rows"]:
        rates = " | ".join(f"{row['rates'][str(alpha)]:.4f}" for alpha in ALPHAS)
        lines.append(f"| {row['signal']}, {row['population']} | {rates} |")
    return "\n".join(lines) + "\n"


def fingerprints(models: list[LoadedModel], probes: ProbeSet) -> list[Fingerprint]:
    return [fingerprint_model(model, probes, name=f"m{i}", model=f"model-{i}") for i, model in enumerate(models)]


def measure() -> dict[str, Any]:
    """Both populations' rates (the calibration.json record)."""
    from transformers import AutoTokenizer

    started = time.perf_counter()
    probes = probe_subset(load_probes(), 64)
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODELS / "source")
    picks = {"CKA": lambda m: m.p_value, "weights (the deciding one, doubled)": weight_p(None)}
    picks |= {f"weights ({name})": weight_p(name) for name in STATISTICS}
    random_fps = fingerprints([random_model(seed, tokenizer) for seed in range(N_RANDOM)], probes)
    rows = [rate_row(f"{N_RANDOM} random-init models", signal, p)
            for signal, p in rates(random_fps, picks, np.random.default_rng(0)).items()]  # fmt: skip
    trained_fps = fingerprints([load_model(folder) for folder in trained_models()], probes)
    rows += [rate_row(f"{len(trained_fps)} trained models", signal, p)
             for signal, p in rates(trained_fps, picks, np.random.default_rng(1)).items()]  # fmt: skip
    return {
        "command": COMMAND,
        "draws": N_DRAWS,
        "null_size": N_NULL,
        "probes": len(probes.texts),
        "seconds": round(time.perf_counter() - started),
        "rows": rows,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from-results", action="store_true", help=f"measure nothing: write the table of the last run's {RESULTS.name}"
    )
    args = parser.parse_args(argv)
    if args.from_results:
        record = json.loads(RESULTS.read_text(encoding="utf-8"))
    else:
        record = measure()
        RESULTS.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    _output.write(f"{record['draws']} independent-pair draws, null of {record['null_size']}, {record['probes']} probes,"
                  f" {record['seconds']} s")  # fmt: skip
    _output.write(table(record))
    publish(DOC, "calibration", table(record), record["command"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
