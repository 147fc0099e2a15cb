"""GPU benchmarks of fastdto's CUDA engine and the baselines it races (skip without a GPU).

Run on a GPU machine (about 40 GB of device memory at the default sizes):

    python -m pytest bench/test_bench_cuda.py -p no:cacheprovider \
        --benchmark-columns=min,median,max,rounds --benchmark-sort=name

(add --benchmark-disable to only check that everything runs). pytest-benchmark's columns are wall-clock
times of one call followed by torch.cuda.synchronize(); ``gpu_ms`` in each benchmark's extra_info
(``--benchmark-json=out.json``) is the best of a few CUDA-event timings of the same call. Baselines too
slow for the full batch run on a subset and report ``extrapolated_ms`` for the full batch.

FASTDTO_BENCH_SCALE=smoke shrinks every size (as for the CPU benchmarks). Sizes (environment variables):
FASTDTO_BENCH_N (100000 Jacobians), FASTDTO_BENCH_ROWS (4096),
FASTDTO_BENCH_D (10), FASTDTO_BENCH_SUBSET (2000, for the per-matrix SVD baseline),
FASTDTO_BENCH_SOLVER_N (1000000 matrices), FASTDTO_BENCH_LATENTS (20000, end to end).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import fastdto
from fastdto import reference as ref

_info = fastdto.build_info()
HAS_GPU = bool(_info["cuda"]) and torch.cuda.is_available() and _info["cuda_devices"] > 0
pytestmark = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and an engine built with nvcc")

SMOKE = os.environ.get("FASTDTO_BENCH_SCALE", "full") == "smoke"  # as in bench/conftest.py


def _env(name, full, smoke):
    return int(os.environ.get(name, smoke if SMOKE else full))


N = _env("FASTDTO_BENCH_N", 100_000, 2_000)
ROWS = _env("FASTDTO_BENCH_ROWS", 4096, 256)
D = _env("FASTDTO_BENCH_D", 10, 10)
SUBSET = _env("FASTDTO_BENCH_SUBSET", 2000, 50)
SOLVER_N = _env("FASTDTO_BENCH_SOLVER_N", 1_000_000, 10_000)
LATENTS = _env("FASTDTO_BENCH_LATENTS", 20_000, 500)


def cuda_ms(fn, reps: int = 3) -> float:
    """Best CUDA-event time of fn() in milliseconds (after one warm-up call)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end))
    return best


def gpu_race(benchmark, fn, rounds: int = 3, scale: float = 1.0, **info):
    """Times fn with CUDA events (extra_info) and with pytest-benchmark (wall clock + sync)."""
    if not benchmark.disabled:
        ms = cuda_ms(fn)
        benchmark.extra_info["gpu_ms"] = ms
        if scale != 1.0:
            benchmark.extra_info["extrapolated_ms"] = ms * scale
    benchmark.extra_info.update(info)

    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return benchmark.pedantic(run, rounds=rounds, iterations=1)


def need_memory(nbytes: int):
    free, _ = torch.cuda.mem_get_info()
    if free < nbytes * 1.1:
        pytest.skip(f"needs {nbytes / 2**30:.1f} GiB free on the GPU, {free / 2**30:.1f} GiB available")


@pytest.fixture(scope="module")
def J():
    """(N, ROWS, D) float32 Jacobians, contiguous, on the GPU (16.4 GB at the default sizes)."""
    need_memory(N * ROWS * D * 4)
    g = torch.Generator(device="cuda").manual_seed(0)
    out = torch.randn(N, ROWS, D, device="cuda", generator=g)
    yield out
    del out
    torch.cuda.empty_cache()


def _sizes(**extra):
    info = dict(N=N, n=ROWS, d=D)
    info.update(extra)
    info["bytes"] = info["N"] * info["n"] * info["d"] * 4
    return info


# ---- DtO from Jacobians on the device ----

def test_bench_fastdto_cuda(benchmark, J):
    res = gpu_race(benchmark, lambda: fastdto.dto_from_jacobians(J, chunk_size=N), **_sizes())
    assert res.per_sample.is_cuda and np.isfinite(res.dto)
    if not benchmark.disabled:
        benchmark.extra_info["GB_per_s"] = N * ROWS * D * 4 / benchmark.extra_info["gpu_ms"] / 1e6


def test_bench_fastdto_cuda_column_layout(benchmark, J):
    """The (B, n, k) views of (k, B, n) buffers that fastdto.evaluate produces (sn == 1)."""
    Jc = J[: N // 4].permute(2, 0, 1).contiguous().permute(1, 2, 0)
    res = gpu_race(benchmark, lambda: fastdto.dto_from_jacobians(Jc, chunk_size=N), **_sizes(N=N // 4))
    assert np.isfinite(res.dto)


def test_bench_copy_bandwidth_floor(benchmark, J):
    """Device-to-device copy of J: reads and writes every byte once; reading alone takes about half."""
    need_memory(J.numel() * 4)
    out = torch.empty_like(J)
    gpu_race(benchmark, lambda: out.copy_(J), **_sizes())
    if not benchmark.disabled:
        ms = benchmark.extra_info["gpu_ms"]
        benchmark.extra_info["copy_GB_per_s"] = 2 * J.numel() * 4 / ms / 1e6
        benchmark.extra_info["read_floor_ms"] = ms / 2


def _svd_scipy(Js):
    V = torch.linalg.svd(Js, full_matrices=False).Vh.mT.double().cpu().numpy()
    perm, signs, dist = ref.signed_permutation_lsa(V)
    return float(dist.mean())


def test_bench_torch_svd_scipy_assignment(benchmark, J):
    """torch.linalg.svd per matrix on the GPU + SciPy assignment, on a subset (extrapolated)."""
    Js = J[:SUBSET]
    gpu_race(benchmark, lambda: _svd_scipy(Js), rounds=1, scale=N / SUBSET, **_sizes(subset=SUBSET))


def _gram_eigh(Jx):
    G = torch.bmm(Jx.mT, Jx).double()  # float32 GEMM (TF32 off by default), float64 eigen
    _, V = torch.linalg.eigh(G)
    return fastdto.nearest_signed_permutation(V.flip(-1)).distance.mean()


def test_bench_bmm_gram_eigh_fastest_assignment(benchmark, J):
    """bmm Gram + batched torch.linalg.eigh + fastdto's GPU assignment (the fastest available)."""
    gpu_race(benchmark, lambda: _gram_eigh(J), **_sizes())


# ---- the assignment alone ----

@pytest.fixture(scope="module")
def V_solver():
    need_memory(SOLVER_N * 100 * 8 * 4)
    g = torch.Generator(device="cuda").manual_seed(1)
    return torch.linalg.qr(torch.randn(SOLVER_N, 10, 10, device="cuda", dtype=torch.float64, generator=g)).Q


def test_bench_solver_cuda(benchmark, V_solver):
    res = gpu_race(benchmark, lambda: fastdto.nearest_signed_permutation(V_solver), N=SOLVER_N, d=10)
    assert res.distance.is_cuda
    if not benchmark.disabled:
        benchmark.extra_info["certified_fraction"] = float(res.certified.double().mean())


def test_bench_solver_scipy_subset(benchmark, V_solver):
    M = min(SOLVER_N, 20_000)
    Vc = V_solver[:M].cpu().numpy()
    benchmark.extra_info.update(N=M, d=10, extrapolated_factor=SOLVER_N / M)
    benchmark.pedantic(ref.signed_permutation_lsa, args=(Vc,), rounds=1, iterations=1)


# ---- end to end: decoder -> Jacobians -> DtO ----

@pytest.fixture(scope="module")
def mlp():
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(10, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1024),
                              torch.nn.ReLU(), torch.nn.Linear(1024, 4096)).cuda().eval()
    z = torch.randn(LATENTS, 10, device="cuda")
    return dec, z


def _vmap_jacfwd_pipeline(dec, z, chunk=2048):
    def f(zi):
        return dec(zi[None])[0]

    jf = torch.func.vmap(torch.func.jacfwd(f))
    dists = []
    with torch.no_grad():
        for s in range(0, z.shape[0], chunk):
            Jc = jf(z[s:s + chunk])  # (B, 4096, 10)
            dists.append(_gram_eigh_dist(Jc))
    return torch.cat(dists).mean()


def _gram_eigh_dist(Jc):
    _, V = torch.linalg.eigh(torch.bmm(Jc.mT, Jc).double())
    return fastdto.nearest_signed_permutation(V.flip(-1)).distance


def test_bench_evaluate_end_to_end(benchmark, mlp):
    dec, z = mlp
    res = gpu_race(benchmark, lambda: fastdto.evaluate(dec, z), rounds=2, N=LATENTS, n=4096, d=10)
    assert res.per_sample.is_cuda


def test_bench_vmap_jacfwd_end_to_end(benchmark, mlp):
    """torch.func.vmap(jacfwd) Jacobians + bmm Gram + eigh + fastdto's GPU assignment."""
    dec, z = mlp
    gpu_race(benchmark, lambda: _vmap_jacfwd_pipeline(dec, z), rounds=2, N=LATENTS, n=4096, d=10)


def test_bench_vmap_jacfwd_jacobians_only(benchmark, mlp):
    dec, z = mlp

    def jac_only():
        jf = torch.func.vmap(torch.func.jacfwd(lambda zi: dec(zi[None])[0]))
        with torch.no_grad():
            for s in range(0, z.shape[0], 2048):
                jf(z[s:s + 2048])

    gpu_race(benchmark, jac_only, rounds=2, N=LATENTS, n=4096, d=10)
