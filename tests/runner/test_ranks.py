"""runner/ranks.py: which process of a multi-process launch writes the run directory."""

import pytest

from runner.ranks import is_launched_rank_zero, launched_global_rank

VARS = ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS")


@pytest.mark.parametrize(("env", "rank"), [
    ({}, 0),                                                      # one process
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, 0),              # a one-task SLURM job
    ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, 1),              # task 1 of tasks_per_node=2
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, 0),
    ({"RANK": "3", "WORLD_SIZE": "4"}, 3),                        # torchrun
    ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, 1),  # torchrun in salloc
    ({"WORLD_SIZE": "2"}, 0),                                     # Lightning's ddp parent (no RANK)
])
def test_the_launched_rank_comes_from_torchrun_then_slurm(monkeypatch, env, rank):
    for name in VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launched_global_rank() == rank
    assert is_launched_rank_zero() == (rank == 0)
