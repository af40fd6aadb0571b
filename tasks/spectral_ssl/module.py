"""The spectral_ssl LightningModule: SimCLR or SimSiam with the spectral regulariser, per-epoch
spectra of the representation, and the two linear probes at the end.

training_step: two augmented views of each digit (the spurious cue drawn after augmentation),
backbone → h, projector → z; L = L_SSL + β·R(h or z) (tasks/spectral_ssl/regularizer.py).
At the end of every epoch (one pass over the training split) the covariance spectra of h and z
on a fixed evaluation batch are logged (effective rank, participation ratio, top-eigenvalue share;
callbacks.spectra) with the alignment of the top principal direction of h with a and y on the
re-rendered test set. `paper_metrics()` trains the ERM and the group-balanced (DFR-style) probes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from callbacks.spectra import StreamingCovariance, spectrum_summary
from tasks.base.contract import resolved_params
from tasks.spectral_ssl import benchmark, probes
from tasks.spectral_ssl.augment import augment
from tasks.spectral_ssl.config import Config
from tasks.spectral_ssl.losses import nt_xent, simsiam_loss
from tasks.spectral_ssl.model import SSLNet
from tasks.spectral_ssl.regularizer import spectral_penalty

EVAL_SEED = 0  # the fixed evaluation batch is the same subset of the training split in every run
ALIGN_IMAGES = 100  # per-epoch alignment: these many test images, each under every attribute


def spectrum_stats(features: torch.Tensor, name: str) -> tuple[torch.Tensor, dict[str, float]]:
    """Return (descending covariance eigenvalues, {effective_rank, participation_ratio,
    top_eig_share = λ1/Σλ}) of a feature batch, float64 (callbacks.spectra)."""
    evals = StreamingCovariance(features.shape[1], name=name).update(features).eigenvalues()
    evals = torch.sort(evals.clamp(min=0.0), descending=True).values
    summary = spectrum_summary(evals, name=name)
    total = summary["trace"]
    return evals, {"effective_rank": summary["effective_rank"],
                   "participation_ratio": summary["participation_ratio"],
                   "top_eig_share": summary["top1"] / total if total > 0 else 0.0}


class SpectralSSLModule(pl.LightningModule):
    """Self-supervised pretraining on spurious digits with a flat-spectrum regulariser."""

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = params
        self.save_hyperparameters(resolved_params(params))
        c = params
        self.net = SSLNet(benchmark.input_dim(c.spurious_kind), c.hidden_dim, c.rep_dim,
                          c.proj_dim, predictor=c.ssl_method == "simsiam")
        self.register_buffer("masks", benchmark.patch_masks(c.n_attr), persistent=False)
        self.register_buffer("colours", benchmark.colour_values(c.n_attr), persistent=False)
        self.history: list[dict[str, float]] = []
        self._final: dict[str, Any] | None = None
        self._final_step: int | None = None
        self.steps_per_epoch = 0

    # ----------------------------------------------------------------------------- data
    def _buffer(self, name: str, value: torch.Tensor) -> None:
        if name in self._buffers:
            self._buffers[name] = value.to(self.masks.device)
        else:
            self.register_buffer(name, value, persistent=False)

    def setup(self, stage: str) -> None:
        """Register the training split, the fixed evaluation batch and the re-rendered test set
        as (non-persistent) buffers, so they follow the module to its device."""
        dm = self.trainer.datamodule
        dm.setup(stage)
        c, train, test = self.cfg, dm.train, dm.test
        self.steps_per_epoch = dm.steps_per_epoch()
        for key in ("image", "y", "a"):
            self._buffer(f"train_{key}", train[key])
        n_train = int(train["y"].numel())
        gen = torch.Generator().manual_seed(EVAL_SEED)
        self._buffer("eval_idx", torch.randperm(n_train, generator=gen)[:min(c.n_eval, n_train)])
        x, y, a, idx = benchmark.render_all(test["image"], test["y"], c.spurious_kind,
                                            self.masks.cpu(), self.colours.cpu())
        self._buffer("test_x", x)
        self._buffer("test_y", y)
        self._buffer("test_a", a)
        self._buffer("test_probe_half", test["probe_half"][idx])
        n_test = int(test["y"].numel())
        chosen = torch.zeros(n_test, dtype=torch.bool)
        chosen[torch.randperm(n_test, generator=gen)[:ALIGN_IMAGES]] = True
        self._buffer("align_rows", torch.nonzero(chosen[idx]).squeeze(1))

    def render(self, images: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Return network inputs of digit images under attributes a (the cue drawn last)."""
        return benchmark.render(images, a, self.cfg.spurious_kind, self.masks, self.colours)

    def view(self, images: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Return one augmented view: shift, erase, noise on the digit, then the cue."""
        c = self.cfg
        return self.render(augment(images, c.aug_shift, c.aug_erase_prob, c.aug_erase_max,
                                   c.aug_noise), a)

    def eval_inputs(self) -> torch.Tensor:
        """Return the fixed evaluation batch: un-augmented training images with their own a."""
        return self.render(self.train_image[self.eval_idx], self.train_a[self.eval_idx])

    # ----------------------------------------------------------------------------- model
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the representation h = backbone(x)."""
        return self.net.backbone(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.cfg.lr,
                                weight_decay=self.cfg.weight_decay)

    def ssl_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Return NT-Xent(z1, z2) (simclr) or the SimSiam loss on predictor(z1), predictor(z2)."""
        if self.cfg.ssl_method == "simclr":
            return nt_xent(z1, z2, self.cfg.temperature)
        b = z1.shape[0]
        p = self.net.predictor(torch.cat([z1, z2]))
        return simsiam_loss(p[:b], p[b:], z1, z2)

    def regulariser(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        """Return ½(R(f1) + R(f2)) over the two views (no graph when β = 0: logged only)."""
        form = self.cfg.reg_form
        if self.cfg.reg_beta == 0:
            f1, f2 = f1.detach(), f2.detach()
        return 0.5 * (spectral_penalty(f1, form) + spectral_penalty(f2, form))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, _, a = batch
        b = images.shape[0]
        h = self.net.backbone(torch.cat([self.view(images, a), self.view(images, a)]))
        z = self.net.projector(h)
        ssl = self.ssl_loss(z[:b], z[b:])
        feats = h if self.cfg.reg_layer == "backbone" else z
        reg = self.regulariser(feats[:b], feats[b:])
        loss = ssl + self.cfg.reg_beta * reg if self.cfg.reg_beta > 0 else ssl
        self.log_dict({"train/loss": loss, "train/loss_ssl": ssl, "train/reg": reg},
                      on_step=False, on_epoch=True, batch_size=b)
        return loss

    # ----------------------------------------------------------------------------- spectra
    @torch.no_grad()
    def eval_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (h, z) of the fixed evaluation batch in eval mode (mode restored after)."""
        was = self.training
        self.eval()
        try:
            h = self.net.backbone(self.eval_inputs())
            return h, self.net.projector(h)
        finally:
            self.train(was)

    @torch.no_grad()
    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """Return backbone features of x in eval mode (mode restored after)."""
        was = self.training
        self.eval()
        try:
            return self.net.backbone(x)
        finally:
            self.train(was)

    def spectral_matrices(self) -> dict[str, torch.Tensor]:
        """Return the float64 covariances of backbone (h) and projector (z) features on the fixed
        evaluation batch."""
        h, z = self.eval_features()
        return {name: StreamingCovariance(f.shape[1], name=name).update(f).covariance()
                for name, f in (("backbone_cov", h), ("projector_cov", z))}

    def spectral_probe_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, y) of the fixed evaluation batch (FeatureSpectrum's probe set)."""
        return self.eval_inputs(), self.train_y[self.eval_idx]

    @torch.no_grad()
    def measure(self, full: bool = False) -> dict[str, float]:
        """Return the spectrum summaries of h and z on the evaluation batch, the per-dimension
        std of normalised z (collapse check, ≈ 1/sqrt(d) when not collapsed), and the share of
        the top principal direction's variance of h explained by a and by y on the re-rendered
        test set (correlation ratio η²; per epoch on ALIGN_IMAGES test images under every
        attribute, on all of them when `full`)."""
        h, z = self.eval_features()
        out: dict[str, float] = {}
        for layer, f in (("backbone", h), ("projector", z)):
            _, stats = spectrum_stats(f, layer)
            out.update({f"{layer}/{k}": v for k, v in stats.items()})
        out["z_std"] = float(torch.nn.functional.normalize(z, dim=1).std(dim=0).mean())
        rows = slice(None) if full else self.align_rows
        test_h = self.features_of(self.test_x[rows])
        mean, vec = probes.top_directions(test_h, 1)
        score = (test_h.to(torch.float64) - mean) @ vec[:, 0]
        out["spurious_alignment"] = probes.correlation_ratio(score, self.test_a[rows])
        out["core_alignment"] = probes.correlation_ratio(score, self.test_y[rows])
        return out

    def on_train_epoch_end(self) -> None:
        stats = self.measure()
        self.history.append({"epoch": int(self.current_epoch), "step": int(self.global_step),
                             **stats})
        self.log_dict({f"spectrum/{k}": v for k, v in stats.items()}, on_step=False,
                      on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["spectral_ssl_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("spectral_ssl_history", []))

    # ----------------------------------------------------------------------------- probes
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Return the probe results on the re-rendered test set, 2-fold cross-fitted over its
        halves (each half's predictions come from a probe fitted on the other half; halves split
        images, not renderings): the group-balanced (DFR-style) probe, the ERM probe fitted on
        the spurious training split, a raw-pixel DFR reference, the top-k PC probes for a and y
        (PCs from the fitting half); the final spectra and alignments (all test renderings)."""
        c = self.cfg
        n_classes = benchmark.N_CLASSES
        test_h = self.features_of(self.test_x)
        train_h = self.features_of(self.render(self.train_image, self.train_a))

        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu", torch.float64).numpy()

        th, ty, ta = np_(test_h), np_(self.test_y).astype(int), np_(self.test_a).astype(int)
        half = np_(self.test_probe_half).astype(bool)
        args = (c.probe_c, c.probe_scaling, c.probe_max_iter)

        def crossfit(x: np.ndarray, target: np.ndarray, *fit_args: Any) -> np.ndarray:
            pred = np.empty_like(target)
            for fit_m in (half, ~half):
                pred[~fit_m] = probes.fit_predict(x[fit_m], target[fit_m], x[~fit_m], *fit_args)
            return pred

        out: dict[str, Any] = {}
        out.update(probes.accuracy_summary(crossfit(th, ty, *args), ty, ta, n_classes, c.n_attr))
        pred = probes.fit_predict(np_(train_h), np_(self.train_y).astype(int), th, *args)
        erm = probes.accuracy_summary(pred, ty, ta, n_classes, c.n_attr)
        out.update({f"{k}_erm": v for k, v in erm.items()})
        pix = probes.accuracy_summary(crossfit(np_(self.test_x), ty, *args), ty, ta, n_classes,
                                      c.n_attr)
        out.update({f"{k}_pixels": v for k, v in pix.items()})
        for label, target in (("a", ta), ("y", ty)):
            pred = np.empty_like(target)
            for fit_m in (half, ~half):
                mean, vecs = probes.top_directions(test_h[torch.from_numpy(fit_m).to(test_h.device)], c.pc_top_k)
                scores = np_((test_h.to(torch.float64) - mean) @ vecs)
                pred[~fit_m] = probes.fit_predict(scores[fit_m], target[fit_m], scores[~fit_m],
                                                  1.0, "standard", c.probe_max_iter)
            out[f"pc_probe_acc_{label}"] = float((pred == target).mean())
        out["chance_a"], out["chance_y"] = 1.0 / c.n_attr, 1.0 / n_classes
        stats = self.measure(full=True)
        out.update({
            "effective_rank": stats["backbone/effective_rank"],
            "participation_ratio": stats["backbone/participation_ratio"],
            "top_eig_share": stats["backbone/top_eig_share"],
            "effective_rank_projector": stats["projector/effective_rank"],
            "participation_ratio_projector": stats["projector/participation_ratio"],
            "top_eig_share_projector": stats["projector/top_eig_share"],
            "spurious_alignment": stats["spurious_alignment"],
            "core_alignment": stats["core_alignment"], "z_std": stats["z_std"]})
        return out

    def early_signature(self) -> dict[str, float]:
        """Return the top-eigenvalue share of h after the first epoch, its peak over training and
        the epoch of the peak, and the spurious/core alignment after the first epoch."""
        if not self.history:
            return {}
        shares = [r["backbone/top_eig_share"] for r in self.history]
        peak = int(np.argmax(shares))
        first = self.history[0]
        return {"top_eig_share_first_epoch": shares[0], "top_eig_share_peak": shares[peak],
                "top_eig_share_peak_epoch": int(self.history[peak]["epoch"]),
                "spurious_alignment_first_epoch": first["spurious_alignment"],
                "core_alignment_first_epoch": first["core_alignment"],
                "effective_rank_first_epoch": first["backbone/effective_rank"]}

    def paper_metrics(self) -> dict[str, Any]:
        """Return the probe accuracies, spectra and alignments, the epochs run and the split
        sizes (the resolved parameters are in results.json["params"], the final step in
        results.json["global_step"])."""
        step = int(self.global_step)
        if self._final is None or self._final_step != step:
            self._final, self._final_step = self.evaluate(), step
        logged = self.trainer.callback_metrics if self._trainer is not None else {}
        out: dict[str, Any] = {
            "epochs": len(self.history), "steps_per_epoch": self.steps_per_epoch,
            "n_train": int(self.train_y.numel()),
            "n_test": int(self.test_y.numel()) // self.cfg.n_attr,
            **self._final, **self.early_signature()}
        for key in ("train/loss_ssl", "train/reg"):
            if key in logged:
                out[key.split("/")[1] + "_final"] = float(logged[key])
        return out
