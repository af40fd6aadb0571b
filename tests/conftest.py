"""Shared fixtures: compose configs in-process, run the CLI in a subprocess, tiny task sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
TESTS = Path(__file__).resolve().parent
sys.path.append(str(TESTS / "tasks"))  # tiny.py (each task's tiny overrides), for every folder

# optimizer_scaling at a size that draws in well under a second
TINY_SCALING = ["task=optimizer_scaling", "task.latent_dim=256", "task.n_train=512",
                "task.max_features=64", "task.n_features=32", "task.steps=10"]

os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.pop("WANDB_MODE", None)


# The test files that take longest (worker-seconds on a clean clone, `--durations=0`,
# 2026-12-04: 87, 80, 74, 44, 40, 31, 22, 22, 20, 14, 13, 13, 12, 10), run first so that
# `make test`'s two workers (`--dist loadfile --no-loadscope-reorder`) finish together instead
# of one waiting on a long file started last.
LONGEST_FIRST = ("tasks/test_mixat.py", "runner/test_cli.py", "runner/test_resume.py",
                 "tasks/test_contract.py", "tasks/test_ei_network.py", "tasks/test_farad.py",
                 "tasks/test_mamba_modulation.py", "tasks/test_spectral_ssl.py",
                 "tasks/test_two_step_gd.py", "tasks/test_linearization.py",
                 "tasks/test_optimizer_scaling.py", "runner/test_run_inprocess.py",
                 "runner/test_configs.py", "tasks/test_chefnmr.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the files of LONGEST_FIRST first, in that order; the others keep theirs after them."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        path = Path(str(item.path))
        return rank.get(path.relative_to(TESTS).as_posix() if path.is_relative_to(TESTS) else "",
                        len(rank))

    items.sort(key=key)  # stable: the order within a file and among the rest is kept


@pytest.fixture(autouse=True)
def one_thread():
    """Keep torch on one thread (2 shared cores)."""
    torch.set_num_threads(1)
    yield


def compose_config(overrides: list[str], run_dir: Path, data_dir: Path) -> DictConfig:
    """Return the composed config with its Hydra node set up as a real run would have it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=[*overrides, "progress_bar=false"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.paths.data_dir = str(data_dir)
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A data cache shared by the tests of one session, and by all its workers under xdist
    (`make test` runs `-n 2`): the cache writes atomically and the small LM's pretraining holds
    a file lock, so two workers never leave a partial file and never both pretrain it."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder; each worker's basetemp is a child of it
    return base / "data"


@pytest.fixture
def make_cfg(tmp_path, data_dir):
    """Factory: overrides -> composed config whose run directory is under tmp_path."""
    def factory(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
        return compose_config(overrides, run_dir or tmp_path / "run", data_dir)
    return factory


def run_cli(args: list[str], cwd: Path, timeout: int = 300,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python run.py ARGS` from `cwd` (outputs land there); return the finished process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0",
                "PYTHONPATH": f"{ROOT}{os.pathsep}{TESTS}", **(env or {})}
    full_env.pop("WANDB_MODE", None)
    # a W&B service started by an in-process test must not serve the child: a child killed
    # with SIGKILL would leave its run registered there ("run ID is in use" on resume)
    full_env.pop("WANDB_SERVICE", None)
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)
