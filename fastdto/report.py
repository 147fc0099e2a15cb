"""Reproduction report: ``python -m fastdto.report RUNS_DIR [--out DIR]``.

Reads every ``RUNS_DIR/<recipe>/seed<k>/result.json`` written by ``python -m fastdto.train`` and writes
``report.md`` with PNG figures next to it:

- Table 2: DtO and disentanglement per dataset and variant, mean ± std over seeds, beside the paper's
  numbers; a dagger marks our means outside the paper's mean ± std (widened to ± 0.005, the rounding
  of the published two decimals).
- Table 1: the polarised fraction of training time (beta-VAE, dataset latent size and 10 latents).
- Figure 4: DtO against disentanglement, one point per evaluation (runs trained further keep their earlier
  results as ``result_step<N>.json``), coloured by epochs, with Pearson's r.
- Latent traversals of the lowest-DtO beta-VAE/VAE run of each image task, and singular-value spectra.
- Every assumption made where the paper is silent.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from importlib import resources
from pathlib import Path

import numpy as np

from ._io import atomic_text

VARIANTS = ["beta-vae", "vae", "ae", "beta-vae-sigma"]
PAPER_KEYS = {"beta-vae": "beta_vae", "vae": "vae", "ae": "ae", "beta-vae-sigma": "beta_vae_sigma"}
DATASET_KEYS = {"dsprites": "dsprites", "synth-lin": "synth_lin", "synth-nonlin": "synth_nonlin",
                "mnist": "mnist", "fashion-mnist": "fashion_mnist"}
ROUNDING = 0.005

ASSUMPTIONS = [
    "Architectures, optimisers, learning rates, epochs and beta follow the supplement as quoted by a public "
    "reproduction (not verified against the supplement itself); batch size 256 and the losses (Bernoulli for "
    "binary images, squared error for the synthetic tasks) are our choices. Each recipe's [provenance] table "
    "says which value is which.",
    "DtO is computed at the posterior means of up to 10,000 held-out (test split) points, on all latents "
    "('DtO') and on the active ones ('active': std of mu_j > 0.5). The paper does not say which points or "
    "whether passive latents enter; its Table 2 is compared with our all-latent column.",
    "The nearest signed permutation is exact (Hungarian assignment); it equals the paper's MILP optimum.",
    "The disentanglement score is our reconstruction of the supplement's adjusted MIG (1-D 5-NN probes, 5-fold "
    "cross-validation, best minus second-best latent, mean over factors); see fastdto.metrics.disentanglement_score.",
    "Random decoders: PyTorch's default initialisation of the AE recipe's decoder, latents z ~ N(0, I) "
    "({random_settings}). The paper's baseline construction is unknown.",
    "Delta_KL is evaluated every 500 batches on a fixed 10,000-point training subset, the active set recomputed "
    "at each check; the polarised fraction counts training steps from 0 to the end. A polarised fraction "
    "counts as disagreeing with the paper's when it is more than 5 percentage points away (the paper gives "
    "no spread).",
    "dSprites is generated procedurally (same factor grid as the original file, sprite shapes drawn by us); "
    "synthetic tasks use fixed seeds (see fastdto.data).",
]


def paper_tables() -> dict:
    return json.loads(resources.files("fastdto").joinpath("paper_tables.json").read_text())


#: The fields of a result.json the report reads, with their types: a file without them is skipped.
_RESULT_FIELDS = {"recipe": str, "dataset": str, "model": str, "epochs": int}


def _load_result(path: Path) -> dict | None:
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        print(f"skipping unreadable {path}: {err}", file=sys.stderr)
        return None
    if not isinstance(r, dict) or not all(isinstance(r.get(k), t) and not isinstance(r.get(k), bool)
                                          for k, t in _RESULT_FIELDS.items()):
        print(f"skipping {path}: not a fastdto.train result", file=sys.stderr)
        return None
    r["run_dir"] = str(path.parent)
    r["variant"] = r["recipe"][len(r["dataset"]) + 1:] if r["recipe"].startswith(r["dataset"] + "-") else r["model"]
    return r


def collect(runs_dir: Path) -> list[dict]:
    """Every run's final result (``result.json``)."""
    return [r for path in sorted(runs_dir.glob("*/seed*/result.json")) if (r := _load_result(path)) is not None]


def earlier_evaluations(results) -> list[dict]:
    """The evaluations a run made before it was trained further (``result_step<N>.json``: running
    ``fastdto.train`` again with more ``--epochs`` keeps the finished result under that name)."""
    found = []
    for r in results:
        for path in sorted(Path(r["run_dir"]).glob("result_step*.json")):
            e = _load_result(path)
            if e is not None and e["epochs"] < r["epochs"]:
                found.append(e)
    return found


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _stats(values):
    """(mean, population std, count) of the finite values; a cell's n says how many there were."""
    v = np.asarray([x for x in values if _finite(x)], dtype=float)
    return (float(v.mean()), float(v.std()), len(v)) if len(v) else None


def _cells(results) -> dict:
    """Runs grouped by table cell, (dataset, variant)."""
    cells = defaultdict(list)
    for r in results:
        cells[(r["dataset"], r["variant"])].append(r)
    return cells


def read_baselines(path: Path) -> dict:
    """The random-decoder entries of ``path`` (written by fastdto.reproduce) that are whole; a damaged
    file or entry is left out with a message, and fastdto.reproduce computes it again."""
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError) as err:
        print(f"ignoring unreadable {path}: {err}", file=sys.stderr)
        return {}
    if not isinstance(data, dict):
        print(f"ignoring {path}: not a table of random-decoder baselines", file=sys.stderr)
        return {}
    good = {}
    for ds, b in data.items():
        if (isinstance(b, dict) and all(isinstance(b.get(k), (int, float)) for k in ("dto", "std"))
                and isinstance(b.get("per_decoder"), list) and isinstance(b.get("settings", {}), dict)):
            good[ds] = b
        else:
            print(f"ignoring the damaged entry {ds!r} of {path}", file=sys.stderr)
    return good


def _baseline_stats(b: dict) -> tuple:
    """A random-decoder entry as (mean, std, count), like _stats."""
    return b["dto"], b["std"], len(b["per_decoder"])


def longest_runs(results) -> tuple[list[dict], list[dict]]:
    """Per cell (dataset, variant), the runs at the cell's largest number of epochs, and the others:
    runs of different lengths are not averaged together."""
    kept, shorter = [], []
    for rs in _cells(results).values():
        top = max(r["epochs"] for r in rs)
        for r in rs:
            (kept if r["epochs"] == top else shorter).append(r)
    return kept, shorter


def _fmt(st, pct=False):
    if st is None:
        return "–"
    m, s, n = st
    if n == 1:  # a spread of one run means nothing
        return f"{100 * m:.1f}% (n=1)" if pct else f"{m:.2f} (n=1)"
    return f"{100 * m:.1f}% ± {100 * s:.1f} (n={n})" if pct else f"{m:.2f} ± {s:.2f} (n={n})"


def _outside(ours, paper):
    if ours is None or paper is None:
        return False
    m, s = paper
    return abs(ours[0] - m) > s + ROUNDING


AE_ACTIVE_RULE = ("the 'active' rule (std of mu_j > 0.5) depends on the scale of an unregularised code and is "
                  "not meaningful for autoencoders; compare AEs on the all-latent DtO.")


def table2(results, baselines, paper) -> list[str]:
    cells = _cells(results)
    lines = ["| dataset | metric | " + " | ".join(VARIANTS) + " | random decoder |",
             "|---|---|" + "---|" * (len(VARIANTS) + 1)]
    datasets = [d for d in DATASET_KEYS if any(k[0] == d for k in cells) or d in baselines]
    for ds in datasets:
        ptab = paper["table2"].get(DATASET_KEYS[ds], {})
        for metric, key in (("DtO ↓", "dto"), ("DtO active", "dto_active"), ("Disent. ↑", "disentanglement")):
            row = [ds, metric]
            for v in VARIANTS:
                ours = _stats([r.get(key) for r in cells.get((ds, v), [])])
                pcell = ptab.get(PAPER_KEYS[v]) or {}
                pval = pcell.get("disent" if key == "disentanglement" else "dto") if key != "dto_active" else None
                mark = " †" if _outside(ours, pval) else ""
                text = _fmt(ours) + mark
                if key != "dto_active":
                    text += f"<br>paper {pval[0]:.2f} ± {pval[1]:.2f}" if pval else "<br>paper –"
                row.append(text)
            if key == "dto" and ds in baselines:
                b = baselines[ds]
                pval = (ptab.get("random_decoder") or {}).get("dto")
                ours = _baseline_stats(b)
                row.append(_fmt(ours) + (" †" if _outside(ours, pval) else "")
                           + (f"<br>paper {pval[0]:.2f} ± {pval[1]:.2f}" if pval else ""))
            else:
                row.append("–" if key == "dto" else "")
            lines.append("| " + " | ".join(row) + " |")
    if any(v == "ae" for _, v in cells):
        lines += ["", "DtO active of an AE: " + AE_ACTIVE_RULE]
    if any(ds not in baselines for ds in datasets):
        lines += ["", "Random decoders: – where none were computed (`python -m fastdto.reproduce` computes them, "
                  "`--random-decoders` per dataset, into the runs folder's `random_decoder.json`)."]
    return lines


# (applies to a disagreeing cell (dataset, variant)?, explanation)
LIKELY_CAUSES = [
    (lambda ds, v: ds.startswith("synth"),
     "Loss scale: our square loss is the per-sample sum of squared errors with beta as in the recipes; the "
     "paper's exact scaling (sum or mean, decoder variance) is unknown, and it sets how strongly the KL noise "
     "pushes towards orthogonality (a larger effective beta aligns faster)."),
    (lambda ds, v: ds == "synth-nonlin",
     "Data: the paper's Synth. Non-Lin. network is unknown; ours is a 2-10-6 tanh network with standard normal "
     "weights from a fixed seed (fastdto.data.synth), so its curvature, output scale and the angle between its "
     "principal directions and the factor axes (see above) differ from the paper's."),
    (lambda ds, v: v == "beta-vae-sigma",
     "beta-VAE_Sigma: its objective is unchanged by rotations of the latent space, so nothing pulls its "
     "decoder towards the axes or away from them; where it ends up depends on the training dynamics (Adagrad "
     "scales each parameter on its own, and the Cholesky factor starts near diagonal, as a diagonal "
     "posterior would), which the paper does not describe."),
    (lambda ds, v: v == "random",
     "Random decoders: the paper does not say how its untrained decoders were initialised or at which latents "
     "they were evaluated; ours use PyTorch's default initialisation and z ~ N(0, I), and DtO of an untrained "
     "network depends on both (its singular directions are fixed by the weights' distribution)."),
    (lambda ds, v: v != "random",
     "Unknowns of the training setup: the batch size (the recipes assume 256; a smaller one gives more "
     "optimiser steps in the same epochs, and a run still moving at the recipe's length stops short of "
     "where it would end: train longer with --epochs to see whether a cell is still moving), the "
     "initialisation, the number of restarts, and which points DtO is evaluated at."),
    (lambda ds, v: v == "ae", "AE: " + AE_ACTIVE_RULE),
]


def discrepancies(results, paper, baselines=None) -> list[str]:
    """Cells whose mean falls outside the paper's interval, with the likely causes we know of."""
    cells = _cells(results)
    lines, disagreeing = [], set()
    for ds, b in sorted((baselines or {}).items()):
        p = ((paper["table2"].get(DATASET_KEYS.get(ds, ""), {}) or {}).get("random_decoder") or {}).get("dto")
        if _outside(_baseline_stats(b), p):
            lines.append(f"- {ds} random decoders: DtO {b['dto']:.2f} ± {b['std']:.2f} (n={len(b['per_decoder'])}) "
                         f"against the paper's {p[0]:.2f} ± {p[1]:.2f}")
            disagreeing.add((ds, "random"))
    for (ds, v), rs in sorted(cells.items()):
        before = len(lines)
        pcell = (paper["table2"].get(DATASET_KEYS.get(ds, ""), {}) or {}).get(PAPER_KEYS.get(v, ""), None) or {}
        for key, pkey, label in (("dto", "dto", "DtO"), ("disentanglement", "disent", "disentanglement")):
            ours = _stats([r.get(key) for r in rs])
            if _outside(ours, pcell.get(pkey)):
                p = pcell[pkey]
                lines.append(f"- {ds} {v}: {label} {ours[0]:.2f} ± {ours[1]:.2f} (n={ours[2]}) against the "
                             f"paper's {p[0]:.2f} ± {p[1]:.2f}")
        pol = _stats([r.get("polarized_fraction") for r in rs if v in ("beta-vae", "beta-vae-d10")])
        p1 = paper["table1_polarized_fraction_percent"].get(DATASET_KEYS.get(ds, ""), {})
        ref = p1.get("dep" if v == "beta-vae" else "10")
        if pol is not None and ref is not None and abs(100 * pol[0] - ref) > 5:
            lines.append(f"- {ds} {v}: polarised fraction {100 * pol[0]:.1f}% against the paper's {ref}%")
        if len(lines) > before:
            disagreeing.add((ds, v))
    if lines:
        causes = [text for applies, text in LIKELY_CAUSES if any(applies(ds, v) for ds, v in disagreeing)]
        short = sorted({f"{r['recipe']} ({r['epochs']} of {planned})" for (ds, v), rs in cells.items()
                        if (ds, v) in disagreeing for r in rs
                        if (planned := _recipe_epochs(r)) is not None and r["epochs"] < planned})
        if short:
            causes.insert(0, "Shorter training than the recipe (epochs trained of the recipe's): " + ", ".join(short)
                          + ". These runs stopped early, so they show where training stood, not where it ends.")
        lines += ["", "What might explain them (nothing was tuned to match):", ""] + [f"- {c}" for c in causes]
    return lines


def _recipe_epochs(result: dict) -> int | None:
    """The epochs the run's recipe asks for (``--epochs`` may have overridden them)."""
    epochs = ((result.get("recipe_settings") or {}).get("training") or {}).get("epochs")
    return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None


def table1(results, paper) -> list[str]:
    lines = ["| dataset | beta-VAE (dataset latents) | paper | beta-VAE (10 latents) | paper |", "|---|---|---|---|---|"]
    p1 = paper["table1_polarized_fraction_percent"]
    for ds, key in DATASET_KEYS.items():
        dep = _stats([r.get("polarized_fraction") for r in results if r["dataset"] == ds and r["variant"] == "beta-vae"])
        d10 = _stats([r.get("polarized_fraction") for r in results if r["dataset"] == ds and r["variant"] == "beta-vae-d10"])
        if dep is None and d10 is None:
            continue
        lines.append(f"| {ds} | {_fmt(dep, pct=True)} | {p1[key]['dep']}% | {_fmt(d10, pct=True)} | {p1[key]['10']}% |")
    return lines if len(lines) > 2 else ["(no beta-VAE runs)"]


def generator_alignment(results) -> list[str]:
    """DtO of each synthetic task's own generator x = f(v) at its test factors. A beta-VAE aligns its
    decoder with the data's local principal directions; its code can only be disentangled to the extent
    that those directions are the factor axes, which this measures (0: they are)."""
    from . import evaluate
    from .data import synth
    from .train import load_run

    lines = []
    for ds in sorted({r["dataset"] for r in results} & {"synth-lin", "synth-nonlin"}):
        first = next(r for r in results if r["dataset"] == ds)
        settings = first.get("recipe_settings")  # the data options: scale ratio, weight seed
        if settings is None:  # results written before recipe_settings: the checkpoint has the recipe
            try:
                settings = load_run(first["run_dir"])[1]
            except Exception as err:  # noqa: BLE001 - a missing or damaged checkpoint skips this line only
                lines.append(f"- {ds}: skipped (cannot read its checkpoint: {err})")
                continue
        opts = dict(settings.get("data") or {})
        f, _ = synth.generator(ds, opts.get("scale_ratio"), opts.get("weight_seed"))
        res = evaluate(f, synth.sample_factors(10_000, synth.TEST_SEED))
        lines.append(f"- {ds}: DtO of the generator itself {res.dto:.2f} ± {res.std:.2f} over 10,000 test factors")
    if lines:
        lines.append("")
        lines.append("A beta-VAE's decoder follows the data's local principal directions, so its disentanglement "
                     "depends on how far those lie from the factor axes: 0 means they are the axes, and the "
                     "average over random 2-D rotations is 0.55.")
    return lines


def figure4(results, out_dir: Path) -> tuple[str | None, list[str]]:
    """One point per evaluation: every run's final result and its earlier ones, so a run trained in
    stages (the paper's restarts after 10, 30 and 50 epochs) shows where it stood at each length."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Runs with 10 latents are left out: their all-latent DtO is dominated by the passive axes.
    pts = [r for r in results if _finite(r.get("disentanglement")) and _finite(r.get("dto"))
           and not r["variant"].endswith("-d10")]
    if not pts:
        return None, []
    n_d10 = len({r["run_dir"] for r in results if r["variant"].endswith("-d10")})
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    epochs = np.array([r["epochs"] for r in pts], dtype=float)
    by_epochs = epochs.min() < epochs.max()  # colour by training length only when it varies
    markers = dict(zip(VARIANTS, "osD^"))  # the variant by marker, the dataset in the legend
    sc = None
    for ds in DATASET_KEYS:
        for v in VARIANTS:
            sel = [i for i, r in enumerate(pts) if r["dataset"] == ds and r["variant"] == v]
            if not sel:
                continue
            colour = dict(c=epochs[sel], cmap="viridis", vmin=epochs.min(), vmax=epochs.max()) if by_epochs else {}
            sc = ax.scatter([pts[i]["dto"] for i in sel], [pts[i]["disentanglement"] for i in sel],
                            marker=markers[v], label=f"{ds} {v}", edgecolors="k", linewidths=0.3, **colour)
    if by_epochs:
        fig.colorbar(sc, ax=ax, label="epochs")
    ax.set_xlabel("DtO (lower: latent axes closer to singular directions)")
    ax.set_ylabel("disentanglement score")
    n_series = len(ax.get_legend_handles_labels()[1])
    # below the axes: beside the points it would sit on the colour bar
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(4, n_series))
    ax.set_title("DtO against disentanglement, one point per evaluation"
                 + ("" if by_epochs else f" ({int(epochs[0])} epochs)"), fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "figure4_dto_vs_disentanglement.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    corr = []
    groups = defaultdict(list)
    for r in pts:
        groups[(r["dataset"], r["variant"])].append(r)
    groups[("all runs", "")] = pts
    for (ds, v), rs in groups.items():
        if len(rs) >= 3 and np.std([r["dto"] for r in rs]) > 0 and np.std([r["disentanglement"] for r in rs]) > 0:
            c = np.corrcoef([r["dto"] for r in rs], [r["disentanglement"] for r in rs])[0, 1]
            n_runs = len({r["run_dir"] for r in rs})
            what = (_count(len(rs), "run") if n_runs == len(rs)
                    else f"{_count(len(rs), 'evaluation')} of {_count(n_runs, 'run')}")
            corr.append(f"- {f'{ds} {v}'.strip()}: Pearson r = {c:+.2f} over {what}")
    if n_d10:
        corr.append("")
        corr.append(f"Left out: the {_count(n_d10, 'run')} with 10 latents (Table 1), whose all-latent DtO is "
                    "dominated by their passive axes.")
    if len({r["run_dir"] for r in pts}) < len(pts):
        corr.append("")
        corr.append("Evaluations of one run at several training lengths are not independent samples, unlike "
                    "the paper's separate restarts: read r as descriptive.")
    return "figure4_dto_vs_disentanglement.png", corr


def spectra_and_traversals(results, out_dir: Path, n_points: int = 1000, data_root: str | None = None) -> list[str]:
    """Mean singular values of the best run per cell, and traversals of the best image-task run."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.ticker import MaxNLocator
    from .dto import evaluate
    from .train import _load_dataset, _posterior_means, load_run

    best = {}
    for r in results:
        k = (r["dataset"], r["variant"])
        if (_finite(r.get("dto")) and (Path(r["run_dir"]) / "checkpoint.pt").exists()
                and (k not in best or r["dto"] < best[k]["dto"])):
            best[k] = r
    if not best:
        return []
    lines = []
    by_ds = defaultdict(list)
    for (ds, v), r in sorted(best.items()):
        by_ds[ds].append((v, r))
    fig, axes = plt.subplots(1, len(by_ds), figsize=(4 * len(by_ds), 3.4), squeeze=False)
    mus = {}
    for ax, (ds, runs) in zip(axes[0], by_ds.items()):
        test = None
        for v, r in runs:
            model, recipe = load_run(r["run_dir"])
            if test is None:  # the recipe's own data options (and the user's data root)
                test = _load_dataset(recipe, "test", data_root)
                idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:n_points]
            mu = _posterior_means(model, test, idx)
            mus[(ds, v)] = (model, mu)
            sv = evaluate(model.decoder, mu).singular_values.mean(0).numpy()
            ax.semilogy(np.arange(1, len(sv) + 1), np.maximum(sv, 1e-12), "o-", label=f"{v} (seed {r['seed']})")
        ax.set_title(ds)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("singular value index")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("mean singular value of J")
    fig.tight_layout()
    fig.savefig(out_dir / "singular_value_spectra.png", dpi=110)
    plt.close(fig)
    lines.append("![singular-value spectra](singular_value_spectra.png)")

    for ds in ("dsprites", "mnist", "fashion-mnist"):
        cand = [(v, mus[(ds, v)]) for v in ("beta-vae", "vae") if (ds, v) in mus]
        if not cand:
            continue
        v, (model, mu) = cand[0]
        side = int(round(math.sqrt(model.decoder(mu[:1]).numel())))
        order = torch.argsort(mu.std(0), descending=True)
        steps = torch.linspace(-2.5, 2.5, 9)
        rows = []
        for j in order.tolist():
            z = mu.mean(0).repeat(len(steps), 1)
            z[:, j] = mu[:, j].mean() + steps * mu[:, j].std()
            with torch.no_grad():
                rows.append(model.decoder(z).reshape(len(steps), side, side))
        grid = torch.cat([torch.cat(list(r), dim=1) for r in rows], dim=0).numpy()
        plt.imsave(out_dir / f"traversals_{ds}.png", grid, cmap="gray", vmin=0, vmax=1)
        lines.append(f"Latent traversals, {ds} {v} (rows: latents by decreasing std of mu; columns: "
                     f"mean ± 2.5 std): ![traversals](traversals_{ds}.png)")
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def write_report(runs_dir: Path, out_dir: Path, data_root: str | None = None) -> Path:
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: no such folder (give the --out folder of python -m fastdto.train)")
    results, shorter = longest_runs(collect(runs_dir))
    if not results:
        hint = (" (this looks like one recipe's folder: give its parent)"
                if any(runs_dir.glob("seed*/result.json")) else "")
        raise FileNotFoundError(f"no run results (*/seed*/result.json) under {runs_dir}{hint}")
    baselines = read_baselines(runs_dir / "random_decoder.json")
    paper = paper_tables()
    out_dir.mkdir(parents=True, exist_ok=True)
    md = ["# fastdto reproduction report", "",
          f"{_count(len(results), 'run')} from `{runs_dir}`. Ours: mean ± std over seeds (population std); paper: Rolinek, "
          "Zietlow and Martius, CVPR 2019, Tables 1 and 2. † marks our mean outside the paper's mean ± std "
          f"(± {ROUNDING} rounding allowance). Nothing is tuned to match.", "",
          "## Table 2: DtO and disentanglement", ""]
    md += table2(results, baselines, paper)
    md += ["", "Epochs per cell: " + ", ".join(sorted({f"{r['recipe']} {r['epochs']}" for r in results})) + "."]
    if shorter:
        md += ["Left out, as shorter than their cell's longest runs: " + ", ".join(
            sorted(f"{r['recipe']} seed {r['seed']} ({r['epochs']} epochs)" for r in shorter)) + "."]
    md += ["",
           "## Table 1: polarised regime (share of training with Delta_KL < 3% until the end)", ""]
    md += table1(results, paper)
    gen = generator_alignment(results)
    if gen:
        md += ["", "## Synthetic tasks: how the factors sit in their data", ""] + gen
    disc = discrepancies(results, paper, baselines)
    if disc:
        md += ["", "## Where we disagree with the paper", ""] + disc
    fig, corr = figure4(results + shorter + earlier_evaluations(results + shorter), out_dir)
    if fig:
        md += ["", "## Figure 4: DtO against disentanglement", "", f"![figure 4]({fig})", ""] + corr
    try:
        extra = spectra_and_traversals(results, out_dir, data_root=data_root)
    except Exception as err:  # figures from checkpoints are extras; the tables stand without them
        extra = [f"(spectra and traversals skipped: {err})"]
    if extra:
        title = "Spectra and traversals" if any("traversals" in e for e in extra[1:]) else "Singular-value spectra"
        md += ["", f"## {title}", ""] + extra
    settings = sorted({(str(b.get("settings", {}).get("n_samples", "?")), str(b.get("settings", {}).get("n_decoders", "?")))
                       for b in baselines.values()})
    random_settings = "; ".join(f"{n} points, {k} decoders" for n, k in settings) or "none computed"
    md += ["", "## Assumptions where the paper is silent", ""] + [
        f"- {a}".replace("{random_settings}", random_settings) for a in ASSUMPTIONS]
    path = out_dir / "report.md"
    atomic_text(path, "\n".join(md) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastdto.report", description=__doc__.splitlines()[0])
    p.add_argument("runs_dir", help="directory of runs written by python -m fastdto.train")
    p.add_argument("--out", default=None, help="output directory (default: RUNS_DIR)")
    p.add_argument("--data-root", default=None, help="directory with the MNIST-family IDX files")
    args = p.parse_args(argv)
    runs = Path(args.runs_dir)
    try:
        path = write_report(runs, Path(args.out) if args.out else runs, args.data_root)
    except FileNotFoundError as err:
        print(f"fastdto.report: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out a file, or a folder that cannot be written
        print(f"fastdto.report: cannot write the report: {err}", file=sys.stderr)
        return 2
    print(path.read_text().split("## Figure 4")[0])
    print(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
