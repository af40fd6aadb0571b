"""Shared helpers of the benchmark scripts: one thread, warm-up + repeated timing, PASS/FAIL lines."""

from __future__ import annotations

import argparse
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


def parse_args(description: str) -> argparse.Namespace:
    """Return the options every benchmark takes: ``--device`` (cpu, the default, or cuda) and
    ``--reps`` (timed repetitions, default 5)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", help="cpu (default) | cuda | cuda:N")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions (median)")
    args = parser.parse_args()
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch.cuda.is_available() is False")
    return args


def _sync() -> None:
    """Wait for queued CUDA work (a no-op when CUDA was never used)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timeit(fn: Callable[[], Any], reps: int = 5, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``reps`` runs after ``warmup`` runs; also its last result.

    CUDA work is waited for before the clock stops.
    """
    out = None
    for _ in range(warmup):
        out = fn()
    _sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bar(label: str, ok: bool, detail: str) -> bool:
    """Print one PASS/FAIL line for a target."""
    print(f"  [{'PASS' if ok else 'FAIL'}] {label}: {detail}")
    return ok


def header(title: str, device: torch.device | None = None) -> None:
    """Print the benchmark's title, torch version, thread count and device."""
    print("=" * 78)
    print(title)
    where = "" if device is None else f", device={device}"
    print(f"torch {torch.__version__}, threads={torch.get_num_threads()}{where}")
    print("=" * 78)
