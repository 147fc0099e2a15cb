"""The CUDA backend against the CPU engine and fastdto.reference.

GPU tests skip unless torch sees a GPU *and* the engine was built with nvcc. Every raw call poisons its
output buffers first (NaN, -1, 0, 255), so an element a kernel forgot to write shows up. Inputs are fresh
random draws every run (the seed is in the failure message), plus an adversarial set: repeated, zero and
tiny singular values, d = 1 and d = 64, n < d, non-contiguous layouts, float32 and float64.

The build checks and the argument checks that need no device run everywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import _fastdto_engine as E
import fastdto
from fastdto import reference as ref

BUILD = fastdto.build_info()
HAS_GPU = bool(BUILD["cuda"]) and torch.cuda.is_available() and BUILD["cuda_devices"] > 0
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and an engine built with nvcc")
requires_cuda_build = pytest.mark.skipif(not BUILD["cuda"], reason="engine built without nvcc")

RCOND = fastdto.DEFAULT_GRAM_RCOND
AMB, SVD, NONFIN, CERT = E.FLAG_AMBIGUOUS, E.FLAG_SVD_PATH, E.FLAG_NONFINITE, E.FLAG_CERTIFIED
DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def default_tol(dtype):
    return math.sqrt(E.EPS64 if dtype == torch.float64 else E.EPS32)


# ---------------------------------------------------------------------------------------------------
# build and argument checks (no GPU needed)
# ---------------------------------------------------------------------------------------------------

@requires_cuda_build
def test_build_info_reports_cuda_architectures():
    assert BUILD["cuda"] is True
    assert BUILD["cuda_architectures"] == "80-real,90-real,90-virtual"
    assert BUILD["cuda_runtime"]
    assert isinstance(BUILD["cuda_devices"], int) and BUILD["cuda_devices"] >= 0
    for name in ("cuda_dto_from_jacobians", "cuda_signed_permutations", "cuda_device_count",
                 "cuda_dto_scratch_bytes", "cuda_signed_permutations_scratch_bytes"):
        assert hasattr(E, name)
    assert E.cuda_device_count() == BUILD["cuda_devices"]


@requires_cuda_build
def test_supported_compute_capabilities():
    # sm_80 code runs on every 8.x, sm_90 on 9.0, compute_90 PTX on anything newer; Turing has none.
    for cc in ((8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)):
        assert E.cuda_arch_supported(*cc), cc
    for cc in ((7, 5), (7, 0), (6, 1)):
        assert not E.cuda_arch_supported(*cc), cc


@pytest.mark.skipif(not (BUILD["cuda"] and torch.cuda.is_available()), reason="needs a CUDA build and a GPU")
def test_engine_sees_the_gpus_torch_sees():
    # otherwise every GPU test below would skip silently
    assert BUILD["cuda_devices"] == torch.cuda.device_count(), (
        "the engine's static CUDA runtime cannot use the GPU torch uses (driver older than the CUDA "
        f"{BUILD['cuda_runtime']} runtime the engine was built with?)")


@pytest.mark.skipif(bool(BUILD["cuda"]), reason="only for CPU-only builds")
def test_cpu_only_build_has_no_cuda_entry_points():
    assert BUILD["cuda_architectures"] == "" and BUILD["cuda_devices"] == 0
    assert not hasattr(E, "cuda_dto_from_jacobians")


def _raw_dto(J_ptr=1 << 20, N=2, n=5, d=3, strides=None, dtype="float32", solver="exact", rcond=RCOND,
             tol=1e-6, out=None, V_ptr=0, scratch_ptr=1 << 20, scratch_bytes=None, stream=0, **kw):
    sN, sn, sd = strides or (n * d, d, 1)
    o = out or [1 << 20] * 5
    if scratch_bytes is None:
        scratch_bytes = E.cuda_dto_scratch_bytes(N, n, d, V_ptr != 0) if min(N, n, d) > 0 and d <= 64 else 0
    return E.cuda_dto_from_jacobians(J_ptr, N, n, d, sN, sn, sd, dtype, solver, rcond, tol, *o, V_ptr, scratch_ptr,
                                     scratch_bytes, stream, **kw)


@requires_cuda_build
@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(d=65), ValueError, "exceeds the supported maximum of 64"),
    (dict(d=0), ValueError, "empty"),
    (dict(N=0), ValueError, "empty"),
    (dict(n=0), ValueError, "empty"),
    (dict(dtype="float16"), TypeError, "float32 or float64"),
    (dict(solver="milp"), ValueError, "solver"),
    (dict(rcond=2.0), ValueError, "gram_rcond"),
    (dict(tol=1.0), ValueError, "ambiguity_tol"),
    (dict(strides=(15, -3, 1)), ValueError, "negative stride"),
    (dict(gram_kernel="fast"), ValueError, "gram_kernel"),
    (dict(d=17, gram_kernel="register"), ValueError, "register"),
    (dict(scratch_bytes=1000), ValueError, "scratch: 1000 bytes given"),
])
def test_raw_argument_errors_need_no_device(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        _raw_dto(**kwargs)


@requires_cuda_build
def test_raw_permutation_argument_errors_need_no_device():
    args = dict(V_ptr=1 << 20, N=2, d=3, sN=9, si=3, sj=1, dtype="float64", solver="exact", perm_ptr=8,
                signs_ptr=8, dist_ptr=8, flags_ptr=8, scratch_ptr=1 << 20,
                scratch_bytes=E.cuda_signed_permutations_scratch_bytes(2, 3), stream=0)
    for change, exc in [(dict(d=65), ValueError), (dict(N=0), ValueError), (dict(dtype="int8"), TypeError),
                        (dict(solver="milp"), ValueError), (dict(si=-1), ValueError),
                        (dict(scratch_bytes=100), ValueError)]:
        with pytest.raises(exc):
            E.cuda_signed_permutations(**{**args, **change})


@pytest.mark.skipif(not BUILD["cuda"] or BUILD["cuda_devices"] > 0,
                    reason="needs a CUDA build on a machine without a usable GPU")
def test_without_a_device_the_raw_call_raises_runtime_error():
    assert E.cuda_device_count() == 0
    with pytest.raises(RuntimeError, match="CUDA"):
        _raw_dto()


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------

class SeededGenerator(np.random.Generator):
    """A fresh random generator that remembers its seed (for the failure messages)."""

    def __init__(self, seed: int):
        super().__init__(np.random.PCG64(seed))
        self.seed_value = seed


@pytest.fixture
def rng():
    return SeededGenerator(int(np.random.SeedSequence().entropy % (2**32)))


def orthonormal(rng, n, k):
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def with_singular_values(rng, N, n, s):
    """(N, n, d) float64 with J_i = U_i diag(s) R_i^T, U_i orthonormal columns, R_i orthogonal."""
    s = np.asarray(s, dtype=np.float64)
    d = len(s)
    return np.stack([orthonormal(rng, n, d) * s @ orthonormal(rng, d, d).T for _ in range(N)])


def scratch_tensor(nbytes: int, dev) -> torch.Tensor:
    """Scratch for a raw call, filled with NaN bytes so that a kernel reading what it never wrote shows."""
    return torch.full((nbytes,), 0xFF, dtype=torch.uint8, device=dev)


def run_raw(J: torch.Tensor, solver="exact", rcond=RCOND, tol=None, return_v=True, gram_kernel="auto"):
    """The raw CUDA binding on poisoned outputs; returns NumPy copies."""
    N, n, d = J.shape
    tol = default_tol(J.dtype) if tol is None else tol
    dev = J.device
    out = dict(sigma=torch.full((N, d), math.nan, dtype=torch.float64, device=dev),
               perm=torch.full((N, d), -1, dtype=torch.int64, device=dev),
               signs=torch.zeros((N, d), dtype=torch.int8, device=dev),
               dist=torch.full((N,), math.nan, dtype=torch.float64, device=dev),
               flags=torch.full((N,), 255, dtype=torch.uint8, device=dev))
    V = torch.full((N, d, d), math.nan, dtype=torch.float64, device=dev) if return_v else None
    scratch = scratch_tensor(E.cuda_dto_scratch_bytes(N, n, d, V is not None), dev)
    E.cuda_dto_from_jacobians(J.data_ptr(), N, n, d, *J.stride(), DTYPES[J.dtype], solver, rcond, tol,
                              out["sigma"].data_ptr(), out["perm"].data_ptr(), out["signs"].data_ptr(),
                              out["dist"].data_ptr(), out["flags"].data_ptr(), 0 if V is None else V.data_ptr(),
                              scratch.data_ptr(), scratch.numel(),
                              torch.cuda.current_stream(dev).cuda_stream, device=dev.index,
                              gram_kernel=gram_kernel)
    torch.cuda.synchronize(dev)
    res = {k: v.cpu().numpy() for k, v in out.items()}
    res["V"] = None if V is None else V.cpu().numpy()
    return res


def run_cpu(J: torch.Tensor, solver="exact", rcond=RCOND, tol=None):
    """The CPU engine. It raises on non-finite samples (NaN or Inf in J; a J whose Gram would overflow is
    scaled and taken through the SVD path instead), so those are left out and flagged here."""
    tol = default_tol(J.dtype) if tol is None else tol
    Jc = J.detach().cpu().numpy()
    N, n, d = Jc.shape
    finite = np.isfinite(Jc).all(axis=(1, 2))
    res = dict(sigma=np.full((N, d), np.nan), perm=np.full((N, d), -1, dtype=np.int64),
               signs=np.zeros((N, d), dtype=np.int8), dist=np.full(N, np.nan),
               flags=np.full(N, NONFIN, dtype=np.uint8), V=np.full((N, d, d), np.nan))
    if finite.any():
        out = E.dto_from_jacobians(np.ascontiguousarray(Jc[finite]), solver, rcond, tol, True, 0)
        for key, value in zip(("sigma", "perm", "signs", "dist", "flags", "V"), out):
            res[key][finite] = value
    return res


def check_written(g, d, finite):
    """Every output of every finite sample was written (and holds a legal value)."""
    assert (g["flags"] != 255).all(), "a flag was not written"
    f = finite
    assert np.isfinite(g["sigma"][f]).all() and np.isfinite(g["dist"][f]).all()
    assert (np.sort(g["perm"][f], axis=1) == np.arange(d)).all(), "perm rows must be permutations"
    assert np.isin(g["signs"][f], [-1, 1]).all()
    if g["V"] is not None:
        assert np.isfinite(g["V"][f]).all()


def compare(J: torch.Tensor, seed=None, *, solver="exact", rcond=RCOND, tol=None, gram_kernel="auto",
            with_reference=True, v_atol=1e-8):
    """GPU vs CPU engine (and vs the reference on the well-posed samples). Returns the GPU outputs."""
    msg = f"seed={seed}, shape={tuple(J.shape)}, strides={J.stride()}, dtype={J.dtype}, kernel={gram_kernel}"
    N, n, d = J.shape
    g = run_raw(J, solver, rcond, tol, gram_kernel=gram_kernel)
    c = run_cpu(J, solver, rcond, tol)
    finite = (c["flags"] & NONFIN) == 0
    assert ((g["flags"] & NONFIN) == (c["flags"] & NONFIN)).all(), msg
    check_written(g, d, finite)
    f = finite
    smax = np.maximum(c["sigma"][f, :1], 1e-300)
    assert (np.abs(g["sigma"][f] - c["sigma"][f]) <= 1e-10 * smax + 1e-300).all(), msg
    assert ((g["flags"][f] & (AMB | SVD)) == (c["flags"][f] & (AMB | SVD))).all(), msg
    clear = f & ((c["flags"] & AMB) == 0)  # V unique: everything must agree
    assert (g["flags"][clear] == c["flags"][clear]).all(), msg
    assert (g["perm"][clear] == c["perm"][clear]).all(), msg
    assert (g["signs"][clear] == c["signs"][clear]).all(), msg
    np.testing.assert_allclose(g["dist"][clear], c["dist"][clear], rtol=0, atol=1e-9, err_msg=msg)
    np.testing.assert_allclose(g["V"][clear], c["V"][clear], rtol=0, atol=v_atol, err_msg=msg)
    # ambiguous samples: V is not unique, but the GPU's answer must be self-consistent
    amb = f & ~clear
    if amb.any():
        Va = g["V"][amb]
        np.testing.assert_allclose(Va.transpose(0, 2, 1) @ Va, np.broadcast_to(np.eye(d), Va.shape),
                                   atol=1e-6, err_msg=msg)
        np.testing.assert_allclose(ref.frobenius_distance(Va, g["perm"][amb], g["signs"][amb]),
                                   g["dist"][amb], atol=1e-12, err_msg=msg)
    if with_reference and clear.any() and solver == "exact":
        r = ref.dto_reference(J.detach().cpu().double().numpy()[clear])
        np.testing.assert_allclose(g["dist"][clear], r["per_sample"], rtol=0, atol=1e-7, err_msg=msg)
        np.testing.assert_allclose(g["sigma"][clear], r["sigma"], rtol=1e-9,
                                   atol=1e-9 * float(smax.max()), err_msg=msg)
    return g


def layouts(base: np.ndarray, dtype, dev):
    """The same (N, n, d) values in several memory layouts on the device."""
    N, n, d = base.shape
    t = torch.as_tensor(base, dtype=dtype)
    out = {"contiguous": t.to(dev)}
    out["column-contiguous"] = t.permute(2, 0, 1).contiguous().to(dev).permute(1, 2, 0)  # (d, N, n) buffer
    out["transposed"] = t.transpose(1, 2).contiguous().to(dev).transpose(1, 2)  # (N, d, n) buffer
    wide = torch.zeros((N, 2 * n + 1, 3 * d), dtype=dtype)
    wide[:, 1::2, ::3] = t
    out["strided"] = wide.to(dev)[:, 1::2, ::3]
    padded = torch.zeros((N + 1, n, d + 5), dtype=dtype)
    padded[1:, :, 2:d + 2] = t
    out["padded-offset"] = padded.to(dev)[1:, :, 2:d + 2]
    return out


# ---------------------------------------------------------------------------------------------------
# dto_from_jacobians: GPU vs CPU vs reference
# ---------------------------------------------------------------------------------------------------

@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_all_layouts(rng, dtype):
    base = rng.standard_normal((40, 300, 10))
    for name, J in layouts(base, dtype, "cuda").items():
        assert J.shape == (40, 300, 10)
        compare(J, rng.seed_value)


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 5, 8, 10, 11, 12, 13, 16, 17, 24, 32, 33, 48, 64])
def test_every_size_both_gram_kernels(rng, dtype, d):
    n = max(d + 3, 97)
    base = rng.standard_normal((12, n, d))
    kernels = ["auto", "tiled"] + (["register"] if d <= 16 else [])
    for name, J in layouts(base, dtype, "cuda").items():
        for kernel in kernels:
            compare(J, rng.seed_value, gram_kernel=kernel)


@requires_gpu
@pytest.mark.parametrize("n", [1, 2, 255, 256, 257, 1000, 4096])
def test_row_tiling_edges(rng, n):
    for dtype in (torch.float32, torch.float64):
        for d in (4, 10, 20):
            J = torch.as_tensor(rng.standard_normal((6, n, d)), dtype=dtype, device="cuda")
            compare(J, rng.seed_value)
            compare(J.permute(2, 0, 1).contiguous().permute(1, 2, 0), rng.seed_value, gram_kernel="tiled")


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adversarial_spectra(rng, dtype):
    d, n = 8, 40
    cases = {
        "repeated": [3, 3, 2, 2, 2, 1, 0.5, 0.5],
        "all equal": [1.0] * d,
        "zero tail": [5, 4, 3, 2, 1, 0, 0, 0],
        "one zero": [5, 4, 3, 2, 1, 0.7, 0.3, 0],
        "ill-conditioned": np.logspace(0, -6, d),  # SVD path, V still unique
        "tiny": np.logspace(-150, -152, d) if dtype == torch.float64 else np.logspace(-15, -17, d),
    }
    for name, s in cases.items():
        J = torch.as_tensor(with_singular_values(rng, 9, n, s), dtype=dtype, device="cuda")
        g = compare(J, f"{rng.seed_value} ({name})", v_atol=1e-6)
        if name == "ill-conditioned" and dtype == torch.float64:
            assert (g["flags"] & SVD).all()
            assert not (g["flags"] & AMB).any()
    # zero matrices, zero columns, a signed permutation (DtO = 0), a 2-D rotation (known answer)
    J = rng.standard_normal((8, n, d))
    J[0] = 0
    J[1][:, 3] = 0
    J[2][:, [1, 5]] = 0
    J[3] = 0
    J[3][np.arange(d), rng.permutation(d)] = rng.choice([-2.0, 2.0], d) * np.arange(1, d + 1)
    theta = 0.3
    J[4] = 0
    J[4][0, 0], J[4][0, 1], J[4][1, 0], J[4][1, 1] = 3 * math.cos(theta), -3 * math.sin(theta), \
        math.sin(theta), math.cos(theta)
    J[4][2:d, 2:d] = np.diag(np.arange(10.0, 10.0 + d - 2))
    g = compare(torch.as_tensor(J, dtype=dtype, device="cuda"), rng.seed_value)
    assert g["flags"][0] & AMB
    assert g["dist"][3] == pytest.approx(0.0, abs=1e-12)


@requires_gpu
@pytest.mark.parametrize("shape", [(5, 1, 1), (5, 7, 1), (5, 1, 6), (5, 3, 8), (4, 2, 64), (3, 70, 64)])
def test_degenerate_shapes(rng, shape):
    for dtype in (torch.float32, torch.float64):
        J = torch.as_tensor(rng.standard_normal(shape), dtype=dtype, device="cuda")
        compare(J, rng.seed_value)


@requires_gpu
def test_expanded_batch_and_solvers(rng):
    one = torch.as_tensor(rng.standard_normal((1, 50, 6)), device="cuda")
    J = one.expand(7, 50, 6)  # batch stride 0
    assert J.stride()[0] == 0
    g = compare(J, rng.seed_value)
    assert (g["dist"] == g["dist"][0]).all()
    V = torch.as_tensor(rng.standard_normal((30, 60, 12)), device="cuda")
    compare(V, rng.seed_value, solver="greedy")
    compare(V, rng.seed_value, rcond=1.0)  # every sample on the SVD path
    compare(V, rng.seed_value, rcond=0.0)  # none
    compare(V, rng.seed_value, tol=0.5)    # most samples ambiguous


@requires_gpu
def test_non_finite_samples_are_flagged_and_nothing_else_breaks(rng):
    for dtype in (torch.float32, torch.float64):
        Jn = rng.standard_normal((10, 30, 5))
        Jn[2, 4, 1] = np.nan
        Jn[6, 0, 0] = np.inf
        if dtype == torch.float64:
            Jn[8, 3, 3] = 1e200  # finite, but its square overflows: scaled, on the SVD path, not flagged
        J = torch.as_tensor(Jn, dtype=dtype, device="cuda")
        g = compare(J, rng.seed_value)
        bad = [2, 6]
        assert ((g["flags"] & NONFIN) > 0).nonzero()[0].tolist() == bad
        assert (g["flags"][bad] == NONFIN).all()
        if dtype == torch.float64:
            assert g["flags"][8] & SVD and g["sigma"][8, 0] == pytest.approx(1e200, rel=1e-12)
        # the public API raises the CPU engine's error, naming the sample in the caller's numbering
        with pytest.raises(ValueError) as gpu_err:
            fastdto.dto_from_jacobians(J, chunk_size=4)
        with pytest.raises(ValueError) as cpu_err:
            fastdto.dto_from_jacobians(J.cpu(), chunk_size=4)
        assert str(gpu_err.value) == str(cpu_err.value)
        assert "J[2]" in str(gpu_err.value)
        # the first bad sample in a later chunk (J[6] is sample 3 of J[3:], in its second chunk of 2)
        with pytest.raises(ValueError, match=r"J\[3\]"):
            fastdto.dto_from_jacobians(J[3:].clone(), chunk_size=2)


@requires_gpu
def test_svd_pool_takes_several_rounds(rng):
    # n * d * 8 bytes per pool slot: 51 MB here, so the 256 MB pool holds 5 slots for 12 flagged samples
    N, n, d = 12, 400_000, 16
    s = np.logspace(0, -7, d)
    U = torch.linalg.qr(torch.randn(N, n, d, device="cuda", dtype=torch.float64)).Q
    R = torch.as_tensor(np.stack([orthonormal(rng, d, d) for _ in range(N)]), device="cuda")
    J = ((U * torch.as_tensor(s, device="cuda")) @ R.mT).float()
    g = compare(J, rng.seed_value, with_reference=False, v_atol=1e-6)
    assert (g["flags"] & SVD).all()


@requires_gpu
def test_chunk_boundary(rng):
    # without V, G and V scratch take 2 * 64 * 64 * 8 bytes per sample: chunks of 8191 under 512 MiB
    N, n, d = 8200, 64, 64
    J = torch.randn(N, n, d, device="cuda")
    out = [torch.full((N, d), math.nan, dtype=torch.float64, device="cuda"),
           torch.full((N, d), -1, dtype=torch.int64, device="cuda"),
           torch.zeros((N, d), dtype=torch.int8, device="cuda"),
           torch.full((N,), math.nan, dtype=torch.float64, device="cuda"),
           torch.full((N,), 255, dtype=torch.uint8, device="cuda")]
    scratch = scratch_tensor(E.cuda_dto_scratch_bytes(N, n, d, False), "cuda")
    E.cuda_dto_from_jacobians(J.data_ptr(), N, n, d, *J.stride(), "float32", "exact", RCOND, default_tol(J.dtype),
                              *[o.data_ptr() for o in out], 0, scratch.data_ptr(), scratch.numel(),
                              torch.cuda.current_stream().cuda_stream)
    sigma, perm, signs, dist, flags = [o.cpu().numpy() for o in out]
    g = dict(sigma=sigma, perm=perm, signs=signs, dist=dist, flags=flags, V=None)
    check_written(g, d, np.ones(N, dtype=bool))
    sl = slice(8180, 8200)  # across the boundary
    c = run_cpu(J[sl])
    np.testing.assert_allclose(sigma[sl], c["sigma"], rtol=1e-10)
    clear = (c["flags"] & AMB) == 0
    np.testing.assert_allclose(dist[sl][clear], c["dist"][clear], atol=1e-9)


# ---------------------------------------------------------------------------------------------------
# signed permutations
# ---------------------------------------------------------------------------------------------------

def run_raw_perm(V: torch.Tensor, solver="exact"):
    N, d, _ = V.shape
    dev = V.device
    out = [torch.full((N, d), -1, dtype=torch.int64, device=dev), torch.zeros((N, d), dtype=torch.int8, device=dev),
           torch.full((N,), math.nan, dtype=torch.float64, device=dev),
           torch.full((N,), 255, dtype=torch.uint8, device=dev)]
    scratch = scratch_tensor(E.cuda_signed_permutations_scratch_bytes(N, d), dev)
    E.cuda_signed_permutations(V.data_ptr(), N, d, *V.stride(), DTYPES[V.dtype], solver,
                               *[o.data_ptr() for o in out], scratch.data_ptr(), scratch.numel(),
                               torch.cuda.current_stream(dev).cuda_stream,
                               device=dev.index)
    torch.cuda.synchronize(dev)
    return [o.cpu().numpy() for o in out]


@requires_gpu
@pytest.mark.parametrize("d", [1, 2, 5, 10, 16, 17, 32, 40, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_permutations_match_cpu(rng, d, dtype):
    N = 50
    Vs = np.stack([orthonormal(rng, d, d) for _ in range(N)])
    Vs[:10] = rng.standard_normal((10, d, d))            # not orthogonal: weights min(|v|, 1)
    Vs[10:15] = np.abs(Vs[10:15]).round(1)               # ties
    Vs[15] = 0.0
    Vs[16] = np.eye(d)[rng.permutation(d)] * rng.choice([-1.0, 1.0], d)[:, None]
    Vn = Vs.copy()
    Vn[20, 0, d - 1] = np.nan
    for solver in ("exact", "greedy"):
        for V in (torch.as_tensor(Vs, dtype=dtype), torch.as_tensor(Vn, dtype=dtype)):
            f = np.isfinite(V.numpy()).all(axis=(1, 2))  # the CPU engine raises on the others
            cp, cs, cd, cf = E.signed_permutations(np.ascontiguousarray(V.numpy()[f]), solver, 0)
            wide = torch.zeros((N, d, 2 * d), dtype=dtype)
            wide[:, :, ::2] = V
            for Vd in (V.cuda(), V.mT.contiguous().cuda().mT, wide.cuda()[:, :, ::2]):
                gp, gs, gd, gf = run_raw_perm(Vd, solver)
                assert (gf[~f] == NONFIN).all() and (gf[f] == cf).all()
                assert (gp[f] == cp).all() and (gs[f] == cs).all()
                # Same choices; the distance's sum runs in another order (vector lanes on the CPU).
                np.testing.assert_allclose(gd[f], cd, rtol=1e-14, atol=1e-15)
    perm, signs, dist = ref.signed_permutation_lsa(Vs[15:])
    gp, gs, gd, gf = run_raw_perm(torch.as_tensor(Vs[15:], device="cuda"))
    np.testing.assert_allclose(gd, dist, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# the public API on CUDA tensors
# ---------------------------------------------------------------------------------------------------

@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_public_api_matches_cpu(rng, dtype):
    J = torch.as_tensor(rng.standard_normal((300, 80, 7)), dtype=dtype)
    for kw in (dict(), dict(return_v=True), dict(solver="greedy"), dict(active=[0, 2, 5]), dict(chunk_size=64)):
        rg = fastdto.dto_from_jacobians(J.cuda(), **kw)
        rc = fastdto.dto_from_jacobians(J, **kw)
        assert rg.per_sample.is_cuda and rg.singular_values.is_cuda and rg.ambiguous.is_cuda
        assert rg.per_sample.dtype == torch.float64 and rg.permutation.dtype == torch.int64
        assert rg.signs.dtype == torch.int8 and rg.certified.dtype == torch.bool
        assert rg.dto == pytest.approx(rc.dto, abs=1e-9) and rg.std == pytest.approx(rc.std, abs=1e-9)
        clear = ~rc.ambiguous
        torch.testing.assert_close(rg.per_sample.cpu()[clear], rc.per_sample[clear], rtol=0, atol=1e-9)
        torch.testing.assert_close(rg.singular_values.cpu(), rc.singular_values, rtol=1e-10, atol=1e-12)
        assert torch.equal(rg.permutation.cpu()[clear], rc.permutation[clear])
        assert torch.equal(rg.svd_path.cpu(), rc.svd_path) and torch.equal(rg.ambiguous.cpu(), rc.ambiguous)
        assert (rg.V is None) == (rc.V is None)
    # one matrix, 2-D input; nearest_signed_permutation on a CUDA tensor (batched and single)
    r1 = fastdto.dto_from_jacobians(J[0].cuda())
    assert r1.per_sample.shape == (1,)
    V = torch.as_tensor(np.stack([orthonormal(rng, 7, 7) for _ in range(20)]), dtype=dtype)
    for solver in ("exact", "greedy", "milp"):
        sg = fastdto.nearest_signed_permutation(V.cuda(), solver=solver)
        sc = fastdto.nearest_signed_permutation(V, solver=solver)
        assert sg.permutation.is_cuda and sg.distance.is_cuda
        assert torch.equal(sg.permutation.cpu(), sc.permutation) and torch.equal(sg.signs.cpu(), sc.signs)
        torch.testing.assert_close(sg.distance.cpu(), sc.distance, rtol=0, atol=1e-12)
    single = fastdto.nearest_signed_permutation(V[0].cuda())
    assert single.permutation.shape == (7,) and single.permutation.is_cuda


@requires_gpu
def test_public_api_errors_match_cpu(rng):
    good = torch.randn(4, 10, 3)
    bad_inputs = [torch.randn(4, 10, 65), torch.randn(4, 10, 3).half(), torch.empty(0, 10, 3),
                  torch.randn(4, 10, 3).to(torch.int32)]
    nan = good.clone()
    nan[1, 2, 0] = math.nan
    bad_inputs.append(nan)
    for J in bad_inputs:
        with pytest.raises(Exception) as e_cpu:
            fastdto.dto_from_jacobians(J)
        with pytest.raises(Exception) as e_gpu:
            fastdto.dto_from_jacobians(J.cuda())
        assert type(e_gpu.value) is type(e_cpu.value) and str(e_gpu.value) == str(e_cpu.value)
    Vn = torch.randn(3, 4, 4)
    Vn[2, 1, 1] = math.inf
    with pytest.raises(ValueError) as e_cpu:
        fastdto.nearest_signed_permutation(Vn)
    with pytest.raises(ValueError) as e_gpu:
        fastdto.nearest_signed_permutation(Vn.cuda())
    assert str(e_gpu.value) == str(e_cpu.value)


@requires_gpu
def test_evaluate_on_cuda_matches_cpu():
    torch.manual_seed(0)
    dec = torch.nn.Sequential(torch.nn.Linear(6, 64), torch.nn.Tanh(), torch.nn.Linear(64, 200)).double()
    z = torch.randn(500, 6, dtype=torch.float64)
    rc = fastdto.evaluate(dec, z, chunk_size=128)
    rg = fastdto.evaluate(dec.cuda(), z.cuda(), chunk_size=128)  # column-contiguous J views
    assert rg.per_sample.is_cuda
    assert rg.dto == pytest.approx(rc.dto, abs=1e-9)
    torch.testing.assert_close(rg.singular_values.cpu(), rc.singular_values, rtol=1e-9, atol=1e-12)
    rm = fastdto.evaluate(dec.cuda(), z[:6].cuda(), solver="milp", return_v=True)
    assert rm.V.is_cuda and rm.per_sample.is_cuda


@requires_gpu
def test_runs_on_the_callers_stream(rng):
    J = torch.as_tensor(rng.standard_normal((64, 128, 10)), dtype=torch.float32)
    expected = fastdto.dto_from_jacobians(J)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        Jd = J.to("cuda", non_blocking=False)
        r = fastdto.dto_from_jacobians(Jd)
    s.synchronize()
    assert r.dto == pytest.approx(expected.dto, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# raw-binding validation on the device
# ---------------------------------------------------------------------------------------------------

@requires_gpu
def test_raw_pointer_validation():
    J = torch.randn(2, 5, 3, device="cuda")
    outs = [torch.empty((2, 3), dtype=torch.float64, device="cuda"), torch.empty((2, 3), dtype=torch.int64, device="cuda"),
            torch.empty((2, 3), dtype=torch.int8, device="cuda"), torch.empty(2, dtype=torch.float64, device="cuda"),
            torch.empty(2, dtype=torch.uint8, device="cuda")]
    ptrs = [o.data_ptr() for o in outs]
    host = np.zeros(64, dtype=np.float64)
    scratch = scratch_tensor(E.cuda_dto_scratch_bytes(2, 5, 3, False), "cuda")
    ok = dict(out=ptrs, scratch_ptr=scratch.data_ptr())
    _raw_dto(J.data_ptr(), **ok)  # valid call
    torch.cuda.synchronize()
    with pytest.raises(ValueError, match="not device memory"):
        _raw_dto(host.ctypes.data, **ok)
    with pytest.raises(ValueError, match="null pointer"):
        _raw_dto(0, **ok)
    with pytest.raises(ValueError, match="aligned"):
        _raw_dto(J.data_ptr() + 2, **ok)
    with pytest.raises(ValueError, match="not device memory"):
        _raw_dto(J.data_ptr(), out=ptrs[:3] + [host.ctypes.data] + ptrs[4:], scratch_ptr=scratch.data_ptr())
    with pytest.raises(ValueError, match="V"):
        _raw_dto(J.data_ptr(), V_ptr=host.ctypes.data, **ok)
    with pytest.raises(ValueError, match="scratch is not device memory"):
        _raw_dto(J.data_ptr(), out=ptrs, scratch_ptr=host.ctypes.data)
    with pytest.raises(ValueError, match="scratch is not aligned"):
        _raw_dto(J.data_ptr(), out=ptrs, scratch_ptr=scratch.data_ptr() + 8)
    with pytest.raises(ValueError, match="device"):
        _raw_dto(J.data_ptr(), device=torch.cuda.device_count(), **ok)
