"""bot.sources: parsing references, and resolving them through the real huggingface_hub client.

Hub tests aim the unpatched client at `tests.doubles.hub_server.HubServer` on a loopback socket and assert on
the requests it recorded and on the files that land in the cache. Nothing reaches the internet.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bot.errors import ConfigError, ModelLoadError, ReefguardError, RemoteError
from bot.sources import ModelSource, ResolvedSource, resolve
from tests.doubles.hub_server import HubServer

SHA = "c0ffee" + "0" * 34
OLD_SHA = "bada55" + "1" * 34
TOKEN = "hf_" + "S3cretT0ken" * 3
ROOT = Path(__file__).resolve().parents[1]  # `python -c` in a subprocess imports bot from its cwd
FINGERPRINT_FILES = {"config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def make_repo(folder: Path, *, weights: bool = True, scale: float = 1.0) -> Path:
    """A model repo as uploaded: what fingerprinting reads, plus files it must never download."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "scale": scale}), encoding="utf-8")
    (folder / "tokenizer.json").write_text('{"version": "1.0"}', encoding="utf-8")
    (folder / "tokenizer_config.json").write_text("{}", encoding="utf-8")
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n", encoding="utf-8")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n", encoding="utf-8")
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").write_bytes(b"onnx")
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 a pickle that must never be fetched")
    if weights:
        tensor = (np.arange(12, dtype=np.float32) * scale).reshape(3, 4)
        save_file({"embed.weight": tensor}, str(folder / "model.safetensors"))
    return folder


def fetched(server: HubServer) -> list[str]:
    """Paths of the file bodies the client downloaded (GETs of /resolve or the CDN)."""
    return [r.path for r in server.requests if r.method == "GET" and not r.path.startswith("/api/")]


# -- parse ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "kind", "ref", "revision"),
    [
        ("org/name", "hub", "org/name", None),
        ("org/name@main", "hub", "org/name", "main"),
        (f"org/name@{SHA}", "hub", "org/name", SHA),
        ("Org-1/Qwen2.5-0.5B_x@v1.0", "hub", "Org-1/Qwen2.5-0.5B_x", "v1.0"),
        ("org/name@refs/pr/1", "hub", "org/name", "refs/pr/1"),
        ("./models/tiny", "local", "./models/tiny", None),
        ("/abs/model.gguf", "local", "/abs/model.gguf", None),
        ("models/tiny.safetensors", "local", "models/tiny.safetensors", None),
        ("weights/pytorch_model.bin", "local", "weights/pytorch_model.bin", None),
    ],
)
def test_parse_round_trips(text: str, kind: str, ref: str, revision: str | None) -> None:
    source = ModelSource.parse(text)
    assert (source.kind, source.ref, source.revision) == (kind, ref, revision)
    assert str(source) == text
    assert ModelSource.parse(str(source)) == source


def test_parse_existing_folder_is_local_even_without_a_marker(tmp_path: Path) -> None:
    folder = tmp_path / "org" / "name"
    folder.mkdir(parents=True)
    assert ModelSource.parse(str(folder)) == ModelSource(kind="local", ref=str(folder))


def test_parse_expands_home() -> None:
    source = ModelSource.parse("~/models/tiny.gguf")
    assert source.kind == "local"
    assert source.ref == os.path.expanduser("~/models/tiny.gguf")
    assert ModelSource.parse(str(source)) == source


@pytest.mark.parametrize(
    "text",
    ["", "   ", "name", "a/b/c", "org/name@", "org/na me", "org//name", "org/-name", "org/name.",
     "org/na--me", "org/name@@x", "org/name@bad..ref", "org/name@branch/", "@main", "org/name@-x"],
)  # fmt: skip
def test_parse_rejects_what_is_no_reference(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ModelSource.parse(text)
    message = str(caught.value)
    assert "\n" not in message
    assert "org/name" in message and ".gguf" in message  # names the accepted forms
    assert isinstance(caught.value, ValueError)


# -- resolve: local ------------------------------------------------------------------------------------------
def test_resolve_local_folder_and_file(tmp_path: Path) -> None:
    folder = make_repo(tmp_path / "tiny")
    assert resolve(str(folder)) == ResolvedSource(source=ModelSource.parse(str(folder)), path=folder, revision=None)
    weights = folder / "model.safetensors"
    assert resolve(ModelSource.parse(str(weights))).path == weights


def test_resolve_missing_local_path(tmp_path: Path) -> None:
    text = str(tmp_path / "missing.gguf")
    with pytest.raises(ModelLoadError, match="no such file or folder") as caught:
        resolve(text)
    assert caught.value.source == text


# -- resolve: hub --------------------------------------------------------------------------------------------
def test_resolve_hub_downloads_only_what_fingerprinting_reads(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)

    resolved = resolve("org/tiny", cache_dir=cache, endpoint=hub.url)

    assert resolved.revision == SHA
    assert resolved.path == cache / "models--org--tiny" / "snapshots" / SHA
    assert {p.relative_to(resolved.path).as_posix() for p in resolved.path.rglob("*")} == FINGERPRINT_FILES
    weights = load_file(str(resolved.path / "model.safetensors"))
    np.testing.assert_array_equal(weights["embed.weight"], np.arange(12, dtype=np.float32).reshape(3, 4))
    bodies = fetched(hub)
    assert len(bodies) == len(FINGERPRINT_FILES)
    assert not any(name in path for path in bodies for name in ("pytorch_model.bin", "README.md", "onnx"))
    assert any(path.startswith("/cdn/") for path in bodies)  # LFS weights come through the CDN redirect
    # One look at the branch, then everything pinned to the sha it named.
    assert [r.path for r in hub.requests if r.path.startswith("/api/")] == [
        "/api/models/org/tiny",
        f"/api/models/org/tiny/tree/{SHA}?recursive=true&expand=false",
    ]
    assert all(f"/resolve/{SHA}/" in r.path for r in hub.requests if "/resolve/" in r.path)


def test_resolve_hub_revision_by_branch_or_sha(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    hub.add_repo("org/tiny", make_repo(tmp_path / "old", scale=2.0), sha=OLD_SHA, branch="v0")
    hub.add_repo("org/tiny", make_repo(tmp_path / "new"), sha=SHA)

    pinned = resolve(f"org/tiny@{OLD_SHA}", cache_dir=cache, endpoint=hub.url)
    branch = resolve("org/tiny@v0", cache_dir=cache, endpoint=hub.url)
    default = resolve("org/tiny", cache_dir=cache, endpoint=hub.url)

    assert (pinned.revision, branch.revision, default.revision) == (OLD_SHA, OLD_SHA, SHA)
    assert json.loads((pinned.path / "config.json").read_text(encoding="utf-8"))["scale"] == 2.0
    assert str(pinned.source) == f"org/tiny@{OLD_SHA}"
    assert f"/api/models/org/tiny/revision/{OLD_SHA}" in [r.path for r in hub.requests]


def test_second_resolve_is_a_cache_hit(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    first = resolve("org/tiny", cache_dir=cache, endpoint=hub.url)
    seen = len(hub.requests)

    second = resolve("org/tiny", cache_dir=cache, endpoint=hub.url)

    assert second == first
    # Only the sha lookup: the tree listing and every file come from the cache.
    assert [r.path for r in hub.requests[seen:]] == ["/api/models/org/tiny"]


def test_missing_repo_or_revision_is_a_load_error(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)

    with pytest.raises(ModelLoadError, match="check the repo id and revision") as caught:
        resolve("org/nope", cache_dir=cache, endpoint=hub.url)
    assert isinstance(caught.value.__cause__, huggingface_hub.errors.RepositoryNotFoundError)
    assert str(caught.value).startswith("org/nope: no such repo")
    assert caught.value.source == "org/nope"

    with pytest.raises(ModelLoadError, match="no such revision") as caught:
        resolve("org/tiny@v9", cache_dir=cache, endpoint=hub.url)
    assert isinstance(caught.value.__cause__, huggingface_hub.errors.RevisionNotFoundError)
    assert fetched(hub) == []


def test_repo_with_only_pickle_weights_is_refused(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    hub.add_repo("org/pickles", make_repo(tmp_path / "repo", weights=False), sha=SHA)

    with pytest.raises(ModelLoadError, match=f"no safetensors weights at org/pickles@{SHA}; pickle .bin"):
        resolve("org/pickles", cache_dir=cache, endpoint=hub.url)
    assert not any("pytorch_model.bin" in path for path in fetched(hub))


def test_gated_repo_needs_a_token(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    if huggingface_hub.get_token() is not None:
        pytest.skip("a stored Hugging Face login on this machine would be sent implicitly")
    hub.add_repo("org/gated", make_repo(tmp_path / "repo"), sha=SHA, gated=True)

    with pytest.raises(ModelLoadError, match=r"gated repo.*HF_TOKEN"):
        resolve("org/gated", cache_dir=cache, endpoint=hub.url)

    assert resolve("org/gated", cache_dir=cache, endpoint=hub.url, token=TOKEN).revision == SHA


@pytest.mark.parametrize("status", [429, 500, 503])
def test_hub_failure_on_model_info_is_a_remote_error(hub: HubServer, tmp_path: Path, cache: Path, status: int) -> None:
    """model_info goes through `get_session().get` with no backoff: one failure surfaces at once."""
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    hub.fail_next("/api/models/org/tiny", status)

    with pytest.raises(RemoteError, match=f"HTTP {status}.*retry later") as caught:
        resolve("org/tiny", cache_dir=cache, endpoint=hub.url)

    assert (caught.value.service, caught.value.status) == ("hub", status)
    assert caught.value.request_id == "hub-1"
    assert len(hub.requests) == 1


def test_hub_failure_on_file_metadata_is_retried_by_the_client(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    """A failed HEAD with nothing cached is retried once at once, then with backoff (file_download.py)."""
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    config = f"/org/tiny/resolve/{SHA}/config.json"
    hub.fail_next(config, 500)

    assert resolve("org/tiny", cache_dir=cache, endpoint=hub.url).revision == SHA
    assert [r.method for r in hub.requests if r.path == config] == ["HEAD", "HEAD", "GET"]


def test_hub_failure_on_a_file_body_is_a_remote_error_and_a_rerun_resumes(
    hub: HubServer, tmp_path: Path, cache: Path
) -> None:
    """Body GETs retry 408/429 only (file_download.http_get): a 500 from the CDN surfaces at once."""
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    hub.fail_next("/cdn/", 500)

    with pytest.raises(RemoteError, match="HTTP 500") as caught:
        resolve("org/tiny", cache_dir=cache, endpoint=hub.url)
    assert caught.value.status == 500
    seen = len(hub.requests)

    assert resolve("org/tiny", cache_dir=cache, endpoint=hub.url).revision == SHA
    # The small files finished beside the failed one and stay cached: only the weights are fetched again.
    again = [r.path for r in hub.requests[seen:] if r.method == "GET" and not r.path.startswith("/api/")]
    assert len(again) == 1 and again[0].startswith("/cdn/")


def test_forbidden_names_the_token_and_never_shows_it(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    hub.fail_next("/api/models/org/tiny", 403, headers={"X-Error-Message": f"token {TOKEN} may not read"})

    with pytest.raises(RemoteError, match=r"HTTP 403.*--token / HF_TOKEN") as caught:
        resolve("org/tiny", cache_dir=cache, endpoint=hub.url, token=TOKEN)

    assert caught.value.status == 403
    assert TOKEN not in str(caught.value)


def test_token_never_appears_in_errors_or_recorded_headers(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    hub.add_repo("org/pickles", make_repo(tmp_path / "pickles", weights=False), sha=SHA)
    errors: list[ReefguardError] = []
    for ref in ("org/nope", "org/tiny@v9", "org/tiny", "org/pickles"):
        if ref == "org/tiny":
            hub.fail_next("/api/models/org/tiny", 500)
        with pytest.raises(ReefguardError) as caught:
            resolve(ref, cache_dir=cache, endpoint=hub.url, token=TOKEN)
        errors.append(caught.value)

    assert [type(e) for e in errors] == [ModelLoadError, ModelLoadError, RemoteError, ModelLoadError]
    for error in errors:
        assert TOKEN not in f"{error} {error!r} {error.__cause__}"
    assert all("authorization" not in r.headers for r in hub.requests)


def test_unreachable_hub_is_a_remote_error(cache: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on once the socket closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(RemoteError, match=f"cannot reach the Hub at http://127.0.0.1:{port}") as caught:
        resolve("org/tiny", cache_dir=cache, endpoint=f"http://127.0.0.1:{port}")
    assert caught.value.status is None


_STALLED_SCRIPT = """
import sys, time
from bot._http import request_deadline
from bot.errors import RemoteError
from bot.sources import resolve

started = time.monotonic()
try:
    with request_deadline(2.0):
        resolve("org/tiny", cache_dir=sys.argv[1], endpoint=sys.argv[2])
except RemoteError as e:
    print(f"{time.monotonic() - started:.1f}", e)
"""


def test_a_silent_hub_cannot_hold_resolve(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    """resolve's requests carry the time limits of bot._http even in a fresh interpreter (where no hub command
    installed them before): a Hub that accepts the connection and says nothing is cut off, not waited for."""
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    hub.misbehave_next("/api/models/org/tiny", stall_s=600)

    run = subprocess.run(
        [sys.executable, "-c", _STALLED_SCRIPT, str(cache), hub.url],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip

    seconds, _, message = run.stdout.strip().partition(" ")
    assert float(seconds) < 30, run.stdout  # the deadline (2 s) plus start-up, not the stall (600 s)
    assert "org/tiny" in message


_OFFLINE_SCRIPT = """
import json, sys
from pathlib import Path
from bot.errors import ModelLoadError
from bot.sources import resolve

cache, endpoint = Path(sys.argv[1]), sys.argv[2]
out = {}
for ref in sys.argv[3:]:
    try:
        resolved = resolve(ref, cache_dir=cache, endpoint=endpoint)
        out[ref] = [str(resolved.path), resolved.revision]
    except ModelLoadError as e:
        out[ref] = str(e)
print(json.dumps(out))
"""


def test_offline_mode_serves_sha_pinned_references_from_the_cache(hub: HubServer, tmp_path: Path, cache: Path) -> None:
    """HF_HUB_OFFLINE is read once at import, so offline runs in a fresh interpreter."""
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    hub.add_repo("org/tiny", make_repo(tmp_path / "old"), sha=OLD_SHA, branch="v0")
    online = resolve(f"org/tiny@{SHA}", cache_dir=cache, endpoint=hub.url)
    seen = len(hub.requests)

    refs = [f"org/tiny@{SHA}", "org/tiny", f"org/tiny@{OLD_SHA}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT, str(cache), hub.url, *refs],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    out = json.loads(run.stdout.splitlines()[-1])

    assert out[refs[0]] == [str(online.path), SHA]
    assert "HF_HUB_OFFLINE=1 is set and the reference names no commit" in out[refs[1]]
    assert "not in the Hugging Face cache" in out[refs[2]]
    assert len(hub.requests) == seen


# -- the double speaks the client's protocol beyond snapshot_download ---------------------------------------
def test_hub_double_serves_tree_downloads_ranges_and_missing_entries(
    hub: HubServer, tmp_path: Path, cache: Path
) -> None:
    hub.add_repo("org/tiny", make_repo(tmp_path / "repo"), sha=SHA)
    api = huggingface_hub.HfApi(endpoint=hub.url)

    top = {(type(e).__name__, e.path) for e in api.list_repo_tree("org/tiny")}
    assert ("RepoFolder", "onnx") in top and ("RepoFile", "onnx/model.onnx") not in top
    info = api.model_info("org/tiny", files_metadata=True)
    lfs = {s.rfilename: s.lfs for s in info.siblings or []}
    assert lfs["config.json"] is None and lfs["model.safetensors"] is not None
    readme = huggingface_hub.hf_hub_download("org/tiny", "README.md", cache_dir=cache, endpoint=hub.url)
    assert Path(readme).read_text(encoding="utf-8").startswith("---")
    # Two Range GETs through the CDN redirect: the 8-byte header length, then the JSON header.
    metadata = api.parse_safetensors_file_metadata("org/tiny", "model.safetensors")
    assert metadata.tensors["embed.weight"].shape == [3, 4]
    assert any("range" in r.headers for r in hub.requests if r.path.startswith("/cdn/"))
    with pytest.raises(huggingface_hub.errors.RemoteEntryNotFoundError):
        huggingface_hub.hf_hub_download("org/tiny", "missing.txt", cache_dir=cache, endpoint=hub.url)
