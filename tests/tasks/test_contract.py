"""Every task in conf/task/ satisfies the task contract (tasks/base/contract.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from callbacks.spectra import effective_rank
from conftest import CONF, compose_config
from runner.run import run
from runner.task_params import build_params, resolved_params
from runner.validation import ConfigError
from tasks.base import TensorDataModule
from tasks.base.contract import META_KEYS, enum_type, field_defaults, task_parts
from tiny import TINY

TASK_YAMLS = sorted((CONF / "task").glob("*.yaml"))
NAMES = [p.stem for p in TASK_YAMLS]


def yaml_params(path: Path) -> dict:
    node = OmegaConf.load(str(path))
    return {k: v for k, v in OmegaConf.to_container(node).items() if k not in META_KEYS}


def test_every_task_has_tiny_overrides():
    assert sorted(TINY) == NAMES


@pytest.mark.parametrize("path", TASK_YAMLS, ids=NAMES)
def test_parts_subclass_the_bases(path):
    parts = task_parts(path)
    assert parts.name == path.stem
    assert issubclass(parts.data, TensorDataModule), parts.data
    assert issubclass(parts.module, pl.LightningModule), parts.module
    assert parts.analysis is not None and callable(parts.analysis.summarize)


@pytest.mark.parametrize("path", TASK_YAMLS, ids=NAMES)
def test_yaml_lists_every_parameter_with_its_dataclass_default_and_a_comment(path):
    parts = task_parts(path)
    defaults = field_defaults(parts.config)
    given = yaml_params(path)
    assert list(given) == list(defaults), "yaml keys (in order) must equal the Config fields"
    for key, value in defaults.items():
        assert given[key] == value, f"task.{key}: yaml {given[key]!r} vs Config {value!r}"
    lines = {line.split(":", 1)[0]: line for line in path.read_text().splitlines()
             if line and not line.startswith((" ", "#"))}
    for key in defaults:
        assert "#" in lines[key], f"task.{key} has no one-line comment in {path.name}"


@pytest.mark.parametrize("path", TASK_YAMLS, ids=NAMES)
def test_choice_keys_are_enums_rejected_with_their_values(path):
    parts = task_parts(path)
    node = OmegaConf.load(str(path))
    enums = [f for f in dataclasses.fields(parts.config) if enum_type(f) is not None]
    for field in enums:
        bad = node.copy()
        bad[field.name] = "no_such_choice"
        with pytest.raises(ConfigError) as err:
            build_params(bad)
        message = str(err.value)
        assert f"task.{field.name}='no_such_choice'" in message
        assert "one of: " + ", ".join(m.value for m in enum_type(field)) in message
    bogus = node.copy()
    bogus["no_such_key"] = 1
    with pytest.raises(ConfigError, match=f"task.no_such_key .* is not a parameter of task "
                                          f"{parts.name}"):
        build_params(bogus)


@pytest.fixture(scope="module")
def plain_runs(tmp_path_factory, data_dir):
    """Factory: task name -> (results, run directory, config) of its tiny run with checkpointing
    alone, run once per task for the two tests below."""
    done: dict[str, tuple[dict, Path, DictConfig]] = {}

    def plain(name: str) -> tuple[dict, Path, DictConfig]:
        if name not in done:
            run_dir = tmp_path_factory.mktemp(f"plain_{name}")
            cfg = compose_config([f"task={name}", *TINY[name], "logger=csv",
                                  "callbacks=checkpoint", "print_results=false"], run_dir,
                                 data_dir)
            done[name] = (run(cfg), run_dir, cfg)
        return done[name]
    return plain


@pytest.mark.parametrize("name", NAMES)
def test_tiny_run_records_params_and_reports_only_measured_metrics(name, plain_runs):
    results, run_dir, cfg = plain_runs(name)
    assert results["status"] == "completed"
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk["params"] == resolved_params(build_params(cfg.task))
    for override in TINY[name]:
        key, value = override.removeprefix("task.").split("=", 1)
        assert str(on_disk["params"][key]) == value
    echoed = set(on_disk["paper_metrics"]) & set(on_disk["params"])
    assert not echoed, f"paper_metrics repeat parameters: {sorted(echoed)}"
    numbers = [v for v in on_disk["paper_metrics"].values() if isinstance(v, float)]
    assert numbers and all(math.isfinite(v) for v in numbers)
    # summarize() reads a real results.json (a one-run sweep: a fit over widths has no row)
    rows = task_parts(CONF / "task" / f"{name}.yaml").analysis.summarize(
        [{**on_disk, "job_dir": str(run_dir)}])
    assert isinstance(rows, pd.DataFrame)


@pytest.mark.parametrize("name", NAMES)
def test_data_is_built_once_then_loaded_from_the_cache(name, make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg([f"task={name}", *TINY[name]], tmp_path / "run")
    parts = task_parts(CONF / "task" / f"{name}.yaml")
    params = build_params(cfg.task)
    first = parts.data(params=params, data_dir=str(tmp_path / "data"), seed=0)
    first.setup("fit")
    files = sorted((tmp_path / "data" / name).glob("*.safetensors"))
    assert files

    def refuse(self):
        raise AssertionError("rebuilt a cached draw")

    monkeypatch.setattr(parts.data, "build", refuse)
    again = parts.data(params=params, data_dir=str(tmp_path / "data"), seed=0)
    again.setup("fit")
    assert sorted(k for k in again.tensors) == sorted(k for k in first.tensors)
    for key, tensor in first.tensors.items():
        assert tensor.dtype == again.tensors[key].dtype
        assert tensor.equal(again.tensors[key]), key
    assert sorted((tmp_path / "data" / name).glob("*.safetensors")) == files


@pytest.mark.parametrize("name", NAMES)
def test_the_leave_on_spectra_do_not_change_what_a_run_computes(name, plain_runs, make_cfg,
                                                               tmp_path):
    """The default callback set (weights, features, matrices) only observes: the paper metrics
    equal a run with checkpointing alone, to the last bit (a probe that consumed the global
    random stream, or left a module in eval mode, would change them)."""
    plain, plain_dir, _ = plain_runs(name)
    base = [f"task={name}", *TINY[name], "logger=csv", "print_results=false"]
    watched = run(make_cfg([*base, "callbacks=default"], tmp_path / "watched"))
    def measured(metrics: dict) -> dict:
        """Without wall-clock timings (they differ between any two runs) and whether a cached
        model was loaded (the plain run may be the one that trained it)."""
        return {k: v for k, v in metrics.items() if not k.endswith(("wall_s", "_loaded"))}

    assert measured(watched["paper_metrics"]) == measured(plain["paper_metrics"])
    assert not list(plain_dir.glob("spectra/*.npz"))
    npz = sorted(p.stem for p in (tmp_path / "watched").glob("spectra/*.npz"))
    assert npz, "no probe of the leave-on set applies to this task"
    assert sorted(p.stem for p in (tmp_path / "watched").glob("plots/*.png")) == npz
    # the final table's numbers: the last snapshot of each probe, re-derived from its npz
    summaries = {p: v for p, v in watched["spectra"].items() if v["off"] is None}
    assert sorted(summaries) == npz
    for probe, summary in watched["spectra"].items():  # a probe that does not apply says why
        assert probe in summaries or (summary["off"] and summary["plot"] is None), summary
    for probe, summary in summaries.items():
        assert summary["plot"] == f"plots/{probe}.png" and summary["cost_s"] > 0
        with np.load(tmp_path / "watched" / "spectra" / f"{probe}.npz") as data:
            names = [k for k in data.files if not k.endswith("__steps")]
            assert summary["step"] == max(int(data[k + "__steps"][-1]) for k in names)
            assert summary["snapshots"] == max(len(data[k + "__steps"]) for k in names)
            last = {k: data[k][-1][~np.isnan(data[k][-1].real)] for k in names}
        if probe == "features":
            ranks = [effective_rank(torch.as_tensor(v), name=k) for k, v in last.items()]
            assert summary["headline"]["mean_effective_rank"] == pytest.approx(
                float(np.mean(ranks)), rel=1e-9)
        if probe == "matrices":
            for key, value in summary["headline"].items():
                name, metric = key.rsplit("/", 1)
                if metric == "top1":
                    assert value == pytest.approx(float(last[name].real.max()), rel=1e-9)
