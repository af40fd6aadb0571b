"""FeatureSpectrum: covariance spectra of named layers' outputs on a fixed probe set."""

from __future__ import annotations

import math
import re

import pytorch_lightning as pl
import torch
from torch import nn

from callbacks.base import SpectralCallback, restore_modes
from callbacks.spectra import (
    StreamingCovariance,
    alpha_req,
    effective_rank,
    mapped_covariance_eigvals,
    participation_ratio,
)

DEFAULT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def is_default_layer(module: nn.Module) -> bool:
    """Whether a module's output is watched by default: Linear / Conv1d / Conv2d, and the
    Conv1D of `transformers` (GPT-2's x @ W + b projections)."""
    return isinstance(module, DEFAULT_TYPES) or _is_hf_conv1d(module)


def _is_hf_conv1d(module: nn.Module) -> bool:
    cls = type(module)
    return cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")


def affine_map(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) matrix A of a layer computing exactly y = A x + b on its last dimension
    (nn.Linear itself, not a subclass that may change forward; transformers' Conv1D, whose
    weight is (in, out)); None for anything else."""
    if type(module) is nn.Linear:
        return module.weight
    if _is_hf_conv1d(module) and module.weight.dim() == 2:
        return module.weight.T
    return None


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

    `layer_filter` is a regex on module names (default: every Linear/Conv layer, and the Conv1D
    projections of `transformers` models); layers whose feature dimension exceeds `max_dim` are
    skipped; for sequence outputs only the first ⌈max_rows / tokens per sample⌉ probe samples are
    forwarded, and rows beyond `max_rows` (outputs with more rows than the first layers) are an
    evenly strided subsample. An expanding affine layer (y = A x + b with out > in: an MLP's up-projection, a
    fused QKV projection, an LM head) accumulates the covariance C of its *inputs* instead and
    reports the eigenvalues of A C Aᵀ (`mapped_covariance_eigvals`): the same spectrum (rank ≤ in,
    so out − in exact zeros) at in²/out² of the cost.
    """

    probe = "features"
    headline = ("mean_effective_rank",)
    default_every_n_steps = 250

    def __init__(self, n_probe: int = 64, max_dim: int = 2048, batch_size: int = 256,
                 max_rows: int = 2048, **kwargs) -> None:
        super().__init__(**kwargs)
        self.n_probe, self.max_dim, self.batch_size = n_probe, max_dim, batch_size
        self.max_rows = max_rows
        self.inputs: torch.Tensor | None = None

    def layers(self, pl_module: pl.LightningModule) -> list[tuple[str, nn.Module]]:
        """Return the (name, module) pairs whose outputs are watched."""
        if self.layer_filter:
            rx = re.compile(self.layer_filter)
            return [(n, m) for n, m in pl_module.named_modules() if n and rx.search(n)]
        return [(n, m) for n, m in pl_module.named_modules() if is_default_layer(m)]

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.inputs, _ = self.probe_set(trainer, pl_module, self.n_probe)
        layers = self.layers(pl_module)
        if not layers:
            raise ValueError(f"no layer matches layer_filter={self.layer_filter!r}")
        rows = self._rows_per_sample(pl_module, layers)
        if rows > 1:  # sequences: forward only the samples that max_rows token rows need
            self.inputs = self.inputs[: max(1, math.ceil(self.max_rows / rows))]

    @torch.no_grad()
    def _rows_per_sample(self, pl_module: pl.LightningModule,
                         layers: list[tuple[str, nn.Module]]) -> int:
        """Feature rows one probe sample gives (its tokens, for sequence models): the largest
        count over the watched layers, from a forward pass of the first sample."""
        counts = [1]
        handles = [m.register_forward_hook(
            lambda mod, args, out: counts.append(flatten_features(out, mod).shape[0]))
            for _, m in layers]
        modes = {m: m.training for m in pl_module.modules()}
        pl_module.eval()
        try:
            pl_module(self.inputs[:1])
        except RuntimeError:  # a model that cannot take one sample: keep the whole probe set
            return 1
        finally:
            for h in handles:
                h.remove()
            restore_modes(modes)
        return max(counts)

    @torch.no_grad()
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        layers = self.layers(pl_module)
        covs: dict[str, StreamingCovariance] = {}
        maps: dict[str, torch.Tensor] = {}  # expanding affine layers: covariance of the inputs

        def hook_for(name: str):
            def hook(module, args, output):
                feats = flatten_features(output, module)
                if feats.shape[1] > self.max_dim:
                    return
                stride = max(1, math.ceil(feats.shape[0] * len(chunks) / self.max_rows))
                A = affine_map(module)
                if A is not None and A.shape[0] > A.shape[1] and args and torch.is_tensor(args[0]):
                    maps[name] = A.detach()
                    feats = args[0].reshape(-1, A.shape[1])
                feats = feats[::stride]  # a fixed subsample of at most max_rows rows
                if name not in covs:
                    # accumulated where the features are (no copy of GPU batches to the host)
                    covs[name] = StreamingCovariance(feats.shape[1], device=feats.device,
                                                     name=name)
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
            if name in maps:
                evals = mapped_covariance_eigvals(cov.covariance(), maps[name])
            else:
                evals = cov.eigenvalues().clamp(min=0.0)
            evals = torch.sort(evals, descending=True).values
            arrays[name] = evals
            total = float(evals.sum())
            scalars[f"{name}/effective_rank"] = effective_rank(evals, name=name)
            scalars[f"{name}/participation_ratio"] = participation_ratio(evals, name=name)
            scalars[f"{name}/top_eig_share"] = float(evals[0]) / total if total > 0 else 0.0
            # the rank: eigenvalues above 1e-12·λ₁ (below that, rounding noise of a float64
            # covariance, or the exact zeros of an expanding layer's spectrum)
            positive = int((evals > 1e-12 * float(evals[0])).sum())
            if positive >= 8:  # fit the decay over the upper half of the positive spectrum
                scalars[f"{name}/alpha_req"] = alpha_req(evals, 1, positive // 2, name=name)
        ranks = [scalars[f"{name}/effective_rank"] for name in covs]
        if ranks:
            scalars["mean_effective_rank"] = sum(ranks) / len(ranks)
        return arrays, scalars
