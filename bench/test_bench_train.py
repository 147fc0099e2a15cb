"""One training epoch with fastdto's loop against a plain DataLoader loop of the same model.

Run:  python -m pytest bench/test_bench_train.py -p no:cacheprovider -s
      (FASTDTO_BENCH_SCALE=smoke and/or --benchmark-disable for a quick check that it runs).

Two cases, each timed in one process on the same data and the same initial weights:

* ``synth-lin-beta-vae`` on the CPU (50,000 points; one thread, as fastdto.train picks for a model
  this small);
* ``dsprites-beta-vae`` on the GPU (the 663,552-image training split, batch 256; the issue's target
  is one epoch in <= 5 s on an H100 and >= 3x the DataLoader loop). Without a GPU it runs only at
  smoke scale, on the CPU with 1,024 images, to keep the code working.

The two loops:

* fastdto: ``fastdto.train.Trainer.train_epoch`` -- data on the training device (dSprites bit-packed),
  permutations and noise from a seeded generator, hand-written forward/backward, flat-buffer
  optimiser, no host syncs;
* baseline: ``DataLoader(TensorDataset(x), batch_size=256, shuffle=True)`` over the inputs in host
  memory (dSprites as uint8 pixels; pinned, copied per batch with ``non_blocking=True``),
  ``model.loss(x)``, ``backward()``, and the recipe's ``torch.optim`` optimiser.

The ratio (baseline seconds / fastdto seconds per epoch, medians) is printed and kept in extra_info.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import SMOKE, size

from fastdto.data import load
from fastdto.nn import build_model
from fastdto.recipes import load_recipe
from fastdto.train import Trainer

HAS_CUDA = torch.cuda.is_available()


def _synth_case():
    n = size(50_000, 5_000)
    return "synth-lin-beta-vae", load("synth-lin", n=n), torch.device("cpu"), 1


def _dsprites_case():
    if HAS_CUDA:
        ds = load("dsprites", split="train", subset=2_048 if SMOKE else None)
        return "dsprites-beta-vae", ds, torch.device("cuda"), None
    if not SMOKE:
        pytest.skip("the dSprites epoch is a GPU benchmark (runs on the CPU only at FASTDTO_BENCH_SCALE=smoke)")
    return "dsprites-beta-vae", load("dsprites", split="train", subset=1_024), torch.device("cpu"), None


CASES = {"synth-lin-beta-vae": _synth_case, "dsprites-beta-vae": _dsprites_case}


@pytest.fixture(scope="module", params=list(CASES))
def setup(request):
    name, ds, device, threads = CASES[request.param]()
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    yield load_recipe(name), ds, device
    torch.set_num_threads(old)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fastdto_epoch_fn(recipe, ds, device):
    torch.manual_seed(0)
    model = build_model(recipe).to(device)
    tr = Trainer(model, ds.to(device), batch_size=recipe["training"]["batch_size"],
                 optimizer=recipe["optimizer"]["name"], lr=recipe["optimizer"]["lr"], seed=0, device=device,
                 log_every=10**12)

    def epoch():
        tr.train_epoch()
        _sync(device)
    return epoch, model


def _host_inputs(ds):
    """All inputs in host memory, as a user would hold them: uint8 pixels for bit-packed images."""
    if ds.encoding == "bits":
        bits = np.unpackbits(ds.x_raw.cpu().numpy(), axis=1)[:, : ds.input_dim]
        return torch.from_numpy(bits)
    return ds.batch(torch.arange(len(ds))).cpu()


def dataloader_epoch_fn(recipe, ds, device):
    torch.manual_seed(0)
    model = build_model(recipe).to(device)
    opt_cls = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
    opt = opt_cls[recipe["optimizer"]["name"]](model.parameters(), lr=recipe["optimizer"]["lr"])
    loader = DataLoader(TensorDataset(_host_inputs(ds)), batch_size=recipe["training"]["batch_size"], shuffle=True,
                        pin_memory=device.type == "cuda")

    def epoch():
        for (x,) in loader:
            x = x.to(device, non_blocking=True).float()
            opt.zero_grad(set_to_none=True)
            model.loss(x)["loss"].backward()
            opt.step()
        _sync(device)
    return epoch, model


def _finite(model):
    return all(torch.isfinite(p).all() for p in model.parameters())


def _group(recipe, device):
    return f"train-epoch {recipe['name']} ({device.type})"


def test_epoch_fastdto(race, setup):
    recipe, ds, device = setup
    epoch, model = fastdto_epoch_fn(*setup)
    race(_group(recipe, device), "fastdto Trainer.train_epoch", epoch, units=len(ds))
    assert _finite(model)


def test_epoch_dataloader(race, setup):
    recipe, ds, device = setup
    epoch, model = dataloader_epoch_fn(*setup)
    race(_group(recipe, device), "torch DataLoader + autograd + torch.optim", epoch, units=len(ds))
    assert _finite(model)


def test_epoch_ratio(benchmark, setup):
    """Both loops timed back to back in this run (median of 3 epochs each, after one warm-up epoch)."""
    recipe, ds, device = setup
    fast, fm = fastdto_epoch_fn(*setup)
    base, bm = dataloader_epoch_fn(*setup)

    def median_time(fn, rounds=1 if SMOKE else 3):
        if not SMOKE:
            fn()  # warm-up: allocator, kernels, DataLoader start
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
    n = len(ds)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    benchmark.extra_info.update(recipe=recipe["name"], device=device_name, n=n, fastdto_s=t_fast,
                                dataloader_s=t_base, ratio=ratio)
    print(f"\n[train-epoch {recipe['name']} on {device_name}, {n} examples] fastdto {t_fast:.3f} s "
          f"({n / t_fast:,.0f} samples/s), DataLoader loop {t_base:.3f} s ({n / t_base:,.0f} samples/s): "
          f"ratio {ratio:.2f}x")
    assert _finite(fm) and _finite(bm)
    if not SMOKE:
        assert ratio > 1.0
