"""The spectral callbacks run where the module is: CPU checks that catch a tensor made on the
wrong device, and (`gpu` marker) the same callbacks and each task's tiny config on CUDA."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from test_callbacks import TinyRegression, metrics_columns, regression_loader

from callbacks import (
    FeatureSpectrum,
    HessianSpectrum,
    MatrixSpectrum,
    NTKSpectrum,
    WeightSpectrum,
)
from callbacks.base import SpectralCallback
from conftest import ROOT, compose_config
from helpers import PSEUDO, OnDevice, audit_factories, module_to_pseudo, on_pseudo_device
from runner.csv_logger import CSVLogger
from runner.run import run

NO_CUDA = "torch.cuda.is_available() is False: no CUDA device visible"
WIDTH = 4  # a 33-parameter model: Hutch++ with 3·33 products is the exact Hessian trace
DIM = 6 * WIDTH + WIDTH + WIDTH + 1
# per-snapshot counters and timings: not values of the spectra
NOT_COMPARED = ("wall_ms", "matvecs")


class DeviceRegression(TinyRegression):
    """TinyRegression whose spectral matrices are all made on the module's device."""

    def spectral_matrices(self):
        w = self.net[0].weight
        return {"w1": w, "w1_gram": w @ w.T, "rotation": torch.tensor(
            [[0.0, -2.0], [2.0, 0.0]], dtype=torch.float64, device=w.device)}


def make(name: str, **extra) -> SpectralCallback:
    """Return the callback `name` at the sizes these tests use, with no budget."""
    common = {"every_n_steps": 4, "budget_frac": None, **extra}
    return {
        "weights": lambda: WeightSpectrum(min_evals=1, **common),
        "features": lambda: FeatureSpectrum(**common),
        "hessian": lambda: HessianSpectrum(k=3, tol=1e-10, trace_matvecs=3 * DIM, **common),
        "hessian_density": lambda: HessianSpectrum(k=2, trace_matvecs=6, density=True,
                                                   density_probes=2, density_steps=5, **common),
        "ntk": lambda: NTKSpectrum(n_points=8, **common),
        "ntk_full": lambda: NTKSpectrum(n_points=8, trace_outputs=False, method="jacobian",
                                        **common),
        "matrices": lambda: MatrixSpectrum(**common),
    }[name]()


NAMES = ["weights", "features", "hessian", "hessian_density", "ntk", "ntk_full", "matrices"]


def fit_on(tmp_path: Path, callbacks: list[pl.Callback], accelerator: str = "cpu",
           max_steps: int = 8) -> pl.LightningModule:
    """Train DeviceRegression(WIDTH) with `callbacks` on `accelerator`; return the module."""
    module = DeviceRegression(width=WIDTH)
    trainer = pl.Trainer(max_steps=max_steps, callbacks=callbacks, accelerator=accelerator,
                         devices=1, default_root_dir=str(tmp_path),
                         logger=CSVLogger(save_dir=str(tmp_path), name="", version=""),
                         enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(module, train_dataloaders=regression_loader())
    return module


def test_callbacks_make_no_tensor_without_a_device(tmp_path):
    # driven as in test_callbacks: a real Trainer, every callback (and each code path) on
    cbs = [make(name) for name in NAMES]
    with audit_factories() as audit:
        fit_on(tmp_path, cbs)
    assert all(cb.disabled_reason is None for cb in cbs), [cb.disabled_reason for cb in cbs]
    assert audit.calls == [], "\n".join(f"{where}: {what}" for where, what in audit.calls)


def snapshot(cb: SpectralCallback, module: pl.LightningModule):
    """Return (arrays, scalars) of one prepare + compute of `cb` on `module` (a stub trainer
    gives the probe batches, as the train loader would)."""
    trainer = SimpleNamespace(train_dataloader=regression_loader(), datamodule=None)
    cb.prepare(trainer, module)
    return cb.compute(trainer, module)


@pytest.mark.parametrize("name", NAMES)
def test_callback_runs_on_a_second_device_and_gives_the_cpu_values(name):
    arrays, scalars = snapshot(make(name), DeviceRegression(width=WIDTH))
    module = module_to_pseudo(DeviceRegression(width=WIDTH))
    module._device = PSEUDO  # what LightningModule.to(device) records
    with on_pseudo_device():
        p_arrays, p_scalars = snapshot(make(name), module)
    assert sorted(p_arrays) == sorted(arrays) and sorted(p_scalars) == sorted(scalars)
    for key, value in p_arrays.items():
        assert isinstance(value, OnDevice), f"{key} is on {value.device}, not the module's"
        got = value._inner
        assert torch.allclose(got, arrays[key], rtol=1e-10, atol=1e-12, equal_nan=True), key
    for key, value in p_scalars.items():
        assert value == pytest.approx(scalars[key], rel=1e-10, abs=1e-12, nan_ok=True), key


@pytest.mark.gpu
@pytest.mark.parametrize("name", NAMES)
def test_callback_on_cuda_logs_the_cpu_values(tmp_path, name):
    if not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    logged = {}
    for accelerator in ("cpu", "gpu"):
        cb = make(name)
        fit_on(tmp_path / accelerator, [cb], accelerator)
        assert cb.disabled_reason is None, f"{accelerator}: {cb.disabled_reason}"
        assert (tmp_path / accelerator / "spectra" / f"{cb.probe}.npz").is_file()
        logged[accelerator] = {k: v for k, v in metrics_columns(tmp_path / accelerator).items()
                               if k.startswith(f"spectra/{cb.probe}/")
                               and not k.endswith(NOT_COMPARED)}
    cpu, gpu = logged["cpu"], logged["gpu"]
    assert cpu and sorted(gpu) == sorted(cpu)
    random = name == "hessian_density"  # other Hutch++ probes on the CUDA generator
    for key in cpu:
        if random and key.endswith("/trace"):
            assert all(math.isfinite(v) for v in gpu[key]), key
            continue
        assert np.allclose(gpu[key], cpu[key], rtol=1e-6, atol=1e-9, equal_nan=True), key


def _tiny() -> dict[str, list[str]]:
    spec = importlib.util.spec_from_file_location("tiny", ROOT / "tests" / "tasks" / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TINY


TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))


@pytest.mark.gpu
@pytest.mark.parametrize("task", TASKS)
def test_task_tiny_config_with_every_callback_on_cuda(task, tmp_path, caplog):
    if not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    tiny = _tiny()
    assert task in tiny, f"tests/tasks/tiny.py has no tiny overrides for {task}"
    cfg = compose_config([f"task={task}", *tiny[task], "trainer=gpu", "callbacks=spectra",
                          "logger=csv", "print_results=false"], tmp_path / "run",
                         tmp_path / "data")
    with caplog.at_level(logging.INFO, logger="spectrum.callbacks"):
        results = run(cfg)
    assert results["status"] == "completed"
    # a callback may be off for a task (no forward, no loss_fn, ...), never for its device
    bad = [r.message for r in caplog.records
           if any(w in r.message.lower() for w in ("device", "cuda", "cpu"))]
    assert not bad, bad
