"""Training recipes: one TOML file per (dataset, model) cell of the paper's experiments.

A recipe is found by name (``synth-lin-beta-vae``) or given as a path to a ``.toml`` file.
Named recipes live in

1. ``fastdto/recipes_data/`` -- the copy an installed package carries (looked at first), then
2. ``models/`` at the top of a source checkout (``Path(__file__).parent.parent / "models"``).

Layout of a recipe (every key below is required unless marked optional)::

    name = "synth-lin-beta-vae"       # str
    dataset = "synth-lin"             # str, a name fastdto.data.load knows
    model = "beta-vae"                # beta-vae | vae | ae | beta-vae-sigma
    input_dim = 3                     # int > 0 (checked against the data at training time)
    latent_dim = 2                    # int > 0
    beta = 1e-4                       # float >= 0; required except for model = "ae"
    loss = "square"                   # bernoulli | square
    cholesky_diag = "exp"             # optional, beta-vae-sigma only: exp | softplus
    [encoder]  hidden = []  activation = "none"     # list of int > 0; relu | tanh | none
    [decoder]  hidden = []  activation = "none"
    [optimizer] name = "adam"  lr = 1e-3            # adam | adagrad | sgd; float > 0
    [training] epochs = 600  batch_size = 256       # int > 0
    [data]                                          # optional: keyword options for data.load
    [provenance]                                    # where each value comes from

``[provenance]`` maps a dotted key (``"encoder.hidden"``, ``"optimizer.lr"``, ...) to a string that
starts with ``paper`` (taken from the paper or its supplement) or ``assumption`` (our choice), followed
by a short reason.  Every value that shapes training must have an entry.
"""

from __future__ import annotations

import copy
import difflib
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from .dto import MAX_DIM

__all__ = ["RecipeError", "load_recipe", "recipe_dirs", "recipe_names", "recipe_path",
           "PROVENANCE_KEYS"]

_PKG = Path(__file__).resolve().parent
INSTALLED_DIR = _PKG / "recipes_data"
SOURCE_DIR = _PKG.parent / "models"

MODELS = ("beta-vae", "vae", "ae", "beta-vae-sigma")
LOSSES = ("bernoulli", "square")
ACTIVATIONS = ("relu", "tanh", "none")
OPTIMIZERS = ("adam", "adagrad", "sgd")

#: keys whose origin every recipe must state in ``[provenance]``
PROVENANCE_KEYS = (
    "input_dim", "latent_dim", "loss",
    "encoder.hidden", "encoder.activation", "decoder.hidden", "decoder.activation",
    "optimizer.name", "optimizer.lr", "training.epochs", "training.batch_size",
)


class RecipeError(ValueError):
    """A recipe that cannot be found or does not validate."""


def recipe_dirs() -> list[Path]:
    """Folders searched for named recipes, in order (only those that exist)."""
    return [d for d in (INSTALLED_DIR, SOURCE_DIR) if d.is_dir()]


def _index() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in recipe_dirs():
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)  # the installed copy wins
    return found


def recipe_names() -> list[str]:
    """Names of all recipes that :func:`load_recipe` can find."""
    return sorted(_index())


def recipe_path(name_or_path: str | Path) -> Path:
    """The file a name or path refers to (raises :class:`RecipeError` when there is none)."""
    s = str(name_or_path)
    p = Path(s)
    if s.endswith(".toml") or p.is_file() or len(p.parts) > 1:
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {s}")
        return p
    idx = _index()
    if s not in idx:
        close = difflib.get_close_matches(s, idx, n=3, cutoff=0.75)
        hint = f"; did you mean {' or '.join(close)}? A" if close else "; a"
        names = ", ".join(sorted(idx)) or "(none: no recipe folder found)"
        raise RecipeError(f"unknown recipe {s!r}{hint}vailable recipes: {names}")
    return idx[s]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    """A finite int or float (TOML also reads inf and nan)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


#: Keys a recipe may hold, per table: anything else is a typo that would otherwise be ignored silently
#: (``cholesky-diag`` for ``cholesky_diag`` gave the default).
_KEYS = {
    "": {"name", "dataset", "model", "input_dim", "latent_dim", "beta", "loss", "cholesky_diag", "encoder",
         "decoder", "optimizer", "training", "data", "provenance"},
    "encoder": {"hidden", "activation"},
    "decoder": {"hidden", "activation"},
    "optimizer": {"name", "lr"},
    "training": {"epochs", "batch_size"},
}
#: Widest hidden layer a recipe may ask for (a typo of 10**12 units failed in the allocator).
MAX_WIDTH = 1 << 20


def _get(d: dict, dotted: str):
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None, False
        cur = cur[part]
    return cur, True


def validate_recipe(r: dict, source: str = "recipe") -> dict:
    """Check keys and types of a recipe dict; returns it.  Raises :class:`RecipeError`."""

    def fail(key: str, why: str):
        raise RecipeError(f"{source}: key {key!r} {why}")

    def need(key: str, check, why: str):
        v, ok = _get(r, key)
        if not ok:
            fail(key, "is missing")
        if not check(v):
            fail(key, f"{why}, got {v!r}")
        return v

    for table, allowed in _KEYS.items():
        keys = r if not table else r.get(table)
        if isinstance(keys, dict):
            for key in keys:
                if key not in allowed:
                    fail(f"{table}.{key}" if table else key,
                         f"is not a recipe key (expected one of {', '.join(sorted(allowed))})")
    need("name", lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", v) is not None,
         "must be a non-empty string of letters, digits, '.', '_' and '-' (it names the run's folder)")
    need("dataset", lambda v: isinstance(v, str) and v, "must be a non-empty string")
    model = need("model", lambda v: v in MODELS, f"must be one of {', '.join(MODELS)}")
    need("input_dim", lambda v: _is_int(v) and v > 0, "must be a positive integer")
    # DtO is computed at the end of training: the engine's limit, checked before training, not after
    need("latent_dim", lambda v: _is_int(v) and 0 < v <= MAX_DIM, f"must be an integer in [1, {MAX_DIM}]")
    if model == "vae":  # the model fixes beta = 1; another value would be silently ignored
        need("beta", lambda v: _is_num(v) and v == 1, "must be 1 for a vae (use model = 'beta-vae')")
    elif model != "ae":
        need("beta", lambda v: _is_num(v) and v >= 0, "must be a finite non-negative number")
    elif "beta" in r:
        fail("beta", "does not apply to model = 'ae' (an autoencoder has no KL term)")
    need("loss", lambda v: v in LOSSES, f"must be one of {', '.join(LOSSES)}")
    if "cholesky_diag" in r:
        if model != "beta-vae-sigma":
            fail("cholesky_diag", f"applies to model = 'beta-vae-sigma' only, not {model!r}")
        need("cholesky_diag", lambda v: v in ("exp", "softplus"), "must be 'exp' or 'softplus'")
    for side in ("encoder", "decoder"):
        need(side, lambda v: isinstance(v, dict), "must be a table")
        need(f"{side}.hidden", lambda v: isinstance(v, list) and all(_is_int(w) and 0 < w <= MAX_WIDTH for w in v),
             f"must be a list of integers in [1, {MAX_WIDTH}]")
        need(f"{side}.activation", lambda v: v in ACTIVATIONS,
             f"must be one of {', '.join(ACTIVATIONS)}")
    need("optimizer", lambda v: isinstance(v, dict), "must be a table")
    need("optimizer.name", lambda v: v in OPTIMIZERS, f"must be one of {', '.join(OPTIMIZERS)}")
    need("optimizer.lr", lambda v: _is_num(v) and 0 < v < 3e38, "must be a positive number that float32 holds")
    need("training", lambda v: isinstance(v, dict), "must be a table")
    need("training.epochs", lambda v: _is_int(v) and v > 0, "must be a positive integer")
    need("training.batch_size", lambda v: _is_int(v) and v > 0, "must be a positive integer")
    if "data" in r and not isinstance(r["data"], dict):
        fail("data", "must be a table of options for fastdto.data.load")
    if "seed" in r.get("data", {}):  # the options reach both splits: one seed made the test split training points
        fail("data.seed", "would give the train and test splits the same points (each split has its own seed)")
    prov = need("provenance", lambda v: isinstance(v, dict), "must be a table")
    required = list(PROVENANCE_KEYS)
    if model != "ae":
        required.append("beta")
    for key in required:
        if key not in prov:
            fail(f"provenance.{key}", "is missing (say 'paper: ...' or 'assumption: ...')")
    for key, why in prov.items():
        if not (isinstance(why, str) and why.split(":")[0].strip() in ("paper", "assumption")):
            fail(f"provenance.{key}", "must be a string starting with 'paper' or 'assumption'")
    return r


def load_recipe(name_or_path: str | Path) -> dict:
    """Load and validate a recipe by name (see :func:`recipe_names`) or by file path.

    Returns a fresh dict (TOML tables become nested dicts).  Raises :class:`RecipeError`
    (a ``ValueError``) naming the offending key, or listing the available names for an
    unknown name.
    """
    path = recipe_path(name_or_path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # TOML files are UTF-8
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc}") from None
    data.setdefault("name", path.stem)
    data.setdefault("data", {})
    return copy.deepcopy(validate_recipe(data, source=str(path)))
