"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable


def atomic_write(path, write: Callable[[Path], Any], *, fsync: bool = False) -> None:
    """Calls ``write(tmp)`` on a temporary file beside ``path``, then renames it over ``path``.

    ``fsync=True`` also flushes the data to disk before the rename (for files expensive to remake).
    The temporary file is removed if ``write`` fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_json(path, obj: Any, indent: int = 2) -> None:
    atomic_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")
