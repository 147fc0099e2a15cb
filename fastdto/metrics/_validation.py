"""Input conversion and validation shared by the metrics.

Every public metric accepts NumPy arrays, array-likes or torch tensors (on
any device, any floating or integer dtype) and works on a NumPy ``float64``
copy.  Problems are reported as ``ValueError`` whose message starts with the
name of the offending argument.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..jacobian import _check_dense, _is_integer  # the rules every input of the package follows

#: Integer-valued factors with at most this many distinct values are treated
#: as discrete when the caller does not say otherwise.
MAX_DISCRETE_VALUES = 50


def _is_torch_tensor(x) -> bool:
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def to_float64(x, name: str) -> np.ndarray:
    """Return ``x`` as a NumPy float64 array (a copy for torch tensors)."""
    if _is_torch_tensor(x):
        _check_dense(x, name)
        if x.is_complex():
            raise ValueError(f"{name}: complex values are not supported")
        x = x.detach().to("cpu").double().numpy()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged nested lists and the like
        raise ValueError(f"{name}: cannot be converted to an array ({exc})") from None
    if np.iscomplexobj(arr):
        raise ValueError(f"{name}: complex values are not supported")
    if arr.dtype == object:
        raise ValueError(f"{name}: must be a numeric array, got dtype=object")
    try:
        arr = arr.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: must be numeric ({exc})") from None
    return arr


def latent_indices(active, d: int, name: str = "active") -> list[int]:
    """The latents a boolean mask of length ``d`` or a 1-D sequence of distinct integer indices in
    ``[0, d)`` selects, in the order given (possibly none). uint8 is refused: it was torch's old mask
    type, and reading a mask as indices would select the wrong latents without a word."""
    expected = f"a boolean mask of length {d} or a 1-D sequence of distinct integer indices in [0, {d})"
    if _is_torch_tensor(active):
        _check_dense(active, name)
        active = active.detach().cpu().numpy()
    if isinstance(active, (str, bytes, set, frozenset, dict)):
        raise ValueError(f"{name} must be {expected}, got {active!r}")
    try:
        arr = np.asarray(active)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be {expected}, got {active!r}") from None
    if arr.dtype == bool:
        if arr.shape != (d,):
            raise ValueError(f"{name}: boolean mask must have shape ({d},), got {arr.shape}")
        return np.flatnonzero(arr).tolist()
    if arr.ndim == 1 and arr.size == 0:
        return []
    if arr.dtype == np.uint8:
        raise ValueError(f"{name} of dtype uint8 is ambiguous (a mask or indices?): pass a bool mask or "
                         f"int64 indices, got {arr.tolist()}")
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must be {expected}, got {active!r}")
    idx = arr.tolist()
    if any(i < 0 or i >= d for i in idx):
        raise ValueError(f"{name}: indices must lie in [0, {d}), got {idx}")
    if len(set(idx)) != len(idx):
        raise ValueError(f"{name}: indices must be distinct, got {idx}")
    return idx


def as_matrix(x, name: str, *, min_rows: int = 2, allow_inf: bool = False) -> np.ndarray:
    """Validate a 2-D ``(N, d)`` float array with ``N >= min_rows``, ``d >= 1``."""
    arr = to_float64(x, name)
    if arr.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array of shape (N, d), got shape {arr.shape}"
            + (" (use x.reshape(-1, 1) for a single column)" if arr.ndim == 1 else "")
        )
    n, d = arr.shape
    if n < min_rows:
        raise ValueError(f"{name}: need at least {min_rows} samples (rows), got {n}")
    if d < 1:
        raise ValueError(f"{name}: need at least one column, got shape {arr.shape}")
    bad = np.isnan(arr) if allow_inf else ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name}: contains {int(bad.sum())} non-finite value(s)")
    return arr


def check_pair(latents, factors, latents_name="latents", factors_name="factors"):
    """Validate latents ``(N, d)`` and factors ``(N, K)`` with the same ``N``."""
    z = as_matrix(latents, latents_name)
    w = as_matrix(factors, factors_name)
    if z.shape[0] != w.shape[0]:
        raise ValueError(
            f"{factors_name}: has {w.shape[0]} samples but {latents_name} has "
            f"{z.shape[0]}; both need the same number of rows"
        )
    return z, w


def power_of_two_scaled(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each column of ``x`` divided by a power of two near its largest magnitude, and those exponents:
    exact (no rounding), and no square or difference of the scaled values over- or underflows."""
    _, e = np.frexp(np.abs(x).max(axis=0, initial=0.0))
    return np.ldexp(x, -e), e


def check_int(value, name: str, minimum: int, maximum: int = 2**63 - 1) -> int:
    """An integer (Python or NumPy, not bool) in [minimum, maximum]; the default maximum keeps it
    in int64, which seeds and NumPy arithmetic need."""
    if not _is_integer(value):
        raise ValueError(f"{name}: must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name}: must be <= {maximum}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: must be True or False, got {value!r}")
    return bool(value)


def check_positive_float(value, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: must be a finite number {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def infer_discrete(w: np.ndarray, max_values: int = MAX_DISCRETE_VALUES) -> np.ndarray:
    """Flag columns that are integer-valued with at most ``max_values`` distinct values."""
    flags = np.zeros(w.shape[1], dtype=bool)
    for k in range(w.shape[1]):
        col = w[:, k]
        if np.all(col == np.round(col)):
            flags[k] = np.unique(col).size <= max_values
    return flags


def check_discrete(discrete, w: np.ndarray, name: str = "discrete") -> np.ndarray:
    """Return a boolean flag per factor column.

    ``None`` infers the flags (see :func:`infer_discrete`); a single bool
    applies to every factor; otherwise a sequence of ``K`` booleans.
    """
    k = w.shape[1]
    if discrete is None:
        return infer_discrete(w)
    if isinstance(discrete, (bool, np.bool_)):
        return np.full(k, bool(discrete))
    if _is_torch_tensor(discrete):
        discrete = discrete.detach().cpu().numpy()
    try:
        flags = np.asarray(discrete)
    except Exception as exc:
        raise ValueError(f"{name}: must be None, a bool or a sequence of {k} bools ({exc})") from None
    if flags.ndim != 1 or flags.shape[0] != k:
        raise ValueError(
            f"{name}: must be None, a bool or a sequence of {k} bools (one per factor), "
            f"got shape {flags.shape}"
        )
    if flags.dtype != bool:
        if flags.dtype.kind not in "iu" or not np.isin(flags, (0, 1)).all():
            raise ValueError(f"{name}: entries must be booleans, got {flags.tolist()!r}")
        flags = flags.astype(bool)
    return flags.copy()


def labels_of(col: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer class codes ``0..C-1`` of a column and the number of classes ``C``."""
    uniq, inv = np.unique(col, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), int(uniq.size)


def top_two_gap(scores: np.ndarray) -> np.ndarray:
    """Per row (factor): best minus second-best entry over latents (second-best is 0 with one latent)."""
    ranked = -np.sort(-scores, axis=1)
    second = ranked[:, 1] if scores.shape[1] > 1 else np.zeros(scores.shape[0])
    return ranked[:, 0] - second
