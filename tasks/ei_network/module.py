"""The ei_network LightningModule: theory vs empirical spectrum vs simulated regime.

mode=simulate (one training step, no gradient): compute the theory (outliers λ±(n), bulk radius,
predicted regime), the eigenvalues of J (dense or sparse, cached as part "eigvals" of the data
module's cache, `tasks.base.data.cached_tensors`, keyed by the draw and the spectrum code), simulate
the rate dynamics and classify the regime from the order parameters.
mode=infer: fit the mean couplings and ranges to the recording (the data) by Adam through the
Trainer; the recovered parameters give a recovered spectrum and regime.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

from tasks.base.contract import resolved_params
from tasks.base.data import data_code_hash
from tasks.ei_network import order, spectrum
from tasks.ei_network.config import POPS, Config
from tasks.ei_network.data import run_dynamics
from tasks.ei_network.inference import MeanFieldFit, observed_input
from tasks.ei_network.simulate import Recording
from tasks.ei_network.spectrum import (
    compare,
    dense_eigenvalues,
    pack_eigenvalues,
    relative_error,
    sparse_eigenvalues,
    unpack_eigenvalues,
)
from tasks.ei_network.theory import Theory, outliers_tensor, theory, theory_from_config

log = logging.getLogger("spectrum")
GBAR_UNIT = 10.0          # ḡ = GBAR_UNIT·u: puts couplings and log-ranges on one scale for Adam
INFER_INIT_GBAR = (6.0, 6.0, -6.0, -6.0)   # a neutral start, not any preset
INFER_INIT_RANGE = 0.06                     # paper-size range, times range_scale
THRESHOLD_KEYS = ("thr_activity", "thr_global_sync", "thr_local_sync", "thr_moran",
                  "thr_static", "thr_osc_std")


def observe(rec: Recording, cfg: Config) -> dict[str, Any]:
    """Return the order parameters and the observed regime of a recording ('diverged' if NaN)."""
    if rec.diverged:
        log.warning("ei_network: the simulation diverged (NaN/Inf rates at t=%s); "
                    "observed regime = diverged", rec.diverged_at)
        return {"observed_regime": "diverged", "diverged": True,
                "diverged_at": rec.diverged_at}
    keep = rec.times >= cfg.burn_in - 1e-9
    rates = order.e_rates(rec.x[keep], cfg.n_exc, cfg.side_exc, cfg.dim)
    ops = order.order_parameters(rates, cfg.dim, cfg.dt * cfg.record_every, cfg.tau)
    thr = {k: getattr(cfg, k) for k in THRESHOLD_KEYS}
    return {"observed_regime": order.classify(ops, thr), "diverged": False, **ops}


def theory_metrics(th: Theory, prefix: str = "") -> dict[str, Any]:
    """Return the theory's numbers: regime, R, λ*, its frequency and wave vector, outlier count."""
    return {f"{prefix}predicted_regime": th.regime,
            f"{prefix}bulk_radius_theory": th.radius,
            f"{prefix}top_outlier_theory": th.lambda_star,
            f"{prefix}predicted_frequency": th.frequency,
            f"{prefix}predicted_wave_vector": th.k_star.tolist(),
            f"{prefix}predicted_wavenumber": th.wavenumber}


class EINetworkModule(pl.LightningModule):
    """One parameter set of the spatial E/I network: spectrum, theory, dynamics, regime."""

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = params
        self.save_hyperparameters(resolved_params(params))
        self.automatic_optimization = params.mode == "infer"
        self.theory = theory_from_config(params)
        self.outcome: dict[str, Any] = {}
        self.j: torch.Tensor | None = None
        self.data_seed = 0
        self.info: dict = {}
        self.eigvals: torch.Tensor | None = None
        if params.mode == "infer":
            self.gbar_u = nn.Parameter(torch.tensor(INFER_INIT_GBAR, dtype=torch.float64)
                                       / GBAR_UNIT)
            self.log_range = nn.Parameter(torch.full((4,), math.log(INFER_INIT_RANGE
                                                                    * params.scale),
                                                     dtype=torch.float64))

    # ------------------------------------------------------------------ set-up
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        self.j, self.info, self.data_seed = dm.j, dm.info, dm.seed
        if self.cfg.mode == "infer":
            c = self.cfg
            u, phi = observed_input(dm.recording.x, c.dt * c.record_every, c.tau, c.n_exc,
                                    c.inh_gain_scale)
            n_train = max(1, int(round(c.infer_train_frac * u.shape[0])))
            self.fits = {"train": MeanFieldFit(u[:n_train], phi[:n_train], c.n_exc,
                                               c.side_exc, c.side_inh, c.dim)}
            if u.shape[0] - n_train >= 2:
                self.fits["heldout"] = MeanFieldFit(u[n_train:], phi[n_train:], c.n_exc,
                                                    c.side_exc, c.side_inh, c.dim)

    def configure_optimizers(self) -> torch.optim.Optimizer | None:
        if self.cfg.mode == "infer":
            return torch.optim.Adam(self.parameters(), lr=self.cfg.infer_lr)
        return None

    # ------------------------------------------------------------------ spectrum
    def _eigenvalues(self) -> tuple[torch.Tensor, float | None, bool]:
        """Return (eigenvalues of J, sparse bulk radius or None, computed now?) from the data
        module's cache (part "eigvals": the draw's key, eig_method, the subset for sparse and
        the source of `spectrum.py`), computing them once."""
        c = self.cfg
        dm = self.trainer.datamodule
        method = str(getattr(c.eig_method, "value", c.eig_method))
        key = {**dm.generating_config(), "eig_method": method,
               "eig_code": data_code_hash(spectrum)}
        if method == "sparse":
            key["sparse_subset"] = c.sparse_subset
        computed = []

        def build() -> dict[str, torch.Tensor]:
            computed.append(True)
            if method == "dense":
                return {"eigvals": pack_eigenvalues(dense_eigenvalues(self.j))}
            top, radius = sparse_eigenvalues(self.j, self.theory.outliers.size + 8,
                                             c.sparse_subset, c.n_exc, self.data_seed)
            return {"eigvals": pack_eigenvalues(top),
                    "bulk_radius": torch.tensor(radius, dtype=torch.float64)}

        tensors = dm.cached("eigvals", key, build)
        radius = float(tensors["bulk_radius"]) if "bulk_radius" in tensors else None
        return unpack_eigenvalues(tensors["eigvals"]), radius, bool(computed)

    def empirical_spectrum(self) -> dict[str, Any]:
        """Return the theory-vs-empirical spectrum metrics (eigenvalues from the shared cache)."""
        if self.cfg.eig_method == "none":
            return {}
        th = self.theory
        start = time.time()
        self.eigvals, radius, computed = self._eigenvalues()
        log.info("ei_network: eigenvalues of J %s", "computed and cached" if computed
                 else "loaded from the cache")
        out = compare(self.eigvals.numpy(), th.outliers, th.radius, th.lambda_star,
                      bulk_radius=radius)
        out["eig_wall_s"] = time.time() - start
        return out

    # ------------------------------------------------------------------ simulate mode
    def _simulate_and_compare(self) -> dict[str, Any]:
        c = self.cfg
        out = self.empirical_spectrum()
        start = time.time()
        rec = run_dynamics(c, self.j, self.data_seed)
        out["sim_wall_s"] = time.time() - start
        out.update(observe(rec, c))
        return out

    # ------------------------------------------------------------------ infer mode
    def recovered(self) -> tuple[dict[str, float], dict[str, float]]:
        """Return the fitted (ḡ, effective d) keyed by 'ee', 'ie', 'ei', 'ii'."""
        gbar = (self.gbar_u.detach() * GBAR_UNIT).tolist()
        widths = self.log_range.detach().exp().tolist()
        return dict(zip(POPS, gbar)), dict(zip(POPS, widths))

    def _loss(self, split: str) -> torch.Tensor:
        return self.fits[split].loss(self.gbar_u * GBAR_UNIT, self.log_range.exp())

    def _finish_inference(self) -> dict[str, Any]:
        c = self.cfg
        gbar, widths = self.recovered()
        th_hat = theory(gbar, widths, c.g_het, c.density, {"e": c.n_exc, "i": c.n_inh}, c.dim,
                        min(c.n_max_wave, max((c.side_inh - 1) // 2, 1)))
        dm = self.trainer.datamodule
        out = self.empirical_spectrum()
        out.update(observe(dm.recording, c))
        with torch.no_grad():
            out["fit_loss_train"] = float(self._loss("train"))
            out["fit_loss_heldout"] = (float(self._loss("heldout"))
                                       if "heldout" in self.fits else None)
        true_g, true_d = c.gbar(), c.ranges()
        out.update(theory_metrics(th_hat, prefix="recovered_"))
        out["recovered_regime"] = th_hat.regime
        out.update({f"recovered_gbar_{p}": gbar[p] for p in POPS})
        out.update({f"recovered_range_{p}": widths[p] / c.scale for p in POPS})
        # a true ḡ_ab = 0 or R = 0 leaves that relative error undefined (NaN), not a crash
        out["gbar_rel_error"] = float(np.max([relative_error(gbar[p], true_g[p]) for p in POPS]))
        out["range_rel_error"] = float(np.max([relative_error(widths[p], true_d[p])
                                               for p in POPS]))
        out["recovered_bulk_radius_rel_error"] = relative_error(th_hat.radius,
                                                                self.theory.radius)
        out["recovered_top_outlier_distance"] = abs(th_hat.lambda_star
                                                    - self.theory.lambda_star)
        out["recovered_regime_matches_observed"] = th_hat.regime == out["observed_regime"]
        out["recovered_regime_matches_truth"] = th_hat.regime == self.theory.regime
        return out

    # ------------------------------------------------------------------ Lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if self.cfg.mode == "infer":
            loss = self._loss("train")
            self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
            return loss
        if not self.outcome:
            self.outcome = self._simulate_and_compare()
            self.log("regime/match", float(self.outcome["observed_regime"]
                                           == self.theory.regime), on_step=True)
        return None

    def on_train_end(self) -> None:
        if self.cfg.mode == "infer" and not self.outcome:
            self.outcome = self._finish_inference()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ei_network_outcome"] = self.outcome

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.outcome = checkpoint.get("ei_network_outcome", {}) or {}

    # ------------------------------------------------------------------ outputs
    def paper_metrics(self) -> dict[str, Any]:
        """Return predicted vs observed regime, theory vs empirical spectrum, order parameters
        (the resolved parameters, preset values filled in, are in results.json["params"])."""
        if self.cfg.mode == "infer" and not self.outcome and self._trainer is not None:
            self.outcome = self._finish_inference()
        c = self.cfg
        out: dict[str, Any] = theory_metrics(self.theory)
        th_unwrapped = theory(c.gbar(), c.ranges(), c.g_het, c.density,
                              {"e": c.n_exc, "i": c.n_inh}, c.dim, 1, wrapped=False)
        out["bulk_radius_theory_unwrapped"] = th_unwrapped.radius
        out["n_outliers_theory"] = int(self.theory.outliers.size)
        out.update({"bulk_radius_empirical": None, "top_outlier_empirical": None})
        out.update(self.info)
        out.update(self.outcome)
        obs = out.get("observed_regime")
        out["regime_match"] = obs == self.theory.regime if obs is not None else None
        return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                for k, v in out.items()}

    def spectral_matrices(self) -> dict[str, Any]:
        """Return the connectivity matrix J (non-symmetric, rows = postsynaptic); when its full
        spectrum is already computed (and cached), that spectrum, so it is not recomputed."""
        if self.j is None:
            return {}
        if self.eigvals is not None and self.eigvals.numel() == self.j.shape[0]:
            return {"J": {"matrix": self.eigvals, "kind": "values"}}
        return {"J": self.j}

    def spectral_reference(self) -> dict[str, dict[str, Any]]:
        """Return the theory for J: {'J': {'radius': R, 'outliers': complex128 λ±(n) with |λ|>R}}."""
        return {"J": {"radius": float(self.theory.radius),
                      "outliers": outliers_tensor(self.theory)}}
