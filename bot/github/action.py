"""The GitHub Action: check the models a workflow event touches, report, and keep the bot's posts in step.

``reefguard action`` (the Docker image's entrypoint) calls ``run(os.environ)``. In order:

1. Validate: the ``INPUT_*`` variables, the ``GITHUB_*`` variables and the event payload, and that the registry
   exists. Any problem is one ``::error::`` line and exit 2 (input) or 3 (other), before anything is loaded.
2. Select the models: ``paths`` if given, else the folders whose weight files changed (``push``: ``git diff
   before after``, or the compare API when the clone is too shallow; ``pull_request``: the pull request's
   files; ``schedule`` / ``workflow_dispatch``: every model in the repository).
3. Prepare: refuse models over ``max-model-size`` (sizes read from LFS pointers), fetch LFS pointers.
4. Check each model with the engine (``bot.engine.fingerprint`` and ``compare``) and write its report files.
5. Write the step outputs, the job summary and one annotation per model.
6. Post, everything having been computed: the sticky pull request comment, one issue per (model path, source),
   the model-card pull requests (``base_model`` is the registry entries' Hub ids; a source without one gets a
   warning instead of a pull request, never a path in the card). A 403 (a fork's read-only token) turns posting
   into a ``::warning::``.
7. Exit 1 if a verdict reaches ``fail-on-detection``, else 0.

With ``mode: protect`` the run instead trains, verifies and releases a Trap²-protected update
(``bot.github.protection``): no event payload, registry or GitHub API is needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from bot.errors import ConfigError, ReefguardError, RemoteError
from bot.exit_codes import FAIL_ON, ExitCode
from bot.github import events
from bot.github.cards import CardDraft
from bot.github.events import Event, read_event
from bot.github.git import GitError, changed_files, tracked_files, trust_workspace
from bot.github.inputs import ActionInputs, RunnerEnvironment, read_environment, read_inputs, read_protect_inputs
from bot.github.issues import IssueDraft
from bot.github.models import (
    ModelFiles,
    check_size,
    expand_patterns,
    fetch_pointers,
    inspect_model,
    models_from_files,
    path_slug,
)
from bot.github.runner import Runner
from bot.report import ISSUE, Marker

if TYPE_CHECKING:
    from github.Repository import Repository

    from bot.reef import Report
    from bot.registry import Registry

logger = logging.getLogger(__name__)

# GitHub refuses issue and comment bodies over 65,536 characters; leave room for the marker and footer.
MAX_BODY_CHARS = 60_000
SUMMARY_FILE = "summary.md"
_VERDICT_ORDER = ("merged", "derived", "inconclusive", "unrelated")
_FINDINGS = ("derived", "merged")


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResult:
    """One checked model.

    Attributes:
        model: its files; report: the engine's verdict and evidence.
        report_path: workspace-relative path of its ``report.md``.
    """

    model: ModelFiles
    report: Report
    report_path: str


def run(environ: Mapping[str, str]) -> int:
    """Run the action as the Actions runner starts it.

    Args:
        environ: the process environment (``INPUT_*``, ``GITHUB_*``).

    Returns:
        An ``ExitCode``: 0 nothing at the ``fail-on-detection`` level, 1 a finding, 2 a bad input or event
        payload, 3 any other reefguard error (registry, LFS, size, GitHub API). In ``mode: protect``: 0 every
        verification check holds, 1 one fails, 2 a bad input, 3 a base that does not load or a failed training run.

    Raises:
        Exception: anything unexpected, after an ``::error::`` line; the CLI prints it and exits 4.
    """
    runner = Runner.from_environ(environ)
    try:
        return _run(environ, runner)
    except ConfigError as e:
        runner.error(str(e), title="reefguard: invalid input")
        return ExitCode.USAGE
    except ReefguardError as e:
        runner.error(str(e), title="reefguard")
        return ExitCode.ERROR
    except Exception as e:  # annotated here, then the CLI prints the traceback and exits 4
        runner.error(
            f"unexpected {type(e).__name__}; please report it with the traceback in the log", title="reefguard"
        )
        raise


def _run(environ: Mapping[str, str], runner: Runner) -> int:
    from bot.registry import Registry, folder_write_problem

    inputs = read_inputs(environ)
    env = read_environment(environ)
    if inputs.mode == "protect":
        from bot.github.protection import run_protect

        return run_protect(read_protect_inputs(environ), env.workspace, runner)
    event = read_event(env.event_name, env.event_path, sha=env.sha)
    workspace = env.workspace
    if environ.get("GITHUB_WORKSPACE"):
        trust_workspace(workspace)
    registry = Registry(workspace / inputs.registry)
    registry.names()  # a missing registry fails before any model is loaded
    problem = folder_write_problem(workspace / inputs.report_dir)
    if problem is not None:  # before any model is loaded, not after every one is checked
        raise ConfigError(f"report-dir {inputs.report_dir}: cannot write reports there, {problem}", key="report-dir")
    repo = _RepoHandle(inputs, env)

    paths = _select(inputs, event, workspace, repo)
    models = [inspect_model(path, workspace=workspace) for path in paths]
    for model in models:
        check_size(model, inputs.max_model_bytes)
    models = fetch_pointers(models, workspace=workspace)

    results = [_check(model, inputs, workspace, registry) for model in models]
    summary = render_summary(results, event=event, env=env, inputs=inputs)
    report_dir = workspace / inputs.report_dir
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / SUMMARY_FILE).write_text(summary, encoding="utf-8")
    runner.set_output("verdict", overall_verdict(results))
    runner.set_output("report", f"{inputs.report_dir}/{SUMMARY_FILE}")
    runner.set_output("matches", json.dumps([_match_entry(result) for result in results]))
    runner.add_summary(summary)
    for result in results:
        _annotate(runner, result, inputs.fail_on)

    posts = _plan_posts(results, inputs=inputs, event=event, env=env, registry=registry, summary=summary)
    _publish(posts, repo, runner, event=event)
    findings = [r for r in results if str(r.report.verdict) in FAIL_ON[inputs.fail_on]]
    return ExitCode.FINDING if findings else ExitCode.OK


class _RepoHandle:
    """The repository's client object, made on first use (runs that post nothing need no token)."""

    def __init__(self, inputs: ActionInputs, env: RunnerEnvironment) -> None:
        self._inputs, self._env = inputs, env
        self._repo: Repository | None = None

    def get(self) -> Repository:
        from bot.github.client import Pacing, make_client

        if self._repo is None:
            if not self._inputs.token:
                raise ConfigError("input token is empty; leave it at its default `${{ github.token }}`", key="token")
            if not self._env.repository:
                raise ConfigError("GITHUB_REPOSITORY is not set; the runner sets it", key="GITHUB_REPOSITORY")
            pacing = Pacing().scaled(self._env.wait_scale)
            client = make_client(self._inputs.token, self._env.api_url, pacing=pacing)
            self._repo = client.get_repo(self._env.repository)
        return self._repo


# Selecting and checking models


def _select(inputs: ActionInputs, event: Event, workspace: Path, repo: _RepoHandle) -> list[str]:
    """The model paths this run checks (step 2 of the module docstring)."""
    from bot.github.client import github_errors

    excluded = [inputs.registry, inputs.report_dir]
    if inputs.paths:
        return [p for p in expand_patterns(inputs.paths, workspace=workspace) if p not in excluded]
    if event.name == events.PUSH:
        if event.deleted:
            return []
        if event.before is None:
            return models_from_files(tracked_files(cwd=workspace), excluded=excluded)
        try:
            files = changed_files(event.before, event.sha, cwd=workspace)
        except GitError as e:
            logger.info("git diff failed (%s); asking the compare API instead", e)
            with github_errors(f"comparing {event.before[:12]}...{event.sha[:12]}"):
                comparison = repo.get().compare(event.before, event.sha)
                files = [f.filename for f in comparison.files if f.status != "removed"]
        return models_from_files(files, excluded=excluded)
    if event.name == events.PULL_REQUEST and event.pr_number is not None:
        with github_errors(f"listing the files of pull request #{event.pr_number}"):
            pull = repo.get().get_pull(event.pr_number)
            files = [f.filename for f in pull.get_files() if f.status != "removed"]
        return models_from_files(files, excluded=excluded)
    return models_from_files(tracked_files(cwd=workspace), excluded=excluded)


def _check(model: ModelFiles, inputs: ActionInputs, workspace: Path, registry: Registry) -> ModelResult:
    from bot.engine import compare, fingerprint
    from bot.options import model_arguments
    from bot.report import write_report

    probes = inputs.probes if inputs.probes == "default" else str(workspace / inputs.probes)
    logger.info("checking %s", model.path)
    # The same model options as `reefguard check`: the inputs the Action takes, the table's defaults for the rest.
    fp = fingerprint(str(workspace / model.path), **model_arguments({**asdict(inputs), "probes": probes}))
    fp = replace(fp, name=model.path, model=model.path)  # reports name the model by its path in the repository
    report = compare(fp, registry)
    folder = f"{inputs.report_dir}/{path_slug(model.path)}"
    write_report(report, workspace / folder)
    return ModelResult(model=model, report=report, report_path=f"{folder}/report.md")


def overall_verdict(results: Sequence[ModelResult]) -> str:
    """The most serious verdict of the run (merged, derived, inconclusive, unrelated), ``none`` if none ran."""
    verdicts = {str(result.report.verdict) for result in results}
    return next((v for v in _VERDICT_ORDER if v in verdicts), "none")


def _match_entry(result: ModelResult) -> dict[str, object]:
    report = result.report
    return {"path": result.model.path, "verdict": str(report.verdict), "sources": list(report.sources),
            "reason": report.reason, "report": result.report_path}  # fmt: skip


def _annotate(runner: Runner, result: ModelResult, fail_on: str) -> None:
    from bot.report import verdict_line

    verdict = str(result.report.verdict)
    level = "error" if verdict in FAIL_ON[fail_on] else "warning" if verdict != "unrelated" else "notice"
    runner.annotate(
        level,
        f"{result.model.path} is {verdict_line(result.report)} (report: {result.report_path})",
        file=result.model.weight_files[0],
        title=f"reefguard: {verdict}",
    )


# Rendering


def _fit(text: str, limit: int = MAX_BODY_CHARS) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit("\n", 1)[0] + "\n\n_Cut to fit GitHub's limit; the job summary has the rest._\n"


def render_summary(
    results: Sequence[ModelResult], *, event: Event, env: RunnerEnvironment, inputs: ActionInputs
) -> str:
    """The job summary: a table of the models checked, then each model's full report."""
    from bot.report import render_markdown

    commit = f" at `{event.sha[:12]}`" if event.sha else ""
    lines = [f"# reefguard{commit}", ""]
    if not results:
        lines.append(f"No model weights to check in this {event.name.replace('_', ' ')} event.")
        return "\n".join(lines) + "\n"
    lines += [
        f"Checked {len(results)} model{'s' if len(results) != 1 else ''} against the registry `{inputs.registry}`.",
        "",
        "| model | verdict | sources | report |",
        "|---|---|---|---|",
    ]
    for r in results:
        sources = ", ".join(f"`{s}`" for s in r.report.sources) or "-"
        lines.append(f"| `{r.model.path}` | **{r.report.verdict}** | {sources} | `{r.report_path}` |")
    for r in results:
        lines += ["", render_markdown(r.report).rstrip()]
    return "\n".join(lines) + "\n"


# Posting


@dataclass(frozen=True, slots=True, kw_only=True)
class _Posts:
    """Everything the bot will post, rendered before the first request."""

    pr_comment: str | None
    issues: tuple[IssueDraft, ...]
    cleared_texts: Mapping[str, str]
    matched_again_text: str
    cards: tuple[CardDraft, ...]
    card_refusals: tuple[str, ...]
    owner: str
    default_branch: str | None


def _relation(result: ModelResult, workspace_folder: Path, n_bases: int) -> str:
    from bot.cards import relation_for

    return relation_for(str(result.report.verdict), n_bases=n_bases, quantized=result.model.path.endswith(".gguf"),
                        adapter=(workspace_folder / "adapter_config.json").is_file())  # fmt: skip


def _plan_posts(
    results: Sequence[ModelResult],
    *,
    inputs: ActionInputs,
    event: Event,
    env: RunnerEnvironment,
    registry: Registry,
    summary: str,
) -> _Posts:
    from bot.github.comments import pr_comment_body
    from bot.report import render_markdown, verdict_line

    commit = f"`{event.sha[:12]}`" if event.sha else "this commit"
    run_link = f" ([workflow run]({env.run_url}))" if env.run_url else ""
    on_pr = event.name == events.PULL_REQUEST
    pr_comment = None
    if on_pr and inputs.comment_on_pr and results:
        pr_comment = pr_comment_body(_fit(summary))
    issues: list[IssueDraft] = []
    cleared: dict[str, str] = {}
    cards: list[CardDraft] = []
    card_refusals: list[str] = []
    if not on_pr and inputs.open_issue:
        footer = (
            f"\n---\nFound by reefguard at {commit}{run_link}. Reruns update this issue instead of opening "
            "another; when the model stops matching, reefguard says so here. If the relation is intended, "
            "declare it with `base_model` in the model card."
        )
        for r in results:
            cleared[r.model.path] = (
                f"reefguard checked `{r.model.path}` again at {commit}{run_link}: it no longer matches this "
                f"source; it is now {verdict_line(r.report)}. Close this issue if that settles it."
            )
            if str(r.report.verdict) not in _FINDINGS:
                continue
            body = _fit(render_markdown(r.report))
            for source in r.report.sources:
                how = "is derived from" if str(r.report.verdict) == "derived" else "is merged from"
                marker = Marker(kind=ISSUE, path=r.model.path, source=source).render()
                issues.append(
                    IssueDraft(
                        path=r.model.path,
                        source=source,
                        title=f"reefguard: {r.model.path} {how} {source}",
                        body=f"{marker}\n{body}{footer}\n",
                    )
                )
    if not on_pr and inputs.annotate_card:
        for r in results:
            if str(r.report.verdict) not in _FINDINGS:
                continue
            folder = PurePosixPath(r.model.path).parent.as_posix() if r.model.path.endswith(".gguf") else r.model.path
            card_path = "README.md" if folder == "." else f"{folder}/README.md"
            hub_ids = {source: registry.get(source).hub_id for source in r.report.sources}
            unknown = [source for source, hub_id in hub_ids.items() if hub_id is None]
            if unknown:
                card_refusals.append(_card_refusal(r.model.path, unknown))
                continue
            base_models = tuple(hub_id for hub_id in hub_ids.values() if hub_id is not None)
            relation = _relation(r, env.workspace / folder, len(base_models))
            cards.append(
                CardDraft(
                    model_path=r.model.path,
                    card_path=card_path,
                    base_models=base_models,
                    relation=relation,
                    title=f"Declare the base model of {r.model.path}",
                    body=(
                        f"reefguard found `{r.model.path}` {verdict_line(r.report)} at {commit}{run_link}. "
                        f"This sets `base_model: [{', '.join(base_models)}]` and `base_model_relation: {relation}` in "
                        f"`{card_path}`, keeping its other metadata, so the Hugging Face Hub shows the lineage."
                    ),
                )
            )
    return _Posts(
        pr_comment=pr_comment,
        issues=tuple(issues),
        cleared_texts=cleared,
        matched_again_text=f"reefguard found this match again at {commit}{run_link}; the issue text is updated.",
        cards=tuple(cards),
        card_refusals=tuple(card_refusals),
        owner=env.repository.split("/")[0],
        default_branch=event.default_branch,
    )


def _card_refusal(model_path: str, sources: Sequence[str]) -> str:
    """Why no card change is proposed: ``base_model`` takes Hub ids, and these sources' entries carry none."""
    entries = f"entry {sources[0]} has" if len(sources) == 1 else f"entries {', '.join(sources)} have"
    fix = "; ".join(f"`reefguard registry set {source} --hub-id ORG/NAME`" for source in sources)
    return (
        f"reefguard cannot propose a model-card change for {model_path}: the registry {entries} no Hub id, and "
        f"base_model must name a Hub model, never a path. Record it with {fix}."
    )


def _is_permission_error(error: RemoteError) -> bool:
    from github import RateLimitExceededException

    return error.status == 403 and not isinstance(error.__cause__, RateLimitExceededException)


def _publish(posts: _Posts, repo: _RepoHandle, runner: Runner, *, event: Event) -> None:
    """Make the posts; a 403 stops posting with a warning and a summary note instead of failing the step."""
    from bot.github.cards import sync_card_pr
    from bot.github.comments import upsert_pr_comment
    from bot.github.issues import sync_issues

    steps: list[tuple[str, Callable[[], list[str]]]] = []
    if posts.pr_comment is not None and event.pr_number is not None:
        number, body = event.pr_number, posts.pr_comment

        def comment() -> list[str]:
            outcome = upsert_pr_comment(repo.get(), number, body)
            return [f"- Pull request comment {outcome.action}: {outcome.url}"]

        steps.append(("comment on the pull request", comment))
    if posts.issues or posts.cleared_texts:

        def issues() -> list[str]:
            outcomes = sync_issues(repo.get(), posts.issues, cleared_texts=posts.cleared_texts,
                                   matched_again_text=posts.matched_again_text)  # fmt: skip
            return [f"- Issue #{o.number} ({o.path} / {o.source}) {o.action}: {o.url}" for o in outcomes]

        steps.append(("update issues", issues))
    if posts.cards:

        def cards() -> list[str]:
            default_branch = posts.default_branch or repo.get().default_branch
            lines = []
            for draft in posts.cards:
                o = sync_card_pr(repo.get(), draft, owner=posts.owner, default_branch=default_branch)
                lines.append(f"- Model card pull request for {o.model_path} {o.action}: {o.url or '-'}")
            return lines

        steps.append(("propose model card changes", cards))
    for refusal in posts.card_refusals:
        runner.warning(refusal, title="reefguard: no model card change")
        runner.add_summary(f"\n> [!NOTE]\n> {refusal}\n")
    done: list[str] = []
    for what, step in steps:
        try:
            done += step()
        except RemoteError as e:
            if not _is_permission_error(e):
                raise
            fork = " Pull requests from forks always get a read-only token." if event.from_fork else ""
            runner.warning(
                f"reefguard could not {what}: the token may not write here (HTTP 403).{fork} "
                "The results are in the job summary and the step outputs.",
                title="reefguard: read-only token",
            )
            runner.add_summary(
                f"\n> [!WARNING]\n> reefguard could not {what}: GitHub answered 403 (read-only token).{fork} "
                "This summary is the report.\n"
            )
            break
    if done:
        runner.add_summary("\n### Posted\n\n" + "\n".join(done) + "\n")
