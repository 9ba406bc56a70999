"""Weight evidence on the demo's trained models: fine-tunes, merges and look-alikes, decided by the weights."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bot.errors import RegistryError
from bot.reef.fingerprint import Fingerprint, fingerprint_model
from bot.reef.loading import load_model
from bot.reef.probes import ProbeSet
from bot.reef.verdict import WEIGHT_FLOOR, Evidence, Verdict, WeightJudge, compare
from bot.reef.weights import MIN_SHARED, Anchors, align
from bot.registry import ANCHOR_ROWS_FILE, ANCHOR_TOKENS_FILE, Registry
from tests.builders import DEMO_MODELS, copy_tokenizer

REFERENCES = ("ref-gpt2-code", "ref-qwen2-code", "ref-llama-prose", "ref-gpt2-code-b", "ref-llama-code",
              "ref-qwen2-prose")  # fmt: skip


def linear_merge(first: Path, second: Path, share: float, folder: Path) -> Path:
    """Every tensor ``share * first + (1 - share) * second``, as mergekit's linear method writes it."""
    from transformers import AutoModelForCausalLM

    a, b = (AutoModelForCausalLM.from_pretrained(path) for path in (first, second))
    state = b.state_dict()
    a.load_state_dict({name: share * value + (1 - share) * state[name] for name, value in a.state_dict().items()})
    a.save_pretrained(folder)
    copy_tokenizer(first, folder)
    return folder


def rotated(model: Path, seed: int, folder: Path) -> Path:
    """``model`` with its residual stream rotated by a random orthogonal matrix (the lineage zoo's recipe)."""
    import torch
    from transformers import AutoModelForCausalLM

    from bench.zoo import random_rotation, rotate_residual

    loaded = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    rotation = random_rotation(loaded.config.hidden_size, seed, keep_mean=loaded.config.model_type == "gpt2")
    rotate_residual(loaded, rotation).save_pretrained(folder)
    copy_tokenizer(model, folder)
    return folder


@pytest.fixture(scope="module")
def fingerprints(few_probes: ProbeSet, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Fingerprint]:
    """Every demo model, 0.6 / 0.4 and 0.5 / 0.5 merges of the two GPT-2 code models, and rotated copies of the
    fine-tune and of a Llama reference, on the first 32 probes."""
    merges = {
        f"merged-{share}": linear_merge(
            DEMO_MODELS / "ref-gpt2-code", DEMO_MODELS / "ref-gpt2-code-b", share, tmp_path_factory.mktemp("merge")
        )
        for share in (0.6, 0.5)
    }
    merges["rotated-finetune"] = rotated(DEMO_MODELS / "finetune", 1, tmp_path_factory.mktemp("rotated"))
    merges["rotated-llama"] = rotated(DEMO_MODELS / "ref-llama-prose", 2, tmp_path_factory.mktemp("rotated"))
    paths = {path.name: path for path in DEMO_MODELS.iterdir() if path.is_dir()} | merges
    return {
        name: fingerprint_model(load_model(path), few_probes, name=name, model=str(path))
        for name, path in paths.items()
    }


def registry(fps: dict[str, Fingerprint], sources: tuple[str, ...]) -> list[Fingerprint]:
    """The named sources, and every reference not among them as a reference."""
    return [
        *(fps[name] for name in sources),
        *(replace(fps[name], role="reference") for name in REFERENCES if name not in sources),
    ]


def test_a_fine_tune_is_derived_on_the_weights(fingerprints: dict[str, Fingerprint]) -> None:
    report = compare(fingerprints["finetune"], registry(fingerprints, ("source",)))
    assert report.verdict is Verdict.DERIVED and report.sources == ("source",)
    match = report.matches[0]
    assert match.evidence is Evidence.BOTH and match.weights is not None
    assert match.weights.score > 0.9 and match.weights.p_value is not None and match.weights.p_value < 1e-6
    assert match.p_fused == match.weights.p_value
    assert report.merge_coefficients["source"] == pytest.approx(1.0, abs=0.1)


def test_same_architecture_data_and_tokenizer_other_seed_is_not_derived(
    fingerprints: dict[str, Fingerprint],
) -> None:
    """The hardest negative: its weight score sits in the tail of a null without such a model, under the floor."""
    report = compare(fingerprints["ref-gpt2-code-b"], registry(fingerprints, ("ref-gpt2-code",)))
    match = report.matches[0]
    assert report.verdict is Verdict.INCONCLUSIVE and match.verdict is Verdict.INCONCLUSIVE
    assert match.evidence is Evidence.WEIGHTS and match.weights is not None
    assert match.weights.score < WEIGHT_FLOOR


@pytest.mark.parametrize("share", [0.6, 0.5])
def test_a_merge_of_two_unrelated_sources_names_both_with_their_shares(
    fingerprints: dict[str, Fingerprint], share: float
) -> None:
    sources = ("ref-gpt2-code", "ref-gpt2-code-b")
    report = compare(fingerprints[f"merged-{share}"], registry(fingerprints, sources))
    assert report.verdict is Verdict.MERGED
    assert set(report.sources) == set(sources)
    assert report.merge_coefficients["ref-gpt2-code"] == pytest.approx(share, abs=0.05)
    assert report.merge_coefficients["ref-gpt2-code-b"] == pytest.approx(1 - share, abs=0.05)
    assert report.merge_fit is not None and report.merge_fit > 0.95
    for match in report.matches[:2]:  # each judged on what the other leaves, where it is whole again
        assert match.weights is not None and match.weights.score > 0.95 and match.weights.net_of


@pytest.mark.parametrize(("suspect", "source"), [("rotated-finetune", "source"), ("rotated-llama", "ref-llama-prose")])
def test_a_rotated_copy_is_derived_on_the_geometry_of_its_weights(
    fingerprints: dict[str, Fingerprint], suspect: str, source: str
) -> None:
    """Norms folded, residual stream rotated (as SliceGPT or QuaRot publish): the units no longer pair up, the
    tokens' inner products are unchanged."""
    report = compare(fingerprints[suspect], registry(fingerprints, (source,)))
    assert report.verdict is Verdict.DERIVED and report.sources == (source,)
    weights = report.matches[0].weights
    assert weights is not None and weights.statistic == "geometry" and weights.score > 0.95
    assert weights.scores["units"] < WEIGHT_FLOOR
    assert weights.p_value is not None and weights.p_value < 1e-4


@pytest.mark.parametrize("share", [0.6, 0.5])
def test_a_merge_with_an_unregistered_model_names_its_source_share_and_an_unregistered_parent(
    fingerprints: dict[str, Fingerprint], share: float
) -> None:
    entries = [fp for fp in registry(fingerprints, ("ref-gpt2-code",)) if fp.name != "ref-gpt2-code-b"]
    report = compare(fingerprints[f"merged-{share}"], entries)
    assert report.verdict is Verdict.MERGED and report.sources == ("ref-gpt2-code",)
    assert report.merge_coefficients["ref-gpt2-code"] == pytest.approx(share, abs=0.1)
    assert report.unregistered_share == pytest.approx(1 - share, abs=0.1)
    assert "an unregistered parent" in report.reason


def test_a_rescaled_copy_is_derived_not_a_merge(fingerprints: dict[str, Fingerprint]) -> None:
    """Scaling the whole residual stream is function-preserving under RMSNorm: the rows shrink, nothing is added."""
    anchors = fingerprints["finetune"].anchors
    assert anchors is not None
    shrunk = replace(fingerprints["finetune"], name="shrunk", anchors=Anchors(anchors.tokens, 0.5 * anchors.rows))
    report = compare(shrunk, registry(fingerprints, ("source",)))
    assert report.verdict is Verdict.DERIVED and report.sources == ("source",)
    assert report.unregistered_share is None


def test_same_representations_without_the_weights_is_inconclusive(fingerprints: dict[str, Fingerprint]) -> None:
    """A distilled student computes like its teacher from weights of its own: not called derived."""
    teacher = fingerprints["source"]
    student = replace(fingerprints["finetune"], name="student", anchors=fingerprints["unrelated"].anchors)
    report = compare(student, [teacher, *registry(fingerprints, ())])
    match = report.matches[0]
    assert match.p_value is not None and match.p_value < 0.01  # the representations match
    assert report.verdict is Verdict.INCONCLUSIVE and "weights were not inherited" in report.reason


def test_permuted_rescaled_and_extended_copies_align_exactly(fingerprints: dict[str, Fingerprint]) -> None:
    anchors = fingerprints["source"].anchors
    assert anchors is not None
    order = np.random.default_rng(0).permutation(anchors.rows.shape[1])
    scales = np.linspace(0.5, 4.0, anchors.rows.shape[1]) * np.where(order % 2, 1.0, -1.0)
    moved = Anchors(
        ("<new-token>", *anchors.tokens), np.vstack([np.ones((1, len(order))), anchors.rows[:, order] * scales])
    )
    found = align(anchors, moved)
    assert found is not None and found.score == pytest.approx(1.0, abs=1e-6)
    assert np.array_equal(order[found.suspect_units], found.source_units)  # suspect unit j is source unit order[j]


def test_other_tokenizer_with_too_few_shared_tokens_gives_no_weight_evidence(
    fingerprints: dict[str, Fingerprint],
) -> None:
    anchors = fingerprints["source"].anchors
    assert anchors is not None
    few = Anchors(anchors.tokens[: MIN_SHARED - 1], anchors.rows[: MIN_SHARED - 1])
    assert align(anchors, few) is None
    report = compare(replace(fingerprints["finetune"], anchors=few), registry(fingerprints, ("source",)))
    assert report.matches[0].weights is None and report.matches[0].evidence is Evidence.REPRESENTATIONS
    assert report.verdict is Verdict.DERIVED


def test_registry_keeps_the_anchors(fingerprints: dict[str, Fingerprint], tmp_path: Path) -> None:
    store = Registry(tmp_path / "fingerprints")
    folder = store.add(fingerprints["source"])
    back = store.get("source")
    assert back == fingerprints["source"] and back.anchors is not None
    assert back.anchors.tokens == fingerprints["source"].anchors.tokens  # type: ignore[union-attr]
    assert np.array_equal(back.anchors.rows, fingerprints["source"].anchors.rows)  # type: ignore[union-attr]
    (folder / ANCHOR_TOKENS_FILE).unlink()
    with pytest.raises(RegistryError, match="unreadable registry entry"):
        store.get("source")


def test_an_entry_made_before_weight_evidence_is_checked_on_representations(
    fingerprints: dict[str, Fingerprint], tmp_path: Path
) -> None:
    store = Registry(tmp_path / "fingerprints")
    for entry in registry(fingerprints, ("source",)):
        store.add(entry)
    folder = tmp_path / "fingerprints" / "source"
    for name in (ANCHOR_TOKENS_FILE, ANCHOR_ROWS_FILE):
        (folder / name).unlink()
    old = replace(fingerprints["source"], anchors=None)
    meta = (folder / "meta.yaml").read_text().replace(fingerprints["source"].digest, old_digest(old))
    (folder / "meta.yaml").write_text(meta)
    report = compare(fingerprints["finetune"], store)
    assert report.verdict is Verdict.DERIVED
    assert report.matches[0].weights is None and report.matches[0].evidence is Evidence.REPRESENTATIONS
    shutil.rmtree(folder)


def old_digest(fp: Fingerprint) -> str:
    from bot.reef.fingerprint import fingerprint_digest

    return fingerprint_digest(fp.grams, fp.probe_basis, fp.probe_sha256)


def test_the_weight_judge_clears_an_independent_model_and_holds_back_a_derivative(
    fingerprints: dict[str, Fingerprint],
) -> None:
    """A Hub scan's first stage: the anchor rows alone, judged as ``compare`` judges them."""
    entries = registry(fingerprints, ("source",))
    judge = WeightJudge(entries)
    for name, unrelated in (("unrelated", True), ("finetune", False), ("rotated-finetune", False)):
        suspect = fingerprints[name]
        assert suspect.anchors is not None
        judgement = judge.judge(suspect.anchors)
        assert judgement.unrelated is unrelated, judgement.reason
        found, checked = judgement.evidence["source"], compare(suspect, entries).matches[0].weights
        assert found is not None and checked is not None and found.p_value == pytest.approx(checked.p_value)
    few = Anchors(("a", "b"), np.ones((2, 64), dtype=np.float32))
    assert not judge.judge(few).unrelated and "no calibrated weight evidence" in judge.judge(few).reason
