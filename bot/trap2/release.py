"""Re-release: a folder with the protected weights, the tokenizer and a model card that records the protection.

The card's YAML header carries the Hub's usual keys (``base_model`` and ``base_model_relation``, written by
``bot.cards`` like every other card; ``library_name``, ``tags``) and a ``reefguard`` block: the protection (Trap²),
the authorised scale (1.0), the LoRA scaling convention the scale refers to, the training objective's settings,
the base weights' sha256 and, when a verification report is given, its numbers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.cards import ModelCard, parse_hub_id, relation_for
from bot.errors import ConfigError, RemoteError
from bot.trap2.config import read_json_object
from bot.trap2.training import METADATA_FILE, read_metadata

if TYPE_CHECKING:
    from bot.trap2.verification import VerifyReport

logger = logging.getLogger(__name__)

CARD_SCHEMA_VERSION = 1
BASE_MODEL_FLAG = "--base-model-id"
WEIGHT_PATTERNS = ("adapter_model.safetensors", "adapter_config.json", "model*.safetensors",
                   "model.safetensors.index.json", "config.json", "generation_config.json")  # fmt: skip
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")  # fmt: skip


def card_metadata(metadata: dict[str, Any], *, base_model: str | None, report: VerifyReport | None) -> dict[str, Any]:
    """The model card's YAML header for an update folder's ``trap2.json`` (and a verification report).

    ``base_model`` is the base's Hub id (checked, and written with its relation, by ``bot.cards``); without one the
    header has no ``base_model`` (a local path there would mean nothing to the Hub or to a user, issue 15).

    Raises:
        ConfigError: ``base_model`` is not a Hub id.
    """
    config = metadata.get("config", {})
    form = metadata.get("form", "lora")
    block: dict[str, Any] = {
        "schema_version": CARD_SCHEMA_VERSION,
        "protection": metadata.get("protection", "trap2"),
        "form": form,
        "authorised_scale": float(metadata.get("authorised_scale", 1.0)),
        "objective": {k: config.get(k) for k in ("lam", "s_min", "s_max", "delta", "weight", "loss_cap")},
        "base_sha256": dict(metadata.get("base_sha256", {})),
    }
    if form == "lora":
        r, alpha = int(config.get("lora_r", 0)), int(config.get("lora_alpha", 0))
        block["lora_scaling"] = {
            "convention": "delta_W = (lora_alpha / r) * B @ A with the saved lora_alpha and r; rsLoRA off; "
            "the authorised scale multiplies delta_W (adapter weight / LoRA strength 1.0)",
            "r": r,
            "lora_alpha": alpha,
            "use_rslora": False,
            "alpha_over_r": alpha / r if r else None,
        }
    else:
        block["full_scaling"] = {"convention": "W = W0 + s * (W_released - W0); authorised s = 1.0"}
    if report is not None:
        block["verification"] = {
            "base_loss": round(report.base_loss, 4),
            "protected_loss": round(report.protected_loss, 4),
            "twin_loss": None if report.twin_loss is None else round(report.twin_loss, 4),
            "best_merge_loss": {
                method: round(best.loss, 4)
                for method in dict.fromkeys(m.method for m in report.merges)
                if (best := report.best(method, "protected")) is not None
            },
            "task_arithmetic_unprotected_lambdas": list(report.unprotected_lambdas()),
            "passed": report.passed,
        }
    keys = {
        "library_name": "peft" if form == "lora" else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["reefguard", "trap2", "merge-protected"],
        "reefguard": block,
    }
    card = ModelCard(metadata=keys)
    if base_model:
        card = card.with_lineage([base_model], relation=relation_for("derived", adapter=form == "lora"))
    return dict(card.metadata)


def render_card(metadata: dict[str, Any], *, base_model: str | None, report: VerifyReport | None) -> str:
    """The whole model card: YAML header, then what the protection means for users."""
    form = metadata.get("form", "lora")
    use = (
        "Load it with PEFT on its base at adapter weight 1.0 (`PeftModel.from_pretrained(base, path)`, or "
        "`merge_and_unload()` alone). Any other LoRA strength, a changed `lora_alpha`/rank scaling (rsLoRA), "
        "`set_adapters(..., weights=[w])` with w ≠ 1 moves it off its authorised scale and breaks it, by design."
        if form == "lora"
        else "Use the weights as released. Interpolating them with the base or other fine-tunes breaks them, by design."
    )
    body = [
        "# Trap²-protected update",
        "",
        "This update was trained with Trap² (Jang et al., ICML 2026, arXiv 2601.21898) by reefguard: it works at "
        "its released scale (1.0) and is trained to fail when rescaled, as model merging (averaging, task "
        "arithmetic, TIES, DARE) does.",
        "",
        use,
        "",
        "Limits: the protection does not stop distillation from the model's outputs, and a merge that keeps this "
        "update at exactly 1.0 while down-weighting the others is not broken by it (see the verification numbers "
        'and reefguard\'s docs/trap2.md, "Limits").',
    ]
    if report is not None:
        from bot.trap2.verification import PROTECTION_MARGIN, render_markdown

        if unprotected := report.unprotected_lambdas():
            body += ["", f"**Not protected**: task arithmetic with λ = {', '.join(f'{x:g}' for x in unprotected)} "
                     f"(merged with the other updates verified below, the loss on this update's task is less than "
                     f"{100 * PROTECTION_MARGIN:g} % above the base model's own)."]  # fmt: skip
        body += ["", render_markdown(report).replace("# Trap² verification", "## Verification", 1)]
    header = card_metadata(metadata, base_model=base_model, report=report)
    return ModelCard(metadata=header, text="\n" + "\n".join(body).rstrip() + "\n").render()


def write_release(
    update: Path,
    out: Path,
    *,
    base_model: str | None = None,
    report: VerifyReport | None = None,
    tokenizer_from: Path | None = None,
) -> Path:
    """Write a release folder: weights (safetensors), tokenizer, ``trap2.json`` and a ``README.md`` model card.

    Args:
        update: a folder written by ``protect`` (``protected/``).
        out: the release folder to create; it must not exist yet.
        base_model: the base's Hub id. It goes into the card's ``base_model``, ``adapter_config.json``'s
            ``base_model_name_or_path`` and ``trap2.json``'s ``base``, replacing the local path recorded at
            training (default: the card has no ``base_model`` and the adapter keeps the trainer's path, which only
            works on the trainer's machine; a warning says so).
        report: the verification report, whose numbers go into the card.
        tokenizer_from: a folder to take the tokenizer from if ``update`` has none (usually the base).

    Returns:
        ``out``.

    Raises:
        ConfigError: ``update`` has no safetensors weights or no ``trap2.json``; ``out`` already exists;
            ``base_model`` is not a Hub id; its ``adapter_config.json`` is not a JSON object.
    """
    metadata = read_metadata(update)
    if metadata is None:
        raise ConfigError(f"{update}: no {METADATA_FILE}; release folders are made from `reefguard protect` output")
    if not list(update.glob("*.safetensors")):
        raise ConfigError(f"{update}: no safetensors weights to release", path=update)
    if base_model is not None:
        base_model = parse_hub_id(base_model, key=BASE_MODEL_FLAG)
    if out.exists():
        raise ConfigError(f"{out}: already exists; choose a new release folder", path=out, key="--release")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then rename: a crash never leaves a half-written release behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for pattern in WEIGHT_PATTERNS:
            for file in sorted(update.glob(pattern)):
                shutil.copy2(file, staging / file.name)
        source = update if (update / "tokenizer_config.json").is_file() else tokenizer_from
        for name in TOKENIZER_FILES:
            if source is not None and (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        if base_model:
            # The trainer's local base path means nothing on a user's machine (issue 15): the release names the
            # base by its Hub id, so `PeftModel.from_pretrained` on a copy of the folder finds it.
            metadata = {**metadata, "base": base_model}
            _point_adapter_at(staging, base_model)
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        card = render_card(metadata, base_model=base_model, report=report)
        (staging / "README.md").write_text(card, encoding="utf-8")
        _make_readable(staging)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not base_model:
        logger.warning("%s names its base by the local path %s; pass the base's Hub id (--base-model-id) so users "
                       "can load it", out, metadata.get("base"))  # fmt: skip
    logger.info("release folder written to %s", out)
    return out


def _point_adapter_at(folder: Path, base_model: str) -> None:
    """Rewrite ``adapter_config.json``'s ``base_model_name_or_path`` (if the update is an adapter) to ``base_model``."""
    path = folder / "adapter_config.json"
    if not path.is_file():
        return
    config = read_json_object(path)
    config["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _make_readable(folder: Path) -> None:
    """A release is published: folder 0755, files 0644 (``mkdtemp`` makes the folder 0700, and ``copy2`` keeps
    whatever mode the trainer's files had)."""
    folder.chmod(0o755)
    for file in folder.iterdir():
        file.chmod(0o644)


def copy_release(folder: Path, destination: Path) -> Path:
    """Copy a release folder's files into ``destination`` (e.g. a checked-out model repository), overwriting."""
    shutil.copytree(folder, destination, dirs_exist_ok=True)
    return destination


def push_release(folder: Path, repo_id: str, *, api: Any, commit_message: str = "Trap²-protected release") -> str:
    """Upload a release folder to a Hub model repository (created if missing) and return the commit URL.

    Args:
        folder: the release folder.
        repo_id: ``org/name``.
        api: a ``huggingface_hub.HfApi`` (injected, so tests aim it at a local double).
        commit_message: the commit's message.

    Raises:
        RemoteError: the Hub refused the repository creation or the upload.
    """
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id=repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder),
                                   commit_message=commit_message)  # fmt: skip
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        raise RemoteError(f"{repo_id}: upload of {folder} failed ({status}); check the token's write access",
                          service="hub", status=status) from e  # fmt: skip
    return str(getattr(commit, "commit_url", commit))
