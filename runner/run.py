"""One run: build the task, fit, test, save results.json (DESIGN.md §2)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from runner.config_sources import where_set
from runner.group_options import check_group_nodes, check_loggers, check_trainer_options
from runner.io import atomic_write_json, git_commit, package_versions
from runner.loggers import build_loggers, finish_wandb
from runner.quiet import quiet_libraries
from runner.ranks import is_launched_rank_zero
from runner.run_dir import check_run_dir, clear_outputs, record_config, recorded_config
from runner.run_options import check_run_options
from runner.task_params import build_params, resolved_params
from runner.validation import ConfigError

if TYPE_CHECKING:
    import torch

    from callbacks.sink import read_summaries
    from runner.paper_metrics import PaperMetricsCollector, read_paper_metrics

log = logging.getLogger("spectrum")
quiet_libraries()  # Lightning's lines that do not apply (absent devices, srun, adverts)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def load_training_stack() -> None:
    """Import torch, Lightning and the modules built on them into this module once a run starts
    (after its config checks): importing `runner.run` stays light, so `python run.py --help`
    and a config error take a second, not the 7 s of Lightning's import."""
    global torch, read_summaries, PaperMetricsCollector, read_paper_metrics
    import torch

    from callbacks.sink import read_summaries
    from runner.paper_metrics import PaperMetricsCollector, read_paper_metrics


def hydra_context() -> tuple[bool, list[str], str | None]:
    """Return (is_multirun, task overrides, sweep dir) from Hydra, or defaults outside Hydra."""
    if not HydraConfig.initialized():
        return False, [], None
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    return multirun, list(hc.overrides.task), (hc.sweep.dir if multirun else None)


def check_trainer(trainer_cfg: DictConfig) -> None:
    """Raise ConfigError when a trainer key is not a Trainer argument or its value is not
    allowed (runner/group_options.py:TrainerOptions), or when the trainer asks for hardware this
    machine lacks (torch is imported only to look for a GPU)."""
    options = check_trainer_options(trainer_cfg)
    accel = str(options.accelerator)
    if accel not in ("gpu", "cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accel} needs CUDA, but torch {torch.__version__} sees no GPU "
            "(torch.cuda.is_available() is False); use trainer=cpu or trainer=ddp_sim"
        )
    devices = options.devices
    if isinstance(devices, int) and devices > torch.cuda.device_count():
        raise ConfigError(
            f"trainer.devices={devices} but only {torch.cuda.device_count()} GPU(s) are visible"
        )


def resume_checkpoint(run_dir: Path, mode: str) -> str | None:
    """Return `<run_dir>/checkpoints/last.ckpt` when resume=auto and it exists, else None
    (`resume` was checked with the other top-level keys: runner/run_options.py)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return str(last) if mode == "auto" and last.exists() else None


def progress_bar_enabled(setting: Any) -> bool:
    """Return whether to show Lightning's rich progress bar (`auto`: a TTY outside CI)."""
    if isinstance(setting, bool):
        return setting  # anything else than auto, true, false was refused by run_options.py
    return sys.stdout.isatty() and not os.environ.get("CI")


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad key of `cfg` that can be found without importing
    torch or Lightning: top-level keys, task parameters, trainer, loggers, callback nodes."""
    check_run_options(cfg)
    build_params(cfg.task)
    check_trainer(cfg.trainer)
    check_group_nodes(cfg.get("logger"), "logger")
    check_loggers(cfg.get("logger"))
    check_group_nodes(cfg.get("callbacks"), "callbacks")


def build_callbacks(callbacks_cfg: DictConfig | None) -> list[Any]:
    """Instantiate every callback node that has a `_target_` (check_group_nodes refused the
    others); a callback that rejects its arguments raises ConfigError naming `callbacks.<name>`,
    where it was set and its reason."""
    from hydra.errors import InstantiationException

    check_group_nodes(callbacks_cfg, "callbacks")
    out = []
    for name, node in (callbacks_cfg or {}).items():
        if node is None or "_target_" not in node:
            continue
        try:
            out.append(instantiate(node))
        except InstantiationException as err:
            cause = err.__cause__ or err
            raise ConfigError(f"callbacks.{name} ({where_set(f'callbacks.{name}')}): "
                              f"{type(cause).__name__}: {cause}", key=f"callbacks.{name}") from None
    return out


def build_task(cfg: DictConfig, params: Any) -> tuple[Any, Any]:
    """Return (LightningModule, LightningDataModule) of the task from its `_target_` nodes."""
    data_node = OmegaConf.to_container(cfg.task.data, resolve=True)
    module_node = OmegaConf.to_container(cfg.task.module, resolve=True)
    data_cls = get_class(data_node.pop("_target_"))
    module_cls = get_class(module_node.pop("_target_"))
    datamodule = data_cls(params=params, data_dir=str(cfg.paths.data_dir), seed=int(cfg.seed),
                          **data_node)
    module = module_cls(params=params, **module_node)
    return module, datamodule


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Return the entries of `metrics` that are real scalars, as floats."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
            out[key] = float(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def print_results(results: dict[str, Any], run_dir: Path) -> None:
    """Print a short table of the run's metrics, one of its spectra (the headline scalars of each
    probe's last snapshot, and the plot), and the run directory."""
    from rich.console import Console
    from rich.table import Table

    console = Console(width=110)
    table = Table(title=f"{results['task']} — {results['status']}", show_lines=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = {**{f"paper/{k}": v for k, v in (results.get("paper_metrics") or {}).items()},
            **(results.get("metrics") or {})}
    for key, value in rows.items():
        if isinstance(value, float):
            table.add_row(key, f"{value:.6g}")
        elif isinstance(value, (int, str, bool)):
            table.add_row(key, str(value))
    table.add_row("wall_time_s", f"{results['wall_time_s']:.2f}")
    console.print(table)
    spectra = results.get("spectra") or {}
    if spectra:
        st = Table(title="spectra (last snapshot)", show_lines=False)
        for column in ("probe", "step", "summary", "plot"):
            st.add_column(column, justify="right" if column == "step" else "left")
        for probe, summary in spectra.items():
            items = [f"{k} {v:.4g}" for k, v in summary["headline"].items()]
            more = f", … (+{len(items) - 4} in results.json)" if len(items) > 4 else ""
            text = ", ".join(items[:4]) + more or "-"
            if summary.get("off"):
                text = f"off: {summary['off']}" if not items else f"{text} (then off)"
            step = "-" if summary["step"] is None else str(summary["step"])
            st.add_row(probe, step, text, summary.get("plot") or "-")
        console.print(st)
    print(f"run directory: {run_dir}")


def run(cfg: DictConfig) -> dict[str, Any]:
    """Run one experiment from a composed config; return the results dict (also results.json).

    A failed single run re-raises after writing `status: failed`; inside a multirun the error is
    recorded and the sweep goes on (the sweep summary reports failures at the end).
    """
    start = time.time()
    multirun, overrides, sweep_dir = hydra_context()
    run_dir = Path(cfg.paths.output_dir).resolve()
    # a SLURM task or torchrun process of rank > 0 (trainer=ddp) trains and writes nothing here
    writer = is_launched_rank_zero()
    if not writer:
        detach_run_dir_log(run_dir)
    fresh = recorded_config(run_dir) is None and not (run_dir / "results.json").exists()
    start_over = False
    user_callbacks: list[Any] | None = None
    if not multirun:  # a bad config stops before any work and leaves no run directory behind
        try:
            check_config(cfg)  # light: no torch, Lightning or W&B yet
            start_over = check_run_dir(run_dir, cfg, str(cfg.resume))
            load_training_stack()
            user_callbacks = build_callbacks(cfg.get("callbacks"))
        except ConfigError:
            if fresh and writer:
                discard_fresh_run_dir(run_dir)
            raise
    else:
        load_training_stack()
    run_dir.mkdir(parents=True, exist_ok=True)
    callbacks: list[Any] = []
    results: dict[str, Any] = {
        "status": "running",
        "task": str(cfg.task.name),
        "seed": cfg.seed if isinstance(cfg.seed, int) else str(cfg.seed),
        "overrides": overrides,
        "run_dir": str(run_dir),
        "wall_time_s": 0.0,
        "metrics": {},
        "paper_metrics": {},
        "git_commit": git_commit(PROJECT_ROOT),
        "versions": package_versions(),
    }
    try:
        if multirun:  # a job's config error is recorded in its own (fresh) directory
            check_run_options(cfg)
            start_over = check_run_dir(run_dir, cfg, str(cfg.resume))
        if start_over and writer:
            clear_outputs(run_dir)
        if writer:
            record_config(run_dir, cfg, overrides)
        params = build_params(cfg.task)
        results["params"] = resolved_params(params)
        check_trainer(cfg.trainer)
        # starting over: no checkpoint, also on a rank that looks before rank 0 has cleared them
        ckpt_path = None if start_over else resume_checkpoint(run_dir, str(cfg.resume))
        results["resumed_from"] = ckpt_path
        from runner.attempts import AttemptClock, open_attempt

        if writer:
            open_attempt(run_dir, start, ckpt_path)
        torch.set_num_threads(int(cfg.threads))
        import pytorch_lightning as pl

        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        module, datamodule = build_task(cfg, params)
        group = f"{cfg.task.name}-{Path(sweep_dir).name}" if sweep_dir else None
        # rank > 0 logs nothing anyway (Lightning's loggers write on rank 0), but building them
        # would write the W&B run id and folders
        loggers = (build_loggers(cfg.get("logger"), run_dir, group, run_name=run_dir.name)
                   if writer else [])
        if user_callbacks is None:
            user_callbacks = build_callbacks(cfg.get("callbacks"))
        from pytorch_lightning.callbacks import Checkpoint

        from runner.random_states import RandomStates

        # RandomStates first: on resume it puts the saved streams back before anything else runs
        callbacks = [RandomStates(), *user_callbacks, PaperMetricsCollector(run_dir),
                     AttemptClock(run_dir, start)]
        show_bar = progress_bar_enabled(cfg.progress_bar)
        if show_bar:
            from pytorch_lightning.callbacks import RichProgressBar

            callbacks.append(RichProgressBar())
        trainer = instantiate(
            cfg.trainer, logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir),
            enable_progress_bar=show_bar,
            # callbacks=none means no checkpoints: not even Lightning's default one
            enable_checkpointing=any(isinstance(cb, Checkpoint) for cb in callbacks),
        )
        for lg in trainer.loggers:
            lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        if trainer.interrupted:  # Lightning shuts down gracefully on Ctrl-C and returns
            raise KeyboardInterrupt("training was interrupted (resume=auto continues it)")
        if cfg.run_test and _has_test_set(datamodule):
            trainer.test(module, datamodule=datamodule, verbose=False)
        results["metrics"] = scalar_metrics(trainer.callback_metrics)
        # written where training ran (also ddp_spawn workers); a resumed run that had already
        # finished keeps the file of the run that finished
        results["paper_metrics"] = read_paper_metrics(run_dir)
        paper_scalars = {f"paper/{k}": v
                         for k, v in scalar_metrics(results["paper_metrics"]).items()}
        for lg in trainer.loggers:
            lg.log_metrics(paper_scalars, step=trainer.global_step)
            lg.save()
        results["global_step"] = int(trainer.global_step)
        results["status"] = "completed"
    except Exception as err:  # recorded, then re-raised unless inside a sweep
        results["status"] = "failed"
        results["error"] = f"{type(err).__name__}: {err}"
        results["traceback"] = traceback.format_exc()
        log.error("run failed: %s", results["error"])
        if not multirun:
            raise
    finally:
        interrupted = results["status"] == "running"  # KeyboardInterrupt, SystemExit
        if interrupted:
            results["status"] = "interrupted"
        try:
            finish_wandb()  # while the spectra's plots are drawn in the background
        except Exception as err:
            # a pre-empted SLURM job (submitit requeued it and exits): SLURM ends the job's
            # processes, W&B's service among them; the exit must go on (an exception here would
            # replace it, and submitit would take the job for finished)
            if not interrupted:
                raise
            log.warning("W&B did not finish (%s: %s); resume=auto continues the run",
                        type(err).__name__, err)
        for callback in callbacks:
            if hasattr(callback, "wait_for_plot"):
                callback.wait_for_plot()
        if run_dir.is_dir():
            results["spectra"] = read_summaries(run_dir)
        results["wall_time_s"] = time.time() - start
        from runner.attempts import FILE_NAME, total_wall_time, update_attempt

        if writer and (run_dir / FILE_NAME).exists():  # the run got as far as an attempt
            # an attempt that did not finish keeps the step of its last checkpoint (AttemptClock)
            step = ({"global_step": results["global_step"]}
                    if results.get("global_step") is not None else {})
            results["attempts"] = update_attempt(run_dir, start, status=results["status"], **step)
            results["wall_time_s"] = total_wall_time(results["attempts"])
        if writer:  # rank > 0 only returns its results (and raises as rank 0 does)
            atomic_write_json(run_dir / "results.json", results)
            if cfg.get("print_results", True) and results["status"] == "completed":
                print_results(results, run_dir)
            else:
                print(f"run directory: {run_dir}")
    return results


def detach_run_dir_log(run_dir: Path) -> None:
    """Close the logging handlers that write into `run_dir` (Hydra's job log): a process of
    rank > 0 logs to its stderr (submitit's per-task log) instead."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        name = getattr(handler, "baseFilename", None)
        if name is not None and Path(name).resolve().is_relative_to(run_dir):
            root.removeHandler(handler)
            handler.close()


def discard_fresh_run_dir(run_dir: Path) -> None:
    """Remove a run directory that holds nothing but what Hydra wrote before the run started
    (`.hydra/` and the job log): a config error must not leave a run behind."""
    if not run_dir.is_dir():
        return
    if all(p.name in (".hydra", "run.log", f"{run_dir.name}.log") or p.suffix == ".log"
           for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def _has_test_set(datamodule: Any) -> bool:
    """Return whether the data module overrides `test_dataloader`."""
    import pytorch_lightning as pl

    method = getattr(type(datamodule), "test_dataloader", None)
    return method is not None and method is not pl.LightningDataModule.test_dataloader
