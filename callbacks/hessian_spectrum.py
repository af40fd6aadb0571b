"""HessianSpectrum: top-k eigenvalues, trace and density of the loss Hessian on a fixed batch."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from callbacks.base import SpectralCallback
from callbacks.spectra import (
    hessian_eigs,
    hessian_matvec,
    hutchpp_trace,
    select_params,
    slq_density,
)
from callbacks.spectra.lanczos import BOUNDS, REORTHS
from callbacks.spectra.validate import check_choice


class HessianSpectrum(SpectralCallback):
    """Lanczos top-`k` eigenvalues of H = ∇²_θ loss on a fixed probe batch (ordered, with
    converged flags), the Hutch++ trace estimate, and (with `density`) the stochastic Lanczos
    quadrature density. The loss is `pl_module.loss_fn(outputs, targets)`; `layer_filter` picks
    parameters by name (regex). Probe vectors are drawn on the device of those parameters."""

    probe = "hessian"
    headline = ("lambda_1", "trace")
    default_every_n_steps = 100

    def __init__(self, k: int = 5, n_probe: int = 32, trace_matvecs: int = 30,
                 density: bool = False, density_probes: int = 4, density_steps: int = 40,
                 tol: float = 1e-3, bound: str = "gap", reorth: str = "partial",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        check_choice(bound, BOUNDS, "bound")  # at construction: a config error, not a skip
        check_choice(reorth, REORTHS, "reorth")
        self.k, self.n_probe, self.trace_matvecs = k, n_probe, trace_matvecs
        self.density, self.density_probes, self.density_steps = (density, density_probes,
                                                                 density_steps)
        self.tol = tol
        self.bound = bound
        self.reorth = reorth
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not callable(getattr(pl_module, "loss_fn", None)):
            raise AttributeError(f"{type(pl_module).__name__} has no loss_fn(outputs, targets)")
        x, y = self.probe_set(trainer, pl_module, self.n_probe)
        if y is None:
            raise ValueError("the probe batch has no targets for the loss")
        self.batch = (x, y)

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        pl_module.eval()
        loss_fn = pl_module.loss_fn
        result = hessian_eigs(pl_module, loss_fn, self.batch, k=self.k, which="LA",
                              param_filter=self.layer_filter, tol=self.tol, bound=self.bound,
                              reorth=self.reorth)
        arrays = {"topk": result.eigenvalues}
        scalars = {f"lambda_{i + 1}": float(v) for i, v in enumerate(result.eigenvalues)}
        scalars["converged"] = float(result.converged.float().mean())
        scalars["matvecs"] = float(result.n_matvecs)
        params = [p for _, p in select_params(pl_module, param_filter=self.layer_filter)]
        device = params[0].device
        matvec, dim = hessian_matvec(pl_module, loss_fn, self.batch, params)
        scalars["trace"] = float(hutchpp_trace(matvec, dim, self.trace_matvecs, device=device,
                                               seed=0).trace)
        if self.density:
            grid, dens = slq_density(matvec, dim, n_probes=self.density_probes,
                                     n_steps=self.density_steps, device=device, seed=0)
            arrays["density_grid"], arrays["density"] = grid, dens
        return arrays, scalars
