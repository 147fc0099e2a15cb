"""Benchmarks of fastdto.metrics on 10,000 samples, 5 factors, 10 latents.

Run:  python -m pytest bench/test_bench_metrics.py -p no:cacheprovider
      (add --benchmark-disable to only check that everything runs).
Target: well under 1 s per call on a 2-core CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from fastdto.metrics import active_latents, disentanglement_score, kl_terms, mig, polarized_fraction

N, K, D = 10_000, 5, 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    w_cont = rng.uniform(size=(N, K))
    w_disc = np.stack([rng.integers(0, s, N) for s in (3, 6, 40, 32, 32)], axis=1).astype(float)
    noise = rng.standard_normal((N, D - K))
    z_cont = np.concatenate([w_cont + 0.05 * rng.standard_normal((N, K)), noise], axis=1)
    z_disc = np.concatenate([w_disc / w_disc.std(axis=0) + 0.3 * rng.standard_normal((N, K)), noise], axis=1)
    logvar = np.concatenate([rng.uniform(-6, -3, (N, K)), rng.uniform(-0.1, 0.0, (N, D - K))], axis=1)
    history = [(500 * (i + 1), 1.0 / (i + 1)) for i in range(N)]
    return dict(w_cont=w_cont, w_disc=w_disc, z_cont=z_cont, z_disc=z_disc, logvar=logvar, history=history)


def test_bench_disentanglement_score_continuous(benchmark, data):
    s = benchmark(disentanglement_score, data["z_cont"], data["w_cont"])
    assert 0.8 < s <= 1.0


def test_bench_disentanglement_score_discrete(benchmark, data):
    s = benchmark(disentanglement_score, data["z_disc"], data["w_disc"])
    assert 0.0 < s <= 1.0


def mig_pairwise_loop(z, w, n_bins=20):
    """Baseline: the usual MIG code, one contingency table per (latent, factor) pair (as in
    disentanglement_lib, with NumPy in place of sklearn's mutual_info_score)."""
    zb = np.stack([np.digitize(c, np.histogram(c, bins=n_bins)[1][:-1]) - 1 for c in z.T], axis=1)
    gaps = []
    for k in range(w.shape[1]):
        _, wk = np.unique(w[:, k], return_inverse=True)
        pw = np.bincount(wk) / len(wk)
        h = -np.sum(pw * np.log(pw))
        mi = []
        for j in range(z.shape[1]):
            joint = np.zeros((n_bins, wk.max() + 1))
            np.add.at(joint, (zb[:, j], wk), 1.0)
            p = joint / len(wk)
            outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
            nz = p > 0
            mi.append(np.sum(p[nz] * np.log(p[nz] / outer[nz])))
        top = sorted(mi, reverse=True)
        gaps.append((top[0] - top[1]) / h)
    return float(np.mean(gaps))


def test_bench_mig(race, data):
    s = race("mig", "fastdto mig", lambda: mig(data["z_disc"], data["w_disc"]), rounds=5)
    assert 0.0 < s <= 1.0


def test_bench_mig_pairwise_loop(race, data):
    s = race("mig", "pairwise contingency-table loop", lambda: mig_pairwise_loop(data["z_disc"], data["w_disc"]),
             rounds=3)
    assert s == pytest.approx(mig(data["z_disc"], data["w_disc"]), abs=1e-9)


def test_bench_active_latents(benchmark, data):
    mask = benchmark(active_latents, data["z_cont"], 0.2)
    assert mask[:K].all() and mask[K:].all()


def test_bench_kl_terms(benchmark, data):
    out = benchmark(kl_terms, data["z_disc"], data["logvar"])
    assert out["L_KL"] > 0 and 0 <= out["delta_KL"]


def test_bench_polarized_fraction(benchmark, data):
    frac = benchmark(polarized_fraction, data["history"])
    assert 0.0 < frac < 1.0
