"""Tests of the slow reference oracle, fastdto.reference.

The three nearest-signed-permutation solvers (assignment, MILP, brute force)
are checked against each other and against answers known in closed form.
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastdto import reference as ref

SOLVERS = {
    "lsa": ref.signed_permutation_lsa,
    "milp": ref.signed_permutation_milp,
    "bruteforce": ref.signed_permutation_bruteforce,
}


def random_orthogonal(rng, d):
    """Haar-distributed orthogonal matrix: QR of a Gaussian with the sign fix."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def random_signed_permutation(rng, d):
    perm = rng.permutation(d).astype(np.int64)
    signs = rng.choice(np.array([-1, 1], dtype=np.int8), size=d)
    return perm, signs


def dense(perm, signs):
    d = len(perm)
    P = np.zeros((d, d))
    P[np.arange(d), perm] = signs
    return P


def assert_valid_signed_perm(perm, signs, d):
    assert perm.dtype == np.int64 and signs.dtype == np.int8
    assert perm.shape == (d,) and signs.shape == (d,)
    assert sorted(perm.tolist()) == list(range(d))
    assert set(np.unique(signs).tolist()) <= {-1, 1}


def bruteforce_min_l1(V):
    """Independent, loop-based minimum of ||V - P||_1 over all signed permutations."""
    d = V.shape[0]
    best = math.inf
    for perm in itertools.permutations(range(d)):
        for signs in itertools.product((1, -1), repeat=d):
            best = min(best, np.abs(V - dense(np.array(perm), np.array(signs))).sum())
    return best


# ---------------------------------------------------------------------------
# orthogonal matrices: all solvers agree
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("d", range(1, 7))
def test_solvers_agree_on_orthogonal(d):
    rng = np.random.default_rng(1000 + d)
    for _ in range(4):
        V = random_orthogonal(rng, d)
        results = {name: solve(V) for name, solve in SOLVERS.items()}
        dists = {name: float(r[2]) for name, r in results.items()}
        for name, (perm, signs, dist) in results.items():
            assert_valid_signed_perm(perm, signs, d)
            assert np.ndim(dist) == 0
            # the returned signed permutation achieves the returned distance
            assert np.linalg.norm(V - dense(perm, signs)) == pytest.approx(dist, abs=1e-12)
            # signs follow the convention: sign of the picked entry
            picked = V[np.arange(d), perm]
            assert np.all(signs == np.where(picked < 0, -1, 1))
            assert dist == pytest.approx(dists["bruteforce"], abs=1e-9), (name, dists)
        # closed form for orthogonal V
        perm = results["lsa"][0]
        trace = np.abs(V[np.arange(d), perm]).sum()
        assert dists["lsa"] == pytest.approx(math.sqrt(max(2 * (d - trace), 0.0)), abs=1e-6)


def test_batched_equals_single():
    rng = np.random.default_rng(7)
    Vs = np.stack([random_orthogonal(rng, 4) for _ in range(5)])
    for name, solve in SOLVERS.items():
        perm, signs, dist = solve(Vs)
        assert perm.shape == (5, 4) and signs.shape == (5, 4) and dist.shape == (5,)
        for k in range(5):
            p1, s1, d1 = solve(Vs[k])
            np.testing.assert_array_equal(perm[k], p1)
            np.testing.assert_array_equal(signs[k], s1)
            assert dist[k] == pytest.approx(d1, abs=1e-15)


# ---------------------------------------------------------------------------
# general square matrices: the L1 objective agrees
# ---------------------------------------------------------------------------

def check_general(V):
    d = V.shape[0]
    target = bruteforce_min_l1(V) if d <= 4 else None
    objectives = {}
    for name, solve in SOLVERS.items():
        perm, signs, _ = solve(V)
        assert_valid_signed_perm(perm, signs, d)
        objectives[name] = np.abs(V - dense(perm, signs)).sum()
        assert ref.l1_distance(V, perm, signs) == pytest.approx(objectives[name], abs=1e-12)
    for name, value in objectives.items():
        assert value == pytest.approx(objectives["bruteforce"], abs=1e-9), objectives
    if target is not None:
        assert objectives["bruteforce"] == pytest.approx(target, abs=1e-12)


@pytest.mark.parametrize("d", range(1, 6))
def test_solvers_agree_on_general_matrices(d):
    rng = np.random.default_rng(2000 + d)
    for scale in (0.3, 1.0, 2.5):
        check_general(scale * rng.standard_normal((d, d)))
    # exact zeros and entries beyond 1
    V = rng.standard_normal((d, d)) * 2
    V[rng.random((d, d)) < 0.4] = 0.0
    check_general(V)


@settings(max_examples=25, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(1, 4).flatmap(
        lambda d: hnp.arrays(
            np.float64, (d, d),
            elements=st.floats(-3, 3, allow_nan=False, allow_subnormal=False),
        )
    )
)
def test_solvers_agree_property(V):
    check_general(V)


def test_zero_matrix_signs_are_plus():
    for name, solve in SOLVERS.items():
        perm, signs, dist = solve(np.zeros((3, 3)))
        assert np.all(signs == 1), name
        assert dist == pytest.approx(math.sqrt(3))


# ---------------------------------------------------------------------------
# known answers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("d", range(1, 9))
def test_signed_permutation_has_distance_zero(d):
    rng = np.random.default_rng(3000 + d)
    perm, signs = random_signed_permutation(rng, d)
    P = dense(perm, signs)
    for name, solve in SOLVERS.items():
        if name == "bruteforce" and d > 6:
            continue
        p, s, dist = solve(P)
        assert dist == 0.0, name
        np.testing.assert_array_equal(p, perm)
        np.testing.assert_array_equal(s, signs)
    out = ref.dto_reference(np.diag(np.arange(d, 0, -1.0)) @ P.T)  # J = I S P^T, so V = P
    assert out["dto"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("deg", [-45, -30, -20, -10, -1, 0, 1, 10, 20, 30, 45])
def test_rotation_2d(deg):
    th = math.radians(deg)
    R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    expected = 2 * math.sqrt(1 - abs(math.cos(th)))
    for name, solve in SOLVERS.items():
        assert solve(R)[2] == pytest.approx(expected, abs=1e-12), name
    # through the SVD: J = S R^T with distinct singular values has V = R
    J = np.diag([3.0, 1.0]) @ R.T
    out = ref.dto_reference(J)
    assert out["dto"] == pytest.approx(expected, abs=1e-9)


def test_rotation_published_values():
    def dist(deg):
        th = math.radians(deg)
        R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        return float(ref.signed_permutation_lsa(R)[2])

    assert dist(10) == pytest.approx(0.25, abs=0.005)
    assert dist(20) == pytest.approx(0.49, abs=0.005)
    assert dist(30) == pytest.approx(0.73, abs=0.005)
    assert dist(45) == pytest.approx(1.082, abs=5e-4)


# ---------------------------------------------------------------------------
# SVD and the DtO pipeline
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n,d", [(3, 3), (10, 4), (50, 6)])
def test_right_singular_vectors_linear_decoder(n, d):
    rng = np.random.default_rng(4000 + n + d)
    U, _ = np.linalg.qr(rng.standard_normal((n, d)))
    S = np.sort(rng.uniform(0.5, 5.0, size=d))[::-1]
    S = S + np.arange(d)[::-1] * 0.1  # keep them well separated
    R = random_orthogonal(rng, d)
    W = U @ np.diag(S) @ R.T
    sigma, V = ref.right_singular_vectors(W)
    assert sigma.shape == (d,) and V.shape == (d, d)
    assert sigma.dtype == np.float64 and V.dtype == np.float64
    np.testing.assert_allclose(sigma, S, rtol=1e-10)
    # V equals R up to the sign of each column
    np.testing.assert_allclose(np.abs(np.sum(V * R, axis=0)), 1.0, atol=1e-10)
    col_signs = np.sign(np.sum(V * R, axis=0))
    np.testing.assert_allclose(V, R * col_signs, atol=1e-9)
    # batched call, float32 input upcast to float64
    sigma_b, V_b = ref.right_singular_vectors(np.stack([W, 2 * W]).astype(np.float32))
    assert sigma_b.shape == (2, d) and V_b.shape == (2, d, d) and V_b.dtype == np.float64
    np.testing.assert_allclose(sigma_b[1], 2 * S, rtol=1e-5)


def test_right_singular_vectors_wide_jacobian():
    rng = np.random.default_rng(5)
    sigma, V = ref.right_singular_vectors(rng.standard_normal((2, 5)))
    assert sigma.shape == (5,) and V.shape == (5, 5)
    assert np.all(sigma[2:] == 0) and np.all(np.diff(sigma) <= 0)
    np.testing.assert_allclose(V.T @ V, np.eye(5), atol=1e-12)


def test_dto_reference_dict():
    rng = np.random.default_rng(6)
    J = rng.standard_normal((7, 12, 4))
    out = ref.dto_reference(J)
    assert set(out) == {"per_sample", "dto", "std", "sigma", "V", "perm", "signs"}
    assert out["per_sample"].shape == (7,)
    assert out["sigma"].shape == (7, 4) and out["V"].shape == (7, 4, 4)
    assert out["perm"].shape == (7, 4) and out["signs"].shape == (7, 4)
    assert out["dto"] == pytest.approx(out["per_sample"].mean())
    assert out["std"] == pytest.approx(np.std(out["per_sample"]))
    _, _, dist = ref.signed_permutation_bruteforce(out["V"])
    np.testing.assert_allclose(out["per_sample"], dist, atol=1e-9)
    single = ref.dto_reference(J[0])
    assert single["per_sample"].shape == (1,)
    assert single["dto"] == pytest.approx(out["per_sample"][0])


def test_jacobians_loop_and_paper_style_on_linear_decoder():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    dec = torch.nn.Linear(3, 10).double()
    z = rng.standard_normal((4, 3))
    J = ref.jacobians_loop(dec, z)
    W = dec.weight.detach().numpy()
    assert J.shape == (4, 10, 3) and J.dtype == np.float64
    np.testing.assert_allclose(J, np.broadcast_to(W, J.shape), atol=1e-12)
    out = ref.paper_style_dto(dec, z)
    expected = float(ref.signed_permutation_bruteforce(ref.right_singular_vectors(W)[1])[2])
    np.testing.assert_allclose(out["per_sample"], expected, atol=1e-9)
    assert out["V"].shape == (4, 3, 3)


def test_jacobians_loop_nonlinear_image_decoder():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 8))

    def dec(z):
        return net(z).reshape(-1, 2, 4)  # (B, 2, 4) outputs: n = 8

    z = np.array([[0.1, -0.3], [1.0, 0.5]], dtype=np.float32)
    J = ref.jacobians_loop(dec, z)
    assert J.shape == (2, 8, 2)
    eps = 1e-3
    for k in range(2):
        for j in range(2):
            zp, zm = z[k].copy(), z[k].copy()
            zp[j] += eps
            zm[j] -= eps
            with torch.no_grad():
                fd = (net(torch.tensor(zp)) - net(torch.tensor(zm))).numpy() / (2 * eps)
            np.testing.assert_allclose(J[k, :, j], fd, atol=1e-3)


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

BAD_V = [
    (np.ones(3), "dims"),
    (np.ones((2, 2, 2, 2)), "dims"),
    (np.ones((2, 3)), "square"),
    (np.ones((4, 2, 3)), "square"),
    (np.ones((0, 0)), "empty"),
    (np.ones((0, 3, 3)), "empty"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), "Inf"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
]


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("bad,word", BAD_V)
def test_bad_V_raises(name, bad, word):
    with pytest.raises(ValueError, match="V") as info:
        SOLVERS[name](bad)
    assert word in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [np.ones(3), np.ones((1, 2, 3, 4)), np.ones((0, 4, 2)), np.ones((5, 0)),
     np.full((3, 2), np.nan), np.full((3, 2), -np.inf)],
)
def test_bad_J_raises(bad):
    with pytest.raises(ValueError, match="J"):
        ref.right_singular_vectors(bad)
    with pytest.raises(ValueError, match="J"):
        ref.dto_reference(bad)


def test_bruteforce_rejects_large_d():
    with pytest.raises(ValueError, match="d <= 6"):
        ref.signed_permutation_bruteforce(np.eye(7))


def test_milp_time_limit():
    with pytest.raises(ValueError, match="time_limit"):
        ref.signed_permutation_milp(np.eye(3), time_limit=-1)
    rng = np.random.default_rng(9)
    with pytest.raises(RuntimeError, match="optimal"):
        ref.signed_permutation_milp(rng.standard_normal((12, 12)), time_limit=1e-9)


def test_milp_prints_nothing():
    # HiGHS writes its banner straight to file descriptor 1, once per process: run in a fresh one
    import subprocess
    import sys

    code = "import numpy as np; from fastdto import reference as r; r.signed_permutation_milp(np.eye(3)[::-1])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_bad_latents_raise():
    torch = pytest.importorskip("torch")
    dec = torch.nn.Linear(3, 4)
    with pytest.raises(ValueError, match="latents"):
        ref.jacobians_loop(dec, np.zeros(3))
    with pytest.raises(ValueError, match="latents"):
        ref.jacobians_loop(dec, np.zeros((0, 3)))
    with pytest.raises(ValueError, match="latents"):
        ref.jacobians_loop(dec, np.array([[0.0, np.nan, 1.0]]))
