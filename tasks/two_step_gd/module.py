"""The two_step_gd LightningModule: two manual full-batch GD steps on the first layer.

Epoch 1 is step 1 (batch 1, η1 = c·N^α1), epoch 2 is step 2 (batch 2, or batch 1 again with
`batch_reuse`, η2 = c·N^α2). The step is applied by SGD with lr 1 on the gradient η·∇L, so
W ← W − η∇L exactly and `global_step` counts the two steps. After each step the module measures
the top singular triplets of the weights, their updates and the feature matrix
(tasks/two_step_gd/measure.py, through callbacks.spectra).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from callbacks.spectra import mp_edge
from tasks.base.contract import resolved_params
from tasks.two_step_gd import model, theory
from tasks.two_step_gd.config import Config
from tasks.two_step_gd.measure import (
    TopSpectrum,
    gap_edge,
    hadamard_power_overlaps,
    mp_fit_edge,
    overlaps,
    top_singular,
)


class TwoStepModule(pl.LightningModule):
    """f(x) = aᵀσ(Wx) with a frozen; W takes the two GD steps of the paper."""

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = params
        self.save_hyperparameters(resolved_params(params))
        self.automatic_optimization = False
        self.w = nn.Parameter(torch.zeros(params.n_hidden, params.dim))
        self.problem: dict[str, torch.Tensor] = {}
        self.mats: dict[str, torch.Tensor] = {}
        self.tops: dict[str, TopSpectrum] = {}
        self.stats: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        self.problem = {k: v.to(self.device) for k, v in self.trainer.datamodule.problem.items()}
        with torch.no_grad():
            self.w.copy_(self.problem["w0"])
        self.mats = {"W0": self.problem["w0"]}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.w], lr=1.0)

    def step_sizes(self) -> tuple[float, float]:
        """Return (η1, η2) = (c·N^α1, c·N^α2)."""
        c = self.cfg
        return (model.step_size(c.step_scale, c.n_hidden, c.alpha1),
                model.step_size(c.step_scale, c.n_hidden, c.alpha2))

    def batch_for(self, step: int, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Return (X, y) of step 1 or 2 (step 2 reuses batch 1 when `batch_reuse`)."""
        which = 1 if step == 1 or self.cfg.batch_reuse else 2
        return batch[f"x{which}"], batch[f"y{which}"]

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        step = int(self.current_epoch) + 1
        if step > 2:
            return
        x, y = self.batch_for(step, batch)
        eta = self.step_sizes()[step - 1]
        act = self.cfg.activation
        opt = self.optimizers()
        opt.zero_grad()
        with torch.no_grad():
            before = self.w.detach().clone()
            grad, r = model.gradient(self.w, self.problem["a"], x, y, act)
            self.w.grad = eta * grad
        opt.step()
        with torch.no_grad():
            after = self.w.detach().clone()
            self.mats[f"W{step}"], self.mats[f"dW{step}"] = after, after - before
            loss_after = model.loss(after, self.problem["a"], x, y, act)
        loss_before = 0.5 * float((r * r).mean())
        self.stats[f"loss_before_step{step}"] = loss_before
        self.stats[f"loss_after_step{step}"] = loss_after
        self.stats[f"eta{step}"] = eta
        self.log_dict({"train/loss_before": loss_before, "train/loss_after": loss_after,
                       "train/eta": eta}, on_step=True, on_epoch=False)
        self.measure(step)

    # ----------------------------------------------------------------------------- measuring
    def _top(self, name: str, matrix: torch.Tensor) -> TopSpectrum:
        self.tops[name] = top_singular(matrix, self.cfg.n_top_sv, self.cfg.sv_method)
        return self.tops[name]

    @torch.no_grad()
    def measure(self, step: int) -> None:
        """Compute the step's top spectra, bulk edges and outlier counts (into self.stats)."""
        c, s = self.cfg, self.stats
        if step == 1:
            self._top("W0", self.mats["W0"])
            s["bulk_edge_w0_theory"] = (c.n_hidden * mp_edge(c.n_hidden, c.dim,
                                                             1.0 / c.dim)) ** 0.5
            x_feat = self.problem["x2"]
            f0 = model.features(self.mats["W0"], x_feat, c.activation)
            f1 = model.features(self.mats["W1"], x_feat, c.activation)
            self.mats["F0"], self.mats["F1"] = f0, f1
            s["feature_edge_f0"], s["feature_spikes_f0"] = gap_edge(self._top("F0", f0).values)
            s["feature_edge"], s["feature_spikes"] = gap_edge(self._top("F1", f1).values)
        for name in (f"W{step}", f"dW{step}"):
            top = self._top(name, self.mats[name])
            key = name.lower()
            s[f"bulk_edge_{key}"], s[f"outliers_{key}"] = gap_edge(top.values)
            if not name.startswith("d"):
                s[f"bulk_edge_mp_{key}"], _ = mp_fit_edge(top)
        s[f"residual_rms_step{step}"] = (2.0 * s[f"loss_before_step{step}"]) ** 0.5

    # ----------------------------------------------------------------------------- resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the measured state of the steps taken (a resumed run reports them too)."""
        checkpoint["two_step_gd"] = {
            "stats": dict(self.stats),
            "mats": {k: v.detach().cpu() for k, v in self.mats.items()},
            "tops": {k: {f: getattr(t, f) for f in TopSpectrum.__dataclass_fields__}
                     for k, t in self.tops.items()}}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("two_step_gd")
        if state is None:
            return
        self.stats = dict(state["stats"])
        self.mats = {k: v.to(self.device) for k, v in state["mats"].items()}
        self.tops = {k: TopSpectrum(**{f: v.to(self.device) if isinstance(v, torch.Tensor)
                                       else v for f, v in fields.items()})
                     for k, fields in state["tops"].items()}

    # ----------------------------------------------------------------------------- outputs
    def spectral_matrices(self) -> dict[str, dict[str, Any]]:
        """Return W0, W1, W2, ΔW1 = W1 − W0, ΔW2 = W2 − W1 and F0, F1 (as available), each
        to be watched by its singular values, with the measured bulk edge where there is one.

        F_t = σ(X2 W_tᵀ) − column means, on the second batch's inputs.
        """
        order = ("W0", "W1", "W2", "dW1", "dW2", "F0", "F1")
        out = {}
        for k in order:
            if k in self.mats:
                # the gap rule's edge is the top bulk singular value (from Lanczos); a 1e-6
                # relative margin keeps the dense SVD's copy of it inside the bulk
                edge = self.stats.get(f"bulk_edge_{k.lower()}")
                out[k] = {"matrix": self.mats[k], "kind": "singular_values",
                          "edge": None if edge is None else edge * (1 + 1e-6)}
        return out

    def paper_metrics(self) -> dict[str, Any]:
        """Return the outlier counts, edges, top singular values and alignments of the run, with
        the sizes d, n and the predictions of theory.py (the resolved parameters are in
        results.json["params"])."""
        c, s = self.cfg, self.stats
        k_top = c.n_top_sv
        out: dict[str, Any] = {
            "dim": c.dim, "n_samples": c.n_samples,
            "predicted_outliers_w2": theory.predicted_outliers_w2(c.alpha1, c.alpha2),
            "predicted_outliers_w2_strict": theory.predicted_outliers_w2(c.alpha1, c.alpha2,
                                                                         strict=True),
            "predicted_extra_floor": theory.predicted_extra_floor(c.alpha1, c.alpha2),
            "predicted_exponents_dw2": theory.term_exponents(c.alpha1, c.alpha2, k_top),
            "predicted_outliers_w1": 1,
            "predicted_feature_spikes": theory.predicted_feature_spikes(c.alpha1),
        }
        out.update(s)
        if "W2" in self.tops:
            out["bulk_edge"] = s["bulk_edge_w2"]
        beta = self.problem["beta"]
        for name in ("W0", "W1", "W2", "dW1", "dW2", "F0", "F1"):
            if name in self.tops:
                out[f"top_singular_values_{name.lower()}"] = self.tops[name].values.tolist()
        for name in ("W1", "W2", "dW1", "dW2"):
            if name not in self.tops:
                continue
            top = self.tops[name]
            n_out = max(s.get(f"outliers_{name.lower()}", 0), 1 if name.startswith("d") else 0)
            align = overlaps(top.right, beta)
            out[f"alignments_beta_{name.lower()}"] = align
            out[f"alignment_beta_{name.lower()}"] = max(align[:n_out]) if n_out else 0.0
        if "W2" in self.tops:
            out["alignment_beta"] = out["alignment_beta_w2"]
            out["overlaps_a_powers_dw2"] = hadamard_power_overlaps(self.tops["dW2"].left,
                                                                  self.problem["a"])
        return out
