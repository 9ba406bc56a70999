"""Two-stage Hub scans (issue 16), in one run against the Hub double: `.venv/bin/python bench/scan_triage.py`.

a. Verdict agreement: every model of the lineage zoo (bench/zoo.py, built under .cache/zoo) is served as a Hub
   repo and scanned twice against the lineage registry (.cache/lineage-registry, bench/lineage.py builds it): with
   stage 1 (the default) and with `--no-triage` (every candidate downloaded and fingerprinted, as before). Each
   verdict must be the same; the table says which stage decided and what each stage read.
b. Bytes: 7B-shaped Llama candidates (32,000 x 4096 bfloat16 embedding, 13.5 GB in all) whose tensor bytes the
   double makes on demand, each with random (unrelated) embedding rows and the tokenizer of the zoo's gpt2-prose
   source: stage-1 bytes of the first (tokenizer cache cold) and the median of the others (warm), as a share of
   the candidate's size.
c. Throughput: the same candidates, scanned with the double's file bodies capped at --bandwidth-mb-s (50 MB/s
   by default, in the server thread): candidates decided per hour of wall time, registry preparation included.

The double runs in this process on loopback; timings on a shared machine are noisy (the load average is
recorded). Results go to bench/results/scan_triage.{json,md}.
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


def agreement(zoo: Path, registry: Path, work: Path) -> dict[str, Any]:
    members = sorted(p for p in zoo.iterdir() if (p / "config.json").is_file() and any(p.glob("*.safetensors")))
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


def bytes_and_throughput(zoo: Path, registry: Path, work: Path, *, count: int, bandwidth: float) -> dict[str, Any]:
    with HubServer() as hub:
        hub.page_size = 1000
        hub.bandwidth_bytes_per_s = bandwidth
        sizes = [plant_7b(hub, work / "big", f"big/unrelated-{i:04d}", zoo / "gpt2-prose", 1000 + i)
                 for i in range(count)]  # fmt: skip
        started = time.monotonic()
        report = _scan(hub, registry, work, "big")
        wall_s = time.monotonic() - started
    results = sorted(report["results"], key=lambda r: r["repo_id"], reverse=True)  # scanned newest first
    decided = [r for r in results if r.get("stage") == 1]
    order = {r["repo_id"]: r for r in results}
    scanned = [order[f"big/unrelated-{i:04d}"] for i in reversed(range(count))]
    cold = scanned[0]["stage_bytes"][0] if scanned[0].get("stage_bytes") else None
    warm = [r["stage_bytes"][0] for r in scanned[1:] if r.get("stage") == 1]
    size = sizes[0]
    return {
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


def render(result: dict[str, Any]) -> str:
    lines = ["# Two-stage Hub scan (issue 16)", "", f"Load average at start: {result['load']}.", ""]
    big = result.get("bytes")
    if big:
        lines += [
            "## Bytes and throughput, unrelated 7B-shaped candidates", "",
            f"- candidates: {big['candidates']}, each {big['candidate_bytes'] / 1e9:.2f} GB (bfloat16); "
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
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    os.environ.setdefault("REEFGUARD_NO_PROGRESS", "1")
    zoo, registry = Path(args.zoo), Path(args.registry)
    result: dict[str, Any] = {"load": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="scan-triage-") as tmp:
        work = Path(tmp)
        result["bytes"] = bytes_and_throughput(zoo, registry, work, count=args.candidates,
                                               bandwidth=args.bandwidth_mb_s * 1e6)  # fmt: skip
        sys.stderr.write(json.dumps(result["bytes"], indent=1) + "\n")
        if not args.skip_agreement:
            result["agreement"] = agreement(zoo, registry, work)
            sys.stderr.write(f"agreement {result['agreement']['agree']}/{result['agreement']['models']}\n")
    out = Path(args.out)
    (out / "scan_triage.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    (out / "scan_triage.md").write_text(render(result), encoding="utf-8")


if __name__ == "__main__":
    main_bench()
