"""Trap² on the demo base model, docs/protection.md's demo tables (CPU, seeded; about 20 minutes on 2 shared cores).

    .venv/bin/python bench/trap2_demo.py --out .cache/trap2-demo [--form lora full]

Base: demo/models/source (GPT-2, 4 blocks, width 64, trained on English docstrings). The protected task is Python
source code; two other plain updates of the same base (other code, other prose) are what an attacker merges it
with. For each form it trains the protected update and its twin (same settings, λ = 0), the two other updates,
then runs ``verify`` (scale sweep, merge attacks) and writes ``<out>/<form>/report/`` (report.md, report.json,
scale_sweep.png), a release folder, and the report's tables into docs/protection.md (block ``trap2-demo-<form>``,
through ``bench/tables.py``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import sys
from pathlib import Path

import torch

from bot.trap2.config import ProtectConfig
from bot.trap2.release import write_release
from bot.trap2.training import protect
from bot.trap2.verification import render_markdown, verify

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tables import publish  # noqa: E402

DOCS = REPO / "docs" / "protection.md"
BASE = REPO / "demo" / "models" / "source"
CORPORA = {
    "task_train": ("code", ("json.decoder", "textwrap", "string", "heapq", "bisect", "csv", "fractions", "statistics")),
    "task_val": ("code", ("tarfile",)),
    "code_train": ("code", ("argparse", "dataclasses", "pprint", "difflib")),
    "code_val": ("code", ("enum",)),
    "prose_train": ("prose", ("email.message", "http.client", "sqlite3", "decimal", "calendar")),
    "prose_val": ("prose", ("zipfile", "tarfile")),
}
# Settings chosen on this base (docs/trap2.md): the paper's λ (1e-2) barely moves a model this small in a
# few hundred steps; λ ≈ 0.5–1 with an off-nominal loss cap of 6 nats (≈ 1.4 × the base's loss) and w = 1/s does.
CONFIGS = {
    "lora": ProtectConfig(form="lora", lam=1.0, lr=5e-3, loss_cap=6.0, weight="inv", steps=800),
    "full": ProtectConfig(form="full", lam=0.5, lr=1e-3, loss_cap=6.0, weight="inv", steps=800),
}
OTHER_STEPS = 300


def corpus(kind: str, modules: tuple[str, ...]) -> str:
    parts = []
    for name in modules:
        module = importlib.import_module(name)
        if kind == "code":
            parts.append(inspect.getsource(module))
            continue
        parts.append(inspect.getdoc(module) or "")
        parts += [inspect.getdoc(getattr(module, a)) or "" for a in sorted(dir(module)) if not a.startswith("_")]
    return "\n\n".join(dict.fromkeys(p for p in parts if len(p) > 40))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".cache" / "trap2-demo")
    parser.add_argument("--form", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)  # the same numbers on every run on one machine
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, (kind, modules) in CORPORA.items():
        (data / f"{name}.txt").write_text(corpus(kind, modules), encoding="utf-8")
    for form in args.form:
        config = CONFIGS[form]
        out = args.out / form
        run = protect(BASE, [data / "task_train.txt"], out, config=config, validation=[data / "task_val.txt"])
        plain = ProtectConfig(**{**config.twin().to_dict(), "steps": OTHER_STEPS, "target_modules": ()})
        others = []
        for other in ("code", "prose"):
            other_run = protect(BASE, [data / f"{other}_train.txt"], out / f"other-{other}", config=plain,
                                validation=[data / f"{other}_val.txt"], twin=False)  # fmt: skip
            others.append(other_run.protected)
        report = verify(BASE, run.protected, data=[data / "task_val.txt"], twin=run.twin, others=others,
                        other_data=[data / "code_val.txt", data / "prose_val.txt"], out=out / "report")  # fmt: skip
        release = out / "release"
        if not release.exists():
            write_release(run.protected, release, base_model="reefguard/demo-source", report=report,
                          tokenizer_from=BASE)  # fmt: skip
        summary = (f"{form}: protected trained {run.protected_summary.train_seconds:.0f}s "
                   f"({run.protected_summary.steps_run} steps), twin {run.twin_summary.train_seconds:.0f}s "
                   f"({run.twin_summary.steps_run} steps)" if run.twin_summary else form)  # fmt: skip
        (out / "report" / "training.txt").write_text(summary + "\n", encoding="utf-8")
        tables = render_markdown(report).replace("# Trap² verification\n", "", 1).strip()
        tables = "\n".join("##" + line if line.startswith("#") else line for line in tables.splitlines())
        command = f".venv/bin/python bench/trap2_demo.py --form {form}"
        publish(DOCS, f"trap2-demo-{form}", f"{summary}.\n\n{tables}", command)
        logging.info("%s\n%s", summary, render_markdown(report))


if __name__ == "__main__":
    main()
