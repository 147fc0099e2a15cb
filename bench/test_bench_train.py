"""One training epoch of the synth-lin beta-VAE recipe: fastdto's loop against a plain DataLoader loop.

Run:  python -m pytest bench/test_bench_train.py -p no:cacheprovider -s
      (FASTDTO_BENCH_SCALE=smoke and/or --benchmark-disable for a quick check that it runs).

Both loops train the same model (same recipe, same initial weights, batch 256, Adam 1e-3, one thread
as fastdto.train picks for a model this small) on the same data in the same process:

* fastdto: ``fastdto.train.Trainer.train_epoch`` -- data on the device, permutations and noise from
  a seeded generator, hand-written forward/backward, flat-buffer Adam, no host syncs;
* baseline: ``DataLoader(TensorDataset(x), batch_size=256, shuffle=True)``, ``model.loss(x)``,
  ``backward()``, ``torch.optim.Adam``.

The ratio (baseline seconds / fastdto seconds per epoch) is printed and kept in extra_info.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import size

from fastdto.data import load
from fastdto.nn import build_model
from fastdto.recipes import load_recipe
from fastdto.train import Trainer

RECIPE = "synth-lin-beta-vae"
N = size(50_000, 5_000)


@pytest.fixture(scope="module")
def setup():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    recipe = load_recipe(RECIPE)
    ds = load("synth-lin", n=N)
    yield recipe, ds
    torch.set_num_threads(old)


def fastdto_epoch_fn(recipe, ds):
    torch.manual_seed(0)
    model = build_model(recipe)
    tr = Trainer(model, ds, batch_size=recipe["training"]["batch_size"], optimizer=recipe["optimizer"]["name"],
                 lr=recipe["optimizer"]["lr"], seed=0, device=torch.device("cpu"), log_every=10**12)
    return tr.train_epoch, model


def dataloader_epoch_fn(recipe, ds):
    torch.manual_seed(0)
    model = build_model(recipe)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["optimizer"]["lr"])
    x_all = ds.batch(torch.arange(len(ds)))
    loader = DataLoader(TensorDataset(x_all), batch_size=recipe["training"]["batch_size"], shuffle=True)

    def epoch():
        for (x,) in loader:
            opt.zero_grad(set_to_none=True)
            model.loss(x)["loss"].backward()
            opt.step()
    return epoch, model


def _finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def test_epoch_fastdto(race, setup):
    epoch, model = fastdto_epoch_fn(*setup)
    race("train-epoch synth-lin beta-VAE", "fastdto Trainer.train_epoch", epoch, units=N)
    assert _finite(model)


def test_epoch_dataloader(race, setup):
    epoch, model = dataloader_epoch_fn(*setup)
    race("train-epoch synth-lin beta-VAE", "torch DataLoader + autograd + Adam", epoch, units=N)
    assert _finite(model)


def test_epoch_ratio(benchmark, setup):
    """Both loops timed back to back in this run (median of 3 epochs each); the ratio is reported."""
    fast, fm = fastdto_epoch_fn(*setup)
    base, bm = dataloader_epoch_fn(*setup)

    def median_time(fn, rounds=3):
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def both():
        return median_time(fast), median_time(base)

    t_fast, t_base = benchmark.pedantic(both, rounds=1, iterations=1)
    ratio = t_base / t_fast
    benchmark.extra_info.update(fastdto_s=t_fast, dataloader_s=t_base, ratio=ratio,
                                samples_per_s_fastdto=N / t_fast, samples_per_s_dataloader=N / t_base)
    print(f"\n[train-epoch {RECIPE}, {N} points] fastdto {t_fast * 1e3:.1f} ms "
          f"({N / t_fast:,.0f} samples/s), DataLoader loop {t_base * 1e3:.1f} ms "
          f"({N / t_base:,.0f} samples/s): ratio {ratio:.2f}x")
    assert _finite(fm) and _finite(bm)
    assert ratio > 1.0
