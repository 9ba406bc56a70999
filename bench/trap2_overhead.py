"""Trap² training overhead against plain fine-tuning (the paper: about 2×), on the demo base model, CPU.

    .venv/bin/python bench/trap2_overhead.py [--steps 60] [--threads 1]

Times the same number of optimizer steps with λ = 0 (plain) and λ > 0 (Trap²: a second, scaled forward and
backward pass per step), for the LoRA and the full form; evaluation is excluded (one evaluation at the end).
Prints a markdown table of seconds per step and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from bot.reef.loading import load_model
from bot.trap2.config import ProtectConfig
from bot.trap2.data import prepare
from bot.trap2.training import train_update, trainable_model

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "demo" / "models" / "source"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = load_model(BASE, dtype="float32", with_lm_head=True)
    tokenizer = loaded.load_tokenizer()
    text = REPO / "bot" / "reef" / "loading.py"  # any few thousand tokens of code
    rows = ["| form | plain s/step | Trap² s/step | overhead |", "|---|---:|---:|---:|"]
    for form in ("lora", "full"):
        per_step = {}
        for lam in (0.0, 0.5):
            config = ProtectConfig(form=form, lam=lam, steps=args.steps, eval_every=args.steps + 1, patience=1)
            data = prepare(tokenizer, [text], context=config.context, val_fraction=config.val_fraction,
                           max_val_windows=4)  # fmt: skip
            times = []
            for _ in range(args.repeats):
                model, anchors = trainable_model(loaded.model, config)
                summary = train_update(model, data, config, anchors=anchors)
                times.append(summary.train_seconds / summary.steps_run)
            per_step[lam] = statistics.median(times)
        rows.append(f"| {form} | {per_step[0.0]:.4f} | {per_step[0.5]:.4f} | {per_step[0.5] / per_step[0.0]:.2f}× |")
    print("\n".join(rows))  # noqa: T201 (a benchmark script)


if __name__ == "__main__":
    main()
