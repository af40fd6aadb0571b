"""B6: start-up time of the command line (issue 13: `--help` <= 3 s, a config error <= 5 s).

Times, as a user runs them, in fresh processes: `python -c "import hydra"` (the baseline: the
interpreter plus Hydra, measured in the same run), `python run.py --help`, and three config
errors (a task parameter, a top-level key's type, a top-level key's range). Prints the median
wall time of each over `--reps` runs, its ratio to the baseline, and PASS/FAIL against the
issue's targets (absolute seconds: on a slower machine the ratio is the steadier number).

    python benchmarks/bench_startup.py [--reps 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HELP_TARGET_S = 3.0
ERROR_TARGET_S = 5.0
ERRORS = [["task=optimizer_scaling", "task.n_features=-1"], ["seed=abc"], ["threads=0"]]


def wall(cmd: list[str], cwd: Path, expect_rc: int) -> float:
    """Return the wall seconds of one process (checking its exit code)."""
    began = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    took = time.perf_counter() - began
    if proc.returncode != expect_rc:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return took


def median_wall(cmd: list[str], cwd: Path, expect_rc: int, reps: int) -> float:
    wall(cmd, cwd, expect_rc)  # warm-up: the file cache
    return statistics.median(wall(cmd, cwd, expect_rc) for _ in range(reps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs per command (median)")
    args = parser.parse_args()
    run_py = [sys.executable, str(ROOT / "run.py")]
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        where = [f"paths.log_dir={cwd}"]
        base = median_wall([sys.executable, "-c", "import hydra"], cwd, 0, args.reps)
        print(f"baseline  python -c 'import hydra'               {base:6.2f} s")
        rows = [("--help", [*run_py, "--help"], 0, HELP_TARGET_S)]
        rows += [(" ".join(e), [*run_py, *e, *where], 1, ERROR_TARGET_S) for e in ERRORS]
        for label, cmd, rc, target in rows:
            took = median_wall(cmd, cwd, rc, args.reps)
            verdict = "PASS" if took <= target else "FAIL"
            ok &= took <= target
            print(f"run.py {label:42s} {took:6.2f} s  {took / base:5.1f}x baseline  "
                  f"(target <= {target:.0f} s) {verdict}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
