"""Benchmark helpers: problem sizes, same-run baselines and a ratio table at the end.

FASTDTO_BENCH_SCALE=full (default) runs the sizes quoted in bench/RESULTS.md; =smoke shrinks every
problem so that CI (which passes --benchmark-disable) only checks that the benchmarks still run.
"""

import os
import platform
from collections import defaultdict

import pytest

SCALE = os.environ.get("FASTDTO_BENCH_SCALE", "full")
if SCALE not in ("full", "smoke"):
    raise ValueError(f"FASTDTO_BENCH_SCALE must be 'full' or 'smoke', got {SCALE!r}")
SMOKE = SCALE == "smoke"

_medians = defaultdict(dict)  # group -> {name: (median seconds, work units)}


def size(full, smoke):
    return smoke if SMOKE else full


@pytest.fixture
def race(benchmark):
    """race(group, name, fn, units, rounds): times fn and records its median per unit of work."""
    def run(group, name, fn, units=1, rounds=3):
        benchmark.group = group
        benchmark.name = name
        benchmark.extra_info["units"] = units
        result = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)
        if benchmark.stats is not None:
            _medians[group][name] = (benchmark.stats.stats.median, units)
        return result
    return run


def pytest_terminal_summary(terminalreporter):
    if not _medians:
        return
    tr = terminalreporter
    tr.write_sep("=", f"fastdto ratios ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                      f"scale={SCALE}): median seconds per unit, and speed-up of 'fastdto' over each")
    for group, rows in _medians.items():
        ours = [v for k, v in rows.items() if k.startswith("fastdto")]
        tr.write_line(f"[{group}]")
        for name, (med, units) in rows.items():
            per = med / units
            line = f"  {name:<44} median {med:9.4f} s  ({units} units, {per * 1e6:10.3f} us/unit)"
            if ours and not name.startswith("fastdto"):
                base = ours[0][0] / ours[0][1]
                line += f"   fastdto is {per / base:7.2f}x faster"
            tr.write_line(line)
