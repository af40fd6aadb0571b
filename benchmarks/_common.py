"""Shared helpers of the benchmark scripts: one thread, warm-up + repeated timing, PASS/FAIL lines."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# one BLAS / OpenMP thread for every library (numpy/scipy too, not only torch): set before import
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

torch.set_num_threads(1)
try:  # BLAS libraries already loaded before this module (env vars cover later ones)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # pragma: no cover
    pass


def timeit(fn: Callable[[], Any], reps: int = 5, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``reps`` runs after ``warmup`` runs; also its last result."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bar(label: str, ok: bool, detail: str) -> bool:
    """Print one PASS/FAIL line for a target."""
    print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")
    return ok


def header(title: str) -> None:
    print("=" * 78)
    print(title)
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}")
    print("=" * 78)
