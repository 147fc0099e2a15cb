"""DtO of untrained decoders: the 'random decoder' column of the paper's Table 2."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ._validation import check_int


def random_decoder_baseline(architecture, *, n_decoders: int = 10, n_samples: int = 1000, seed: int = 0,
                            active=None) -> dict:
    """DtO of freshly initialised decoders of a recipe's architecture, at latents z ~ N(0, I).

    Args:
        architecture: a recipe name or dict (see :mod:`fastdto.recipes`); only its decoder,
            ``latent_dim``, ``input_dim`` and ``loss`` are used.
        n_decoders: independent initialisations (torch seeds ``seed .. seed + n_decoders - 1``; decoder
            ``k``'s standard normal latents come from a generator seeded ``10_000 + seed + k``).
        n_samples: latent points per decoder.
        active: passed to :func:`fastdto.evaluate` (default: all latents).

    Returns:
        ``dict(dto=mean over decoders, std=std over decoders (ddof=0), per_decoder=[...], settings)``.
        The paper's construction of its baseline is not known; this is the plain reading (default
        PyTorch initialisation, standard normal latents), stated in every report.
    """
    from ..dto import evaluate
    from ..nn import build_model
    from ..recipes import load_recipe, validate_recipe

    if isinstance(architecture, str):
        recipe = load_recipe(architecture)
    elif isinstance(architecture, Mapping):
        recipe = validate_recipe(dict(architecture), "architecture")
    else:
        raise TypeError(f"architecture must be a recipe name or a recipe dict, got {architecture!r}")
    n_decoders = check_int(n_decoders, "n_decoders", 1)
    n_samples = check_int(n_samples, "n_samples", 1)
    seed = check_int(seed, "seed", 0, 2**62)  # seed + 10_000 + k stays a valid torch seed
    values = []
    for k in range(n_decoders):
        with torch.random.fork_rng(devices=[]):  # the caller's RNG stream stays where it was
            torch.manual_seed(seed + k)
            model = build_model(recipe)
        g = torch.Generator().manual_seed(10_000 + seed + k)
        z = torch.randn(n_samples, int(recipe["latent_dim"]), generator=g)
        values.append(evaluate(model.decoder, z, active=active).dto)
    v = np.asarray(values)
    return {"dto": float(v.mean()), "std": float(v.std()), "per_decoder": values,
            "settings": {"recipe": recipe["name"], "n_decoders": n_decoders, "n_samples": n_samples,
                         "seed": seed, "latents": "standard normal", "init": "PyTorch default"}}
