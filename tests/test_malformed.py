"""Malformed input, brought as a careless user or an attacker would: every case fails cleanly.

Each case builds its input by code in a temp folder and runs ``reefguard`` on it in a process of its own, forked
from a server that imported reefguard, transformers and torch once (multiprocessing's forkserver): a case costs
well under a second of start-up, and one that hangs is killed at its timeout and fails. Every case asserts:

- the documented exit code (README, "Exit codes"), and a message naming what is wrong;
- exactly one line on stderr (at most one for a Hub scan, which reports per model) and no traceback;
- the registry and report folders unchanged (byte for byte) when the run is refused;
- no canary file: nothing in the input ran as code;
- no token (the Hub's or GitHub's, both set for every run) in stdout, stderr or any file the run wrote.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.cli import ExitCode
from tests.builders import DEMO_MODELS
from tests.doubles.github_server import GitHubServer
from tests.doubles.hub_server import HubServer

HF_TOKEN = "hf_MalformedCanaryToken0123456789"
GITHUB_TOKEN = "ghs_MalformedCanaryToken0123456789"
CANARY = "canary-was-written"
N_PROBES = 24
DEFAULT_TIMEOUT_S = 60.0
NESTED = b"[" * 100_000 + b"]" * 100_000
# A "billion laughs" document: nine levels of ten aliases expand to 10^9 list items.
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)
)
# The modules every case needs, imported once by the fork server.
PRELOAD = ["bot.cli", "bot.engine", "bot.github.action", "bot.hub.commands", "torch", "transformers", "peft"]


# The world: a fork server, a tiny model, a registry made from it.


@dataclass(frozen=True)
class Result:
    code: int | None  # None: killed at the timeout
    stdout: str
    stderr: str
    seconds: float


def _child(argv: list[str], env: dict[str, str], cwd: str, out: str, err: str) -> None:
    """Run ``reefguard argv`` in the forked process: its own environment, folder and output files."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, name in ((1, out), (2, err)):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 (closed by os._exit)
    sys.stderr = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    try:
        from bot.cli import main

        code = main(argv)
    except BaseException:  # the harness reports it; main() itself must never raise
        traceback.print_exc()
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class Runner:
    context: Any
    base_env: dict[str, str]

    def __call__(
        self, argv: list[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> Result:
        out, err = cwd / ".stdout", cwd / ".stderr"
        process = self.context.Process(
            target=_child, args=(argv, {**self.base_env, **(env or {})}, str(cwd), str(out), str(err))
        )
        start = time.monotonic()
        process.start()
        process.join(timeout_s)
        if process.is_alive():
            process.kill()
            process.join()
            code = None
        else:
            code = process.exitcode
        seconds = time.monotonic() - start
        result = Result(code, out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8"), seconds)
        out.unlink()
        err.unlink()
        return result


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    """A fork server with reefguard and its libraries imported; every case forks from it."""
    home = tmp_path_factory.mktemp("malformed-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HF_HOME": str(home / "hf"),
        "HF_TOKEN": HF_TOKEN,
        "GITHUB_TOKEN": GITHUB_TOKEN,
        "OMP_NUM_THREADS": "1",
        "REEFGUARD_NO_PROGRESS": "1",
        "REEFGUARD_REGISTRY": str(home / "no-default-registry"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    with pytest.MonkeyPatch.context() as patch:  # the server starts with the cases' environment
        for key in list(os.environ):
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
        warm = context.Process(target=os._exit, args=(0,))
        warm.start()
        warm.join(300)
    yield Runner(context, env)


@pytest.fixture(scope="module")
def probe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bot.reef import load_probes

    path = tmp_path_factory.mktemp("malformed-probes") / "probes.txt"
    path.write_text("\n".join(load_probes().texts[:N_PROBES]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def source_registry(tmp_path_factory: pytest.TempPathFactory, probe_file: Path) -> Path:
    """A registry holding the demo source, fingerprinted on the probe file."""
    from bot.engine import fingerprint
    from bot.registry import Registry

    root = tmp_path_factory.mktemp("malformed-registry") / "fingerprints"
    Registry(root).add(fingerprint(str(DEMO_MODELS / "source"), name="demo-source", probes=str(probe_file)))
    return root


@dataclass
class World:
    """One case's folder: a copy of the registry, a report folder, the probe file, a canary path."""

    root: Path
    registry: Path
    report: Path
    probes: Path
    canary: Path
    extra_dirs: list[Path] = field(default_factory=list)

    def model(self, name: str = "model", demo: str = "source") -> Path:
        """A fresh copy of a demo model (the source: a 4-block GPT-2 with its tokenizer)."""
        target = self.root / name
        shutil.copytree(DEMO_MODELS / demo, target)
        return target

    def check(self, model: Path | str, *extra: str) -> list[str]:
        return ["check", str(model), "--registry", str(self.registry), "--probes", str(self.probes),
                "--report", str(self.report), *extra]  # fmt: skip

    def fingerprint(self, model: Path | str, *extra: str) -> list[str]:
        return ["fingerprint", str(model), "--name", "suspect", "--registry", str(self.registry),
                "--probes", str(self.probes), *extra]  # fmt: skip


@pytest.fixture
def world(tmp_path: Path, source_registry: Path, probe_file: Path) -> World:
    registry = tmp_path / "fingerprints"
    shutil.copytree(source_registry, registry)
    report = tmp_path / "report"
    report.mkdir()
    (report / "previous.md").write_text("an earlier report\n", encoding="utf-8")
    return World(tmp_path, registry, report, probe_file, tmp_path / CANARY)


def _snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(folder.rglob("*"))
    }


# Building malformed files.


def write_safetensors(
    path: Path, header: bytes | dict[str, Any], data: bytes, *, claimed_len: int | None = None
) -> None:
    """A safetensors file from raw parts: 8-byte little-endian header length, JSON header, data."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    length = len(raw) if claimed_len is None else claimed_len
    path.write_bytes(struct.pack("<Q", length) + raw + data)


def rewrite_weights(folder: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Load a model's single safetensors file, let ``edit`` change the tensors, save it back."""
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})


def edit_config(folder: Path, **changes: Any) -> None:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")


def two_tensor_header(offsets: tuple[tuple[int, int], tuple[int, int]], dtype: str = "F32") -> dict[str, Any]:
    return {
        name: {"dtype": dtype, "shape": [2], "data_offsets": list(span)}
        for name, span in zip("ab", offsets, strict=True)
    }


def shard(folder: Path, weight_map: object) -> None:
    """Turn the model into a 'sharded' one whose index lists ``weight_map``."""
    (folder / "model.safetensors").rename(folder / "model-00001-of-00001.safetensors")
    index = {"metadata": {}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")


def tensor_names(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
        return list(handle.keys())


# The cases. Each takes the world and returns what to run and what must come out.


@dataclass(frozen=True)
class Case:
    argv: list[str]
    code: ExitCode
    needle: str  # must appear in the stderr line
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    lines: tuple[int, int] = (1, 1)  # allowed stderr line counts (min, max)
    unchanged: bool = True  # registry and report folders byte-identical afterwards
    annotation: bool = False  # the Action: one ``::error::`` line on stdout instead, stderr empty


def _weights(edit: Callable[[World, Path], Any], needle: str, *, stream: bool = False) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        model = w.model()
        edit(w, model)
        return Case(w.check(model, *(("--extraction", "stream") if stream else ())), ExitCode.ERROR, needle)

    return build


def _nan(w: World, m: Path) -> None:
    def put(t: dict[str, Any]) -> None:
        t["transformer.h.1.mlp.c_fc.weight"][0, 0] = float("nan")

    rewrite_weights(m, put)


def _inf(w: World, m: Path) -> None:
    def put(t: dict[str, Any]) -> None:
        t["transformer.ln_f.weight"][3] = float("inf")

    rewrite_weights(m, put)


def _nan_embedding(w: World, m: Path) -> None:
    def put(t: dict[str, Any]) -> None:
        t["transformer.wte.weight"][:] = float("nan")

    rewrite_weights(m, put)


def _drop(*names: str) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        def remove(t: dict[str, Any]) -> None:
            for name in [n for n in t if any(n.startswith(prefix) for prefix in names)]:
                del t[name]

        rewrite_weights(m, remove)

    return edit


def _header(
    header: bytes | dict[str, Any], data: bytes = b"", claimed_len: int | None = None
) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        write_safetensors(m / "model.safetensors", header, data, claimed_len=claimed_len)

    return edit


def _bytes(data: bytes) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        (m / "model.safetensors").write_bytes(data)

    return edit


def _cut(keep: int) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        path = m / "model.safetensors"
        data = path.read_bytes()
        path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])

    return edit


def _pad(w: World, m: Path) -> None:
    with (m / "model.safetensors").open("ab") as handle:
        handle.write(b"\0" * 64)


def _config(**changes: Any) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        edit_config(m, **changes)

    return edit


def _config_text(text: bytes) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        (m / "config.json").write_bytes(text)

    return edit


def _index(weight_map: Callable[[list[str]], object]) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        shard(m, weight_map(tensor_names(m)))

    return edit


def _index_text(text: bytes) -> Callable[[World, Path], None]:
    def edit(w: World, m: Path) -> None:
        (m / "model.safetensors").rename(m / "model-00001-of-00001.safetensors")
        (m / "model.safetensors.index.json").write_bytes(text)

    return edit


def _outside_file(w: World, m: Path) -> None:
    # The weights live elsewhere; the folder holds a symlink to them.
    outside = w.root / "elsewhere"
    outside.mkdir()
    (m / "model.safetensors").rename(outside / "model.safetensors")
    (m / "model.safetensors").symlink_to(outside / "model.safetensors")


def _outside_shard(w: World, m: Path) -> None:
    names = tensor_names(m)
    outside = w.root / "elsewhere"
    outside.mkdir()
    shard(m, dict.fromkeys(names, "model-00001-of-00001.safetensors"))
    (m / "model-00001-of-00001.safetensors").rename(outside / "stolen.safetensors")
    (m / "model-00001-of-00001.safetensors").symlink_to(outside / "stolen.safetensors")


def _remote_code(w: World, m: Path) -> None:
    (m / "modeling_evil.py").write_text(f"open({str(w.canary)!r}, 'w').write('ran')\n", encoding="utf-8")
    edit_config(m, auto_map={"AutoModel": "modeling_evil.EvilModel"}, model_type="evil")


def _pickle_bin(w: World, m: Path) -> None:
    import pickle

    class Exploit:
        def __reduce__(self) -> tuple[Any, ...]:
            return (exec, (f"open({str(w.canary)!r}, 'w').write('ran')",))

    (m / "model.safetensors").unlink()
    (m / "pytorch_model.bin").write_bytes(pickle.dumps({"weight": Exploit()}))


def _garbage_bin(w: World, m: Path) -> None:
    (m / "model.safetensors").unlink()
    (m / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


def _bin_missing_tensors(w: World, m: Path) -> None:
    import torch
    from safetensors.torch import load_file

    tensors = {k: v for k, v in load_file(str(m / "model.safetensors")).items() if ".h.3." not in k or "mlp" not in k}
    (m / "model.safetensors").unlink()
    torch.save(tensors, m / "pytorch_model.bin")


def _meta(text: str | bytes) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        meta = w.registry / "demo-source" / "meta.yaml"
        meta.write_bytes(text if isinstance(text, bytes) else text.encode())
        return Case(["registry", "show", "demo-source", "--registry", str(w.registry)], ExitCode.ERROR, "meta.yaml")

    return build


def _meta_field(needle: str = "meta.yaml", **changes: Any) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        import yaml

        meta_path = w.registry / "demo-source" / "meta.yaml"
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        meta.update(changes)
        meta_path.write_text(yaml.safe_dump(meta), encoding="utf-8")
        return Case(w.check(w.model()), ExitCode.ERROR, needle)

    return build


def _entry_file(name: str, data: bytes, needle: str) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        (w.registry / "demo-source" / name).write_bytes(data)
        return Case(["registry", "list", "--registry", str(w.registry)], ExitCode.ERROR, needle)

    return build


def _adapter(w: World, edit: Callable[[Path, Path], None] | None = None) -> tuple[Path, Path]:
    """A LoRA adapter on a copy of the demo source, saved by peft the ordinary way; ``edit(adapter, base)``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = w.model("base")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=2, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False, task_type="CAUSAL_LM"
    )
    adapter = w.root / "adapter"
    get_peft_model(model, config).save_pretrained(adapter)
    settings = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
    settings["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(settings), encoding="utf-8")
    if edit is not None:
        edit(adapter, base)
    return adapter, base


def _adapter_case(edit: Callable[[Path, Path], None], needle: str) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        adapter, _ = _adapter(w, edit)
        return Case(w.check(adapter), ExitCode.ERROR, needle)

    return build


def _adapter_nan(adapter: Path, base: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    next(iter(tensors.values()))[0, 0] = float("nan")
    save_file(tensors, str(adapter / "adapter_model.safetensors"))


def _adapter_renamed(adapter: Path, base: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    save_file(
        {k.replace("c_attn", "nowhere"): v for k, v in tensors.items()}, str(adapter / "adapter_model.safetensors")
    )


def _adapter_config_nested(adapter: Path, base: Path) -> None:
    (adapter / "adapter_config.json").write_bytes(NESTED)


def _adapter_outside(adapter: Path, base: Path) -> None:
    moved = adapter.parent / "elsewhere.safetensors"
    (adapter / "adapter_model.safetensors").rename(moved)
    (adapter / "adapter_model.safetensors").symlink_to(moved)


def _gguf(data: bytes) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        path = w.root / "model.gguf"
        path.write_bytes(data)
        return Case(w.check(path), ExitCode.ERROR, "model.gguf")

    return build


def _gguf_written(needle: str, **sizes: int) -> Callable[[World], Case]:
    """A small, well-formed GGUF file (one block of tensors) whose metadata claims ``sizes``."""

    def build(w: World) -> Case:
        import numpy as np
        from gguf import GGUFWriter

        path = w.root / "model.gguf"
        writer = GGUFWriter(str(path), "llama")
        writer.add_block_count(sizes.get("block_count", 1))
        writer.add_embedding_length(sizes.get("embedding_length", 8))
        writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
        writer.add_tensor("blk.0.attn_norm.weight", np.ones(8, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return Case(w.check(path), ExitCode.ERROR, needle)

    return build


def _gguf_long_string(w: World) -> Case:
    path = w.root / "model.gguf"
    # version 3, 0 tensors, 1 field whose key claims 10^15 bytes
    path.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 10**15) + b"general.architecture")
    return Case(w.check(path), ExitCode.ERROR, "runs past the end")


def _probes(name: str, data: bytes, needle: str) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        probes = w.root / name
        probes.write_bytes(data)
        return Case(["check", str(w.model()), "--registry", str(w.registry), "--probes", str(probes)],
                    ExitCode.USAGE, needle)  # fmt: skip

    return build


def _registry_is_a_file(w: World) -> Case:
    path = w.root / "registry-file"
    path.write_text("not a folder\n", encoding="utf-8")
    w.extra_dirs.append(path)
    return Case(["fingerprint", str(w.model()), "--registry", str(path), "--probes", str(w.probes)],
                ExitCode.ERROR, "is not a folder", timeout_s=20)  # fmt: skip


def _registry_under_a_file(w: World) -> Case:
    path = w.root / "registry-file"
    path.write_text("not a folder\n", encoding="utf-8")
    w.extra_dirs.append(path)
    return Case(["fingerprint", str(w.model()), "--registry", str(path / "sub"), "--probes", str(w.probes)],
                ExitCode.ERROR, "is not a folder", timeout_s=20)  # fmt: skip


def _registry_read_only(w: World) -> Case:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; the check cannot fail here")
    w.registry.chmod(0o555)
    return Case(w.fingerprint(w.model()), ExitCode.ERROR, "not writable", timeout_s=20)


def _registry_name_taken(w: World) -> Case:
    argv = ["fingerprint", str(w.model()), "--name", "demo-source", "--registry", str(w.registry),
            "--probes", str(w.probes)]  # fmt: skip
    return Case(argv, ExitCode.ERROR, "exists", timeout_s=20)


def _registry_missing(w: World) -> Case:
    return Case(["check", str(w.model()), "--registry", str(w.root / "nowhere")], ExitCode.ERROR,
                "no fingerprint registry here")  # fmt: skip


def _bad_name(w: World) -> Case:
    argv = ["fingerprint", str(w.model()), "--name", "../escape", "--registry", str(w.registry)]
    return Case(argv, ExitCode.USAGE, "invalid registry name")


def _threads(argv_extra: list[str], env: dict[str, str], needle: str) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        return Case(["registry", "list", "--registry", str(w.registry), *argv_extra], ExitCode.USAGE, needle, env=env)

    return build


def _hf_cache_snapshot(w: World) -> Case:
    """The Hugging Face cache layout: snapshot files are symlinks into the repo's blobs/ (must keep working)."""
    repo = w.root / "hf-cache" / "models--demo--source"
    snapshot = repo / "snapshots" / ("a" * 40)
    blobs = repo / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for file in sorted((DEMO_MODELS / "source").iterdir()):
        data = file.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    argv = [
        "check",
        str(snapshot),
        "--registry",
        str(w.registry),
        "--probes",
        str(w.probes),
        "-q",
        "--fail-on",
        "never",
    ]
    return Case(argv, ExitCode.OK, "", lines=(0, 0))


# Action events: the runner's payload file.


def _event(payload: bytes, needle: str) -> Callable[[World], Case]:
    def build(w: World) -> Case:
        event = w.root / "event.json"
        event.write_bytes(payload)
        workspace = w.root / "workspace"
        workspace.mkdir()
        shutil.copytree(w.registry, workspace / "fingerprints")
        w.registry = workspace / "fingerprints"
        env = {
            "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event),
            "GITHUB_WORKSPACE": str(workspace), "GITHUB_REPOSITORY": "octo/models", "GITHUB_SHA": "b" * 40,
            "GITHUB_API_URL": "http://127.0.0.1:9", "INPUT_TOKEN": GITHUB_TOKEN, "INPUT_REGISTRY": "fingerprints",
        }  # fmt: skip
        return Case(["action"], ExitCode.USAGE, needle, env=env, annotation=True)

    return build


def _report_is_a_file(w: World) -> Case:
    path = w.root / "report.md"
    path.write_text("not a folder\n", encoding="utf-8")
    w.extra_dirs.append(path)
    argv = ["check", str(w.model()), "--registry", str(w.registry), "--probes", str(w.probes), "--report", str(path)]
    return Case(argv, ExitCode.USAGE, "--report", timeout_s=20)


def _action_report_dir_is_a_file(w: World) -> Case:
    workspace = w.root / "workspace"
    workspace.mkdir()
    shutil.copytree(w.registry, workspace / "fingerprints")
    w.registry = workspace / "fingerprints"
    (workspace / "reefguard-report").write_text("a file where the reports go\n", encoding="utf-8")
    w.extra_dirs.append(workspace / "reefguard-report")
    shutil.copytree(DEMO_MODELS / "source", workspace / "models" / "mine")
    event = w.root / "event.json"
    event.write_text('{"inputs": {}}', encoding="utf-8")
    env = {
        "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_EVENT_PATH": str(event),
        "GITHUB_WORKSPACE": str(workspace), "GITHUB_REPOSITORY": "octo/models", "GITHUB_SHA": "b" * 40,
        "GITHUB_API_URL": "http://127.0.0.1:9", "INPUT_TOKEN": GITHUB_TOKEN, "INPUT_REGISTRY": "fingerprints",
        "INPUT_PATHS": "models/mine",
    }  # fmt: skip
    return Case(["action"], ExitCode.USAGE, "report-dir", env=env, annotation=True, timeout_s=30)


CASES: dict[str, Callable[[World], Case]] = {
    # safetensors headers and offsets
    "header-nested-json": _weights(_header(NESTED), "nested too deeply"),
    "header-nested-in-object": _weights(_header(b'{"a": ' + NESTED + b"}"), "nested too deeply"),
    "header-not-json": _weights(_header(b"<html>oops</html>"), "not JSON"),
    "header-not-object": _weights(_header(b"[1, 2, 3]"), "not a JSON object"),
    "header-longer-than-file": _weights(_header({}, claimed_len=10**12), "corrupt or truncated safetensors header"),
    "header-bad-utf8": _weights(_header(b'{"\xff\xfe": 1}'), "not JSON"),
    "empty-weights-file": _weights(_bytes(b""), "truncated safetensors file"),
    "seven-byte-weights-file": _weights(_bytes(b"\x01" * 7), "truncated safetensors file"),
    "truncated-weights": _weights(_cut(-100), "truncated or padded"),
    "padded-weights": _weights(_pad, "truncated or padded"),
    "overlapping-offsets": _weights(_header(two_tensor_header(((0, 8), (4, 12))), b"\0" * 12), "overlaps"),
    "gapped-offsets": _weights(_header(two_tensor_header(((0, 8), (16, 24))), b"\0" * 24), "gap"),
    "reversed-offsets": _weights(_header(two_tensor_header(((8, 0), (8, 16))), b"\0" * 16), "claims bytes"),
    "offsets-disagree-with-shape": _weights(_header(two_tensor_header(((0, 4), (4, 8))), b"\0" * 8), "shape needs"),
    "unknown-dtype": _weights(
        _header(two_tensor_header(((0, 8), (8, 16)), "F13"), b"\0" * 16), "corrupt safetensors entry"
    ),
    "negative-dimension": _weights(
        _header({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 0]}}), "corrupt safetensors entry"
    ),
    "lfs-pointer": _weights(
        _bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\nsize 9\n"),
        "Git LFS pointer",
    ),
    # shard indexes and files outside the folder
    "index-nested-json": _weights(_index_text(NESTED), "nested too deeply"),
    "index-not-json": _weights(_index_text(b"{weight_map: "), "not JSON"),
    "index-without-weight-map": _weights(_index_text(b'{"metadata": {}}'), "not a valid shard index"),
    "index-parent-traversal": _weights(_index(lambda names: dict.fromkeys(names, "../../etc/passwd")), "refused"),
    "index-absolute-path": _weights(_index(lambda names: dict.fromkeys(names, "/etc/passwd")), "refused"),
    "index-names-a-bin-file": _weights(_index(lambda names: dict.fromkeys(names, "pytorch_model.bin")), "refused"),
    "index-missing-shard": _weights(
        _index(lambda names: dict.fromkeys(names, "model-00009-of-00009.safetensors")), "missing"
    ),
    "symlinked-weights-outside": _weights(_outside_file, "outside the model folder"),
    "symlinked-shard-outside": _weights(_outside_shard, "outside the model folder"),
    "symlinked-weights-outside-streamed": _weights(_outside_file, "outside the model folder", stream=True),
    "hf-cache-snapshot-still-loads": _hf_cache_snapshot,
    # configs against weights
    "config-nested-json": _weights(_config_text(NESTED), "nested too deeply"),
    "config-not-json": _weights(_config_text(b"{'model_type': 'llama'}"), "not JSON"),
    "config-not-object": _weights(_config_text(b"[]"), "not a JSON object"),
    "billion-layers": _weights(_config(n_layer=1_000_000_000), "the weights hold 4 blocks"),
    "billion-layers-streamed": _weights(_config(n_layer=1_000_000_000), "the weights hold 4 blocks", stream=True),
    "huge-hidden-size": _weights(_config(n_embd=1_000_000_000), "n_embd is 1000000000"),
    "huge-intermediate-size": _weights(_config(n_inner=10**12), "n_inner"),
    "huge-vocabulary": _weights(_config(vocab_size=10**12), "vocab_size"),
    "layer-count-not-a-number": _weights(_config(n_layer="4"), "not a size"),
    "negative-layer-count": _weights(_config(n_layer=-1), "not a size"),
    # --extraction auto streams these (the first missing tensor named); a non-streamable format loads them whole.
    "missing-block-tensors": _weights(_drop("transformer.h.2.mlp."), "'transformer.h.2.mlp.c_fc.weight' is missing"),
    "missing-last-block": _weights(_drop("transformer.h.3."), "the weights hold 3 blocks"),
    "missing-final-norm": _weights(_drop("transformer.ln_f."), "'transformer.ln_f.weight' is missing"),
    "missing-tensors-streamed": _weights(
        _drop("transformer.h.2.mlp."), "missing from the safetensors files", stream=True
    ),
    "remote-code-config": _weights(_remote_code, "custom code"),
    "unknown-model-type": _weights(_config(model_type="no-such-architecture"), "custom code"),
    # bad values in the weights
    "nan-weights": _weights(_nan, "NaN or infinite"),
    "inf-weights": _weights(_inf, "NaN or infinite"),
    "nan-weights-streamed": _weights(_nan, "NaN or infinite", stream=True),
    "nan-embedding-streamed": _weights(_nan_embedding, "NaN or infinite", stream=True),
    # pickles
    "pickle-that-runs-code": _weights(_pickle_bin, "refused"),
    "pickle-garbage": _weights(_garbage_bin, "pytorch_model.bin"),
    "bin-missing-tensors": _weights(_bin_missing_tensors, "missing from the weights"),
    # adapters
    "adapter-config-nested": _adapter_case(_adapter_config_nested, "nested too deeply"),
    "adapter-matches-no-module": _adapter_case(_adapter_renamed, "match no module"),
    "adapter-nan": _adapter_case(_adapter_nan, "NaN or infinite"),
    "adapter-outside-folder": _adapter_case(_adapter_outside, "outside the model folder"),
    # GGUF
    "gguf-bad-magic": _gguf(b"GGML" + b"\0" * 64),
    "gguf-truncated": _gguf(b"GGUF"),
    "gguf-billion-blocks": _gguf_written("block_count is 1000000000, but the file holds 1 blocks", block_count=10**9),
    "gguf-huge-width": _gguf_written("embedding_length is 1000000000", embedding_length=10**9),
    "gguf-string-past-the-end": _gguf_long_string,
    # registry entries
    "meta-alias-bomb": _meta(ALIAS_BOMB),
    "meta-nested": _meta(b"a: " + b"[" * 50_000 + b"]" * 50_000),
    "meta-invalid-yaml": _meta("name: [unclosed\nrole: source\n  bad: indent\n"),
    "meta-not-mapping": _meta("- just\n- a list\n"),
    "meta-binary": _meta(b"\xff\xfe\x00garbage"),
    "n-probes-absurd": _meta_field(n_probes=10**12),
    "n-probes-negative": _meta_field(n_probes=-5),
    "n-probes-not-a-number": _meta_field(n_probes="many"),
    "n-probes-disagrees-with-grams": _meta_field(n_probes=N_PROBES + 1, needle="do not hold"),
    "grams-corrupt": _entry_file("grams.safetensors", b"\x10\0\0\0\0\0\0\0{}", "demo-source"),
    "anchors-nested": _entry_file("anchors.json", NESTED, "demo-source"),
    "anchors-not-json": _entry_file("anchors.json", b"{tokens", "demo-source"),
    "registry-is-a-file": _registry_is_a_file,
    "registry-under-a-file": _registry_under_a_file,
    "registry-read-only": _registry_read_only,
    "registry-name-taken": _registry_name_taken,
    "registry-missing": _registry_missing,
    "registry-name-escapes": _bad_name,
    "report-is-a-file": _report_is_a_file,
    "action-report-dir-is-a-file": _action_report_dir_is_a_file,
    # probe files
    "probes-empty": _probes("probes.txt", b"", "probes.txt"),
    "probes-jsonl-not-json": _probes("probes.jsonl", b'{"text": "a"}\n{oops\n', "line 2"),
    "probes-binary": _probes("probes.txt", b"\xff\xfe\xfd", "probes.txt"),
    # flags and environment
    "threads-zero": _threads(["--threads", "0"], {}, "--threads 0"),
    "threads-env-not-a-number": _threads([], {"REEFGUARD_THREADS": "lots"}, "REEFGUARD_THREADS"),
    # Action event payloads
    "event-nested-json": _event(NESTED, "nested too deeply"),
    "event-not-json": _event(b"<html>", "not JSON"),
    "event-not-object": _event(b"[1]", "not a JSON object"),
}
# A .jsonl probe file nested thousands deep.
CASES["probes-jsonl-nested"] = _probes("probes.jsonl", b'{"text": ' + NESTED + b"}\n", "nested")


def _assert_clean(result: Result, case: Case, world: World, before: dict[str, dict[str, str]]) -> None:
    assert result.code is not None, f"hung: killed after {case.timeout_s} s"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.code == case.code, (result.code, result.stderr[-2000:], result.stdout[-1000:])
    if case.annotation:
        assert lines == [], result.stderr
        lines = [line for line in result.stdout.splitlines() if line.startswith("::error")]
        assert len(lines) == 1, result.stdout
    else:
        assert case.lines[0] <= len(lines) <= case.lines[1], result.stderr[-3000:]
    if case.needle:
        assert case.needle in lines[0], lines[0]
    if case.unchanged:
        after = {str(p): _snapshot(p) for p in (world.registry, world.report, *world.extra_dirs)}
        assert after == before
    assert not world.canary.exists(), "code from the input ran"
    for token in (HF_TOKEN, GITHUB_TOKEN):
        assert token not in result.stdout + result.stderr
        for path in world.root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert token.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("name", list(CASES))
def test_malformed_input_fails_cleanly(name: str, world: World, runner: Runner) -> None:
    case = CASES[name](world)
    before = {str(p): _snapshot(p) for p in (world.registry, world.report, *world.extra_dirs)}

    result = runner(case.argv, cwd=world.root, env=case.env, timeout_s=case.timeout_s)

    _assert_clean(result, case, world, before)


# The Hub: garbled, cut-off, nested and slow answers (the scan reports them per model and goes on).


def _hub_world(world: World, hub: HubServer) -> list[str]:
    folder = world.root / "repo"
    shutil.copytree(DEMO_MODELS / "finetune", folder)
    hub.add_repo("lab/tune", folder, sha="c" * 40)
    return ["hub", "scan", "--endpoint", hub.url, "--registry", str(world.registry), "--probes", str(world.probes),
            "--cache-dir", str(world.root / "cache"), "--state", str(world.root / "state.json"),
            "--out", str(world.root / "hub-report"), "-q"]  # fmt: skip


HUB_FAULTS: dict[str, dict[str, Any]] = {
    "model-info-not-json": {"prefix": "/api/models/lab/tune", "body": b"<html>502 Bad Gateway</html>"},
    "model-info-nested": {"prefix": "/api/models/lab/tune", "body": NESTED},
    # The first listing page spoiled: nothing to scan, so the run itself fails (exit 3, one line, no report).
    "listing-not-json": {"prefix": "/api/models?", "body": b"<html>502 Bad Gateway</html>", "code": ExitCode.ERROR},
    "listing-nested": {"prefix": "/api/models?", "body": NESTED, "code": ExitCode.ERROR},
    "config-cut-short": {"prefix": "/lab/tune/resolve/", "cut_to": 10, "times": 50},
    "weights-cut-short": {"prefix": "/cdn/", "cut_to": 100, "times": 50},
    "slow-model-info": {"prefix": "/api/models/lab/tune", "stall_s": 120.0, "times": 10, "max_seconds": "5"},
}


@pytest.mark.parametrize("name", list(HUB_FAULTS))
def test_a_broken_hub_answer_fails_cleanly(name: str, world: World, runner: Runner, hub: HubServer) -> None:
    fault = dict(HUB_FAULTS[name])
    expected = fault.pop("code", ExitCode.OK)
    argv = _hub_world(world, hub)
    budget_s = float(fault.pop("max_seconds", 0)) or None
    if budget_s:
        argv += ["--max-seconds", str(budget_s)]
    hub.misbehave_next(fault.pop("prefix"), **fault)
    before = {str(world.registry): _snapshot(world.registry)}

    result = runner(argv, cwd=world.root, timeout_s=60)

    assert result.code is not None, "hung: killed after 60 s"
    if budget_s:  # the stalled answer (120 s) is abandoned within the run's budget, plus start-up and clean-up
        assert result.seconds < budget_s + 25, result.seconds
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == expected, result.stderr[-2000:]
    if expected == ExitCode.OK:  # nothing found: the one model could not be checked, and the report says so
        assert len(lines) <= 1, result.stderr
        report = json.loads((world.root / "hub-report" / "hub-report.json").read_text(encoding="utf-8"))
        assert [r["status"] for r in report["results"]] != ["checked"]
    else:
        assert len(lines) == 1 and "Hub" in lines[0], result.stderr
    assert {str(world.registry): _snapshot(world.registry)} == before
    for token in (HF_TOKEN, GITHUB_TOKEN):
        assert token not in result.stdout + result.stderr
        for path in world.root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert token.encode() not in path.read_bytes(), path


def test_a_corrupt_scan_state_fails_cleanly(world: World, runner: Runner, hub: HubServer) -> None:
    argv = _hub_world(world, hub)
    (world.root / "state.json").write_bytes(NESTED)
    world.extra_dirs.append(world.root / "state.json")
    before = {str(p): _snapshot(p) for p in (world.registry, world.report, *world.extra_dirs)}

    result = runner(argv, cwd=world.root, timeout_s=60)

    _assert_clean(result, Case(argv, ExitCode.USAGE, "state.json"), world, before)


# GitHub: an API error that echoes the token back.


def test_a_github_error_echoing_the_token_is_redacted(world: World, runner: Runner, tmp_path: Path) -> None:
    import subprocess

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    env = {"GIT_AUTHOR_NAME": "Octo", "GIT_AUTHOR_EMAIL": "o@example.com", "GIT_COMMITTER_NAME": "Octo",
           "GIT_COMMITTER_EMAIL": "o@example.com", "HOME": str(tmp_path), "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": os.environ.get("PATH", "")}  # fmt: skip

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=workspace, env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    git("init", "-q", "-b", "main")
    shutil.copytree(world.registry, workspace / "fingerprints")
    shutil.copy2(world.probes, workspace / "probes.txt")
    git("add", "-A")
    git("commit", "-q", "-m", "initial")
    before = git("rev-parse", "HEAD")
    shutil.copytree(DEMO_MODELS / "source", workspace / "models" / "mine")
    git("add", "-A")
    git("commit", "-q", "-m", "add a model")
    after = git("rev-parse", "HEAD")
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"ref": "refs/heads/main", "before": before, "after": after,
                                 "repository": {"default_branch": "main"}}), encoding="utf-8")  # fmt: skip
    world.registry = workspace / "fingerprints"
    with GitHubServer() as server:
        server.add_repo("octo/models")
        server.fail_next("GET", "/repos/octo/models", 401, times=50, message=f"Bad credentials: {GITHUB_TOKEN}")
        server.fail_next("POST", "/repos/octo/models", 401, times=50, message=f"Bad credentials: {GITHUB_TOKEN}")
        run_env = {**env, "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "push", "GITHUB_EVENT_PATH": str(event),
                   "GITHUB_WORKSPACE": str(workspace), "GITHUB_REPOSITORY": "octo/models", "GITHUB_SHA": after,
                   "GITHUB_API_URL": server.url, "INPUT_TOKEN": GITHUB_TOKEN, "INPUT_REGISTRY": "fingerprints",
                   "INPUT_PROBES": "probes.txt", "REEFGUARD_GITHUB_WAIT_SCALE": "0.001",
                   "GITHUB_OUTPUT": str(tmp_path / "output"),
                   "GITHUB_STEP_SUMMARY": str(tmp_path / "summary")}  # fmt: skip
        result = runner(["action"], cwd=workspace, env=run_env, timeout_s=120)
        assert server.requests, "the action never reached GitHub"

    assert result.code == ExitCode.ERROR, result.stdout + result.stderr
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and "HTTP 401" in errors[0] and "***" in errors[0], result.stdout
    assert "Traceback" not in result.stderr
    for token in (HF_TOKEN, GITHUB_TOKEN):
        assert token not in result.stdout + result.stderr
        for path in tmp_path.rglob("*"):
            if path.is_file() and not path.is_symlink() and ".git" not in path.parts:
                assert token.encode() not in path.read_bytes(), path
