"""The spectral callbacks in real Lightning runs: npz, scalars, plots, resume, bad values."""

from __future__ import annotations

import csv
import logging
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from callbacks import (
    FeatureSpectrum,
    HessianSpectrum,
    MatrixSpectrum,
    NTKSpectrum,
    WeightSpectrum,
)
from callbacks.base import log_spaced
from callbacks.sink import SpectrumSink, read_summaries
from callbacks.spectra import (
    alpha_req,
    dense_hessian,
    effective_rank,
    eigvals_sym,
    hessian_eigs,
    hessian_matvec,
    hutchpp_trace,
    ntk_metrics,
    participation_ratio,
    spectrum_summary,
    weight_metrics,
)
from conftest import TINY_SCALING
from runner.csv_logger import CSVLogger
from runner.run import run
from runner.wandb_records import find_run_file, history


class TinyRegression(pl.LightningModule):
    """A user's module: a 2-layer MLP on a fixed regression set, nothing spectrum-specific but
    `loss_fn` (for the Hessian) and, for MatrixSpectrum, a non-symmetric matrix."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, width), nn.Tanh(), nn.Linear(width, 1)).double()
        self.loss_fn = nn.MSELoss()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def spectral_matrices(self):
        w = self.net[0].weight
        return {"w1": w, "w1_gram": w @ w.T, "rotation": torch.tensor(
            [[0.0, -2.0], [2.0, 0.0]], dtype=torch.float64)}

    def spectral_reference(self):
        return {"rotation": {"radius": 1.0}}


def regression_loader(n: int = 64) -> DataLoader:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    y = torch.sin(x[:, :1]) + 0.1 * x[:, 1:2]
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=False)


def fit(tmp_path, callbacks, max_steps=12, module=None, ckpt_path=None):
    module = module or TinyRegression()
    trainer = pl.Trainer(max_steps=max_steps, callbacks=callbacks, default_root_dir=str(tmp_path),
                         logger=CSVLogger(save_dir=str(tmp_path), name="", version=""),
                         enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    trainer.fit(module, train_dataloaders=regression_loader(), ckpt_path=ckpt_path)
    return trainer, module


def metrics_columns(tmp_path) -> dict[str, list[float]]:
    with open(tmp_path / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    cols: dict[str, list[float]] = {}
    for row in rows:
        for k, v in row.items():
            if v not in ("", None):
                cols.setdefault(k, []).append(float(v))
    return cols


class ReferencedRegression(TinyRegression):
    """TinyRegression with an edge for its symmetric matrix: MatrixSpectrum counts outliers."""

    def spectral_reference(self):
        return {"rotation": {"radius": 1.0}, "w1_gram": {"edge": 1.0}}


WEIGHT_KEYS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank",
               "entropy", "num_spikes", "ks_distance")  # the README's per-layer list


def weight_values(module: TinyRegression) -> dict[str, float]:
    """What WeightSpectrum must log: weight_metrics of each Linear weight, and mean_alpha."""
    out, alphas = {}, []
    for name in ("net.0", "net.2"):
        metrics = weight_metrics(module.get_submodule(name).weight.detach())
        out.update({f"{name}/{key}": metrics[key] for key in WEIGHT_KEYS})
        alphas.append(metrics["alpha"])
    finite = [a for a in alphas if math.isfinite(a)]
    out["mean_alpha"] = sum(finite) / len(finite)
    return out


def feature_values(module: TinyRegression, inputs: torch.Tensor) -> dict[str, float]:
    """What FeatureSpectrum must log: summaries of the eigenvalues of torch.cov of each Linear
    layer's outputs on the probe inputs (the direct out-dimensional covariance)."""
    outputs = {}
    hooks = [module.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: outputs.__setitem__(n, o)) for n in ("net.0", "net.2")]
    with torch.no_grad():
        module.eval()(inputs)
    for h in hooks:
        h.remove()
    out = {}
    for name, feats in outputs.items():
        cov = torch.cov(feats.T).reshape(feats.shape[1], feats.shape[1])
        ev = torch.linalg.eigvalsh(cov).flip(0).clamp(min=0.0)
        out[f"{name}/effective_rank"] = effective_rank(ev)
        out[f"{name}/participation_ratio"] = participation_ratio(ev)
        out[f"{name}/top_eig_share"] = float(ev[0] / ev.sum())
        positive = int((ev > 1e-12 * ev[0]).sum())
        if positive >= 8:
            out[f"{name}/alpha_req"] = alpha_req(ev, 1, positive // 2)
    out["mean_effective_rank"] = sum(out[f"{n}/effective_rank"] for n in outputs) / len(outputs)
    return out


def hessian_values(module: TinyRegression, cb: HessianSpectrum) -> dict[str, float]:
    """What HessianSpectrum must log: hessian_eigs and Hutch++ (seed 0) on its probe batch."""
    res = hessian_eigs(module, module.loss_fn, cb.batch, k=cb.k, which="LA", tol=cb.tol,
                      bound=cb.bound)
    out = {f"lambda_{i + 1}": float(v) for i, v in enumerate(res.eigenvalues)}
    out["converged"] = float(res.converged.float().mean())
    out["matvecs"] = float(res.n_matvecs)
    matvec, dim = hessian_matvec(module, module.loss_fn, cb.batch)
    out["trace"] = hutchpp_trace(matvec, dim, cb.trace_matvecs, seed=0).trace
    return out


def explicit_ntk(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output-traced NTK Σ_c J_c J_cᵀ from the full Jacobian (torch.autograd.functional)."""
    names = [n for n, _ in module.named_parameters()]
    blocks = torch.autograd.functional.jacobian(
        lambda *p: torch.func.functional_call(module, dict(zip(names, p)), (x,)),
        tuple(module.parameters()))
    jac = torch.cat([b.reshape(b.shape[0] * b.shape[1], -1) for b in blocks], dim=1)
    per_output = jac.reshape(x.shape[0], -1, jac.shape[1])  # (n, C, P)
    return torch.einsum("icp,jcp->ij", per_output, per_output)


def ntk_values(module: TinyRegression, cb: NTKSpectrum) -> dict[str, float]:
    """What NTKSpectrum must log: ntk_metrics of the explicit kernel with the probe targets,
    and the drift from the kernel of the initial weights (a fresh TinyRegression)."""
    module.eval()
    kernel, k0 = explicit_ntk(module, cb.x), explicit_ntk(TinyRegression(), cb.x)
    metrics = ntk_metrics(kernel, cb.y, k=cb.k)
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, list)}
    out["drift"] = float(torch.linalg.matrix_norm(kernel - k0) / torch.linalg.matrix_norm(k0))
    return out


def matrix_values(module: ReferencedRegression) -> dict[str, float]:
    """What MatrixSpectrum must log for w1 (rectangular: singular values), w1_gram (symmetric:
    eigenvalues, outliers above the edge 1.0) and the rotation (complex ±2i, radius 1)."""
    mats = {k: v.detach() for k, v in module.spectral_matrices().items()}
    out = {f"w1/{k}": v for k, v in spectrum_summary(torch.linalg.svdvals(mats["w1"])).items()}
    gram = eigvals_sym(mats["w1_gram"])
    out.update({f"w1_gram/{k}": v for k, v in spectrum_summary(gram).items()})
    out["w1_gram/outliers"] = float((gram > 1.0).sum())
    out.update({"w1/is_singular_values": 1.0, "w1_gram/is_eigvals_sym": 1.0,
                "rotation/is_eigvals": 1.0, "rotation/spectral_radius": 2.0,
                "rotation/max_real": 0.0, "rotation/outliers": 2.0})
    return out


def assert_logged(cb, expected: dict[str, float], cols: dict[str, list[float]],
                  rel: float = 1e-12) -> None:
    """The callback's last snapshot (step 12) logged exactly the finite `expected` values, under
    spectra/<probe>/<key>, and the CSV logger holds the same numbers."""
    step, logged = cb.sink.last
    assert step == 12
    finite = {k: v for k, v in expected.items() if math.isfinite(v)}
    assert set(logged) - {"wall_ms"} == set(finite), cb.probe
    for key, value in finite.items():
        assert logged[key] == pytest.approx(value, rel=rel, abs=1e-12), (cb.probe, key)
        assert cols[f"spectra/{cb.probe}/{key}"][-1] == logged[key], (cb.probe, key)


def test_every_callback_writes_npz_scalars_and_plot(tmp_path):
    cbs = [WeightSpectrum(every_n_steps=4, min_evals=1), FeatureSpectrum(every_n_steps=4),
           HessianSpectrum(every_n_steps=6, k=3), NTKSpectrum(every_n_steps=6, n_points=8),
           MatrixSpectrum(every_n_steps=4)]
    for cb in cbs:
        cb.budget_frac = None  # keep the full schedule for this check
    _, module = fit(tmp_path, cbs, module=ReferencedRegression())
    for probe in ("weights", "features", "hessian", "ntk", "matrices"):
        assert (tmp_path / "spectra" / f"{probe}.npz").is_file(), probe
        assert (tmp_path / "plots" / f"{probe}.png").stat().st_size > 1000, probe
    with np.load(tmp_path / "spectra" / "weights.npz") as w:
        assert list(w["net.0__steps"]) == [0, 4, 8, 12]
        assert w["net.0"].shape == (4, 6)  # min(16, 6) eigenvalues per step
    with np.load(tmp_path / "spectra" / "matrices.npz") as m:
        assert np.iscomplexobj(m["rotation"])  # non-symmetric: complex eigenvalues ±2i
        assert np.allclose(np.sort(m["rotation"][-1].imag), [-2.0, 2.0])
        assert m["w1"].shape[1] == 6 and m["w1_gram"].shape[1] == 16
    cols = metrics_columns(tmp_path)
    weights, features, hessian, ntk, matrices = cbs
    # each logged value is the library's (or a dense reference's) on the same weights and batch
    assert_logged(weights, weight_values(module), cols)
    assert_logged(features, feature_values(module, features.inputs), cols, rel=1e-9)
    assert_logged(hessian, hessian_values(module, hessian), cols)
    dense = torch.linalg.eigvalsh(dense_hessian(module, module.loss_fn, hessian.batch)).flip(0)
    assert (hessian.tol, hessian.bound) == (1e-3, "gap")  # the default's promise, checked here:
    for i in range(3):  # |θ − λ| ≤ residual²/gap ≤ tol·|θ| (measured 5e-5 relative on λ_1)
        assert hessian.sink.last[1][f"lambda_{i + 1}"] == pytest.approx(float(dense[i]), rel=1e-3)
    assert_logged(ntk, ntk_values(module, ntk), cols, rel=1e-9)
    assert cols["spectra/ntk/drift"][0] == 0.0
    assert_logged(matrices, matrix_values(module), cols)


def test_hessian_trace_is_exact_with_three_products_per_parameter(tmp_path):
    """Hutch++ with 3·dim products sketches the whole space: the logged trace is tr(H)."""
    module = TinyRegression(width=4)
    dim = sum(p.numel() for p in module.parameters())
    cb = HessianSpectrum(every_n_steps=100, k=2, trace_matvecs=3 * dim, budget_frac=None)
    fit(tmp_path, [cb], max_steps=4, module=module)
    exact = float(torch.trace(dense_hessian(module, module.loss_fn, cb.batch)))
    assert cb.sink.last[1]["trace"] == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize(("every", "steps"), [(1, [0, 4, 8, 12]), (2, [0, 8, 12])])
def test_epoch_schedule_snapshots_at_epoch_ends(tmp_path, every, steps):
    # 64 samples in batches of 16: an epoch is 4 steps; the last step is always recorded
    fit(tmp_path, [FeatureSpectrum(every_n_steps=1, every_n_epochs=every, budget_frac=None)])
    with np.load(tmp_path / "spectra" / "features.npz") as f:
        assert list(f["net.0__steps"]) == steps


def test_epoch_schedule_rejects_zero():
    with pytest.raises(ValueError, match="every_n_epochs=0 must be >= 1"):
        FeatureSpectrum(every_n_epochs=0)


def test_hessian_callback_matches_the_dense_hessian(tmp_path):
    cb = HessianSpectrum(every_n_steps=100, k=3, n_probe=64, tol=1e-10)
    _, module = fit(tmp_path, [cb], max_steps=5)
    dense = dense_hessian(module, module.loss_fn, cb.batch)
    top = torch.linalg.eigvalsh(dense).flip(0)[:3]
    with np.load(tmp_path / "spectra" / "hessian.npz") as h:
        logged = h["topk"][-1]
    assert np.allclose(logged, top.numpy(), rtol=1e-6, atol=1e-10)


class ExpandingNet(TinyRegression):
    """Expanding Linear and transformers-Conv1D layers (their spectra come from the inputs)."""

    def __init__(self) -> None:
        super().__init__()
        from transformers.pytorch_utils import Conv1D

        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 24), nn.Tanh(), Conv1D(40, 24), nn.Tanh(),
                                 nn.Linear(40, 1)).double()


def test_feature_spectra_of_expanding_layers_equal_the_output_covariance(tmp_path):
    cb = FeatureSpectrum(every_n_steps=100, budget_frac=None)
    _, module = fit(tmp_path, [cb], max_steps=5, module=ExpandingNet())
    outputs = {}
    hooks = [module.net[i].register_forward_hook(
        lambda m, a, o, i=i: outputs.__setitem__(f"net.{i}", o)) for i in (0, 2, 4)]
    with torch.no_grad():
        module.eval()(cb.inputs)
    for h in hooks:
        h.remove()
    with np.load(tmp_path / "spectra" / "features.npz") as f:
        assert sorted(k for k in f.files if not k.endswith("__steps")) == [
            "net.0", "net.2", "net.4"]  # the Conv1D is watched by default
        for name, out in outputs.items():
            cov = torch.cov(out.T).reshape(out.shape[1], out.shape[1])
            direct = torch.linalg.eigvalsh(cov).flip(0).clamp(min=0.0).numpy()
            logged = f[name][-1]
            assert logged.shape == direct.shape, name
            assert np.allclose(logged, direct, rtol=1e-8, atol=1e-11 * direct[0]), name
        assert np.count_nonzero(f["net.2"][-1]) == 24  # rank <= in = 24 of 40 (exact zeros)


class TinyTokens(pl.LightningModule):
    """A sequence model: (batch, 8) token ids -> (batch, 8, 12) features -> next-token logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.proj = nn.Embedding(20, 12), nn.Linear(12, 20)

    def forward(self, x):
        return self.proj(torch.tanh(self.embed(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x).reshape(-1, 20), y.reshape(-1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_sequence_probe_forwards_only_the_samples_max_rows_needs(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(20, (64, 9), generator=gen)
    loader = DataLoader(TensorDataset(tokens[:, :-1], tokens[:, 1:]), batch_size=16)
    cb = FeatureSpectrum(every_n_steps=100, n_probe=32, max_rows=40, budget_frac=None)
    trainer = pl.Trainer(max_steps=2, callbacks=[cb], default_root_dir=str(tmp_path),
                         logger=False, enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False)
    module = TinyTokens()
    trainer.fit(module, train_dataloaders=loader)
    assert cb.inputs.shape == (5, 8)  # ⌈40 rows / 8 tokens⌉ of the 32 probe sequences
    assert torch.equal(cb.inputs, tokens[:5, :-1])
    with torch.no_grad():
        logits = module.eval()(cb.inputs).reshape(-1, 20)  # the 40 token rows
    direct = torch.linalg.eigvalsh(torch.cov(logits.T.double())).flip(0).clamp(min=0.0)
    with np.load(tmp_path / "spectra" / "features.npz") as f:
        # proj expands 12 -> 20: its spectrum comes from the inputs (8 exact zeros)
        assert np.allclose(f["proj"][-1], direct.numpy(), rtol=1e-5, atol=1e-6 * float(direct[0]))
        assert np.count_nonzero(f["proj"][-1]) == 12


def test_modes_are_restored_after_each_probe(tmp_path):
    seen = {}

    class ModeSpy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen[batch_idx] = pl_module.training

    fit(tmp_path, [FeatureSpectrum(every_n_steps=1, budget_frac=None), ModeSpy()], max_steps=4)
    assert len(seen) == 4 and all(seen.values())  # probed in eval mode, trained in train mode


@pytest.mark.parametrize("rank_zero", [True, False])
def test_only_global_rank_zero_probes_and_writes(tmp_path, monkeypatch, rank_zero):
    """On a process that is not global rank 0 no probe runs: nothing logged, no npz, no plot;
    the same fit on rank 0 probes at steps 0, 2, 4."""
    monkeypatch.setattr(pl.Trainer, "is_global_zero", property(lambda self: rank_zero))
    calls = []
    probe = FeatureSpectrum(every_n_steps=2, budget_frac=None)
    original = probe.compute
    monkeypatch.setattr(probe, "compute", lambda *a, **k: calls.append(1) or original(*a, **k))
    fit(tmp_path, [probe], max_steps=4)
    logged = metrics_columns(tmp_path) if (tmp_path / "metrics.csv").exists() else {}
    columns = [c for c in logged if c.startswith("spectra/")]
    npz = tmp_path / "spectra" / "features.npz"
    if rank_zero:
        assert len(calls) == 3 and columns and npz.is_file()
        with np.load(npz) as f:
            steps = [list(f[k]) for k in f.files if k.endswith("__steps")]
        assert steps and all(s == [0, 2, 4] for s in steps), steps
    else:
        assert calls == [] and columns == [] and not npz.exists()
        assert not (tmp_path / "plots").exists()


def test_resumed_run_appends_to_the_npz(tmp_path):
    first = MatrixSpectrum(every_n_steps=2, budget_frac=None)
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True,
                                        every_n_train_steps=4, save_top_k=0)
    trainer = pl.Trainer(max_steps=8, callbacks=[first, ckpt], default_root_dir=str(tmp_path),
                         logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyRegression(), train_dataloaders=regression_loader())
    with np.load(tmp_path / "spectra" / "matrices.npz") as m:
        assert list(m["w1__steps"]) == [0, 2, 4, 6, 8]
    second = MatrixSpectrum(every_n_steps=2, budget_frac=None)
    trainer = pl.Trainer(max_steps=12, callbacks=[second], default_root_dir=str(tmp_path),
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(TinyRegression(), train_dataloaders=regression_loader(),
                ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    with np.load(tmp_path / "spectra" / "matrices.npz") as m:
        assert list(m["w1__steps"]) == [0, 2, 4, 6, 8, 10, 12]  # appended, none duplicated


def test_end_plots_start_after_every_probes_last_snapshot(tmp_path, monkeypatch):
    """A plot drawn while another probe takes its last snapshot shares the CPU with it (on a
    2-core machine that slowed the last feature snapshot by a third): plots come after all."""
    events = []
    record, plot = SpectrumSink.record, SpectrumSink.plot
    monkeypatch.setattr(SpectrumSink, "record", lambda self, step, *a, **k: (
        events.append(("record", self.probe, step)), record(self, step, *a, **k))[1])
    monkeypatch.setattr(SpectrumSink, "plot", lambda self, *a, **k: (
        events.append(("plot", self.probe)), plot(self, *a, **k))[1])
    cbs = [WeightSpectrum(every_n_steps=100, min_evals=1, plot_in_background=False),
           FeatureSpectrum(every_n_steps=100, plot_in_background=False),
           MatrixSpectrum(every_n_steps=100, plot_in_background=False)]
    fit(tmp_path, cbs, max_steps=4)
    records = [e for e in events if e[0] == "record"]
    assert records == [("record", p, s) for s in (0, 4) for p in ("weights", "features",
                                                                  "matrices")]
    assert events[len(records):] == [("plot", p) for p in ("weights", "features", "matrices")]
    for probe in ("weights", "features", "matrices"):
        summary = read_summaries(tmp_path)[probe]
        assert (summary["step"], summary["plot"]) == (4, f"plots/{probe}.png")


def test_a_resumed_run_that_had_finished_keeps_its_summary(tmp_path):
    """Its fit skips training: no last snapshot, so no plot or summary to replace the old one."""
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True,
                                        every_n_train_steps=4, save_top_k=0)
    trainer = pl.Trainer(max_steps=4, callbacks=[MatrixSpectrum(), ckpt],
                         default_root_dir=str(tmp_path), logger=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyRegression(), train_dataloaders=regression_loader())
    before = read_summaries(tmp_path)["matrices"]
    assert before["step"] == 4 and before["headline"]
    again = MatrixSpectrum()
    trainer = pl.Trainer(max_steps=4, callbacks=[again], default_root_dir=str(tmp_path),
                         logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False)
    trainer.fit(TinyRegression(), train_dataloaders=regression_loader(),
                ckpt_path=str(tmp_path / "checkpoints" / "last.ckpt"))
    assert again.sink.last is None  # nothing computed in this fit
    assert read_summaries(tmp_path)["matrices"] == before


def test_nan_weights_log_a_warning_instead_of_crashing(tmp_path, caplog):
    module = TinyRegression()

    class Poison(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.net[0].weight[0, 0] = float("nan")

    with caplog.at_level(logging.WARNING, logger="spectrum.callbacks"):
        fit(tmp_path, [Poison(), WeightSpectrum(every_n_steps=1, min_evals=1, budget_frac=None)],
            max_steps=6, module=module)
    assert any("net.0" in r.message and "NaN" in r.message for r in caplog.records)
    with np.load(tmp_path / "spectra" / "weights.npz") as w:
        assert list(w["net.0__steps"]) == [0, 1, 2]  # the poisoned steps were skipped


def test_budget_spaces_snapshots_out_and_says_so(tmp_path, caplog):
    slow = MatrixSpectrum(every_n_steps=1, budget_frac=0.01)
    with caplog.at_level(logging.INFO, logger="spectrum.callbacks"):
        fit(tmp_path, [slow], max_steps=30)
    with np.load(tmp_path / "spectra" / "matrices.npz") as m:
        steps = list(m["w1__steps"])
    assert len(steps) < 31 and steps[0] == 0 and steps[-1] == 30
    assert max(np.diff(steps)) >= 2
    notes = [r.getMessage() for r in caplog.records if "budget" in r.getMessage()]
    gaps = [int(n.split("at least ")[1].split(" ")[0]) for n in notes]
    assert gaps and gaps == sorted(set(gaps))  # one notice per change, each a wider spacing


def test_log_spaced_schedule():
    steps = [s for s in range(60) if log_spaced(s, 1.5)]
    assert steps == [0, 1, 2, 3, 5, 7, 11, 17, 25, 38, 57]


def test_sink_pads_and_keeps_complex(tmp_path):
    sink = SpectrumSink(tmp_path, "probe")
    sink.record(0, {"a": torch.tensor([1.0, 2.0]), "z": torch.tensor([1j, -1j])}, {}, [])
    sink.record(5, {"a": torch.tensor([3.0, 4.0, 5.0])}, {}, [])
    with np.load(tmp_path / "spectra" / "probe.npz") as data:
        assert data["a"].shape == (2, 3) and np.isnan(data["a"][0, 2])
        assert list(data["a__steps"]) == [0, 5]
        assert np.iscomplexobj(data["z"])
    again = SpectrumSink(tmp_path, "probe")  # a resumed run reloads what was there
    assert again.history["a"][0] == [0, 5] and len(again.history["a"][1][0]) == 2


def test_spectra_callbacks_on_the_optimizer_scaling_task(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    results = run(make_cfg([*TINY_SCALING, "callbacks=spectra", "task.optimizer=natural_gradient",
                            "callbacks.matrix_spectrum.budget_frac=null",
                            "callbacks.matrix_spectrum.every_n_steps=5"], run_dir))
    assert results["status"] == "completed"
    with np.load(run_dir / "spectra" / "matrices.npz") as m:
        assert list(m["sigma_hat__steps"]) == [0, 5, 10]
        sigma = m["sigma_hat"][-1]
        precond = m["preconditioned"][-1]
    assert sigma.shape == (32,) and np.all(sigma > 0)
    assert np.allclose(precond, 1.0, atol=1e-4)  # NG preconditioning flattens the spectrum
    records = history(find_run_file(run_dir))
    logged = [r for r in records if "spectra/matrices/sigma_hat/top1" in r]
    assert logged and logged[-1]["spectra/matrices/sigma_hat/top1"] == pytest.approx(sigma.max())
    hists = [r for r in records if "spectra/matrices/sigma_hat/histogram/_type" in r]
    assert hists and hists[-1]["spectra/matrices/sigma_hat/histogram/_type"] == "histogram"
    assert sum(hists[-1]["spectra/matrices/sigma_hat/histogram/values"]) == 32
    assert (run_dir / "plots" / "matrices.png").is_file()


def test_plots_draw_at_most_max_lines_steps_with_first_and_last():
    from callbacks.plots import shown_steps

    picked = shown_steps(100, 16)
    assert len(picked) == 16 and picked[0] == 0 and picked[-1] == 99
    assert picked == sorted(set(picked))
    assert shown_steps(5, 16) == [0, 1, 2, 3, 4]


class TinyBatchNorm(TinyRegression):
    """The regression MLP with a BatchNorm layer (a one-sample forward in train mode raises)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(),
                                 nn.Linear(16, 1)).double()


def test_ntk_probe_works_on_a_batchnorm_model_and_restores_train_mode(tmp_path):
    ntk = NTKSpectrum(every_n_steps=4, n_points=8, plot=False)
    _, module = fit(tmp_path, [ntk], max_steps=8, module=TinyBatchNorm())
    assert ntk.disabled_reason is None, ntk.disabled_reason
    assert module.net[1].training  # the probe's eval-mode forwards left train mode as it was
    with np.load(tmp_path / "spectra" / "ntk.npz") as data:
        assert list(data["eigenvalues__steps"]) == [0, 4, 8]
        kernel_top = data["eigenvalues"][-1][0]
    # the probe's kernel is the eval-mode NTK: J Jᵀ of the running-statistics network
    module.eval()
    x, names = ntk.x, [n for n, _ in module.named_parameters()]
    blocks = torch.autograd.functional.jacobian(
        lambda *p: torch.func.functional_call(module, dict(zip(names, p)), (x,)).sum(-1),
        tuple(module.parameters()))
    jac = torch.cat([b.reshape(len(x), -1) for b in blocks], dim=1)
    assert kernel_top == pytest.approx(float(torch.linalg.eigvalsh(jac @ jac.T)[-1]), rel=1e-9)


def test_the_budget_says_each_change_of_spacing(caplog):
    """Over budget twice: two notices, each with the new spacing (the second with the old)."""
    import time

    cb = WeightSpectrum(budget_frac=0.1)
    cb._start, cb._own_s, cb._prev_step = time.perf_counter() - 10.0, 5.0, 0
    with caplog.at_level(logging.INFO, logger="spectrum"):
        cb._check_budget(4)
        cb._prev_step = 4
        cb._check_budget(12)
    notes = [r.getMessage() for r in caplog.records if "steps apart" in r.getMessage()]
    assert len(notes) == 2
    assert "at least 8 steps apart" in notes[0] and "(were" not in notes[0]
    assert "at least 16 steps apart (were 8)" in notes[1]
    assert cb._min_gap == 16


def test_a_checkpoint_carries_the_schedule_the_probe_set_and_the_reference_kernel():
    """What a resumed NTK probe needs to continue: its last steps, spacing, own time, the fixed
    probe inputs (a resumed loader starts mid-epoch) and K_0 (the drift's reference)."""
    first = NTKSpectrum(every_n_steps=3, n_points=4)
    first._last_step, first._prev_step, first._min_gap, first._own_s = 9, 6, 2, 1.5
    first._probe_set = (torch.arange(8.0).reshape(4, 2), None)
    first.k0 = torch.eye(4)
    state = first.state_dict()
    second = NTKSpectrum(every_n_steps=3, n_points=4)
    assert second.state_key == first.state_key  # the same settings find their state again
    assert NTKSpectrum(every_n_steps=5, n_points=4).state_key != first.state_key
    second.load_state_dict(state)
    assert (second._last_step, second._prev_step, second._min_gap, second._own_s) == (9, 6, 2, 1.5)
    assert torch.equal(second._probe_set[0], first._probe_set[0])
    assert torch.equal(second._carried["k0"], torch.eye(4))
    assert not second.due(10) and second.due(12)  # the schedule continues from step 9


class FirstLayerNTK(TinyRegression):
    """A module that names the parameters its NTK is over (the task attribute NTKSpectrum reads)."""

    ntk_param_filter = r"^net\.0\."


@pytest.mark.parametrize("layer_filter", [None, r"^net\.2\."])
def test_ntk_probe_uses_the_modules_parameter_filter_unless_the_config_sets_one(
        tmp_path, layer_filter):
    """With layer_filter None the kernel is J Jᵀ over the module's `ntk_param_filter` (the first
    layer: its J alone, not the full network's); a configured layer_filter wins over it."""
    ntk = NTKSpectrum(every_n_steps=4, n_points=8, plot=False, budget_frac=None,
                      layer_filter=layer_filter)
    _, module = fit(tmp_path, [ntk], max_steps=4, module=FirstLayerNTK())
    with np.load(tmp_path / "spectra" / "ntk.npz") as data:
        logged = torch.as_tensor(data["eigenvalues"][-1], dtype=torch.float64)
    module.eval()
    x = ntk.x
    chosen = [p for n, p in module.named_parameters()
              if (n.startswith("net.0.") if layer_filter is None else n.startswith("net.2."))]
    rest = [p for p in module.parameters() if all(p is not q for q in chosen)]
    for p in rest:
        p.requires_grad_(False)
    rows = []
    for xi in x:
        grads = torch.autograd.grad(module(xi[None]).sum(), chosen)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    J = torch.stack(rows)
    expected = torch.linalg.eigvalsh(J @ J.T).flip(0)
    assert torch.allclose(logged[: len(expected)], expected, rtol=1e-9, atol=1e-12)
