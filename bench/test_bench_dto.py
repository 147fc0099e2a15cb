"""Throughput of the DtO pipeline against the baselines a user would otherwise write.

Run: pytest bench/test_bench_dto.py  (FASTDTO_BENCH_SCALE=smoke for a quick check). Every group races
fastdto against its baselines in the same run on the same data; ratios print at the end.
Baselines that would take minutes at full size run on a prefix of the same data and are compared per
sample (the 'units').
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import fastdto
from fastdto import reference

from conftest import size


def scipy_assignment_loop(V):
    """The straightforward per-sample loop: SciPy assignment on |V|, then the Frobenius distance."""
    out = np.empty(len(V))
    for i, v in enumerate(V):
        r, c = linear_sum_assignment(np.abs(v), maximize=True)
        P = np.zeros_like(v)
        P[r, c] = np.sign(v[r, c])
        out[i] = np.linalg.norm(v - P)
    return out


# ------------------------------------------------------------------ 1. post-Jacobian stage

@pytest.fixture(scope="module")
def jacobians_f32():
    N, n, d = size(10_000, 200), size(4096, 512), 10
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, n, d, generator=g, dtype=torch.float32)


def test_post_jacobian_fastdto(race, jacobians_f32):
    res = race("post-jacobian", "fastdto dto_from_jacobians", lambda: fastdto.dto_from_jacobians(jacobians_f32),
               units=len(jacobians_f32))
    assert res.per_sample.shape == (len(jacobians_f32),)


def test_post_jacobian_floor_read_once(race, jacobians_f32):
    race("post-jacobian", "floor: J.sum() (one read of J)", lambda: jacobians_f32.sum(), units=len(jacobians_f32),
         rounds=5)


def test_post_jacobian_numpy_svd_scipy(race, jacobians_f32):
    sub = jacobians_f32[: size(1000, 20)].numpy()

    def run():
        _, _, vt = np.linalg.svd(sub, full_matrices=False)
        return scipy_assignment_loop(np.swapaxes(vt, 1, 2))
    out = race("post-jacobian", "numpy batched SVD + scipy loop", run, units=len(sub), rounds=1)
    ours = fastdto.dto_from_jacobians(sub).per_sample.numpy()
    np.testing.assert_allclose(out, ours, atol=1e-4)


def torch_gram_eigh_scipy(J):
    """The best stock pipeline: batched Gram (float32 BLAS) + batched eigh + SciPy loop."""
    G = torch.bmm(J.transpose(1, 2), J).double()
    _, V = torch.linalg.eigh(G)
    return scipy_assignment_loop(V.numpy())


def test_post_jacobian_gram_eigh_scipy(race, jacobians_f32):
    out = race("post-jacobian", "torch bmm Gram + eigh + scipy loop", lambda: torch_gram_eigh_scipy(jacobians_f32),
               units=len(jacobians_f32), rounds=1)
    assert out.shape == (len(jacobians_f32),)


# ------------------------------------------------------------------ 1c. forward-mode layout

@pytest.fixture(scope="module")
def jacobians_forward_layout(jacobians_f32):
    """The same values laid out as forward mode produces them (vmap(jacfwd) and fastdto.jacobians):
    each sample's columns contiguous, shape (N, n, d) with strides (n d, 1, n)."""
    return jacobians_f32.transpose(1, 2).contiguous().transpose(1, 2)


def test_forward_layout_fastdto(race, jacobians_forward_layout, jacobians_f32):
    J = jacobians_forward_layout
    res = race("post-jacobian, forward-mode layout", "fastdto dto_from_jacobians", lambda: fastdto.dto_from_jacobians(J),
               units=len(J))
    row_major = fastdto.dto_from_jacobians(jacobians_f32[:50])
    assert torch.equal(res.per_sample[:50], row_major.per_sample)  # same sums in the same order


def test_forward_layout_floor(race, jacobians_forward_layout):
    J = jacobians_forward_layout
    race("post-jacobian, forward-mode layout", "floor: J.sum() (one read of J)", lambda: J.sum(), units=len(J),
         rounds=5)


def test_forward_layout_gram_eigh_scipy(race, jacobians_forward_layout):
    J = jacobians_forward_layout
    out = race("post-jacobian, forward-mode layout", "torch bmm Gram + eigh + scipy loop",
               lambda: torch_gram_eigh_scipy(J), units=len(J), rounds=1)
    assert out.shape == (len(J),)


# ------------------------------------------------------------------ 1b. a passive latent

@pytest.fixture(scope="module")
def jacobians_passive(jacobians_f32):
    """The same Jacobians with the last latent's column scaled by 1e-5 (a passive latent of a VAE):
    sigma_min / sigma_max is below gram_rcond, but J with unit columns is well conditioned."""
    J = jacobians_f32[: size(4000, 100)].clone()
    J[:, :, -1] *= 1e-5
    return J


def test_passive_latent_fastdto(race, jacobians_passive):
    res = race("passive latent", "fastdto dto_from_jacobians", lambda: fastdto.dto_from_jacobians(jacobians_passive),
               units=len(jacobians_passive))
    assert not res.svd_path.any()


def test_passive_latent_svd_path(race, jacobians_passive):
    # What these samples cost when sigma_min / sigma_max alone sent them to the QR + Jacobi path.
    res = race("passive latent", "fastdto, every sample on the SVD path",
               lambda: fastdto.dto_from_jacobians(jacobians_passive, gram_rcond=1.0), units=len(jacobians_passive))
    assert res.svd_path.all()
    ours = fastdto.dto_from_jacobians(jacobians_passive)
    torch.testing.assert_close(res.per_sample, ours.per_sample, atol=1e-9, rtol=0)


# ------------------------------------------------------------------ 2. the solver alone

@pytest.fixture(scope="module")
def orthogonal_10():
    rng = np.random.default_rng(0)
    q, r = np.linalg.qr(rng.standard_normal((size(100_000, 2_000), 10, 10)))
    return q


def test_solver_fastdto(race, orthogonal_10):
    race("solver 10x10", "fastdto exact", lambda: fastdto.nearest_signed_permutation(orthogonal_10),
         units=len(orthogonal_10), rounds=5)


def test_solver_fastdto_greedy(race, orthogonal_10):
    race("solver 10x10", "greedy (approximate)", lambda: fastdto.nearest_signed_permutation(orthogonal_10, solver="greedy"),
         units=len(orthogonal_10), rounds=5)


def test_solver_scipy_loop(race, orthogonal_10):
    V = orthogonal_10[: size(20_000, 500)]
    out = race("solver 10x10", "scipy linear_sum_assignment loop", lambda: scipy_assignment_loop(V), units=len(V),
               rounds=1)
    np.testing.assert_allclose(out, fastdto.nearest_signed_permutation(V).distance.numpy(), atol=1e-12)


def test_solver_milp(race, orthogonal_10):
    V = orthogonal_10[: size(200, 10)]
    race("solver 10x10", "milp (HiGHS, paper's program)", lambda: fastdto.nearest_signed_permutation(V, solver="milp"),
         units=len(V), rounds=1)


# ------------------------------------------------------------------ 3. evaluate end to end

def mlp(sizes, act):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), act()]
    return torch.nn.Sequential(*layers[:-1])


DECODERS = {
    "mlp 10-256-1024-4096": lambda: mlp([10, 256, 1024, 4096], torch.nn.Tanh),
    "dsprites 5-1200x3-4096": lambda: mlp([5, 1200, 1200, 1200, 4096], torch.nn.Tanh),
}


@pytest.mark.parametrize("arch", list(DECODERS))
def test_evaluate_fastdto(race, arch):
    torch.manual_seed(0)
    dec = DECODERS[arch]()
    z = torch.randn(size(10_000, 100), dec[0].in_features)
    race(f"evaluate {arch}", "fastdto evaluate", lambda: fastdto.evaluate(dec, z), units=len(z))


@pytest.mark.parametrize("arch", list(DECODERS))
def test_evaluate_vmap_jacfwd_alone(race, arch):
    torch.manual_seed(0)
    dec = DECODERS[arch]()
    z = torch.randn(size(10_000, 100), dec[0].in_features)
    fn = torch.func.vmap(torch.func.jacfwd(dec))
    race(f"evaluate {arch}", "vmap(jacfwd(decoder)) alone", lambda: fn(z), units=len(z))


@pytest.mark.parametrize("arch", list(DECODERS))
def test_evaluate_paper_style_loop(race, arch):
    torch.manual_seed(0)
    dec = DECODERS[arch]()
    z = torch.randn(size(10, 1), dec[0].in_features)  # reverse-mode Jacobians: seconds per sample
    race(f"evaluate {arch}", "paper-style loop (autograd + SVD + MILP)", lambda: reference.paper_style_dto(dec, z),
         units=len(z), rounds=1)


# ------------------------------------------------------------------ 4. peak memory

PEAK_SCRIPT = textwrap.dedent("""
    import sys, time, torch, fastdto

    def hwm_kib():  # this process's peak resident set (VmHWM); ru_maxrss would inherit the parent's
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])

    N = int(sys.argv[1])
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(10, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1024),
                              torch.nn.Tanh(), torch.nn.Linear(1024, 4096))
    z = torch.randn(N, 10)
    before = hwm_kib()
    t = time.perf_counter()
    res = fastdto.evaluate(dec, z)
    print(before, hwm_kib(), time.perf_counter() - t, res.dto)
""")


def test_peak_memory_of_evaluate(benchmark):
    """Peak resident memory of a fresh process running evaluate() at N = 100,000, n = 4096, d = 10."""
    N = size(100_000, 500)
    benchmark.group = "peak memory"

    def run():
        out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(N)], capture_output=True, text=True, check=True)
        return [float(x) for x in out.stdout.split()]
    before_kb, peak_kb, seconds, dto = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(N=N, peak_rss_mib=peak_kb / 1024, before_mib=before_kb / 1024, seconds=seconds)
    print(f"\nevaluate N={N}: peak RSS {peak_kb / 1024:.0f} MiB (before the call {before_kb / 1024:.0f} MiB), {seconds:.1f} s")
    assert peak_kb / 1024 < 2048
