"""The calibrated decision: alignment rule, null, p-values and the four verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from bot.errors import ConfigError, RegistryError
from bot.reef.fingerprint import Fingerprint
from bot.reef.verdict import MIN_NULL, Verdict, aligned_score, compare, pair_grid, relative_depths
from bot.reef.verdict.nulls import holm
from tests.builders import synthetic_fingerprint

M, K, D, LAYERS = 96, 24, 48, 4
RNG = np.random.default_rng(7)
SHARED = RNG.standard_normal((M, K))  # what every model sees: the probes themselves


def latent(rng: np.random.Generator) -> np.ndarray:
    """A model's own view of the probes: partly shared (same inputs), partly its own."""
    return 0.6 * SHARED + 0.8 * rng.standard_normal((M, K))


def states_from(u: np.ndarray, rng: np.random.Generator, *, layers: int = LAYERS) -> np.ndarray:
    return np.stack([np.tanh(u @ rng.standard_normal((K, D)) / np.sqrt(K)) for _ in range(layers)])


def model(name: str, seed: int, **kwargs: object) -> tuple[np.ndarray, Fingerprint]:
    rng = np.random.default_rng(seed)
    u = latent(rng)
    return u, synthetic_fingerprint(name, states_from(u, rng), **kwargs)  # type: ignore[arg-type]


def references(n: int) -> list[Fingerprint]:
    return [model(f"ref-{i}", 100 + i, role="reference")[1] for i in range(n)]


def derivative(u: np.ndarray, name: str, seed: int, *, noise: float = 0.15) -> Fingerprint:
    rng = np.random.default_rng(seed)
    return synthetic_fingerprint(name, states_from(u + noise * rng.standard_normal(u.shape), rng))


def same_projection_derivative(name: str, source_seed: int, noise_seed: int) -> Fingerprint:
    """The source's own layers, perturbed: what fine-tuning does to a model."""
    rng = np.random.default_rng(source_seed)
    u = latent(rng)
    base = states_from(u, rng)
    noise = np.random.default_rng(noise_seed).standard_normal(base.shape)
    return synthetic_fingerprint(name, base + 0.1 * noise)


def test_fine_tune_is_derived_from_its_source() -> None:
    _, source = model("src", 1)
    report = compare(same_projection_derivative("suspect", 1, 99), [source, *references(6)])
    assert report.verdict is Verdict.DERIVED
    assert report.sources == ("src",)
    match = report.matches[0]
    assert match.source == "src" and match.n_null == 6
    assert match.p_adjusted is not None and match.p_adjusted < 0.01
    assert match.score > 0.9


def test_independent_model_is_unrelated() -> None:
    _, source = model("src", 1)
    _, suspect = model("suspect", 55)
    report = compare(suspect, [source, *references(6)])
    assert report.verdict is Verdict.UNRELATED
    assert report.sources == ()
    assert report.matches[0].p_value is not None and report.matches[0].p_value > 0.1


def test_two_unrelated_sources_give_merged() -> None:
    rng = np.random.default_rng(5)
    ua, ub = latent(rng), latent(rng)
    a = synthetic_fingerprint("a", states := states_from(ua, np.random.default_rng(11)))
    b = synthetic_fingerprint("b", states_b := states_from(ub, np.random.default_rng(12)))
    suspect = synthetic_fingerprint("suspect", np.concatenate([states, states_b], axis=2))
    report = compare(suspect, [a, b, *references(6)])
    assert report.verdict is Verdict.MERGED
    assert set(report.sources) == {"a", "b"}


def test_declared_relatives_count_as_one_family() -> None:
    u, base = model("base", 1)
    chat = synthetic_fingerprint("base-chat", states_from(u, np.random.default_rng(1)) * 1.0, related=("base",))
    suspect = same_projection_derivative("suspect", 1, 42)
    report = compare(suspect, [base, chat, *references(6)])
    assert report.verdict is Verdict.DERIVED
    assert len(report.sources) == 1


def kind_of_model(name: str, seed: int, common: np.ndarray, weight: float, role: str = "source") -> Fingerprint:
    """A model whose view of the probes shares ``weight`` of ``common``: models of one kind share one common."""
    rng = np.random.default_rng(seed)
    u = weight * common + np.sqrt(1 - weight**2) * rng.standard_normal((M, K))
    return synthetic_fingerprint(name, states_from(u, rng), role=role)


def test_significant_but_under_the_null_ceiling_is_inconclusive() -> None:
    # Two unrelated models of a kind the references do not cover (real LMs against a registry of toys): each
    # is far out in the tail of the other's toy null, yet less alike than two toys are.
    real = np.random.default_rng(8).standard_normal((M, K))
    source, suspect = kind_of_model("real-a", 1, real, 0.6), kind_of_model("real-b", 2, real, 0.6)
    toys = [kind_of_model(f"toy-{i}", 100 + i, SHARED, 0.85, role="reference") for i in range(6)]
    report = compare(suspect, [source, kind_of_model("toy-source", 3, SHARED, 0.85), *toys])
    match = next(m for m in report.matches if m.source == "real-a")
    assert match.p_adjusted is not None and match.p_adjusted < 0.01
    assert report.null_ceiling is not None and match.score < report.null_ceiling
    assert match.verdict is Verdict.INCONCLUSIVE and report.verdict is Verdict.INCONCLUSIVE
    assert "null ceiling" in report.reason


def test_too_small_a_null_is_inconclusive() -> None:
    _, source = model("src", 1)
    report = compare(same_projection_derivative("suspect", 1, 3), [source, *references(MIN_NULL - 1)])
    assert report.verdict is Verdict.INCONCLUSIVE
    assert report.matches[0].p_value is None and report.matches[0].n_null == MIN_NULL - 1


def test_empty_registry_is_inconclusive() -> None:
    report = compare(model("suspect", 2)[1], references(4))
    assert report.verdict is Verdict.INCONCLUSIVE
    assert "no sources" in report.reason


def test_a_registered_suspect_is_not_its_own_null() -> None:
    _, source = model("src", 1)
    refs = references(5)
    report = compare(refs[0], [source, *refs])
    assert report.matches[0].n_null == 4  # src's null: the other four references, not the suspect itself


def test_entry_made_with_other_probes_is_an_error() -> None:
    _, source = model("src", 1, probe_sha256="f" * 64)
    with pytest.raises(RegistryError, match="re-fingerprint"):
        compare(model("suspect", 2)[1], [source, *references(4)])


def test_unknown_measure_and_bad_alpha() -> None:
    suspect = model("suspect", 2)[1]
    with pytest.raises(ConfigError, match="unknown measure"):
        compare(suspect, references(4), measure="cosine")
    with pytest.raises(ConfigError, match="alpha"):
        compare(suspect, references(4), alpha=1.5)


@pytest.mark.parametrize("measure", ["linear", "debiased", "rbf"])
def test_every_measure_reaches_the_same_verdicts(measure: str) -> None:
    _, source = model("src", 1)
    registry = [source, *references(6)]
    assert compare(same_projection_derivative("d", 1, 9), registry, measure=measure).verdict is Verdict.DERIVED
    assert compare(model("u", 77)[1], registry, measure=measure).verdict is Verdict.UNRELATED


def test_alignment_pairs_blocks_by_relative_depth() -> None:
    # A 4-block source against a 2-block suspect (blocks 1 and 3 of 4 kept, re-indexed 0 and 1):
    # source depths .25 .5 .75 1.0, suspect depths .5 1.0. Each source block takes the best suspect block
    # within 0.1 of its depth, or the nearest: .25 -> .5 (nearest), .5 -> .5, .75 -> .5 and 1.0 tie-nearest... 1.0.
    grid = np.array([[0.7, 0.1], [0.9, 0.2], [0.6, 0.5], [0.3, 0.95]])
    source, suspect = relative_depths(range(4), 4), relative_depths(range(2), 2)
    assert aligned_score(grid, source, suspect) == pytest.approx((0.7 + 0.9 + 0.6 + 0.95) / 4)


def test_pruned_model_with_fewer_blocks_still_matches() -> None:
    rng = np.random.default_rng(1)
    u = latent(rng)
    full = states_from(u, rng, layers=8)
    source = synthetic_fingerprint("src", full)
    pruned = synthetic_fingerprint("pruned", full[[0, 2, 4, 6, 7]] + 0.05 * rng.standard_normal(full[:5].shape))
    refs = [synthetic_fingerprint(f"r{i}", states_from(latent(rng), rng, layers=8), role="reference") for i in range(5)]
    report = compare(pruned, [source, *refs])
    assert report.verdict is Verdict.DERIVED


def test_pair_grid_is_the_full_layer_grid() -> None:
    _, a = model("a", 1)
    _, b = model("b", 2)
    grid, score = pair_grid(a, b)
    assert grid.shape == (LAYERS, LAYERS)
    assert pair_grid(a, a)[1] == pytest.approx(1.0, abs=1e-3)
    assert 0 < score < 1


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_nulls_equal_pairwise_aligned_scores_across_depths() -> None:
    """The stacked null (only the block pairs the alignment compares) equals scoring each pair on its own."""
    rng = np.random.default_rng(11)
    entries = [
        synthetic_fingerprint(f"e{i}", states_from(latent(rng), rng, layers=depth), role=role)
        for i, (depth, role) in enumerate([(4, "source"), (2, "source"), (4, "reference"), (3, "reference"),
                                           (2, "reference"), (4, "reference"), (3, "reference")])
    ]  # fmt: skip
    suspect = synthetic_fingerprint("suspect", states_from(latent(rng), rng))
    report = compare(suspect, entries)
    for match in report.matches:
        source = next(e for e in entries if e.name == match.source)
        null = [pair_grid(source, other)[1] for other in entries if other is not source]
        assert match.null_mean == pytest.approx(float(np.mean(null)), abs=1e-12)
        assert match.score == pytest.approx(pair_grid(source, suspect)[1], abs=1e-12)
