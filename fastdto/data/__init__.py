"""Datasets of the paper's experiments behind one entry point, :func:`load`.

>>> from fastdto import data
>>> ds = data.load("synth-lin")                     # 50,000 x 3 float32, factors v (2 continuous)
>>> x = ds.batch(slice(0, 256))                      # float32 (256, 3) on ds.x_raw's device
>>> sprites = data.load("dsprites", subset=1000)     # 1,000 procedurally rendered training images

Names (:func:`names`): ``"dsprites"``, ``"mnist"``, ``"fashion-mnist"``, ``"synth-lin"``,
``"synth-nonlin"``. Every loader returns a :class:`Dataset`. Nothing is ever downloaded: dSprites
is rendered procedurally (or read from the original archive via ``root=``), MNIST-family data are
read from local IDX files, the synthetic tasks are computed from fixed seeds.

Per-dataset options (keyword arguments of :func:`load`):

* ``dsprites``: ``root``, ``cache_dir``, ``subset``, ``test_fraction``, ``split_seed``,
  ``block_size``; splits ``"train"``, ``"test"``, ``"all"`` (see :mod:`fastdto.data.dsprites`).
* ``mnist``, ``fashion-mnist``: ``root``; splits ``"train"``, ``"test"`` (see :mod:`fastdto.data.mnist`).
* ``synth-lin``: ``n``, ``seed``, ``scale_ratio``; ``synth-nonlin``: ``n``, ``seed``,
  ``weight_seed``; splits ``"train"``, ``"test"`` (see :mod:`fastdto.data.synth`).
"""

from __future__ import annotations

import inspect
import os
from typing import Optional, Union

from . import dsprites, mnist, synth
from ._dataset import Dataset
from .mnist import read_idx, write_idx

__all__ = ["Dataset", "load", "names", "reads_files", "read_idx", "write_idx", "dsprites", "mnist", "synth"]

_NAMES = ("dsprites", "mnist", "fashion-mnist", "synth-lin", "synth-nonlin")


def reads_files(name: str) -> bool:
    """Whether ``load(name, root=...)`` applies: the synthetic tasks are computed and take no root."""
    return str(name).lower().replace("_", "-") not in ("synth-lin", "synth-nonlin")


def names() -> list:
    """Names accepted by :func:`load`."""
    return list(_NAMES)


def _check_options(name: str, func, options: dict, skip=()) -> None:
    allowed = [
        p.name
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in skip
    ]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"load({name!r}) got unknown option(s) {unknown}; accepted: {sorted(allowed)}")


def load(name: str, split: str = "train", root: Optional[Union[str, os.PathLike]] = None, **options) -> Dataset:
    """Load a dataset by name.

    Args:
        name: one of :func:`names` (case-insensitive, ``_`` accepted for ``-``).
        split: ``"train"`` (default) or ``"test"``; dSprites also ``"all"``.
        root: where local files live: the dSprites ``.npz`` (file or directory) or the MNIST-family
            IDX directory. The synthetic tasks read no files and reject it.
        **options: dataset-specific options (see the module docstring); unknown ones raise TypeError.

    Returns:
        :class:`Dataset` on the CPU; move it with :meth:`Dataset.to`.
    """
    key = str(name).lower().replace("_", "-")
    if key not in _NAMES:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(_NAMES)}")
    if key == "dsprites":
        _check_options(key, dsprites.load, options, skip=("split", "root"))
        return dsprites.load(split, root, **options)
    if key in ("mnist", "fashion-mnist"):
        _check_options(key, mnist.load, options, skip=("name", "split", "root"))
        return mnist.load(key, split, root)
    if root is not None:
        raise TypeError(f"{key} is computed, not read from files: root= does not apply")
    _check_options(key, synth.load, options, skip=("name", "split"))
    return synth.load(key, split, **options)
