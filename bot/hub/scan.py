"""The scheduled Hub scan: list candidates, read headers, pin the sha, fingerprint, compare, record.

For each candidate model version (``repo@sha`` from ``list_models``), cheapest checks first:

1. the state file already has it → reuse the result, no request at all;
2. ``model_info(files_metadata=True)`` at the pinned sha → file names and sizes. Only pickle weights
   (``.bin``/``.pt``/``.ckpt``), no ``config.json`` → skipped, nothing downloaded, nothing unpickled. A repo of
   GGUF files without safetensors is checked through one of them (``bot.hub.triage.gguf_to_check``): its header
   by Range, stage 1 on its token embedding's rows, and only that file downloaded for stage 2;
3. ``config.json`` alone → custom code (``auto_map``, unknown ``model_type``) → skipped (``trust_remote_code`` is
   never used);
4. each safetensors header through one Range request → parameters over ``--max-params``, or a header whose
   tensor offsets disagree with its shapes or with the file size the Hub reports → skipped before any weights;
5. the download must fit the remaining ``--max-download`` bytes, the run its ``--max-seconds``;
6. ``bot.sources.resolve`` downloads config, tokenizer and safetensors at that sha only, ``bot.engine`` fingerprints
   and compares; the declared ``base_model`` / ``base_model_relation`` are checked against the verdict.

No structural "cannot match" filter beyond these is applied: REEF compares across widths, depths and tokenizers,
so a shape-based filter would drop pruned or re-architected derivatives.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cards import base_model_ids, relation_for
from bot.errors import ConfigError, ModelLoadError, ReefguardError, RegistryError, RemoteError, UnsafeWeightsError
from bot.hub.client import Budget
from bot.hub.results import (
    OTHER_DECLARATION,
    UNDECLARED,
    WRONG_DECLARATION,
    Finding,
    ModelResult,
    ScanReport,
    ScanState,
    Status,
)
from bot.hub.results import sorted_results as _sorted

if TYPE_CHECKING:
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import ModelInfo

    from bot.hub.triage import RangeReader, TokenizerCache
    from bot.reef import ProbeSet, Report, WeightJudge
    from bot.registry import Registry

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based), chosen by a hash of the repo id, so every run agrees.

    Example:
        >>> str(Shard.parse("2/3"))
        '2/3'
        >>> [Shard(i, 3).owns("org/model") for i in (1, 2, 3)].count(True)  # exactly one shard owns a repo
        1
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """Parse ``i/N`` with ``1 <= i <= N``.

        Raises:
            ConfigError: any other text.
        """
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None or not 1 <= int(match[1]) <= int(match[2]):
            raise ConfigError(f"--shard {text!r}: use i/N with 1 <= i <= N, e.g. 1/4", key="shard")
        return cls(int(match[1]), int(match[2]))

    def owns(self, repo_id: str) -> bool:
        digest = hashlib.sha256(repo_id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which models ``list_models`` returns: newest first (``sort=last_modified``).

    Attributes:
        author: a user or org; search: a substring of the repo id; tags: Hub tags that must all be present,
            e.g. ``base_model:finetune:google/gemma-3-270m``.
        since: only models modified at or after this moment; limit: at most this many (before sharding).
    """

    author: str | None = None
    search: str | None = None
    tags: tuple[str, ...] = ()
    since: datetime | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A model version to scan, with what its card declares.

    Attributes:
        repo_id, sha: the model and the commit to pin.
        declared: ``base_model`` ids (card metadata, else the Hub's ``base_model:`` tags); relation: the
            declared ``base_model_relation``.
        gated, private: access flags.
    """

    repo_id: str
    sha: str
    declared: tuple[str, ...] = ()
    relation: str | None = None
    gated: bool = False
    private: bool = False

    @classmethod
    def from_info(cls, info: ModelInfo) -> Candidate:
        """The candidate a ``ModelInfo`` (from a listing or ``model_info``) describes.

        Raises:
            RemoteError: the Hub sent no commit sha.
        """
        if not info.sha:
            raise RemoteError(f"{info.id}: the Hub listed no commit sha; retry later", service="hub")
        card = info.card_data
        declared = base_model_ids(card.get("base_model") if card is not None else None)
        relation = card.get("base_model_relation") if card is not None else None
        if not declared:  # the Hub's model-tree tags: base_model:<id> and base_model:<relation>:<id>
            tags = [t.split(":", 1)[1] for t in info.tags or [] if t.startswith("base_model:")]
            declared = tuple(sorted({t.split(":")[-1] for t in tags}))
            relations = {t.split(":")[0] for t in tags if t.count(":") == 1}
            relation = relation or (relations.pop() if len(relations) == 1 else None)
        return cls(
            repo_id=info.id,
            sha=info.sha,
            declared=declared,
            relation=str(relation) if relation else None,
            gated=bool(info.gated),
            private=bool(info.private),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanOptions:
    """How each candidate is checked.

    Attributes:
        probes, dtype, batch_size, alpha: as for ``reefguard check``.
        max_params: skip models with more parameters (from the safetensors headers); None: no cap.
        source_repos: registry source name -> Hub repo id, to tell whether a declared ``base_model`` names it.
        cache_dir: the Hugging Face cache (default: huggingface_hub's).
        endpoint, token: the Hub.
        triage: run stage 1 (``bot.hub.triage``) first: a candidate unrelated on the weights read by Range is
            decided without downloading it; False downloads and fingerprints every candidate.
    """

    probes: str = "default"
    dtype: str = "float32"
    batch_size: int = 16
    alpha: float = 0.01
    max_params: int | None = None
    source_repos: Mapping[str, str] = dataclasses.field(default_factory=dict)
    cache_dir: Path | None = None
    endpoint: str | None = None
    token: str | None = None
    triage: bool = True


def parse_since(text: str) -> datetime:
    """A ``--since`` date or ISO timestamp as an aware UTC datetime.

    Raises:
        ConfigError: not ISO 8601.

    Example:
        >>> parse_since("2026-03-01")
        datetime.datetime(2026, 3, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError as e:
            raise ConfigError(f"--since {text!r}: use an ISO date (2026-03-01) or timestamp", key="since") from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def source_repo_map(registry: Registry, explicit: Mapping[str, str] | None = None) -> dict[str, str]:
    """Registry source name -> Hub repo id.

    An entry's ``hub_id`` (set at ``fingerprint --hub-id`` or ``registry set NAME --hub-id``) names its repo; an
    older entry fingerprinted from the Hub (``model`` is ``org/name@rev``) maps to that repo. ``explicit``
    (``--source-repo NAME=ORG/REPO``) adds or overrides. Entries made from local files without a ``hub_id`` map to
    nothing unless named.

    Raises:
        ConfigError: an explicit name that is not in the registry, or a value that is not a repo id.
    """
    from bot.sources import ModelSource, parse_hub_id

    names = set(registry.names())
    mapping: dict[str, str] = {}
    for fp in registry:
        if fp.hub_id is not None:
            mapping[fp.name] = fp.hub_id
            continue
        try:
            reference = ModelSource.parse(fp.model)
        except ConfigError:
            continue
        if reference.kind == "hub":
            mapping[fp.name] = reference.ref
    for name, repo in (explicit or {}).items():
        if name not in names:
            raise ConfigError(f"--source-repo {name}={repo}: no registry entry named {name!r}", key="source-repo")
        mapping[name] = parse_hub_id(repo, key=f"--source-repo {name}")
    return mapping


def list_candidates(api: HfApi, selection: Selection, *, budget: Budget) -> list[Candidate]:
    """The models ``selection`` names, newest first, each pinned to the sha the listing reported.

    A listing that fails after its first models (a garbled or cut-off page, a timeout) keeps what it got: the
    failure is logged and recorded as ``budget.stopped``, so the report says the list is incomplete. An item
    without a commit sha is left out with a warning.

    Raises:
        RemoteError: the Hub failed beyond the budget's retries before listing anything.
    """
    expand: Any = ["author", "sha", "lastModified", "tags", "cardData", "gated", "private"]
    found: list[Candidate] = []

    def listing() -> None:
        found.clear()  # a retried call starts again from the first page
        for info in api.list_models(
            author=selection.author,
            search=selection.search,
            filter=list(selection.tags) or None,
            sort="last_modified",
            limit=selection.limit,
            expand=expand,
        ):
            modified = info.last_modified
            if selection.since is not None and modified is not None and modified < selection.since:
                break  # newest first: everything after is older
            try:
                found.append(Candidate.from_info(info))
            except RemoteError as e:
                logger.warning("%s", e)

    try:
        budget.call("listing models", listing)
    except RemoteError as e:
        if not found:
            budget.stopped = budget.stopped or f"the listing failed: {e}"
            raise
        budget.stopped = budget.stopped or f"the listing stopped after {len(found)} models: {e}"
        logger.warning("%s", budget.stopped)
    logger.info("%d candidate models listed", len(found))
    return list(found)


def candidate_at(api: HfApi, repo_id: str, revision: str | None, *, budget: Budget) -> Candidate:
    """The candidate for one repo at one revision (what a webhook names).

    Raises:
        RemoteError: the Hub failed; ModelLoadError-free: a missing repo is a RemoteError with status 404.
    """
    info = budget.call(f"{repo_id}: model info", lambda: api.model_info(repo_id, revision=revision))
    return Candidate.from_info(info)


@dataclass(frozen=True, slots=True)
class Stage1:
    """What stage 1 shares across a scan's candidates: the sources' weight nulls, the tokenizer cache, the probes."""

    judge: WeightJudge
    tokenizers: TokenizerCache
    probes: ProbeSet

    @classmethod
    def prepare(cls, registry: Registry, options: ScanOptions) -> Stage1:
        """Load the registry's weight nulls and the probes once (``ConfigError`` for a bad probe set)."""
        from huggingface_hub import constants

        from bot.hub.triage import TokenizerCache
        from bot.reef import WeightJudge, load_probes

        root = (options.cache_dir or Path(constants.HF_HUB_CACHE)) / "reefguard-tokenizers"
        return cls(WeightJudge(registry), TokenizerCache(root), load_probes(options.probes))


def scan(
    api: HfApi,
    candidates: Sequence[Candidate],
    *,
    registry: Registry,
    state: ScanState,
    options: ScanOptions,
    budget: Budget,
    shard: Shard | None = None,
    on_result: Callable[[ModelResult], None] | None = None,
) -> ScanReport:
    """Check every candidate this shard owns, reusing and extending ``state``; never raises for one model.

    Args:
        api: the Hub client.
        candidates: from ``list_candidates`` (all shards see the same list).
        registry: the fingerprints to compare with.
        state: results already known; each new final result is saved into it before the next model starts.
        options: how to check.
        budget: caps; when time runs out the rest is reported as not reached (status error, retried next run).
        shard: this run's share, or None for all.
        on_result: called with each new result (progress output).

    Returns:
        The report of this run's candidates.
    """
    owned = [c for c in candidates if shard is None or shard.owns(c.repo_id)]
    fresh = [c for c in owned if state.done(c.repo_id, c.sha) is None]
    stage1 = Stage1.prepare(registry, options) if options.triage and fresh else None
    results: list[ModelResult] = []
    reused = 0
    for candidate in owned:
        known = state.done(candidate.repo_id, candidate.sha)
        if known is not None:
            results.append(known)
            reused += 1
            continue
        if budget.out_of_time():
            budget.stopped = budget.stopped or f"time budget of {budget.max_seconds:.0f} s reached"
            result = _result(candidate, Status.ERROR, "not reached: the run's time budget ran out")
        else:
            result = check_candidate(api, candidate, registry=registry, options=options, budget=budget,
                                     stage1=stage1)  # fmt: skip
            state.record(result)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return ScanReport(
        shards=(str(shard),) if shard else ("all",),
        results=_sorted(results),
        reused=reused,
        usage=budget.usage(),
    )


def _result(candidate: Candidate, status: Status, reason: str, **fields: Any) -> ModelResult:
    return ModelResult(
        repo_id=candidate.repo_id,
        sha=candidate.sha,
        status=status,
        reason=reason,
        declared=candidate.declared,
        relation=candidate.relation,
        gated=candidate.gated,
        private=candidate.private,
        **fields,
    )


def check_candidate(
    api: HfApi,
    candidate: Candidate,
    *,
    registry: Registry,
    options: ScanOptions,
    budget: Budget,
    stage1: Stage1 | None = None,
) -> ModelResult:
    """Inspect, triage (stage 1, when ``stage1`` is given), fingerprint and compare (stage 2) one model version.

    Every failure becomes a skip or error result, a defect met on this model's files too (logged with its
    traceback, retried next run); only the run's own settings or registry (``ConfigError``, ``RegistryError``)
    stop the scan. A checked result says which stage decided and the bytes each stage read (stage 1: config,
    headers, tokenizer when not cached, anchor rows; stage 2: the download). No text of the result names a folder
    of the scanning machine (``_without_local_paths``).
    """
    try:
        result = _check(api, candidate, registry=registry, options=options, budget=budget, stage1=stage1)
    except (ConfigError, RegistryError):
        raise
    except Exception as e:  # one model must not stop a scan of thousands, nor every later run at the same model
        logger.exception("%s@%s: unexpected error", candidate.repo_id, candidate.sha[:12])
        result = _result(candidate, Status.ERROR, f"unexpected {type(e).__name__} ({e}); retried next run")
    return _without_local_paths(result, options)


def _without_local_paths(result: ModelResult, options: ScanOptions) -> ModelResult:
    """``result`` with the scanner's cache folders in its texts replaced by what they hold.

    The reasons and evidence go into the published report and the job summary, where a path of the scanning
    machine means nothing to a reader and tells more than it should: the candidate's snapshot folder becomes
    ``repo@sha``, any other place in the cache ``<cache>``.
    """
    from huggingface_hub import constants

    cache = options.cache_dir or Path(constants.HF_HUB_CACHE)
    replacements = []
    for root in dict.fromkeys((str(cache), str(cache.resolve()))):  # as given, and with links resolved
        folder = f"models--{result.repo_id.replace('/', '--')}"
        replacements += [(f"{root}/{folder}/snapshots/{result.sha}", f"{result.repo_id}@{result.sha[:12]}"),
                         (root, "<cache>")]  # fmt: skip

    def scrub(text: str) -> str:
        for local, public in replacements:
            text = text.replace(local, public)
        return text

    evidence = result.evidence_markdown
    return dataclasses.replace(result, reason=scrub(result.reason),
                               evidence_markdown=None if evidence is None else scrub(evidence))  # fmt: skip


def _check(
    api: HfApi,
    candidate: Candidate,
    *,
    registry: Registry,
    options: ScanOptions,
    budget: Budget,
    stage1: Stage1 | None,
) -> ModelResult:
    from bot.hub.triage import RangeReader, gguf_to_check, triage

    reader = RangeReader(api, candidate.repo_id, candidate.sha, token=options.token, budget=budget)
    downloaded = 0
    try:
        plan = inspect_candidate(api, candidate, options=options, budget=budget, reader=reader,
                                 check_params=stage1 is None)  # fmt: skip
        if isinstance(plan, str):
            return _result(candidate, Status.SKIPPED, plan)
        why_full = _needs_full_check(candidate, options) if stage1 is not None else "stage 1 is off"
        if stage1 is not None and why_full is None:
            _check_time(budget, "before stage 1")
            call = triage(reader, reader.sizes, reader.blob_ids, judge=stage1.judge, tokenizers=stage1.tokenizers,
                          probes=stage1.probes, batch_size=options.batch_size)  # fmt: skip
            budget.triage_bytes += call.bytes_read
            if call.decided:
                return _result(candidate, Status.CHECKED, f"unrelated: {call.reason} (stage 1, by Range)",
                               verdict="unrelated", stage=1, stage_bytes=(call.bytes_read,))  # fmt: skip
            why_full = call.reason
            logger.info(
                "%s@%s: stage 1 leaves it to the full check: %s", candidate.repo_id, candidate.sha[:12], why_full
            )
        n_params = reader.parameters()
        if stage1 is not None and options.max_params is not None and n_params > options.max_params:
            return _result(candidate, Status.SKIPPED, f"{n_params:,} parameters > --max-params "
                           f"{options.max_params:,}; stage 1 did not clear it ({why_full}); weights not downloaded",
                           stage_bytes=(reader.bytes_read,))  # fmt: skip
        left = budget.bytes_left()
        if left is not None and plan > left:
            budget.stopped = budget.stopped or "download budget reached"
            reason = f"needs {plan} bytes, {left} left of the run's download budget; retried next run"
            return _result(candidate, Status.ERROR, reason)
        budget.download_bytes += plan
        downloaded = plan
        _check_time(budget, "before the download")
        report = _fingerprint_and_compare(candidate, gguf_to_check(reader.sizes), registry=registry, options=options,
                                          budget=budget)  # fmt: skip
    except UnsafeWeightsError as e:
        return _result(candidate, Status.SKIPPED, f"refused: {e}", stage_bytes=_bytes_read(reader, downloaded))
    except ModelLoadError as e:
        return _result(candidate, Status.SKIPPED, str(e), stage_bytes=_bytes_read(reader, downloaded))
    except RemoteError as e:
        if e.status == 404:  # the repo or the pinned revision went away after the listing
            return _result(candidate, Status.SKIPPED, f"gone from the Hub since it was listed: {e}")
        return _failed(candidate, e)
    except (ConfigError, RegistryError):
        raise  # the run's own settings or registry are at fault: every model would fail the same way
    except ReefguardError as e:
        return _failed(candidate, e)
    from bot.report import render_markdown, verdict_line

    findings = lineage_findings(report, declared=candidate.declared, source_repos=options.source_repos)
    return _result(
        candidate,
        Status.CHECKED,
        verdict_line(report),
        verdict=str(report.verdict),
        sources=report.sources,
        findings=findings,
        evidence_markdown=render_markdown(report) if findings else None,
        stage=2,
        stage_bytes=(reader.bytes_read, plan),
    )


def _bytes_read(reader: RangeReader, downloaded: int) -> tuple[int, ...]:
    """What each stage read before a model was skipped: nothing, stage 1's reads, or those and the download."""
    if downloaded:
        return (reader.bytes_read, downloaded)
    return (reader.bytes_read,) if reader.bytes_read else ()


def _failed(candidate: Candidate, error: ReefguardError) -> ModelResult:
    """An error result: every one is retried by the next run, and its reason says so in the same words."""
    said = str(error).removesuffix("; retry later").removesuffix("; retried next run")
    return _result(candidate, Status.ERROR, f"{said}; retried next run")


def _needs_full_check(candidate: Candidate, options: ScanOptions) -> str | None:
    """Why a candidate skips stage 1, or None: a card naming a registry source needs the full check, whose
    verdict is compared with the declaration (an "unrelated" would be a wrong-declaration finding)."""
    named = {d.split("@", 1)[0].lower() for d in candidate.declared}
    sources = sorted(name for name, repo in options.source_repos.items() if repo.lower() in named)
    return f"declares registry source {', '.join(sources)}" if sources else None


def _check_time(budget: Budget, where: str) -> None:
    """Stop a model half-way when the run's time is up (the model is retried by the next run).

    Raises:
        RemoteError: ``--max-seconds`` is spent.
    """
    if budget.out_of_time():
        budget.stopped = budget.stopped or f"time budget of {budget.max_seconds:.0f} s reached"
        raise RemoteError(f"the run's time budget ran out {where}; retried next run", service="hub")


def inspect_candidate(
    api: HfApi,
    candidate: Candidate,
    *,
    options: ScanOptions,
    budget: Budget,
    reader: RangeReader | None = None,
    check_params: bool = True,
) -> int | str:
    """Bytes to download for this candidate, or the reason to skip it; reads metadata and headers only.

    Args:
        reader: reads the safetensors headers by Range and counts the bytes; it keeps the headers, the file
            sizes and blob ids for stage 1 (``bot.hub.triage``). A fresh one by default.
        check_params: skip a model over ``options.max_params``; False leaves that to the caller (stage 1 reads a
            big model's anchor rows; only its full download is capped).

    Raises:
        RemoteError: the Hub failed (or the budget ran out); UnsafeWeightsError: the config needs custom code;
        ModelLoadError: the config is unreadable.
    """
    from bot.hub.triage import RangeReader, blob_ids_of, gguf_to_check, read_header
    from bot.sources import HUB_FILES

    repo, sha = candidate.repo_id, candidate.sha
    reader = reader or RangeReader(api, repo, sha, token=options.token, budget=budget)
    info = budget.call(f"{repo}@{sha}: model info", lambda: api.model_info(repo, revision=sha, files_metadata=True))
    sizes = {s.rfilename: s.size or 0 for s in info.siblings or []}
    reader.sizes, reader.blob_ids = sizes, blob_ids_of(info)
    gguf = gguf_to_check(sizes)
    if gguf is not None:
        return _inspect_gguf(reader, gguf, options=options, check_params=check_params)
    weights = sorted(name for name in sizes if name.endswith(".safetensors"))
    if not weights:
        pickles = sorted(name for name in sizes if name.endswith(PICKLE_SUFFIXES))
        if pickles:
            return (f"only pickle weights ({', '.join(pickles[:3])}): never downloaded or unpickled; "
                    "ask the owner for safetensors")  # fmt: skip
        if any(name.endswith(".gguf") for name in sizes):
            return "GGUF weights only in split or projector files, which reefguard does not load"
        return "no weights in the repo"
    if "config.json" not in sizes:
        return "no config.json: not a transformers model folder"
    _check_config(repo, sha, options=options, budget=budget)
    reader.bytes_read += sizes["config.json"]  # fetched by hf_hub_download, counted as the Hub sized it
    n_params = 0
    for name in weights:
        try:
            header = read_header(reader, name, sizes[name])
        except ModelLoadError as e:
            said = str(e).removeprefix(f"{repo}@{sha}: {name}: ").splitlines()[0][:200]
            return f"{name}: bad safetensors header ({said}); weights not downloaded"
        n_params += sum(t.n_values for t in header.tensors.values())
    if check_params and options.max_params is not None and n_params > options.max_params:
        return f"{n_params:,} parameters > --max-params {options.max_params:,}; weights not downloaded"
    return sum(size for name, size in sizes.items() if any(fnmatch.fnmatch(name, p) for p in HUB_FILES))


def _inspect_gguf(reader: RangeReader, gguf: str, *, options: ScanOptions, check_params: bool) -> int | str:
    """``inspect_candidate`` for a repo of GGUF files: the header of the one it checks (``gguf_to_check``) by
    Range, its parameters against ``--max-params``; the download is that file alone."""
    from bot.hub.triage import read_gguf

    try:
        read_gguf(reader, gguf, reader.sizes[gguf])
    except ModelLoadError as e:
        said = str(e).removeprefix(f"{reader.repo_id}@{reader.sha}: ").splitlines()[0][:200]
        return f"{said}; weights not downloaded"
    n_params = reader.parameters()
    if check_params and options.max_params is not None and n_params > options.max_params:
        return f"{n_params:,} parameters > --max-params {options.max_params:,}; weights not downloaded"
    return reader.sizes[gguf]


def _check_config(repo: str, sha: str, *, options: ScanOptions, budget: Budget) -> None:
    """Download config.json alone (through ``bot.sources``) and refuse custom code before any weights come.

    Raises:
        UnsafeWeightsError: the config needs ``trust_remote_code``.
        ModelLoadError: no readable config.
    """
    from bot.reef import read_config
    from bot.sources import ModelSource, download_file

    source = ModelSource(kind="hub", ref=repo, revision=sha)
    path = budget.call(
        f"{repo}@{sha}: config.json",
        lambda: download_file(
            source, "config.json", cache_dir=options.cache_dir, endpoint=options.endpoint, token=options.token
        ),
    )
    read_config(path.parent)


def _fingerprint_and_compare(
    candidate: Candidate, gguf: str | None, *, registry: Registry, options: ScanOptions, budget: Budget
) -> Report:
    """Download the pinned files (the model folder, or the one GGUF file ``gguf``), fingerprint them and compare
    with the registry (retried on 429/5xx)."""
    from bot.engine import compare, default_name, fingerprint
    from bot.sources import ModelSource, download_file, resolve

    source = ModelSource(kind="hub", ref=candidate.repo_id, revision=candidate.sha)

    def download() -> Path:
        cache, endpoint, token = options.cache_dir, options.endpoint, options.token
        if gguf is None:
            return resolve(source, cache_dir=cache, endpoint=endpoint, token=token).path
        return download_file(source, gguf, cache_dir=cache, endpoint=endpoint, token=token)

    path = budget.call(f"{source}: download", download)
    _check_time(budget, "after the download, before the fingerprint")
    fp = fingerprint(
        str(path),
        name=default_name(source),
        probes=options.probes,
        dtype=options.dtype,
        batch_size=options.batch_size,
    )
    # Fingerprinted from the cache folder; record what it is: the repo at the pinned commit.
    fp = dataclasses.replace(fp, model=str(source), revision=candidate.sha)
    return compare(fp, registry, alpha=options.alpha)


def lineage_findings(
    report: Report, *, declared: Sequence[str], source_repos: Mapping[str, str]
) -> tuple[Finding, ...]:
    """Compare declared lineage with the verdict, one finding per source the two disagree about.

    - derived or merged from a source whose repo no ``base_model`` names: ``UNDECLARED`` when the card declares
      no base, ``OTHER_DECLARATION`` when it declares other bases;
    - a declared ``base_model`` that maps to a registry source the fingerprints call unrelated:
      ``WRONG_DECLARATION``.
    """
    from bot.reef import Verdict
    from bot.report import evidence_summary

    named = {d.split("@", 1)[0].lower() for d in declared}
    by_source = {match.source: match for match in report.matches}
    findings = []
    if report.verdict in (Verdict.DERIVED, Verdict.MERGED):
        relation = relation_for(str(report.verdict), n_bases=len(report.sources))
        for source in report.sources:
            repo = source_repos.get(source)
            if repo is not None and repo.lower() in named:
                continue
            match = by_source.get(source)
            evidence = f" ({evidence_summary(match)})" if match else ""
            if declared:
                kind = OTHER_DECLARATION
                detail = f"declares {', '.join(declared)}, but the fingerprints say {report.verdict} from {source}"
            else:
                kind = UNDECLARED
                detail = f"{report.verdict} from {source}, no base_model declared"
            findings.append(Finding(kind=kind, source=source, source_repo=repo, relation=relation,
                                    detail=detail + evidence))  # fmt: skip
    for source, repo in sorted(source_repos.items()):
        match = by_source.get(source)
        if repo.lower() in named and match is not None and match.verdict is Verdict.UNRELATED:
            detail = f"declares {repo}, but the fingerprints say unrelated to {source} ({evidence_summary(match)})"
            findings.append(Finding(kind=WRONG_DECLARATION, source=source, source_repo=repo,
                                    relation=relation_for("derived"), detail=detail))  # fmt: skip
    return tuple(findings)
