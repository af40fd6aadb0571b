"""Every config in conf/ composes; every task option builds its parameters, module and data."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from conftest import CONF
from runner.run import build_task
from runner.task_params import build_params

GROUPS = ["task", "trainer", "logger", "callbacks", "launcher", "paths", "debug"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def experiments() -> list[str]:
    return sorted(str(p.relative_to(CONF / "experiment").with_suffix(""))
                  for p in (CONF / "experiment").rglob("*.yaml"))


def compose_with(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in options(g)]
                         + [f"experiment={e}" for e in experiments()])
def test_every_config_composes(override, tmp_path):
    cfg = compose_with([override, f"paths.output_dir={tmp_path}"])
    assert cfg.task.name
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    # every value outside Hydra's own node resolves (no dangling interpolation)
    with open_dict(cfg):
        del cfg["hydra"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"] == str(tmp_path)


def test_groups_have_the_documented_options():
    assert {"default", "cpu", "gpu", "ddp", "ddp_sim", "debug"} <= set(options("trainer"))
    assert {"default", "csv", "wandb", "tensorboard", "none"} <= set(options("logger"))
    assert {"basic", "local", "slurm"} <= set(options("launcher"))
    assert {"fdr", "overfit", "limit"} <= set(options("debug"))


@pytest.mark.parametrize("task", options("task"))
def test_every_task_builds_params_module_and_data(task, tmp_path):
    cfg = compose_with([f"task={task}"])
    params = build_params(cfg.task)
    with open_dict(cfg):
        cfg.paths.data_dir = str(tmp_path)
    module, datamodule = build_task(cfg, params)
    assert module.__class__.__module__.startswith(f"tasks.{task}.")
    assert datamodule.__class__.__module__.startswith(f"tasks.{task}.")
    assert hasattr(module, "training_step")


def test_slurm_launcher_lists_every_documented_key():
    cfg = compose_with(["launcher=slurm"])
    launcher = cfg.hydra.launcher
    for key in ("partition", "timeout_min", "gpus_per_node", "tasks_per_node", "mem_gb",
                "array_parallelism", "account", "qos", "max_num_timeout", "setup"):
        assert key in launcher, key
    assert launcher._target_.endswith("SlurmLauncher")
    text = (CONF / "launcher" / "slurm.yaml").read_text()
    for line in text.splitlines():
        if line.startswith("    ") and ":" in line and not line.strip().startswith("#"):
            assert "#" in line, f"undocumented key in slurm.yaml: {line.strip()}"
