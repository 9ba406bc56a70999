"""Trap² training overhead against plain fine-tuning (the paper: about 2×), on the demo base model, CPU.

    .venv/bin/python bench/trap2_overhead.py [--steps 60] [--threads 1]

Times the same number of optimizer steps with λ = 0 (plain) and λ > 0 (Trap²: a second, scaled forward and
backward pass per step), for the LoRA and the full form; evaluation is excluded (one evaluation at the end). The
time is the process's CPU seconds in training steps (``train_cpu_seconds``), which other processes on shared cores
do not inflate. Writes the table of seconds per step and the ratio into docs/protection.md (block
``trap2-overhead``, through ``bench/tables.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

from bot.reef import load_model
from bot.trap2.config import ProtectConfig
from bot.trap2.data import prepare
from bot.trap2.training import train_update, trainable_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tables import publish  # noqa: E402

BASE = REPO / "demo" / "models" / "source"
DOCS = REPO / "docs" / "protection.md"


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
    rows = ["| form | plain CPU s/step | Trap² CPU s/step | overhead |", "|---|---:|---:|---:|"]
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
                times.append(summary.train_cpu_seconds / summary.steps_run)
            per_step[lam] = statistics.median(times)
        rows.append(f"| {form} | {per_step[0.0]:.4f} | {per_step[0.5]:.4f} | {per_step[0.5] / per_step[0.0]:.2f}× |")
    table = "\n".join(rows)
    print(table)  # noqa: T201 (a benchmark script)
    flags = f"--steps {args.steps} --repeats {args.repeats} --threads {args.threads}"
    command = f"OMP_NUM_THREADS={args.threads} .venv/bin/python bench/trap2_overhead.py {flags}"
    publish(DOCS, "trap2-overhead", table, command)


if __name__ == "__main__":
    main()
