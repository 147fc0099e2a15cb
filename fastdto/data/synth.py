"""The two synthetic tasks: Synth. Lin. and Synth. Non-Lin. (supplement-notes section 7).

Both draw factors ``v ~ U([0, 1]^2)`` (no noise) from a ``torch.Generator`` with a fixed seed and map
them to inputs:

* ``synth-lin``: ``x = M v`` (3 inputs) with ``M = R @ [[2, 0], [0, 2/r], [0, 0]]``, ``R`` the
  rotation by 45 degrees about the axis (1, -1, 1)/sqrt(3) (Rodrigues' formula) and ``r`` the
  option ``scale_ratio`` (default 2.0). So the columns of ``M`` are orthogonal with norms 2 and 2/r,
  their ratio is ``r``, and the default reproduces
  ``M ~= [[1.6095, -0.5059], [0.6212, 0.8047], [1.0118, 0.3106]]``. Our reading of the
  supplement's "factor scale ratio" (r = 1.0 / 1.2 / 1.5) is this column-norm ratio; it is
  equivalent, up to one global scale, to shrinking the range of the second factor by ``r``.
* ``synth-nonlin``: ``x = W2 tanh(W1 v + b1) + b2`` (6 inputs), a 2 -> 10 -> 6 MLP whose weights
  and biases are drawn once, in the order W1 (10x2), b1 (10), W2 (6x10), b2 (6), each entry standard
  normal, from ``torch.Generator().manual_seed(WEIGHT_SEED)``. The paper's weights and their
  distribution are unknown; these are ours. Why standard normal and not ``torch.nn.Linear``'s default
  init (uniform on +-1/sqrt(fan_in), our earlier choice): that init is made for layers
  that will be trained, and on inputs in [0, 1]^2 it gives outputs with standard deviations of only
  0.006 to 0.05, 10 to 80 times smaller than Synth. Lin.'s and at the noise level that the paper's
  beta = 1e-3 stands for under the squared loss (sqrt(beta / 2) = 0.022). Standard normal weights
  give outputs with standard deviations of 0.2 to 1.6 (Synth. Lin.: 0.3 to 0.5) and a tanh layer
  that bends over the square.

Seeds: the train split draws 50,000 points with seed ``TRAIN_SEED`` (1), the test split 10,000 with
``TEST_SEED`` (2); both overridable (``seed``, ``n``). Computation in float64, stored as float32.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ..metrics._validation import check_int, check_positive_float
from ._dataset import Dataset

__all__ = [
    "TRAIN_SEED",
    "TEST_SEED",
    "WEIGHT_SEED",
    "DEFAULT_N",
    "ROTATION_AXIS",
    "ROTATION_ANGLE",
    "rotation_matrix",
    "mixing_matrix",
    "nonlin_params",
    "f_lin",
    "f_nonlin",
    "generator",
    "sample_factors",
    "load",
]

#: Seed of the factor draws of the train split.
TRAIN_SEED = 1
#: Seed of the factor draws of the test split.
TEST_SEED = 2
#: Seed of the fixed random weights of the non-linear map.
WEIGHT_SEED = 0
#: Default number of points per split.
DEFAULT_N = {"train": 50_000, "test": 10_000}
#: Axis (unnormalised) and angle (radians) of the rotation R in M = R @ diag-like(2, 2/r).
ROTATION_AXIS = (1.0, -1.0, 1.0)
ROTATION_ANGLE = math.pi / 4
#: Hidden width and output dimension of the non-linear map.
NONLIN_HIDDEN = 10
NONLIN_OUT = 6


def rotation_matrix(axis=ROTATION_AXIS, angle: float = ROTATION_ANGLE) -> np.ndarray:
    """3x3 rotation by ``angle`` about ``axis`` (Rodrigues: I + sin(a) K + (1 - cos(a)) K^2), float64."""
    k = np.asarray(axis, dtype=np.float64)
    k = k / np.linalg.norm(k)
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * kx + (1.0 - math.cos(angle)) * (kx @ kx)


def mixing_matrix(scale_ratio: float = 2.0) -> np.ndarray:
    """The 3x2 matrix M of Synth. Lin.: R @ [[2, 0], [0, 2/scale_ratio], [0, 0]] (float64)."""
    r = float(scale_ratio)
    if not (r > 0 and math.isfinite(r)):
        raise ValueError(f"scale_ratio must be a positive finite number, got {scale_ratio!r}")
    return rotation_matrix() @ np.array([[2.0, 0.0], [0.0, 2.0 / r], [0.0, 0.0]])


def nonlin_params(seed: int = WEIGHT_SEED) -> dict:
    """Weights of the fixed 2 -> 10 -> 6 tanh MLP (float64 tensors W1, b1, W2, b2), drawn as documented."""
    g = torch.Generator().manual_seed(int(seed))

    def normal(*shape):
        return torch.randn(shape, generator=g, dtype=torch.float64)

    w1 = normal(NONLIN_HIDDEN, 2)
    b1 = normal(NONLIN_HIDDEN)
    w2 = normal(NONLIN_OUT, NONLIN_HIDDEN)
    b2 = normal(NONLIN_OUT)
    return {"W1": w1, "b1": b1, "W2": w2, "b2": b2}


def f_lin(v: torch.Tensor, scale_ratio: float = 2.0) -> torch.Tensor:
    """Synth. Lin. map: rows of ``v`` (N, 2) to ``v @ M.T`` (N, 3), in ``v``'s dtype and device."""
    m = torch.as_tensor(mixing_matrix(scale_ratio), dtype=v.dtype, device=v.device)
    return v @ m.T


def f_nonlin(v: torch.Tensor, params: Optional[dict] = None) -> torch.Tensor:
    """Synth. Non-Lin. map: rows of ``v`` (N, 2) to ``tanh(v W1^T + b1) W2^T + b2`` (N, 6)."""
    p = nonlin_params() if params is None else params
    p = {k: t.to(dtype=v.dtype, device=v.device) for k, t in p.items()}
    return torch.tanh(v @ p["W1"].T + p["b1"]) @ p["W2"].T + p["b2"]


def generator(name: str, scale_ratio: Optional[float] = None, weight_seed: Optional[int] = None):
    """The map ``v -> x`` of ``"synth-lin"`` or ``"synth-nonlin"`` with its options (None: the defaults),
    and the resolved options with the map's parameters (what :func:`load` records in ``meta``)."""
    if name == "synth-lin":
        if weight_seed is not None:
            raise TypeError("weight_seed applies to synth-nonlin only")
        r = 2.0 if scale_ratio is None else float(scale_ratio)
        return (lambda v: f_lin(v, r)), {"scale_ratio": r, "M": mixing_matrix(r)}
    if name == "synth-nonlin":
        if scale_ratio is not None:
            raise TypeError("scale_ratio applies to synth-lin only")
        ws = WEIGHT_SEED if weight_seed is None else int(weight_seed)
        params = nonlin_params(ws)
        return (lambda v: f_nonlin(v, params)), {"weight_seed": ws, "params": params}
    raise ValueError(f"unknown synthetic dataset {name!r}")


def sample_factors(n: int, seed: int) -> torch.Tensor:
    """``n`` points uniform on [0, 1]^2 (float64, CPU) from ``torch.Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.rand((int(n), 2), generator=g, dtype=torch.float64)


def load(
    name: str,
    split: str = "train",
    *,
    n: Optional[int] = None,
    seed: Optional[int] = None,
    scale_ratio: Optional[float] = None,
    weight_seed: Optional[int] = None,
) -> Dataset:
    """Build ``"synth-lin"`` or ``"synth-nonlin"`` as a :class:`Dataset` (float32 storage, 2 factors).

    Args:
        name: ``"synth-lin"`` or ``"synth-nonlin"``.
        split: ``"train"`` (default 50,000 points, seed 1) or ``"test"`` (default 10,000, seed 2).
        n: number of points (overrides the split's default).
        seed: seed of the factor draws (overrides the split's default).
        scale_ratio: ``synth-lin`` only: column-norm ratio r of M (default 2.0).
        weight_seed: ``synth-nonlin`` only: seed of the MLP weights (default 0).

    Returns:
        :class:`Dataset` whose ``x_raw`` holds the inputs (float32, not confined to [0, 1]) and whose
        ``factors`` are the two continuous coordinates of ``v`` (``factor_names=["v1", "v2"]``).
    """
    key = name.lower().replace("_", "-")
    if key not in ("synth-lin", "synth-nonlin"):
        raise ValueError(f"unknown synthetic dataset {name!r}")
    if split not in DEFAULT_N:
        raise ValueError(f"{key} split must be 'train' or 'test', got {split!r}")
    # 2.7 points or seed 1.5 were truncated without a word; the seeds must fit torch's generator
    n = DEFAULT_N[split] if n is None else check_int(n, "n", 0)
    seed = (TRAIN_SEED if split == "train" else TEST_SEED) if seed is None else check_int(seed, "seed", 0)
    if scale_ratio is not None:
        scale_ratio = check_positive_float(scale_ratio, "scale_ratio")
    if weight_seed is not None:
        weight_seed = check_int(weight_seed, "weight_seed", 0)
    f, options = generator(key, scale_ratio, weight_seed)
    v = sample_factors(n, seed)
    x = f(v)
    meta = {"seed": seed, "n": n, **options}
    return Dataset(
        name=key,
        split=split,
        x_raw=x.to(torch.float32).contiguous(),
        encoding="float32",
        input_dim=x.shape[1],
        image_shape=None,
        factors=v.to(torch.float32).contiguous(),
        factor_names=["v1", "v2"],
        factor_discrete=[False, False],
        factor_sizes=[None, None],
        meta=meta,
    )
