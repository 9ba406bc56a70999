"""Stage 1 of the Hub scan: a weight verdict from the anchor rows read by HTTP Range, the full check only after.

7B- and 70B-shaped candidates are served by the Hub double from generated safetensors (a real header, tensor
bytes made on demand, never stored): the scan must decide them from headers, a shared tokenizer and a few
embedding rows, and never ask for a whole weight file. Small derivatives go on to the full check.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from bot.cli import ExitCode, main
from bot.hub.triage import gguf_to_check
from tests.builders import DEMO_MODELS
from tests.doubles.hub_server import HubServer, SparseGGUF, SparseSafetensors, llama_shapes
from tests.gguf_files import big_gpt2_gguf, gguf_of
from tests.hub.conftest import SOURCE, SOURCE_REPO, plant, report_of, sha_of
from tests.hub.test_scan import scan_args

SHAPES = {
    "7b": {"hidden": 4096, "layers": 32, "intermediate": 11008, "vocab": 32000},
    "70b": {"hidden": 8192, "layers": 80, "intermediate": 28672, "vocab": 32000, "kv_hidden": 1024},
}


def plant_big(hub: HubServer, root: Path, repo_id: str, *, seed: int, shape: str = "7b") -> SparseSafetensors:
    """A Llama-shaped repo of `shape` whose embedding rows are drawn from `seed`, with the demo tokenizer."""
    folder = root / "repos" / repo_id.replace("/", "--")
    folder.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the demo source's: shared with the registry
        shutil.copy(DEMO_MODELS / "source" / name, folder / name)
    size = SHAPES[shape]
    heads, kv_heads = size["hidden"] // 128, size.get("kv_hidden", size["hidden"]) // 128
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": size["hidden"],
              "num_hidden_layers": size["layers"], "intermediate_size": size["intermediate"],
              "vocab_size": size["vocab"], "num_attention_heads": heads, "num_key_value_heads": kv_heads,
              "torch_dtype": "bfloat16"}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    sha = sha_of(repo_id)
    hub.add_repo(repo_id, folder, sha=sha)
    body = SparseSafetensors(llama_shapes(**size), dtype="BF16", embedding="model.embed_tokens.weight", seed=seed)
    hub.add_generated(repo_id, sha, "model.safetensors", body)
    return body


def gets(hub: HubServer, suffix: str) -> list[str]:
    return [r.path for r in hub.requests if r.method == "GET" and r.path.split("?")[0].endswith(suffix)]


def test_unrelated_7b_shaped_candidates_are_decided_from_under_one_percent_of_their_bytes(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = {repo: plant_big(hub, tmp_path, repo, seed=seed) for seed, repo in enumerate(("big/one", "big/two"))}

    # --max-params caps the full check's download only: a 7B model is still triaged by Range.
    code = main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--max-params", "1B"])

    assert code == ExitCode.OK
    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    for repo, body in bodies.items():
        result = results[repo]
        assert (result["status"], result["verdict"], result["stage"]) == ("checked", "unrelated", 1), result
        assert len(result["stage_bytes"]) == 1 and result["stage_bytes"][0] <= len(body) // 100
        assert "stage 1, by Range" in result["reason"]
        # Never the whole file: every weight GET names a byte range.
        assert all("range" in r.headers for r in hub.requests if r.path.startswith("/cdn/") and r.method == "GET")
    # The second candidate shares the first one's tokenizer: fetched and tokenized once.
    assert len(gets(hub, "/tokenizer.json")) == 1
    first, second = sorted(results.values(), key=lambda r: r["stage_bytes"][0], reverse=True)
    assert second["stage_bytes"][0] < first["stage_bytes"][0]
    # What the results count is what the Hub sent: file bodies, Range slices and the config (no JSON API replies).
    assert sum(r["stage_bytes"][0] for r in results.values()) == hub.served_bytes("/big/") + hub.served_bytes("/cdn/")
    assert report_of(tmp_path / "run")["budget"]["triage_bytes"] == sum(r["stage_bytes"][0] for r in results.values())
    assert report_of(tmp_path / "run")["budget"]["download_bytes"] == 0


def test_a_70b_shaped_header_longer_than_the_first_read_is_read_whole(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against this toy registry a random 8192-wide embedding is not cleared (its best-of-8192 unit pairing scores
    above the toy null), so stage 1 hands it on, and --max-params stops the full check before any weights."""
    body = plant_big(hub, tmp_path, "big/seventy", seed=7, shape="70b")
    assert len(body.head) > 64 * 1024  # the header alone needs a second Range request

    code = main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--max-params", "10B"])

    assert code == ExitCode.OK
    report = report_of(tmp_path / "run")
    (result,) = report["results"]
    assert (
        result["status"] == "skipped" and "> --max-params 10,000,000,000; stage 1 did not clear it" in result["reason"]
    )
    assert 0 < result["stage_bytes"][0] == report["budget"]["triage_bytes"] <= len(body) // 10_000  # of 138 GB
    assert report["budget"]["download_bytes"] == 0
    ranges = [r.headers.get("range") for r in hub.requests if r.path.startswith("/cdn/")]
    assert ranges[:2] == ["bytes=0-65535", f"bytes=65536-{len(body.head) - 1}"]
    assert None not in ranges  # never the whole file


def test_derivatives_and_declared_sources_go_on_to_the_full_check(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    plant(hub, tmp_path, "lab/claims-source", "unrelated", card={"base_model": SOURCE_REPO})
    plant(hub, tmp_path, "lab/fresh-model", "unrelated")

    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.FINDING

    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    tune, claims, fresh = (results[repo] for repo in ("lab/quiet-tune", "lab/claims-source", "lab/fresh-model"))
    assert (tune["stage"], tune["verdict"], tune["findings"][0]["source"]) == (2, "derived", SOURCE)
    assert len(tune["stage_bytes"]) == 2 and all(n > 0 for n in tune["stage_bytes"])
    # Unrelated on the weights, but its card names a registry source: only the full check can say it is wrong.
    assert (claims["stage"], claims["verdict"]) == (2, "unrelated")
    assert [f["kind"] for f in claims["findings"]] == ["wrong-declaration"]
    assert (fresh["stage"], fresh["verdict"]) == (1, "unrelated")
    markdown = (tmp_path / "run" / "hub-report.md").read_text(encoding="utf-8")
    assert "Stage 1 (anchor rows by Range) decided 1 of 3 checked model versions" in markdown


def test_no_triage_checks_every_candidate_in_full_with_the_same_verdicts(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    plant(hub, tmp_path, "lab/fresh-model", "unrelated")

    main(scan_args(hub, hub_registry, probe_file, tmp_path, "two-stage"))
    main([*scan_args(hub, hub_registry, probe_file, tmp_path, "full"), "--no-triage"])

    staged, full = ({r["repo_id"]: r for r in report_of(tmp_path / n)["results"]} for n in ("two-stage", "full"))
    assert {repo: r["verdict"] for repo, r in staged.items()} == {repo: r["verdict"] for repo, r in full.items()}
    assert {r["stage"] for r in full.values()} == {2} and staged["lab/fresh-model"]["stage"] == 1


# GGUF repos: the header and the token embedding's rows by Range, the tokenizer from the GGUF metadata.


def plant_gguf(hub: HubServer, root: Path, repo_id: str, demo: str, quantizations: tuple[str, ...]) -> Path:
    """demo/models/<demo> written as GGUF files, one per embedding storage type, as `repo_id` (no safetensors)."""
    folder = root / "repos" / repo_id.replace("/", "--")
    folder.mkdir(parents=True)
    for kind in quantizations:
        gguf_of(DEMO_MODELS / demo, folder / f"{demo}-{kind}.gguf", embedding=kind)
    (folder / "README.md").write_text(f"# {repo_id}\n", encoding="utf-8")
    hub.add_repo(repo_id, folder, sha=sha_of(repo_id))
    return folder


def body_gets(hub: HubServer) -> list[tuple[str, str | None]]:
    """The path and Range header of every GET of a file body (None: the whole file)."""
    bodies = [r for r in hub.requests if r.method == "GET" and r.path.startswith("/cdn/")]
    return [(r.path, r.headers.get("range")) for r in bodies]


def test_gguf_repos_are_triaged_by_range_with_the_verdicts_of_the_full_check(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plant_gguf(hub, tmp_path, "quant/source-GGUF", "source", ("Q8_0", "F32"))
    plant_gguf(hub, tmp_path, "quant/unrelated-GGUF", "ref-gpt2-code-b", ("Q8_0",))  # trained apart from the source

    assert main(scan_args(hub, hub_registry, probe_file, tmp_path, "two-stage")) == ExitCode.FINDING
    staged = {r["repo_id"]: r for r in report_of(tmp_path / "two-stage")["results"]}
    whole = [path for path, ranged in body_gets(hub) if ranged is None]
    main([*scan_args(hub, hub_registry, probe_file, tmp_path, "full"), "--no-triage"])
    full = {r["repo_id"]: r for r in report_of(tmp_path / "full")["results"]}

    source, unrelated = staged["quant/source-GGUF"], staged["quant/unrelated-GGUF"]
    assert (unrelated["stage"], unrelated["verdict"]) == (1, "unrelated"), unrelated
    assert (source["stage"], source["verdict"], source["findings"][0]["source"]) == (2, "derived", SOURCE), source
    assert {repo: r["verdict"] for repo, r in staged.items()} == {repo: r["verdict"] for repo, r in full.items()}
    # Stage 2 downloads one file: the smaller quantization (Q8_0), never the F32 one beside it.
    q8 = (tmp_path / "repos" / "quant--source-GGUF" / "source-Q8_0.gguf").read_bytes()
    assert whole == [f"/cdn/{hashlib.sha256(q8).hexdigest()}"] and source["stage_bytes"][1] == len(q8)


def test_a_7b_shaped_gguf_is_decided_from_its_header_and_a_few_rows(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    planted = (("big/q8-a", "Q8_0"), ("big/q8-b", "Q8_0"), ("big/q2", "Q2_K"))
    bodies = {repo: plant_sparse_gguf(hub, tmp_path, repo, embedding=kind, seed=seed)
              for seed, (repo, kind) in enumerate(planted)}  # fmt: skip

    assert main([*scan_args(hub, hub_registry, probe_file, tmp_path), "--max-params", "1B"]) == ExitCode.OK

    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    for repo in ("big/q8-a", "big/q8-b"):
        decided = results[repo]
        assert (decided["status"], decided["verdict"], decided["stage"]) == ("checked", "unrelated", 1), decided
        # The first 1 MB read holds the header; then the anchor rows: at most 512 rows of 4,352 bytes (Q8_0).
        assert decided["stage_bytes"][0] <= 2**20 + 512 * 4352 < len(bodies[repo]) // 1000
    # A 2-bit embedding could hide a derivative: stage 1 hands it on, and --max-params stops the download.
    coarse = results["big/q2"]
    assert coarse["status"] == "skipped" and "2.6 bits per value" in coarse["reason"], coarse
    assert "stage 1 did not clear it" in coarse["reason"]
    assert all(ranged for _, ranged in body_gets(hub))  # never a whole file
    # The two Q8_0 files share the demo tokenizer in their metadata: converted and tokenized once.
    tokenizers = tmp_path / "cache-run" / "reefguard-tokenizers"
    assert len(list(tokenizers.glob("gguf-*/anchors-*.json"))) == 1


def plant_sparse_gguf(hub: HubServer, root: Path, repo_id: str, *, embedding: str, seed: int) -> SparseGGUF:
    """A ~7B-parameter GPT-2 GGUF repo with the demo tokenizer, its token embedding stored as `embedding`."""
    body = big_gpt2_gguf(DEMO_MODELS / "source", embedding=embedding, seed=seed)
    folder = root / "repos" / repo_id.replace("/", "--")
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(f"# {repo_id}\n", encoding="utf-8")
    hub.add_repo(repo_id, folder, sha=sha_of(repo_id))
    hub.add_generated(repo_id, sha_of(repo_id), f"model-{embedding}.gguf", body)
    return body


@pytest.mark.parametrize(
    ("files", "checked"),
    [
        # a quantization repo: the smallest file of at least 4 bits, whatever else is beside it
        ({"m-Q2_K.gguf": 10, "m-IQ3_XS.gguf": 12, "m-Q4_K_M.gguf": 20, "m-Q8_0.gguf": 40, "m-f16.gguf": 80,
          "mmproj-m-f16.gguf": 5, "imatrix.gguf": 1, "m-lora-f16.gguf": 3, "README.md": 1}, "m-Q4_K_M.gguf"),
        ({"Q2_K/model.gguf": 10, "Q4_K_M/model.gguf": 20}, "Q4_K_M/model.gguf"),  # quantizations in folders
        ({"Flora-7B-Q4_K_M.gguf": 20, "empty.gguf": 0}, "Flora-7B-Q4_K_M.gguf"),
        ({"m-Q2_K.gguf": 10, "m-Q3_K_M.gguf": 12}, "m-Q2_K.gguf"),  # only coarse ones: the smallest
        ({"m-00001-of-00002.gguf": 10, "m-00002-of-00002.gguf": 10}, None),  # split parts are not loaded
        ({"model.safetensors": 10, "m-Q4_K_M.gguf": 5}, None),  # safetensors win
    ],
)  # fmt: skip
def test_the_gguf_file_a_scan_checks(files: dict[str, int], checked: str | None) -> None:
    assert gguf_to_check(files) == checked


def test_a_zero_width_embedding_is_a_skip_and_the_scan_goes_on(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "repos" / "odd--empty-embedding"
    shutil.copytree(DEMO_MODELS / "source", folder)
    (folder / "model.safetensors").unlink()
    tensors = {"transformer.wte.weight": np.zeros((512, 0), np.float32), "transformer.ln_f.weight": np.ones(4)}
    save_file(tensors, str(folder / "model.safetensors"))  # a real file whose embedding has no columns
    hub.add_repo("odd/empty-embedding", folder, sha=sha_of("odd/empty-embedding"))
    plant(hub, tmp_path, "lab/fresh-model", "unrelated")

    assert main(scan_args(hub, hub_registry, probe_file, tmp_path)) == ExitCode.OK

    results = {r["repo_id"]: r for r in report_of(tmp_path / "run")["results"]}
    assert results["odd/empty-embedding"]["status"] == "skipped", results["odd/empty-embedding"]
    assert (results["lab/fresh-model"]["status"], results["lab/fresh-model"]["verdict"]) == ("checked", "unrelated")
