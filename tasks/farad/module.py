"""The farad LightningModule: FixMatch with optional reference-based debiasing (CDMAD / FARAD).

Every step: b = mean_m f(x_ref_m) without gradient (logits, or log-softmax with
`bias_average=log_softmax`); once the step reaches `debias_start`, the pseudo-labels come from
softmax(z_weak − b). Loss = CE(labelled) + λ_u · mean over strong views of the masked
consistency loss. Evaluation uses the EMA model and predicts argmax(f(x) − b_ema).
"""

from __future__ import annotations

import copy
from typing import Any

import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from callbacks.spectra import StreamingCovariance
from tasks.base.contract import resolved_params
from tasks.farad import augment
from tasks.farad.config import Config
from tasks.farad.data import IMAGE_SHAPE
from tasks.farad.metrics import (
    balanced_accuracy,
    class_prior,
    class_recalls,
    geometric_mean_recall,
    pearson,
)
from tasks.farad.model import MLP, consistency_loss, cosine_lr, ema_update, pseudo_targets
from tasks.farad.references import (
    amplitude_spectrum,
    check_reference_memory,
    fourier_clouds,
    radial_profile,
    solid_images,
)
from tasks.farad.splits import N_CLASSES, tail_classes

REF_SEED_OFFSET = 7919    # the reference generator's seed is seed + this (own stream)
EVAL_SEED_OFFSET = 104729  # the evaluation bank of clouds
DIAG_REFERENCES = ("ones", "gray", "fourier")


class ReferenceSource:
    """Draws normalised reference images of one kind (ones | gray | fourier) on a device."""

    def __init__(self, kind: str, cfg: Config, train_images: torch.Tensor, mean: float,
                 std: float, labeled_mean: float, generator: torch.Generator) -> None:
        self.kind, self.cfg, self.gen = kind, cfg, generator
        self.mean, self.std, self.labeled_mean = mean, std, labeled_mean
        self.amps = amplitude_spectrum(train_images)        # (n, C, H, W//2+1)
        self.amp_mean = self.amps.mean(0)
        # the fixed bank is drawn now, not at the first step: a resumed run must not redraw it
        self.bank = self.normalise(self.raw(cfg.n_refs)) if (
            kind not in ("ones", "gray") and cfg.ref_refresh == "bank") else None

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Return (x − μ)/σ with the labelled set's pixel mean and std."""
        return (x - self.mean) / self.std

    def raw(self, n: int) -> torch.Tensor:
        """Return n fresh references in raw pixel space (solid ones are one image repeated)."""
        shape = IMAGE_SHAPE
        device = self.amp_mean.device
        if self.kind == "ones":  # all-ones after normalisation: raw value μ + σ
            return solid_images(self.mean + self.std, n, shape, device)
        if self.kind == "gray":  # solid image at the mean labelled intensity
            return solid_images(self.labeled_mean, n, shape, device)
        if self.cfg.amp_source == "per_image":
            pick = torch.randint(self.amps.shape[0], (n,), generator=self.gen, device=device)
            return fourier_clouds(self.amps[pick], n, self.gen, shape[1:])
        return fourier_clouds(self.amp_mean, n, self.gen, shape[1:])

    def draw(self) -> torch.Tensor:
        """Return this step's normalised references: one solid image, or n_refs clouds (fresh
        each step, or the fixed bank with `ref_refresh=bank`)."""
        if self.kind in ("ones", "gray"):
            return self.normalise(self.raw(1))
        if self.bank is not None:
            return self.bank
        return self.normalise(self.raw(self.cfg.n_refs))


def bias_from_logits(ref_logits: torch.Tensor, average: str) -> torch.Tensor:
    """Return b = mean_m z_m (`logits`) or mean_m log softmax(z_m) (`log_softmax`), shape (C,)."""
    if average == "log_softmax":
        ref_logits = ref_logits.log_softmax(-1)
    return ref_logits.mean(0)


class FaradModule(pl.LightningModule):
    """FixMatch on LT-digits with the MLP 64-256-256-10; `method` picks the debiasing."""

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = params
        self.save_hyperparameters(resolved_params(params))
        in_dim = IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]
        self.net = MLP(in_dim, params.hidden, N_CLASSES)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.split: dict[str, torch.Tensor] = {}
        self.refs: ReferenceSource | None = None
        self._final: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        if self.split:
            return
        device = self.trainer.strategy.root_device
        check_reference_memory(self.cfg.n_refs, IMAGE_SHAPE, self.net.widths, device)
        self.split = {k: v.to(device) for k, v in self.trainer.datamodule.split.items()}
        seed = int(self.trainer.datamodule.seed)
        self.seed = seed
        self.refs = self.reference_source(self.cfg.ref_kind, seed + REF_SEED_OFFSET, device)

    def reference_source(self, kind: str, seed: int, device: torch.device) -> ReferenceSource:
        """Return a ReferenceSource of `kind` built from this run's training images."""
        s = self.split
        labeled = s["x_labeled"]
        train = torch.cat([labeled, s["x_unlabeled"]])
        gen = torch.Generator(device=device).manual_seed(int(seed))
        return ReferenceSource(kind, self.cfg, train, float(labeled.mean()),
                               float(labeled.std()), float(labeled.mean()), gen)

    def configure_optimizers(self) -> dict[str, Any]:
        c = self.cfg
        decay = [p for n, p in self.net.named_parameters() if n.endswith("weight")]
        rest = [p for n, p in self.net.named_parameters() if not n.endswith("weight")]
        opt = torch.optim.SGD([{"params": decay, "weight_decay": c.weight_decay},
                               {"params": rest, "weight_decay": 0.0}],
                              lr=c.lr, momentum=c.momentum, nesterov=c.momentum > 0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: cosine_lr(step, c.iterations))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------------------- model
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Return (x − μ)/σ (labelled-set pixel statistics)."""
        return self.refs.normalise(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the training network's logits on normalised images."""
        return self.net(x)

    def loss_fn(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Return the cross-entropy (for the Hessian probe)."""
        return F.cross_entropy(outputs, targets)

    def uses_reference(self) -> bool:
        """Return whether the method debiases with a reference (cdmad, farad)."""
        return self.cfg.ref_kind != "none"

    @torch.no_grad()
    def bias(self, net: torch.nn.Module, refs: torch.Tensor) -> torch.Tensor:
        """Return b = mean_m f(x_ref_m) of `net` (no gradient)."""
        return bias_from_logits(net(refs), self.cfg.bias_average)

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        c = self.cfg
        x_l, y_l, x_u, y_u = batch
        step = int(self.global_step)
        n_l, n_u = x_l.shape[0], x_u.shape[0]
        weak = augment.weak(torch.cat([x_l, x_u]))
        weak_l, weak_u = weak[:n_l], weak[n_l:]
        strongs = augment.strong(x_u.repeat(c.strong_views, 1, 1, 1))  # views stacked
        b = self.bias(self.net, self.refs.draw()) if self.uses_reference() else None
        debias = b is not None and step >= c.debias_start
        with torch.no_grad():
            z_weak = self.net(self.normalise(weak_u))
        q, mask = pseudo_targets(z_weak, b if debias else None, c.pseudo_label, c.threshold)
        logits = self.net(self.normalise(torch.cat([weak_l, strongs])))
        loss_x = F.cross_entropy(logits[:n_l], y_l)
        strong_logits = logits[n_l:].reshape(c.strong_views, n_u, -1)
        loss_u = torch.stack([consistency_loss(z, q, mask) for z in strong_logits]).mean()
        loss = loss_x + c.lambda_u * loss_u
        if step % c.log_every == 0 or step == c.iterations - 1:
            self.log_step(loss, loss_x, loss_u, q, mask, y_u, b)
        return loss

    def log_step(self, loss: torch.Tensor, loss_x: torch.Tensor, loss_u: torch.Tensor,
                 q: torch.Tensor, mask: torch.Tensor, y_u: torch.Tensor,
                 b: torch.Tensor | None) -> None:
        """Log losses, mask rate, pseudo-label accuracy, b_k and per-class weight norms."""
        correct = (q.argmax(-1) == y_u).float()
        kept = mask.sum().clamp_min(1.0)
        values = {"train/loss": loss, "train/loss_x": loss_x, "train/loss_u": loss_u,
                  "train/mask_rate": mask.mean(),
                  "train/pseudo_label_acc": (correct * mask).sum() / kept}
        if b is not None:
            values.update({f"train/bias_{k}": b[k] for k in range(b.numel())})
        norms = self.net.classifier.weight.detach().norm(dim=1)
        values.update({f"train/wnorm_{k}": norms[k] for k in range(norms.numel())})
        # straight to the loggers: Lightning's self.log costs ~3 ms per key per call here
        scalars = {k: float(v.detach()) for k, v in values.items()}
        for logger in self.loggers:
            logger.log_metrics(scalars, step=int(self.global_step))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        ema_update(self.ema, self.net, self.cfg.ema_decay, int(self.global_step))

    # ----------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def final_evaluation(self) -> dict[str, Any]:
        """Return the EMA model's test metrics (debiased by its own b), the bias vector, its
        correlation with log(pseudo-label prior) and the same for each diagnostic reference.

        Pseudo-label prior: smoothed class frequencies of argmax f_ema(x_u) on the whole
        (unaugmented) unlabelled set. Each cached once per run."""
        if self._final is not None:
            return self._final
        c, s = self.cfg, self.split
        ema = self.ema.eval()
        device = s["x_test"].device
        z_test = ema(self.normalise(s["x_test"]))
        z_unl = ema(self.normalise(s["x_unlabeled"]))
        log_prior = class_prior(z_unl.argmax(-1), N_CLASSES).log()
        diag: dict[str, dict[str, Any]] = {}
        for kind in DIAG_REFERENCES:
            src = self.reference_source(kind, self.seed + EVAL_SEED_OFFSET, device)
            refs = src.normalise(src.raw(c.n_refs if kind == "fourier" else 1))
            b = self.bias(ema, refs)
            diag[kind] = {"bias": b, "corr": pearson(b, log_prior),
                          "profile": radial_profile(amplitude_spectrum(src.raw(c.n_refs)))}
        if self.uses_reference():
            bias = diag[c.ref_kind]["bias"]
        else:
            bias = torch.zeros(N_CLASSES, device=device)
        y = s["y_test"]
        tails = tail_classes(c.labeled_counts)
        recalls = class_recalls((z_test - bias).argmax(-1), y, N_CLASSES)
        raw = class_recalls(z_test.argmax(-1), y, N_CLASSES)
        data_profile = radial_profile(amplitude_spectrum(
            torch.cat([s["x_labeled"], s["x_unlabeled"]])))
        out = {
            "balanced_acc": balanced_accuracy(recalls),
            "gm_recall": geometric_mean_recall(recalls),
            "tail3_recall": float(recalls[tails].mean()),
            "per_class_recall": recalls.tolist(),
            "balanced_acc_raw": balanced_accuracy(raw),
            "gm_recall_raw": geometric_mean_recall(raw),
            "tail3_recall_raw": float(raw[tails].mean()),
            "tail_classes": tails,
            "bias_vector": bias.tolist(),
            "bias_prior_corr": diag[c.ref_kind]["corr"] if self.uses_reference() else None,
            "pseudo_label_prior": log_prior.exp().tolist(),
            "radial_amplitude": {"data": data_profile.tolist(),
                                 **{k: v["profile"].tolist() for k, v in diag.items()}},
        }
        for kind, d in diag.items():
            out[f"diag_bias_{kind}"] = d["bias"].tolist()
            out[f"diag_corr_{kind}"] = d["corr"]
        self._final = out
        return out

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        ev = self.final_evaluation()
        self.log_dict({"test/balanced_acc": ev["balanced_acc"], "test/gm_recall": ev["gm_recall"],
                       "test/tail3_recall": ev["tail3_recall"],
                       "test/balanced_acc_raw": ev["balanced_acc_raw"]}, on_epoch=True,
                      batch_size=int(batch[1].numel()))

    # ----------------------------------------------------------------------------- outputs
    def paper_metrics(self) -> dict[str, Any]:
        """Return bACC, GM, per-class and tail3 recall, b and corr(b, log prior) (the resolved
        parameters are in results.json["params"])."""
        return dict(self.final_evaluation())

    def spectral_probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the fixed probe batch: the normalised balanced test images and labels."""
        return self.normalise(self.split["x_test"]), self.split["y_test"]

    @torch.no_grad()
    def spectral_matrices(self) -> dict[str, dict[str, Any]]:
        """Return per class k the covariance of the penultimate features of the training net on
        the test images of class k (eigvals_sym), the classifier weight W (singular values)
        and its per-class row norms ‖W_k‖ (values)."""
        x, y = self.spectral_probe_batch()
        feats = self.net.features(x)
        out: dict[str, dict[str, Any]] = {}
        for k in range(N_CLASSES):
            cov = StreamingCovariance(feats.shape[1], device=feats.device, name=f"class{k}")
            cov.update(feats[y == k])
            out[f"feature_cov_class{k}"] = {"matrix": cov.covariance(), "kind": "eigvals_sym"}
        weight = self.net.classifier.weight.detach()
        out["classifier_weight"] = {"matrix": weight, "kind": "singular_values"}
        out["classifier_weight_norms"] = {"matrix": weight.norm(dim=1), "kind": "values"}
        return out
