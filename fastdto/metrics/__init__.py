"""Metrics that score a VAE's latent code: an adjusted MIG reconstruction,
classic MIG, active latents, the active/passive KL split and the polarised
share of training.

All functions take NumPy arrays or torch tensors (any device), compute in
NumPy float64 and return Python numbers (or NumPy masks); invalid input
raises ``ValueError`` naming the argument.
"""

from .disentanglement import disentanglement_score
from .kl import active_latents, kl_terms, polarized_fraction
from .mig import mig
from .baseline import random_decoder_baseline

__all__ = [
    "random_decoder_baseline",
    "disentanglement_score",
    "mig",
    "active_latents",
    "kl_terms",
    "polarized_fraction",
]
