"""B5: the cost of the leave-on spectral set on the default run (`make run`).

Runs `python run.py` (the default config) as a user would, alternating `callbacks=checkpoint`
(the baseline: checkpointing alone) and `callbacks=default` (checkpointing + weight, feature and
matrix spectra with their plots), `--reps` times each, in one process tree and one data cache
(built by a warm-up run first). Prints the median wall time of each, the ratio, the spectral
callbacks' own time (snapshots, writing, plots: their `wall_ms` plus the plot time is inside
the run's wall time: `results.json["spectra"][probe]["cost_s"]`), and PASS when the A/B
overhead is at most 5 %. On a machine whose run times scatter by more than the effect (shared
CPUs), the own time is the steadier number: it is measured inside each run.

    python benchmarks/bench_default_run.py --reps 3 [extra run.py overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.05


def one_run(callbacks: str, out: Path, data: Path, extra: list[str]) -> tuple[float, dict]:
    """Return (process wall seconds, results.json) of one `run.py` with these callbacks."""
    run_dir = out / f"{callbacks}-{time.time_ns()}"
    cmd = [sys.executable, str(ROOT / "run.py"), f"callbacks={callbacks}", "logger=csv",
           f"hydra.run.dir={run_dir}", f"paths.data_dir={data}", *extra]
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({callbacks}):\n{proc.stderr[-3000:]}")
    return wall, json.loads((run_dir / "results.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each kind (median)")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        out, data = Path(tmp) / "runs", Path(tmp) / "data"
        one_run("checkpoint", out, data, extra)  # warm-up: builds the data cache
        walls: dict[str, list[float]] = {"checkpoint": [], "default": []}
        inner: dict[str, list[float]] = {"checkpoint": [], "default": []}
        own: list[float] = []
        for _ in range(args.reps):
            for kind in walls:
                wall, results = one_run(kind, out, data, extra)
                walls[kind].append(wall)
                inner[kind].append(results["wall_time_s"])
                if kind == "default":
                    own.append(sum(p["cost_s"] for p in results["spectra"].values()))
        task = results["task"]
    base, spec = (statistics.median(walls[k]) for k in ("checkpoint", "default"))
    base_in, spec_in = (statistics.median(inner[k]) for k in ("checkpoint", "default"))
    over = spec / base - 1.0
    print(f"B5 default run ({task}{' ' + ' '.join(extra) if extra else ''}), "
          f"median of {args.reps}, one process per run")
    print(f"  process wall: checkpoint {base:.2f} s, default (+spectra) {spec:.2f} s, "
          f"ratio {spec / base:.3f} (+{100 * over:.1f}%)")
    print(f"  runner wall_time_s: checkpoint {base_in:.2f} s, default {spec_in:.2f} s "
          f"(+{100 * (spec_in / base_in - 1):.1f}%)")
    own_med = statistics.median(own)
    print(f"  spectral callbacks' own time (inside each default run): median {own_med:.2f} s = "
          f"{100 * own_med / spec:.1f}% of its process wall, runs {[round(o, 2) for o in own]}")
    print(f"  all runs (s): checkpoint {[round(w, 2) for w in walls['checkpoint']]}, "
          f"default {[round(w, 2) for w in walls['default']]}")
    print(f"{'PASS' if over <= TARGET else 'FAIL'}: leave-on spectra cost "
          f"{100 * over:+.1f}% of the default run (target <= {100 * TARGET:.0f}%)")


if __name__ == "__main__":
    main()
