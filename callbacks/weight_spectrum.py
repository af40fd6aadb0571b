"""WeightSpectrum: WeightWatcher's per-layer metrics of every weight matrix while training."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from callbacks.base import SpectralCallback
from callbacks.spectra import model_weight_spectra

LOGGED = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "stable_rank", "entropy",
          "num_spikes", "ks_distance")


class WeightSpectrum(SpectralCallback):
    """ESD λ = σ(W)² of each Linear/Conv/Embedding weight (regex `layer_filter` on module
    names) and its metrics: alpha (power-law tail), alpha_weighted, log_norm, log_spectral_norm,
    stable_rank, entropy, num_spikes (above the Marchenko–Pastur edge), ks_distance.

    Computed by `callbacks.spectra.model_weight_spectra` (same-shape layers batched, float32
    eigenvalues with a float64 fallback where the metrics need it); a weight tied to several
    modules (an LM head sharing the embedding) is analysed once, under its first name."""

    probe = "weights"
    headline = ("mean_alpha",)
    default_every_n_steps = 100

    def __init__(self, min_evals: int = 8, max_evals: int = 15000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_evals, self.max_evals = min_evals, max_evals

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        arrays, scalars = {}, {}
        spectra = model_weight_spectra(pl_module, self.layer_filter, min_evals=self.min_evals,
                                       max_evals=self.max_evals, skip_tied=True)
        if not spectra:
            self.disable("no weight matrix matches (Linear/Conv/Embedding with >= "
                         f"{self.min_evals} eigenvalues, layer_filter={self.layer_filter!r})")
            return {}, {}
        alphas = []
        for name, (evals, metrics) in spectra.items():
            arrays[name] = evals
            for key in LOGGED:
                scalars[f"{name}/{key}"] = metrics[key]
            alphas.append(metrics["alpha"])
        finite = [a for a in alphas if a == a and abs(a) != float("inf")]
        if finite:
            scalars["mean_alpha"] = sum(finite) / len(finite)
        return arrays, scalars
