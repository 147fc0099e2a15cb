"""Reproduce the paper's experiments: ``python -m fastdto.reproduce [options]``.

Trains every recipe of the chosen tasks (skipping finished runs, resuming interrupted ones), computes
the random-decoder baselines, then writes the report (:mod:`fastdto.report`). Cells follow Table 2
(the variants the paper reports per dataset) plus the beta-VAE runs with 10 latents of Table 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._io import atomic_json

TASKS = {
    "synth-lin": ["beta-vae", "ae", "beta-vae-sigma", "beta-vae-d10"],
    "synth-nonlin": ["beta-vae", "ae", "beta-vae-sigma", "beta-vae-d10"],
    "fashion-mnist": ["vae", "ae", "beta-vae-sigma", "beta-vae", "beta-vae-d10"],
    "mnist": ["vae", "ae", "beta-vae-sigma", "beta-vae", "beta-vae-d10"],
    "dsprites": ["beta-vae", "vae", "ae", "beta-vae-sigma", "beta-vae-d10"],
}
GROUPS = {"synth": ["synth-lin", "synth-nonlin"], "fashion_mnist": ["fashion-mnist"], "all": list(TASKS)}
BASELINE_FILE = "random_decoder.json"
RANDOM_DECODER_POINTS = 1000  # latents z ~ N(0, I) per untrained decoder


def expand_tasks(spec: str) -> list[str]:
    out: list[str] = []
    for part in spec.split(","):
        part = part.strip()
        names = GROUPS.get(part) or GROUPS.get(part.replace("-", "_")) or ([part] if part in TASKS else None)
        if names is None:
            raise ValueError(f"unknown task {part!r}; choose from {sorted(set(TASKS) | set(GROUPS))}")
        out += [n for n in names if n not in out]
    return out


def random_baselines(datasets: list[str], out: Path, n_decoders: int) -> dict:
    """Random-decoder DtO per dataset (the AE recipe's decoder architecture), cached in OUT."""
    from .metrics import random_decoder_baseline
    from .report import read_baselines

    path = out / BASELINE_FILE
    cache = read_baselines(path)  # damaged entries are left out, so computed again below
    for ds in datasets:
        settings = (cache.get(ds) or {}).get("settings", {})
        if (settings.get("recipe"), settings.get("n_decoders"), settings.get("n_samples")) != (
                f"{ds}-ae", n_decoders, RANDOM_DECODER_POINTS):
            cache[ds] = random_decoder_baseline(f"{ds}-ae", n_decoders=n_decoders, n_samples=RANDOM_DECODER_POINTS)
            print(f"random decoders, {ds}: DtO {cache[ds]['dto']:.3f} ± {cache[ds]['std']:.3f}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_json(path, cache, indent=1)
    return cache


def _seeds_argument(text: str) -> str:
    """--seeds N means seeds 0..N-1; anything else is train's own form. Returns train's form."""
    from .train import UsageError, parse_seeds
    if text.strip().isdigit():
        if int(text) < 1:
            raise ValueError("--seeds must be >= 1")
        text = f"0-{int(text) - 1}"
    try:
        return ",".join(map(str, parse_seeds(text)))
    except UsageError as err:
        raise ValueError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m fastdto.reproduce", description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="synth", help="synth | fashion-mnist | dsprites | mnist | synth-lin | "
                   "synth-nonlin | all, comma-separated (default: synth)")
    p.add_argument("--variants", default=None, help="restrict to these variants, e.g. beta-vae,ae")
    p.add_argument("--seeds", default="10", help="N: seeds 0..N-1 per cell (default 10); or the seeds themselves "
                   "as python -m fastdto.train takes them, e.g. 3-5 or 0,2")
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", default="runs", help="runs directory (default: runs/)")
    p.add_argument("--data-root", default=None, help="directory with the MNIST-family IDX files")
    p.add_argument("--random-decoders", type=int, default=10, help="untrained decoders per dataset (default 10)")
    p.add_argument("--no-report", action="store_true", help="train only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        datasets = expand_tasks(args.tasks)
        variants = None if args.variants is None else [v.strip() for v in args.variants.split(",")]
        if variants is not None:
            unknown = sorted(set(variants) - {v for vs in TASKS.values() for v in vs})
            if unknown:
                known = sorted({v for vs in TASKS.values() for v in vs})
                raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(known)}")
        seeds = _seeds_argument(args.seeds)
        if args.random_decoders < 1:  # checked here, not after the training
            raise ValueError("--random-decoders must be >= 1")
        if args.epochs is not None and args.epochs < 1:
            raise ValueError("--epochs must be >= 1")
        if Path(args.out).exists() and not Path(args.out).is_dir():
            raise ValueError(f"--out {args.out} exists and is not a folder")
        from .train import UsageError, _resolve_device
        try:
            _resolve_device(args.device)  # before the random decoders and the first cell, not inside each
        except UsageError as err:
            raise ValueError(str(err)) from None
    except ValueError as err:
        print(f"fastdto.reproduce: {err}", file=sys.stderr)
        return 2
    from . import train

    cells = [(ds, v) for ds in datasets for v in TASKS[ds] if variants is None or v in variants]
    for ds in datasets:
        if not any(c[0] == ds for c in cells):
            print(f"fastdto.reproduce: warning: no cell of {ds} among --variants {args.variants} "
                  f"(its variants: {', '.join(TASKS[ds])})", file=sys.stderr)
    if not cells:
        print("fastdto.reproduce: nothing to train", file=sys.stderr)
        return 2
    out = Path(args.out)
    failed = []  # (cell, exit status): the other cells still run, and the report shows what finished
    for ds, variant in cells:
        argv_train = [f"{ds}-{variant}", "--seeds", seeds, "--out", str(out)]
        if args.epochs is not None:
            argv_train += ["--epochs", str(args.epochs)]
        if args.device:
            argv_train += ["--device", args.device]
        if args.data_root and ds in ("mnist", "fashion-mnist"):  # dSprites is generated, synth computed
            argv_train += ["--data-root", args.data_root]
        code = train.main(argv_train)
        if code >= 128:  # interrupted by a signal: stop here (the run resumes next time)
            return code
        if code != 0:
            failed.append((f"{ds}-{variant}", code))
    random_baselines(datasets, out, args.random_decoders)
    status = 0
    if not args.no_report and len(failed) < len(cells):
        from . import report
        status = report.main([str(out)] + (["--data-root", args.data_root] if args.data_root else []))
    if failed:
        print("fastdto.reproduce: these cells failed (see the messages above): "
              + ", ".join(f"{c} (exit {code})" for c, code in failed), file=sys.stderr)
        return failed[0][1]
    return status


if __name__ == "__main__":
    sys.exit(main())
