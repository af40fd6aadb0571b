"""The linearization LightningModule: LoRA fine-tuning of the pretrained small LM with the ℓ2
proximal term, its linearized twin f0 + J0(θ − θ0) trained on the same batches, steps and λ,
and the NTK of the LoRA parameters at the pretrained point.

Objective of each model: R̃(θ) + (λ/2)‖θ − θ0‖², R̃ = Σ_i L(f(x_i), y_i) over the n_train
examples (a batch of b stands for it as (n_train/b)·Σ_batch); L = cross-entropy or ½‖f − y‖²
against one-hot y. The proximal gradient λ(θ − θ0) is added after backward: always, never, or
(selective, Eq. 8) when ⟨∇R̃, θ − θ0⟩ ≥ 0, per model. The twin's J0 (n, C, P) and f0 are
computed once per split (exact, structured per-sample Jacobian), so f_lin(x_i) = f0_i + J0_i δ
with δ = θ̄ − θ0 its trainable vector; a forward-mode `torch.func.jvp` cross-checks it at the end.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.func import functional_call, jvp

from tasks.base.contract import resolved_params
from tasks.linearization import kernels
from tasks.linearization.config import Config
from tasks.linearization.downstream import n_classes
from tasks.small_lm.lora import add_lora, lora_modules, lora_named_parameters
from tasks.small_lm.model import SequenceClassifier

CHUNK = 128  # rows per structured-Jacobian pass over a split
HEAD_RIDGE = 1.0  # ridge of the probe head fitted on the pretrained features
JVP_CHECK_ROWS = 32  # test rows on which f_lin by jvp is compared with f0 + J0 δ


def split_jacobian(clf: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (f0 (n, C), J0 (n, C, P)) of the classifier's logits over its LoRA parameters."""
    model = kernels.ProbeOutput(clf, "logits")
    fs, Js = [], []
    for start in range(0, tokens.shape[0], CHUNK):
        x = kernels.probe_inputs(tokens[start:start + CHUNK],
                                 torch.zeros(min(CHUNK, tokens.shape[0] - start),
                                             dtype=torch.long))
        J, _ = kernels.lora_jacobian(model, x)
        with torch.no_grad():
            fs.append(model(x))
        Js.append(J)
    return torch.cat(fs), torch.cat(Js)


def fit_probe_head(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor) -> None:
    """Set `head` to the ridge fit of one-hot labels on the features (centred; ridge HEAD_RIDGE):
    W = (HcᵀHc + αI)⁻¹ Hcᵀ(Y − Ȳ), b = Ȳ − H̄W (float64, then cast)."""
    H = features.to(torch.float64)
    Y = F.one_hot(labels, head.out_features).to(torch.float64)
    mu, ybar = H.mean(0), Y.mean(0)
    Hc = H - mu
    W = torch.linalg.solve(Hc.T @ Hc + HEAD_RIDGE * torch.eye(H.shape[1], dtype=H.dtype),
                           Hc.T @ (Y - ybar))
    with torch.no_grad():
        head.weight.copy_(W.T.to(head.weight.dtype))
        head.bias.copy_((ybar - mu @ W).to(head.bias.dtype))


class LinearizationModule(pl.LightningModule):
    """LoRA fine-tuning vs its linearization; the LoRA NTK at the pretrained point."""

    # NTKSpectrum (callbacks=spectra) takes the LoRA parameters, not the twin's δ (which
    # `forward` does not use): the structured LoRA path of callbacks.spectra applies
    ntk_param_filter = r"\.lora_[AB]$"

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = params
        self.save_hyperparameters(resolved_params(params))
        self.clf: SequenceClassifier | None = None
        self._final: dict[str, Any] | None = None
        self._final_step: int | None = None
        self.prox_applied = {"lora": 0, "lin": 0}
        self.init_metrics: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        """Build the classifier on the pretrained backbone (head, LoRA), keep θ0, the twin's
        J0 and f0 per split and the NTK at θ0 on the probe set (float64)."""
        if self.clf is not None:
            return
        c = self.cfg
        dm = self.trainer.datamodule
        dm.setup(stage)
        self.backbone = dm.backbone
        self.n_classes = n_classes(str(c.downstream), c.n_topics)
        pad = c.backbone_config().pad_id
        clf = SequenceClassifier(copy.deepcopy(dm.backbone.lm.transformer), self.n_classes, pad)
        for p in clf.parameters():
            p.requires_grad_(False)
        train_tokens, train_y = dm.train["tokens"], dm.train["labels"]
        with torch.no_grad():
            if c.head == "probe":
                fit_probe_head(clf.head, clf.features(train_tokens), train_y)
            else:
                gen = torch.Generator().manual_seed(dm.seed)
                clf.head.weight.copy_(torch.randn(clf.head.weight.shape, generator=gen)
                                      / math.sqrt(c.d_model))
                clf.head.bias.zero_()
        add_lora(clf.transformer, c.adapted_layers, list(c.lora_matrices), c.lora_rank,
                 c.lora_scale, c.lora_init_b, seed=dm.seed + 1)
        self.clf = clf
        self.lora = lora_named_parameters(self.clf)
        for p in (p for _, p in self.lora):
            p.requires_grad_(c.trains_lora)
        self.theta0 = [p.detach().clone() for _, p in self.lora]
        self.n_lora = sum(p.numel() for p in self.theta0)
        for key in ("tokens", "labels"):
            self.register_buffer(f"train_{key}", dm.train[key], persistent=False)
            self.register_buffer(f"test_{key}", dm.test[key], persistent=False)
        if c.trains_linearized:
            self.lin_delta = torch.nn.Parameter(torch.zeros(self.n_lora))
            for split in ("train", "test"):
                f0, J0 = split_jacobian(self.clf, getattr(self, f"{split}_tokens"))
                self.register_buffer(f"f0_{split}", f0, persistent=False)
                self.register_buffer(f"J0_{split}", J0, persistent=False)
        start = time.perf_counter()
        self.kernels0 = self.kernels_now()
        self.init_metrics = self.kernel_metrics(self.kernels0)
        self.init_metrics["ntk_wall_s"] = time.perf_counter() - start

    def probe_x(self) -> torch.Tensor:
        """Return the fixed probe set [tokens | label]: the first ntk_samples train rows."""
        n = self.cfg.ntk_samples
        return kernels.probe_inputs(self.train_tokens[:n], self.train_labels[:n])

    # ----------------------------------------------------------------------------- kernels
    def kernels_now(self) -> kernels.KernelSet:
        """Return the LoRA NTK set of the current LoRA model on the probe set (float64)."""
        model = kernels.float64_probe(self.clf, self.cfg.ntk_output)
        x = self.probe_x().to(next(model.parameters()).device)
        return kernels.kernel_set(model, x, sign=self.cfg.ntk_kind != "plain")

    def kernel_metrics(self, ks: kernels.KernelSet) -> dict[str, Any]:
        """Return κ, μ_min, μ_max (plain, sign), κ(Θ0 + λI), trace, effective rank, the blocks'
        μ_max / μ_min and the Weyl checks over the nested layer sets."""
        lam = self.cfg.prox_lambda
        out: dict[str, Any] = {}
        kinds = {"plain": ks.plain} if self.cfg.ntk_kind == "plain" else (
            {"sign": ks.sign} if self.cfg.ntk_kind == "sign" else {"plain": ks.plain,
                                                                    "sign": ks.sign})
        for kind in ("plain", "sign"):
            if kind not in kinds:
                for key in ("kappa", "mu_min", "mu_max", "kappa_reg"):
                    out[f"{key}_{kind}"] = None
                continue
            s = kernels.spectrum_numbers(kinds[kind], lam)
            out.update({f"kappa_{kind}": s["kappa"], f"mu_min_{kind}": s["mu_min"],
                        f"mu_max_{kind}": s["mu_max"], f"kappa_{kind}_reg": s["kappa_reg"],
                        f"trace_{kind}": s["trace"], f"effective_rank_{kind}": s["effective_rank"]})
        out["log_kappa_plain"] = math.log(out["kappa_plain"]) if out.get("kappa_plain") else None
        out["log_kappa_sign"] = math.log(out["kappa_sign"]) if out.get("kappa_sign") else None
        blocks = [ks.blocks[k] for k in sorted(ks.blocks)]
        block_stats = {str(k): kernels.spectrum_numbers(ks.blocks[k]) for k in sorted(ks.blocks)}
        out["block_mu_max"] = {k: v["mu_max"] for k, v in block_stats.items()}
        out["block_mu_min"] = {k: v["mu_min"] for k, v in block_stats.items()}
        total = sum(blocks[1:], blocks[0])
        out["block_sum_rel_err"] = float(torch.linalg.matrix_norm(total - ks.plain)
                                         / torch.linalg.matrix_norm(ks.plain))
        out.update(kernels.weyl_check(blocks))
        out["ntk_size"] = int(ks.plain.shape[0])
        return out

    # ----------------------------------------------------------------------------- training
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return the LoRA classifier's logits (n, C)."""
        return self.clf(tokens)

    def loss_terms(self, f: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return the per-example loss: cross-entropy, or ½‖f − onehot(y)‖² (mse)."""
        if self.cfg.loss == "ce":
            return F.cross_entropy(f, y, reduction="none")
        return 0.5 * ((f - F.one_hot(y, f.shape[1]).to(f.dtype)) ** 2).sum(1)

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the mean per-example loss (HessianSpectrum)."""
        return self.loss_terms(outputs, targets).mean()

    def lin_outputs(self, J0: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
        """Return f_lin = f0 + J0 δ for rows with Jacobian J0 (b, C, P)."""
        return f0 + torch.einsum("bcp,p->bc", J0, self.lin_delta)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        rows, tokens, y = batch
        scale = self.cfg.n_train  # R̃ = Σ over n_train = n_train · batch mean
        total = torch.zeros((), device=tokens.device)
        logs = {}
        if self.cfg.trains_lora:
            per = self.loss_terms(self.clf(tokens), y)
            total = total + scale * per.mean()
            logs["train/loss"] = per.mean()
        if self.cfg.trains_linearized:
            per_lin = self.loss_terms(self.lin_outputs(self.J0_train[rows], self.f0_train[rows]), y)
            total = total + scale * per_lin.mean()
            logs["train/loss_lin"] = per_lin.mean()
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=int(y.numel()))
        return total

    def prox_pairs(self) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Return {model: [(parameter, θ − θ0)]} for the trained models."""
        out = {}
        if self.cfg.trains_lora:
            out["lora"] = [(p, p.detach() - p0) for (_, p), p0 in zip(self.lora, self.theta0)]
        if self.cfg.trains_linearized:
            out["lin"] = [(self.lin_delta, self.lin_delta.detach())]
        return out

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Add λ(θ − θ0) to the gradient: always, or (selective) when ⟨∇R̃, θ − θ0⟩ ≥ 0."""
        lam, mode = self.cfg.prox_lambda, self.cfg.prox_mode
        if mode == "off" or lam == 0:
            return
        for name, pairs in self.prox_pairs().items():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p, _ in pairs]
            inner = sum(float((g * d).sum()) for g, (_, d) in zip(grads, pairs))
            if mode == "always" or inner >= 0:
                self.prox_applied[name] += 1
                for g, (p, d) in zip(grads, pairs):
                    p.grad = g + lam * d

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = ([p for _, p in self.lora] if self.cfg.trains_lora else []) + (
            [self.lin_delta] if self.cfg.trains_linearized else [])
        if self.cfg.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.cfg.lr)
        return torch.optim.Adam(params, lr=self.cfg.lr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["linearization_prox_applied"] = dict(self.prox_applied)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.prox_applied = dict(checkpoint.get("linearization_prox_applied", self.prox_applied))

    # ----------------------------------------------------------------------------- spectra
    def spectral_matrices(self) -> dict[str, Any]:
        """Return the LoRA NTK of the current model on the probe set (plain, sign), its
        per-layer blocks, every ΔW = s·BA, and the drift ‖Θ_t − Θ0‖_F/‖Θ0‖_F (a 1-value
        spectrum)."""
        ks = self.kernels_now()
        out: dict[str, Any] = {"ntk_plain": ks.plain}
        if ks.sign is not None:
            out["ntk_sign"] = ks.sign
        for layer, block in ks.blocks.items():
            out[f"ntk_plain_layer{layer}"] = block
        for key, (_, _, delta) in lora_modules(self.clf).items():
            out[f"delta_w_{key.replace('.', '_')}"] = delta.delta_weight().detach().double()
        drift = torch.linalg.matrix_norm(ks.plain - self.kernels0.plain) / torch.linalg.matrix_norm(
            self.kernels0.plain)
        out["ntk_drift"] = {"matrix": drift.reshape(1), "kind": "values"}
        return out

    def spectral_probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (tokens, labels) of the fixed probe set."""
        n = self.cfg.ntk_samples
        return self.train_tokens[:n], self.train_labels[:n]

    # ----------------------------------------------------------------------------- metrics
    @torch.no_grad()
    def lora_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return the LoRA model's logits in chunks (eval mode; no dropout in this model)."""
        return torch.cat([self.clf(tokens[i:i + 256]) for i in range(0, tokens.shape[0], 256)])

    def jvp_check(self) -> float:
        """Return max|f_lin(jvp) − (f0 + J0 δ)| / max|J0 δ| on JVP_CHECK_ROWS test rows, with
        f_lin by forward-mode torch.func.jvp at θ0 along δ (the exact linearization)."""
        tokens = self.test_tokens[:JVP_CHECK_ROWS]
        names = [n for n, _ in self.lora]
        theta0 = dict(zip(names, self.theta0))
        tangents, start = {}, 0
        for n, p0 in theta0.items():
            tangents[n] = self.lin_delta.detach()[start:start + p0.numel()].reshape(p0.shape)
            start += p0.numel()
        _, jd = jvp(lambda p: functional_call(self.clf, p, (tokens,), strict=False),
                    (theta0,), (tangents,))
        ref = torch.einsum("bcp,p->bc", self.J0_test[:JVP_CHECK_ROWS], self.lin_delta.detach())
        return float((jd - ref).abs().max() / ref.abs().max().clamp(min=1e-30))

    def evaluate(self) -> dict[str, Any]:
        """Return the measurements of the spec at the end of fine-tuning (see paper_metrics)."""
        c = self.cfg
        out: dict[str, Any] = dict(self.init_metrics)
        y_te, y_tr = self.test_labels, self.train_labels
        f = self.lora_logits(self.test_tokens) if c.trains_lora else None
        f_lin = f_lin_tr = None
        if c.trains_linearized:
            with torch.no_grad():
                f_lin = self.lin_outputs(self.J0_test, self.f0_test)
                f_lin_tr = self.lin_outputs(self.J0_train, self.f0_train)
            out["test_acc_init"] = float((self.f0_test.argmax(1) == y_te).float().mean())
            out["lin_jvp_rel_err"] = self.jvp_check()
        with torch.no_grad():
            out["test_acc"] = float((f.argmax(1) == y_te).float().mean()) if f is not None else None
            out["test_acc_lin"] = (float((f_lin.argmax(1) == y_te).float().mean())
                                   if f_lin is not None else None)
            if c.trains_lora:
                f_tr = self.lora_logits(self.train_tokens)
                out["final_train_loss"] = float(self.loss_terms(f_tr, y_tr).mean())
                out["train_acc"] = float((f_tr.argmax(1) == y_tr).float().mean())
                out["theta_dist"] = math.sqrt(sum(float(((p.detach() - p0) ** 2).sum())
                                                  for (_, p), p0 in zip(self.lora, self.theta0)))
            else:
                out.update(final_train_loss=None, train_acc=None, theta_dist=None)
            if f_lin_tr is not None:
                out["final_train_loss_lin"] = float(self.loss_terms(f_lin_tr, y_tr).mean())
                out["theta_dist_lin"] = float(self.lin_delta.detach().norm())
            else:
                out.update(final_train_loss_lin=None, theta_dist_lin=None)
            if f is not None and f_lin is not None:
                diff = f - f_lin
                out["rel_gap"] = float(diff.norm() / f.norm())
                out["gap_l2"] = float(diff.norm(dim=1).mean())
                out["kl_gap"] = float(F.kl_div(F.log_softmax(f_lin, 1), F.log_softmax(f, 1),
                                               log_target=True, reduction="batchmean"))
                out["agreement"] = float((f.argmax(1) == f_lin.argmax(1)).float().mean())
            else:
                out.update(rel_gap=None, gap_l2=None, kl_gap=None, agreement=None)
        out["delta_w_rel"] = {key: float(delta.delta_weight().detach().norm() / qkv.base_weight(m).norm())
                              for key, (qkv, m, delta) in lora_modules(self.clf).items()}
        out["prox_applied_steps"] = dict(self.prox_applied)
        if c.runs_closed_form:
            out.update(self.closed_form_check(f_lin_tr))
        else:
            out["closed_form_rel_err"] = None
        if c.compute_perturbation:
            start = time.perf_counter()
            model = kernels.float64_probe(self.clf, c.ntk_output)
            with torch.no_grad():  # Algorithm 1 at θ0 (the twin's point, LoRA's start)
                for (_, p), p0 in zip(lora_named_parameters(model), self.theta0):
                    p.copy_(p0)
            avg, upper = kernels.lipschitz_profile(
                model, self.probe_x().to(next(model.parameters()).device),
                list(c.lipschitz_radii), c.lipschitz_samples, seed=int(self.trainer.datamodule.seed))
            out.update(lipschitz_avg=avg, lipschitz_upper=upper,
                       lipschitz_wall_s=time.perf_counter() - start)
        else:
            out.update(lipschitz_avg=None, lipschitz_upper=None)
        b = self.backbone
        out.update(backbone_wall_s=b.seconds,
                   pretrain_heldout_acc=b.metrics.get("heldout_acc"),
                   pretrain_heldout_loss=b.metrics.get("heldout_loss"),
                   n_lora_params=self.n_lora, train_pos_frac=float((y_tr == 1).float().mean()))
        return out

    def closed_form_check(self, f_lin_tr: torch.Tensor) -> dict[str, float]:
        """Return closed_form_rel_err = ‖f_T − f*‖/‖f* − f0‖ on the train set, f_T the trained
        twin's predictions, f* = f0 + Θ0(Θ0 + λI)⁻¹(y − f0) with Θ0 = J0 J0ᵀ over all train
        logits (float64); and closed_form_rel_err_pred = ‖f_T − f*‖/‖f*‖."""
        J = self.J0_train.to(torch.float64)
        n, C = J.shape[0], J.shape[1]
        Jf = J.reshape(n * C, -1)
        y = F.one_hot(self.train_labels, C).to(torch.float64)
        f0 = self.f0_train.to(torch.float64)
        star = kernels.closed_form_predictions(Jf @ Jf.T, f0, y, self.cfg.prox_lambda)
        err = (f_lin_tr.to(torch.float64) - star).norm()
        return {"closed_form_rel_err": float(err / (star - f0).norm()),
                "closed_form_rel_err_pred": float(err / star.norm())}

    def paper_metrics(self) -> dict[str, Any]:
        """Return the NTK at θ0 (κ, μ, κ(Θ0 + λI), blocks, Weyl checks), Algorithm 1's L_avg(r)
        and L_upper(r), and after fine-tuning: both accuracies, the train losses, ‖θ − θ0‖, the
        real-vs-linearized gaps (relative ‖f − f_lin‖/‖f‖, KL(p_f‖p_lin), agreement) on the test
        set, ‖ΔW‖_F/‖W0‖_F per adapted matrix and, with the closed form, its relative error."""
        step = int(self.global_step)
        if self._final is None or self._final_step != step:
            self._final, self._final_step = self.evaluate(), step
        return dict(self._final)
