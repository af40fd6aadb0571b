"""MatrixSpectrum: the spectra of whatever the task's `spectral_matrices()` returns."""

from __future__ import annotations

import re

import pytorch_lightning as pl
import torch

from callbacks.base import SpectralCallback
from callbacks.spectra import (
    count_outliers,
    eigvals_general,
    eigvals_sym,
    singular_values,
    spectrum_summary,
)

KINDS = ("auto", "eigvals_sym", "eigvals", "singular_values", "values")
REFERENCE_KEYS = ("edge", "radius", "outliers")


def matrix_spectrum(matrix: torch.Tensor, name: str, kind: str = "auto",
                    sym_tol: float = 1e-10) -> tuple[torch.Tensor, str]:
    """Return (spectrum, kind) of a named tensor.

    kind "auto": 1-D: the values themselves ("values"); square symmetric (‖A − Aᵀ‖ ≤ tol‖A‖):
    real eigenvalues ("eigvals_sym"); square otherwise: complex eigenvalues ("eigvals");
    rectangular: singular values ("singular_values"). Any other kind forces that computation.
    """
    if kind not in KINDS:
        raise ValueError(f"{name}: kind={kind!r} is not allowed; choose one of: "
                         + ", ".join(KINDS))
    matrix = matrix.detach()
    if kind == "singular_values":
        return singular_values(matrix, name=name), kind
    if kind == "eigvals_sym":
        return eigvals_sym(matrix, name=name), kind
    if kind == "eigvals":
        return eigvals_general(matrix, name=name), kind
    if kind == "values" or matrix.dim() == 1:  # a precomputed spectrum, real or complex
        values = matrix.reshape(-1)
        return values.to(torch.complex128 if values.is_complex() else torch.float64), "values"
    if matrix.dim() != 2:
        raise ValueError(f"{name}: spectral_matrices() must give 1-D or 2-D tensors, got "
                         f"shape {tuple(matrix.shape)}")
    if matrix.shape[0] != matrix.shape[1]:
        return singular_values(matrix, name=name), "singular_values"
    m = matrix.detach()
    if not m.is_complex():
        scale = float(m.abs().max()) or 1.0
        if float((m - m.T).abs().max()) <= sym_tol * scale:
            return eigvals_sym(m, name=name), "eigvals_sym"
    return eigvals_general(m, name=name), "eigvals"


class MatrixSpectrum(SpectralCallback):
    """Eigenvalues (real or complex) or singular values of each matrix the task exposes.

    `pl_module.spectral_matrices()` maps names to tensors (the kind is chosen as in
    `matrix_spectrum`) or to dicts `{"matrix": T, "kind": ..., "edge": e, "radius": r,
    "outliers": tensor}`. Reference values (there, or from the optional
    `pl_module.spectral_reference() -> {name: {...}}`) add outlier counts (|λ| > radius, or
    σ/λ > edge) to the scalars and the theory circle, edge and outliers to the plot.
    """

    probe = "matrices"
    headline = ("*/top1", "*/spectral_radius", "*/outliers")
    default_every_n_steps = 50

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        if not hasattr(pl_module, "spectral_matrices"):
            self.disable(f"{type(pl_module).__name__} has no spectral_matrices()")
            return {}, {}
        matrices = pl_module.spectral_matrices()
        pattern = re.compile(self.layer_filter) if self.layer_filter else None
        reference = pl_module.spectral_reference() if hasattr(
            pl_module, "spectral_reference") else {}
        arrays, scalars = {}, {}
        for name, value in matrices.items():
            if pattern is not None and not pattern.search(name):
                continue
            ref = dict(reference.get(name, {}))
            kind = "auto"
            if isinstance(value, dict):
                ref.update({k: value[k] for k in REFERENCE_KEYS if value.get(k) is not None})
                kind, value = value.get("kind", "auto"), value["matrix"]
            spectrum, kind = matrix_spectrum(value, name, kind)
            arrays[name] = spectrum
            if self.sink is not None and ref:
                self.sink.references[name] = {k: _plain(v) for k, v in ref.items()}
            if spectrum.is_complex():
                radius = spectrum.abs()
                scalars[f"{name}/spectral_radius"] = float(radius.max())
                scalars[f"{name}/max_real"] = float(spectrum.real.max())
                if "radius" in ref:
                    scalars[f"{name}/outliers"] = float(count_outliers(spectrum, ref["radius"]))
            else:
                for key, value in spectrum_summary(spectrum, name=name).items():
                    scalars[f"{name}/{key}"] = value
                if "edge" in ref:
                    scalars[f"{name}/outliers"] = float(count_outliers(spectrum, ref["edge"]))
            scalars[f"{name}/is_{kind}"] = 1.0
        return arrays, scalars


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 and value.dim() == 0 else value.numpy()
    return value
