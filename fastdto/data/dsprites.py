"""dSprites: a procedural re-generation of the full factor grid, and a loader for the original file.

The original dSprites archive (``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``, Matthey et al.
2017) holds every combination of six factors, stored in a fixed order where the last factor varies
fastest:

=============  ======  ===================================================
factor         size    values (``latents_values``)
=============  ======  ===================================================
color          1       1.0 (constant: white)
shape          3       1.0 square, 2.0 ellipse, 3.0 heart
scale          6       ``linspace(0.5, 1, 6)``
orientation    40      ``linspace(0, 2*pi, 40)`` (radians, **both ends included**, as in the original)
posX           32      ``linspace(0, 1, 32)``
posY           32      ``linspace(0, 1, 32)``
=============  ======  ===================================================

737,280 binary 64x64 images. This module reproduces that grid: same order, same factor values,
same index of every combination. Two deliberate conventions:

* **Color is dropped.** It is constant, so ``Dataset.factors`` has five columns
  ``shape, scale, orientation, posX, posY`` (the original columns 1..5). Grid index ``i`` is the
  same number in the original and here because color has a single value.
* **Orientation includes 2*pi.** The original's 40 angles are ``linspace(0, 2*pi, 40)`` (step
  2*pi/39 ~ 0.1611, last value 6.2832), not 40 angles with the endpoint excluded. We keep the
  original values so that factor tables are interchangeable; consequently orientations 0 and 39
  render the same image here.

Rendering (an approximation of the original, **not pixel-identical**: we do not have the
original renderer, and sizes were chosen by eye). Pixel ``(row, col)`` is on when its centre ``(col + 0.5, row + 0.5)`` (pixel units)
lies inside the transformed shape (closed set). With ``s`` the scale and ``theta`` the orientation:

* centre: ``x = 16 + 32 * posX`` (columns, left to right), ``y = 16 + 32 * posY`` (rows, top to
  bottom), so one position step moves the sprite by 32/31 ~ 1.03 px and position 0.5 is the
  image centre (the corner between pixels 31 and 32).
* square: side ``20 * s`` px (about 1/3 of the image at scale 1: 400 pixels when centred).
* ellipse: semi-axes ``10 * s`` (along the sprite's own x axis) and ``5 * s`` px.
* heart: the implicit curve ``(X^2 + Y^2 - 1)^3 - X^2 Y^3 <= 0`` (lobes up), scaled so its width
  is ``20 * s`` px and centred on its bounding box.
* rotation: counter-clockwise by ``theta`` as the image is displayed (row 0 at the top).

Computation is vectorised NumPy in float64 over blocks of images, evaluated on a 32x32 window
around each sprite (which provably holds it; identical to evaluating all 4096 pixels). The result
is bit-packed with ``np.packbits`` along the 4096 pixels (row-major, most significant bit first):
512 bytes per image, 377 MB for the full grid.

Timing: generating the complete grid (737,280 images, packed) took 11.2 s on the 2-core
development machine (single-threaded NumPy, ~15 us per image, peak memory ~630 MB including the
377 MB result). With ``cache_dir``, the first :func:`load` generates and writes the grid (~11 s),
later ones memory-map it (~1 s for the train split).
"""

from __future__ import annotations

import numbers
import os
import warnings
import zipfile
from typing import Optional, Sequence, Union

import numpy as np
import torch

from .._io import atomic_write
from ..metrics._validation import check_int
from ._dataset import Dataset

__all__ = [
    "ORIGINAL_FILENAME",
    "FACTOR_NAMES",
    "GRID_SIZES",
    "N_IMAGES",
    "SHAPE_NAMES",
    "SPLIT_SEED",
    "latent_values",
    "factor_grid",
    "grid_index",
    "render",
    "generate",
    "pack",
    "unpack",
    "split_indices",
    "load",
]

#: File name of the original archive.
ORIGINAL_FILENAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
#: Factor names (columns of ``Dataset.factors``), the original names minus ``color``.
FACTOR_NAMES = ["shape", "scale", "orientation", "posX", "posY"]
#: Number of values per factor, in grid order (last varies fastest).
GRID_SIZES = (3, 6, 40, 32, 32)
#: Number of images of the full grid.
N_IMAGES = int(np.prod(GRID_SIZES))
#: Shape names by class index (factor value = class + 1, as in the original).
SHAPE_NAMES = ("square", "ellipse", "heart")
#: Default seed of the train/test permutation (``np.random.default_rng(SPLIT_SEED).permutation``).
SPLIT_SEED = 0
#: Image side in pixels.
IMAGE_SIZE = 64

# Rendering geometry, pixel units at scale 1 (see module docstring). Changing any of these must
# change RENDER_VERSION, which names the on-disk cache file.
CENTRE_MIN = 16.0
CENTRE_SPAN = 32.0
SQUARE_HALF_SIDE = 10.0
ELLIPSE_SEMI_AXES = (10.0, 5.0)
HEART_HALF_WIDTH = 10.0
_HEART_X_EXTENT = 1.1390  # max |X| on the implicit heart
_HEART_Y_CENTRE = (1.2360 - 1.0) / 2.0  # centre of its Y extent [-1, 1.236]
RENDER_VERSION = "r1"
_WINDOW = 32


def latent_values() -> list:
    """The possible values of each factor, in grid order, as float64 arrays (original values)."""
    return [
        np.array([1.0, 2.0, 3.0]),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2.0 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    ]


def grid_index(classes: np.ndarray) -> np.ndarray:
    """Grid index of factor class tuples; ``classes`` is (..., 5) ints (shape, scale, orientation, posX, posY)."""
    classes = np.asarray(classes, dtype=np.int64)
    return np.ravel_multi_index(tuple(np.moveaxis(classes, -1, 0)), GRID_SIZES)


def factor_grid(indices: Optional[np.ndarray] = None):
    """Factor classes and values of grid images, without rendering anything.

    Args:
        indices: grid indices (default: all 737,280 in order).

    Returns:
        ``(classes, values)``: int64 (n, 5) class indices and float64 (n, 5) factor values,
        the original ``latents_classes`` / ``latents_values`` without the color column.
    """
    if indices is None:
        indices = np.arange(N_IMAGES, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    if indices.size and (indices.min() < 0 or indices.max() >= N_IMAGES):
        raise IndexError(f"dSprites grid indices must lie in [0, {N_IMAGES})")
    classes = np.stack(np.unravel_index(indices, GRID_SIZES), axis=1).astype(np.int64)
    values = np.empty(classes.shape, dtype=np.float64)
    for k, vals in enumerate(latent_values()):
        values[:, k] = vals[classes[:, k]]
    return classes, values


def render(shape, scale, orientation, pos_x, pos_y, crop: bool = True) -> np.ndarray:
    """Rasterise sprites for arbitrary factor values (not restricted to the grid).

    Args:
        shape: shape class per sprite: 0 square, 1 ellipse, 2 heart (factor value minus 1).
        scale: scale factors (1 = the largest grid scale).
        orientation: angles in radians, counter-clockwise as displayed.
        pos_x, pos_y: positions in [0, 1] (values outside move the sprite further, clipped by the frame).
        crop: evaluate only a 32x32 window around each sprite when that provably holds the whole
            sprite (scale <= 1 and positions in [0, 1]); the result is identical, about 4x faster.
        All factor arguments broadcast to a common 1-D shape (B,).

    Returns:
        bool array (B, 64, 64).
    """
    shape, scale, orientation, pos_x, pos_y = (
        a.reshape(-1)
        for a in np.broadcast_arrays(
            *(np.atleast_1d(np.asarray(v)) for v in (shape, scale, orientation, pos_x, pos_y))
        )
    )
    shape = shape.astype(np.int64)
    if shape.size and (shape.min() < 0 or shape.max() > 2):
        raise ValueError("shape classes must be 0 (square), 1 (ellipse) or 2 (heart)")
    scale = scale.astype(np.float64)
    if np.any(~(scale > 0)):
        raise ValueError("scale must be positive")
    pos_x = pos_x.astype(np.float64)
    pos_y = pos_y.astype(np.float64)
    b = shape.size
    cx = CENTRE_MIN + CENTRE_SPAN * pos_x
    cy = CENTRE_MIN + CENTRE_SPAN * pos_y
    # Every sprite at scale <= 1 lies within 10*sqrt(2) < 14.2 px of its centre, so a 32-px window
    # starting at round(centre) - 16 (inside the frame for centres in [16, 48]) holds all of it.
    half = _WINDOW // 2
    use_crop = bool(
        crop and b and scale.max() <= 1.0 and min(pos_x.min(), pos_y.min()) >= 0.0 and max(pos_x.max(), pos_y.max()) <= 1.0
    )
    if use_crop:
        size = _WINDOW
        c0 = np.clip(np.rint(cx).astype(np.int64) - half, 0, IMAGE_SIZE - size)
        r0 = np.clip(np.rint(cy).astype(np.int64) - half, 0, IMAGE_SIZE - size)
    else:
        size = IMAGE_SIZE
        c0 = np.zeros(b, dtype=np.int64)
        r0 = np.zeros(b, dtype=np.int64)
    steps = np.arange(size, dtype=np.int64)
    cols = c0[:, None] + steps[None, :]  # (B, size) pixel column indices
    rows = r0[:, None] + steps[None, :]
    dx = (cols + 0.5) - cx[:, None]  # pixel centre minus sprite centre, x right
    dup = cy[:, None] - (rows + 0.5)  # y up
    cos = np.cos(orientation.astype(np.float64)) / scale
    sin = np.sin(orientation.astype(np.float64)) / scale
    # Sprite-frame coordinates (u right, w up) of every pixel centre, in pixels at scale 1:
    # u = cos*dx + sin*dup, w = -sin*dx + cos*dup; each term depends on rows or columns only.
    u_col, u_row = cos[:, None] * dx, sin[:, None] * dup
    w_col, w_row = -sin[:, None] * dx, cos[:, None] * dup
    mask = np.zeros((b, size, size), dtype=bool)
    for s in range(3):
        sel = np.flatnonzero(shape == s)
        if sel.size == 0:
            continue
        if s == 0:
            k = 1.0 / SQUARE_HALF_SIDE
            u = np.abs(u_row[sel, :, None] * k + u_col[sel, None, :] * k)
            w = np.abs(w_row[sel, :, None] * k + w_col[sel, None, :] * k)
            np.maximum(u, w, out=u)
            mask[sel] = u <= 1.0
        elif s == 1:
            ka, kb = 1.0 / ELLIPSE_SEMI_AXES[0], 1.0 / ELLIPSE_SEMI_AXES[1]
            u = u_row[sel, :, None] * ka + u_col[sel, None, :] * ka
            w = w_row[sel, :, None] * kb + w_col[sel, None, :] * kb
            u *= u
            w *= w
            u += w
            mask[sel] = u <= 1.0
        else:
            k = _HEART_X_EXTENT / HEART_HALF_WIDTH
            x = u_row[sel, :, None] * k + u_col[sel, None, :] * k
            y = (w_row[sel] * k + _HEART_Y_CENTRE)[:, :, None] + w_col[sel, None, :] * k
            x2 = x * x
            y2 = y * y
            t = x2 + y2
            t -= 1.0
            t3 = t * t
            t3 *= t
            x2 *= y2
            x2 *= y
            t3 -= x2
            mask[sel] = t3 <= 0.0
    if not use_crop:
        return mask
    out = np.zeros((b, IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    out[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]] = mask
    return out


def pack(images: np.ndarray) -> np.ndarray:
    """Bit-pack binary images (B, H, W) or (B, H*W) into uint8 rows (B, H*W/8), MSB first."""
    images = np.asarray(images)
    flat = images.reshape(images.shape[0], -1)
    if flat.shape[1] % 8:
        raise ValueError("number of pixels per image must be a multiple of 8")
    return np.packbits(flat != 0, axis=1)


def unpack(packed: np.ndarray, image_shape: Sequence[int] = (IMAGE_SIZE, IMAGE_SIZE)) -> np.ndarray:
    """Inverse of :func:`pack`: uint8 rows (B, n/8) to uint8 0/1 images (B, *image_shape)."""
    packed = np.asarray(packed, dtype=np.uint8)
    return np.unpackbits(packed, axis=1).reshape((packed.shape[0],) + tuple(image_shape))


def generate(indices: Optional[np.ndarray] = None, block_size: int = 512, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Render grid images and return them bit-packed.

    Args:
        indices: grid indices (default: the whole grid, 737,280 images: ~1 minute, 377 MB).
        block_size: images rendered per vectorised step (memory ~ 100 KB per image in flight).
        out: optional preallocated uint8 array (n, 512) to fill (e.g. a memory map).

    Returns:
        uint8 array (n, 512); row i is image ``indices[i]`` packed by :func:`pack`.
    """
    if indices is None:
        indices = np.arange(N_IMAGES, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64).reshape(-1)
    n = indices.size
    if out is None:
        out = np.empty((n, IMAGE_SIZE * IMAGE_SIZE // 8), dtype=np.uint8)
    elif out.shape != (n, IMAGE_SIZE * IMAGE_SIZE // 8) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 of shape ({n}, {IMAGE_SIZE * IMAGE_SIZE // 8})")
    block_size = max(1, int(block_size))
    for start in range(0, n, block_size):
        part = indices[start : start + block_size]
        classes, values = factor_grid(part)
        imgs = render(classes[:, 0], values[:, 1], values[:, 2], values[:, 3], values[:, 4])
        out[start : start + part.size] = pack(imgs)
    return out


def split_indices(n: int, split: str, test_fraction: float = 0.1, seed: int = SPLIT_SEED) -> np.ndarray:
    """Sorted indices of a split of ``n`` items.

    ``"all"``: everything. ``"train"``/``"test"``: a permutation from
    ``np.random.default_rng(seed).permutation(n)``; its first ``round(test_fraction * n)``
    entries form the test split, the rest the train split (both returned sorted, disjoint, covering all).
    """
    if split == "all":
        return np.arange(n, dtype=np.int64)
    if split not in ("train", "test"):
        raise ValueError(f"dSprites split must be 'all', 'train' or 'test', got {split!r}")
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}")
    perm = np.random.default_rng(int(seed)).permutation(n)
    n_test = int(round(test_fraction * n))
    part = perm[:n_test] if split == "test" else perm[n_test:]
    return np.sort(part).astype(np.int64)


def _apply_subset(idx: np.ndarray, subset, seed: int) -> np.ndarray:
    """Restrict split indices: int n -> n of them drawn at random (seeded, sorted); array -> those positions."""
    if subset is None:
        return idx
    if isinstance(subset, np.ndarray) and subset.ndim == 0 and np.issubdtype(subset.dtype, np.integer):
        subset = subset.item()  # np.array(3) is a count, like 3, not the position list [3]
    if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
        n = int(subset)
        if not 0 <= n <= idx.size:
            raise ValueError(f"subset={n} must lie in [0, {idx.size}] for this split")
        pick = np.random.default_rng(int(seed) + 1).choice(idx.size, size=n, replace=False)
        return idx[np.sort(pick)]
    pos = np.asarray(subset).reshape(-1)
    if pos.size == 0:
        return idx[:0]
    if pos.dtype == bool or not np.issubdtype(pos.dtype, np.integer):
        raise TypeError("subset must be an int or a sequence of integer positions within the split")
    if pos.min() < -idx.size or pos.max() >= idx.size:  # negative positions count from the end
        raise IndexError(f"subset positions must lie in [-{idx.size}, {idx.size}) for this split")
    return idx[pos]


def _cache_path(cache_dir: str) -> str:
    return os.path.join(cache_dir, f"fastdto-dsprites-procedural-{RENDER_VERSION}.npy")


def _cached_grid(cache_dir: str, block_size: int) -> np.ndarray:
    """Memory-map the packed full grid from ``cache_dir``, generating it (atomically) if needed."""
    os.makedirs(cache_dir, exist_ok=True)
    path = _cache_path(cache_dir)
    shape = (N_IMAGES, IMAGE_SIZE * IMAGE_SIZE // 8)
    if os.path.exists(path):
        try:
            arr = np.load(path, mmap_mode="r")
            if arr.shape == shape and arr.dtype == np.uint8:
                return arr
        except (ValueError, OSError):
            pass
        warnings.warn(f"dSprites cache {path} is unreadable or has the wrong shape; regenerating it")
    def write(tmp):
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        generate(None, block_size=block_size, out=mm)
        mm.flush()
        del mm

    atomic_write(path, write, fsync=True)  # 377 MB that take seconds to remake: flush to disk first
    return np.load(path, mmap_mode="r")


def _resolve_original(root: Union[str, os.PathLike]) -> str:
    """Path of the original archive: ``root`` itself if it is a file, else ``root/ORIGINAL_FILENAME``."""
    root = os.fspath(root)
    path = root if os.path.isfile(root) else os.path.join(root, ORIGINAL_FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"dSprites archive not found: {path!r}. Point root= at the file {ORIGINAL_FILENAME!r} "
            f"or at the directory holding it (keys imgs, latents_values, latents_classes); "
            f"without root=, the images are generated procedurally."
        )
    return path


def _read_exact(fp, nbytes: int) -> bytes:
    chunks, got = [], 0
    while got < nbytes:
        chunk = fp.read(nbytes - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _read_original_images(path: str, idx: np.ndarray, block: int = 8192) -> np.ndarray:
    """Stream ``imgs`` out of the npz, keeping rows ``idx`` (any order, repeats allowed), bit-packed."""
    rows, order = np.unique(idx, return_inverse=True)  # read in file order, hand back in idx's
    packed, hw, n = _read_sorted_rows(path, rows, block)
    return packed[order.reshape(-1)], hw, n


def _read_sorted_rows(path: str, idx: np.ndarray, block: int):
    with zipfile.ZipFile(path) as zf:
        if "imgs.npy" not in zf.namelist():
            raise ValueError(f"{path}: no 'imgs' array in the archive")
        with zf.open("imgs.npy") as fp:
            version = np.lib.format.read_magic(fp)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
            else:
                raise ValueError(f"{path}: unsupported .npy version {version} for imgs")
            if len(shape) != 3 or fortran or dtype.hasobject:
                raise ValueError(f"{path}: imgs must be a C-ordered (N, H, W) array, got shape {shape}")
            n, h, w = shape
            if (h * w) % 8:
                raise ValueError(f"{path}: image size {h}x{w} is not a multiple of 8 pixels")
            row = h * w * dtype.itemsize
            out = np.empty((idx.size, h * w // 8), dtype=np.uint8)
            filled = 0
            for start in range(0, n, block):
                stop = min(n, start + block)
                lo, hi = np.searchsorted(idx, [start, stop])
                raw = _read_exact(fp, (stop - start) * row)
                if len(raw) != (stop - start) * row:
                    raise ValueError(f"{path}: imgs data is truncated")
                if hi == lo:
                    continue
                arr = np.frombuffer(raw, dtype=dtype).reshape(stop - start, h * w)
                out[filled : filled + hi - lo] = np.packbits(arr[idx[lo:hi] - start] != 0, axis=1)
                filled += hi - lo
    return out, (h, w), n


def _open_archive(path: str):
    """The .npz archive at ``path``; anything else (a .npy, a truncated download) is a ValueError naming it."""
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz archive ({exc}); point root= at an intact "
                         f"{ORIGINAL_FILENAME}, or leave root= out to generate the images") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a .npz archive (a single array); point root= at "
                         f"{ORIGINAL_FILENAME}, or leave root= out to generate the images")
    return z


def _load_original(path: str, split: str, subset, test_fraction: float, split_seed: int):
    with _open_archive(path) as z:
        missing = [k for k in ("imgs", "latents_values", "latents_classes") if k not in z.files]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing} (expected imgs, latents_values, latents_classes)")
        values = np.asarray(z["latents_values"], dtype=np.float64)
        classes = np.asarray(z["latents_classes"])
    n = values.shape[0]
    if values.ndim != 2 or values.shape[1] != 6 or classes.shape != values.shape:
        raise ValueError(f"{path}: latents_values/latents_classes must both be (N, 6), got {values.shape}, {classes.shape}")
    idx = _apply_subset(split_indices(n, split, test_fraction, split_seed), subset, split_seed)
    packed, hw, n_imgs = _read_original_images(path, idx)
    if n_imgs != n:
        raise ValueError(f"{path}: {n_imgs} images but {n} latent rows")
    shape_sizes = int(np.unique(classes[:, 1]).size)
    return packed, hw, values[idx, 1:], idx, shape_sizes


def load(
    split: str = "train",
    root: Optional[Union[str, os.PathLike]] = None,
    *,
    cache_dir: Optional[Union[str, os.PathLike]] = None,
    subset: Optional[Union[int, Sequence[int], np.ndarray]] = None,
    test_fraction: float = 0.1,
    split_seed: int = SPLIT_SEED,
    block_size: int = 512,
) -> Dataset:
    """Load dSprites (procedural by default, or the original archive when ``root`` is given).

    Args:
        split: ``"all"`` (the whole grid in original order), or ``"train"``/``"test"``: a seeded
            random 90/10 partition (see :func:`split_indices`; rows stay in grid order).
        root: the original ``.npz`` file, or a directory containing ``ORIGINAL_FILENAME``.
            ``None``: render the grid procedurally (see the module docstring).
        cache_dir: procedural mode only: keep the packed full grid as a ``.npy`` file there
            (written once via a temporary file and ``os.replace``, memory-mapped afterwards).
        subset: restrict the split: an int ``n`` takes ``n`` items of the split at random
            (seed ``split_seed + 1``; a 0-d integer array counts as an int), an integer sequence
            takes those positions of the split (negative ones count from its end).
            Only the selected images are rendered (unless ``cache_dir`` is given).
        test_fraction: size of the test split relative to the grid (default 0.1).
        split_seed: seed of the train/test permutation (default 0).
        block_size: images rendered per vectorised step.

    Returns:
        :class:`Dataset` with bit-packed storage, ``factors`` = (shape, scale, orientation, posX, posY)
        values as in the original ``latents_values`` (color dropped; only ``shape`` is discrete, 3 values),
        and ``meta["grid_index"]`` = the grid index (row of the original file) of each example.
    """
    split_seed = check_int(split_seed, "split_seed", 0, 2**63 - 2)  # subsets draw with split_seed + 1
    block_size = check_int(block_size, "block_size", 1)
    if not (isinstance(test_fraction, numbers.Real) and not isinstance(test_fraction, bool)):
        raise ValueError(f"test_fraction: must be a number strictly between 0 and 1, got {test_fraction!r}")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path (str or os.PathLike), got {type(cache_dir).__name__}")
    if root is not None:
        if cache_dir is not None:
            raise ValueError("cache_dir applies to the procedural generator only, not with root=")
        path = _resolve_original(root)
        packed, hw, values, idx, n_shapes = _load_original(path, split, subset, test_fraction, split_seed)
        meta = {"source": path, "grid_index": idx}
    else:
        idx = _apply_subset(split_indices(N_IMAGES, split, test_fraction, split_seed), subset, split_seed)
        if cache_dir is not None:
            grid = _cached_grid(os.fspath(cache_dir), block_size)
            packed = np.ascontiguousarray(grid[idx])
            del grid
        else:
            packed = generate(idx, block_size=block_size)
        _, values = factor_grid(idx)
        hw, n_shapes = (IMAGE_SIZE, IMAGE_SIZE), 3
        meta = {"source": f"procedural-{RENDER_VERSION}", "grid_index": idx}
    meta.update(split_seed=int(split_seed), test_fraction=float(test_fraction), grid_sizes=GRID_SIZES)
    return Dataset(
        name="dsprites",
        split=split,
        x_raw=torch.from_numpy(packed),
        encoding="bits",
        input_dim=hw[0] * hw[1],
        image_shape=hw,
        factors=torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)),
        factor_names=FACTOR_NAMES,
        factor_discrete=[True, False, False, False, False],
        factor_sizes=[n_shapes, None, None, None, None],
        meta=meta,
    )
