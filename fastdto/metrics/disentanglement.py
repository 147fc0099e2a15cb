"""Adjusted MIG ("disentanglement score") with 1-D nearest-neighbour probes.

The paper describes its score only as a variant of MIG that copes with both
continuous and discrete generative factors; the exact definition sits in a
supplement we could not read.  This module implements the reconstruction in
``shared/paper/supplement-notes.md`` (section 4).  Every free choice is a
keyword argument whose default is stated in :func:`disentanglement_score`.
"""

from __future__ import annotations

import numpy as np

from ._validation import (
    MAX_DISCRETE_VALUES,
    check_bool,
    check_discrete,
    check_int,
    check_pair,
    labels_of,
    power_of_two_scaled,
    top_two_gap,
)

__all__ = ["disentanglement_score"]


def _knn_1d(train_sorted: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    """Indices (into ``train_sorted``) of the ``k`` nearest training points.

    In one dimension the ``k`` nearest neighbours of a query form a contiguous
    run of the sorted training values that touches the query's insertion
    point ``p``; that run lies inside ``[p - k, p + k - 1]``, so a window of
    ``2k`` candidates per query is enough.  Fully vectorised.
    Ties in distance are broken arbitrarily but deterministically.
    """
    n = train_sorted.shape[0]
    pos = np.searchsorted(train_sorted, query)
    idx = pos[:, None] + np.arange(-k, k)
    valid = (idx >= 0) & (idx < n)
    np.clip(idx, 0, n - 1, out=idx)
    dist = np.abs(train_sorted[idx] - query[:, None])
    dist[~valid] = np.inf
    sel = np.argpartition(dist, k - 1, axis=1)[:, :k]
    return np.take_along_axis(idx, sel, axis=1)


def _majority_vote(labels: np.ndarray) -> np.ndarray:
    """Mode along axis 1 of integer labels ``(n, k, F)``; ties -> smallest label."""
    k = labels.shape[1]
    counts = np.zeros(labels.shape, dtype=np.int8 if k < 127 else np.int64)
    for a in range(k):
        counts += labels == labels[:, a : a + 1, :]
    key = counts.astype(np.int64) * (int(labels.max(initial=0)) + 1) - labels
    best = np.argmax(key, axis=1)
    return np.take_along_axis(labels, best[:, None, :], axis=1)[:, 0, :]


def disentanglement_score(
    latents,
    factors,
    discrete=None,
    n_neighbors: int = 5,
    n_folds: int = 5,
    max_samples: int | None = 50_000,
    seed: int = 0,
    return_details: bool = False,
):
    """Adjusted MIG of a code: how well single latents predict single factors.

    **This is a reconstruction** of a definition that is not published in
    the paper itself: it lives in supplement B.1, which we could not read.
    What follows is the best available reconstruction (supplement notes,
    section 4), with our own choices wherever it leaves things open.

    For every factor ``w_k`` and every single latent ``z_j`` a
    ``n_neighbors``-nearest-neighbour probe ``z_j -> w_k`` (one input
    dimension) is fitted and scored out of sample:

    * continuous factor: sensitivity ``(sd(w_k) - RMSE) / sd(w_k)``, with the
      probe predicting the mean of the neighbours' values;
    * discrete factor: ``(acc - acc0) / (1 - acc0)``, the probe predicting
      the neighbours' majority class, ``acc0`` the accuracy of the best
      constant prediction.

    Both are clipped to ``[0, 1]``.  Per factor the score is the best minus
    the second-best value over latents; the result is the mean over factors.

    Choices (each a parameter or stated here):

    1. Probe: uniform-weight kNN, ``n_neighbors=5``; majority-vote ties go to
       the smallest class code; distance ties between training points are
       broken arbitrarily (deterministically).
    2. Out-of-sample evaluation: ``n_folds``-fold cross-validation
       (default 5) over a seeded random permutation (``seed``); errors and
       accuracies are pooled over all held-out predictions, so every
       evaluated sample is predicted exactly once, never by a probe that saw it.
    3. ``sd(w_k)`` is the population standard deviation over the evaluated
       samples, i.e. the RMSE of the best constant predictor; ``acc0`` is the
       largest class frequency over the evaluated samples (best constant
       classifier, chosen with hindsight, so slightly conservative).
    4. The discrete normalisation ``(acc - acc0) / (1 - acc0)`` keeps the
       value in ``[0, 1]`` after clipping (the source reconstruction's
       normalisation could exceed 1).
    5. ``discrete=None`` infers the factor type: a factor is discrete when
       all its values are integers and it has at most 50 distinct values;
       a single bool applies to all factors; else give one bool per factor.
    6. ``max_samples`` (default 50,000): larger inputs are subsampled
       without replacement with ``seed``; ``None`` uses every sample.
    7. With a single latent the second-best value is taken as 0.
    8. A constant factor has no defined score and raises ``ValueError``.

    Parameters
    ----------
    latents : array (N, d), NumPy or torch (any device)
    factors : array (N, K)
    return_details : if True return a dict with the score, the per-factor
        gaps, the ``(K, d)`` probe-score matrix and the settings used.

    Returns
    -------
    float in ``[0, 1]`` (or a dict, see ``return_details``).
    """
    z, w = check_pair(latents, factors)
    flags = check_discrete(discrete, w)
    k = check_int(n_neighbors, "n_neighbors", 1)
    n_folds = check_int(n_folds, "n_folds", 2)
    if max_samples is not None:
        max_samples = check_int(max_samples, "max_samples", 2)
    seed = check_int(seed, "seed", 0)
    return_details = check_bool(return_details, "return_details")

    rng = np.random.default_rng(int(seed))
    n_total = z.shape[0]
    if max_samples is not None and n_total > max_samples:
        keep = np.sort(rng.choice(n_total, size=max_samples, replace=False))
        z, w = z[keep], w[keep]
    n, d = z.shape
    n_factors = w.shape[1]
    if n_folds > n:
        raise ValueError(f"n_folds: {n_folds} folds need at least as many samples, got {n}")
    min_train = n - -(-n // n_folds)  # smallest training set (largest fold held out)
    if k > min_train:
        raise ValueError(
            f"n_neighbors: {k} neighbours but the smallest training fold has only "
            f"{min_train} samples ({n} samples, {n_folds} folds)"
        )

    cont = np.flatnonzero(~flags)
    disc = np.flatnonzero(flags)
    wc = w[:, cont]
    # The score is scale-free, but squares of factors near 1e160 or 1e-170 would over- or underflow.
    wc, _ = power_of_two_scaled(wc)
    sd = wc.std(axis=0)
    for i, kk in enumerate(cont):
        if not sd[i] > 0:
            raise ValueError(f"factors: continuous factor {kk} is constant; its score is undefined")
    if disc.size:
        codes = [labels_of(w[:, kk]) for kk in disc]
        for (lab, n_cls), kk in zip(codes, disc):
            if n_cls < 2:
                raise ValueError(f"factors: discrete factor {kk} has a single value; its score is undefined")
        ld = np.stack([c[0] for c in codes], axis=1)
        acc0 = np.array([np.bincount(c[0]).max() / n for c in codes])
    else:
        ld = np.zeros((n, 0), dtype=np.int64)
        acc0 = np.zeros(0)

    sq_err = np.zeros((d, cont.size))
    n_correct = np.zeros((d, disc.size))
    folds = np.array_split(rng.permutation(n), n_folds)
    for f, test_idx in enumerate(folds):
        train_idx = np.concatenate([folds[g] for g in range(n_folds) if g != f])
        for j in range(d):
            ztr = z[train_idx, j]
            order = np.argsort(ztr, kind="stable")
            nbr = _knn_1d(ztr[order], z[test_idx, j], k)
            src = train_idx[order][nbr]  # (n_test, k) sample indices
            if cont.size:
                pred = wc[src].mean(axis=1)
                sq_err[j] += ((pred - wc[test_idx]) ** 2).sum(axis=0)
            if disc.size:
                pred = _majority_vote(ld[src])
                n_correct[j] += (pred == ld[test_idx]).sum(axis=0)

    scores = np.zeros((n_factors, d))
    if cont.size:
        rmse = np.sqrt(sq_err / n)  # (d, Kc)
        scores[cont] = ((sd - rmse) / sd).T
    if disc.size:
        acc = n_correct / n
        scores[disc] = ((acc - acc0) / (1.0 - acc0)).T
    np.clip(scores, 0.0, 1.0, out=scores)

    gaps = top_two_gap(scores)
    score = float(gaps.mean())
    if not return_details:
        return score
    return {
        "score": score,
        "per_factor": gaps,
        "matrix": scores,
        "best_latent": np.argmax(scores, axis=1),
        "discrete": flags,
        "n_samples": n,
        "n_neighbors": k,
        "n_folds": n_folds,
        "max_samples": max_samples,
        "seed": int(seed),
        "max_discrete_values": MAX_DISCRETE_VALUES,
    }
