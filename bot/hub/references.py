"""The null made of real models: a committed list of public Hub base models, fingerprinted as references.

A source's p-value says how its score ranks among models unrelated to it (``bot.reef.verdict``, rule 2). Toy
models make a poor null for a real source: an unrelated 270M model can score far above any toy. The list
(``fingerprints/references.yaml`` by default) names public, ungated base models of several families and sizes,
each trained from scratch, so that none derives from another or from a registry source::

    schema_version: 1
    references:
      - name: ref-gpt2                  # the registry name of its entry
        repo: openai-community/gpt2     # the Hub repo
        revision: null                  # a 40-hex commit sha, or null: pin the default branch's sha when added
        family: gpt2                    # the pretraining lineage it stands for
        parameters: 124M                # as its card states (K/M/B suffixes)

``add_references`` fingerprints every model not yet in the registry as a ``role: reference`` entry at a pinned
commit: the listed sha, or, for ``revision: null``, the sha the default branch pointed at when it was added.
The entry records it (``model: org/name@<sha>``, ``revision: <sha>``), so the registry is pinned even where
the list is not. Entries already present (by name, or by the same repo under another name) are left alone:
a rerun adds only what is new, and ``reefguard hub add-references`` from a scheduled workflow opens a pull
request with just those.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bot.errors import ConfigError, ModelLoadError, RegistryError, RemoteError

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from bot.hub.client import Budget
    from bot.registry import Registry

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_KEYS = ("name", "repo", "revision", "family", "parameters")
_SHA = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceModel:
    """One public base model of the list.

    Attributes:
        name: the registry name of its entry.
        repo: the Hub repo id.
        revision: the commit sha to fingerprint, or None to pin the default branch's sha when added.
        family: the pretraining lineage it stands for (``gpt2``, ``qwen2.5``); parameters its size.
    """

    name: str
    repo: str
    revision: str | None
    family: str
    parameters: int


class Outcome(StrEnum):
    """What ``add_references`` did with one listed model."""

    ADDED = "added"  # fingerprinted and written to the registry
    PRESENT = "present"  # already in the registry: nothing fetched
    SKIPPED = "skipped"  # cannot be fingerprinted (pickles only, remote code, over --max-params); final
    FAILED = "failed"  # the Hub failed or the model did not load; retried by the next run


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceResult:
    """The outcome for one listed model; revision is the pinned sha (None when nothing was resolved)."""

    name: str
    repo: str
    outcome: Outcome
    revision: str | None
    reason: str


def load_reference_list(path: Path) -> tuple[ReferenceModel, ...]:
    """Read and check the reference list.

    Raises:
        ConfigError: unreadable YAML, another schema version, an unknown or missing key, a bad name, repo,
            revision or size, or a name or repo listed twice (the message names the file and the key path).
    """
    from bot.registry import check_name

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: no such reference list", path=path) from e
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{path}: unreadable YAML ({first})", path=path) from e
    if not isinstance(data, dict) or set(data) != {"schema_version", "references"}:
        raise ConfigError(f"{path}: expected the keys schema_version and references", path=path)
    if data["schema_version"] != SCHEMA_VERSION:
        raise ConfigError(f"{path}: schema_version {data['schema_version']!r}, expected {SCHEMA_VERSION}", path=path)
    if not isinstance(data["references"], list) or not data["references"]:
        raise ConfigError(f"{path}: references: expected a non-empty list", path=path, key="references")
    models = []
    for index, item in enumerate(data["references"]):
        where = f"references[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: {where}: expected a mapping", path=path, key=where)
        unknown, missing = set(item) - set(_KEYS), set(_KEYS) - set(item)
        if unknown or missing:
            raise ConfigError(f"{path}: {where}: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}",
                              path=path, key=where)  # fmt: skip
        models.append(_reference(item, path=path, where=where, check_name=check_name))
    for field in ("name", "repo"):
        values = [getattr(model, field).lower() for model in models]
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            raise ConfigError(f"{path}: {field} {', '.join(repeated)} listed twice", path=path, key=field)
    return tuple(models)


def _reference(item: dict[str, Any], *, path: Path, where: str, check_name: Callable[[str], str]) -> ReferenceModel:
    from bot.sizes import parse_parameters
    from bot.sources import parse_hub_id

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{path}: {where}.{key}: {why}", path=path, key=f"{where}.{key}")

    name, repo, revision, family, size = (item[key] for key in _KEYS)
    try:
        check_name(str(name))
    except ConfigError as e:
        raise bad("name", str(e)) from e
    if not isinstance(repo, str) or "/" not in repo:
        raise bad("repo", f"{repo!r} is not a Hub repo id (org/name)")
    try:
        repo = parse_hub_id(repo)
    except ConfigError as e:
        raise bad("repo", str(e)) from e
    if revision is not None and not (isinstance(revision, str) and _SHA.fullmatch(revision)):
        raise bad("revision", f"{revision!r}: use a 40-hex commit sha, or null to pin the default branch when added")
    if not isinstance(family, str) or not family.strip():
        raise bad("family", "name the pretraining lineage, e.g. gpt2")
    try:
        parameters = parse_parameters(str(size))
    except ConfigError as e:
        raise bad("parameters", f"{e}; e.g. 124M") from e
    return ReferenceModel(name=str(name), repo=repo, revision=revision, family=family.strip(), parameters=parameters)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferenceOptions:
    """How the references are fingerprinted: as the registry's sources were (same probes and dtype).

    Attributes:
        probes, dtype, batch_size: as for ``reefguard fingerprint``.
        max_params: skip larger models (read from their safetensors headers before any download).
        cache_dir: the Hugging Face cache; endpoint, token: the Hub.
    """

    probes: str = "default"
    dtype: str = "float32"
    batch_size: int = 16
    max_params: int | None = None
    cache_dir: Path | None = None
    endpoint: str | None = None
    token: str | None = None


def add_references(
    api: HfApi,
    references: Sequence[ReferenceModel],
    *,
    registry: Registry,
    options: ReferenceOptions,
    budget: Budget,
    on_result: Callable[[ReferenceResult], None] | None = None,
) -> list[ReferenceResult]:
    """Fingerprint every listed model the registry lacks as a ``reference`` entry at a pinned commit.

    Args:
        api: the Hub client.
        references: from ``load_reference_list``.
        registry: where entries go; one already present (same name, or same repo) is left as it is.
        options: probes, dtype and limits.
        budget: the run's caps (time, retries); a model the budget cannot reach is ``FAILED``.
        on_result: called with each outcome as it is known.

    Returns:
        One result per listed model, in list order. Never raises for one model.

    Raises:
        ConfigError, RegistryError: the run's own settings or registry are at fault (every model would fail).
    """
    results = []
    present = {fp.name: fp for fp in registry}
    by_repo = {fp.model.split("@", 1)[0].lower(): fp for fp in present.values()}
    for reference in references:
        known = present.get(reference.name) or by_repo.get(reference.repo.lower())
        if known is not None:
            result = _result(reference, Outcome.PRESENT, known.revision,
                             f"already in the registry as {known.name} ({known.model})")  # fmt: skip
        elif budget.out_of_time():
            budget.stopped = budget.stopped or f"time budget of {budget.max_seconds:.0f} s reached"
            result = _result(reference, Outcome.FAILED, None, "not reached: the run's time budget ran out")
        else:
            result = _add_one(api, reference, registry=registry, options=options, budget=budget)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


def _result(reference: ReferenceModel, outcome: Outcome, revision: str | None, reason: str) -> ReferenceResult:
    return ReferenceResult(name=reference.name, repo=reference.repo, outcome=outcome, revision=revision,
                           reason=reason)  # fmt: skip


def _add_one(
    api: HfApi, reference: ReferenceModel, *, registry: Registry, options: ReferenceOptions, budget: Budget
) -> ReferenceResult:
    from bot.engine import fingerprint
    from bot.hub.scan import Candidate, ScanOptions, inspect_candidate

    repo, sha = reference.repo, reference.revision
    try:
        if sha is None:
            info = budget.call(f"{repo}: model info", lambda: api.model_info(repo))
            if not info.sha:
                raise RemoteError(f"{repo}: the Hub sent no commit sha; retry later", service="hub")
            sha = info.sha
        scan_options = ScanOptions(max_params=options.max_params, cache_dir=options.cache_dir,
                                   endpoint=options.endpoint, token=options.token)  # fmt: skip
        plan = inspect_candidate(api, Candidate(repo_id=repo, sha=sha), options=scan_options, budget=budget)
        if isinstance(plan, str):
            return _result(reference, Outcome.SKIPPED, sha, plan)
        # Not through budget.call: the fingerprint's own failures are ours (bot.sources translates the Hub's).
        fp = fingerprint(
            f"{repo}@{sha}",
            name=reference.name,
            role="reference",
            probes=options.probes,
            dtype=options.dtype,
            batch_size=options.batch_size,
            endpoint=options.endpoint,
            token=options.token,
        )
    except ModelLoadError as e:  # UnsafeWeightsError included: pickles, remote code
        return _result(reference, Outcome.SKIPPED, sha, str(e))
    except RemoteError as e:
        return _result(reference, Outcome.FAILED, sha, str(e))
    except (ConfigError, RegistryError):
        raise
    registry.add(dataclasses.replace(fp, hub_id=repo))  # what a card's base_model would name (issue 15)
    logger.info("added %s (%s@%s) as a reference", reference.name, repo, sha)
    return _result(reference, Outcome.ADDED, sha, f"{fp.architecture}, {fp.n_layers} blocks, width {fp.hidden_size}")
