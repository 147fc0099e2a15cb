import numpy as np
import pytest
import torch


@pytest.fixture
def rng():
    """A fresh generator per test run: inputs differ between runs (the seed is printed on failure)."""
    seed = int(np.random.SeedSequence().entropy % (2**32))
    print(f"rng seed {seed}")
    return np.random.default_rng(seed)


def random_orthogonal(rng, d, batch=()):
    q, r = np.linalg.qr(rng.standard_normal(tuple(batch) + (d, d)))
    return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


def jacobian_with_spectrum(rng, n, sigma, R=None):
    """An n x d matrix U diag(sigma) R^T with Haar-random U (orthonormal columns) and R."""
    d = len(sigma)
    U, _ = np.linalg.qr(rng.standard_normal((n, d)))
    R = random_orthogonal(rng, d) if R is None else R
    return (U * np.asarray(sigma)) @ R.T, R


@pytest.fixture
def mlp_decoder():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 48),
                               torch.nn.Tanh(), torch.nn.Linear(48, 60))
