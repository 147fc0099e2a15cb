"""Reference training loop for the paper's experiments: ``python -m fastdto.train RECIPE ...``.

One *run* is a recipe (see :mod:`fastdto.recipes`) trained with one seed.  Its folder
``OUT/<recipe>/seed<k>/`` holds

``checkpoint.pt``
    model, optimiser, RNG states (torch's global generator and the run's own generator),
    epoch / batch position / step, the log history and the accumulated training time.  Written
    atomically (temporary file + ``os.replace``) at the end of every epoch and when SIGINT or
    SIGTERM arrives (the run then exits with 130 or 143).  A run that finds a checkpoint resumes
    from it and ends bit-for-bit where an uninterrupted run with the same seed ends (same device
    and thread count).
``log.jsonl``
    one JSON object per check, every ``--log-every`` (500) batches, starting at step 0: a
    loss / rec / kl estimate on a fixed evaluation subset of the *training* data (noise drawn
    from its own generator, so logging never changes the training trajectory), and the
    paper's polarisation diagnostics on the same subset from :func:`fastdto.metrics.kl_terms`:
    ``L_KL``, ``L_KL_active`` (the paper's L_~KL), ``delta_KL``, with the active set recomputed
    at every check.  For beta-VAE_Sigma these use the marginal posterior variances
    ``diag(L L^T)`` (the exact full-covariance KL is ``kl``); the AE has none of them.  A final
    check at the last step is added when that step is not a multiple of ``--log-every``.
    Mirrored to TensorBoard when ``torch.utils.tensorboard`` can be imported.
``result.json``
    written atomically after the run: posterior means of up to ``--eval-samples`` held-out
    (``split="test"``) points, a fixed random subset shared by all seeds; DtO of
    ``model.decoder`` at these means over all latents and over the active ones
    (``active="auto"``), the disentanglement score and MIG (factors of the test split), the
    number of active latents, the polarised fraction of the ``delta_KL`` history, wall time,
    device, thread count and torch version.

A run whose ``result.json`` exists for the same number of epochs is skipped (``--force`` starts
it over); asking for more epochs than a finished run had resumes it from its checkpoint (the
earlier result is kept as ``result_step<N>.json``), and another ``--eval-samples`` evaluates the
final checkpoint again (the earlier result is kept as ``result_eval<M>.json``). A run made with another recipe, batch size or
``--log-every`` is refused (exit 2) rather than mixed. While a process trains a run it holds a lock on
the run's folder (``.lock``; a second process is refused), and it first removes temporary files that
killed processes left there.

The hot loop keeps everything on the training device: the data storage is moved once, each
epoch's permutation is drawn there from the run's seeded ``torch.Generator`` (which also draws
the reparameterisation noise), inputs come from ``dataset.batch(idx)`` for up to 32 MiB of rows
at a time and are sliced into batches, the gradient comes from ``model.fused_grad`` (a
hand-written forward/backward pass, no autograd graph), the parameters live in one flat buffer
updated by a single-tensor optimiser, and nothing is read back to the host between checks.  For
tiny models on the CPU one thread is fastest (thread hand-offs cost more than the arithmetic), so
without ``--threads`` it uses 1 below about 10^7 multiply-adds per batch.

Errors a user can fix (unknown recipe, bad recipe file, missing data, CUDA not available, bad
``--seeds``) print one line on stderr and exit with status 2; a diverged run (non-finite loss at a
check) or a file-system error exits with status 1.  A signal that arrives during the final
evaluation lets it finish (the result is written), then exits with 130/143; a second signal stops
at once.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from ._io import atomic_json, atomic_text, atomic_write

__all__ = ["main", "parse_seeds", "run_one", "Trainer", "FlatOptimizer", "UsageError"]

LOG_EVERY = 500
KL_SUBSET = 10_000
EVAL_SAMPLES = 10_000
MIN_EVAL_SAMPLES = 100  # the disentanglement score's cross-validated neighbours need a few per fold
EVAL_SUBSET_SEED = 0  # the held-out points evaluated are the same for every seed
PROGRESS_SECONDS = 5.0
GATHER_BYTES = 32 << 20  # inputs gathered per dataset.batch call in the hot loop
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
LOG = "log.jsonl"
FORMAT_VERSION = 1
MAX_SEED = 2**31 - 1  # seeds are offset for the evaluation and KL generators; torch takes 64 bits
MAX_SEEDS = 100_000
LOCK = ".lock"


class UsageError(Exception):
    """A problem the user can fix: reported as one line on stderr, exit status 2."""


class _Stop(Exception):
    """Raised inside a run when SIGINT/SIGTERM asked it to stop (after checkpointing)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


# ----------------------------------------------------------------------------------------------
# small helpers


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or a mix (``"0-2,7"``) -> sorted unique seeds."""
    seeds: set[int] = set()
    bad = UsageError(f"bad --seeds {text!r}: use a range like 0-9, a list like 0,3,5, or both (0-2,7)")
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if m is None:
            raise bad
        lo = int(m.group(1))
        hi = lo if m.group(2) is None else int(m.group(2))
        if hi < lo:
            raise bad
        if hi > MAX_SEED or hi - lo + len(seeds) >= MAX_SEEDS:
            raise UsageError(f"bad --seeds {text!r}: seeds go from 0 to {MAX_SEED}, at most {MAX_SEEDS} at a time")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def _num(x) -> Any:
    """Tensors / numpy scalars -> plain Python numbers (lists for vectors)."""
    if x is None:
        return None
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return x.item() if x.numel() == 1 and x.dim() == 0 else x.tolist()
    if hasattr(x, "tolist"):
        return x.tolist()
    return x


def _fmt_time(s: float) -> str:
    s = max(0, int(s))
    h, r = divmod(s, 3600)
    m, s = divmod(r, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _fmt_optional(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def auto_threads(model: torch.nn.Module, batch_size: int, device: torch.device) -> int:
    """1 thread for tiny models on the CPU (fewer than ~1e7 multiply-adds per batch)."""
    if device.type != "cpu":
        return torch.get_num_threads()
    macs = sum(p.numel() for p in model.parameters()) * batch_size
    return 1 if macs < 1e7 else torch.get_num_threads()


# ----------------------------------------------------------------------------------------------
# flat parameters and single-tensor optimisers


def flatten_parameters(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Make every parameter (and its ``.grad``) a view into one contiguous buffer.

    Returns ``(flat_params, flat_grads)``.  ``model.state_dict()`` / ``load_state_dict`` keep
    working (they read and copy into the views); autograd accumulates into the views as well.
    """
    params = [p for p in model.parameters()]
    if not params:
        raise ValueError("model has no parameters")
    dtype, device = params[0].dtype, params[0].device
    total = sum(p.numel() for p in params)
    flat = torch.empty(total, dtype=dtype, device=device)
    grad = torch.zeros(total, dtype=dtype, device=device)
    o = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            flat[o:o + n].copy_(p.detach().reshape(-1))
            p.data = flat[o:o + n].view_as(p)
            p.grad = grad[o:o + n].view_as(p)
            o += n
    return flat, grad


class FlatOptimizer:
    """Adam, Adagrad or SGD on one flat parameter buffer, a few fused in-place kernels per step.

    The update rules and defaults are those of ``torch.optim`` (single-tensor code path):
    Adam betas (0.9, 0.999), eps 1e-8; Adagrad eps 1e-10, no lr decay, initial accumulator 0;
    plain SGD without momentum.
    """

    def __init__(self, name: str, params: torch.Tensor, grads: torch.Tensor, lr: float):
        if name not in ("adam", "adagrad", "sgd"):
            raise ValueError(f"unknown optimizer {name!r}")
        self.name, self.params, self.grads, self.lr = name, params, grads, float(lr)
        self.t = 0
        self.betas, self.eps = ((0.9, 0.999), 1e-8) if name == "adam" else ((0.0, 0.0), 1e-10)
        self.exp_avg = torch.zeros_like(params) if name == "adam" else None
        self.exp_avg_sq = torch.zeros_like(params) if name in ("adam", "adagrad") else None
        # The update's denominator, reused: a fresh parameter-sized tensor per step costs page faults
        # on the CPU (2-4x the whole step for the dSprites model).
        self._denom = torch.empty_like(params) if name in ("adam", "adagrad") else None
        self.step = {"adam": self._adam, "adagrad": self._adagrad, "sgd": self._sgd}[name]

    def _adam(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        g = self.grads
        self.exp_avg.lerp_(g, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        bc1 = 1 - b1 ** self.t
        bc2_sqrt = math.sqrt(1 - b2 ** self.t)
        denom = torch.sqrt(self.exp_avg_sq, out=self._denom).div_(bc2_sqrt).add_(self.eps)
        self.params.addcdiv_(self.exp_avg, denom, value=-self.lr / bc1)

    def _adagrad(self) -> None:
        self.t += 1
        g = self.grads
        self.exp_avg_sq.addcmul_(g, g, value=1)
        self.params.addcdiv_(g, torch.sqrt(self.exp_avg_sq, out=self._denom).add_(self.eps), value=-self.lr)

    def _sgd(self) -> None:
        self.t += 1
        self.params.add_(self.grads, alpha=-self.lr)

    def state_dict(self) -> dict:
        return {"name": self.name, "lr": self.lr, "t": self.t,
                "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, sd: dict) -> None:
        if sd["name"] != self.name:
            raise ValueError(f"optimizer state is for {sd['name']!r}, not {self.name!r}")
        self.t = int(sd["t"])
        for key in ("exp_avg", "exp_avg_sq"):
            if getattr(self, key) is not None:
                getattr(self, key).copy_(sd[key])


# ----------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Training state of one run; :meth:`train_epoch` is the hot loop.

    ``train_set`` must already live on ``device``.  ``stop`` is an object whose ``signum``
    attribute becomes non-zero when the run should checkpoint and stop.
    """

    def __init__(self, model, train_set, *, batch_size: int, optimizer: str, lr: float, seed: int,
                 device: torch.device, log_every: int = LOG_EVERY, kl_subset: int = KL_SUBSET):
        self.model = model
        self.data = train_set
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.seed = int(seed)
        self.flat, self.flat_grad = flatten_parameters(model)
        self.opt = FlatOptimizer(optimizer, self.flat, self.flat_grad, lr)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(self.seed)
        self.epoch = 0            # completed epochs
        self.batch_in_epoch = 0   # next batch of the current epoch
        self.perm: torch.Tensor | None = None
        self.step = 0
        self.history: list[dict] = []
        self.train_time = 0.0
        self.log_every = int(log_every)
        n = len(train_set)
        self.batches_per_epoch = max(1, math.ceil(n / self.batch_size))
        g = torch.Generator().manual_seed(self.seed + 1_000_003)
        sub = torch.randperm(n, generator=g)[: min(n, int(kl_subset))].sort().values
        self.kl_index = sub.to(self.device)
        self.on_log = None       # callback(entry) for files / TensorBoard
        self.interrupt_at = None  # debug: send SIGTERM to ourselves at this step

    # -- diagnostics ----------------------------------------------------------------------
    @torch.no_grad()
    def diagnostics(self) -> dict:
        """Loss terms and KL split on the fixed evaluation subset of the training data."""
        from . import metrics

        model = self.model
        g = torch.Generator(device=self.device)
        g.manual_seed(self.seed + 7919)
        sums = {"loss": 0.0, "rec": 0.0, "kl": 0.0}
        mus, posts = [], []
        n = 0
        for chunk in self.kl_index.split(4096):
            x = self.data.batch(chunk)
            out = model.loss(x, generator=g)
            for k in sums:
                sums[k] = sums[k] + out[k].double() * x.shape[0]
            mu, post = model.encode(x)
            if model.kind == "beta-vae-sigma":
                post = model.marginal_logvar(post)
            mus.append(mu)
            posts.append(post)
            n += x.shape[0]
        entry: dict[str, Any] = {k: float(v) / n for k, v in sums.items()}
        mu = torch.cat(mus)
        if not all(math.isfinite(entry[k]) for k in ("loss", "rec", "kl")) or not bool(torch.isfinite(mu).all()):
            raise FloatingPointError(f"training diverged at step {self.step}: loss {entry['loss']}")
        if posts[0] is None:  # AE: no posterior variances
            active = metrics.active_latents(mu)
        else:
            kt = metrics.kl_terms(mu, torch.cat(posts))
            active = kt["active"]
            entry.update(L_KL=_num(kt["L_KL"]), L_KL_active=_num(kt["L_KL_active"]),
                         delta_KL=_num(kt["delta_KL"]))
        entry["active"] = [bool(a) for a in _num(active)]
        entry["n_active"] = int(sum(entry["active"]))
        return entry

    def log(self, final: bool = False) -> dict:
        entry = {"step": self.step, "epoch": round(self.step / self.batches_per_epoch, 4)}
        entry.update(self.diagnostics())
        entry["train_time_s"] = round(self.train_time, 3)
        if final:
            entry["final"] = True
        else:
            self.history.append(entry)
        if self.on_log is not None:
            self.on_log(entry)
        return entry

    # -- the hot loop ------------------------------------------------------------------------
    def train_epoch(self, stop=None, progress=None) -> bool:
        """Run the rest of the current epoch.  Returns False when stopped by ``stop``."""
        data, B, gen = self.data, self.batch_size, self.gen
        if self.perm is None:
            self.perm = torch.randperm(len(data), generator=gen, device=self.device)
        perm = self.perm
        batch, fused_grad, opt_step = data.batch, self.model.fused_grad, self.opt.step
        log_every = self.log_every
        step = self.step
        interrupt_at = self.interrupt_at
        t0 = time.perf_counter()
        next_progress = progress.next_at if progress is not None else math.inf
        b = self.batch_in_epoch
        nb = self.batches_per_epoch
        # Inputs are gathered for several batches at once (at most GATHER_BYTES of float32),
        # then sliced: fewer calls into dataset.batch, the same rows in the same order.
        per_chunk = max(1, GATHER_BYTES // (4 * B * int(data.input_dim)))
        chunk_end = b
        stopped = False
        while b < nb:
            if b >= chunk_end:
                chunk_start, chunk_end = b, min(nb, b + per_chunk)
                xs = batch(perm[chunk_start * B:chunk_end * B])
            off = (b - chunk_start) * B
            x = xs[off:off + B]
            fused_grad(x, gen)
            opt_step()
            b += 1
            step += 1
            if step % log_every == 0:
                self.step, self.batch_in_epoch = step, b
                self.train_time += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.log()
            if interrupt_at is not None and step == interrupt_at:
                os.kill(os.getpid(), signal.SIGTERM)
            if stop is not None and stop.signum:
                stopped = True
                break
            if progress is not None and time.perf_counter() >= next_progress:
                self.step, self.batch_in_epoch = step, b
                progress(self)
                next_progress = progress.next_at
        self.train_time += time.perf_counter() - t0
        self.step, self.batch_in_epoch = step, b
        if not stopped:
            self.epoch += 1
            self.batch_in_epoch = 0
            self.perm = None
        return not stopped

    # -- checkpoints -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "generator": self.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "perm": self.perm,
            "step": self.step,
            "history": self.history,
            "train_time": self.train_time,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd["model"])
        self.opt.load_state_dict(sd["optimizer"])
        self.gen.set_state(sd["generator"])
        torch.set_rng_state(sd["torch_rng"])
        if sd.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(sd["cuda_rng"])
        self.epoch = int(sd["epoch"])
        self.batch_in_epoch = int(sd["batch_in_epoch"])
        self.perm = None if sd["perm"] is None else sd["perm"].to(self.device)
        self.step = int(sd["step"])
        self.history = list(sd["history"])
        self.train_time = float(sd["train_time"])

    def save(self, path: Path, extra: dict) -> None:
        state = self.state_dict()
        state.update(extra)

        def write(tmp: Path) -> None:
            try:
                torch.save(state, tmp)
            except RuntimeError as exc:  # torch reports a full disk or I/O error as RuntimeError
                raise OSError(f"cannot write checkpoint {path}: {exc}") from None

        atomic_write(path, write)


class _Progress:
    """Progress line with throughput, printed at most every ``interval`` seconds."""

    def __init__(self, label: str, epochs: int, interval: float, start_step: int = 0, stream=None):
        self.label, self.epochs, self.interval = label, epochs, interval
        self.stream = stream or sys.stdout
        self.t_last = time.perf_counter()
        self.step_last = start_step
        self.next_at = self.t_last + interval

    def __call__(self, tr: Trainer) -> None:
        now = time.perf_counter()
        rate = (tr.step - self.step_last) * tr.batch_size / max(now - self.t_last, 1e-9)
        total = self.epochs * tr.batches_per_epoch
        eta = (total - tr.step) * tr.batch_size / rate if rate > 0 else float("nan")
        last = tr.history[-1] if tr.history else {}
        loss = f"{last['loss']:.4g}" if "loss" in last else "-"
        ep = tr.epoch + tr.batch_in_epoch / tr.batches_per_epoch
        print(f"{self.label} | epoch {ep:.1f}/{self.epochs} | step {tr.step} | loss {loss} | "
              f"{rate:,.0f} samples/s | eta {_fmt_time(eta) if math.isfinite(eta) else '?'}",
              file=self.stream, flush=True)
        self.t_last, self.step_last = now, tr.step
        self.next_at = time.perf_counter() + self.interval


# ----------------------------------------------------------------------------------------------
# data and evaluation


def _load_dataset(recipe: dict, split: str, data_root: str | None = None):
    """``fastdto.data.load`` for a recipe (options from its ``[data]`` table)."""
    from . import data as data_mod

    options = dict(recipe.get("data", {}))
    if data_root is not None and data_mod.reads_files(recipe["dataset"]):  # one --data-root for a whole grid
        options["root"] = data_root
    return data_mod.load(recipe["dataset"], split=split, **options)


def load_run(run_dir) -> tuple:
    """The trained model (eval mode, CPU) and recipe saved in a run folder's checkpoint."""
    from .nn import build_model

    sd = torch.load(Path(run_dir) / CHECKPOINT, map_location="cpu", weights_only=False)
    model = build_model(sd["recipe"])
    model.load_state_dict(sd["model"])
    return model.eval(), sd["recipe"]


@torch.no_grad()
def _posterior_means(model, dataset, index: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    return torch.cat([model.encode(dataset.batch(i))[0] for i in index.split(chunk)])


def evaluate_run(model, test_set, history: list, eval_samples: int = EVAL_SAMPLES) -> dict:
    """End-of-run numbers on held-out data (see the module docstring)."""
    from . import metrics

    from .dto import evaluate

    n = min(int(eval_samples), len(test_set))
    g = torch.Generator().manual_seed(EVAL_SUBSET_SEED)
    index = torch.randperm(len(test_set), generator=g)[:n].sort().values.to(test_set.x_raw.device)
    mu = _posterior_means(model, test_set, index).detach()
    out: dict[str, Any] = {"eval_split": "test", "eval_samples": n}

    res = evaluate(model.decoder, mu)
    out.update(dto=float(res.dto), dto_std=float(res.std),
               dto_ambiguous=int(torch.as_tensor(res.ambiguous).sum()))
    active = [bool(a) for a in _num(metrics.active_latents(mu))]
    out["active"] = active
    out["n_active"] = int(sum(active))
    if out["n_active"] > 0:
        ra = evaluate(model.decoder, mu, active="auto")
        out.update(dto_active=float(ra.dto), dto_active_std=float(ra.std),
                   dto_active_ambiguous=int(torch.as_tensor(ra.ambiguous).sum()))
    else:
        out.update(dto_active=None, dto_active_std=None, dto_active_ambiguous=None)

    factors = getattr(test_set, "factors", None)
    if factors is not None and factors.numel() > 0 and factors.shape[1] > 0:
        f = factors[index]
        discrete = list(test_set.factor_discrete)
        out["disentanglement"] = float(metrics.disentanglement_score(mu, f, discrete=discrete))
        out["mig"] = float(metrics.mig(mu, f, discrete=discrete))
        out["mig_settings"] = {"n_bins": 20, "estimator": "histogram", "exclude": []}
    else:
        out["disentanglement"] = None
        out["mig"] = None

    deltas = [(e["step"], e["delta_KL"]) for e in history if e.get("delta_KL") is not None]
    out["polarized_fraction"] = float(metrics.polarized_fraction(deltas)) if deltas else None
    return out


# ----------------------------------------------------------------------------------------------
# one run


def _comparable(recipe: dict) -> dict:
    return {k: v for k, v in recipe.items() if k not in ("provenance",)}


def _json_roundtrip(x):
    return json.loads(json.dumps(x))


def _lock_run_dir(run_dir: Path):
    """An exclusive lock on ``run_dir`` (two processes training one run would interleave its files),
    then removal of temporary files that killed processes left there (the lock proves them dead)."""
    fh = open(run_dir / LOCK, "a")
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, and no cleanup (a live writer's file might go)
        return fh
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise UsageError(f"{run_dir} is in use by another fastdto.train process; wait for it to end, "
                         f"or use another --out") from None
    for stale in run_dir.glob(".*.tmp*"):
        stale.unlink(missing_ok=True)
    return fh


def run_one(recipe: dict, seed: int, out: Path, *, epochs: int, device: torch.device,
            batch_size: int, eval_samples: int = EVAL_SAMPLES, force: bool = False,
            threads: int | None = None, stop=None, progress_interval: float = PROGRESS_SECONDS,
            log_every: int = LOG_EVERY, data_root: str | None = None, interrupt_at: int | None = None,
            stream=None) -> dict | None:
    """Train (or resume, or skip) one run; returns its result dict (None when skipped).

    Raises :class:`_Stop` after checkpointing when ``stop.signum`` becomes non-zero.
    """
    from .nn import build_model

    stream = stream or sys.stdout
    name = recipe["name"]
    run_dir = Path(out) / name / f"seed{seed}"
    result_path = run_dir / RESULT
    label = f"{name} seed{seed}"
    run_settings = {"batch_size": batch_size, "log_every": log_every, "eval_samples": eval_samples}
    earlier_eval_samples = None  # set when only --eval-samples differs from a finished run's
    if not force and result_path.exists():
        try:
            prev = json.loads(result_path.read_text())
        except (OSError, ValueError):
            prev = None
        prev = prev if isinstance(prev, dict) else {}  # unreadable: evaluated again from the checkpoint
        if prev.get("epochs") == epochs:
            # Results written before recipe_settings / run_settings existed are compared on what they have.
            settings = prev.get("recipe_settings", _json_roundtrip(_comparable(recipe)))
            before = prev.get("run_settings", {"batch_size": prev.get("batch_size")})
            if settings != _json_roundtrip(_comparable(recipe)) or any(
                    before.get(k, run_settings[k]) != run_settings[k] for k in ("batch_size", "log_every")):
                raise UsageError(f"{result_path} was made with a different recipe, batch size or --log-every; "
                                 f"use --force to redo it, or another --out")
            if before.get("eval_samples", eval_samples) == eval_samples:
                print(f"{label}: finished already ({result_path}); skipped (--force to redo)",
                      file=stream, flush=True)
                return None
            # only --eval-samples changed: the final checkpoint is evaluated again below
            earlier_eval_samples = before.get("eval_samples", prev.get("eval_samples"))
    t_wall = time.perf_counter()

    try:
        train_set = _load_dataset(recipe, "train", data_root)
        test_set = _load_dataset(recipe, "test", data_root)
    except FileNotFoundError as exc:
        raise UsageError(f"data for {recipe['dataset']!r} not found: {exc} On the command line, root=DIR "
                         f"is --data-root DIR.") from None
    except (ValueError, TypeError) as exc:  # unknown dataset name or option
        raise UsageError(f"cannot load dataset {recipe['dataset']!r}: {exc}") from None
    if len(train_set) == 0:
        raise UsageError(f"the training split of {recipe['dataset']!r} is empty")
    if len(test_set) < MIN_EVAL_SAMPLES:
        raise UsageError(f"the test split of {recipe['dataset']!r} has {len(test_set)} examples; the final "
                         f"evaluation needs at least {MIN_EVAL_SAMPLES}")
    if int(train_set.input_dim) != int(recipe["input_dim"]):
        raise UsageError(f"recipe {name!r} says input_dim = {recipe['input_dim']} but dataset "
                         f"{recipe['dataset']!r} has input_dim = {train_set.input_dim}")
    train_set = train_set.to(device)
    test_set = test_set.to(device)

    ckpt_path, log_path = run_dir / CHECKPOINT, run_dir / LOG
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_run_dir(run_dir)  # held while this process works on the run
    old_threads = torch.get_num_threads()
    try:
        if force:
            for p in (ckpt_path, result_path, log_path):
                p.unlink(missing_ok=True)
        torch.manual_seed(seed)
        model = build_model(recipe).to(device)
        n_threads = threads or auto_threads(model, batch_size, device)
        torch.set_num_threads(n_threads)
        tr = Trainer(model, train_set, batch_size=batch_size, optimizer=recipe["optimizer"]["name"],
                     lr=recipe["optimizer"]["lr"], seed=seed, device=device, log_every=log_every)
        tr.interrupt_at = interrupt_at
        meta = {"recipe": recipe, "device": str(device), "threads": n_threads, "log_every": log_every}
        if ckpt_path.exists():
            try:
                sd = torch.load(ckpt_path, map_location=device, weights_only=False)
            except Exception as exc:  # noqa: BLE001 - a damaged file is a user-level problem
                raise UsageError(f"cannot read checkpoint {ckpt_path}: {exc}; use --force") from None
            if not isinstance(sd, dict) or not tr.state_dict().keys() | {"recipe"} <= sd.keys():
                raise UsageError(f"{ckpt_path} is not a fastdto checkpoint; use --force")
            if (_comparable(sd.get("recipe", {})) != _comparable(recipe) or sd.get("batch_size") != batch_size
                    or sd.get("log_every", log_every) != log_every):
                raise UsageError(f"{ckpt_path} was made with a different recipe, batch size or --log-every; "
                                 f"use --force to start over")
            if sd.get("seed", seed) != seed:  # a copied checkpoint would pass for another seed's run
                raise UsageError(f"{ckpt_path} belongs to seed {sd.get('seed')}, not seed {seed}; "
                                 f"use --force to start over")
            if sd["epoch"] > epochs or (sd["epoch"] == epochs and sd["batch_in_epoch"] > 0):
                raise UsageError(f"{ckpt_path} is at epoch {sd['epoch']}, beyond --epochs {epochs}; "
                                 f"use --force to start over")
            try:
                tr.load_state_dict(sd)
            except (RuntimeError, KeyError, ValueError, TypeError) as exc:  # e.g. other layer shapes
                raise UsageError(f"cannot resume from {ckpt_path}: {str(exc).splitlines()[0]}; use --force") from None
            if tr.epoch < epochs:
                print(f"{label}: resuming at epoch {tr.epoch} (step {tr.step})", file=stream, flush=True)
        if earlier_eval_samples is not None and tr.epoch == epochs:
            # Keep the earlier evaluation beside the new one rather than overwrite it.
            kept = run_dir / f"result_eval{earlier_eval_samples}.json"
            os.replace(result_path, kept)
            print(f"{label}: trained already; evaluating the final checkpoint again on {eval_samples} samples "
                  f"(the evaluation on {earlier_eval_samples} is kept as {kept.name})", file=stream, flush=True)
        elif tr.epoch == epochs and tr.step > 0:
            print(f"{label}: trained already (epoch {epochs}); evaluating the final checkpoint", file=stream, flush=True)
        if result_path.exists() and tr.epoch < epochs:
            if tr.step == 0:  # no checkpoint: training would start a new run beside the old one's result
                raise UsageError(f"{result_path} has no checkpoint to continue from ({CHECKPOINT} is missing); "
                                 f"use --force to start over, or another --out")
            # Training goes on past a finished result: keep it, but not as this run's result, which
            # would otherwise describe a model and log that no longer exist once this is interrupted.
            os.replace(result_path, run_dir / f"result_step{tr.step}.json")
        # log.jsonl mirrors the checkpoint's history (drops checks made after the checkpoint)
        atomic_text(log_path, "".join(json.dumps(e) + "\n" for e in tr.history))
        writer = _tensorboard(run_dir)
        log_fh = open(log_path, "a")

        def on_log(entry):
            log_fh.write(json.dumps(entry) + "\n")
            log_fh.flush()
            if writer is not None:
                for k in ("loss", "rec", "kl", "L_KL", "L_KL_active", "delta_KL", "n_active"):
                    if entry.get(k) is not None:
                        writer.add_scalar(k, entry[k], entry["step"])

        tr.on_log = on_log
        try:
            if tr.epoch < epochs:
                print(f"{label}: training {recipe['model']} on {recipe['dataset']} for {epochs} epochs "
                      f"({tr.batches_per_epoch} batches of {batch_size}) on {device}, "
                      f"{n_threads} thread(s)", file=stream, flush=True)
            if tr.step == 0 and not tr.history:
                tr.log()
            progress = _Progress(label, epochs, progress_interval, tr.step, stream) if progress_interval > 0 else None
            while tr.epoch < epochs:
                finished = tr.train_epoch(stop=stop, progress=progress)
                tr.save(ckpt_path, meta)
                if not finished:
                    print(f"{label}: interrupted at step {tr.step}; checkpoint saved to {ckpt_path}",
                          file=stream, flush=True)
                    raise _Stop(stop.signum)
            history = list(tr.history)
            if not history or history[-1]["step"] != tr.step:
                history.append(tr.log(final=True))
        finally:
            log_fh.close()
            if writer is not None:
                writer.close()

        t_eval = time.perf_counter()
        res = evaluate_run(model, test_set, history, eval_samples)
        result = {
            "recipe": name, "recipe_settings": _comparable(recipe), "dataset": recipe["dataset"],
            "model": recipe["model"],
            "latent_dim": recipe["latent_dim"], "seed": seed, "epochs": epochs, "steps": tr.step,
            "batch_size": batch_size, "run_settings": run_settings, "optimizer": recipe["optimizer"]["name"],
            "lr": recipe["optimizer"]["lr"], "beta": recipe.get("beta"), "loss": recipe["loss"],
            "final_train_loss": {k: history[-1][k] for k in ("loss", "rec", "kl")},
            **res,
            "train_time_s": round(tr.train_time, 3),
            "eval_time_s": round(time.perf_counter() - t_eval, 3),
            "wall_time_s": round(time.perf_counter() - t_wall, 3),
            "device": str(device), "threads": n_threads, "torch_version": torch.__version__,
        }
        atomic_json(result_path, result)
        print(f"{label}: done in {_fmt_time(result['wall_time_s'])}: DtO {result['dto']:.3f} "
              f"(active {result['n_active']}/{recipe['latent_dim']}), disentanglement "
              f"{_fmt_optional(result['disentanglement'], '.3f')}, "
              f"polarized {_fmt_optional(result['polarized_fraction'], '.1%')}",
              file=stream, flush=True)
        return result
    finally:
        torch.set_num_threads(old_threads)
        lock.close()


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - tensorboard is optional
        return None
    try:
        return SummaryWriter(str(run_dir / "tb"))
    except Exception:  # noqa: BLE001
        return None


# ----------------------------------------------------------------------------------------------
# command line


class _StopFlag:
    def __init__(self):
        self.signum = 0

    def handler(self, signum, frame):
        if self.signum:  # second signal: give up at once
            raise KeyboardInterrupt
        self.signum = signum


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m fastdto.train",
        description="Train the paper's models from recipes and evaluate DtO, disentanglement and "
                    "the polarised regime.  One folder per run: OUT/<recipe>/seed<k>/.")
    p.add_argument("recipes", nargs="*", metavar="RECIPE",
                   help="recipe names (see fastdto.recipes.recipe_names())")
    p.add_argument("--recipe", action="append", default=[], metavar="PATH",
                   help="a recipe file (repeatable)")
    p.add_argument("--seeds", default="0", help="seeds: a range 0-9, a list 0,3,5, or both (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--out", default="runs", help="output folder (default runs/)")
    p.add_argument("--force", action="store_true", help="redo finished runs, ignore checkpoints")
    p.add_argument("--eval-samples", type=int, default=EVAL_SAMPLES,
                   help="held-out points for the final evaluation (default 10000)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default: 1 for tiny models, torch's default otherwise)")
    p.add_argument("--log-every", type=int, default=LOG_EVERY, help=f"batches between logged checks of the losses, KL terms and Delta_KL (default {LOG_EVERY})")
    p.add_argument("--progress-every", type=float, default=PROGRESS_SECONDS,
                   help=f"seconds between progress lines (default {PROGRESS_SECONDS:g}; 0: none)")
    p.add_argument("--data-root", default=None, help="folder of the MNIST or Fashion-MNIST IDX files (root= of fastdto.data.load)")
    p.add_argument("--interrupt-at", type=int, default=None, help=argparse.SUPPRESS)  # tests
    return p


def _resolve_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"bad --device {name!r}: use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda") or (dev.type == "cpu" and dev.index not in (None, 0)):
        raise UsageError(f"bad --device {name!r}: use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but CUDA is not available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                         f"numbered from 0")
    return dev


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0, 2 on usage errors, 130/143 on signals)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its message
        return int(exc.code or 0)
    err = sys.stderr

    def fail(msg: str) -> int:
        print(f"fastdto.train: error: {msg}", file=err, flush=True)
        return 2

    from .recipes import load_recipe

    try:
        if not args.recipes and not args.recipe:
            raise UsageError("no recipe given (name one, or use --recipe PATH)")
        for opt in ("epochs", "batch_size", "eval_samples", "log_every", "threads"):
            v = getattr(args, opt)
            if v is not None and v <= 0:
                raise UsageError(f"--{opt.replace('_', '-')} must be positive, got {v}")
        from .dto import MAX_THREADS  # the engine's limit, also the package's for every thread count
        if args.threads is not None and args.threads > MAX_THREADS:
            raise UsageError(f"--threads must be at most {MAX_THREADS}, got {args.threads}")
        if not (args.progress_every >= 0 and math.isfinite(args.progress_every)):
            raise UsageError(f"--progress-every must be a number of seconds >= 0 (0: none), got {args.progress_every}")
        if not args.out:
            raise UsageError("--out must name a folder")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise UsageError(f"--out {args.out}: exists and is not a folder")
        if args.eval_samples < MIN_EVAL_SAMPLES:
            raise UsageError(f"--eval-samples must be at least {MIN_EVAL_SAMPLES}, got {args.eval_samples}")
        seeds = parse_seeds(args.seeds)
        device = _resolve_device(args.device)
        recipes = [load_recipe(r) for r in list(args.recipes) + list(args.recipe)]
    except (UsageError, ValueError) as exc:
        return fail(str(exc))

    stop = _StopFlag()
    installed = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            installed[sig] = signal.signal(sig, stop.handler)
    out = Path(args.out)
    status = 0
    try:
        for recipe in recipes:
            epochs = args.epochs or recipe["training"]["epochs"]
            batch_size = args.batch_size or recipe["training"]["batch_size"]
            for seed in seeds:
                run_one(recipe, seed, out, epochs=epochs, device=device, batch_size=batch_size,
                        eval_samples=args.eval_samples, force=args.force, threads=args.threads,
                        stop=stop, progress_interval=args.progress_every, log_every=args.log_every,
                        data_root=args.data_root, interrupt_at=args.interrupt_at)
                if stop.signum:
                    raise _Stop(stop.signum)
    except _Stop as exc:
        status = 128 + int(exc.signum)
    except KeyboardInterrupt:
        status = 130
    except UsageError as exc:
        status = fail(str(exc))
    except (FloatingPointError, OSError) as exc:  # diverged run, unwritable --out, full disk
        print(f"fastdto.train: error: {exc}", file=err, flush=True)
        status = 1
    finally:
        for sig, old in installed.items():
            signal.signal(sig, old)
    return status


if __name__ == "__main__":
    sys.exit(main())
