"""Exact resume for every task: a run interrupted (SIGKILL for the two tasks with random
augmentation) and rerun in its directory ends with the uninterrupted run's paper metrics, the
same metrics.csv rows (none lost, none doubled), the same W&B scalar history in one offline run,
the same spectra, and its attempts listed with their wall times."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from conftest import compose_config, run_cli
from runner.csv_logger import count_rows, keep_rows
from runner.run import run
from runner.wandb_records import find_run_file, history
from tasks.base.streams import IndexedBatches, ShuffledBatches
from tiny import TINY

# run-to-run timings are measurements of the machine, not of the run
TIMING_SUFFIXES = ("wall_s", "wall_ms", "time_s")


def paper(results: dict) -> dict:
    return {k: v for k, v in results["paper_metrics"].items() if not k.endswith(TIMING_SUFFIXES)}


def csv_log(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not k.endswith(TIMING_SUFFIXES)}
                for row in csv.DictReader(handle)]


def scalar_history(run_dir: Path) -> list[dict]:
    """Return the W&B rows that hold scalars (histogram rows are not carried over a resume)."""
    out = []
    for row in history(find_run_file(run_dir)):
        kept = {k: v for k, v in row.items() if not k.startswith("_") and "/histogram" not in k
                and not k.endswith(TIMING_SUFFIXES)}
        if set(kept) - {"trainer/global_step", "epoch"}:
            out.append(kept)
    return out


def spectra(run_dir: Path) -> dict[str, np.ndarray]:
    out = {}
    for path in sorted((run_dir / "spectra").glob("*.npz")):
        with np.load(path) as data:
            out.update({f"{path.stem}/{k}": data[k] for k in data.files if "wall" not in k})
    return out


def assert_same_run(straight_dir: Path, resumed_dir: Path) -> None:
    a = json.loads((straight_dir / "results.json").read_text())
    b = json.loads((resumed_dir / "results.json").read_text())
    assert b["status"] == "completed" and b["resumed_from"].endswith("last.ckpt")
    assert b["global_step"] == a["global_step"]
    assert paper(b) == paper(a)  # exactly: the same numbers, bit for bit
    assert csv_log(resumed_dir) == csv_log(straight_dir)
    attempts = b["attempts"]
    assert [x["status"] for x in attempts] == ["killed" if attempts[0]["status"] == "killed"
                                               else "failed", "completed"]
    assert attempts[0]["wall_time_s"] > 0 and attempts[1]["resumed_from"].endswith("last.ckpt")
    # the interrupted attempt keeps the step of its last checkpoint, the last one the final step
    assert 0 < attempts[0]["global_step"] < b["global_step"] == attempts[1]["global_step"]
    assert b["wall_time_s"] == pytest.approx(sum(x["wall_time_s"] for x in attempts))


IN_PROCESS = {  # task: (extra overrides, step to crash at)
    "optimizer_scaling": (["task.optimizer=adam", "task.steps=12"], 7),
    "two_step_gd": ([], 2),
    "ei_network": (["task.mode=infer", "task.infer_steps=20"], 11),
    "mixat": (["task.defense_steps=6"], 3),  # PAP, GCG (a warm-started suffix bank) and δ steps
}


@pytest.mark.parametrize("task", sorted(IN_PROCESS))
def test_a_crashed_run_resumes_to_the_uninterrupted_result(make_cfg, tmp_path, task):
    extra, crash_step = IN_PROCESS[task]
    base = [f"task={task}", *TINY[task], *extra, "logger=csv",
            "callbacks.model_checkpoint.every_n_train_steps=1"]
    run(make_cfg(base, tmp_path / "straight"))
    crash = [*base, "+callbacks.crash._target_=helpers.CrashAtStep",
             f"+callbacks.crash.step={crash_step}"]
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(make_cfg(crash, tmp_path / "resumed"))
    run(make_cfg(base, tmp_path / "resumed"))
    assert_same_run(tmp_path / "straight", tmp_path / "resumed")


@pytest.mark.parametrize("task, crash_step, rerun", [("farad", 17, "command line"),
                                                     ("spectral_ssl", 8, "in process")])
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_result(tmp_path, task,
                                                                       crash_step, rerun):
    """Random augmentation, a resumable shuffled loader (spectral_ssl: killed mid-epoch, with
    epoch means in flight), every spectral probe on its step schedule, W&B offline. The attempt
    killed is a process of its own; the uninterrupted reference runs in this process (no second
    import of the stack), the rerun in the killed run's directory through the command line, as
    a user reruns it (farad), or in this process (spectral_ssl)."""
    base = [f"task={task}", *TINY[task], "logger=default",
            "callbacks.model_checkpoint.every_n_train_steps=3",
            *[f"callbacks.{p}.budget_frac=null" for p in
              ("weight_spectrum", "feature_spectrum", "matrix_spectrum")],
            "callbacks.matrix_spectrum.every_n_steps=2", "callbacks.feature_spectrum.every_n_steps=5",
            "callbacks.weight_spectrum.every_n_steps=4", "print_results=false",
            f"paths.data_dir={tmp_path / 'data'}"]
    run(compose_config(base, tmp_path / "straight", tmp_path / "data"))
    killed_dir = tmp_path / "killed"
    killed = run_cli([*base, f"hydra.run.dir={killed_dir}",
                      "+callbacks.crash._target_=helpers.CrashAtStep",
                      f"+callbacks.crash.step={crash_step}", "+callbacks.crash.hard_kill=true"],
                     tmp_path)
    assert killed.returncode == -9  # SIGKILL: no clean-up ran
    assert not (killed_dir / "results.json").exists()
    assert count_rows(killed_dir / "metrics.csv") > 0  # flushed at each checkpoint
    if rerun == "command line":
        resumed = run_cli([*base, f"hydra.run.dir={killed_dir}"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
    else:
        run(compose_config(base, killed_dir, tmp_path / "data"))
    assert_same_run(tmp_path / "straight", killed_dir)
    assert scalar_history(killed_dir) == scalar_history(tmp_path / "straight")
    assert len(list((killed_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run to sync
    a, b = spectra(tmp_path / "straight"), spectra(killed_dir)
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


# ----------------------------------------------------------------------------- the pieces
def test_keep_rows_cuts_a_csv_back_to_its_first_rows(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,step\n1,0\n2,1\n3,2\n")
    assert count_rows(path) == 3
    keep_rows(path, 2)
    assert path.read_text().splitlines() == ["a,step", "1,0", "2,1"]
    keep_rows(path, 5)  # fewer rows than asked: untouched
    assert count_rows(path) == 2 and count_rows(tmp_path / "absent.csv") == 0


def test_shuffled_batches_draw_what_a_shuffling_dataloader_draws():
    """Same orders over three epochs and the same global random stream afterwards as torch's
    DataLoader(BatchSampler(RandomSampler)) (the loader the measured runs used)."""
    rows, size = torch.arange(23), 5
    torch.manual_seed(3)
    sampler = BatchSampler(RandomSampler(rows), size, drop_last=False)
    reference = [[b.tolist() for b in DataLoader(rows, sampler=sampler, batch_size=None)]
                 for _ in range(3)]
    after_reference = torch.rand(3)
    epoch = {"now": 0}
    stream = ShuffledBatches(23, size, lambda r: rows[r], lambda: (epoch["now"], 0))
    torch.manual_seed(3)
    ours = []
    for e in range(3):
        epoch["now"] = e
        ours.append([b.tolist() for b in stream])
    assert ours == reference
    assert torch.equal(torch.rand(3), after_reference)


def test_resumed_loaders_continue_at_the_first_batch_not_trained():
    indexed = IndexedBatches(lambda i: i * 10, 6, lambda: (0, 4))
    assert len(indexed) == 6 and list(indexed) == [40, 50]
    rows = torch.arange(10)
    fresh = ShuffledBatches(10, 3, lambda r: r.tolist(), lambda: (2, 0))
    full = list(fresh)
    resumed = ShuffledBatches(10, 3, lambda r: r.tolist(), lambda: (2, 2))
    resumed.load_state_dict(fresh.state_dict())  # the checkpoint holds the epoch's seed
    draws_before = torch.get_rng_state()
    assert list(resumed) == full[2:] and len(resumed) == 4
    assert torch.equal(torch.get_rng_state(), draws_before)  # no new draw mid-epoch
    del rows


def test_indexed_batches_leave_the_global_stream_as_a_dataloader_does():
    """farad's augmentations draw from torch's global generator after the loader's first pass:
    the same numbers follow as after a DataLoader over the same items (measured runs used one)."""
    items = [torch.tensor([i]) for i in range(4)]
    torch.manual_seed(5)
    reference = [int(b) for b in DataLoader(items, batch_size=None)]
    after_reference = torch.rand(2)
    torch.manual_seed(5)
    ours = [int(b) for b in IndexedBatches(items.__getitem__, 4, lambda: (0, 0))]
    assert ours == reference and torch.equal(torch.rand(2), after_reference)
