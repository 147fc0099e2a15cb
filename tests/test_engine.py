"""The compiled engine against the NumPy/SciPy/HiGHS oracle, brute force and known answers."""

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import fastdto
from fastdto import reference
from conftest import jacobian_with_spectrum, random_orthogonal


def align_signs(V, Vref):
    """Flips columns of V to match Vref's signs (singular vectors are defined up to sign)."""
    s = np.sign(np.sum(V * Vref, axis=-2, keepdims=True))
    s[s == 0] = 1
    return V * s


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3, 5, 10, 17, 64])
def test_matches_reference_on_random_jacobians(rng, dtype, d):
    N, n = 24, max(3 * d, 40)
    J = rng.standard_normal((N, n, d)).astype(dtype)
    res = fastdto.dto_from_jacobians(J, return_v=True)
    ref = reference.dto_reference(J.astype(np.float64))
    np.testing.assert_allclose(res.singular_values.numpy(), ref["sigma"], rtol=1e-11, atol=0)
    np.testing.assert_allclose(align_signs(res.V.numpy(), ref["V"]), ref["V"], atol=1e-9)
    np.testing.assert_allclose(res.per_sample.numpy(), ref["per_sample"], atol=1e-10)
    np.testing.assert_array_equal(res.permutation.numpy(), ref["perm"])
    assert res.dto == pytest.approx(ref["dto"], abs=1e-10)
    assert res.std == pytest.approx(ref["std"], abs=1e-10)
    assert not res.svd_path.any()
    # Ambiguous exactly where two singular values lie within sqrt(eps) * sigma_max (random gaps fall
    # below that now and then: about 1 run in 200 at d = 10); samples at the threshold could go either way.
    sigma = ref["sigma"]
    gap = (sigma[:, :-1] - sigma[:, 1:]).min(axis=1, initial=np.inf) / sigma[:, 0]
    tol = np.sqrt(np.finfo(dtype).eps)
    clear = np.abs(gap - tol) > 1e-9
    np.testing.assert_array_equal(res.ambiguous.numpy()[clear], (gap <= tol)[clear])


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 6])
def test_solver_matches_brute_force(rng, d):
    V = random_orthogonal(rng, d, (40,))
    sp = fastdto.nearest_signed_permutation(V)
    for i in range(len(V)):
        perm, signs, dist = reference.signed_permutation_bruteforce(V[i])
        assert sp.distance[i].item() == pytest.approx(dist, abs=1e-12)
    P = sp.matrix().numpy()
    np.testing.assert_allclose(np.linalg.norm(V - P, axis=(1, 2)), sp.distance.numpy(), atol=1e-12)


@pytest.mark.parametrize("d", [7, 10, 20, 40, 64])
def test_exact_solver_matches_scipy_and_milp(rng, d):
    V = random_orthogonal(rng, d, (30,))
    sp = fastdto.nearest_signed_permutation(torch.from_numpy(V))
    _, _, dist = reference.signed_permutation_lsa(V)
    np.testing.assert_allclose(sp.distance.numpy(), dist, atol=1e-11)
    if d <= 10:
        _, _, dist_milp = reference.signed_permutation_milp(V[:5])
        np.testing.assert_allclose(sp.distance.numpy()[:5], dist_milp, atol=1e-9)
        milp = fastdto.nearest_signed_permutation(V[:5], solver="milp")
        np.testing.assert_allclose(milp.distance.numpy(), dist_milp, atol=1e-12)


def test_general_matrices_use_the_l1_weights(rng):
    """Non-orthogonal V (entries beyond 1): the L1-nearest signed permutation, as the MILP defines it."""
    V = 1.5 * rng.standard_normal((30, 5, 5))
    sp = fastdto.nearest_signed_permutation(V)
    for i in range(len(V)):
        perm, signs, _ = reference.signed_permutation_bruteforce(V[i])
        best = reference.l1_distance(V[i], perm, signs)
        mine = reference.l1_distance(V[i], sp.permutation[i].numpy(), sp.signs[i].numpy())
        assert mine == pytest.approx(best, abs=1e-10)


def test_greedy_is_an_upper_bound_and_exact_when_certified(rng):
    V = random_orthogonal(rng, 10, (500,))
    exact = fastdto.nearest_signed_permutation(V)
    greedy = fastdto.nearest_signed_permutation(V, solver="greedy")
    assert (greedy.distance >= exact.distance - 1e-12).all()
    cert = exact.certified
    assert torch.equal(greedy.certified, cert)
    torch.testing.assert_close(greedy.distance[cert], exact.distance[cert])
    # Near-identity matrices are certified and give the identity.
    A = rng.standard_normal((10, 10))
    near, _ = np.linalg.qr(np.eye(10) + 1e-3 * (A - A.T))
    sp = fastdto.nearest_signed_permutation(near * np.sign(np.diag(near)))
    assert bool(sp.certified) and sp.permutation.tolist() == list(range(10))


@pytest.mark.parametrize("d", [1, 2, 7, 33, 64])
def test_greedy_takes_the_largest_remaining_weight(rng, d):
    """solver="greedy" is the textbook greedy: the largest remaining min(|V_ij|, 1), row and column removed."""
    V = rng.standard_normal((20, d, d)) * rng.uniform(0.2, 1.5, (20, 1, 1))
    got = fastdto.nearest_signed_permutation(V, solver="greedy").permutation.numpy()
    for k in range(len(V)):
        w = np.minimum(np.abs(V[k]), 1.0)
        perm = np.full(d, -1)
        for _ in range(d):
            i, j = np.unravel_index(np.argmax(w), w.shape)
            perm[i] = j
            w[i, :] = -1.0
            w[:, j] = -1.0
        np.testing.assert_array_equal(got[k], perm)


# ----------------------------------------------------------------------------- known answers

def test_signed_permutations_have_zero_distance(rng):
    for d in (1, 2, 5, 10, 64):
        perm = rng.permutation(d)
        signs = rng.choice([-1, 1], d)
        P = np.zeros((d, d))
        P[np.arange(d), perm] = signs
        sp = fastdto.nearest_signed_permutation(P)
        assert sp.distance.item() == 0.0
        assert sp.permutation.tolist() == perm.tolist() and sp.signs.tolist() == signs.tolist()
        # A linear decoder J = U S P^T with distinct S has DtO exactly zero (to rounding).
        J, _ = jacobian_with_spectrum(rng, 3 * d + 5, np.linspace(3, 1, d), R=P)
        assert fastdto.dto_from_jacobians(J).dto < 1e-7


@pytest.mark.parametrize("scale", [1e155, 1e200, 1e300])
def test_distance_of_far_from_orthogonal_v_does_not_overflow(rng, scale):
    """The squares of a non-orthogonal V's entries overflowed to an infinite distance."""
    V = rng.standard_normal((3, 4, 4)) * scale
    sp = fastdto.nearest_signed_permutation(V)
    P = sp.matrix().numpy()
    expected = [math.sqrt(np.sum(((v - p) / scale) ** 2)) * scale for v, p in zip(V, P)]
    np.testing.assert_allclose(sp.distance.numpy(), expected, rtol=1e-14)
    np.testing.assert_allclose(reference.signed_permutation_lsa(V)[2], expected, rtol=1e-14)  # the oracle too


@pytest.mark.parametrize("deg, expected", [(10, 0.25), (20, 0.49), (30, 0.73), (45, 1.082)])
def test_rotation_known_answer(deg, expected):
    t = math.radians(deg)
    R = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    exact = 2 * math.sqrt(1 - abs(math.cos(t)))
    assert fastdto.nearest_signed_permutation(R).distance.item() == pytest.approx(exact, abs=1e-14)
    assert exact == pytest.approx(expected, abs=5e-3)
    J = np.array([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]]) @ R.T  # linear decoder whose V is R
    assert fastdto.dto_from_jacobians(J).dto == pytest.approx(exact, abs=1e-12)


def test_linear_decoder_recovers_R(rng):
    for d in (2, 6, 12):
        J, R = jacobian_with_spectrum(rng, 50, np.geomspace(10, 1, d))
        res = fastdto.dto_from_jacobians(J, return_v=True)
        np.testing.assert_allclose(align_signs(res.V[0].numpy(), R), R, atol=1e-12)
        _, _, dist = reference.signed_permutation_lsa(R)
        assert res.dto == pytest.approx(dist, abs=1e-12)
        # A linear decoder evaluated through autodiff gives the same value at every latent.
        W = torch.from_numpy(J)
        ev = fastdto.evaluate(lambda z: z @ W.T, torch.randn(7, d, dtype=torch.float64))
        torch.testing.assert_close(ev.per_sample, torch.full((7,), dist, dtype=torch.float64))


def test_paper_worked_example():
    """Section 4's M1 and M2 = M1 R45^T: V2 = R45 V1; bound coefficients 2 sqrt(prod of squared column norms)."""
    M1 = np.array([[4.0, 1.0], [-3.0, 1.0], [5.0, -1.0]])
    c = math.cos(math.pi / 4)
    R45 = np.array([[c, -c], [c, c]])
    M2 = M1 @ R45.T
    for M, coef in ((M1, 24.5), (M2, 52.4)):
        norms2 = (M ** 2).sum(axis=0)
        assert 2 * math.sqrt(norms2.prod()) == pytest.approx(coef, abs=0.05)
    r1 = fastdto.dto_from_jacobians(M1, return_v=True)
    r2 = fastdto.dto_from_jacobians(M2, return_v=True)
    np.testing.assert_allclose(align_signs(r2.V[0].numpy(), R45 @ r1.V[0].numpy()), R45 @ r1.V[0].numpy(), atol=1e-12)
    for r, M in ((r1, M1), (r2, M2)):
        assert r.dto == pytest.approx(reference.dto_reference(M)["dto"], abs=1e-12)
    # M1 is nearly axis-aligned, its 45-degree rotation is not.
    assert r1.dto < 0.2 and r2.dto > 0.9


# ----------------------------------------------------------------------------- properties

@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 8), n_extra=st.integers(0, 20), seed=st.integers(0, 2**31 - 1),
       scale=st.floats(1e-3, 1e3))
def test_invariances(d, n_extra, seed, scale):
    rng = np.random.default_rng(seed)
    n = d + n_extra + 1
    J = rng.standard_normal((3, n, d))
    base = fastdto.dto_from_jacobians(J).per_sample
    # signed permutation of the latent axes
    P = np.zeros((d, d))
    P[np.arange(d), rng.permutation(d)] = rng.choice([-1.0, 1.0], d)
    # orthogonal change of output basis, positive scaling
    Q = random_orthogonal(rng, n)
    for J2 in (J @ P, Q @ J, scale * J):
        torch.testing.assert_close(fastdto.dto_from_jacobians(J2).per_sample, base, atol=1e-8, rtol=0)


# ----------------------------------------------------------------------------- degenerate inputs

def test_repeated_singular_values_are_flagged(rng):
    J, _ = jacobian_with_spectrum(rng, 30, [3.0, 2.0, 2.0, 1.0])
    res = fastdto.dto_from_jacobians(J)
    assert res.ambiguous.item()
    J, _ = jacobian_with_spectrum(rng, 30, [3.0, 2.0, 1.5, 1.0])
    assert not fastdto.dto_from_jacobians(J).ambiguous.item()


def test_zero_columns_and_zero_jacobian(rng):
    J = rng.standard_normal((2, 20, 4))
    J[0, :, 1] = 0.0          # one passive latent: V still unique up to sign
    J[1, :, 1:3] = 0.0        # two passive latents: their block of V is arbitrary
    res = fastdto.dto_from_jacobians(J, return_v=True)
    assert res.svd_path.tolist() == [True, True]
    assert res.ambiguous.tolist() == [False, True]
    assert res.singular_values[0, -1].item() == 0.0
    ref = reference.dto_reference(J[:1])
    assert res.per_sample[0].item() == pytest.approx(ref["per_sample"][0], abs=1e-12)
    # A zero J gives V = I and distance 0, the best score: a warning says that it means nothing.
    with pytest.warns(RuntimeWarning, match="1 of 2 Jacobians are exactly zero"):
        zero = fastdto.dto_from_jacobians(np.stack([np.zeros((5, 3)), J[0, :5, :3]]))
    assert zero.per_sample[0] == 0.0 and zero.ambiguous[0] and (zero.singular_values[0] == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # d = 1: V = 1 whatever J is, so nothing to warn about
        one = fastdto.dto_from_jacobians(np.zeros((1, 5, 1)))
    assert one.dto == 0.0


def test_zero_columns_of_float32_jacobians_stay_on_the_gram(rng):
    """A float32 column of J that is exactly zero gives exact zero rows and columns of G (float32
    squares cannot underflow in float64), so the Gram route keeps such samples, a decoder that ignores
    some of its latents included; float64 columns may be tiny rather than zero, and take the SVD path."""
    J = rng.standard_normal((4, 50, 6)).astype(np.float32)
    J[0, :, 1] = 0.0
    J[1, :, [2, 4]] = 0.0
    J[2, :, 5] = 0.0
    J[2, :, 0] *= np.float32(1e-2)  # and a weak latent beside it (not near zero: that is ambiguous)
    res = fastdto.dto_from_jacobians(J, return_v=True)
    svd = fastdto.dto_from_jacobians(J, gram_rcond=1.0, return_v=True)
    assert not res.svd_path.any() and svd.svd_path.all()
    assert res.ambiguous.tolist() == [False, True, False, False]
    for b, zero in [(0, [1]), (1, [2, 4]), (2, [5])]:
        assert (res.singular_values[b, -len(zero):] == 0).all()
    unique = [0, 2, 3]
    ref = reference.dto_reference(J[unique].astype(np.float64))
    np.testing.assert_allclose(res.per_sample[unique].numpy(), ref["per_sample"], atol=1e-10)
    np.testing.assert_allclose(res.singular_values[unique].numpy(), ref["sigma"], rtol=1e-10, atol=1e-13)  # NumPy: 1e-17, not 0
    np.testing.assert_allclose(align_signs(res.V[unique].numpy(), ref["V"]), ref["V"], atol=1e-9)
    np.testing.assert_allclose(res.per_sample[unique].numpy(), svd.per_sample[unique].numpy(), atol=1e-10)
    f64 = fastdto.dto_from_jacobians(J.astype(np.float64))
    assert f64.svd_path[:3].all() and not f64.svd_path[3]
    np.testing.assert_allclose(f64.per_sample[unique].numpy(), ref["per_sample"], atol=1e-10)


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-150, 1e-100, 1e-80, 1e80, 1e100, 1e150, 1e200, 1e300])
def test_extreme_jacobian_scales(rng, scale):
    """J's scale (a power of ten, not of two) changes neither V nor DtO, and sigma scales with it, also
    where J^T J would under- or overflow float64 (those samples take the SVD path)."""
    J = rng.standard_normal((6, 40, 6))
    J[1] = jacobian_with_spectrum(rng, 40, [3.0, 2.0, 1.5, 1.0, 1e-6, 1e-7])[0]  # also ill-conditioned
    base = fastdto.dto_from_jacobians(J, return_v=True)
    res = fastdto.dto_from_jacobians(J * scale, return_v=True)
    torch.testing.assert_close(res.per_sample, base.per_sample, atol=1e-10, rtol=0)
    torch.testing.assert_close(res.V, base.V, atol=1e-8, rtol=0)
    # Scaling by a power of ten rounds every entry: sigma moves by up to ~eps * sigma_max.
    err = (res.singular_values / scale - base.singular_values).abs()
    assert (err <= 1e-13 * base.singular_values[:, :1]).all()
    assert res.svd_path.all() == (scale < 1e-130 or scale > 1e140)
    assert (res.per_sample > 0.5).any()  # not the identity that skipped rotations would give


@pytest.mark.parametrize("tiny", [1e-100, 1e-160, 1e-170, 1e-200, 1e-250])
def test_columns_of_very_different_scales(rng, tiny):
    """One latent with a tiny but non-zero effect (a saturated unit, say) next to ordinary ones. While
    its squares stay normal numbers (1e-100) the Gram keeps the column exactly enough: Jacobi on a
    graded matrix is as accurate as the SVD, so the sample stays there. Below that the Gram loses the
    column and the sample takes the SVD path, whose QR and Jacobi must not square it (that underflowed
    and gave NaN). Against NumPy's SVD, which scales internally."""
    J = rng.standard_normal((5, 30, 4))
    J[:, :, 1] *= tiny
    res = fastdto.dto_from_jacobians(J, return_v=True)
    ref = reference.dto_reference(J)
    assert (res.svd_path == (tiny < 1e-130)).all() and torch.isfinite(res.per_sample).all()
    np.testing.assert_allclose(res.per_sample.numpy(), ref["per_sample"], atol=1e-10)
    sigma = res.singular_values.numpy()
    np.testing.assert_allclose(sigma[:, :3], ref["sigma"][:, :3], rtol=1e-12)
    # NumPy resolves the smallest only to eps * sigma_max; to first order in `tiny` it is `tiny` times
    # the distance of column 1 from the span of the others (relative accuracy is Jacobi's strength).
    for J_i, s_i in zip(J, sigma):
        others = np.linalg.qr(np.delete(J_i, 1, axis=1))[0]
        a = J_i[:, 1] / tiny
        expected = tiny * np.linalg.norm(a - others @ (others.T @ a))
        assert s_i[3] == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(align_signs(res.V.numpy(), ref["V"]), ref["V"], atol=1e-10)
    one = fastdto.dto_from_jacobians(np.array([[1e-165, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    assert one.per_sample.item() == 0.0 and one.singular_values[0, 1].item() == pytest.approx(1e-165, rel=1e-15)


@pytest.mark.parametrize("tiny", [1e-310, 1e-316, 1e-320, 5e-324])
@pytest.mark.parametrize("column", [0, 2])
def test_subnormal_columns_of_float64_jacobians(rng, tiny, column):
    """A float64 column of subnormal numbers (a decoder weight row underflowed, say) takes the SVD
    path. Its Householder reflector must be formed from the column scaled into the normal range: from
    the subnormal numbers themselves it had a few bits of precision, was no longer orthogonal, and
    moved the other singular values by up to 1 and DtO by up to 0.4. The column's effect is below
    any rounding of the others, so the answer is that of J with the column set to zero."""
    J = rng.standard_normal((40, 12, 5))
    zeroed = J.copy()
    zeroed[:, :, column] = 0.0
    J[:, :, column] *= tiny
    res = fastdto.dto_from_jacobians(J, return_v=True)
    lim = fastdto.dto_from_jacobians(zeroed, return_v=True)
    assert res.svd_path.all()
    torch.testing.assert_close(res.per_sample, lim.per_sample, atol=1e-12, rtol=0)
    torch.testing.assert_close(res.singular_values[:, :4], lim.singular_values[:, :4], atol=0, rtol=1e-13)
    torch.testing.assert_close(res.V, lim.V, atol=1e-12, rtol=0)
    assert (res.singular_values[:, 4] <= 12 * tiny).all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_graded_jacobians_stay_on_the_gram_and_match_an_svd(rng, dtype):
    """A passive latent (a column of J 1e-6 to 1e-10 of the others), or columns graded over many orders
    of magnitude, make sigma_min / sigma_max tiny, but J's columns scaled to unit length stay well
    conditioned. Jacobi on the Gram is then as accurate as an SVD of J (Demmel and Veselic), so the
    sample stays on the Gram path (the SVD path cost about 30x as much). Against an SVD in 40 digits."""
    import mpmath  # a dependency of sympy, hence of torch; also in the test extra
    n, d = 24, 5
    for scales in ([1, 1, 1, 1, 1e-6], [1, 1, 1, 1e-5, 1e-10], [1, 1e-2, 1e-4, 1e-6, 1e-8]):
        J = (rng.standard_normal((n, d)) * np.array(scales)).astype(dtype)
        res = fastdto.dto_from_jacobians(J, return_v=True)
        assert not res.svd_path.item(), scales
        # float32 J counts singular values below sqrt(eps32) sigma_max as zero (ambiguous); V of this
        # J, promoted exactly, is unique all the same, and is what is compared below.
        assert res.ambiguous.item() == (dtype == np.float32 and scales[-2] < 1e-3), scales
        with mpmath.workdps(40):
            U, S, W = mpmath.svd_r(mpmath.matrix(J.astype(np.float64).tolist()))
        s = np.array([float(x) for x in S])
        V = np.array(W.tolist(), dtype=np.float64).T
        order = np.argsort(-s)
        s, V = s[order], V[:, order]
        np.testing.assert_allclose(res.singular_values[0].numpy(), s, rtol=1e-12)
        np.testing.assert_allclose(align_signs(res.V[0].numpy(), V), V, atol=1e-12)
    # Mixing a tiny column with an ordinary one (J's columns are then ill-conditioned) still takes the
    # SVD path, as does a column whose squares underflow (test_columns_of_very_different_scales).
    J = rng.standard_normal((n, d)) * np.array([1, 1, 1, 1, 1e-6])
    c, s_ = np.cos(0.3), np.sin(0.3)
    J[:, [0, 4]] = J[:, [0, 4]] @ np.array([[c, -s_], [s_, c]])
    assert fastdto.dto_from_jacobians(J).svd_path.item()


def test_fewer_outputs_than_latents(rng):
    J = rng.standard_normal((3, 2, 5))  # rank 2: three zero singular values
    with pytest.warns(RuntimeWarning, match="2 outputs for 5 latents"):
        res = fastdto.dto_from_jacobians(J)
    assert res.ambiguous.all()
    np.testing.assert_allclose(res.singular_values[:, :2].numpy(), reference.right_singular_vectors(J)[0][:, :2], rtol=1e-12)
    assert (res.singular_values[:, 2:] <= 1e-14 * res.singular_values[:, :1]).all()


@pytest.mark.parametrize("dtype, n", [(np.float64, 300), (np.float32, 300)])
def test_ill_conditioned_samples_are_recomputed_like_numpy_svd(rng, dtype, n):
    """Around the gram_rcond threshold V must match a float64 SVD of the same J. Above it the Gram's
    absolute bound holds and the sample stays there; far below, J's columns (mixed by a random R) are
    as ill-conditioned as J and it takes the SVD path. Just below, the column-scaled bound may still
    keep it on the Gram, at the same accuracy."""
    thr = fastdto.DEFAULT_GRAM_RCOND
    for rel in (3.0, 1.1, 0.9, 0.3, 1e-3, 1e-6):
        kappa_inv = thr * rel
        sigma = np.array([1.0, 0.6, 0.3, kappa_inv])
        J, _ = jacobian_with_spectrum(rng, n, sigma)
        J = J.astype(dtype)
        res = fastdto.dto_from_jacobians(J, return_v=True)
        s_ref, V_ref = reference.right_singular_vectors(J[None].astype(np.float64))
        svd = res.svd_path.item()
        if rel >= 1.0 or rel <= 1e-3:
            assert svd == (rel < 1.0)
        err = np.abs(align_signs(res.V[0].numpy(), V_ref[0]) - V_ref[0]).max()
        # Gram route: error ~ eps64 * kappa^2 / relative gap <= ~2e-8 here; SVD route: ~ eps64 * kappa.
        assert err < (1e-9 if svd else 1e-7), (rel, err)
        np.testing.assert_allclose(res.singular_values[0].numpy(), s_ref[0], rtol=1e-7, atol=1e-15)


def test_gram_alone_fails_where_the_fallback_is_needed(rng):
    sigma = np.array([1.0, 0.5, 1e-7, 3e-8])
    J, _ = jacobian_with_spectrum(rng, 200, sigma)
    _, V_ref = reference.right_singular_vectors(J[None])
    gram_only = fastdto.dto_from_jacobians(J, gram_rcond=0.0, return_v=True).V[0].numpy()
    auto = fastdto.dto_from_jacobians(J, return_v=True).V[0].numpy()
    err = lambda V: np.abs(align_signs(V, V_ref[0]) - V_ref[0]).max()
    assert err(auto) < 1e-7 < err(gram_only)


@pytest.mark.parametrize("rel, s", [(3.0, 1e-3), (0.3, 1e-3), (0.01, 1.3e-4)])
def test_close_small_singular_values_are_recomputed(rng, rel, s):
    """Two singular values close together and small next to sigma_max, but still distinct: through the
    Gram, V's error is eps64 sigma_max^2 / (sigma_k^2 - sigma_k+1^2), up to sigma_max / (2 sigma_k) times
    an SVD's eps64 sigma_max / gap. Such samples take the SVD path although sigma_min / sigma_max is
    above gram_rcond (a fuzzer found DtO off by 8e-6 on an unflagged sample)."""
    g = rel * fastdto.DEFAULT_GRAM_RCOND**2 / (2 * s)  # sigma_k^2 - sigma_k+1^2 ~= rel * gram_rcond^2
    err = lambda V, R: np.abs(align_signs(V, R) - R).max()  # noqa: E731
    eps = np.finfo(np.float64).eps
    gram_only_worst = 0.0
    for _ in range(5):  # the Gram's error is random: its worst case over a few draws shows the failure
        J, R = jacobian_with_spectrum(rng, 200, [1.0, 0.6, s, s - g])  # exact V = R
        res = fastdto.dto_from_jacobians(J, return_v=True)
        svd = res.svd_path.item()
        assert not res.ambiguous.item()
        if rel >= 1.0 or rel <= 0.01:  # in between, the column-scaled bound may keep it on the Gram
            assert svd == (rel < 1.0)
        if svd:
            assert err(res.V[0].numpy(), R) < 10 * eps / g  # what an SVD of J achieves
        else:
            assert err(res.V[0].numpy(), R) < eps / fastdto.DEFAULT_GRAM_RCOND**2  # the Gram route's bound
        exact = reference.signed_permutation_lsa(R)[2]
        assert abs(res.per_sample.item() - exact) < (100 * eps / g if svd else 1e-7)
        gram_only = fastdto.dto_from_jacobians(J, return_v=True, gram_rcond=0.0)
        gram_only_worst = max(gram_only_worst, err(gram_only.V[0].numpy(), R))
    if rel == 0.01:  # 130x the bound at the least in 40 groups of 5 draws
        assert gram_only_worst > 10 * eps / g


def test_forced_svd_path_matches(rng):
    J = rng.standard_normal((10, 30, 6))
    a = fastdto.dto_from_jacobians(J)
    b = fastdto.dto_from_jacobians(J, gram_rcond=1.0)
    assert b.svd_path.all() and not a.svd_path.any()
    torch.testing.assert_close(a.per_sample, b.per_sample, atol=1e-12, rtol=0)


def test_strided_inputs(rng):
    J = rng.standard_normal((6, 5, 40)).transpose(0, 2, 1)  # non-contiguous (N, n, d)
    a = fastdto.dto_from_jacobians(J)
    b = fastdto.dto_from_jacobians(np.ascontiguousarray(J))
    torch.testing.assert_close(a.per_sample, b.per_sample, atol=1e-13, rtol=0)
    Jt = torch.from_numpy(np.ascontiguousarray(J))[:, ::2, :]
    torch.testing.assert_close(fastdto.dto_from_jacobians(Jt).per_sample,
                               fastdto.dto_from_jacobians(Jt.contiguous()).per_sample, atol=1e-13, rtol=0)
    flipped = np.ascontiguousarray(J)[:, ::-1, ::-1]  # negative strides
    torch.testing.assert_close(fastdto.dto_from_jacobians(flipped.copy()).per_sample,
                               fastdto.dto_from_jacobians(torch.from_numpy(flipped.copy())).per_sample)
    V = random_orthogonal(rng, 6, (4,))
    torch.testing.assert_close(fastdto.nearest_signed_permutation(V.transpose(0, 2, 1)).distance,
                               fastdto.nearest_signed_permutation(np.ascontiguousarray(V.transpose(0, 2, 1))).distance)


def test_active_subset_equals_sliced_jacobians(rng):
    J = rng.standard_normal((5, 30, 6))
    a = fastdto.dto_from_jacobians(J, active=[0, 2, 5])
    b = fastdto.dto_from_jacobians(J[:, :, [0, 2, 5]])
    torch.testing.assert_close(a.per_sample, b.per_sample)
    assert a.active.tolist() == [0, 2, 5]
    mask = np.array([True, False, True, False, False, True])
    torch.testing.assert_close(fastdto.dto_from_jacobians(J, active=mask).per_sample, b.per_sample)


def test_result_types_and_summary(rng):
    res = fastdto.dto_from_jacobians(torch.from_numpy(rng.standard_normal((4, 12, 3)).astype(np.float32)))
    assert res.per_sample.dtype == torch.float64 and res.per_sample.shape == (4,)
    assert res.permutation.dtype == torch.int64 and res.signs.dtype == torch.int8
    assert res.singular_values.shape == (4, 3)
    assert (res.singular_values[:, :-1] >= res.singular_values[:, 1:]).all()
    assert "DtOResult(dto=" in repr(res)
    assert res.std == pytest.approx(float(res.per_sample.std(unbiased=False)))


@pytest.mark.parametrize("code_path", ["default", "baseline"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_cpu_code_paths_on_awkward_shapes(rng, monkeypatch, code_path, dtype):
    """Both instruction-set paths, on what the fast kernels special-case: batches that do not fill
    the last group of four samples, n not a multiple of the row block or of 4, d not a multiple of
    4 (and below 4), columns not contiguous, and a bad sample inside a group of good ones."""
    if code_path == "baseline":
        monkeypatch.setenv("FASTDTO_CPU_BASELINE", "1")
        assert fastdto.build_info()["cpu_code_path"] == "baseline"
    for d, n in [(1, 5), (3, 7), (4, 64), (6, 130), (10, 67), (13, 200)]:
        N = 11
        J = rng.standard_normal((N, n, d)).astype(dtype)
        J[4, n // 2, d - 1] = np.nan
        for layout in ("contiguous", "transposed"):
            Jin = J if layout == "contiguous" else np.ascontiguousarray(J.transpose(0, 2, 1)).transpose(0, 2, 1)
            good = np.delete(np.arange(N), 4)
            res = fastdto.dto_from_jacobians(Jin[good], return_v=True)
            ref = reference.dto_reference(J[good].astype(np.float64))
            np.testing.assert_allclose(res.singular_values.numpy(), ref["sigma"], rtol=1e-11, atol=0)
            np.testing.assert_allclose(align_signs(res.V.numpy(), ref["V"]), ref["V"], atol=1e-9)
            np.testing.assert_allclose(res.per_sample.numpy(), ref["per_sample"], atol=1e-10)
            with pytest.raises(ValueError, match=r"\[4\] contains NaN"):
                fastdto.dto_from_jacobians(Jin)


@pytest.mark.parametrize("code_path", ["default", "baseline"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layout_gives_identical_results(rng, monkeypatch, code_path, dtype):
    """Contiguous columns (forward-mode Jacobians) are read in place, other layouts are transposed
    block by block first: the sums and their order are the same, so the results are too, bit for bit,
    for every d the Gram specialises (and one beyond) and with or without a partial last block."""
    if code_path == "baseline":
        monkeypatch.setenv("FASTDTO_CPU_BASELINE", "1")
    for d, n in [(1, 64), (3, 200), (4, 129), (5, 64), (10, 200), (16, 131), (17, 128), (24, 70)]:
        J = rng.standard_normal((9, n, d)).astype(dtype)
        layouts = {
            "row-major": J,
            "columns contiguous per sample (vmap(jacfwd))": np.ascontiguousarray(J.transpose(0, 2, 1)).transpose(0, 2, 1),
            "(d, N, n) buffer (fastdto.jacobians)": np.ascontiguousarray(J.transpose(2, 0, 1)).transpose(1, 2, 0),
            "contiguous columns in reverse order": np.ascontiguousarray(J[:, :, ::-1].transpose(0, 2, 1)).transpose(0, 2, 1)[:, :, ::-1],
        }
        results = {}
        for name, Jin in layouts.items():
            np.testing.assert_array_equal(Jin, J)
            results[name] = fastdto.dto_from_jacobians(Jin, return_v=True)
        first = results["row-major"]
        for name, res in results.items():
            for field in ("per_sample", "singular_values", "V", "permutation", "signs"):
                assert torch.equal(getattr(res, field), getattr(first, field)), (name, field, d, n)


def test_build_info():
    info = fastdto.build_info()
    assert info["cpu_code_path"] in ("x86-64-v3", "baseline")
    assert {"cuda", "cuda_architectures", "cuda_devices", "max_dim"} <= set(info)
    assert info["max_dim"] == fastdto.MAX_DIM == 64


# Engine behaviour a mutation-testing pass of the C++ code found unpinned: each test below failed on
# the engine with one small change (named in its docstring) and passes on the real one.


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gram_rcond_zero_never_takes_the_svd_path(rng, dtype):
    """gram_rcond = 0 must keep rank-deficient samples on the Gram (the sigma_min test ignored 0)."""
    J = rng.standard_normal((200, 2, 5)).astype(dtype)
    with pytest.warns(RuntimeWarning, match="outputs for"):
        assert not fastdto.dto_from_jacobians(J, gram_rcond=0.0).svd_path.any()


def test_samples_with_ill_conditioned_unit_columns_take_the_svd_path(rng):
    """The rule that keeps a sample on the Gram rests on a certified lower bound of the smallest
    eigenvalue of J's Gram with unit columns; a floor summed over the diagonal only kept 66 of 114
    samples below the bound on the Gram."""
    R = fastdto.DEFAULT_GRAM_RCOND
    below = 0
    for rel in (0.9, 0.5, 0.3, 0.1):
        for _ in range(50):
            J, _ = jacobian_with_spectrum(rng, 100, [1, 0.6, 0.3, R * rel])
            G = J.T @ J
            D = np.sqrt(np.diag(G))
            if np.linalg.eigvalsh(G / np.outer(D, D))[0] < R**2:
                below += 1
                assert fastdto.dto_from_jacobians(J[None]).svd_path.item()
    assert below > 20


@pytest.mark.parametrize("gram_rcond", [fastdto.DEFAULT_GRAM_RCOND, 1.0])  # Jacobi on G, and on J
def test_v_is_accurate_to_a_few_ulps_on_well_separated_spectra(rng, gram_rcond):
    """Stopping rules 1000x looser (either Jacobi) left V 7e-13 off; the engine reaches ~4e-15."""
    for _ in range(40):
        J, R = jacobian_with_spectrum(rng, 50, np.linspace(2, 1, 8))
        res = fastdto.dto_from_jacobians(J[None], gram_rcond=gram_rcond, return_v=True)
        assert np.abs(align_signs(res.V[0].numpy(), R) - R).max() < 2e-14


def test_exact_ties_and_zeros_have_documented_answers(rng):
    """Exactly tied singular values keep the latent order; a tie at tolerance 0 is still ambiguous; one
    latent never takes the SVD path; the first bad sample is the one named; a zero entry's sign is +1."""
    res = fastdto.dto_from_jacobians(np.eye(3)[None], return_v=True)
    assert torch.equal(res.V[0], torch.eye(3, dtype=torch.float64)) and res.permutation.tolist() == [[0, 1, 2]]
    J = np.zeros((1, 6, 4), dtype=np.float32)
    J[0, :, 0] = 1.0  # three exactly zero columns
    assert fastdto.dto_from_jacobians(J).permutation.tolist() == [[0, 1, 2, 3]]
    assert fastdto.dto_from_jacobians(np.eye(3)[None], ambiguity_tol=0.0).ambiguous.tolist() == [True]
    one = rng.standard_normal((5, 20, 1))
    assert not fastdto.dto_from_jacobians(one, gram_rcond=1.0).svd_path.any()
    J = np.ones((6, 4, 2))
    J[1, 0, 0], J[4, 2, 1] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"J\[1\] contains"):
        fastdto.dto_from_jacobians(J)
    assert fastdto.nearest_signed_permutation(np.zeros((1, 3, 3))).signs.tolist() == [[1, 1, 1]]
    assert fastdto.nearest_signed_permutation(np.array([[[0.0, 0.0], [0.0, 2.0]]])).signs.tolist() == [[1, 1]]
