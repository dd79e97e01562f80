"""Shared helpers for the benchmark scripts: the environment record and JSON output.

Every benchmark writes one JSON file under benchmarks/results/ holding the command that
produced it, the machine, and the measured figures; the README's tables are copied from them.
"""
from __future__ import annotations

import json
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, Any]:
    from squeezelab.train.run_dir import environment as env

    info = env()
    info["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    info["cpu_count"] = os.cpu_count()
    info["cpu_flags"] = cpu_simd_flags()
    return info


def cpu_simd_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    wanted = ("avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return [f for f in wanted if flags and f in flags.group(1).split()]


def cpu_peak_flops() -> dict[str, Any]:
    """Theoretical peak of this CPU: cores x GHz x FLOPs per cycle per core, fp32 and bf16.

    fp32 FLOPs per cycle: two FMA units x vector lanes x 2 (multiply + add): 32 with AVX2
    (8 lanes), 64 with AVX-512 (16 lanes). bf16: twice that where the CPU has AVX-512 BF16 (its
    dot-product instruction does two bf16 products per fp32 lane), 1024 per cycle with AMX
    tiles, and no more than fp32 where bf16 is emulated. The clock is the one /proc/cpuinfo
    reports now (no turbo model), so the figures are estimates, stated as such beside every
    comparison.
    """
    flags = cpu_simd_flags()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags or "avx" in flags else 4
    mhz = []
    try:
        mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", Path(
            "/proc/cpuinfo").read_text(), re.M)]
    except OSError:
        pass
    ghz = (sum(mhz) / len(mhz) / 1000) if mhz else 2.0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_cycle = 2 * lanes * 2
    bf16_per_cycle = (1024 if "amx_bf16" in flags
                      else 2 * per_cycle if "avx512_bf16" in flags else per_cycle)
    return {"flops": cores * ghz * 1e9 * per_cycle, "cores": cores, "ghz": ghz,
            "flops_per_cycle_per_core": per_cycle,
            "bf16_flops": cores * ghz * 1e9 * bf16_per_cycle,
            "bf16_flops_per_cycle_per_core": bf16_per_cycle}


def spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max of per-seed figures."""
    return {"mean": statistics.mean(values),
            "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def timed_ms(fn: Callable[[], Any], warmup: int, repeats: int,
             budget_s: float | None = None) -> tuple[float, float, int]:
    """(median ms, min ms, passes) of ``fn()``: ``warmup`` untimed passes (oneDNN picks and
    caches its kernel in the first), then ``repeats`` timed ones, or fewer (at least 3) once
    they have taken ``budget_s`` seconds. The min is given beside the median because on a
    shared 2-core machine another process's burst inflates single passes."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats and (budget_s is None or len(times) < 3
                                    or sum(times) < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times), 1000 * min(times), len(times)


def write_result(name: str, data: dict[str, Any], output: str | None = None) -> Path:
    path = Path(output) if output else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"benchmark": name, **data, "environment": environment()},
                               indent=2) + "\n")
    print(f"wrote {path}")
    return path
