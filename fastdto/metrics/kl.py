"""Active latents, the KL split between active and passive latents, and the
share of training spent in the "polarised" regime (notes, section 3).
"""

from __future__ import annotations

import numbers

import numpy as np

from ._validation import _is_torch_tensor, as_matrix, check_positive_float, latent_indices, power_of_two_scaled

__all__ = ["active_latents", "kl_terms", "polarized_fraction"]


def active_latents(mu, threshold: float = 0.5) -> np.ndarray:
    """Boolean mask of active latents.

    Latent ``j`` is active when the standard deviation over data points of
    its posterior mean ``mu[:, j]`` exceeds ``threshold`` (default 0.5).
    The population standard deviation (``ddof=0``) is used; the comparison
    is strict.

    ``mu``: array ``(N, d)`` of posterior means, NumPy or torch, ``N >= 2``.
    """
    m = as_matrix(mu, "mu")
    threshold = check_positive_float(threshold, "threshold", allow_zero=True)
    # Shifted by the first value as well: a constant column has std exactly 0 at any scale.
    scaled, e = power_of_two_scaled(m)
    return np.ldexp((scaled - scaled[:1]).std(axis=0), e) > threshold


def kl_terms(mu, logvar, active=None, threshold: float = 0.5) -> dict:
    """KL divergence to N(0, I) and the share not carried by active latents.

    With ``sigma_j^2 = exp(logvar_j)``, per sample::

        L_KL        = 1/2 sum_j          (mu_j^2 + sigma_j^2 - log sigma_j^2 - 1)
        L_KL_active = 1/2 sum_{j active} (mu_j^2             - log sigma_j^2 - 1)

    both averaged over the ``N`` samples (mean per-sample KL), and
    ``delta_KL = |L_KL - L_KL_active| / L_KL``.  ``L_KL_active`` follows the
    paper's formula as written (no ``sigma_j^2`` term).

    ``active``: boolean mask of length ``d`` or integer latent indices; when
    ``None`` it is recomputed from ``mu`` with :func:`active_latents` and
    ``threshold``.  When ``L_KL == 0`` (every posterior equals the prior),
    ``delta_KL`` is defined as 0.0 if ``L_KL_active`` is also 0 and ``inf``
    otherwise.

    ``mu``, ``logvar``: arrays ``(N, d)`` of equal shape, NumPy or torch (any
    device).  A KL beyond float64's range (``logvar`` above about 709,
    ``|mu|`` above about 1e154) raises ``ValueError``.  Returns a dict of Python floats ``L_KL``, ``L_KL_active``,
    ``delta_KL`` and the boolean NumPy mask ``active``.
    """
    m = as_matrix(mu, "mu")
    lv = as_matrix(logvar, "logvar")
    if lv.shape != m.shape:
        raise ValueError(f"logvar: shape {lv.shape} differs from mu's shape {m.shape}")
    if active is None:
        mask = active_latents(m, threshold)
    else:
        mask = np.zeros(m.shape[1], dtype=bool)
        mask[latent_indices(active, m.shape[1])] = True
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below
        m2 = m * m
        full = 0.5 * _mean_row_sum(m2 + np.exp(lv) - lv - 1.0)
        part = 0.5 * _mean_row_sum(m2[:, mask] - lv[:, mask] - 1.0) if mask.any() else 0.0
    full, part = float(full), float(part)
    if not (np.isfinite(full) and np.isfinite(part)):
        # exp(logvar) or mu^2 beyond float64: no meaningful ratio is left.
        raise ValueError(
            f"mu, logvar: the KL overflows float64 (max |mu| {np.abs(m).max():.3g}, "
            f"max logvar {lv.max():.3g}; logvar must stay below about 709)")
    if full > 0:
        delta = abs(full - part) / full
    else:
        delta = 0.0 if part == 0 else float("inf")
    return {"L_KL": full, "L_KL_active": part, "delta_KL": float(delta), "active": mask}


def _mean_row_sum(t: np.ndarray) -> float:
    """Mean over rows of each row's sum, as (entries per row) x (mean entry) with the entries divided by
    their count before summing: no partial sum exceeds the largest entry (a sum over 1e5 rows of KLs
    near 5e304 overflowed)."""
    return (t / t.size).sum() * t.shape[1]


def polarized_fraction(history, threshold: float = 0.03, count_first_interval: bool = True) -> float:
    """Share of training time spent polarised until the end.

    ``history``: sequence of ``(step, delta_KL)`` checks (or an ``(n, 2)``
    array) with strictly increasing, non-negative steps.  Training time runs
    from step 0 to the last check's step.  The polarised period starts at the
    earliest check from which every later check (itself included) has
    ``delta_KL < threshold`` (default 0.03), and runs to the last step.

    Counting: the period starts *at the step of that check*; the time since
    the previous (failing) check is not counted, as nothing shows the regime
    held then.  When every check passes, there is no earlier evidence
    against it, and with ``count_first_interval=True`` (default) the span
    ``[0, first step]`` counts too, giving 1.0; with ``False`` it does not.
    A failing last check gives 0.0.  If the last step is 0 the result is 1.0
    or 0.0 depending on that single check.  ``delta_KL`` may be ``inf``
    (counts as failing) but not NaN.
    """
    threshold = check_positive_float(threshold, "threshold")
    if _is_torch_tensor(history):
        history = history.detach().cpu().numpy()
    try:
        h = np.asarray(history, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"history: must be a sequence of (step, delta_KL) pairs ({exc})") from None
    if h.ndim != 2 or h.shape[1] != 2:
        raise ValueError(f"history: must be a sequence of (step, delta_KL) pairs, got shape {h.shape}")
    if h.shape[0] == 0:
        raise ValueError("history: is empty")
    steps, delta = h[:, 0], h[:, 1]
    if not np.isfinite(steps).all() or (steps < 0).any():
        raise ValueError("history: steps must be finite and >= 0")
    if (np.diff(steps) <= 0).any():
        raise ValueError("history: steps must be strictly increasing (checks in time order)")
    if np.isnan(delta).any():
        raise ValueError("history: delta_KL values must not be NaN")
    if not isinstance(count_first_interval, (bool, np.bool_, numbers.Integral)):
        raise ValueError(f"count_first_interval: must be a bool, got {count_first_interval!r}")

    below = delta < threshold
    if not below[-1]:
        return 0.0
    failing = np.flatnonzero(~below)
    first = int(failing[-1]) + 1 if failing.size else 0
    last = steps[-1]
    if last == 0:
        return 1.0
    start = 0.0 if (first == 0 and count_first_interval) else steps[first]
    return float((last - start) / last)
