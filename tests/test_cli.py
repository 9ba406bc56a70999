"""The reefguard command as users run it: exit codes, output, and bad input that fails cleanly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bot._output import redact
from bot.cli import ExitCode, main, thread_count
from bot.registry import Registry
from tests.builders import DEMO_MODELS, REPO
from tests.doubles.hub_server import HubServer


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_finds_the_fine_tune(demo_registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "check", DEMO_MODELS / "finetune", "--registry", demo_registry, "--report", tmp_path / "r"
    )
    assert code == ExitCode.FINDING
    assert "derived from demo-source" in out
    assert {p.name for p in (tmp_path / "r").iterdir()} >= {"report.md", "report.json"}


def test_check_clears_the_unrelated_model(demo_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", DEMO_MODELS / "unrelated", "--registry", demo_registry, "--json")
    report = json.loads(out)
    assert code == ExitCode.OK
    assert report["verdict"] == "unrelated" and report["sources"] == []
    demo = next(m for m in report["matches"] if m["source"] == "demo-source")
    assert demo["verdict"] == "unrelated" and demo["p_value"] > 0.1
    assert set(demo) >= {"score", "best_pair", "z", "p_value", "p_adjusted", "n_null", "verdict", "grid"}


def test_registry_calibrate_keeps_the_nulls_and_a_check_only_reads(
    demo_registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.rmtree(demo_registry / ".calibration", ignore_errors=True)
    code, out, _ = run(capsys, "registry", "calibrate", "--registry", demo_registry)
    assert code == ExitCode.OK and "calibration kept" in out and (demo_registry / ".calibration").is_dir()
    before = {path: path.read_bytes() for path in demo_registry.rglob("*") if path.is_file()}
    assert run(capsys, "check", DEMO_MODELS / "finetune", "--registry", demo_registry, "-q")[0] == ExitCode.FINDING
    assert {path: path.read_bytes() for path in demo_registry.rglob("*") if path.is_file()} == before


def test_fail_on_never_exits_zero(demo_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, *_ = run(capsys, "check", DEMO_MODELS / "finetune", "--registry", demo_registry, "--fail-on", "never", "-q")
    assert code == ExitCode.OK


def test_fingerprint_then_registry_commands(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "reg"
    code, out, err = run(capsys, "fingerprint", tiny_llama, "--name", "tiny", "--registry", registry)
    assert code == ExitCode.OK and "added tiny" in out, err
    code, out, _ = run(capsys, "registry", "list", "--registry", registry)
    assert code == ExitCode.OK and out.startswith("tiny ")
    code, out, _ = run(capsys, "registry", "show", "tiny", "--registry", registry)
    meta = json.loads(out)
    assert meta["architecture"] == "LlamaForCausalLM" and meta["n_probes"] >= 512
    assert meta["probe_set"] == "default" and len(meta["weight_sha256"]["model.safetensors"]) == 64
    code, out, _ = run(capsys, "fingerprint", tiny_llama, "--name", "tiny", "--registry", registry)
    assert code == ExitCode.ERROR
    code, out, _ = run(capsys, "registry", "remove", "tiny", "--registry", registry)
    assert code == ExitCode.OK and Registry(registry).names() == []


def test_an_entry_carries_the_hub_id_it_is_given(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "reg"
    code, _, err = run(capsys, "fingerprint", tiny_llama, "--hub-id", "./models/tiny", "--registry", registry)
    assert code == ExitCode.USAGE and "'./models/tiny' is a local path, not a Hub id" in err
    assert not registry.exists()  # refused before the model was loaded
    code, _, _ = run(
        capsys, "fingerprint", tiny_llama, "--name", "tiny", "--hub-id", "org/tiny", "--registry", registry
    )
    assert code == ExitCode.OK and Registry(registry).get("tiny").hub_id == "org/tiny"
    code, out, _ = run(capsys, "registry", "list", "--registry", registry)
    assert out.rstrip().endswith("org/tiny")

    code, out, _ = run(capsys, "registry", "set", "tiny", "--hub-id", "org/renamed", "--registry", registry)
    assert code == ExitCode.OK and out.strip() == "tiny: hub_id org/renamed"
    assert json.loads(run(capsys, "registry", "show", "tiny", "--registry", registry)[1])["hub_id"] == "org/renamed"
    code, _, err = run(capsys, "registry", "set", "tiny", "--hub-id", "org/x@main", "--registry", registry)
    assert code == ExitCode.USAGE and "not a Hub model id" in err
    code, _, err = run(capsys, "registry", "set", "tiny", "--registry", registry)
    assert code == ExitCode.USAGE and "--hub-id ORG/NAME" in err
    code, _, err = run(capsys, "registry", "set", "nobody", "--hub-id", "org/x", "--registry", registry)
    assert code == ExitCode.ERROR and "no entry named 'nobody'" in err
    assert Registry(registry).get("tiny").hub_id == "org/renamed"


def test_a_model_fingerprinted_from_the_hub_keeps_its_hub_id(
    hub: HubServer,
    tiny_llama: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sha = "c0ffee" + "0" * 34
    hub.add_repo("octo/tiny", tiny_llama, sha=sha)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    registry = tmp_path / "reg"

    code, _, err = run(capsys, "fingerprint", f"octo/tiny@{sha}", "--registry", registry)

    assert code == ExitCode.OK, err
    entry = Registry(registry).get("tiny")
    assert (entry.hub_id, entry.model, entry.revision) == ("octo/tiny", f"octo/tiny@{sha}", sha)


def test_compare_prints_the_layer_grid(demo_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "compare", "demo-source", DEMO_MODELS / "finetune", "--registry", demo_registry, "--json"
    )
    data = json.loads(out)
    assert code == ExitCode.OK
    assert len(data["grid"]) == len(data["a_layers"]) == 4 and len(data["grid"][0]) == len(data["b_layers"])
    assert data["score"] > 0.8


def _damaged(tiny_llama: Path, tmp_path: Path, kind: str) -> Path:
    folder = tmp_path / kind
    shutil.copytree(tiny_llama, folder)
    weights = folder / "model.safetensors"
    if kind == "corrupt-header":
        weights.write_bytes(b"\xff" * 8 + weights.read_bytes()[8:])
    elif kind == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "lfs-pointer":
        weights.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "b" * 64 + "\nsize 9\n")
    elif kind == "pickle":
        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(
            b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93\x8c\x07echo hi\x85R."
        )
    elif kind == "no-config":
        (folder / "config.json").unlink()
    return folder


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("corrupt-header", "corrupt or truncated safetensors header"),
        ("truncated", "truncated"),
        ("lfs-pointer", "git lfs pull"),
        ("pickle", "refused"),
        ("no-config", "no config.json"),
    ],
)
def test_bad_weights_fail_in_one_line_and_write_nothing(
    kind: str, message: str, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = tmp_path / "reg"
    code, out, err = run(
        capsys, "fingerprint", _damaged(tiny_llama, tmp_path, kind), "--name", "x", "--registry", registry
    )
    assert code == ExitCode.ERROR
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""
    assert not registry.exists() or Registry(registry).names() == []


def test_empty_probe_file_is_a_usage_error(
    tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "probes.txt"
    empty.write_text("")
    code, _, err = run(capsys, "fingerprint", tiny_llama, "--probes", empty, "--registry", tmp_path / "reg")
    assert code == ExitCode.USAGE
    assert "probes.txt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "reg").exists()


def test_entry_made_with_other_probes(
    demo_registry: Path, tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    probes = tmp_path / "mine.txt"
    probes.write_text("\n".join(f"probe number {i} about topic {i * 7}" for i in range(16)))
    assert (
        run(
            capsys,
            "fingerprint",
            tiny_llama,
            "--name",
            "odd",
            "--probes",
            probes,
            "--registry",
            demo_registry,
        )[0]
        == 0
    )
    before = sorted(p.name for p in demo_registry.iterdir())
    code, out, err = run(capsys, "check", DEMO_MODELS / "finetune", "--registry", demo_registry)
    assert code == ExitCode.ERROR
    assert "'odd'" in err and "same --probes" in err and out == ""
    assert sorted(p.name for p in demo_registry.iterdir()) == before


def test_missing_registry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "check", DEMO_MODELS / "finetune", "--registry", tmp_path / "none")
    assert code == ExitCode.ERROR and "no fingerprint registry" in err


def test_default_registry_location_is_guarded(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "registry", "list")
    assert code == ExitCode.ERROR and "no-default-registry" in err


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "check")[0] == ExitCode.USAGE
    assert run(capsys, "registry", "show")[0] == ExitCode.USAGE
    assert run(capsys, "fingerprint", "not a model ref!")[0] == ExitCode.USAGE


def test_help_does_not_import_torch() -> None:
    code = "import sys; from bot.cli import main; main(['--help']); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    assert "fingerprint" in result.stdout and "check" in result.stdout


def test_science_never_imports_the_integrations() -> None:
    code = (
        "import sys, bot.reef.verdict, bot.reef.fingerprint, bot.reef.loading; "
        "bad = [m for m in sys.modules if m.startswith(('bot.github', 'bot.hub', 'github', 'bot.sources'))]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr


def test_public_api_is_pinned() -> None:
    import bot

    assert bot.__all__ == sorted(bot.__all__)
    assert bot.__all__ == [
        "Fingerprint", "ModelSource", "ReefguardError", "Registry", "Report", "Verdict", "compare", "fingerprint",
    ]  # fmt: skip
    assert all(hasattr(bot, name) for name in bot.__all__)


# Threads: one policy, set once before any command runs.


@pytest.mark.parametrize(
    ("requested", "environ", "expected"),
    [
        (3, {"REEFGUARD_THREADS": "2", "OMP_NUM_THREADS": "4"}, 3),  # --threads wins
        (None, {"REEFGUARD_THREADS": "2", "OMP_NUM_THREADS": "4"}, 2),  # then REEFGUARD_THREADS
        (None, {"OMP_NUM_THREADS": "4"}, None),  # then an OMP_NUM_THREADS already set: left alone
    ],
)
def test_thread_count_follows_flag_then_environment(
    requested: int | None, environ: dict[str, str], expected: int | None
) -> None:
    assert thread_count(requested, environ) == expected


def test_default_thread_count_leaves_busy_cores_alone() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    count = thread_count(None, {})
    assert count is not None and 1 <= count <= cores
    assert count <= max(1, round(cores - os.getloadavg()[0]) + 1)  # the load may move between the two reads


@pytest.mark.parametrize("argv", [["--threads", "0", "registry", "list"], ["registry", "list", "--threads", "-2"]])
def test_bad_thread_counts_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == ExitCode.USAGE and err.count("\n") == 1 and "--threads" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_threads_reach_torch_and_the_protect_command(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    import torch

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(name, "1")  # restored after the test, whatever main() sets
    threads = torch.get_num_threads()
    try:
        flag = ["--threads", "2"]
        argv = ["protect", str(DEMO_MODELS / "source"), "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path)]
        code, _, err = run(capsys, *(flag + argv if where == "before" else argv + flag))
        assert code == ExitCode.USAGE and "missing.txt" in err  # the Trap² command ran, under the policy
        assert os.environ["OMP_NUM_THREADS"] == "2" and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_tokens_never_reach_the_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    token = "hf_NotReallyASecretButLongEnough42"
    monkeypatch.setenv("HF_TOKEN", token)
    code, out, err = run(capsys, "check", f"/no/such/{token}/model", "--registry", str(DEMO_MODELS))
    assert code != ExitCode.OK
    assert token not in out + err and "***" in err
    assert (
        redact("token ghp_abcdefghijklmnopqrstuvwxyz0123 and github_pat_11AAAAAAA0bbbbbbbbbbbbbb")
        == "token *** and ***"
    )
