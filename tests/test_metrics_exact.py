"""Metrics pinned against independent brute-force reimplementations.

Inputs are drawn from the conftest ``rng`` fixture (a fresh seed per run, printed on failure);
every expected value is recomputed here from the documented definitions, never copied from the
implementation's output.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from fastdto import metrics
from fastdto.metrics import active_latents, disentanglement_score, kl_terms
from fastdto.recipes import load_recipe


# ------------------------------------------------------------ adjusted MIG (brute force)


def _brute_matrix(z, w, discrete, k, n_folds, max_samples, seed):
    """The (K, d) probe-score matrix of ``disentanglement_score``, written out the slow way.

    Per the docstring: subsample ``max_samples`` rows without replacement with ``seed`` (sorted), then
    ``n_folds`` folds of a ``seed``-ed permutation (same generator, ``np.array_split``); every sample is
    predicted by the k nearest training samples of the other folds (O(n^2) distances); continuous:
    mean of the neighbours, ``1 - RMSE / sd`` with RMSE over all n predictions (divided by n) and the
    population sd; discrete: majority vote with ties to the smallest class value,
    ``(acc - acc0) / (1 - acc0)``; clipped to [0, 1].
    """
    rng = np.random.default_rng(seed)
    if max_samples is not None and len(z) > max_samples:
        keep = np.sort(rng.choice(len(z), size=max_samples, replace=False))
        z, w = z[keep], w[keep]
    n, d = z.shape
    fold_of = np.empty(n, dtype=int)
    for f, idx in enumerate(np.array_split(rng.permutation(n), n_folds)):
        fold_of[idx] = f
    out = np.zeros((w.shape[1], d))
    for j in range(d):
        # neighbours of every sample along latent j, among samples of the other folds
        nbrs = []
        for i in range(n):
            train = [t for t in range(n) if fold_of[t] != fold_of[i]]
            by_dist = sorted(train, key=lambda t: abs(z[t, j] - z[i, j]))
            nbrs.append(by_dist[:k])
        for f in range(w.shape[1]):
            col = w[:, f]
            if discrete[f]:
                correct = 0
                for i in range(n):
                    vals = [col[t] for t in nbrs[i]]
                    top = max(vals.count(v) for v in vals)
                    pred = min(v for v in vals if vals.count(v) == top)  # tie -> smallest class
                    correct += pred == col[i]
                acc = correct / n
                acc0 = max(list(col).count(v) for v in set(col)) / n
                s = (acc - acc0) / (1 - acc0)
            else:
                sq = sum((sum(col[t] for t in nbrs[i]) / k - col[i]) ** 2 for i in range(n))
                rmse = math.sqrt(sq / n)
                mean = sum(col) / n
                sd = math.sqrt(sum((c - mean) ** 2 for c in col) / n)
                s = (sd - rmse) / sd
            out[f, j] = min(max(s, 0.0), 1.0)
    return out


def _mixed_code(rng, n):
    """Factors: continuous, discrete (3 non-consecutive values), continuous; latents: a noisy copy of
    each factor (so scores are well inside (0, 1)) plus one pure-noise latent."""
    w = np.stack([rng.uniform(0, 1, n),
                  rng.choice([-1.0, 2.0, 7.5], size=n),
                  rng.normal(0, 1, n)], axis=1)
    z = np.stack([w[:, 0] + 0.1 * rng.standard_normal(n),
                  w[:, 1] / 4 + 0.8 * rng.standard_normal(n),  # weak: many 2-2 votes
                  w[:, 2] + 0.3 * rng.standard_normal(n),
                  rng.standard_normal(n)], axis=1)
    return z, w


@pytest.mark.parametrize("N, max_samples, n_folds, seed", [(60, None, 5, 0), (75, 62, 4, 7)])
def test_score_matrix_matches_brute_force(rng, N, max_samples, n_folds, seed):
    """Guards the score matrix against RMSE over n-1 instead of n, majority-vote ties going to the
    largest label, and ``max_samples`` keeping the first rows instead of the seeded random subsample."""
    z, w = _mixed_code(rng, N)
    flags = [False, True, False]
    k = 4  # even: the discrete probe sees 2-2 ties
    got = disentanglement_score(z, w, discrete=flags, n_neighbors=k, n_folds=n_folds,
                                max_samples=max_samples, seed=seed, return_details=True)
    want = _brute_matrix(z, w, flags, k, n_folds, max_samples, seed)
    assert got["n_samples"] == min(N, max_samples or N)
    np.testing.assert_allclose(got["matrix"], want, rtol=1e-12, atol=1e-14)
    # the test only means something if it exercises unclipped continuous entries
    assert 0.0 < want[0, 0] < 1.0 and 0.0 < want[2, 2] < 1.0


def test_majority_vote_tie_goes_to_smallest_label():
    """A 2-2 vote between classes 1 and 3 predicts 1 (a tie sent to the largest label predicts 3)."""
    from fastdto.metrics.disentanglement import _majority_vote

    labels = np.array([[3, 1, 3, 1], [0, 2, 2, 0], [4, 4, 0, 1]])[:, :, None]
    assert _majority_vote(labels)[:, 0].tolist() == [1, 0, 4]


# ------------------------------------------------------------ KL threshold


def test_kl_terms_uses_its_threshold(rng):
    """``kl_terms(threshold=t)`` picks active latents by std > t (a threshold ignored falls back to 0.5)."""
    n = 200
    sds = np.array([0.2, 0.7, 1.5])
    mu = rng.standard_normal((n, 3))
    mu = (mu - mu.mean(0)) / mu.std(0) * sds  # population sds exactly 0.2, 0.7, 1.5 (to rounding)
    lv = rng.normal(-1.0, 0.3, (n, 3))
    for t, want in ((1.0, [False, False, True]), (0.5, [False, True, True]), (0.1, [True, True, True])):
        out = kl_terms(mu, lv, threshold=t)
        assert out["active"].tolist() == want
        assert out["active"].tolist() == active_latents(mu, t).tolist()
        m = np.array(want)
        part = 0.5 * np.mean(np.sum(mu[:, m] ** 2 - lv[:, m] - 1.0, axis=1))
        assert out["L_KL_active"] == pytest.approx(part, rel=1e-12)


# ------------------------------------------------------------ random-decoder baseline


def _brute_dto(decoder, z):
    """Mean over samples of ||V - P||_F, P the signed permutation nearest to V in L1 (d = 2: 8 candidates)."""
    dec = decoder.double()
    d = z.shape[1]
    cands = []
    for perm in itertools.permutations(range(d)):
        for signs in itertools.product((-1.0, 1.0), repeat=d):
            P = np.zeros((d, d))
            P[list(range(d)), list(perm)] = signs
            cands.append(P)
    out = []
    for zi in z.double():
        J = torch.autograd.functional.jacobian(lambda t: dec(t[None])[0], zi).numpy()
        V = np.linalg.svd(J, full_matrices=False)[2].T  # rows: latent axes, columns: singular directions
        P = min(cands, key=lambda P: np.abs(V - P).sum())
        out.append(np.linalg.norm(V - P))
    return float(np.mean(out))


def test_random_decoder_baseline_statistics_and_seeding(rng):
    """std is the population std (not ddof=1); decoder k is initialised with torch seed ``seed + k`` and
    evaluated at N(0, I) latents from a generator seeded ``10_000 + seed + k`` (not the init seed)."""
    seed = int(rng.integers(0, 1000))
    out = metrics.random_decoder_baseline("synth-nonlin-ae", n_decoders=2, n_samples=30, seed=seed)
    v = np.asarray(out["per_decoder"], dtype=float)
    assert out["dto"] == pytest.approx(float(np.mean(v)), rel=1e-12)
    assert out["std"] == pytest.approx(float(np.std(v)), rel=1e-12)
    assert out["std"] > 0

    from fastdto.nn import build_model

    recipe = load_recipe("synth-nonlin-ae")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(recipe)
    z = torch.randn(30, 2, generator=torch.Generator().manual_seed(10_000 + seed))
    assert out["per_decoder"][0] == pytest.approx(_brute_dto(model.decoder, z), rel=1e-5)


def test_random_decoder_baseline_honours_active():
    """With a single active latent V = [1] exactly, so DtO is 0 (ignoring ``active`` gives the 2-latent value)."""
    out = metrics.random_decoder_baseline("synth-nonlin-ae", n_decoders=2, n_samples=20, active=[0])
    assert out["per_decoder"] == [0.0, 0.0] and out["dto"] == 0.0 and out["std"] == 0.0
    assert metrics.random_decoder_baseline("synth-nonlin-ae", n_decoders=1, n_samples=20)["dto"] > 0
