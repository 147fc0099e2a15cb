"""Slow, deliberately simple reference implementation of Distance to Orthogonality.

This module is the oracle against which the fast engine of :mod:`fastdto` is
tested, and the "paper-style" baseline that benchmarks race against.  Every
step is written for clarity rather than speed, using only NumPy, SciPy and the
HiGHS MILP solver (``highspy``).  PyTorch is imported only inside
:func:`jacobians_loop`, so the rest of the module works without it.

What is computed
----------------
For every latent point the decoder Jacobian ``J`` (``n`` outputs by ``d``
latents) is factorised as ``J = U S V^T``.  Its right-singular-vector matrix
``V`` is compared with the signed permutation matrix ``P(V)`` that is closest
to it in the entry-wise L1 norm; the per-sample score is the Frobenius norm
``||V - P(V)||_F`` and DtO is the mean of these scores over the points.

Conventions (the compiled engine relies on exactly these)
---------------------------------------------------------
* Jacobians have shape ``(N, n, d)`` for a batch or ``(n, d)`` for one point.
* ``V`` is ``(d, d)``.  Its *columns* are the right singular vectors, ordered
  by singular value from largest to smallest; its *rows* index latent axes.
  The sign of each column is whatever LAPACK returns: the distance does not
  depend on it, because a signed permutation absorbs column sign flips.
  When ``n < d`` the missing singular values are reported as 0 and the
  corresponding columns of ``V`` span the null space (an arbitrary basis).
* A signed permutation is described by ``perm`` (int64) and ``signs`` (int8):
  row ``i`` of ``P`` holds ``signs[i]`` in column ``perm[i]`` and zeros
  elsewhere.  ``signs[i]`` is the sign of ``V[i, perm[i]]``, and ``+1`` when
  that entry is exactly zero.
* Choosing entry ``(i, j)`` with the sign of ``V_ij`` changes the L1 distance
  from ``sum |V|`` by ``1 - 2 * min(|V_ij|, 1)``.  Hence the L1-nearest signed
  permutation is a maximum-weight assignment with weights
  ``w_ij = min(|V_ij|, 1)`` (simply ``|V_ij|`` when ``V`` is orthogonal).
* ``distance`` is ``||V - P||_F`` evaluated entry by entry: the squares of the
  entries not picked plus ``(|V_i,perm(i)| - 1)^2`` for the picked ones.  This
  avoids the cancellation of closed forms such as ``sqrt(2(d - trace))``.
* Functions taking matrices accept a single one or a stacked batch and answer
  in the same layout (a scalar distance for a single matrix).
  :func:`dto_reference` and :func:`paper_style_dto` always answer batched.

Three solvers of the same assignment are provided so that they can check each
other: :func:`signed_permutation_lsa` (SciPy's Hungarian-type solver),
:func:`signed_permutation_milp` (the literal L1 mixed-integer programme, as the
paper solves it) and :func:`signed_permutation_bruteforce` (enumeration of
all ``d! 2^d`` signed permutations, ``d <= 6``).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = [
    "right_singular_vectors",
    "assignment_weights",
    "frobenius_distance",
    "l1_distance",
    "signed_permutation_matrix",
    "signed_permutation_lsa",
    "signed_permutation_milp",
    "signed_permutation_bruteforce",
    "dto_reference",
    "jacobians_loop",
    "paper_style_dto",
]

BRUTEFORCE_MAX_D = 6


# ---------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------

def _as_float_array(x, name):
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_finite(arr, name):
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or Inf")


def _check_square_batch(V, name="V"):
    """Return (V as (N, d, d) float64, was_single)."""
    arr = _as_float_array(V, name)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have 2 dims (d, d) or 3 dims (N, d, d), got shape {arr.shape}"
        )
    if arr.shape[-1] != arr.shape[-2]:
        raise ValueError(f"{name} must be square in its last two dims, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    _check_finite(arr, name)
    single = arr.ndim == 2
    return (arr[None] if single else arr), single


def _check_jacobians(J, name="J"):
    """Return (J as (N, n, d) float64, was_single)."""
    arr = _as_float_array(J, name)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have 2 dims (n, d) or 3 dims (N, n, d), got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    _check_finite(arr, name)
    single = arr.ndim == 2
    return (arr[None] if single else arr), single


def _check_perm_signs(perm, signs, d):
    perm = np.asarray(perm)
    signs = np.asarray(signs)
    if perm.shape != signs.shape or perm.shape[-1:] != (d,):
        raise ValueError(
            f"perm and signs must both have last dim {d}, got {perm.shape} and {signs.shape}"
        )
    if not np.issubdtype(perm.dtype, np.integer):
        raise ValueError(f"perm must be an integer array, got dtype {perm.dtype}")
    if not np.all(np.sort(perm, axis=-1) == np.arange(d)):
        raise ValueError("perm is not a permutation of 0..d-1")
    if not np.all(np.abs(signs) == 1):
        raise ValueError("signs must be -1 or +1")
    return perm.astype(np.int64), signs.astype(np.int8)


# ---------------------------------------------------------------------------
# SVD
# ---------------------------------------------------------------------------

def right_singular_vectors(J):
    """SVD of each Jacobian in float64.

    Parameters
    ----------
    J : array (N, n, d) or (n, d)

    Returns
    -------
    sigma : (N, d) float64, descending (``(d,)`` for a single matrix).
        Zero-padded to ``d`` when ``n < d``.
    V : (N, d, d) float64 (``(d, d)`` for a single matrix), columns are the
        right singular vectors in the order of ``sigma``.
    """
    Jb, single = _check_jacobians(J, "J")
    N, n, d = Jb.shape
    if n >= d:
        _, s, vt = np.linalg.svd(Jb, full_matrices=False)
    else:
        # only V must be square; U is n x n here, which is small
        _, s_short, vt = np.linalg.svd(Jb, full_matrices=True)
        s = np.zeros((N, d), dtype=np.float64)
        s[:, :n] = s_short
    V = np.ascontiguousarray(np.swapaxes(vt, -1, -2))
    s = np.ascontiguousarray(s, dtype=np.float64)
    if single:
        return s[0], V[0]
    return s, V


# ---------------------------------------------------------------------------
# helpers on signed permutations
# ---------------------------------------------------------------------------

def assignment_weights(V):
    """Weights ``min(|V_ij|, 1)`` of the maximum-weight assignment (same shape as V)."""
    Vb, single = _check_square_batch(V, "V")
    W = np.minimum(np.abs(Vb), 1.0)
    return W[0] if single else W


def _signs_from_entries(Vb, perm):
    """Sign of V[i, perm[i]] with +1 for zero entries; Vb (N,d,d), perm (N,d)."""
    picked = np.take_along_axis(Vb, perm[..., None], axis=-1)[..., 0]
    return np.where(picked < 0, -1, 1).astype(np.int8)


def _picked_mask(shape, perm):
    """Boolean (N, d, d) mask with True at (k, i, perm[k, i])."""
    mask = np.zeros(shape, dtype=bool)
    np.put_along_axis(mask, perm[..., None], True, axis=-1)
    return mask


def _frobenius(Vb, perm, signs):
    # Squares of entries divided by m >= 1, the largest magnitude per matrix: no overflow for huge V.
    m = np.maximum(np.abs(Vb).max(axis=(-2, -1)), 1.0)
    mask = _picked_mask(Vb.shape, perm)
    picked = np.take_along_axis(Vb, perm[..., None], axis=-1)[..., 0]
    scaled = Vb / m[..., None, None]
    unpicked_sq = np.where(mask, 0.0, scaled * scaled).sum(axis=(-2, -1))
    picked_sq = (((picked - signs.astype(np.float64)) / m[..., None]) ** 2).sum(axis=-1)
    return m * np.sqrt(unpicked_sq + picked_sq)


def _l1(Vb, perm, signs):
    mask = _picked_mask(Vb.shape, perm)
    picked = np.take_along_axis(Vb, perm[..., None], axis=-1)[..., 0]
    unpicked = np.where(mask, 0.0, np.abs(Vb)).sum(axis=(-2, -1))
    return unpicked + np.abs(picked - signs.astype(np.float64)).sum(axis=-1)


def _distance(V, perm, signs, kernel):
    Vb, single = _check_square_batch(V, "V")
    d = Vb.shape[-1]
    perm, signs = _check_perm_signs(perm, signs, d)
    perm = np.broadcast_to(perm.reshape(-1, d), (Vb.shape[0], d))
    signs = np.broadcast_to(signs.reshape(-1, d), (Vb.shape[0], d))
    out = kernel(Vb, perm, signs)
    return np.float64(out[0]) if single else out


def frobenius_distance(V, perm, signs):
    """``||V - P||_F`` for the signed permutation (perm, signs), entry by entry."""
    return _distance(V, perm, signs, _frobenius)


def l1_distance(V, perm, signs):
    """Entry-wise L1 distance ``sum |V - P|`` for the signed permutation (perm, signs)."""
    return _distance(V, perm, signs, _l1)


def signed_permutation_matrix(perm, signs):
    """Dense matrix P (float64) with ``P[i, perm[i]] = signs[i]``; batched if perm is 2-D."""
    perm = np.asarray(perm)
    d = perm.shape[-1]
    perm, signs = _check_perm_signs(perm, signs, d)
    pb = perm.reshape(-1, d)
    sb = signs.reshape(-1, d)
    P = np.zeros((pb.shape[0], d, d), dtype=np.float64)
    rows = np.arange(d)
    for k in range(pb.shape[0]):
        P[k, rows, pb[k]] = sb[k]
    return P.reshape(perm.shape + (d,))


def _finish(Vb, perm, single):
    perm = np.ascontiguousarray(perm, dtype=np.int64)
    signs = _signs_from_entries(Vb, perm)
    dist = _frobenius(Vb, perm, signs)
    if single:
        return perm[0], signs[0], np.float64(dist[0])
    return perm, signs, dist


# ---------------------------------------------------------------------------
# solver 1: linear sum assignment
# ---------------------------------------------------------------------------

def signed_permutation_lsa(V):
    """L1-nearest signed permutation by maximum-weight assignment (SciPy).

    Parameters
    ----------
    V : array (d, d) or (N, d, d)

    Returns
    -------
    perm : int64 (d,) or (N, d)
    signs : int8 (d,) or (N, d)
    distance : float64 scalar or (N,), ``||V - P||_F``
    """
    Vb, single = _check_square_batch(V, "V")
    N, d, _ = Vb.shape
    W = np.minimum(np.abs(Vb), 1.0)
    perm = np.empty((N, d), dtype=np.int64)
    for k in range(N):
        rows, cols = linear_sum_assignment(W[k], maximize=True)
        perm[k, rows] = cols
    return _finish(Vb, perm, single)


# ---------------------------------------------------------------------------
# solver 2: the literal L1 MILP (HiGHS)
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=32)
def _milp_structure(d):
    """Column-wise constraint matrix of the L1 MILP for size d (depends on d only).

    Columns: Pp_ij at i*d+j, Pm_ij at d^2 + i*d+j, T_ij at 2 d^2 + i*d+j.
    Rows: 0 .. d^2-1       T_ij + Pp_ij - Pm_ij >=  V_ij
          d^2 .. 2d^2-1    T_ij - Pp_ij + Pm_ij >= -V_ij
          2d^2 + i         sum_j (Pp_ij + Pm_ij) = 1   (row i of P)
          2d^2 + d + j     sum_i (Pp_ij + Pm_ij) = 1   (column j of P)
    """
    d2 = d * d
    starts, index, value = [0], [], []
    for block in range(3):
        for k in range(d2):
            i, j = divmod(k, d)
            if block == 0:  # Pp
                entries = [(k, 1.0), (d2 + k, -1.0), (2 * d2 + i, 1.0), (2 * d2 + d + j, 1.0)]
            elif block == 1:  # Pm
                entries = [(k, -1.0), (d2 + k, 1.0), (2 * d2 + i, 1.0), (2 * d2 + d + j, 1.0)]
            else:  # T
                entries = [(k, 1.0), (d2 + k, 1.0)]
            for r, v in entries:
                index.append(r)
                value.append(v)
            starts.append(len(index))
    return (
        np.asarray(starts, dtype=np.int32),
        np.asarray(index, dtype=np.int32),
        np.asarray(value, dtype=np.float64),
    )


def _solve_milp_one(V, time_limit):
    import highspy

    d = V.shape[0]
    d2 = d * d
    ncol, nrow = 3 * d2, 2 * d2 + 2 * d
    starts, index, value = _milp_structure(d)
    inf = highspy.kHighsInf
    flat = V.reshape(-1)

    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = nrow
    lp.col_cost_ = np.concatenate([np.zeros(2 * d2), np.ones(d2)])
    lp.col_lower_ = np.zeros(ncol)
    lp.col_upper_ = np.concatenate([np.ones(2 * d2), np.full(d2, inf)])
    lp.row_lower_ = np.concatenate([flat, -flat, np.ones(2 * d)])
    lp.row_upper_ = np.concatenate([np.full(2 * d2, inf), np.ones(2 * d)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = ncol
    lp.a_matrix_.num_row_ = nrow
    lp.a_matrix_.start_ = starts
    lp.a_matrix_.index_ = index
    lp.a_matrix_.value_ = value
    lp.integrality_ = [highspy.HighsVarType.kInteger] * (2 * d2) + [
        highspy.HighsVarType.kContinuous
    ] * d2

    # highspy's Python wrapper (``Highs``) installs a logging callback when it is built, which prints
    # HiGHS's banner before output_flag can be turned off; the bare solver class it wraps does not.
    h = getattr(highspy, "_Highs", highspy.Highs)()
    h.setOptionValue("output_flag", False)
    # prove optimality exactly rather than within the default 1e-4 relative gap
    h.setOptionValue("mip_rel_gap", 0.0)
    h.setOptionValue("mip_abs_gap", 1e-12)
    if time_limit is not None:
        h.setOptionValue("time_limit", float(time_limit))
    status = h.passModel(lp)
    if status != highspy.HighsStatus.kOk:
        raise RuntimeError(f"HiGHS rejected the MILP model (status {status})")
    h.run()
    model_status = h.getModelStatus()
    if model_status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(
            "HiGHS did not solve the signed-permutation MILP to optimality: "
            + h.modelStatusToString(model_status)
        )
    x = np.asarray(h.getSolution().col_value, dtype=np.float64)
    picked = (x[:d2] + x[d2 : 2 * d2]).reshape(d, d) > 0.5
    if not (np.all(picked.sum(axis=1) == 1) and np.all(picked.sum(axis=0) == 1)):
        raise RuntimeError("HiGHS returned a MILP solution that is not a permutation")
    return np.argmax(picked, axis=1)


def signed_permutation_milp(V, time_limit=None):
    """L1-nearest signed permutation from the literal MILP, solved with HiGHS.

    Binaries ``Pp_ij, Pm_ij`` (``P = Pp - Pm``), slacks ``T_ij >= |V_ij - P_ij|``,
    minimise ``sum T`` subject to one non-zero per row and per column.  Each
    matrix of a batch is a separate solve.  ``time_limit`` (seconds, per
    matrix) is passed to HiGHS; a solve that does not end optimal raises
    RuntimeError.  Returns ``(perm, signs, distance)`` as
    :func:`signed_permutation_lsa`; the signs follow the module convention
    (sign of the picked entry, +1 for zero), which is what the optimum uses.
    """
    if time_limit is not None:
        try:
            time_limit = float(time_limit)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"time_limit must be a number or None, got {time_limit!r}") from exc
        if not time_limit > 0:
            raise ValueError(f"time_limit must be positive, got {time_limit}")
    Vb, single = _check_square_batch(V, "V")
    N, d, _ = Vb.shape
    perm = np.empty((N, d), dtype=np.int64)
    for k in range(N):
        perm[k] = _solve_milp_one(Vb[k], time_limit)
    return _finish(Vb, perm, single)


# ---------------------------------------------------------------------------
# solver 3: brute force
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=BRUTEFORCE_MAX_D)
def _all_signed_permutations(d):
    """All d! * 2^d signed permutations: permutations outer (lexicographic),
    sign patterns inner (bit i set means row i is -1, so all-plus comes first)."""
    perms = np.array(list(itertools.permutations(range(d))), dtype=np.int64)
    bits = np.arange(2**d)[:, None] >> np.arange(d)[None, :] & 1
    sign_patterns = np.where(bits == 1, -1, 1).astype(np.int8)
    P = np.repeat(perms, len(sign_patterns), axis=0)
    S = np.tile(sign_patterns, (len(perms), 1))
    return P, S


def signed_permutation_bruteforce(V):
    """L1-nearest signed permutation by enumerating all ``d! 2^d`` candidates.

    Only for ``d <= 6`` (46,080 candidates).  Ties go to the first candidate
    in enumeration order.  Returns ``(perm, signs, distance)`` as
    :func:`signed_permutation_lsa`.
    """
    Vb, single = _check_square_batch(V, "V")
    N, d, _ = Vb.shape
    if d > BRUTEFORCE_MAX_D:
        raise ValueError(f"V: brute force supports d <= {BRUTEFORCE_MAX_D}, got d = {d}")
    P, S = _all_signed_permutations(d)
    rows = np.arange(d)
    perm = np.empty((N, d), dtype=np.int64)
    signs = np.empty((N, d), dtype=np.int8)
    for k in range(N):
        A = np.abs(Vb[k])
        # ||V - P||_1 = sum|V| + sum_i (|V_i,p(i) - s_i| - |V_i,p(i)|)
        picked = Vb[k][rows[None, :], P]  # (M, d)
        cost = A.sum() + (np.abs(picked - S) - np.abs(picked)).sum(axis=1)
        best = int(np.argmin(cost))
        perm[k] = P[best]
        signs[k] = S[best]
    dist = _frobenius(Vb, perm, signs)
    if single:
        return perm[0], signs[0], np.float64(dist[0])
    return perm, signs, dist


# ---------------------------------------------------------------------------
# DtO
# ---------------------------------------------------------------------------

def _dto_dict(sigma, V, perm, signs, per_sample):
    return {
        "per_sample": per_sample,
        "dto": float(np.mean(per_sample)),
        "std": float(np.std(per_sample, ddof=0)),
        "sigma": sigma,
        "V": V,
        "perm": perm,
        "signs": signs,
    }


def dto_reference(J):
    """DtO of a stack of Jacobians (SVD in float64 + assignment).

    J : (N, n, d) or (n, d) (treated as N = 1).

    Returns a dict: ``per_sample`` (N,), ``dto`` (mean, float), ``std``
    (population standard deviation, ddof=0), ``sigma`` (N, d), ``V``
    (N, d, d), ``perm`` (N, d) int64, ``signs`` (N, d) int8.
    """
    Jb, _ = _check_jacobians(J, "J")
    sigma, V = right_singular_vectors(Jb)
    perm, signs, dist = signed_permutation_lsa(V)
    return _dto_dict(sigma, V, perm, signs, dist)


def jacobians_loop(decoder, latents):
    """Decoder Jacobians one point at a time with ``torch.autograd.functional.jacobian``.

    decoder : callable mapping a (B, d) tensor to a (B, ...) tensor.
    latents : (N, d) array or tensor.  Evaluated in the dtype and on the device
        of the decoder's first parameter when the decoder has ``parameters()``,
        otherwise in the latents' own floating dtype (integers become float64);
        a plain function wrapping a float32 network therefore needs float32
        latents.

    Returns (N, n, d) float64 NumPy array, n = number of outputs per point.
    The decoder is used as is (call ``decoder.eval()`` first if it has
    dropout or batch norm).
    """
    import torch

    if not callable(decoder):
        raise ValueError("decoder must be callable")
    if isinstance(latents, torch.Tensor):
        z_all = latents.detach()
    else:
        arr = np.asarray(latents)
        if not np.issubdtype(arr.dtype, np.floating):
            arr = _as_float_array(arr, "latents")  # ints/bools -> float64, others rejected
        z_all = torch.as_tensor(arr)
    if z_all.ndim != 2:
        raise ValueError(f"latents must have 2 dims (N, d), got shape {tuple(z_all.shape)}")
    if z_all.numel() == 0:
        raise ValueError(f"latents is empty (shape {tuple(z_all.shape)})")
    if not torch.isfinite(z_all).all():
        raise ValueError("latents contains NaN or Inf")
    params = list(decoder.parameters()) if hasattr(decoder, "parameters") else []
    if params:
        z_all = z_all.to(dtype=params[0].dtype, device=params[0].device)
    elif not torch.is_floating_point(z_all):
        z_all = z_all.to(torch.float64)

    def f(z):
        out = decoder(z.unsqueeze(0))
        if out.shape[0] != 1:
            raise ValueError(
                f"decoder must keep the batch dim: input batch 1 gave output shape {tuple(out.shape)}"
            )
        return out.reshape(-1)

    jacs = []
    for k in range(z_all.shape[0]):
        jac = torch.autograd.functional.jacobian(f, z_all[k])  # (n, d)
        jacs.append(jac.detach().to("cpu", torch.float64).numpy())
    return np.stack(jacs)


def paper_style_dto(decoder, latents, time_limit=None):
    """The naive pipeline: per-point autograd Jacobians, NumPy SVD, one MILP per point.

    Returns the same dict as :func:`dto_reference`.  ``time_limit`` is the
    per-MILP limit in seconds (None: no limit).
    """
    J = jacobians_loop(decoder, latents)
    sigma, V = right_singular_vectors(J)
    perm, signs, dist = signed_permutation_milp(V, time_limit=time_limit)
    return _dto_dict(sigma, V, perm, signs, dist)
