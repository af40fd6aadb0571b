"""Top-level, trainer, logger and callback keys are checked like task parameters: one message
naming the key, where it was set and what is allowed, before any work (runner/run_options.py,
runner/group_options.py). progress_bar is checked through the CLI in test_cli.py (the in-process
fixture pins it), and so are the errors Hydra raises before the runner sees a config."""

from __future__ import annotations

import dataclasses
import inspect
import typing

import pytest

from conftest import TINY_SCALING
from runner.group_options import (
    PRECISIONS,
    RUNNER_SET,
    CSVOptions,
    TrainerOptions,
    WandbOptions,
)
from runner.run import run
from runner.validation import ConfigError


@pytest.mark.parametrize(("override", "message"), [
    ("+sed=3", "sed (set by the override +sed=3) is not a top-level key (the config groups: "
               "task, trainer, logger, callbacks, paths) (did you mean seed?); allowed: seed, "
               "resume, threads, progress_bar, run_test, print_results, tags"),
    ("seed=abc", "seed='abc' (set by the override seed=abc) is not allowed; expected a value of "
                 "type int"),
    ("threads=0", "threads=0 is out of range; allowed: [1, inf) (set by the override threads=0)"),
    ("~seed", "seed is missing (removed by the override ~seed); it is required (allowed: a "
              "value, e.g. its default in conf/config.yaml)"),
    ("resume=maybe", "resume='maybe' (set by the override resume=maybe) is not allowed; "
                     "expected one of: auto, never"),
    ("callbacks.matrix_spectrum.every_n_steps=0",
     "callbacks.matrix_spectrum (set by the override callbacks.matrix_spectrum.every_n_steps=0): "
     "ValueError: every_n_steps=0 must be >= 1"),
    ("trainer.max_steps=-5", "trainer.max_steps=-5 is out of range; allowed: -1 (no limit) or an "
                             "integer >= 0 (set by the override trainer.max_steps=-5)"),
    ("trainer.precision=17", "trainer.precision=17 is not allowed; choose one of: 32-true, "
                             "64-true, 16-mixed, bf16-mixed, 16-true, bf16-true, "
                             "transformer-engine, transformer-engine-float16, 64, 32, 16, bf16 "
                             "(set by the override trainer.precision=17)"),
    ("trainer.max_epochs=-2", "trainer.max_epochs=-2 is out of range; allowed: -1 (no limit) or "
                              "an integer >= 0 or null (set by the override "
                              "trainer.max_epochs=-2)"),
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches=1.5 is out of range; allowed: a "
                                      "fraction in [0.0, 1.0], a number of batches >= 0, or null "
                                      "(set by the override trainer.limit_val_batches=1.5)"),
    ("trainer.accumulate_grad_batches=abc",
     "trainer.accumulate_grad_batches='abc' (set by the override "
     "trainer.accumulate_grad_batches=abc) is not allowed; expected a value of type int"),
    ("+trainer.default_root_dir=/tmp", "trainer.default_root_dir (set by the override "
                                       "+trainer.default_root_dir=/tmp) is set by the runner "
                                       "itself; a config may set every other Trainer argument"),
    ("logger.wandb.mode=foo", "logger.wandb.mode='foo' is not allowed; choose one of: offline, "
                              "online, disabled, shared, dryrun, run (set by the override "
                              "logger.wandb.mode=foo)"),
    ("+logger.wandb.notez=x", "logger.wandb.notez (set by the override +logger.wandb.notez=x) is "
                              "not an argument of pytorch_lightning.loggers.WandbLogger (did you "
                              "mean logger.wandb.notes?); allowed: name, save_dir, version,"),
    ("logger.csv.flush_logs_every_n_steps=0",
     "logger.csv.flush_logs_every_n_steps=0 is out of range; allowed: [1, inf) (set by the "
     "override logger.csv.flush_logs_every_n_steps=0)"),
    ("+callbacks.ntk_spectrum.k=3",
     "callbacks.ntk_spectrum (set by the override +callbacks.ntk_spectrum.k=3) is not a callback "
     "of this run (it has no _target_, so it would do nothing); it is in callbacks=spectra: add "
     "callbacks=spectra to the command; the callbacks of this run: model_checkpoint, "
     "weight_spectrum, feature_spectrum, matrix_spectrum"),
])
def test_bad_top_level_group_and_callback_values_stop_before_any_work(make_cfg, tmp_path,
                                                                     override, message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # as Hydra leaves it: the run must not write into it
    logger = [] if "logger.wandb" in override else ["logger=csv"]  # W&B: in logger=default
    with pytest.raises(ConfigError) as err:
        run(make_cfg([*TINY_SCALING, *logger, override], run_dir))
    if message.endswith(","):  # a long list of what is allowed follows
        assert str(err.value).startswith(message), str(err.value)
    else:
        assert str(err.value) == message
    assert not run_dir.exists()  # a fresh directory is removed, nothing was written


@pytest.mark.parametrize(("key", "allowed"), [
    ("hessian_spectrum.reorth", "['full', 'partial']"),
    ("hessian_spectrum.bound", "['residual', 'gap']"),
    ("ntk_spectrum.method", "['auto', 'structured', 'jacobian']"),
])
def test_bad_choices_of_the_costly_probes_stop_before_any_work(make_cfg, tmp_path, key, allowed):
    """Checked when the callback is built, not at its first snapshot (where a ValueError would
    only skip the probe with a warning)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    override = f"callbacks.{key}=bogus"
    with pytest.raises(ConfigError) as err:
        run(make_cfg([*TINY_SCALING, "logger=csv", "callbacks=spectra", override], run_dir))
    callback, arg = key.split(".")
    assert str(err.value) == (f"callbacks.{callback} (set by the override {override}): "
                              f"ValueError: {arg}='bogus' is not allowed; allowed values: {allowed}")
    assert not run_dir.exists()


def test_trainer_schema_lists_the_lightning_trainers_arguments():
    import pytorch_lightning as pl
    from lightning_fabric.connector import _PRECISION_INPUT

    params = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    fields = {f.name for f in dataclasses.fields(TrainerOptions)}
    assert fields == params - set(RUNNER_SET)
    literal = {str(v) for arg in typing.get_args(_PRECISION_INPUT) for v in typing.get_args(arg)}
    assert set(PRECISIONS) == literal


def test_logger_schemas_list_what_the_loggers_and_wandb_init_accept():
    import wandb
    from pytorch_lightning.loggers import CSVLogger, WandbLogger

    def names(fn) -> set[str]:
        return {n for n, p in inspect.signature(fn).parameters.items()
                if n != "self" and p.kind is not p.VAR_KEYWORD}

    assert {f.name for f in dataclasses.fields(CSVOptions)} == names(CSVLogger.__init__)
    wandb_fields = {f.name for f in dataclasses.fields(WandbOptions)}
    assert wandb_fields == (names(WandbLogger.__init__) - {"experiment"}) | names(wandb.init)


def test_the_default_configs_pass_the_group_checks(make_cfg):
    """Every trainer, logger and callbacks option as shipped passes the checks."""
    from runner.group_options import check_group_nodes, check_loggers, check_trainer_options

    for trainer in ("default", "cpu", "ddp_sim", "debug"):
        check_trainer_options(make_cfg([*TINY_SCALING, f"trainer={trainer}"]).trainer)
    for logger in ("default", "csv", "wandb", "tensorboard", "none"):
        cfg = make_cfg([*TINY_SCALING, f"logger={logger}"])
        check_group_nodes(cfg.logger, "logger")
        check_loggers(cfg.logger)
    for callbacks in ("default", "spectra", "checkpoint", "none"):
        check_group_nodes(make_cfg([*TINY_SCALING, f"callbacks={callbacks}"]).callbacks,
                          "callbacks")
