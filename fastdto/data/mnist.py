"""MNIST and Fashion-MNIST from the standard IDX files, plus an IDX reader/writer.

IDX format (LeCun et al.): two zero bytes, one type byte (0x08 uint8, 0x09 int8, 0x0B int16,
0x0C int32, 0x0D float32, 0x0E float64), one byte with the number of dimensions ``k``, then ``k``
big-endian uint32 sizes, then the data in C order, big-endian. Files may be gzip-compressed
(``.gz``). Both datasets use the same four file names:

* ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` (60,000 examples)
* ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (10,000 examples)

Directory resolution for :func:`load`: the ``root`` argument; else the environment variable
``FASTDTO_MNIST_DIR`` / ``FASTDTO_FASHION_MNIST_DIR``; else, for Fashion-MNIST only,
``/usr/share/datasets/fashion-mnist``, where the Debian/Ubuntu package ``dataset-fashion-mnist``
installs the four files gzip-compressed. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import math
import os
from typing import Optional, Union

import numpy as np
import torch

from ._dataset import Dataset

__all__ = [
    "FILES",
    "ENV_VARS",
    "DEFAULT_DIRS",
    "APT_PACKAGES",
    "read_idx",
    "write_idx",
    "resolve_root",
    "find_files",
    "load",
]

#: Base names of the IDX files per split: (images, labels).
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Environment variable consulted when no ``root`` is given.
ENV_VARS = {"mnist": "FASTDTO_MNIST_DIR", "fashion-mnist": "FASTDTO_FASHION_MNIST_DIR"}
#: Last-resort directory (system package location), if any.
DEFAULT_DIRS = {"mnist": None, "fashion-mnist": "/usr/share/datasets/fashion-mnist"}
#: System package that provides the files at the default directory.
APT_PACKAGES = {"mnist": None, "fashion-mnist": "dataset-fashion-mnist"}

_CODE_TO_DTYPE = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_TO_CODE = {("u", 1): 0x08, ("i", 1): 0x09, ("i", 2): 0x0B, ("i", 4): 0x0C, ("f", 4): 0x0D, ("f", 8): 0x0E}


def _open(path: str, mode: str):
    return gzip.open(path, mode) if os.fspath(path).endswith(".gz") else open(path, mode)


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read one IDX file (plain or ``.gz``) into a native-endian NumPy array.

    Raises:
        ValueError: bad magic number, unknown type code, or a data size that does not match the
            header (truncated file or trailing bytes). The message names the file.
    """
    path = os.fspath(path)
    try:
        with _open(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:  # gzip errors on corrupt archives are OSError/EOFError
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read IDX data ({exc})") from exc
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0 or data[2] not in _CODE_TO_DTYPE:
        raise ValueError(f"{path}: bad IDX magic number 0x{data[:4].hex()} (expected 0x0000TTNN, TT a type code)")
    dtype, ndim = _CODE_TO_DTYPE[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a crafted header cannot overflow it
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: IDX header promises shape {shape} ({expected} data bytes) but the file holds {len(data) - header}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: Union[str, os.PathLike], array) -> None:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends with ``.gz``.

    Supported dtypes: uint8, int8, int16, int32, float32, float64 (stored big-endian).
    """
    arr = np.ascontiguousarray(np.asarray(array))
    key = (arr.dtype.kind, arr.dtype.itemsize)
    if key not in _KIND_TO_CODE:
        raise ValueError(f"IDX cannot store dtype {arr.dtype}")
    if arr.ndim > 255:
        raise ValueError("IDX supports at most 255 dimensions")
    code = _KIND_TO_CODE[key]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    body = arr.astype(_CODE_TO_DTYPE[code], copy=False).tobytes()
    with _open(os.fspath(path), "wb") as fh:
        fh.write(header)
        fh.write(body)


def _canonical(name: str) -> str:
    key = name.lower().replace("_", "-")
    if key not in ENV_VARS:
        raise ValueError(f"unknown MNIST-family dataset {name!r}; expected 'mnist' or 'fashion-mnist'")
    return key


def _expected_message(name: str, directory: Optional[str], how: str) -> str:
    names = [f for pair in FILES.values() for f in pair]
    where = "no directory given" if directory is None else f"directory {directory!r}"
    msg = (
        f"{name} files not found: {where} ({how}). Expected the four IDX files "
        f"{', '.join(names)} (each optionally with .gz). Pass root=DIR or set {ENV_VARS[name]}=DIR."
    )
    if APT_PACKAGES[name]:
        msg += f" On Debian/Ubuntu, 'apt-get install {APT_PACKAGES[name]}' puts them in {DEFAULT_DIRS[name]}."
    return msg


def resolve_root(name: str, root: Optional[Union[str, os.PathLike]] = None) -> tuple:
    """Directory to read ``name`` from and how it was chosen: (path or None, reason)."""
    name = _canonical(name)
    if root is not None:
        return os.fspath(root), "root argument"
    env = os.environ.get(ENV_VARS[name])
    if env:
        return env, f"environment variable {ENV_VARS[name]}"
    if DEFAULT_DIRS[name]:
        return DEFAULT_DIRS[name], f"default location of the {APT_PACKAGES[name]} package"
    return None, f"no root argument and {ENV_VARS[name]} unset"


def find_files(name: str, split: str, root: Optional[Union[str, os.PathLike]] = None) -> tuple:
    """Paths (images, labels) of one split, preferring the uncompressed file over ``.gz``.

    Raises:
        FileNotFoundError: naming the directory, the four expected files, the environment
            variable and (Fashion-MNIST) the system package.
    """
    name = _canonical(name)
    if split not in FILES:
        raise ValueError(f"{name} split must be 'train' or 'test', got {split!r}")
    directory, how = resolve_root(name, root)
    if directory is None or not os.path.isdir(directory):
        raise FileNotFoundError(_expected_message(name, directory, how + ("" if directory is None else "; not a directory")))
    found = []
    for base in FILES[split]:
        for cand in (base, base + ".gz"):
            p = os.path.join(directory, cand)
            if os.path.isfile(p):
                found.append(p)
                break
        else:
            raise FileNotFoundError(_expected_message(name, directory, how + f"; {base}[.gz] is missing"))
    return tuple(found)


def load(name: str, split: str = "train", root: Optional[Union[str, os.PathLike]] = None) -> Dataset:
    """Load MNIST or Fashion-MNIST as a :class:`Dataset` (uint8 storage, 784 inputs, 1 factor).

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        root: directory with the IDX files (see the module docstring for the fallbacks).

    Returns:
        :class:`Dataset`: ``x_raw`` uint8 (N, 784) row-major 28x28 images, ``factors`` the class
        label as float32 (N, 1), ``factor_names=["label"]``, discrete with 10 values.

    Raises:
        FileNotFoundError: files missing (message lists them); ValueError: corrupt or inconsistent files.
    """
    name = _canonical(name)
    img_path, lab_path = find_files(name, split, root)
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(f"{img_path}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{lab_path}: expected uint8 labels (N,), got {labels.dtype} {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_path} holds {images.shape[0]} images but {lab_path} holds {labels.shape[0]} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lab_path}: labels must lie in 0..9, found {int(labels.max())}")
    n, h, w = images.shape
    return Dataset(
        name=name,
        split=split,
        x_raw=torch.from_numpy(images.reshape(n, h * w)),
        encoding="uint8",
        input_dim=h * w,
        image_shape=(h, w),
        factors=torch.from_numpy(labels.astype(np.float32).reshape(n, 1)),
        factor_names=["label"],
        factor_discrete=[True],
        factor_sizes=[10],
        meta={"source": os.path.dirname(img_path), "files": [img_path, lab_path]},
    )
