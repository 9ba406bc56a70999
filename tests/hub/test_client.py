"""Budgets and rate limits: what the real client does on 429/5xx against the double, and what we add."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot._http import make_api
from bot.cli import ExitCode, main
from bot.errors import RemoteError
from bot.hub.client import Budget
from bot.hub.scan import Selection, list_candidates, parse_since
from tests.doubles.hub_server import HubServer
from tests.hub.conftest import SOURCE_REPO, plant, report_of
from tests.hub.test_scan import scan_args


class FakeTime:
    """A clock and a sleep that only advance each other: budgets are tested without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def budget(fake: FakeTime, **caps: float) -> Budget:
    return Budget(clock=fake.clock, sleep=fake.sleep, **caps)  # type: ignore[arg-type]


def listed(hub: HubServer, fake: FakeTime, selection: Selection | None = None, **caps: float) -> list[str]:
    api = make_api(hub.url)
    return [c.repo_id for c in list_candidates(api, selection or Selection(), budget=budget(fake, **caps))]


def test_listing_follows_pages_and_applies_every_filter(hub: HubServer, tmp_path: Path) -> None:
    for index in range(5):
        plant(hub, tmp_path, f"lab/tune-{index}", "finetune", card={"base_model": SOURCE_REPO})
    plant(hub, tmp_path, "other/tune", "finetune", card={"base_model": SOURCE_REPO})
    plant(hub, tmp_path, "lab/plain", "unrelated")
    hub.page_size = 2
    fake = FakeTime()

    assert listed(hub, fake) == ["lab/plain", "other/tune", *(f"lab/tune-{i}" for i in range(4, -1, -1))]
    assert sum(r.path.startswith("/api/models?") for r in hub.requests) == 4  # four pages, by Link headers
    tag = f"base_model:finetune:{SOURCE_REPO}"
    assert listed(hub, fake, Selection(author="lab", tags=(tag,))) == [f"lab/tune-{i}" for i in range(4, -1, -1)]
    assert listed(hub, fake, Selection(search="TUNE-3")) == ["lab/tune-3"]
    assert listed(hub, fake, Selection(limit=3)) == ["lab/plain", "other/tune", "lab/tune-4"]
    # Repos were modified a minute apart from 2026-01-01T00:01; "since" stops the newest-first walk early.
    assert listed(hub, fake, Selection(since=parse_since("2026-01-01T00:06:00Z"))) == ["lab/plain", "other/tune"]
    assert fake.slept == []


def test_429_on_the_first_page_waits_as_the_headers_say(hub: HubServer, tmp_path: Path) -> None:
    """The client does not retry the first listing page (get_session().get); the budget does."""
    plant(hub, tmp_path, "lab/one", "unrelated")
    hub.fail_next("/api/models?", 429, headers={"Retry-After": "7"})
    hub.fail_next(
        "/api/models?",
        429,
        headers={"RateLimit": '"api";r=0;t=42', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'},
    )
    hub.fail_next("/api/models?", 503)
    fake = FakeTime()

    assert listed(hub, fake) == ["lab/one"]

    assert fake.slept == [7.0, 42.0, 4.0]  # Retry-After, RateLimit reset, then exponential backoff (third try)
    assert [r.path.startswith("/api/models?") for r in hub.requests].count(True) == 4


def test_a_wait_past_the_time_budget_fails_at_once(hub: HubServer, tmp_path: Path) -> None:
    plant(hub, tmp_path, "lab/one", "unrelated")
    hub.fail_next("/api/models?", 429, headers={"Retry-After": "600"})
    fake = FakeTime()

    with pytest.raises(RemoteError, match="the Hub asks to wait 600 s") as caught:
        listed(hub, fake, max_seconds=60)
    assert caught.value.status == 429 and caught.value.request_id == "hub-1"
    assert fake.slept == []


def test_persistent_5xx_gives_up_after_the_retries(hub: HubServer, tmp_path: Path) -> None:
    plant(hub, tmp_path, "lab/one", "unrelated")
    hub.fail_next("/api/models?", 500, times=10)
    fake = FakeTime()

    with pytest.raises(RemoteError, match="still HTTP 500 after 5 retries"):
        listed(hub, fake)
    assert fake.slept == [1.0, 2.0, 4.0, 8.0, 16.0]  # exponential backoff


def test_the_client_itself_retries_429_on_later_pages(hub: HubServer, tmp_path: Path) -> None:
    """Later pages go through huggingface_hub's http_backoff, which sleeps Retry-After + 1 s by itself."""
    for index in range(3):
        plant(hub, tmp_path, f"lab/m{index}", "unrelated")
    hub.page_size = 2
    # Served with the first page, so it catches the next request: page two.
    hub.on_request("/api/models?", lambda: hub.fail_next("/api/models?", 429, headers={"Retry-After": "0"}))
    fake = FakeTime()
    started = time.monotonic()

    assert listed(hub, fake) == ["lab/m2", "lab/m1", "lab/m0"]

    assert fake.slept == []  # our budget never saw the 429
    assert time.monotonic() - started >= 1.0
    assert [r.path.split("?")[0] for r in hub.requests] == ["/api/models"] * 3


def test_hf_endpoint_is_the_default_endpoint_of_every_hub_request(
    hub: HubServer,
    hub_registry: Path,
    probe_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without --endpoint, the listing, the model info, config.json (bot.sources) and the Range reads all go to
    $HF_ENDPOINT, read when the client is built (bot._http), not when huggingface_hub was imported."""
    plant(hub, tmp_path, "lab/plain", "unrelated")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    args = scan_args(hub, hub_registry, probe_file, tmp_path)
    flag = args.index("--endpoint")
    del args[flag : flag + 2]

    assert main(args) == ExitCode.OK

    (result,) = report_of(tmp_path / "run")["results"]
    assert result["status"] == "checked"
    paths = [r.path for r in hub.requests]
    assert any(p.startswith("/api/models?") for p in paths) and any(p.endswith("/config.json") for p in paths)
    assert any("range" in r.headers for r in hub.requests)
