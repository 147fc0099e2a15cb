"""Tests for fastdto.metrics (kept small: the whole file runs in seconds)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fastdto import metrics
from fastdto.metrics import (
    active_latents,
    disentanglement_score,
    kl_terms,
    mig,
    polarized_fraction,
)

N = 2000
K = 5


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def continuous_factors(rng, n=N, k=K):
    return rng.uniform(0.0, 1.0, size=(n, k))


def discrete_factors(rng, n=N, sizes=(3, 4, 5, 6, 8)):
    return np.stack([rng.integers(0, s, size=n) for s in sizes], axis=1).astype(float)


def scramble(z, rng, n_passive=3):
    """Permute and sign-flip latent axes, then append passive noise latents."""
    d = z.shape[1]
    perm = rng.permutation(d)
    signs = rng.choice([-1.0, 1.0], size=d)
    signs[0] = -1.0
    passive = 0.05 * rng.standard_normal((z.shape[0], n_passive))
    out = np.concatenate([z[:, perm] * signs, passive], axis=1)
    return out[:, rng.permutation(out.shape[1])]


def rotate45(z, i=0, j=1):
    out = z.copy()
    c = math.sqrt(0.5)
    out[:, i] = c * (z[:, i] + z[:, j])
    out[:, j] = c * (z[:, i] - z[:, j])
    return out


def test_exports():
    assert set(metrics.__all__) >= {
        "disentanglement_score",
        "mig",
        "active_latents",
        "kl_terms",
        "polarized_fraction",
    }


# ----------------------------------------------------------------- adjusted MIG


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_score_perfect_code_is_one_and_invariant(rng, kind):
    w = continuous_factors(rng) if kind == "continuous" else discrete_factors(rng)
    z = w + 1e-3 * rng.standard_normal(w.shape)
    s = disentanglement_score(z, w)
    assert s > 0.95
    s2 = disentanglement_score(scramble(z, rng), w)
    assert s2 > 0.95
    assert abs(s - s2) < 0.02


def test_score_detects_inferred_types(rng):
    wc, wd = continuous_factors(rng), discrete_factors(rng)
    w = np.concatenate([wc, wd], axis=1)
    z = w + 1e-3 * rng.standard_normal(w.shape)
    det = disentanglement_score(z, w, return_details=True)
    assert det["discrete"].tolist() == [False] * 5 + [True] * 5
    assert det["score"] > 0.95
    assert det["matrix"].shape == (10, 10)
    assert np.array_equal(det["best_latent"], np.arange(10))
    assert 0 <= det["matrix"].min() and det["matrix"].max() <= 1


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_score_45_degree_mix_is_markedly_lower(rng, kind):
    w = continuous_factors(rng, k=2) if kind == "continuous" else discrete_factors(rng, sizes=(4, 4))
    z = w - w.mean(axis=0)
    aligned = disentanglement_score(z, w)
    mixed = disentanglement_score(rotate45(z), w)
    assert aligned > 0.95
    assert mixed < 0.6 * aligned
    # in a 5-factor code only the two mixed factors lose their gap
    w5 = continuous_factors(rng) if kind == "continuous" else discrete_factors(rng)
    z5 = w5 - w5.mean(axis=0)
    det = disentanglement_score(rotate45(z5), w5, return_details=True)
    assert det["per_factor"][:2].max() < 0.6 * det["per_factor"][2:].min()


@pytest.mark.parametrize("kind", ["continuous", "discrete"])
def test_score_noise_latents_near_zero(rng, kind):
    w = continuous_factors(rng) if kind == "continuous" else discrete_factors(rng)
    z = rng.standard_normal((N, 10))
    assert disentanglement_score(z, w) < 0.1


def test_score_duplicated_latent_gives_zero_gap(rng):
    w = continuous_factors(rng, k=1)
    z = np.concatenate([w, w, rng.standard_normal((N, 1))], axis=1)
    det = disentanglement_score(z, w, return_details=True)
    assert det["matrix"][0, 0] == det["matrix"][0, 1] > 0.95
    assert det["score"] == 0.0


def test_score_options_and_determinism(rng):
    w = continuous_factors(rng, n=600)
    z = rotate45(w) + 0.1 * rng.standard_normal(w.shape)
    a = disentanglement_score(z, w, seed=3)
    assert a == disentanglement_score(z, w, seed=3)
    b = disentanglement_score(z, w, n_neighbors=10, n_folds=3, max_samples=500, seed=4)
    assert 0.0 <= b <= 1.0
    det = disentanglement_score(z, w, max_samples=300, return_details=True)
    assert det["n_samples"] == 300
    # a single latent: the second-best value is 0
    one = disentanglement_score(w[:, :1], w[:, :1])
    assert one > 0.95


def test_score_explicit_discrete_flags(rng):
    w = discrete_factors(rng, sizes=(3, 3))
    z = w + 1e-3 * rng.standard_normal(w.shape)
    flagged = disentanglement_score(z, w, discrete=[True, True], return_details=True)
    as_cont = disentanglement_score(z, w, discrete=False, return_details=True)
    assert flagged["discrete"].all() and not as_cont["discrete"].any()
    assert flagged["score"] > 0.95 and as_cont["score"] > 0.95


def test_score_torch_input_matches_numpy(rng):
    w = continuous_factors(rng, n=500)
    z = w + 0.05 * rng.standard_normal(w.shape)
    ref = disentanglement_score(z, w)
    got = disentanglement_score(torch.tensor(z, dtype=torch.float64), torch.tensor(w))
    assert isinstance(got, float)
    assert got == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 5, 12])
def test_knn_1d_matches_brute_force(rng, k):
    from fastdto.metrics.disentanglement import _knn_1d

    train = np.sort(rng.standard_normal(40))
    query = np.concatenate([rng.standard_normal(200) * 2, [train[0] - 5, train[-1] + 5]])
    idx = _knn_1d(train, query, k)
    got = np.sort(np.abs(train[idx] - query[:, None]), axis=1)
    want = np.sort(np.abs(train[None, :] - query[:, None]), axis=1)[:, :k]
    np.testing.assert_allclose(got, want, rtol=0, atol=0)
    assert all(len(set(row)) == k for row in idx.tolist())


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(12, 80), d=st.integers(1, 4), k=st.integers(1, 3))
def test_score_property_range(seed, n, d, k):
    r = np.random.default_rng(seed)
    z = r.standard_normal((n, d))
    w = np.concatenate([r.uniform(size=(n, 1)), r.integers(0, 3, size=(n, k))], axis=1)
    w[:3, 1:] = np.arange(3)[:, None]  # every discrete factor takes >= 2 values
    det = disentanglement_score(z, w, n_neighbors=3, return_details=True)
    assert 0.0 <= det["score"] <= 1.0
    assert np.all((det["per_factor"] >= 0) & (det["per_factor"] <= 1))


# ------------------------------------------------------------------------- MIG


def plugin_mi(a, b):
    """Brute-force plug-in mutual information (nats) from a contingency table."""
    n = len(a)
    table, ca, cb = {}, {}, {}
    for x, y in zip(a.tolist(), b.tolist()):
        table[(x, y)] = table.get((x, y), 0) + 1
        ca[x] = ca.get(x, 0) + 1
        cb[y] = cb.get(y, 0) + 1
    return sum(c / n * math.log(c * n / (ca[x] * cb[y])) for (x, y), c in table.items())


def plugin_entropy(a):
    n = len(a)
    counts = {}
    for x in a.tolist():
        counts[x] = counts.get(x, 0) + 1
    return -sum(c / n * math.log(c / n) for c in counts.values())


def brute_force_mig(zcodes, v):
    gaps = []
    for k in range(v.shape[1]):
        mis = sorted((plugin_mi(zcodes[:, j], v[:, k]) for j in range(zcodes.shape[1])), reverse=True)
        gaps.append((mis[0] - mis[1]) / plugin_entropy(v[:, k]))
    return sum(gaps) / len(gaps)


def equal_width_bins(x, n_bins):
    lo, hi = x.min(), x.max()
    return np.minimum(np.floor((x - lo) / (hi - lo) * n_bins), n_bins - 1).astype(int)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mig_matches_brute_force_discrete_latents(seed):
    r = np.random.default_rng(seed)
    n = 60
    v = np.stack([r.integers(0, 3, n), r.integers(0, 2, n)], axis=1).astype(float)
    z = np.stack(
        [v[:, 0] + (r.uniform(size=n) < 0.2), r.integers(0, 4, n), v[:, 1] * 2 - 1 + 0 * r.integers(0, 2, n)],
        axis=1,
    ).astype(float)
    expected = brute_force_mig(z, v)
    assert mig(z, v, discrete_latents=True) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n_bins", [3, 7, 20])
def test_mig_matches_brute_force_histogram(n_bins):
    r = np.random.default_rng(n_bins)
    n = 300
    v = np.stack([r.integers(0, 4, n), r.integers(0, 3, n), r.integers(0, 2, n)], axis=1).astype(float)
    z = np.concatenate([v + 0.7 * r.standard_normal(v.shape), r.standard_normal((n, 2))], axis=1)
    codes = np.stack([equal_width_bins(z[:, j], n_bins) for j in range(z.shape[1])], axis=1)
    expected = brute_force_mig(codes, v)
    det = mig(z, v, n_bins=n_bins, return_details=True)
    assert det["score"] == pytest.approx(expected, abs=1e-12)
    for k in range(3):
        assert det["entropy"][k] == pytest.approx(plugin_entropy(v[:, k]), abs=1e-12)
        for j in range(5):
            assert det["mi"][k, j] == pytest.approx(plugin_mi(codes[:, j], v[:, k]), abs=1e-12)


def test_mig_perfect_and_invariant(rng):
    v = discrete_factors(rng)
    z = v + 1e-3 * rng.standard_normal(v.shape)
    assert mig(z, v) > 0.95
    assert mig(scramble(z, rng), v) > 0.9


def test_mig_duplicated_latents_zero(rng):
    v = discrete_factors(rng)
    z = v + 1e-3 * rng.standard_normal(v.shape)
    dup = np.concatenate([z, z], axis=1)
    assert mig(dup, v) == pytest.approx(0.0, abs=1e-12)


def test_mig_noise_and_exclude(rng):
    v = discrete_factors(rng)
    assert mig(rng.standard_normal((N, 6)), v) < 0.05
    z = v + 1e-3 * rng.standard_normal(v.shape)
    z[:, 0] = rng.standard_normal(N)  # factor 0 is not encoded
    full = mig(z, v, return_details=True)
    excl = mig(z, v, exclude=[0], return_details=True)
    assert full["per_factor"][0] < 0.05
    assert excl["factors_used"].tolist() == [1, 2, 3, 4]
    assert excl["score"] == pytest.approx(full["per_factor"][1:].mean())
    assert mig(z, v, exclude=-5) == pytest.approx(excl["score"])


def test_mig_options(rng):
    v = discrete_factors(rng)
    z = v + 1e-3 * rng.standard_normal(v.shape)
    assert mig(z, v, estimator="quantile") > 0.9
    w = continuous_factors(rng)
    zc = w + 1e-4 * rng.standard_normal(w.shape)
    assert mig(zc, w) > 0.9  # continuous factors binned like the latents
    with pytest.raises(ValueError, match="continuous"):
        mig(zc, w, continuous_factors="raise")
    assert mig(zc, w, discrete=True) >= 0.0  # every distinct value its own class


def test_mig_torch_matches_numpy(rng):
    v = discrete_factors(rng, n=400)
    z = v + 0.3 * rng.standard_normal(v.shape)
    assert mig(torch.tensor(z), torch.tensor(v)) == pytest.approx(mig(z, v), abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_mig_permutation_invariant(seed):
    r = np.random.default_rng(seed)
    v = np.stack([r.integers(0, 3, 50), r.integers(0, 4, 50)], axis=1).astype(float)
    v[:4] = np.arange(4)[:, None] % np.array([3, 4])
    z = np.concatenate([v + r.standard_normal(v.shape), r.standard_normal((50, 2))], axis=1)
    perm = r.permutation(4)
    a, b = mig(z, v, n_bins=5), mig(z[:, perm], v, n_bins=5)
    assert a == pytest.approx(b, abs=1e-12)
    assert 0.0 <= a <= 1.0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(30, 130))
def test_mig_quantile_sign_flip_invariant(seed, n):
    """Quantile bins of -z are those of z reversed, also when n_bins does not divide N (the floor of
    rank * n_bins / N made the small bins land at one end). With an odd n_bins no point lies on a bin edge
    (odd N and even n_bins put the middle one there)."""
    r = np.random.default_rng(seed)
    v = np.stack([r.integers(0, 3, n), r.integers(0, 4, n)], axis=1).astype(float)
    v[:4] = np.arange(4)[:, None] % np.array([3, 4])
    z = v + r.standard_normal(v.shape)
    flipped = z * np.array([-1.0, 1.0])
    a, b = mig(z, v, n_bins=7, estimator="quantile"), mig(flipped, v, n_bins=7, estimator="quantile")
    assert a == pytest.approx(b, abs=1e-12)


@pytest.mark.parametrize("scale", [1e-170, 1e-100, 1e100, 1e160, 1e300])
def test_score_ignores_the_scale_of_continuous_factors(rng, scale):
    v = rng.uniform(size=(500, 2))
    z = v @ np.array([[1.0, 0.3], [0.2, 1.0]]) + 0.05 * rng.standard_normal((500, 2))
    base = disentanglement_score(z, v)
    assert disentanglement_score(z, v * scale) == pytest.approx(base, abs=1e-12)


# ------------------------------------------------------------- active and KL


def test_active_latents(rng):
    mu = np.concatenate([rng.standard_normal((N, 2)), 0.1 * rng.standard_normal((N, 2))], axis=1)
    assert active_latents(mu).tolist() == [True, True, False, False]
    assert active_latents(torch.tensor(mu, dtype=torch.float32)).tolist() == [True, True, False, False]
    two = np.array([[0.0, 0.0], [1.0, 2.0]])  # population std 0.5 and 1.0: strict comparison
    assert active_latents(two).tolist() == [False, True]
    assert active_latents(two, threshold=0.4).tolist() == [True, True]


def direct_kl(mu, logvar, active):
    n, d = mu.shape
    full = part = 0.0
    for i in range(n):
        for j in range(d):
            s2 = math.exp(logvar[i, j])
            full += 0.5 * (mu[i, j] ** 2 + s2 - logvar[i, j] - 1)
            if active[j]:
                part += 0.5 * (mu[i, j] ** 2 - logvar[i, j] - 1)
    return full / n, part / n


def test_kl_terms_direct(rng):
    n = 50
    mu = np.concatenate([2 * rng.standard_normal((n, 3)), 0.05 * rng.standard_normal((n, 3))], axis=1)
    logvar = np.concatenate([rng.uniform(-6, -3, (n, 3)), rng.uniform(-0.1, 0.0, (n, 3))], axis=1)
    out = kl_terms(mu, logvar)
    assert out["active"].tolist() == [True] * 3 + [False] * 3
    full, part = direct_kl(mu, logvar, out["active"])
    assert out["L_KL"] == pytest.approx(full, rel=1e-12)
    assert out["L_KL_active"] == pytest.approx(part, rel=1e-12)
    assert out["delta_KL"] == pytest.approx(abs(full - part) / full, rel=1e-12)
    # explicit active set, as mask and as indices; torch inputs give Python floats
    mask = np.array([True, False, True, False, False, False])
    a = kl_terms(torch.tensor(mu), torch.tensor(logvar), active=mask)
    b = kl_terms(mu, logvar, active=[0, 2])
    full, part = direct_kl(mu, logvar, mask)
    for res in (a, b):
        assert all(isinstance(res[key], float) for key in ("L_KL", "L_KL_active", "delta_KL"))
        assert res["L_KL"] == pytest.approx(full, rel=1e-12)
        assert res["L_KL_active"] == pytest.approx(part, rel=1e-12)
        assert res["active"].tolist() == mask.tolist()


def test_mig_bins_beyond_the_sample_count_take_no_memory_for_edges(rng):
    """n_bins = 10**9 made numpy build 10**9 + 1 histogram edges (8 GB; the process was killed)."""
    z = rng.standard_normal((200, 3))
    w = rng.integers(0, 4, (200, 2))
    for n_bins in (10**9, 2**31 - 1):  # above 4 N: arithmetic bins
        assert mig(z, w, n_bins=n_bins) == pytest.approx(0.0, abs=1e-12)  # every sample in its own bin
    assert 0.0 <= mig(z, w, n_bins=801) <= 1.0
    from fastdto.metrics.mig import discretize
    edges_side = discretize(z, 800)  # at 4 N numpy's edges still serve; both agree off the edges
    np.testing.assert_array_equal(edges_side, np.minimum(((z - z.min(0)) / np.ptp(z, 0) * 800).astype(int), 799))


def test_mig_with_more_bins_than_memory_allows_for_a_dense_table(rng):
    # n_bins = 10**7 asked for a 10**7 x K table per latent (MemoryError). Only occupied pairs are
    # counted now; with every sample in its own bin, each latent "explains" every factor: gaps 0.
    z = rng.standard_normal((2000, 4))
    w = rng.integers(0, 5, (2000, 3))
    assert mig(z, w, n_bins=10**7) == pytest.approx(0.0, abs=1e-12)
    from fastdto.metrics.mig import mutual_information
    a, b = rng.integers(0, 40, 3000), rng.integers(0, 6, 3000)
    assert mutual_information(a * 10**6, b * 10**6) == pytest.approx(mutual_information(a, b), rel=1e-12)


def test_kl_terms_large_but_finite_kl_over_many_samples():
    # Each sample's KL is near 5e304; the sum over 100,000 samples is not representable, the mean is.
    n, d = 100_000, 10
    out = kl_terms(np.zeros((n, d)), np.full((n, d), 700.0))
    expected = 0.5 * d * (math.exp(700.0) - 701.0)
    assert out["L_KL"] == pytest.approx(expected, rel=1e-12)


def test_kl_terms_zero_kl():
    mu = np.zeros((10, 4))
    out = kl_terms(mu, np.zeros((10, 4)))
    assert out["L_KL"] == 0.0 and out["L_KL_active"] == 0.0 and out["delta_KL"] == 0.0
    assert not out["active"].any()
    forced = kl_terms(mu, np.zeros((10, 4)), active=[0])
    assert forced["L_KL_active"] == -0.5 and forced["delta_KL"] == math.inf


# ----------------------------------------------------------- polarised share


def test_polarized_fraction_hand_made():
    steps = [500, 1000, 1500, 2000]
    assert polarized_fraction([(s, 0.01) for s in steps]) == 1.0
    assert polarized_fraction([(s, 0.01) for s in steps], count_first_interval=False) == 0.75
    assert polarized_fraction([(s, 0.5) for s in steps]) == 0.0
    assert polarized_fraction([(500, 0.5), (1000, 0.2), (1500, 0.01), (2000, 0.02)]) == 0.25
    # crosses once at step 1000 (checks from step 0)
    assert polarized_fraction([(0, 0.9), (500, 0.1), (1000, 0.02), (1500, 0.01), (2000, 0.0)]) == 0.5
    # below, above, below again: only the final run counts
    assert polarized_fraction([(500, 0.01), (1000, 0.05), (1500, 0.01), (2000, 0.01)]) == 0.25
    # below until the last check fails
    assert polarized_fraction([(500, 0.01), (1000, 0.01), (1500, 0.04)]) == 0.0
    # threshold is strict, inf counts as failing, (n, 2) arrays accepted
    assert polarized_fraction([(1, 0.03), (2, 0.0), (4, 0.0)]) == 0.5
    assert polarized_fraction(np.array([[1.0, math.inf], [4.0, 0.0]])) == 0.0
    assert polarized_fraction([(0, 0.0)]) == 1.0
    assert polarized_fraction([(100, 0.2), (200, 0.1)], threshold=0.15) == 0.0
    assert polarized_fraction([(100, 0.2), (200, 0.1)], threshold=0.25) == 1.0


# -------------------------------------------------------------- bad inputs

GOOD_Z = np.random.default_rng(0).standard_normal((20, 3))
GOOD_W = np.random.default_rng(1).integers(0, 3, (20, 2)).astype(float)


def _with_nan(a):
    a = a.copy()
    a[3, 1] = np.nan
    return a


@pytest.mark.parametrize("fn", [disentanglement_score, mig])
@pytest.mark.parametrize(
    "z, w, kwargs, name",
    [
        (GOOD_Z[:, 0], GOOD_W, {}, "latents"),
        (GOOD_Z, GOOD_W[:, 0], {}, "factors"),
        (GOOD_Z[:1], GOOD_W[:1], {}, "latents"),
        (GOOD_Z[:10], GOOD_W, {}, "factors"),
        (_with_nan(GOOD_Z), GOOD_W, {}, "latents"),
        (GOOD_Z, np.where(GOOD_W == 0, np.inf, GOOD_W), {}, "factors"),
        (GOOD_Z, GOOD_W, {"discrete": [True]}, "discrete"),
        (GOOD_Z, GOOD_W, {"discrete": [True, "x"]}, "discrete"),
        (np.zeros((20, 3), dtype=complex), GOOD_W, {}, "latents"),
        ([["a"] * 3] * 20, GOOD_W, {}, "latents"),
        (GOOD_Z, np.concatenate([GOOD_W, np.ones((20, 1))], axis=1), {}, "factors"),
    ],
)
def test_bad_inputs_raise(fn, z, w, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        fn(z, w, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"n_neighbors": 19}, "n_neighbors"),
        ({"n_neighbors": 2.5}, "n_neighbors"),
        ({"n_folds": 1}, "n_folds"),
        ({"n_folds": 21}, "n_folds"),
        ({"max_samples": 1}, "max_samples"),
        ({"seed": "a"}, "seed"),
        ({"seed": 2**70}, "seed"),
        ({"return_details": "no"}, "return_details"),
    ],
)
def test_score_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        disentanglement_score(GOOD_Z, GOOD_W, **kwargs)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_bins": 1}, "n_bins"),
        ({"estimator": "ksg"}, "estimator"),
        ({"exclude": [2]}, "exclude"),
        ({"exclude": [0, 1]}, "exclude"),
        ({"exclude": ["a"]}, "exclude"),
        ({"continuous_factors": "drop"}, "continuous_factors"),
        ({"n_bins": 2**31}, "n_bins"),
        ({"n_bins": np.bool_(True)}, "n_bins"),
        ({"discrete_latents": "no"}, "discrete_latents"),  # was read as True
        ({"return_details": 0}, "return_details"),
    ],
)
def test_mig_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}"):
        mig(GOOD_Z, GOOD_W, **kwargs)


def test_kl_and_active_bad_inputs():
    mu, lv = np.zeros((5, 3)), np.zeros((5, 3))
    cases = [
        (lambda: active_latents(np.zeros(5)), "mu"),
        (lambda: active_latents(np.zeros((1, 3))), "mu"),
        (lambda: active_latents(mu, threshold=-1), "threshold"),
        (lambda: kl_terms(mu, np.zeros((5, 2))), "logvar"),
        (lambda: kl_terms(_with_nan(mu), lv), "mu"),
        (lambda: kl_terms(mu, _with_nan(lv)), "logvar"),
        (lambda: kl_terms(mu, lv, active=[True, False]), "active"),
        (lambda: kl_terms(mu, lv, active=[5]), "active"),
        # a 0/1 mask as uint8 or as indices with repeats was read as indices [0, 1] or [0, 1, 0]
        (lambda: kl_terms(mu, lv, active=np.array([0, 1, 0], dtype=np.uint8)), "active"),
        (lambda: kl_terms(mu, lv, active=[0, 1, 0]), "active"),
        (lambda: kl_terms(mu, lv, active=[-1]), "active"),
        (lambda: kl_terms(mu, lv, active={1}), "active"),
        (lambda: kl_terms(mu, lv, active=[1.0]), "active"),
        (lambda: kl_terms(mu, np.full((5, 3), 710.0)), "mu, logvar: the KL overflows"),
        (lambda: kl_terms(np.full((5, 3), 1e155), lv), "mu, logvar: the KL overflows"),
        (lambda: polarized_fraction([]), "history"),
        (lambda: polarized_fraction([(1, 0.1, 3)]), "history"),
        (lambda: polarized_fraction([(2, 0.1), (1, 0.0)]), "history"),
        (lambda: polarized_fraction([(1, 0.1), (1, 0.0)]), "history"),
        (lambda: polarized_fraction([(-1, 0.1)]), "history"),
        (lambda: polarized_fraction([(1, float("nan"))]), "history"),
        (lambda: polarized_fraction([(1, 0.0)], threshold=0), "threshold"),
    ]
    for call, name in cases:
        with pytest.raises(ValueError, match=f"^{name}"):
            call()


def test_histogram_mig_and_active_latents_at_extreme_scales():
    """np.histogram failed ("too many bins") on a constant latent of 1e15 or more, a range at the values'
    resolution, or one spanning float64; np.std overflowed or rounded constants at 1e17-1e300 into
    active latents, and underflowed a column varying at 1e-200 into an inactive one."""
    rng = np.random.default_rng(0)
    n = 40
    w = np.c_[rng.integers(0, 2, n).astype(float)]
    good = w + 0.01 * rng.normal(size=(n, 1))
    assert mig(np.c_[good, np.zeros((n, 1))], w) == pytest.approx(1.0)
    for extra in (np.full((n, 1), 1e15), np.full((n, 1), 1e150)):  # as uninformative as a constant 0
        assert mig(np.c_[good, extra], w) == pytest.approx(1.0)
    assert mig(np.c_[good, 1e16 + 2 * w], w) == pytest.approx(0.0)  # two equally informative latents
    assert 0.0 <= mig(np.c_[good, np.linspace(-1, 1, n)[:, None] * 1e308], w) <= 1.0
    noisy = np.c_[good, rng.normal(size=(n, 1))]
    for scale in (2.0**-600, 2.0**600):  # binning is scale-free: a power of two changes nothing
        assert mig(noisy * scale, w) == mig(noisy, w)
    with pytest.raises(ValueError, match="takes a single value"):
        mig(np.c_[good, good], np.c_[w, np.full(n, 1e16)], discrete=[True, False])
    for value, rows in ((1e300, 10), (6.09494e17, 541), (1e100, 1459), (0.1, 50)):
        assert not active_latents(np.full((rows, 1), value), threshold=0.0).any()
    assert active_latents(np.c_[np.linspace(0, 1e-200, n)], threshold=0.0).all()


def test_metric_seeds_and_counts_are_checked():
    rng = np.random.default_rng(0)
    z, w = rng.normal(size=(60, 2)), rng.integers(0, 3, size=(60, 1))
    with pytest.raises(ValueError, match="^seed"):  # numpy's own message did not name it
        disentanglement_score(z, w, seed=-1)
    for bad in ({"seed": "a"}, {"seed": 1.5}, {"n_decoders": True}, {"n_samples": 0}):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))}"):
            metrics.random_decoder_baseline("synth-lin-ae", **bad)
    for bad in (None, 5, {}):  # leaked "'NoneType' object is not iterable" and KeyError: 'model'
        with pytest.raises((TypeError, ValueError), match="architecture"):
            metrics.random_decoder_baseline(bad)
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    out = metrics.random_decoder_baseline("synth-lin-ae", n_decoders=np.int64(2), n_samples=50)
    assert torch.equal(torch.rand(3), expected)  # it seeded the global generator, resetting the caller's
    assert out["settings"]["n_decoders"] == 2 and type(out["settings"]["n_decoders"]) is int
