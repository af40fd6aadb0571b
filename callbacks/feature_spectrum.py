"""FeatureSpectrum: covariance spectra of named layers' outputs on a fixed probe set."""

from __future__ import annotations

import math
import re

import pytorch_lightning as pl
import torch
from torch import nn

from callbacks.base import SpectralCallback, probe_inputs
from callbacks.spectra import StreamingCovariance, alpha_req, effective_rank, participation_ratio

DEFAULT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def flatten_features(output: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Return (samples, dim) features: conv maps (b, c, *spatial) are averaged over space,
    sequences (b, t, d) become b·t token rows, (b, d) stays as it is."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and output.dim() > 2:
        return output.mean(dim=tuple(range(2, output.dim())))
    if output.dim() >= 3:
        return output.reshape(-1, output.shape[-1])
    return output.reshape(output.shape[0], -1)


class FeatureSpectrum(SpectralCallback):
    """Eigenvalues of the (float64, centred) covariance of each matched layer's output over a
    fixed probe set of `n_probe` samples, with effective rank exp(H(λ/Σλ)), participation ratio
    (Σλ)²/Σλ², top-eigenvalue share λ₁/Σλ and the power-law decay alpha_req.

    `layer_filter` is a regex on module names (default: every Linear/Conv layer); layers whose
    feature dimension exceeds `max_dim` are skipped; sequence outputs contribute a fixed,
    evenly strided subsample of at most `max_rows` token rows.
    """

    probe = "features"

    def __init__(self, n_probe: int = 64, max_dim: int = 2048, batch_size: int = 256,
                 max_rows: int = 4096, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_probe, self.max_dim, self.batch_size = n_probe, max_dim, batch_size
        self.max_rows = max_rows
        self.inputs: torch.Tensor | None = None

    def layers(self, pl_module: pl.LightningModule) -> list[tuple[str, nn.Module]]:
        """Return the (name, module) pairs whose outputs are watched."""
        if self.layer_filter:
            rx = re.compile(self.layer_filter)
            return [(n, m) for n, m in pl_module.named_modules() if n and rx.search(n)]
        return [(n, m) for n, m in pl_module.named_modules() if isinstance(m, DEFAULT_TYPES)]

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.inputs, _ = probe_inputs(trainer, pl_module, self.n_probe)
        if not self.layers(pl_module):
            raise ValueError(f"no layer matches layer_filter={self.layer_filter!r}")

    @torch.no_grad()
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        layers = self.layers(pl_module)
        covs: dict[str, StreamingCovariance] = {}

        def hook_for(name: str):
            def hook(module, args, output):
                feats = flatten_features(output, module)
                if feats.shape[1] > self.max_dim:
                    return
                stride = math.ceil(feats.shape[0] * len(chunks) / self.max_rows)
                feats = feats[:: max(1, stride)]  # a fixed subsample of at most max_rows rows
                if name not in covs:
                    covs[name] = StreamingCovariance(feats.shape[1], name=name)
                covs[name].update(feats)
            return hook

        chunks = torch.split(self.inputs, self.batch_size)
        handles = [m.register_forward_hook(hook_for(n)) for n, m in layers]
        pl_module.eval()
        try:
            for chunk in chunks:
                pl_module(chunk)
        finally:
            for h in handles:
                h.remove()
        arrays, scalars = {}, {}
        for name, cov in covs.items():
            evals = cov.eigenvalues().clamp(min=0.0)
            evals = torch.sort(evals, descending=True).values
            arrays[name] = evals
            total = float(evals.sum())
            scalars[f"{name}/effective_rank"] = effective_rank(evals, name=name)
            scalars[f"{name}/participation_ratio"] = participation_ratio(evals, name=name)
            scalars[f"{name}/top_eig_share"] = float(evals[0]) / total if total > 0 else 0.0
            positive = int((evals > 0).sum())
            if positive >= 8:  # fit the decay over the upper half of the positive spectrum
                scalars[f"{name}/alpha_req"] = alpha_req(evals, 1, positive // 2, name=name)
        return arrays, scalars
