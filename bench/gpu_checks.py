"""Every GPU check of the project in one command, with the targets of the CUDA and training issues.

Run from the repository root on a machine with an NVIDIA GPU and nvcc:

    python bench/gpu_checks.py --out gpu-checks                # all steps
    python bench/gpu_checks.py --out DIR --steps build,bench   # some of them

Steps (each logs to DIR/<step>.log; a failing step does not stop the later ones):

* ``build``: ``pip install --no-build-isolation --no-deps .`` (CUDA compiled in when nvcc is found),
  then ``fastdto.build_info()``; the GPU steps need it to report a usable device;
* ``tests``: the whole test suite (the GPU cases of tests/test_cuda.py run instead of skipping);
* ``sanitize``: tests/test_cuda.py under compute-sanitizer memcheck, racecheck, initcheck, synccheck;
* ``bench``: bench/test_bench_cuda.py (JSON in DIR/bench_cuda.json);
* ``profile``: the post-Jacobian stage of the bench (N = 100,000, n = 4096, d = 10, float32) under
  torch.profiler: GPU time per kernel (Gram, eigen route, SVD path), to see where time goes;
* ``train``: the dSprites training-epoch race of bench/test_bench_train.py (DIR/bench_train.json).

The last lines printed are a table of every measured target against its threshold. Exit status 0
only when every step ran and passed; targets missed are reported, not counted as failures (a benchmark's
own sanity checks still fail its step, e.g. fastdto's epoch slower than the DataLoader loop's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

STEPS = ("build", "tests", "sanitize", "bench", "profile", "train")
SANITIZER_TOOLS = ("memcheck", "racecheck", "initcheck", "synccheck")
ROOT = Path(__file__).resolve().parent.parent


def run_step(name: str, cmd: list[str], out: Path, env: dict | None = None, timeout: float | None = None) -> bool:
    """Runs cmd from the repository root, output to out/<name>.log (and the tail to stdout)."""
    log = out / f"{name}.log"
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
    print(f"   -> {'ok' if rc == 0 else f'FAILED ({rc})'} in {time.perf_counter() - t0:.0f} s; " + " | ".join(tail),
          flush=True)
    return rc == 0


def gpu_ready() -> tuple[bool, str]:
    probe = ("import json, fastdto, torch; i = fastdto.build_info(); "
             "i['torch_cuda'] = torch.cuda.is_available(); "
             "i['device_name'] = torch.cuda.get_device_name() if i['torch_cuda'] else None; print(json.dumps(i))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        return False, res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "fastdto does not import"
    info = json.loads(res.stdout.strip().splitlines()[-1])
    ok = bool(info["cuda"]) and info["cuda_devices"] > 0 and info["torch_cuda"]
    return ok, json.dumps(info)


def _benchmarks(path: Path) -> dict:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {b["name"]: b for b in data["benchmarks"]}


def targets(out: Path) -> list[tuple[str, str, str, str]]:
    """(target, measured, threshold, verdict) rows from the benchmark JSON files present in out."""
    rows = []

    def row(what, value, fmt, threshold, ok):
        rows.append((what, fmt.format(value), threshold, "" if ok is None else "met" if ok else "NOT met"))

    b = _benchmarks(out / "bench_cuda.json")
    info = {k: v.get("extra_info", {}) for k, v in b.items()}
    ours = info.get("test_bench_fastdto_cuda", {})
    if "gpu_ms" in ours:
        ms = ours["gpu_ms"]
        row("post-Jacobian stage (N x n x d = {N} x {n} x {d}, float32)".format(**ours), ms, "{:.2f} ms", "", None)
        copy = info.get("test_bench_copy_bandwidth_floor", {})
        if "copy_GB_per_s" in copy:
            frac = ours["bytes"] / ms / 1e6 / copy["copy_GB_per_s"]
            row("  one read of J over copy bandwidth", frac, "{:.0%}", ">= 50%", frac >= 0.5)
        svd = info.get("test_bench_torch_svd_scipy_assignment", {})
        if "extrapolated_ms" in svd:
            r = svd["extrapolated_ms"] / ms
            row("  vs torch.linalg.svd + SciPy assignment", r, "{:.0f}x", ">= 30x", r >= 30)
        eigh = info.get("test_bench_bmm_gram_eigh_fastest_assignment", {})
        if "gpu_ms" in eigh:
            r = eigh["gpu_ms"] / ms
            row("  vs bmm Gram + torch.linalg.eigh + fastdto assignment", r, "{:.1f}x", ">= 5x", r >= 5)
    solver = info.get("test_bench_solver_cuda", {})
    if "gpu_ms" in solver:
        rate = solver["N"] / (solver["gpu_ms"] / 1e3)
        row("solver alone, 10 x 10 problems per second", rate / 1e6, "{:.1f} M/s", ">= 20 M/s", rate >= 2e7)
    e2e, jac = info.get("test_bench_evaluate_end_to_end", {}), info.get("test_bench_vmap_jacfwd_jacobians_only", {})
    if "gpu_ms" in e2e and "gpu_ms" in jac:
        r = e2e["gpu_ms"] / jac["gpu_ms"]
        row("evaluate end to end / vmap(jacfwd) Jacobians alone", r, "{:.2f}x", "<= 1.15x", r <= 1.15)
    for name, bench in _benchmarks(out / "bench_train.json").items():
        x = bench.get("extra_info", {})
        if name.startswith("test_epoch_ratio") and x.get("recipe") == "dsprites-beta-vae" and x.get("device") != "cpu":
            row(f"dSprites beta-VAE epoch, batch 256 ({x['device']})", x["fastdto_s"], "{:.2f} s", "<= 5 s",
                x["fastdto_s"] <= 5)
            row("  vs DataLoader loop of the same model", x["ratio"], "{:.1f}x", ">= 3x", x["ratio"] >= 3)
    return rows


def profile_stage(N: int = 100_000, n: int = 4096, d: int = 10, repeats: int = 3) -> None:
    """Prints GPU time per kernel of dto_from_jacobians on random float32 J (CPU time where no GPU)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import fastdto
    device = "cuda" if torch.cuda.is_available() else "cpu"
    J = torch.randn(N, n, d, device=device)
    fastdto.dto_from_jacobians(J)  # warm-up: module loading, scratch allocation
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            res = fastdto.dto_from_jacobians(J)
        if device == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if device == "cuda" else "cpu_time_total"
    print(f"N x n x d = {N} x {n} x {d}, float32, {device}, {repeats} calls; svd_path {int(res.svd_path.sum())}")
    print(prof.key_averages().table(sort_by=key, row_limit=15))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-checks"), help="folder for logs and JSON")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--profile-only", action="store_true", help="only print the per-kernel profile and exit")
    ap.add_argument("--profile-n", type=int, default=100_000, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.profile_only:
        profile_stage(N=args.profile_n)
        return 0
    steps = [s for s in args.steps.split(",") if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        ap.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", CMAKE_BUILD_PARALLEL_LEVEL=str(os.cpu_count() or 2))
    if not shutil.which("nvcc") and "CUDACXX" not in env and Path("/usr/local/cuda/bin/nvcc").exists():
        env["CUDACXX"] = "/usr/local/cuda/bin/nvcc"  # CMake finds nvcc on the PATH or here
    status = {}
    if "build" in steps:
        status["build"] = run_step("build", [sys.executable, "-m", "pip", "install", "--no-build-isolation",
                                             "--no-deps", "-v", "."], out, env)
    ready, info = gpu_ready()
    print(f"== build_info: {info}", flush=True)
    (out / "build_info.json").write_text(info + "\n")
    pytest = [sys.executable, "-m", "pytest"]
    gpu_steps = [s for s in steps if s != "build"]
    if gpu_steps and not ready:
        print(f"== no usable GPU: skipping {', '.join(gpu_steps)}", flush=True)
        for s in gpu_steps:
            status[s] = False
        gpu_steps = []
    if "tests" in gpu_steps:
        # Synchronous launches: a kernel fault is reported by the launch check that names the kernel.
        status["tests"] = run_step("tests", pytest + ["-q", "-rs", "tests"], out, dict(env, CUDA_LAUNCH_BLOCKING="1"))
    if "sanitize" in gpu_steps:
        sanitizer = shutil.which("compute-sanitizer") or "/usr/local/cuda/bin/compute-sanitizer"
        ok = True
        for tool in SANITIZER_TOOLS:
            # Only the CUDA engine's tests: torch's own kernels are not ours to check.
            cmd = [sanitizer, "--tool", tool, "--error-exitcode", "99", "--print-limit", "20"] + pytest + [
                "-q", "-x", "tests/test_cuda.py"]
            # No caching allocator: out-of-bounds accesses inside torch's cached blocks would go unseen.
            ok = run_step(f"sanitize-{tool}", cmd, out, dict(env, PYTORCH_NO_CUDA_MEMORY_CACHING="1"),
                          timeout=1800) and ok
        status["sanitize"] = ok
    if "bench" in gpu_steps:
        status["bench"] = run_step("bench", pytest + ["-q", "bench/test_bench_cuda.py",
                                                      f"--benchmark-json={out / 'bench_cuda.json'}",
                                                      "--benchmark-columns=min,median,max,rounds"], out, env)
    if "profile" in gpu_steps:
        status["profile"] = run_step("profile", [sys.executable, str(Path(__file__).resolve()), "--profile-only"],
                                     out, env)
    if "train" in gpu_steps:
        status["train"] = run_step("train", pytest + ["-q", "-s", "bench/test_bench_train.py", "-k", "dsprites",
                                                      f"--benchmark-json={out / 'bench_train.json'}"], out, env)
    rows = targets(out)
    print("\n== steps: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in status.items()))
    if rows:
        width = max(len(r[0]) for r in rows)
        print(f"== targets ({out})")
        for what, value, threshold, verdict in rows:
            print(f"  {what:<{width}}  {value:>10}  {threshold:>9}  {verdict}")
    return 0 if status and all(status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
