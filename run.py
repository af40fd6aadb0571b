"""spectrum — the single entrypoint: compose conf/ with Hydra and hand the config to runner.run.

    python run.py                                  # the default experiment
    python run.py task=optimizer_scaling task.optimizer=adam seed=3
    python run.py -m task.optimizer=gd,natural_gradient task.n_features=64,128,256

Only Hydra is imported before the config is composed and checked: torch, Lightning and W&B load
once a run starts (runner/run.py), so `--help` and a config error answer within a second or two.
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")        # no hub downloads at run time
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from runner.cli import job_started, main_reporting_config_errors  # noqa: E402
from runner.config_help import wants_help, with_help_template  # noqa: E402
from runner.validation import ConfigError  # noqa: E402


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Run one job of the composed config; a bad config exits with one clear message."""
    job_started()
    from runner.run import run

    try:
        run(cfg)
    except ConfigError as err:
        sys.exit(f"config error: {err}")


if __name__ == "__main__":
    if wants_help(sys.argv[1:]):  # Hydra's help, with each key's comment from its yaml file
        sys.argv[1:] = with_help_template(sys.argv[1:])
    main_reporting_config_errors(main, sys.argv[1:])
