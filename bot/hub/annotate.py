"""Hub annotations for scan findings, written without spamming.

- On repos we do **not** own: one discussion per (repo, source) with the evidence, a plain "close if wrong" and
  how to opt out. Before writing, the bot lists its own discussions on the repo and looks for the hidden
  marker of that (repo, source); if found it edits that first comment in place (or leaves it alone when the text
  is the same, or when the owner closed it: closing is the opt-out, never reopened), so reruns never duplicate.
- On repos we own (the repo's namespace is the token's user or one of its orgs, by ``whoami``): one pull
  request that sets ``base_model`` / ``base_model_relation`` in the README front matter through
  ``bot.cards`` (the one card writer), keeping every other key and the card text. It is also found by its marker.

Each finding kind has its own discussion text (``DISCUSSION_TEXTS``): what the card says, what the fingerprints
say, what the owner could do, and when closing the discussion is the right answer. The hidden marker names the
repo as the docs say: ``<!-- reefguard:v1 kind=hub-discussion repo=ORG/NAME source=S -->``; the ``path=`` form
older bots wrote is still found, so a rerun edits those posts instead of opening new ones.

Nothing is written unless ``write=True`` (``--write``) and a token is given. Gated or private repos are not
annotated; discussions disabled, missing permissions (401/403) or a repo gone (404) are skipped and reported.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cards import ModelCard, parse_hub_id, relation_for
from bot.errors import ConfigError, ReefguardError, RemoteError
from bot.hub.client import Budget
from bot.hub.results import OTHER_DECLARATION, UNDECLARED, WRONG_DECLARATION, Finding, ModelResult, Status
from bot.report import HUB_CARD_PR, HUB_DISCUSSION, Marker, parse_markers

if TYPE_CHECKING:
    from huggingface_hub import HfApi

logger = logging.getLogger(__name__)

TITLE_PREFIX = "reefguard:"


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """Who the token is: a user name and its orgs (the namespaces we own)."""

    name: str
    orgs: tuple[str, ...] = ()

    def owns(self, repo_id: str) -> bool:
        return repo_id.split("/", 1)[0] in {self.name, *self.orgs}


@dataclass(frozen=True, slots=True, kw_only=True)
class Annotation:
    """What annotate did (or, in a dry run, would do) for one repo and source.

    Attributes:
        repo_id, source: the subject (source is empty for a card pull request covering several).
        action: ``opened``, ``updated``, ``unchanged``, ``left-closed``, ``skipped``, or ``would-open``,
            ``would-update``, ``would-open-or-update`` in a dry run.
        kind: ``discussion`` or ``card-pr``.
        number: the discussion or pull request number, when there is one.
        reason: why (skips) or a short note.
    """

    repo_id: str
    source: str
    kind: str
    action: str
    number: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "source": self.source, "kind": self.kind, "action": self.action,
                "number": self.number, "reason": self.reason}  # fmt: skip


def whoami(api: HfApi, *, budget: Budget) -> Identity:
    """The token's user and orgs.

    Raises:
        RemoteError: the token is refused or the Hub failed.
    """
    data = budget.call("whoami", lambda: api.whoami())
    orgs = tuple(str(org["name"]) for org in data.get("orgs") or [] if org.get("name"))
    return Identity(name=str(data["name"]), orgs=orgs)


@dataclass(frozen=True, slots=True, kw_only=True)
class DiscussionText:
    """The parts of a discussion that depend on the finding's kind; ``{…}`` fields are filled per finding.

    Attributes:
        title: the discussion title (after ``TITLE_PREFIX``).
        claim: what the card says and what the fingerprints say.
        request: what the owner could change, if the bot is right; empty when nothing is suggested.
        close_if: when closing the discussion is the right answer.
    """

    title: str
    claim: str
    request: str
    close_if: str


DISCUSSION_TEXTS = {
    UNDECLARED: DiscussionText(
        title="is this model derived from {repo}?",
        claim="It thinks this model is **{verdict} from {source}**, and the model card declares no base model",
        request="If that is right, please declare it in the model card metadata, which also links this model into "
        "the source's model tree:\n\n```yaml\n{lineage}```",
        close_if="if this model is not derived from that source, please just close this discussion.",
    ),
    OTHER_DECLARATION: DiscussionText(
        title="is this model also derived from {repo}?",
        claim="It thinks this model is **{verdict} from {source}**, while the model card declares {declared} and "
        "not that source",
        request="If that is right, please add it to the model card metadata (keeping the bases that are right), "
        "which also links this model into the source's model tree:\n\n```yaml\n{lineage}```",
        close_if="if this model is not derived from that source, or only through a declared base that itself "
        "derives from it, please just close this discussion.",
    ),
    WRONG_DECLARATION: DiscussionText(
        title="is this model really derived from {repo}?",
        claim="The model card declares {declared} as its base, but the fingerprints find **no relation** between "
        "this model and {source}",
        request="If the weights did not come from that model, please correct `base_model` in the model card "
        "metadata, so the model tree shows this model where it belongs.",
        close_if="if this model was made from that source (the declaration is right), please just close this "
        "discussion.",
    ),
}


def discussion_body(result: ModelResult, finding: Finding) -> str:
    """The discussion text for one finding: claim, suggestion, close-if-wrong, opt-out, evidence, marker.

    Raises:
        KeyError: a finding kind without a text in ``DISCUSSION_TEXTS``.
    """
    text = DISCUSSION_TEXTS[finding.kind]
    source = f"`{finding.source}`" + (
        f" ([{finding.source_repo}](/{finding.source_repo}))" if finding.source_repo else ""
    )
    declared = ", ".join(f"`{d}`" for d in result.declared) or "no base model"
    lineage = _suggested_lineage(result, finding) if "{lineage}" in text.request else ""
    request = text.request.format(lineage=lineage) if finding.source_repo else ""
    claim = text.claim.format(verdict=result.verdict, source=source, declared=declared)
    return (
        f"Hello! This is **reefguard**, an automated bot. It fingerprints the hidden representations of released "
        f"models and compared this repo at commit `{result.sha[:12]}` with a registry of source models.\n\n"
        f"{claim}: {finding.detail}." + (f"\n\n{request}" if request else "") + "\n\n"
        f"**This can be wrong.** Fingerprints are statistical evidence, not proof: {text.close_if}\n\n"
        "**Opting out:** closing this discussion is enough. reefguard never reopens a closed discussion and never "
        "posts a second one about the same source on this repo; when a new commit changes the evidence it edits "
        "this message instead of writing another.\n\n"
        f"<details><summary>Evidence</summary>\n\n{result.evidence_markdown or ''}\n</details>\n\n"
        f"{discussion_marker(result.repo_id, finding.source).render()}\n"
    )


def _suggested_lineage(result: ModelResult, finding: Finding) -> str:
    """The front matter lines a derivative's card should hold: the declared bases that are Hub ids (a card may
    declare a path, which no card should repeat) plus the source's repo."""
    declared = [base for base in result.declared if _is_hub_id(base)] if finding.kind == OTHER_DECLARATION else []
    bases = [*declared, finding.source_repo] if finding.source_repo else declared
    relation = relation_for(result.verdict or "derived", n_bases=len(bases))
    card = ModelCard().with_lineage(bases, relation=relation).render()
    return card.removeprefix("---\n").removesuffix("---\n")


def _is_hub_id(text: str) -> bool:
    try:
        parse_hub_id(text)
    except ConfigError:
        return False
    return True


def discussion_marker(repo_id: str, source: str) -> Marker:
    """The hidden marker of the bot's discussion about ``source`` on ``repo_id`` (the documented form)."""
    return Marker(kind=HUB_DISCUSSION, repo=repo_id, source=source)


def annotate(
    api: HfApi,
    results: Sequence[ModelResult],
    *,
    identity: Identity | None,
    write: bool,
    budget: Budget,
) -> list[Annotation]:
    """Open or update the posts the findings in ``results`` call for; never raises for one repo.

    Args:
        api: the Hub client (with the bot's token when writing).
        results: scan results; only checked ones with findings are annotated.
        identity: the token's user and orgs, or None (dry run without a token: nothing is looked up).
        write: actually write; otherwise report what would be written.
        budget: rate-limit handling for every call.

    Returns:
        One annotation per (repo, source) discussion or per owned repo's card pull request.
    """
    done: list[Annotation] = []
    for result in results:
        if result.status is not Status.CHECKED or not result.findings:
            continue
        if identity is not None and identity.owns(result.repo_id):
            done.append(_guard(result, "", "card-pr", lambda r=result: _card_pr(api, r, identity, write, budget)))
            continue
        for finding in result.findings:
            if result.gated or result.private:
                access = "gated" if result.gated else "private"
                done.append(Annotation(repo_id=result.repo_id, source=finding.source, kind="discussion",
                                       action="skipped", reason=f"{access} repo: not annotated"))  # fmt: skip
                continue
            done.append(
                _guard(
                    result,
                    finding.source,
                    "discussion",
                    lambda r=result, f=finding: _discussion(api, r, f, identity, write, budget),
                )
            )
    return done


def _guard(result: ModelResult, source: str, kind: str, work: Any) -> Annotation:
    """Run one annotation; a Hub refusal or failure becomes a skipped annotation with the reason."""
    try:
        annotation: Annotation = work()
        return annotation
    except ReefguardError as e:
        status = e.status if isinstance(e, RemoteError) else None
        why = {401: "the token was refused", 403: "no permission (discussions disabled or token scope)",
               404: "repo gone or invisible to this token"}.get(status or 0, "failed")  # fmt: skip
        logger.warning("%s: %s skipped: %s", result.repo_id, kind, e)
        return Annotation(repo_id=result.repo_id, source=source, kind=kind, action="skipped", reason=f"{why}: {e}")


def _own_threads(
    api: HfApi, repo_id: str, identity: Identity, *, pull_requests: bool, budget: Budget
) -> dict[Marker, tuple[Any, Any]]:
    """The bot's own threads on ``repo_id`` by marker: marker -> (discussion details, first comment)."""
    from huggingface_hub import DiscussionComment

    kind: Any = "pull_request" if pull_requests else "discussion"
    threads = budget.call(
        f"{repo_id}: list discussions",
        lambda: list(api.get_repo_discussions(repo_id, author=identity.name, discussion_type=kind)),
    )
    found: dict[Marker, tuple[Any, Any]] = {}
    for thread in threads:
        if not thread.title.startswith(TITLE_PREFIX):
            continue
        details = budget.call(
            f"{repo_id}: discussion #{thread.num}",
            lambda num=thread.num: api.get_discussion_details(repo_id, num),  # type: ignore[misc]
        )
        first = next((event for event in details.events if isinstance(event, DiscussionComment)), None)
        if first is None:
            continue
        for marker in parse_markers(first.content):
            found.setdefault(marker, (details, first))
    return found


def _discussion(
    api: HfApi, result: ModelResult, finding: Finding, identity: Identity | None, write: bool, budget: Budget
) -> Annotation:
    repo_id, source = result.repo_id, finding.source
    body = discussion_body(result, finding)
    note = functools.partial(Annotation, repo_id=repo_id, source=source, kind="discussion")
    if identity is None:
        return note(action="would-open-or-update", reason="dry run without a token: nothing looked up")
    threads = _own_threads(api, repo_id, identity, pull_requests=False, budget=budget)
    legacy = Marker(kind=HUB_DISCUSSION, path=repo_id, source=source)  # what bots before issue 15 wrote
    existing = threads.get(discussion_marker(repo_id, source)) or threads.get(legacy)
    if existing is not None:
        details, first = existing
        if details.status != "open":
            return note(action="left-closed", number=details.num,
                              reason="closed by the repo: reefguard does not post again")  # fmt: skip
        if first.content.strip() == body.strip():
            return note(action="unchanged", number=details.num)
        if not write:
            return note(action="would-update", number=details.num)
        budget.call(
            f"{repo_id}: edit discussion #{details.num}",
            lambda: api.edit_discussion_comment(repo_id, details.num, first.id, body),
        )
        return note(action="updated", number=details.num)
    if not write:
        return note(action="would-open")
    title = f"{TITLE_PREFIX} {DISCUSSION_TEXTS[finding.kind].title.format(repo=finding.source_repo or source)}"
    created = budget.call(
        f"{repo_id}: open discussion", lambda: api.create_discussion(repo_id, title, description=body)
    )
    return note(action="opened", number=created.num)


def card_pr_body(result: ModelResult, base_models: Sequence[str], relation: str) -> str:
    """The pull request description: what changes, why, how to decline, and the marker."""
    evidence = result.evidence_markdown or ""
    return (
        f"reefguard's scan of commit `{result.sha[:12]}` found this model {result.verdict} from "
        f"{', '.join(f'`{b}`' for b in base_models)}, which the card does not declare. This pull request sets "
        f"`base_model` and `base_model_relation: {relation}` in the README metadata; every other key and the card "
        "text are kept. If it is wrong, close it: reefguard will not open another.\n\n"
        f"<details><summary>Evidence</summary>\n\n{evidence}\n</details>\n\n"
        f"{Marker(kind=HUB_CARD_PR, repo=result.repo_id).render()}\n"
    )


def _card_pr(api: HfApi, result: ModelResult, identity: Identity, write: bool, budget: Budget) -> Annotation:
    repo_id = result.repo_id
    note = functools.partial(
        Annotation, repo_id=repo_id, source=", ".join(f.source for f in result.findings), kind="card-pr"
    )
    unknown = sorted(f.source for f in result.findings if not f.source_repo)
    if unknown:
        hint = "set it with `reefguard registry set NAME --hub-id ORG/NAME` and scan again"
        return note(action="skipped", reason=f"no Hub repo id known for {', '.join(unknown)}; {hint}")
    # A declaration the fingerprints call wrong is the owner's to remove; the pull request only adds bases.
    derived_from = [f for f in result.findings if f.kind != WRONG_DECLARATION]
    if not derived_from:
        return note(action="skipped", reason="the card declares a base the fingerprints call unrelated; "
                    "nothing to add")  # fmt: skip
    declared = (base for base in result.declared if _is_hub_id(base))  # a declared path is dropped, not repeated
    base_models = sorted({*declared, *(f.source_repo for f in derived_from if f.source_repo)})
    relation = relation_for(result.verdict or "derived", n_bases=len(base_models))
    threads = _own_threads(api, repo_id, identity, pull_requests=True, budget=budget)
    existing = threads.get(Marker(kind=HUB_CARD_PR, repo=repo_id)) or threads.get(
        Marker(kind=HUB_CARD_PR, path=repo_id)  # what bots before issue 15 wrote
    )
    if existing is not None:
        details, _ = existing
        action = "unchanged" if details.status in ("open", "draft") else "left-closed"
        return note(action=action, number=details.num, reason=f"pull request is {details.status}")
    if not write:
        return note(action="would-open", reason=f"base_model: {', '.join(base_models)}")
    card = _card_with_base_model(api, repo_id, result.sha, base_models, relation, budget=budget)
    from huggingface_hub import CommitOperationAdd

    commit = budget.call(
        f"{repo_id}: card pull request",
        lambda: api.create_commit(
            repo_id,
            operations=[CommitOperationAdd("README.md", card.encode("utf-8"))],
            commit_message=f"{TITLE_PREFIX} declare base_model {', '.join(base_models)}",
            commit_description=card_pr_body(result, base_models, relation),
            create_pr=True,
            parent_commit=result.sha,  # the commit the evidence is about; the Hub refuses if main moved
        ),
    )
    return note(action="opened", number=commit.pr_num, reason=f"base_model: {', '.join(base_models)}")


def _card_with_base_model(
    api: HfApi, repo_id: str, sha: str, base_models: Sequence[str], relation: str, *, budget: Budget
) -> str:
    """The README at ``sha`` with ``base_model`` / ``base_model_relation`` set, every other key and the text kept.

    Raises:
        RemoteError: the README could not be read.
        ConfigError: its front matter is not a YAML mapping, or a base is not a Hub id.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    def fetch() -> str | None:
        try:
            return hf_hub_download(repo_id, "README.md", revision=sha, endpoint=api.endpoint, token=api.token)
        except EntryNotFoundError:
            return None  # no card yet: a new one holds only the metadata

    path = budget.call(f"{repo_id}: README.md", fetch)
    text = None if path is None else Path(path).read_text(encoding="utf-8")
    card = ModelCard.parse(text, where=f"{repo_id}: README.md")
    return card.with_lineage(base_models, relation=relation).render()
