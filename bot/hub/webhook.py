"""``reefguard hub serve``: receive Hub webhooks and scan each pushed model revision.

The Hub posts JSON (payload v3, hub-docs webhooks.md) with the shared secret in ``X-Webhook-Secret``. For
``event.scope == "repo.content"`` on a model repo, the pushed commit (``updatedRefs`` of ``refs/heads/main``,
else ``repo.headSha``) is appended to a SQLite queue and committed to disk **before** the 202 answer, so an
event the Hub saw accepted survives a crash or restart; a scan that was running when the process died is
queued again on restart. The queue is bounded (503 when full: the Hub's Activity tab can replay it later) and
deduplicated by (repo, sha). One worker thread takes the oldest event and scans it; the Hub allows 1,000
triggers a day per webhook, well within one worker's pace for small models.
"""

from __future__ import annotations

import hmac
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bot.errors import ConfigError, ReefguardError

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    repo_id TEXT NOT NULL,
    sha TEXT NOT NULL,
    received REAL NOT NULL,
    state TEXT NOT NULL,           -- pending, running, done, failed
    note TEXT NOT NULL DEFAULT ''
)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedScan:
    """One queued revision: id in the queue, repo and commit sha."""

    id: int
    repo_id: str
    sha: str


class EventQueue:
    """A bounded, persisted FIFO of revisions to scan (SQLite; safe across threads and restarts).

    Args:
        path: the database file (created if missing).
        max_pending: how many pending events it holds before refusing more.
    """

    def __init__(self, path: Path, *, max_pending: int = 1000) -> None:
        if max_pending < 1:
            raise ConfigError(f"--max-queue {max_pending}: must be at least 1", key="max-queue")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # committed means on disk before we answer 2xx
            self._db.execute(_SCHEMA)
            # A scan that was running when the process died never finished: run it again.
            self._db.execute("UPDATE events SET state = 'pending' WHERE state = 'running'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, repo_id: str, sha: str) -> str:
        """Queue a revision; returns ``"queued"``, ``"duplicate"`` (already pending or running) or ``"full"``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                active = "state IN ('pending', 'running')"
                if self._db.execute(f"SELECT 1 FROM events WHERE repo_id=? AND sha=? AND {active}",
                                    (repo_id, sha)).fetchone():  # fmt: skip
                    outcome = "duplicate"
                elif self._db.execute("SELECT COUNT(*) FROM events WHERE state='pending'").fetchone()[0] >= (
                    self.max_pending
                ):
                    outcome = "full"
                else:
                    self._db.execute(
                        "INSERT INTO events (repo_id, sha, received, state) VALUES (?, ?, ?, 'pending')",
                        (repo_id, sha, time.time()),
                    )
                    outcome = "queued"
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return outcome

    def claim(self) -> QueuedScan | None:
        """The oldest pending revision, marked running; None when nothing is pending."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, repo_id, sha FROM events WHERE state='pending' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE events SET state='running' WHERE id=?", (row[0],))
        return QueuedScan(id=row[0], repo_id=row[1], sha=row[2])

    def finish(self, item: QueuedScan, *, ok: bool, note: str = "") -> None:
        with self._lock:
            self._db.execute(
                "UPDATE events SET state=?, note=? WHERE id=?", ("done" if ok else "failed", note, item.id)
            )

    def states(self) -> list[tuple[str, str, str]]:
        """(repo, sha, state) of every event, oldest first."""
        with self._lock:
            return [tuple(row) for row in self._db.execute("SELECT repo_id, sha, state FROM events ORDER BY id")]


def revision_of(payload: Any) -> tuple[str, str] | str:
    """(repo id, sha) a webhook payload asks to scan, or why it is ignored.

    Example:
        >>> revision_of({"event": {"action": "update", "scope": "repo.content"},
        ...              "repo": {"type": "model", "name": "org/m", "headSha": "a" * 40}})
        ('org/m', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa')
        >>> revision_of({"event": {"action": "create", "scope": "discussion"}, "repo": {"type": "model"}})
        "scope 'discussion' is not repo.content"
    """
    if not isinstance(payload, dict):
        return "payload is not a JSON object"
    event, repo = payload.get("event") or {}, payload.get("repo") or {}
    if event.get("scope") != "repo.content":
        return f"scope {event.get('scope')!r} is not repo.content"
    if event.get("action") == "delete":
        return "a deletion: nothing to scan"
    if repo.get("type") != "model":
        return f"repo type {repo.get('type')!r} is not model"
    sha = repo.get("headSha")
    for ref in payload.get("updatedRefs") or []:
        if ref.get("ref") == "refs/heads/main" and ref.get("newSha"):
            sha = ref["newSha"]
    name = repo.get("name")
    if not isinstance(name, str) or "/" not in name or not isinstance(sha, str) or len(sha) != 40:
        return "no repo name or commit sha in the payload"
    return name, sha


class WebhookServer:
    """The HTTP endpoint: checks the secret, queues repo.content events, answers before scanning.

    Args:
        queue: where accepted events go.
        secret: the webhook secret configured on the Hub (compared in constant time).
        host, port: where to listen (port 0: any free port, see ``url``).
    """

    def __init__(self, queue: EventQueue, *, secret: str, host: str = "127.0.0.1", port: int = 8080) -> None:
        if not secret:
            raise ConfigError("the webhook secret is empty; set REEFGUARD_WEBHOOK_SECRET", key="secret")
        self.queue = queue
        self._secret = secret.encode("utf-8")
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def secret_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8"), self._secret)

    def start(self) -> WebhookServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="reefguard-webhook", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, secret: str | None, body: bytes) -> tuple[int, dict[str, str]]:
        """(HTTP status, JSON answer) for one posted webhook."""
        if not self.secret_ok(secret):
            return 401, {"error": "missing or wrong X-Webhook-Secret"}
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return 400, {"error": "body is not JSON"}
        except RecursionError:  # thousands of nested brackets
            return 400, {"error": "body is JSON nested too deep"}
        target = revision_of(payload)
        if isinstance(target, str):
            return 200, {"status": "ignored", "reason": target}
        outcome = self.queue.put(*target)
        logger.info("webhook %s@%s: %s", target[0], target[1], outcome)
        if outcome == "full":
            return 503, {"status": "full", "reason": f"{self.queue.max_pending} scans already pending; replay later"}
        return (202 if outcome == "queued" else 200), {"status": outcome, "repo": target[0], "sha": target[1]}


class _Handler(BaseHTTPRequestHandler):
    server_state: WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, {"error": f"body over {MAX_BODY_BYTES} bytes"})
            return
        status, answer = self.server_state.answer(self.headers.get("X-Webhook-Secret"), self.rfile.read(length))
        self._send(status, answer)

    def do_GET(self) -> None:
        self._send(200, {"status": "ok"})  # a health check for the load balancer

    def _send(self, status: int, answer: dict[str, str]) -> None:
        body = json.dumps(answer).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("webhook %s", format % args)


class Worker:
    """Scans queued revisions one at a time with ``scan_one(repo_id, sha) -> note``.

    ``scan_one`` raising a ReefguardError marks the event failed (with the message) and the worker goes on.
    """

    def __init__(self, queue: EventQueue, scan_one: Callable[[str, str], str], *, poll_s: float = 2.0) -> None:
        self.queue = queue
        self.scan_one = scan_one
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_pending(self) -> int:
        """Scan everything pending now; returns how many events it took."""
        taken = 0
        while not self._stop.is_set() and (item := self.queue.claim()) is not None:
            taken += 1
            try:
                note = self.scan_one(item.repo_id, item.sha)
            except ReefguardError as e:
                logger.error("scan of %s@%s failed: %s", item.repo_id, item.sha, e)
                self.queue.finish(item, ok=False, note=str(e))
            else:
                self.queue.finish(item, ok=True, note=note)
        return taken

    def start(self) -> Worker:
        def loop() -> None:
            while not self._stop.is_set():
                self.run_pending()
                self._stop.wait(self.poll_s)

        self._thread = threading.Thread(target=loop, name="reefguard-scan-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
