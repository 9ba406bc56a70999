"""The Dockerfile's install steps work: replayed in a clean virtual environment, then the entrypoint runs.

There is no Docker engine in CI, so the test reads the Dockerfile and replays what can run without one:
``ENV`` and ``ARG`` become environment variables, ``COPY`` copies into a temporary root (container paths under
``/src`` map there), and every ``RUN`` except the ``apt-get`` one (system packages: git, git-lfs) runs in a
fresh venv. ``TORCH_INDEX_URL`` points at PyPI instead of the PyTorch CPU index, which CI cannot reach.
Then ``reefguard --help`` and the ``ENTRYPOINT`` run from the venv: the installed CLI fingerprints the demo
source and its references on 32 probes into a registry, and the action checks a copy of the source against it,
as in a ``workflow_dispatch`` run.

Slow (a few minutes: it installs torch and transformers); select it with ``-m docker_install``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL_TIMEOUT_S = 1500


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical, current = [], ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip().removesuffix("\\") + (" " if line.rstrip().endswith("\\") else "")
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _assignments(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(text))


@pytest.mark.docker_install
def test_dockerfile_install_steps_in_a_clean_venv(tmp_path: Path) -> None:
    root, venv = tmp_path / "image", tmp_path / "venv"
    root.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(venv)}
    entrypoint: list[str] = []
    replayed = []
    for instruction, arguments in _instructions(REPO / "Dockerfile"):
        if instruction in ("ENV", "ARG"):
            env.update(_assignments(arguments))
            env["TORCH_INDEX_URL"] = "https://pypi.org/simple"
        elif instruction == "COPY":
            *sources, target = shlex.split(arguments)
            destination = root / target.lstrip("/")
            for source in sources:
                if (REPO / source).is_dir():
                    shutil.copytree(REPO / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    destination.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(REPO / source, destination / Path(source).name)
        elif instruction == "RUN" and "apt-get" not in arguments:
            command = re.sub(r"(?<![\w.])/src\b", str(root / "src"), arguments)
            result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=INSTALL_TIMEOUT_S, check=False)  # fmt: skip
            assert result.returncode == 0, f"RUN {arguments}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            replayed.append(arguments)
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(arguments)
    assert any("torch==2.13.0" in step for step in replayed) and len(replayed) >= 3
    assert [Path(entrypoint[0]).name, *entrypoint[1:]] == ["reefguard", "action"]
    assert entrypoint[0].startswith("/")  # exec form, absolute

    executable = venv / "bin" / Path(entrypoint[0]).name
    help_text = subprocess.run([str(executable), "--help"], env=env, capture_output=True, text=True, check=True)
    assert "action" in help_text.stdout

    # A registry made by the installed CLI: the demo source and its references, on 32 probes for speed.
    workspace = tmp_path / "workspace"
    shutil.copytree(REPO / "demo" / "models" / "source", workspace / "models" / "mine")
    probes = [json.loads(line)["text"] for line in (REPO / "bot/reef/probes/default.jsonl").open(encoding="utf-8")]
    (workspace / "probes.txt").write_text("\n".join(probes[:32]) + "\n", encoding="utf-8")
    demo = REPO / "demo" / "models"
    entries = [("demo-source", "source", "source")]
    entries += [(f"demo-{name}", name, "reference") for name in ("ref-gpt2-code", "ref-qwen2-code", "ref-llama-prose")]
    for name, folder, role in entries:
        command = [str(venv / "bin" / "reefguard"), "-q", "fingerprint", str(demo / folder), "--name", name,
                   "--role", role, "--probes", "probes.txt", "--registry", "fingerprints"]  # fmt: skip
        subprocess.run(command, cwd=workspace, env=env, capture_output=True, text=True, check=True, timeout=600)
    (workspace / "event.json").write_text(json.dumps({"inputs": {}}), encoding="utf-8")
    (workspace / "home").mkdir()
    action_env = {
        **env,
        "HOME": str(workspace / "home"),
        "GITHUB_EVENT_NAME": "workflow_dispatch",
        "GITHUB_EVENT_PATH": str(workspace / "event.json"),
        "GITHUB_WORKSPACE": str(workspace),
        "GITHUB_OUTPUT": str(workspace / "output"),
        "GITHUB_STEP_SUMMARY": str(workspace / "summary"),
        "GITHUB_REPOSITORY": "octo/models",
        "INPUT_PATHS": "models/mine",
        "INPUT_PROBES": "probes.txt",
        "INPUT_OPEN-ISSUE": "false",
    }
    action_env.pop("REEFGUARD_REGISTRY", None)
    result = subprocess.run([str(executable), *entrypoint[1:]], cwd=workspace, env=action_env, capture_output=True,
                            text=True, timeout=INSTALL_TIMEOUT_S, check=False)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr  # derived: fail-on-detection's default
    assert "::error file=models/mine/model.safetensors,title=reefguard%3A derived::" in result.stdout
    assert "models/mine is derived from demo-source" in result.stdout
    assert "| `models/mine` | **derived** | `demo-source` |" in (workspace / "summary").read_text(encoding="utf-8")


def test_makefile_installs_torch_as_the_dockerfile_does() -> None:
    """``make`` and the image take the same torch: the same pin, the CPU build, the same index as a fallback."""
    instructions = _instructions(REPO / "Dockerfile")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    index = re.search(r"^TORCH_INDEX_URL \?= (\S+)$", makefile, re.MULTILINE)
    version = re.search(r"^TORCH_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert index and version
    arg = next(_assignments(arguments) for instruction, arguments in instructions if instruction == "ARG")
    assert arg["TORCH_INDEX_URL"] == index.group(1) == "https://download.pytorch.org/whl/cpu"
    torch_runs = [
        arguments for instruction, arguments in instructions if instruction == "RUN" and "torch==" in arguments
    ]
    assert torch_runs == [f'pip install --no-cache-dir --index-url "${{TORCH_INDEX_URL}}" torch=={version.group(1)}']
    recipe = makefile.replace("\\\n", " ")
    local, fallback = re.search(
        r"pip install --quiet (torch==\S+) 2>/dev/null\s+\|\| \$\(BIN\)/pip install (.*)", recipe
    ).groups()  # type: ignore[union-attr]
    assert local == "torch==$(TORCH_VERSION)+cpu"  # a local version: only the CPU build satisfies it
    assert fallback.split() == ["--quiet", "--index-url", '"$(TORCH_INDEX_URL)"', "torch==$(TORCH_VERSION)"]
    pinned = re.search(r"^torch==(\S+)$", (REPO / "requirements.lock").read_text(encoding="utf-8"), re.MULTILINE)
    assert pinned and pinned.group(1) == version.group(1)
