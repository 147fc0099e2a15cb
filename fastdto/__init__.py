"""fastdto: Distance to Orthogonality (DtO) of VAE decoders, exact and fast.

    >>> import fastdto
    >>> res = fastdto.evaluate(decoder, latents)     # decoder: (B, d) -> (B, ...); latents: (N, d)
    >>> res.dto, res.std, res.per_sample

DtO (Rolinek, Zietlow and Martius, CVPR 2019) measures how far the right singular vectors of the
decoder's Jacobian are from the latent axes: 0 when each latent axis is a singular direction.
Subpackages: ``fastdto.reference`` (slow NumPy/SciPy/HiGHS oracle), ``fastdto.metrics``,
``fastdto.data``, ``fastdto.nn``; the command ``python -m fastdto.train`` trains the paper's models.
"""

from __future__ import annotations

import importlib

import _fastdto_engine as _engine

from .dto import (DEFAULT_GRAM_RCOND, MAX_DIM, DtOResult, SignedPermutation, dto_from_jacobians, evaluate,
                  nearest_signed_permutation)
from .jacobian import jacobians

__version__ = "0.1.0"
__all__ = ["evaluate", "dto_from_jacobians", "nearest_signed_permutation", "jacobians", "DtOResult",
           "SignedPermutation", "build_info", "MAX_DIM", "DEFAULT_GRAM_RCOND"]

_SUBMODULES = {"reference", "metrics", "data", "nn", "train", "recipes", "report", "reproduce"}


def build_info() -> dict:
    """How the compiled engine was built: CUDA compiled in, its architectures, devices usable now."""
    return dict(_engine.build_info())


def __getattr__(name):  # subpackages load on first use, keeping `import fastdto` light
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastdto' has no attribute {name!r}")
