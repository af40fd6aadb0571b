"""NTKSpectrum: the empirical neural tangent kernel on fixed probe points, and its drift."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from callbacks.base import SpectralCallback, restore_modes
from callbacks.spectra import eigvals_sym, flatten_ntk, ntk_matrix, ntk_metrics
from callbacks.spectra.ntk import NTK_METHODS
from callbacks.spectra.validate import check_choice


class NTKSpectrum(SpectralCallback):
    """Eigenvalues of K_t = J_t J_tᵀ on `n_points` fixed inputs (output-traced (n, n) kernel by
    default; the full (n·C, n·C) kernel with `trace_outputs: false`), its trace, top-k, condition
    number, effective rank, kernel-target alignment (when the probe batch has targets), and the
    drift ‖K_t − K_0‖_F / ‖K_0‖_F from the first snapshot. `layer_filter` picks parameters by
    name (regex), e.g. only LoRA or only one layer; when it is None, a module's own
    `ntk_param_filter` attribute (a task's choice) applies, otherwise every trainable parameter.
    `method` as in `ntk_matrix`. Models with more than `max_outputs` outputs per sample turn the
    callback off with a message."""

    carried = ("k0",)  # the first snapshot's kernel: a resumed run's drift is from the same K_0

    probe = "ntk"
    headline = ("lambda_max", "drift")
    default_every_n_steps = 100

    def __init__(self, n_points: int = 32, k: int = 10, method: str = "auto",
                 trace_outputs: bool = True, max_outputs: int = 100, **kwargs) -> None:
        super().__init__(**kwargs)
        check_choice(method, NTK_METHODS, "method")  # at construction: a config error
        self.max_outputs = max_outputs
        self.n_points, self.k, self.method, self.trace_outputs = (n_points, k, method,
                                                                  trace_outputs)
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.k0: torch.Tensor | None = None

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.x, y = self.probe_set(trainer, pl_module, self.n_points)
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()  # one sample through BatchNorm: only its running statistics apply
        try:
            with torch.no_grad():
                outputs = pl_module(self.x[:1]).numel()
        finally:
            restore_modes(modes)
        if outputs > self.max_outputs:
            raise ValueError(f"the model has {outputs} outputs per sample, more than max_outputs="
                             f"{self.max_outputs} (the NTK is {outputs}x{outputs} per pair of "
                             "points); raise callbacks.ntk_spectrum.max_outputs to compute it")
        self.y = y.to(torch.float64) if y is not None and y.is_floating_point() else None

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        pl_module.eval()
        layers = self.layer_filter or getattr(pl_module, "ntk_param_filter", None)
        kernel = flatten_ntk(ntk_matrix(pl_module, self.x, method=self.method,
                                        param_filter=layers,
                                        trace_outputs=self.trace_outputs).to(torch.float64))
        # alignment needs one target entry per kernel row (regression targets)
        target = self.y if self.y is not None and self.y.numel() == kernel.shape[0] else None
        metrics = ntk_metrics(kernel, target, k=self.k, name="ntk")
        scalars = {key: float(v) for key, v in metrics.items() if not isinstance(v, list)}
        if self.k0 is None:
            self.k0 = kernel.clone()
        scalars["drift"] = float(torch.linalg.matrix_norm(kernel - self.k0)
                                 / torch.linalg.matrix_norm(self.k0))
        return {"eigenvalues": torch.flip(eigvals_sym(kernel, name="ntk"), (0,))}, scalars
