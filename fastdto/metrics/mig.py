"""Classic Mutual Information Gap (Chen et al., 2018), plug-in estimate.

Published "MIG" numbers differ wildly between libraries because of the
discretisation and the factor set; every such choice is a parameter here.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from ._validation import (check_bool, check_discrete, check_int, check_pair, labels_of, power_of_two_scaled,
                          top_two_gap)

__all__ = ["mig", "discretize", "mutual_information", "entropy"]

_ESTIMATORS = ("histogram", "quantile")
#: Most bins mig takes: the quantile bins multiply ranks by n_bins in int64.
MAX_BINS = 2**31 - 1


def discretize(x: np.ndarray, n_bins: int, estimator: str = "histogram") -> np.ndarray:
    """Bin codes ``0..n_bins-1`` for each column of ``x`` (N, d).

    ``"histogram"``: ``n_bins`` equal-width bins between the column's min and
    max (``np.histogram`` edges, then ``np.digitize`` against all edges but the
    last), exactly as disentanglement_lib does.  ``"quantile"``: equal-mass
    bins from average ranks (tied values share a bin; sizes differ by at most one).
    """
    out = np.empty(x.shape, dtype=np.int64)
    for j in range(x.shape[1]):
        col = x[:, j]
        if estimator == "histogram":
            lo, hi = col.min(), col.max()
            if lo == hi:  # one value, one bin (numpy would centre a unit range on it, or fail above 1e15)
                out[:, j] = 0
                continue
            col = power_of_two_scaled(col)[0]  # exact, so the bins are unchanged; hi - lo stays finite
            edges = None
            if n_bins <= 4 * col.shape[0]:  # beyond, n_bins + 1 edges outweigh the data (8 GB at 10**9)
                try:
                    edges = np.histogram(col, bins=n_bins)[1]
                except ValueError:  # a range at the values' resolution: numpy cannot make distinct edges
                    pass
            if edges is not None:
                out[:, j] = np.digitize(col, edges[:-1]) - 1
            else:  # the same bins by arithmetic (a value within rounding of an edge may move by one)
                low, width = col.min(), col.max() - col.min()
                out[:, j] = np.minimum(((col - low) / width * n_bins).astype(np.int64), n_bins - 1)
        else:
            # Bin floor((r + 1/2) n_bins / N) of average rank r, in integers: reversing the column's
            # order reverses the bins (a sign flip of a latent leaves MIG unchanged) except for a
            # point exactly on a bin edge (the middle one when N is odd and n_bins even), and bin
            # sizes differ by at most one. Tied values share a rank and so a bin.
            twice_rank = (2 * rankdata(col, method="average")).astype(np.int64) - 2
            out[:, j] = ((twice_rank + 1) * n_bins) // (2 * col.shape[0])
    return out


def entropy(labels: np.ndarray) -> float:
    """Plug-in entropy (nats) of integer labels."""
    p = np.bincount(labels) / labels.shape[0]
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two integer label vectors."""
    n = a.shape[0]
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    if na * nb > max(4 * n, 1 << 20):
        # Labels far sparser than their range (e.g. n_bins = 10**7): the occupied pairs only (the
        # dense table's nonzero entries, in its order; the marginals are counted directly).
        a = np.unique(a, return_inverse=True)[1].reshape(-1)
        b = np.unique(b, return_inverse=True)[1].reshape(-1)
        nb = int(b.max()) + 1
        pairs, counts = np.unique(a.astype(np.int64) * nb + b, return_counts=True)
        pa, pb = np.bincount(a) / n, np.bincount(b) / n
        p = counts / n
        mi = (p * np.log(p / (pa[pairs // nb] * pb[pairs % nb]))).sum()
        return float(max(mi, 0.0))
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(-1, nb) / n
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    mi = (joint[nz] * np.log(joint[nz] / (pa * pb)[nz])).sum()
    return float(max(mi, 0.0))


def mig(
    latents,
    factors,
    n_bins: int = 20,
    discrete_latents: bool = False,
    exclude=(),
    estimator: str = "histogram",
    discrete=None,
    continuous_factors: str = "bin",
    return_details: bool = False,
):
    """Mutual Information Gap: mean over factors of the normalised MI gap.

    For factor ``v_k``: ``(I(z_a; v_k) - I(z_b; v_k)) / H(v_k)`` where ``z_a``,
    ``z_b`` are the latents with the largest and second-largest mutual
    information with ``v_k``.  MI and entropy are plug-in (contingency-table)
    estimates in nats; the ratio does not depend on the log base.

    Options and defaults:

    * ``n_bins=20``, ``estimator="histogram"``: each latent is cut into
      ``n_bins`` equal-width bins over its own range (disentanglement_lib's
      variant).  ``estimator="quantile"`` uses equal-mass bins instead.
      ``n_bins`` may be up to ``2**31 - 1``; above ``4 N`` the equal-width
      bins are found by arithmetic instead of numpy's edges (memory O(N)).
    * ``discrete_latents=True``: latents are used as labels as they are
      (each distinct value its own class), no binning.
    * ``exclude``: factor indices left out of the mean (e.g. dSprites' shape,
      as Chen et al. do); they are still validated.
    * ``discrete``: factor types, inferred when ``None`` (integer-valued with
      at most 50 distinct values -> discrete), or a bool / one bool per factor.
      Discrete factors are used as labels as they are.
    * ``continuous_factors="bin"`` (default): continuous factors are cut
      into ``n_bins`` bins with the same ``estimator`` as the latents, so the
      result depends on ``n_bins`` for them too; ``"raise"`` rejects
      continuous factors with ``ValueError`` instead.
    * With a single latent the second-best MI is taken as 0.
    * A factor with a single value (``H = 0``) raises ``ValueError`` unless
      it is in ``exclude``.

    Returns a float in ``[0, 1]``, or with ``return_details=True`` a dict with
    the ``(K, d)`` MI matrix, factor entropies, per-factor gaps and settings.
    """
    z, w = check_pair(latents, factors)
    n_bins = check_int(n_bins, "n_bins", 2, MAX_BINS)
    discrete_latents = check_bool(discrete_latents, "discrete_latents")
    return_details = check_bool(return_details, "return_details")
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator: must be one of {_ESTIMATORS}, got {estimator!r}")
    if continuous_factors not in ("bin", "raise"):
        raise ValueError(f"continuous_factors: must be 'bin' or 'raise', got {continuous_factors!r}")
    flags = check_discrete(discrete, w)
    n_factors = w.shape[1]
    if isinstance(exclude, (int, np.integer)) and not isinstance(exclude, bool):
        exclude = (exclude,)
    try:
        excl = list(exclude)
    except TypeError:
        raise ValueError(f"exclude: must be a sequence of factor indices, got {exclude!r}") from None
    for e in excl:
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, (int, np.integer)):
            raise ValueError(f"exclude: factor indices must be integers, got {e!r}")
        if not -n_factors <= e < n_factors:
            raise ValueError(f"exclude: factor index {e} out of range for {n_factors} factors")
    excl = sorted({int(e) % n_factors for e in excl})
    keep = [kk for kk in range(n_factors) if kk not in excl]
    if not keep:
        raise ValueError("exclude: every factor is excluded")
    if continuous_factors == "raise" and not flags.all():
        bad = np.flatnonzero(~flags).tolist()
        raise ValueError(
            f"factors: factor(s) {bad} are continuous; pass discrete=... or "
            f"continuous_factors='bin' to bin them"
        )

    if discrete_latents:
        zc = np.stack([labels_of(z[:, j])[0] for j in range(z.shape[1])], axis=1)
    else:
        zc = discretize(z, n_bins, estimator)
    d = z.shape[1]

    mi = np.zeros((n_factors, d))
    ent = np.zeros(n_factors)
    for kk in range(n_factors):
        if flags[kk]:
            v = labels_of(w[:, kk])[0]
        else:
            v = discretize(w[:, kk : kk + 1], n_bins, estimator)[:, 0]
        ent[kk] = entropy(v)
        if kk in excl:
            continue
        if ent[kk] <= 0:
            raise ValueError(f"factors: factor {kk} takes a single value (H = 0); exclude it")
        for j in range(d):
            mi[kk, j] = mutual_information(zc[:, j], v)

    gaps = np.clip(top_two_gap(mi[keep]) / ent[keep], 0.0, 1.0)
    score = float(gaps.mean())
    if not return_details:
        return score
    return {
        "score": score,
        "per_factor": gaps,
        "factors_used": np.asarray(keep),
        "mi": mi,
        "entropy": ent,
        "discrete": flags,
        "n_bins": n_bins,
        "estimator": estimator,
        "discrete_latents": bool(discrete_latents),
        "continuous_factors": continuous_factors,
    }
