"""The one in-memory dataset container shared by every loader in :mod:`fastdto.data`."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch

__all__ = ["Dataset", "ENCODINGS"]

#: How ``x_raw`` stores the inputs: ``"bits"`` = bit-packed uint8 (8 binary pixels per byte,
#: most significant bit first, as ``np.packbits``), ``"uint8"`` = bytes 0..255 meaning value/255,
#: ``"float32"`` = the inputs themselves.
ENCODINGS = ("bits", "uint8", "float32")


class Dataset:
    """A dataset held as one storage tensor plus a table of ground-truth factor values.

    All loaders of :func:`fastdto.data.load` return this class. Inputs are kept in a compact
    storage tensor ``x_raw`` (one row per example) and turned into float32 model inputs only
    for the rows asked for, by :meth:`batch`, on the device where ``x_raw`` lives.

    Attributes:
        name: dataset name as given to :func:`fastdto.data.load` (e.g. ``"dsprites"``).
        split: split name (e.g. ``"train"``, ``"test"``, ``"all"``).
        x_raw: storage tensor of shape (N, row_bytes_or_features). Its meaning is given by
            ``encoding``: bit-packed uint8 (dSprites), uint8 bytes (MNIST family) or float32 (synth).
        encoding: one of ``"bits"``, ``"uint8"``, ``"float32"`` (see :data:`ENCODINGS`).
        input_dim: number of input features of one flattened example (4096 for dSprites).
        image_shape: (height, width) for image data, ``None`` for vector data.
        factors: float32 tensor (N, K) of ground-truth factor *values*, on the same device as ``x_raw``.
        factor_names: K names, in column order of ``factors``.
        factor_discrete: K flags, ``True`` for categorical factors.
        factor_sizes: K entries, the number of distinct values for discrete factors, ``None`` otherwise.
        meta: free-form provenance (source, seeds, grid indices, ...). Not used for computation.
    """

    def __init__(
        self,
        name: str,
        split: str,
        x_raw: torch.Tensor,
        encoding: str,
        input_dim: int,
        image_shape: Optional[tuple],
        factors: torch.Tensor,
        factor_names: Sequence[str],
        factor_discrete: Sequence[bool],
        factor_sizes: Sequence[Optional[int]],
        meta: Optional[dict] = None,
    ) -> None:
        """Build a dataset from its parts and check that they are consistent.

        Raises:
            ValueError: on inconsistent shapes, dtypes, encodings or factor metadata.
        """
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        if not isinstance(x_raw, torch.Tensor) or x_raw.dim() != 2:
            raise ValueError("x_raw must be a 2-D torch.Tensor (N, stored features)")
        expected_dtype = {"bits": torch.uint8, "uint8": torch.uint8, "float32": torch.float32}[encoding]
        if x_raw.dtype != expected_dtype:
            raise ValueError(f"encoding {encoding!r} needs x_raw of dtype {expected_dtype}, got {x_raw.dtype}")
        input_dim = int(input_dim)
        row = x_raw.shape[1]
        if encoding == "bits":
            if row * 8 != input_dim:
                raise ValueError(f"bit-packed rows of {row} bytes hold {row * 8} values, not input_dim={input_dim}")
        elif row != input_dim:
            raise ValueError(f"x_raw rows have {row} entries but input_dim={input_dim}")
        if image_shape is not None:
            image_shape = tuple(int(s) for s in image_shape)
            if int(np.prod(image_shape)) != input_dim:
                raise ValueError(f"image_shape {image_shape} does not hold input_dim={input_dim} values")
        if not isinstance(factors, torch.Tensor) or factors.dim() != 2 or factors.dtype != torch.float32:
            raise ValueError("factors must be a float32 torch.Tensor of shape (N, K)")
        if factors.shape[0] != x_raw.shape[0]:
            raise ValueError(f"{factors.shape[0]} factor rows for {x_raw.shape[0]} examples")
        k = factors.shape[1]
        if not (len(factor_names) == len(factor_discrete) == len(factor_sizes) == k):
            raise ValueError("factor_names, factor_discrete and factor_sizes must each have one entry per factor column")
        self.name = str(name)
        self.split = str(split)
        self.x_raw = x_raw
        self.encoding = encoding
        self.input_dim = input_dim
        self.image_shape = image_shape
        self.factors = factors.to(x_raw.device)
        self.factor_names = [str(s) for s in factor_names]
        self.factor_discrete = [bool(b) for b in factor_discrete]
        self.factor_sizes = [None if s is None else int(s) for s in factor_sizes]
        self.meta = dict(meta or {})

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.x_raw.shape[0])

    @property
    def device(self) -> torch.device:
        """Device of the storage tensor (and of the factors)."""
        return self.x_raw.device

    def __repr__(self) -> str:
        """Short description: name, split, size, storage and factors."""
        return (
            f"Dataset(name={self.name!r}, split={self.split!r}, n={len(self)}, input_dim={self.input_dim}, "
            f"encoding={self.encoding!r}, device={self.device}, factors={self.factor_names})"
        )

    def _index(self, index: Any):
        """Normalise an index into something that selects rows of x_raw, keeping a batch axis."""
        if isinstance(index, slice):
            return index
        if isinstance(index, (bool, np.bool_)):
            raise TypeError("batch index must not be a bool (True would select row 1); pass a boolean mask "
                            "of length N or integer indices")
        if isinstance(index, (int, np.integer)):
            return torch.tensor([int(index)], dtype=torch.long, device=self.x_raw.device)
        if isinstance(index, torch.Tensor):
            t = index
        else:
            t = torch.as_tensor(np.asarray(index))
        if t.numel() == 0:
            return torch.empty(0, dtype=torch.long, device=self.x_raw.device)
        if t.dtype == torch.bool:
            if t.shape != (len(self),):
                raise ValueError(f"a boolean batch mask must have shape ({len(self)},), got {tuple(t.shape)}")
            return t.to(self.x_raw.device)
        if t.dtype.is_floating_point or t.dtype.is_complex:
            raise TypeError(f"batch index must hold integers or booleans, got dtype {t.dtype}")
        return t.to(device=self.x_raw.device, dtype=torch.long).reshape(-1)

    def batch(self, index: Any) -> torch.Tensor:
        """Return the selected examples as float32 inputs of shape (B, input_dim).

        ``index`` may be an int, a slice, a list/NumPy array of ints, a boolean mask, or an
        integer/boolean tensor on any device. The decoding (bit unpacking or division by 255)
        runs on the device of ``x_raw``; only the index travels, never the data.
        Image inputs lie in [0, 1]; synthetic inputs are the raw float32 vectors (not in [0, 1]).
        """
        idx = self._index(index)
        x = self.x_raw[idx]
        if self.encoding == "bits":
            shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=x.device)
            bits = torch.bitwise_and(torch.bitwise_right_shift(x.unsqueeze(-1), shifts), 1)
            return bits.reshape(x.shape[0], self.input_dim).to(torch.float32)
        if self.encoding == "uint8":
            return x.to(torch.float32).div_(255.0)
        return x.clone() if isinstance(idx, slice) else x  # never hand out a view of the storage

    def to(self, device: Any) -> "Dataset":
        """Return a dataset whose storage and factors live on ``device`` (self if already there)."""
        device = torch.device(device)
        if self.x_raw.device == device and self.factors.device == device:
            return self
        return Dataset(
            self.name,
            self.split,
            self.x_raw.to(device),
            self.encoding,
            self.input_dim,
            self.image_shape,
            self.factors.to(device),
            self.factor_names,
            self.factor_discrete,
            self.factor_sizes,
            self.meta,
        )
