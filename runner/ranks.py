"""Which process of a multi-process run this is, from the environment of its launcher.

Under SLURM with `hydra.launcher.tasks_per_node > 1` (trainer=ddp) every task runs the whole Hydra
job function (runner/run.py run()), and so does every process that torchrun starts: the run's
own files (results.json, attempts.json, the config record, the loggers' files) are written by
global rank 0 alone, the other processes take part in training only. ddp_spawn (trainer=ddp_sim)
is not concerned: its workers run the Trainer's fit, not run().
"""

from __future__ import annotations

import os


def launched_global_rank() -> int:
    """Return this process's global rank as its launcher set it: RANK (torchrun, with
    WORLD_SIZE > 1), else SLURM_PROCID when the SLURM step has more than one task; 0 for a
    single process (and for the parent of ddp_spawn workers)."""
    env = os.environ
    if int(env.get("WORLD_SIZE", "1")) > 1 and "RANK" in env:
        return int(env["RANK"])
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"])
    return 0


def is_launched_rank_zero() -> bool:
    """Return whether this process writes the run's files (global rank 0, or the only process)."""
    return launched_global_rank() == 0
