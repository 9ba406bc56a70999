"""`reefguard hub serve`: secret check, repo.content events queued durably, a worker scanning them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.cli import build_parser
from bot.errors import ConfigError
from bot.hub.commands import revision_scanner
from bot.hub.webhook import EventQueue, WebhookServer, Worker
from tests.doubles.hub_server import HubServer
from tests.hub.conftest import SOURCE, SOURCE_REPO, plant
from tests.hub.test_scan import scan_args

SECRET = "s3cret-webhook-value"


def payload(repo: str, sha: str, *, scope: str = "repo.content", kind: str = "model") -> dict[str, Any]:
    return {
        "event": {"action": "update", "scope": scope},
        "repo": {"type": kind, "name": repo, "id": "abc", "private": False, "headSha": "0" * 40},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "0" * 40, "newSha": sha}],
    }


def post(url: str, body: object, secret: str | None = SECRET) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"X-Webhook-Secret": secret} if secret is not None else {})}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[EventQueue]:
    events = EventQueue(tmp_path / "queue.sqlite", max_pending=2)
    yield events
    events.close()


@pytest.fixture
def server(queue: EventQueue) -> Iterator[WebhookServer]:
    receiver = WebhookServer(queue, secret=SECRET, port=0).start()
    yield receiver
    receiver.stop()


def test_secret_scope_dedup_and_bound(server: WebhookServer, queue: EventQueue) -> None:
    a, b, c = "a" * 40, "b" * 40, "c" * 40
    assert post(server.url, payload("lab/m", a), secret=None)[0] == 401
    assert post(server.url, payload("lab/m", a), secret="s3cret-webhook-valuX")[0] == 401
    assert post(server.url, payload("lab/m", a, scope="discussion"))[1]["status"] == "ignored"
    assert post(server.url, payload("lab/d", a, kind="dataset"))[1]["status"] == "ignored"
    assert queue.states() == []

    assert post(server.url, payload("lab/m", a)) == (202, {"status": "queued", "repo": "lab/m", "sha": a})
    assert post(server.url, payload("lab/m", a))[1]["status"] == "duplicate"
    assert post(server.url, payload("lab/m", b))[0] == 202
    status, answer = post(server.url, payload("lab/m", c))
    assert (status, answer["status"]) == (503, "full")
    assert queue.states() == [("lab/m", a, "pending"), ("lab/m", b, "pending")]


def test_queue_survives_a_restart_and_requeues_an_interrupted_scan(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite"
    first = EventQueue(path)
    first.put("lab/m", "a" * 40)
    first.put("lab/n", "b" * 40)
    claimed = first.claim()
    assert claimed is not None and claimed.repo_id == "lab/m"
    first.close()  # the process dies with lab/m running

    again = EventQueue(path)
    assert again.states() == [("lab/m", "a" * 40, "pending"), ("lab/n", "b" * 40, "pending")]
    again.close()


def test_worker_scans_the_pushed_revision(
    hub: HubServer, hub_registry: Path, probe_file: Path, tmp_path: Path, queue: EventQueue, server: WebhookServer
) -> None:
    sha = plant(hub, tmp_path, "lab/quiet-tune", "finetune")
    args = build_parser().parse_args(["hub", "serve", *scan_args(hub, hub_registry, probe_file, tmp_path)[2:]])
    assert post(server.url, payload("lab/quiet-tune", sha))[0] == 202
    assert post(server.url, payload("lab/gone", "d" * 40))[0] == 202

    assert Worker(queue, revision_scanner(args)).run_pending() == 2

    states = queue.states()
    assert states[0] == ("lab/quiet-tune", sha, "done") and states[1][2] == "failed"
    report = json.loads((tmp_path / "run" / "hub-report.json").read_text(encoding="utf-8"))
    (result,) = report["results"]
    assert (result["sha"], result["findings"][0]["source"]) == (sha, SOURCE)
    assert result["findings"][0]["source_repo"] == SOURCE_REPO


def test_an_empty_secret_is_refused(queue: EventQueue) -> None:
    with pytest.raises(ConfigError, match="REEFGUARD_WEBHOOK_SECRET"):
        WebhookServer(queue, secret="", port=0)


@pytest.mark.parametrize(
    ("body", "error"),
    [(b"<html>", "body is not JSON"), (b"[" * 100_000 + b"]" * 100_000, "body is JSON nested too deep")],
    ids=["html", "nested"],
)
def test_a_body_that_is_not_usable_json_is_a_400_and_queues_nothing(
    server: WebhookServer, queue: EventQueue, body: bytes, error: str
) -> None:
    request = urllib.request.Request(server.url, data=body, headers={"X-Webhook-Secret": SECRET}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 400 and json.loads(raised.value.read()) == {"error": error}
    assert queue.states() == []
    assert post(server.url, payload("lab/m", "a" * 40))[0] == 202  # the receiver is still up
