"""CKA measures against plain NumPy formulas, and their invariances."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.spatial.distance import pdist

from bot.errors import ConfigError
from bot.reef.cka import (
    MEASURES,
    DebiasedLinearCKA,
    LinearCKA,
    RbfCKA,
    centered_gram,
    cka_grid,
    linear_cka_features,
)

Array = NDArray[np.float64]
MEASURE_NAMES = sorted(MEASURES)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _anisotropic(seed: int, m: int = 60, d: int = 24) -> Array:
    """Features with a decaying spectrum and a non-zero mean, closer to real activations than white noise."""
    rng = _rng(seed)
    scales = 1.0 / np.arange(1, d + 1)
    return rng.standard_normal((m, d)) * scales + rng.standard_normal(d)


def _cka(x: Array, y: Array, name: str, *, standardize: bool = True) -> float:
    grams_x = centered_gram(x, standardize=standardize)[None]
    grams_y = centered_gram(y, standardize=standardize)[None]
    return float(cka_grid(grams_x, grams_y, MEASURES[name])[0, 0])


def _orthogonal(seed: int, d: int) -> Array:
    q, r = np.linalg.qr(_rng(seed).standard_normal((d, d)))
    result: Array = q * np.sign(np.diagonal(r))
    return result


def _song_hsic(k: Array, g: Array) -> float:
    """Unbiased HSIC, Song et al. 2012 eq. 5, written out as in the paper."""
    n = k.shape[0]
    kt = k - np.diag(np.diagonal(k))
    gt = g - np.diag(np.diagonal(g))
    ones = np.ones(n)
    value = (
        np.trace(kt @ gt)
        + (ones @ kt @ ones) * (ones @ gt @ ones) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (ones @ kt @ gt @ ones)
    )
    return float(value / (n * (n - 3)))


# --- properties every measure has ------------------------------------------------------------------------


@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_self_similarity_is_one(name: str) -> None:
    x = _anisotropic(0)
    assert _cka(x, x, name) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_symmetric(name: str) -> None:
    x, y = _anisotropic(1), _anisotropic(2)
    grams_x = np.stack([centered_gram(x), centered_gram(x**2)])
    grams_y = np.stack([centered_gram(y), centered_gram(x + 0.5 * y), centered_gram(np.tanh(y))])
    grid_xy = cka_grid(grams_x, grams_y, MEASURES[name])
    grid_yx = cka_grid(grams_y, grams_x, MEASURES[name])
    np.testing.assert_allclose(grid_xy, grid_yx.T, atol=1e-12)


@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_invariant_to_column_permutation(name: str, standardize: bool) -> None:
    x, y = _anisotropic(3), _anisotropic(4)
    permutation = _rng(5).permutation(x.shape[1])
    expected = _cka(x, y, name, standardize=standardize)
    assert _cka(x[:, permutation], y, name, standardize=standardize) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_invariant_to_orthogonal_rotation_without_standardize(name: str) -> None:
    # standardize=False: per-feature z-scoring does not commute with a rotation of the feature space, so
    # with REEF's preprocessing CKA is only invariant to permutations and per-feature scaling.
    x, y = _anisotropic(6), _anisotropic(7)
    rotated = x @ _orthogonal(8, x.shape[1])
    expected = _cka(x, y, name, standardize=False)
    assert _cka(rotated, y, name, standardize=False) == pytest.approx(expected, abs=1e-10)
    assert _cka(rotated, x, name, standardize=False) == pytest.approx(1.0, abs=1e-10)


def test_standardize_breaks_rotation_invariance() -> None:
    x = _anisotropic(6)
    rotated = x @ _orthogonal(8, x.shape[1])
    assert _cka(rotated, x, "linear", standardize=True) < 0.99


@pytest.mark.parametrize("factor", [0.8, 1e3])
@pytest.mark.parametrize("standardize", [True, False])
@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_invariant_to_isotropic_scaling(name: str, standardize: bool, factor: float) -> None:
    # 0.8 is the factor REEF's Theorem 1 experiment uses.
    x, y = _anisotropic(9), _anisotropic(10)
    expected = _cka(x, y, name, standardize=standardize)
    assert _cka(factor * x, y, name, standardize=standardize) == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_compares_different_widths(name: str) -> None:
    rng = _rng(11)
    x = rng.standard_normal((50, 64))
    narrow = x @ rng.standard_normal((64, 17)) + 0.1 * rng.standard_normal((50, 17))
    value = _cka(x, narrow, name)
    unrelated = _cka(x, rng.standard_normal((50, 17)), name)
    assert np.isfinite(value)
    assert value > unrelated


# --- linear: the Gram route reproduces the feature-space formula -----------------------------------------


@pytest.mark.parametrize("standardize", [True, False])
def test_linear_gram_route_matches_feature_formula(standardize: bool) -> None:
    rng = _rng(12)
    x = _anisotropic(13, m=40, d=64)
    y = np.concatenate([x[:, :10] ** 2, rng.standard_normal((40, 7))], axis=1)
    expected = linear_cka_features(x, y, standardize=standardize)
    assert 0.05 < expected < 0.95
    assert _cka(x, y, "linear", standardize=standardize) == pytest.approx(expected, abs=1e-6)


def test_feature_formula_matches_handwritten_zscore() -> None:
    x, y = _anisotropic(14), _anisotropic(15, d=9)

    def zscore(a: Array) -> Array:
        result: Array = (a - a.mean(axis=0)) / a.std(axis=0, ddof=1)
        return result

    xs, ys = zscore(x), zscore(y)
    expected = np.sum((xs.T @ ys) ** 2) / (np.linalg.norm(xs.T @ xs) * np.linalg.norm(ys.T @ ys))
    assert linear_cka_features(x, y, standardize=True) == pytest.approx(float(expected), abs=1e-12)


def test_linear_survives_float16_storage() -> None:
    # Fingerprints store Grams as float16; prepare re-centres, so the rounding costs well under 1e-3.
    x, y = _anisotropic(16, m=128), _anisotropic(17, m=128)
    grams_x, grams_y = centered_gram(x)[None], centered_gram(y)[None]
    exact = float(cka_grid(grams_x, grams_y, MEASURES["linear"])[0, 0])
    stored = cka_grid(grams_x.astype(np.float16), grams_y.astype(np.float16), MEASURES["linear"])
    assert float(stored[0, 0]) == pytest.approx(exact, abs=1e-3)


# --- debiased: the U-centred inner product is Song et al.'s unbiased HSIC ---------------------------------


@pytest.mark.parametrize("seed", [20, 21, 22])
def test_debiased_matches_song_formula(seed: int) -> None:
    rng = _rng(seed)
    x = _anisotropic(seed, m=30, d=12)
    y = np.concatenate([x[:, :4] + 0.3 * rng.standard_normal((30, 4)), rng.standard_normal((30, 5))], axis=1)
    # Song's formula on the raw, uncentred linear Grams; our route on the stored centred Grams.
    kx, ky = x @ x.T, y @ y.T
    expected = _song_hsic(kx, ky) / np.sqrt(_song_hsic(kx, kx) * _song_hsic(ky, ky))
    # The identity is exact: measured differences are ~1e-13, pure roundoff.
    assert _cka(x, y, "debiased", standardize=False) == pytest.approx(expected, abs=1e-10)


def test_unbiased_hsic_ignores_column_centring() -> None:
    x, y = _anisotropic(23, m=25), _anisotropic(24, m=25, d=7)
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    raw = _song_hsic(x @ x.T, y @ y.T)
    assert abs(raw) > 1e-3
    assert _song_hsic(xc @ xc.T, yc @ yc.T) == pytest.approx(raw, rel=1e-9)
    assert _song_hsic(xc @ xc.T, y @ y.T) == pytest.approx(raw, rel=1e-9)


def test_debiased_near_zero_on_independent_noise_where_linear_is_inflated() -> None:
    # The known small-m bias of the biased estimator (reef.md section 2): m=200 probes, d=512 features.
    rng = _rng(25)
    x, y = rng.standard_normal((200, 512)), rng.standard_normal((200, 512))
    grams_x, grams_y = centered_gram(x)[None], centered_gram(y)[None]
    debiased = float(cka_grid(grams_x, grams_y, MEASURES["debiased"])[0, 0])
    linear = float(cka_grid(grams_x, grams_y, MEASURES["linear"])[0, 0])
    assert abs(debiased) < 0.05
    assert linear > 0.5


def test_debiased_degenerate_gram_gives_zero_not_nan() -> None:
    # One-hot features: the centred Gram has a constant off-diagonal, so HSIC_u(K, K) = 0.
    one_hot = np.eye(12)
    grams = centered_gram(one_hot, standardize=False)[None]
    other = centered_gram(_anisotropic(26, m=12))[None]
    rows = DebiasedLinearCKA().prepare(grams)
    assert not rows.any()
    np.testing.assert_array_equal(cka_grid(grams, np.concatenate([grams, other]), MEASURES["debiased"]), 0.0)


# --- rbf: the median heuristic and the kernel ------------------------------------------------------------


def test_rbf_sigma_is_median_of_nonzero_squared_distances() -> None:
    x = _anisotropic(27, m=41, d=6)
    x[5] = x[0]  # a duplicate probe: its zero distance must not count
    x[9] = x[0]
    squared = pdist(x, "sqeuclidean")
    expected = float(np.median(squared[squared > 0]))
    # The stored Gram is scaled to unit norm; distances and sigma^2 scale with it.
    xc = x - x.mean(axis=0)
    scale = float(np.linalg.norm(xc @ xc.T))
    sigma_sq = RbfCKA().sigma_squared(centered_gram(x, standardize=False))
    assert sigma_sq * scale == pytest.approx(expected, rel=1e-9)
    assert RbfCKA().sigma_squared(x @ x.T) == pytest.approx(expected, rel=1e-9)


def test_rbf_matches_explicit_kernel_formula() -> None:
    x, y = _anisotropic(28, m=35), _anisotropic(29, m=35, d=11)

    def centred_rbf(a: Array) -> Array:
        squared = pdist(a, "sqeuclidean")
        sigma_sq = np.median(squared[squared > 0])
        diff = a[:, None, :] - a[None, :, :]
        kernel = np.exp(-np.sum(diff**2, axis=-1) / (2 * sigma_sq))
        h = np.eye(len(a)) - 1.0 / len(a)
        result: Array = h @ kernel @ h
        return result

    kx, ky = centred_rbf(x), centred_rbf(y)
    expected = np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky))
    assert _cka(x, y, "rbf", standardize=False) == pytest.approx(float(expected), abs=1e-9)


def test_rbf_all_points_equal_gives_zero_row() -> None:
    rows = RbfCKA().prepare(np.ones((1, 5, 5)))
    assert not rows.any()


# --- the grid ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_cka_grid_is_every_layer_pair(name: str) -> None:
    layers_x = [_anisotropic(seed, m=20) for seed in (30, 31, 32)]
    layers_y = [np.tanh(layers_x[0]), _anisotropic(33, m=20, d=5)]
    grid = cka_grid(
        np.stack([centered_gram(a) for a in layers_x]),
        np.stack([centered_gram(b) for b in layers_y]),
        MEASURES[name],
    )
    assert grid.shape == (3, 2)
    assert grid.dtype == np.float64
    for i, a in enumerate(layers_x):
        for j, b in enumerate(layers_y):
            assert grid[i, j] == pytest.approx(_cka(a, b, name), abs=1e-12)


@pytest.mark.parametrize("name", MEASURE_NAMES)
def test_prepare_rejects_non_finite_grams(name: str) -> None:
    grams = np.zeros((1, 5, 5))
    grams[0, 1, 2] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        MEASURES[name].prepare(grams)


def test_cka_grid_rejects_different_probe_counts() -> None:
    with pytest.raises(ConfigError, match="different probe counts"):
        cka_grid(np.zeros((2, 6, 6)), np.zeros((2, 7, 7)), MEASURES["linear"])


@pytest.mark.parametrize("shape", [(6, 6), (2, 6, 5)])
def test_prepare_rejects_non_gram_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ConfigError, match="expected an"):
        LinearCKA().prepare(np.zeros(shape))


# --- centered_gram's input checks ------------------------------------------------------------------------


@pytest.mark.parametrize("standardize", [True, False])
def test_constant_column_is_dropped_not_nan(standardize: bool) -> None:
    x = _anisotropic(34)
    with_constant = np.concatenate([x, np.full((x.shape[0], 1), 0.1), np.zeros((x.shape[0], 1))], axis=1)
    gram = centered_gram(with_constant, standardize=standardize)
    assert np.isfinite(gram).all()
    np.testing.assert_allclose(gram, centered_gram(x, standardize=standardize), atol=1e-12)
    for name in MEASURE_NAMES:
        assert np.isfinite(cka_grid(gram[None], gram[None], MEASURES[name])).all()


def test_centered_gram_is_centred_symmetric_unit_norm() -> None:
    gram = centered_gram(_anisotropic(35))
    assert gram.dtype == np.float64
    np.testing.assert_allclose(gram, gram.T, atol=0)
    np.testing.assert_allclose(gram.sum(axis=0), 0.0, atol=1e-12)
    assert np.linalg.norm(gram) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("standardize", [True, False])
def test_all_constant_columns_raise(standardize: bool) -> None:
    with pytest.raises(ConfigError, match="constant"):
        centered_gram(np.full((10, 4), 3.0), standardize=standardize)


@pytest.mark.parametrize("m", [1, 3])
def test_too_few_probes_raise(m: int) -> None:
    with pytest.raises(ConfigError, match="at least 4"):
        centered_gram(_rng(36).standard_normal((m, 5)))


@pytest.mark.parametrize("bad", [np.zeros(8), np.array([[1.0, np.nan]] * 5)])
def test_malformed_states_raise(bad: Array) -> None:
    with pytest.raises(ConfigError, match="states"):
        centered_gram(bad)


def test_feature_formula_rejects_different_probe_counts() -> None:
    with pytest.raises(ConfigError, match="same probes"):
        linear_cka_features(np.ones((5, 2)), np.ones((6, 2)))


def test_measures_table() -> None:
    assert list(MEASURES) == ["linear", "debiased", "rbf"]
    for key, measure in MEASURES.items():
        assert measure.name == key
        assert measure.reference.startswith("https://")
