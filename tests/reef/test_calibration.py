"""The p-value is honest: independent models reach p < 0.01 about 1% of the time, not more.

Forty transformers of three architectures are initialised from independent seeds and fingerprinted on the
same probes. Each draw picks a source, a suspect and ten null entries among them, all different, and computes
the suspect's p-values against that source exactly as ``compare`` does, for the CKA score, for each weight
statistic (units, geometry) and for the better of the two after its Bonferroni doubling. Under independence
the rate of p < 0.01 should be 1%; we allow sampling noise over 300 draws, and also
check that p is not lopsided (the rate of p < 0.1 near 10%). Trained models, where same-architecture pairs
sit higher, are measured by bench/calibration.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from bot.reef.fingerprint import Fingerprint, fingerprint_model
from bot.reef.probes import ProbeSet
from bot.reef.verdict import compare
from tests.builders import DEMO_MODELS, random_model

N_MODELS, N_NULL, N_DRAWS = 40, 10, 300


@pytest.fixture(scope="module")
def independent_fingerprints(few_probes: ProbeSet) -> list[Fingerprint]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODELS / "source")
    return [
        fingerprint_model(random_model(seed, tokenizer), few_probes, name=f"m{seed}", model=f"seed-{seed}")
        for seed in range(N_MODELS)
    ]


def test_p_values_are_honest_under_independence(independent_fingerprints: list[Fingerprint]) -> None:
    rng = np.random.default_rng(2025)
    cka: list[float] = []
    weights: dict[str, list[float]] = {"either": [], "units": [], "geometry": []}
    for _ in range(N_DRAWS):
        source, suspect, *null = rng.choice(N_MODELS, size=2 + N_NULL, replace=False)
        registry = [independent_fingerprints[source]]
        registry += [_as_reference(independent_fingerprints[i]) for i in null]
        match = compare(independent_fingerprints[suspect], registry).matches[0]
        assert match.p_value is not None and match.weights is not None and match.weights.p_value is not None
        cka.append(match.p_value)
        weights["either"].append(match.weights.p_value)
        for name, p_value in match.weights.p_values.items():
            assert p_value is not None
            weights[name].append(p_value)
    for p in (np.array(cka), *(np.array(values) for values in weights.values())):
        assert np.mean(p < 0.01) <= 0.02
        assert 0.04 <= np.mean(p < 0.1) <= 0.17


def _as_reference(fp: Fingerprint) -> Fingerprint:
    from dataclasses import replace

    return replace(fp, role="reference")


def test_fixture_models_are_distinct(independent_fingerprints: list[Fingerprint]) -> None:
    assert len({fp.digest for fp in independent_fingerprints}) == N_MODELS
