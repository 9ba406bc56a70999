"""The Action's world: a GitHub double, a real git repository as the workspace, and the runner's variables.

``ActionRun`` plays the runner: it writes the event payload, points ``GITHUB_OUTPUT`` and
``GITHUB_STEP_SUMMARY`` at fresh files, sets ``INPUT_*`` and ``GITHUB_*`` and calls ``reefguard action``
(``bot.cli.main(["action"])``), the image's entrypoint. ``HOME`` is a tmp folder, so ``git config --global``
never touches the real one.

For speed the registry is a small one built once per session with 32 probes (the demo source and its three
references); a model identical to the demo source is the detection, the demo's unrelated model the clean case.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.cli import main
from tests.builders import DEMO_MODELS
from tests.doubles.github_server import GitHubServer

REPOSITORY = "octo/models"
TOKEN = "ghs_SECRETtoken0123456789"
PROBES = "probes.txt"
N_PROBES = 32


@pytest.fixture(scope="session")
def small_registry(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry of the demo source and its references fingerprinted on 32 probes, plus that probe file."""
    from bot.engine import fingerprint
    from bot.reef import load_probes
    from bot.registry import Registry

    root = tmp_path_factory.mktemp("small-registry")
    probes = root / PROBES
    probes.write_text("\n".join(load_probes().texts[:N_PROBES]) + "\n", encoding="utf-8")
    registry = Registry(root / "fingerprints")
    registry.add(fingerprint(str(DEMO_MODELS / "source"), name="demo-source", probes=str(probes)))
    for name in ("ref-gpt2-code", "ref-qwen2-code", "ref-llama-prose"):
        fp = fingerprint(str(DEMO_MODELS / name), name=f"demo-{name}", role="reference", probes=str(probes))
        registry.add(fp)
    return root


def git(workspace: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@dataclass
class Workspace:
    """A git repository standing in for the checked-out model repository."""

    root: Path

    def put_model(self, path: str, demo: str) -> None:
        """Copy ``demo/models/<demo>`` to ``path`` (replacing what is there)."""
        target = self.root / path
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(DEMO_MODELS / demo, target)

    def write(self, path: str, text: str) -> None:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def commit(self, message: str) -> str:
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)
        return git(self.root, "rev-parse", "HEAD")


@pytest.fixture
def workspace(tmp_path: Path, small_registry: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A git repository holding the small registry and its probe file, one commit deep; HOME in tmp."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Octo Cat")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "octo@example.com")
    root = tmp_path / "workspace"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    shutil.copytree(small_registry / "fingerprints", root / "fingerprints")
    shutil.copy2(small_registry / PROBES, root / PROBES)
    (root / "README.md").write_text("# models\n", encoding="utf-8")
    space = Workspace(root)
    space.commit("initial")
    return space


@pytest.fixture
def github_server() -> Iterator[GitHubServer]:
    """The GitHub double serving ``octo/models``; list pages hold at most 2 items, so paging is exercised."""
    with GitHubServer(page_size=2) as server:
        server.add_repo(REPOSITORY)
        yield server
    assert server.errors == []  # the double itself never failed


@dataclass(frozen=True)
class Outcome:
    """What one action run left: exit code, stdout (annotations), outputs, job summary."""

    code: int
    stdout: str
    stderr: str
    outputs: dict[str, str]
    summary: str


def parse_outputs(text: str) -> dict[str, str]:
    """Read ``name<<DELIMITER`` blocks (the only form the action writes) from a ``GITHUB_OUTPUT`` file."""
    outputs, lines = {}, iter(text.splitlines())
    for line in lines:
        name, delimiter = line.split("<<", 1)
        value = []
        for inner in lines:
            if inner == delimiter:
                break
            value.append(inner)
        outputs[name] = "\n".join(value)
    return outputs


class ActionRun:
    """Runs the action like the runner does; each call gets fresh output and summary files."""

    def __init__(self, workspace: Workspace, server: GitHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.workspace, self.server, self.tmp_path, self.monkeypatch = workspace, server, tmp_path, monkeypatch
        self.count = 0

    def __call__(
        self,
        event_name: str,
        payload: Mapping[str, object] | str | None,
        capsys: pytest.CaptureFixture[str],
        **inputs: str,
    ) -> Outcome:
        self.count += 1
        run_dir = self.tmp_path / f"run-{self.count}"
        run_dir.mkdir()
        event_path = run_dir / "event.json"
        if payload is not None:
            event_path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
        sha = git(self.workspace.root, "rev-parse", "HEAD")
        environ = {
            "GITHUB_ACTIONS": "true",
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_OUTPUT": str(run_dir / "output"),
            "GITHUB_STEP_SUMMARY": str(run_dir / "summary"),
            "GITHUB_WORKSPACE": str(self.workspace.root),
            "GITHUB_REPOSITORY": REPOSITORY,
            "GITHUB_API_URL": self.server.url,
            "GITHUB_SERVER_URL": "https://github.test",
            "GITHUB_RUN_ID": "42",
            "GITHUB_SHA": sha,
            "REEFGUARD_GITHUB_WAIT_SCALE": "0.001",
            "INPUT_TOKEN": TOKEN,
            "INPUT_REGISTRY": "fingerprints",
            "INPUT_PROBES": PROBES,
        }
        for name, value in inputs.items():
            environ[f"INPUT_{name.replace('_', '-').upper()}"] = value
        for key in [k for k in os.environ if k.startswith("INPUT_")]:
            self.monkeypatch.delenv(key)
        for key, value in environ.items():
            self.monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main(["action"])
        captured = capsys.readouterr()
        output_file, summary_file = run_dir / "output", run_dir / "summary"
        return Outcome(
            code=code,
            stdout=captured.out,
            stderr=captured.err,
            outputs=parse_outputs(output_file.read_text(encoding="utf-8")) if output_file.exists() else {},
            summary=summary_file.read_text(encoding="utf-8") if summary_file.exists() else "",
        )


@pytest.fixture
def run_action(
    workspace: Workspace, github_server: GitHubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ActionRun:
    return ActionRun(workspace, github_server, tmp_path, monkeypatch)


def push_event(before: str, after: str, **extra: object) -> dict[str, object]:
    """A push payload as Actions writes it (no per-commit file lists)."""
    return {"ref": "refs/heads/main", "before": before, "after": after, "created": False, "deleted": False,
            "forced": False, "commits": [], "repository": {"full_name": REPOSITORY, "default_branch": "main"},
            **extra}  # fmt: skip


def pull_request_event(number: int, head_sha: str, *, fork: bool = False) -> dict[str, object]:
    head_repo = "someone/models" if fork else REPOSITORY
    return {"action": "synchronize", "number": number,
            "pull_request": {"number": number, "head": {"sha": head_sha, "ref": "feature",
                                                        "repo": {"full_name": head_repo}},
                             "base": {"sha": "b" * 40, "ref": "main", "repo": {"full_name": REPOSITORY}}},
            "repository": {"full_name": REPOSITORY, "default_branch": "main"}}  # fmt: skip
