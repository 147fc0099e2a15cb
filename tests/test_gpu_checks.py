"""bench/gpu_checks.py runs only where a GPU is lent, once in a while: these keep it from rotting here."""

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "gpu_checks.py"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_profile_and_step_selection(tmp_path):
    res = run("--profile-only", "--profile-n", "40")
    assert res.returncode == 0, res.stderr
    assert "N x n x d = 40 x 4096 x 10" in res.stdout and "Self CPU time total" in res.stdout
    assert run("--out", str(tmp_path), "--steps", "bogus").returncode == 2
    if not torch.cuda.is_available():
        res = run("--out", str(tmp_path), "--steps", "tests,profile")
        assert res.returncode == 1 and "no usable GPU: skipping tests, profile" in res.stdout
        assert (tmp_path / "build_info.json").exists()
