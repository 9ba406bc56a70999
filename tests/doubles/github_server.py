"""A local GitHub REST API on 127.0.0.1 for the real PyGithub client (2.10, requests), unpatched.

Tests pass ``base_url=server.url`` (``GITHUB_API_URL`` for the action). Routes and JSON shapes follow what
PyGithub reads (Repository.py, Issue.py, IssueComment.py, PullRequest.py, PaginatedList.py):

    GET          /repos/{repo}                              repository (default_branch)
    GET|POST     /repos/{repo}/issues                       list (state, labels; pages) | create
    GET|PATCH    /repos/{repo}/issues/{n}                   one issue | edit
    GET|POST     /repos/{repo}/issues/{n}/comments          list (pages) | create
    PATCH        /repos/{repo}/issues/comments/{id}         edit a comment
    GET          /repos/{repo}/labels/{name}                404 until created
    POST         /repos/{repo}/labels                       create
    GET|POST     /repos/{repo}/pulls                        list (state, head, base) | create
    GET          /repos/{repo}/pulls/{n}[/files]            one pull request | its files (pages)
    GET          /repos/{repo}/compare/{base}...{head}      files changed
    GET          /repos/{repo}/git/ref/heads/{branch}       404 for a missing branch
    POST         /repos/{repo}/git/refs                     create a branch
    GET|PUT      /repos/{repo}/contents/{path}?ref=         read | create or update a file on a branch

Lists are paginated like GitHub: ``per_page`` (capped by ``page_size``) and ``page``, with a ``Link`` header
naming the next and last pages. ``fail_next`` injects failures: a status with optional headers and message,
so tests can play 500s, a 429 with ``Retry-After``, a secondary rate limit (403 + message) and the 403 a
fork's read-only token gets. Every request is recorded with its JSON body and its headers minus
``Authorization``; ``tokens_seen`` keeps only whether a request was authenticated.

Example:
    with GitHubServer() as github:
        github.add_repo("octo/models")
        github.fail_next("POST", "/repos/octo/models/issues", 500)
        make_client("token", github.url).get_repo("octo/models").create_issue("t")
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from tests.doubles.loopback import LoopbackServer

_REPO = r"/repos/(?P<repo>[^/]+/[^/]+)"
SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit and have been temporarily blocked from content creation. "
    "Please retry your request again later."
)
READ_ONLY = "Resource not accessible by integration"


class RecordedRequest(NamedTuple):
    """A request as the double saw it: method, raw target, lower-cased headers minus Authorization, JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Failure:
    method: str
    prefix: str
    status: int
    times: int
    headers: dict[str, str]
    message: str


@dataclass(slots=True)
class _Repo:
    name: str
    default_branch: str
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)  # (branch, path) -> content
    issues: dict[int, dict[str, Any]] = field(default_factory=dict)  # issues and pull requests share numbers
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    pull_files: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    compares: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # "base...head" -> files


def _sha(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()


class GitHubServer(LoopbackServer):
    """Serves GitHub repositories from memory; ``with GitHubServer() as github:`` or ``start()`` / ``stop()``.

    Args:
        page_size: the most items a list page holds, whatever ``per_page`` asks (small, to test paging).
    """

    def __init__(self, *, page_size: int = 100) -> None:
        super().__init__()
        self.page_size = page_size
        self._repos: dict[str, _Repo] = {}
        self._failures: list[_Failure] = []
        self._requests: list[RecordedRequest] = []
        self.tokens_seen: list[bool] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._ids = itertools.count(1001)
        self.routes: list[tuple[str, re.Pattern[str], Callable[..., Reply]]] = [
            ("GET", re.compile(rf"{_REPO}"), self._get_repo),
            ("GET", re.compile(rf"{_REPO}/issues"), self._list_issues),
            ("POST", re.compile(rf"{_REPO}/issues"), self._create_issue),
            ("PATCH", re.compile(rf"{_REPO}/issues/comments/(?P<id>\d+)"), self._edit_comment),
            ("GET", re.compile(rf"{_REPO}/issues/(?P<number>\d+)"), self._get_issue),
            ("PATCH", re.compile(rf"{_REPO}/issues/(?P<number>\d+)"), self._edit_issue),
            ("GET", re.compile(rf"{_REPO}/issues/(?P<number>\d+)/comments"), self._list_comments),
            ("POST", re.compile(rf"{_REPO}/issues/(?P<number>\d+)/comments"), self._create_comment),
            ("GET", re.compile(rf"{_REPO}/labels/(?P<name>[^/]+)"), self._get_label),
            ("POST", re.compile(rf"{_REPO}/labels"), self._create_label),
            ("GET", re.compile(rf"{_REPO}/pulls"), self._list_pulls),
            ("POST", re.compile(rf"{_REPO}/pulls"), self._create_pull),
            ("GET", re.compile(rf"{_REPO}/pulls/(?P<number>\d+)"), self._get_pull),
            ("PATCH", re.compile(rf"{_REPO}/pulls/(?P<number>\d+)"), self._edit_pull),
            ("GET", re.compile(rf"{_REPO}/pulls/(?P<number>\d+)/files"), self._pull_files),
            ("GET", re.compile(rf"{_REPO}/compare/(?P<basehead>.+)"), self._compare),
            ("GET", re.compile(rf"{_REPO}/git/ref/heads/(?P<branch>.+)"), self._get_ref),
            ("POST", re.compile(rf"{_REPO}/git/refs"), self._create_ref),
            ("GET", re.compile(rf"{_REPO}/contents/(?P<file>.+)"), self._get_contents),
            ("PUT", re.compile(rf"{_REPO}/contents/(?P<file>.+)"), self._put_contents),
        ]

    # Setting up

    def add_repo(self, name: str, *, default_branch: str = "main", files: dict[str, bytes] | None = None) -> None:
        """Serve repository ``name`` with one branch holding ``files``."""
        repo = _Repo(name=name, default_branch=default_branch)
        repo.branches[default_branch] = _sha(name, default_branch)
        for path, data in (files or {}).items():
            repo.files[(default_branch, path)] = data
        self._repos[name] = repo

    def add_issue(self, repo: str, *, title: str, body: str = "", labels: tuple[str, ...] = ()) -> int:
        """An issue made by someone else (not recorded as a request); returns its number."""
        return self._new_issue(self._repos[repo], {"title": title, "body": body, "labels": list(labels)})

    def add_pull(
        self,
        repo: str,
        *,
        files: list[dict[str, Any]],
        head_repo: str | None = None,
        head_ref: str = "feature",
        body: str = "",
        labels: tuple[str, ...] = (),
    ) -> int:
        """A pull request changing ``files`` (``{"filename", "status"}``), from ``head_repo`` (a fork) if given."""
        state = self._repos[repo]
        number = self._new_issue(state, {"title": "A pull request", "body": body, "labels": list(labels)})
        issue = state.issues[number]
        head_sha = _sha(repo, "pull", number)
        issue["pull"] = {"head": {"ref": head_ref, "sha": head_sha, "label": f"{(head_repo or repo).split('/')[0]}:"
                                  f"{head_ref}", "repo": {"full_name": head_repo or repo}},
                         "base": {"ref": state.default_branch, "sha": state.branches[state.default_branch],
                                  "repo": {"full_name": repo}}}  # fmt: skip
        state.pull_files[number] = [{"sha": _sha(f), "additions": 1, "deletions": 0, "changes": 1, **f} for f in files]
        return number

    def add_compare(self, repo: str, base: str, head: str, files: list[dict[str, Any]]) -> None:
        """What ``GET /compare/{base}...{head}`` answers."""
        self._repos[repo].compares[f"{base}...{head}"] = files

    def fail_next(
        self,
        method: str,
        path_prefix: str,
        status: int,
        *,
        times: int = 1,
        headers: dict[str, str] | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` ``method`` requests whose path starts with ``path_prefix`` with ``status``."""
        with self._lock:
            self._failures.append(
                _Failure(method, path_prefix, status, times, dict(headers or {}), message or f"injected {status}")
            )

    # Reading back

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def writes(self, method: str | None = None, path_part: str = "") -> list[RecordedRequest]:
        """Recorded POST / PATCH / PUT requests (of ``method`` if given) whose path contains ``path_part``."""
        return [r for r in self.requests if r.method in ("POST", "PATCH", "PUT") and (method in (None, r.method))
                and path_part in r.path]  # fmt: skip

    def issues(self, repo: str, *, state: str = "open") -> list[dict[str, Any]]:
        """The repository's issues (not pull requests) in ``state`` (``all`` for every one)."""
        items = self._repos[repo].issues.values()
        return [i for i in items if "pull" not in i and state in ("all", i["state"])]

    def pulls(self, repo: str) -> list[dict[str, Any]]:
        return [i for i in self._repos[repo].issues.values() if "pull" in i]

    def comments(self, repo: str, number: int) -> list[dict[str, Any]]:
        return [c for c in self._repos[repo].comments.values() if c["issue_number"] == number]

    def file(self, repo: str, branch: str, path: str) -> bytes | None:
        return self._repos[repo].files.get((branch, path))

    def branches(self, repo: str) -> dict[str, str]:
        return dict(self._repos[repo].branches)

    # Serving

    def request_handler(self) -> type[BaseHTTPRequestHandler]:
        return _Handler

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        headers = {name.lower(): value for name, value in headers.items()}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            return Reply(400, {"message": "Problems parsing JSON"})
        with self._lock:
            recorded = {name: value for name, value in headers.items() if name != "authorization"}
            self._requests.append(RecordedRequest(method, target, recorded, body))
            self.tokens_seen.append("authorization" in headers)
            failure = next((f for f in self._failures if f.method == method and target.startswith(f.prefix)), None)
            if failure is not None:
                failure.times -= 1
                if failure.times <= 0:
                    self._failures.remove(failure)
        request_id = f"GH{next(self._ids):08X}"
        if failure is not None:
            reply = Reply(failure.status, {"message": failure.message}, failure.headers)
        else:
            with self._lock:
                try:
                    reply = self._route(method, target, body)
                except Exception as e:  # a bug in the double: answer 500 and keep it for the test to see
                    self.errors.append(f"{method} {target}: {e!r}")
                    reply = Reply(500, {"message": f"double failed: {e!r}"})
        return Reply(reply.status, reply.payload, {**reply.headers, "X-GitHub-Request-Id": request_id})

    def _route(self, method: str, target: str, body: Any) -> Reply:
        split = urlsplit(target)
        query = {name: values[-1] for name, values in parse_qs(split.query).items()}
        for route_method, pattern, route in self.routes:
            match = pattern.fullmatch(split.path)
            if match is None or method != route_method:
                continue
            groups = {name: unquote(value) for name, value in match.groupdict().items()}
            repo = self._repos.get(groups.pop("repo"))
            if repo is None:
                return _not_found()
            return route(repo, query=query, body=body if isinstance(body, dict) else {}, path=split.path, **groups)
        return _not_found()

    # JSON shapes

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/repos/{repo.name}"

    def _issue_json(self, repo: _Repo, issue: dict[str, Any]) -> dict[str, Any]:
        number = issue["number"]
        data = {
            "id": number * 10,
            "number": number,
            "title": issue["title"],
            "body": issue["body"],
            "state": issue["state"],
            "labels": [self._label_json(repo, name) for name in issue["labels"]],
            "comments": len(self.comments(repo.name, number)),
            "url": f"{self._repo_url(repo)}/issues/{number}",
            "html_url": f"https://github.test/{repo.name}/{'pull' if 'pull' in issue else 'issues'}/{number}",
            "user": {"login": issue["user"]},
        }
        if "pull" in issue:
            data["pull_request"] = {"url": f"{self._repo_url(repo)}/pulls/{number}"}
        return data

    def _pull_json(self, repo: _Repo, issue: dict[str, Any]) -> dict[str, Any]:
        number = issue["number"]
        return {
            "id": number * 10,
            "number": number,
            "title": issue["title"],
            "body": issue["body"],
            "state": issue["state"],
            "url": f"{self._repo_url(repo)}/pulls/{number}",
            "issue_url": f"{self._repo_url(repo)}/issues/{number}",
            "html_url": f"https://github.test/{repo.name}/pull/{number}",
            **issue["pull"],
        }

    def _label_json(self, repo: _Repo, name: str) -> dict[str, Any]:
        label = repo.labels.get(name, {"name": name, "color": "ededed", "description": ""})
        return {**label, "url": f"{self._repo_url(repo)}/labels/{quote(name)}"}

    def _comment_json(self, repo: _Repo, comment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": comment["id"],
            "body": comment["body"],
            "url": f"{self._repo_url(repo)}/issues/comments/{comment['id']}",
            "issue_url": f"{self._repo_url(repo)}/issues/{comment['issue_number']}",
            "html_url": f"https://github.test/{repo.name}/issues/{comment['issue_number']}#issuecomment-{comment['id']}",
            "user": {"login": "github-actions[bot]"},
        }

    def _page(self, items: list[Any], query: dict[str, str], path: str) -> Reply:
        per_page = min(int(query.get("per_page", 30)), self.page_size)
        page = int(query.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        links = []
        if page < last:
            links.append(f'<{self.url}{path}?{urlencode({**query, "page": page + 1})}>; rel="next"')
            links.append(f'<{self.url}{path}?{urlencode({**query, "page": last})}>; rel="last"')
        headers = {"Link": ", ".join(links)} if links else {}
        return Reply(200, items[(page - 1) * per_page : page * per_page], headers)

    def _new_issue(self, repo: _Repo, body: dict[str, Any]) -> int:
        number = next(self._numbers)
        repo.issues[number] = {"number": number, "title": body.get("title", ""), "body": body.get("body") or "",
                               "state": "open", "labels": list(body.get("labels", [])),
                               "user": "github-actions[bot]"}  # fmt: skip
        return number

    # Routes: each gets the repository, the query, the JSON body, the path and its pattern's groups.

    def _get_repo(self, repo: _Repo, **_: Any) -> Reply:
        owner, name = repo.name.split("/")
        return Reply(200, {"id": 1, "name": name, "full_name": repo.name, "owner": {"login": owner},
                           "default_branch": repo.default_branch, "url": self._repo_url(repo),
                           "html_url": f"https://github.test/{repo.name}"})  # fmt: skip

    def _list_issues(self, repo: _Repo, *, query: dict[str, str], path: str, **_: Any) -> Reply:
        state = query.get("state", "open")
        wanted = {label for label in query.get("labels", "").split(",") if label}
        items = [i for i in repo.issues.values() if state in ("all", i["state"]) and wanted <= set(i["labels"])]
        if query.get("direction") == "desc":
            items = items[::-1]
        return self._page([self._issue_json(repo, i) for i in items], query, path)

    def _create_issue(self, repo: _Repo, *, body: dict[str, Any], **_: Any) -> Reply:
        if not body.get("title"):
            return Reply(422, {"message": "Validation Failed"})
        for name in body.get("labels", []):
            repo.labels.setdefault(name, {"name": name, "color": "ededed", "description": ""})
        number = self._new_issue(repo, body)
        return Reply(201, self._issue_json(repo, repo.issues[number]))

    def _issue(self, repo: _Repo, number: str) -> dict[str, Any] | None:
        return repo.issues.get(int(number))

    def _get_issue(self, repo: _Repo, *, number: str, **_: Any) -> Reply:
        issue = self._issue(repo, number)
        return _not_found() if issue is None else Reply(200, self._issue_json(repo, issue))

    def _edit_issue(self, repo: _Repo, *, number: str, body: dict[str, Any], **_: Any) -> Reply:
        issue = self._issue(repo, number)
        if issue is None:
            return _not_found()
        issue.update({key: body[key] for key in ("title", "body", "state", "labels") if key in body})
        return Reply(200, self._issue_json(repo, issue))

    def _list_comments(self, repo: _Repo, *, number: str, query: dict[str, str], path: str, **_: Any) -> Reply:
        if self._issue(repo, number) is None:
            return _not_found()
        items = [self._comment_json(repo, c) for c in self.comments(repo.name, int(number))]
        return self._page(items, query, path)

    def _create_comment(self, repo: _Repo, *, number: str, body: dict[str, Any], **_: Any) -> Reply:
        if self._issue(repo, number) is None:
            return _not_found()
        comment = {"id": next(self._ids), "issue_number": int(number), "body": body.get("body", "")}
        repo.comments[comment["id"]] = comment
        return Reply(201, self._comment_json(repo, comment))

    def _edit_comment(self, repo: _Repo, *, id: str, body: dict[str, Any], **_: Any) -> Reply:
        comment = repo.comments.get(int(id))
        if comment is None:
            return _not_found()
        comment["body"] = body.get("body", comment["body"])
        return Reply(200, self._comment_json(repo, comment))

    def _get_label(self, repo: _Repo, *, name: str, **_: Any) -> Reply:
        return Reply(200, self._label_json(repo, name)) if name in repo.labels else _not_found()

    def _create_label(self, repo: _Repo, *, body: dict[str, Any], **_: Any) -> Reply:
        name = body.get("name", "")
        if name in repo.labels:
            return Reply(422, {"message": "Validation Failed", "errors": [{"code": "already_exists"}]})
        repo.labels[name] = {"name": name, "color": body.get("color", ""), "description": body.get("description")}
        return Reply(201, self._label_json(repo, name))

    def _list_pulls(self, repo: _Repo, *, query: dict[str, str], path: str, **_: Any) -> Reply:
        state = query.get("state", "open")
        items = [i for i in repo.issues.values() if "pull" in i and state in ("all", i["state"])]
        if "head" in query:
            items = [i for i in items if i["pull"]["head"]["label"] == query["head"]]
        if "base" in query:
            items = [i for i in items if i["pull"]["base"]["ref"] == query["base"]]
        return self._page([self._pull_json(repo, i) for i in items], query, path)

    def _create_pull(self, repo: _Repo, *, body: dict[str, Any], **_: Any) -> Reply:
        head, base = body.get("head", ""), body.get("base", "")
        if head not in repo.branches or base not in repo.branches:
            return Reply(422, {"message": "Validation Failed"})
        number = self._new_issue(repo, body)
        owner = repo.name.split("/")[0]
        repo.issues[number]["pull"] = {
            "head": {"ref": head, "sha": repo.branches[head], "label": f"{owner}:{head}",
                     "repo": {"full_name": repo.name}},
            "base": {"ref": base, "sha": repo.branches[base], "repo": {"full_name": repo.name}},
        }  # fmt: skip
        return Reply(201, self._pull_json(repo, repo.issues[number]))

    def _get_pull(self, repo: _Repo, *, number: str, **_: Any) -> Reply:
        issue = self._issue(repo, number)
        return _not_found() if issue is None or "pull" not in issue else Reply(200, self._pull_json(repo, issue))

    def _edit_pull(self, repo: _Repo, *, number: str, body: dict[str, Any], **_: Any) -> Reply:
        issue = self._issue(repo, number)
        if issue is None or "pull" not in issue:
            return _not_found()
        issue.update({key: body[key] for key in ("title", "body", "state") if key in body})
        return Reply(200, self._pull_json(repo, issue))

    def _pull_files(self, repo: _Repo, *, number: str, query: dict[str, str], path: str, **_: Any) -> Reply:
        if int(number) not in repo.pull_files:
            return _not_found()
        return self._page(repo.pull_files[int(number)], query, path)

    def _compare(self, repo: _Repo, *, basehead: str, **_: Any) -> Reply:
        files = repo.compares.get(basehead)
        if files is None:
            return _not_found()
        return Reply(200, {"url": f"{self._repo_url(repo)}/compare/{basehead}", "status": "ahead",
                           "ahead_by": 1, "behind_by": 0, "total_commits": 1, "commits": [],
                           "files": [{"sha": _sha(f), **f} for f in files]})  # fmt: skip

    def _ref_json(self, repo: _Repo, branch: str) -> dict[str, Any]:
        return {"ref": f"refs/heads/{branch}", "url": f"{self._repo_url(repo)}/git/refs/heads/{branch}",
                "object": {"sha": repo.branches[branch], "type": "commit"}}  # fmt: skip

    def _get_ref(self, repo: _Repo, *, branch: str, **_: Any) -> Reply:
        return Reply(200, self._ref_json(repo, branch)) if branch in repo.branches else _not_found()

    def _create_ref(self, repo: _Repo, *, body: dict[str, Any], **_: Any) -> Reply:
        ref, sha = body.get("ref", ""), body.get("sha", "")
        branch = ref.removeprefix("refs/heads/")
        if not ref.startswith("refs/heads/") or branch in repo.branches:
            return Reply(422, {"message": "Reference already exists"})
        source = next((b for b, s in repo.branches.items() if s == sha), None)
        if source is None:
            return Reply(422, {"message": "Object does not exist"})
        repo.branches[branch] = sha
        for (file_branch, path), data in list(repo.files.items()):
            if file_branch == source:
                repo.files[(branch, path)] = data
        return Reply(201, self._ref_json(repo, branch))

    def _content_json(self, repo: _Repo, branch: str, path: str) -> dict[str, Any]:
        data = repo.files[(branch, path)]
        return {"type": "file", "encoding": "base64", "content": base64.b64encode(data).decode(),
                "sha": _sha(data), "path": path, "name": path.rsplit("/", 1)[-1], "size": len(data),
                "url": f"{self._repo_url(repo)}/contents/{path}?ref={branch}"}  # fmt: skip

    def _get_contents(self, repo: _Repo, *, file: str, query: dict[str, str], **_: Any) -> Reply:
        branch = query.get("ref", repo.default_branch)
        if (branch, file) not in repo.files:
            return _not_found()
        return Reply(200, self._content_json(repo, branch, file))

    def _put_contents(self, repo: _Repo, *, file: str, body: dict[str, Any], **_: Any) -> Reply:
        path = file
        branch = body.get("branch", repo.default_branch)
        if branch not in repo.branches:
            return _not_found()
        existing = repo.files.get((branch, path))
        if existing is not None and body.get("sha") != _sha(existing):
            return Reply(409, {"message": f"{path} does not match {body.get('sha')}"})
        repo.files[(branch, path)] = base64.b64decode(body.get("content", ""))
        repo.branches[branch] = _sha(repo.name, branch, path, body.get("content"))
        content = self._content_json(repo, branch, path)
        return Reply(201 if existing is None else 200, {"content": content, "commit": {"sha": repo.branches[branch]}})


def _not_found() -> Reply:
    return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})


class _Handler(BaseHTTPRequestHandler):
    double: GitHubServer

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_PATCH(self) -> None:
        self._answer()

    def do_PUT(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        reply = self.double.handle(self.command, self.path, dict(self.headers.items()), raw)
        data = b"" if reply.payload is None else json.dumps(reply.payload).encode()
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request stderr line; tests read ``GitHubServer.requests`` instead."""
