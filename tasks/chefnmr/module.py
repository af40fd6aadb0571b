"""The chefnmr LightningModule: EDM training of the DiT on (conformer, spectra), then sampling
with classifier-free guidance in every evaluation mode, bond inference and the metrics.

Training step (all draws from a generator seeded by (seed, global_step): nothing from torch's
global stream): x0 = random rotation + translation of the centred conformer; σ = σ_d·exp(−1.2 +
1.3 n); x = x0 + σε; modality dropout (drop ¹H, ¹³C or both, each with p = `modality_dropout`);
loss = masked MSE(F, F*) + `lddt_weight`·smooth-LDDT(D, x0). EMA of both networks
(`ema_decay`) samples at test time.

Test: per target `n_samples` samples with 50 (`sampling_steps`) Heun steps for each mode
(both | h_only | c_only | none: the absent modality masked) and CFG weight w (uncond = both
masked; `none` once, w = 0) → XYZ → bonds (worker, `bond_timeout_s`) → SMILES → metrics.
Written: <run dir>/samples/samples.xyz (one frame per sample, comment: target, mode, w, sample,
SMILES) and samples.csv.
"""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from callbacks.spectra import StreamingCovariance
from tasks.base.contract import resolved_params
from tasks.chefnmr import edm
from tasks.chefnmr.bonds import BondWorker, xyz_block
from tasks.chefnmr.config import ATOM_TYPES, Config
from tasks.chefnmr.data import decode_strings
from tasks.chefnmr.metrics import (
    amr,
    bond_laplacian,
    max_tanimoto,
    topk_match,
    validity,
)
from tasks.chefnmr.model import DiT, SpectrumEmbedder
from tasks.chefnmr.sampling import edm_schedule, guided, heun_sample

TRAIN_SEED_OFFSET = 7919
EVAL_SEED_OFFSET = 104729
H_INDEX = ATOM_TYPES.index("H")


def mode_keeps(mode: str) -> tuple[bool, bool]:
    """Return (keep ¹H, keep ¹³C) of an evaluation mode."""
    return {"both": (True, True), "h_only": (True, False), "c_only": (False, True),
            "none": (False, False)}[mode]


def weight_tag(w: float) -> str:
    """Return the key suffix of a CFG weight: w2, w1.5, w0."""
    return f"w{w:g}"


class ChefNMRModule(pl.LightningModule):
    """Spectrum embedder + DiT denoiser trained with EDM; see the module docstring."""

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = c = params
        self.save_hyperparameters(resolved_params(params))
        self.embedder = SpectrumEmbedder(c.h_points, str(c.c_format), c.c_points,
                                         c.embedder_hidden, c.embedder_layers, c.heads,
                                         str(c.mask_token))
        self.dit = DiT(c.hidden, c.heads, c.dit_blocks, c.embedder_hidden)
        self.ema_embedder = copy.deepcopy(self.embedder).requires_grad_(False)
        self.ema_dit = copy.deepcopy(self.dit).requires_grad_(False)
        self.sd = 1.0
        self.data: dict[str, torch.Tensor] = {}
        self._eval: dict[str, list] = {}
        self._metrics: dict[str, Any] = {}
        self._examples: dict[str, Any] = {}
        self._last_loss = float("nan")

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        self.data = dm.tensors
        self.seed = int(dm.seed)
        rows = dm.rows(0)
        coords = self.data["coords"][rows].double()
        mask = (self.data["atom_types"][rows] >= 0).unsqueeze(1).expand(coords.shape[:-1])
        self.sd = edm.sigma_data(coords, mask)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = list(self.embedder.parameters()) + list(self.dit.parameters())
        return torch.optim.Adam([p for p in params if p.requires_grad], lr=self.cfg.lr,
                                betas=(0.9, 0.95))

    # ----------------------------------------------------------------------------- model
    def split_spectra(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (¹H, ¹³C) of a probe row [¹H ; ¹³C]."""
        return x[:, :self.cfg.h_points], x[:, self.cfg.h_points:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the spectrum embeddings y of probe rows x = [¹H ; ¹³C] (both kept)."""
        h, c = self.split_spectra(x)
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        return self.embedder(h, c, keep, keep)

    def denoised(self, dit: DiT, x: torch.Tensor, sigma: torch.Tensor, types: torch.Tensor,
                 mask: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (F, D): the network output at c_in·x and the denoised D = c_skip·x + c_out·F."""
        co = edm.edm_coefficients(sigma, self.sd)
        f = dit(co["c_in"].view(-1, 1, 1) * x, co["c_noise"], types, mask, y)
        return f, edm.denoise(x, f, sigma, self.sd)

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        c = self.cfg
        gen = torch.Generator(device=self.device).manual_seed(
            self.seed * 1_000_003 + TRAIN_SEED_OFFSET + int(self.global_step))
        mask, types = batch["mask"], batch["atom_types"]
        n = mask.shape[0]
        x0 = edm.augment(batch["coords"], mask, gen)
        sigma = edm.training_sigmas(n, self.sd, gen).to(self.device)
        eps = torch.randn(x0.shape, generator=gen, device=self.device) * mask.unsqueeze(-1)
        x = x0 + sigma.view(-1, 1, 1) * eps
        u = torch.rand(n, generator=gen, device=self.device)
        p = c.modality_dropout
        keep_h = ~((u < p) | ((u >= 2 * p) & (u < 3 * p)))
        keep_c = ~(((u >= p) & (u < 2 * p)) | ((u >= 2 * p) & (u < 3 * p)))
        y = self.embedder(batch["h"], batch["c"], keep_h, keep_c)
        f, d = self.denoised(self.dit, x, sigma, types, mask, y)
        mse = edm.masked_mse(f, edm.network_target(x0, eps, sigma, self.sd), mask)
        loss = mse
        if c.smooth_lddt:
            lddt = edm.smooth_lddt_loss(d, x0, mask)
            loss = loss + c.lddt_weight * lddt
            self.log("train/smooth_lddt", lddt, batch_size=n)
        self.log("train/mse", mse, batch_size=n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self._last_loss = float(loss.detach())
        return loss

    @torch.no_grad()
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        decay = self.cfg.ema_decay
        for ema, net in ((self.ema_embedder, self.embedder), (self.ema_dit, self.dit)):
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.mul_(decay).add_(pn.detach(), alpha=1 - decay)

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, h: torch.Tensor, c: torch.Tensor, types: torch.Tensor, mask: torch.Tensor,
               mode: str, w: float, generator: torch.Generator) -> torch.Tensor:
        """Return n_samples coordinate sets per target, (B, n_samples, A, 3), from the EMA
        networks in `mode` with CFG weight `w`."""
        k = self.cfg.n_samples
        b = h.shape[0]
        rep = lambda t: t.repeat_interleave(k, 0)  # noqa: E731
        h, c, types, mask = rep(h), rep(c), rep(types), rep(mask)
        keep_h, keep_c = mode_keeps(mode)
        ones = torch.ones(b * k, dtype=torch.bool, device=h.device)
        y_cond = self.ema_embedder(h, c, ones & keep_h, ones & keep_c)
        guide = w > 0 and mode != "none"
        y_unc = self.ema_embedder(h, c, ~ones, ~ones) if guide else None

        def denoise(x: torch.Tensor, s: float) -> torch.Tensor:
            sig = torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype)
            if not guide:
                return self.denoised(self.ema_dit, x, sig, types, mask, y_cond)[1]
            both = self.denoised(self.ema_dit, torch.cat([x, x]), torch.cat([sig, sig]),
                                 torch.cat([types, types]), torch.cat([mask, mask]),
                                 torch.cat([y_cond, y_unc]))[1]
            return guided(both[:x.shape[0]], both[x.shape[0]:], w)

        sigmas = edm_schedule(self.cfg.sampling_steps)
        x = heun_sample(denoise, tuple(types.shape) + (3,), mask, sigmas, generator)
        return x.view(b, k, *x.shape[1:])

    def eval_settings(self) -> list[tuple[str, float]]:
        """Return the (mode, w) pairs evaluated: every mode × weight; `none` once at w = 0."""
        out = []
        for mode in self.cfg.eval_modes:
            weights = [0.0] if mode == "none" else [float(w) for w in self.cfg.cfg_weights]
            out += [(mode, w) for w in weights]
        return out

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        gen = torch.Generator(device=self.device).manual_seed(
            self.seed * 1_000_003 + EVAL_SEED_OFFSET + batch_idx)
        for mode, w in self.eval_settings():
            x = self.sample(batch["h"], batch["c"], batch["atom_types"], batch["mask"], mode, w,
                            gen)
            self._eval.setdefault(f"{mode}|{w}", []).append(
                (batch["index"].cpu(), x.float().cpu()))

    def on_test_epoch_end(self) -> None:
        self._metrics = self.evaluate(self._eval)
        self._eval = {}

    # ----------------------------------------------------------------------------- metrics
    def atoms(self, row: int) -> tuple[list[str], int]:
        """Return (element symbols, atom count) of draw row `row`."""
        n = int(self.data["n_atoms"][row])
        return [ATOM_TYPES[int(t)] for t in self.data["atom_types"][row, :n]], n

    def evaluate(self, collected: dict[str, list]) -> dict[str, Any]:
        """Return the metrics per (mode, w) and the headline keys; write the samples."""
        c = self.cfg
        smiles_all = decode_strings(self.data["smiles"])
        out: dict[str, Any] = {}
        out_dir = Path(self.trainer.default_root_dir) / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        xyz_lines: list[str] = []
        rows_csv: list[list[Any]] = []
        with BondWorker(c.bond_timeout_s) as worker:
            for key, parts in collected.items():
                mode, w = key.split("|")[0], float(key.split("|")[1])
                index = torch.cat([p[0] for p in parts]).tolist()
                width = max(p[1].shape[2] for p in parts)  # batches differ in atom count
                coords = torch.cat([torch.nn.functional.pad(p[1], (0, 0, 0, width - p[1].shape[2]))
                                    for p in parts]).numpy()
                samples, targets, amrs, amrs_heavy = [], [], [], []
                for i, row in enumerate(index):
                    symbols, n = self.atoms(row)
                    target = smiles_all[row]
                    got = []
                    for j in range(c.n_samples):
                        block = xyz_block(symbols, coords[i, j, :n])
                        res = worker(block)
                        smi = None if res is None else res.smiles
                        got.append(smi)
                        head = f"target={row} mode={mode} w={w:g} sample={j} smiles={smi}"
                        xyz_lines.append(block.replace("\n\n", f"\n{head}\n", 1))
                        rows_csv.append([row, target, mode, w, j, smi or ""])
                    refs = self.data["coords"][row, :, :n].double().numpy()
                    heavy = np.array([s != "H" for s in symbols])
                    amrs.append(amr(list(coords[i, :, :n]), refs, np.ones(n, dtype=bool)))
                    amrs_heavy.append(amr(list(coords[i, :, :n]), refs, heavy))
                    samples.append(got)
                    targets.append(target)
                    if mode == "both" and "first" not in self._examples:
                        self._examples["first"] = (target, got, coords[i, 0, :n], refs[0])
                tag = f"{mode}" if mode == "none" else f"{mode}_{weight_tag(w)}"
                out[f"top1_{tag}"] = topk_match(samples, targets, 1)
                out[f"top{c.n_samples}_{tag}"] = topk_match(samples, targets, c.n_samples)
                out[f"max_tanimoto_{tag}"] = max_tanimoto(samples, targets, c.n_samples)
                out[f"validity_{tag}"] = validity(samples)
                out[f"amr_{tag}"] = float(np.mean(amrs))
                out[f"amr_heavy_{tag}"] = float(np.mean(amrs_heavy))
            out["bond_timeouts"] = float(worker.timeouts)
            out["bond_errors"] = float(worker.errors)
        (out_dir / "samples.xyz").write_text("".join(xyz_lines))
        with open(out_dir / "samples.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["row", "target", "mode", "w", "sample", "smiles"])
            writer.writerows(rows_csv)
        if "both" in c.eval_modes:  # headline: both spectra at the last CFG weight
            tag = f"both_{weight_tag(float(c.cfg_weights[-1]))}"
            for name in ("top1", f"top{c.n_samples}", "max_tanimoto", "validity", "amr"):
                out[name] = out[f"{name}_{tag}"]
        return out

    def roundtrip_accuracy(self) -> float:
        """Return the fraction of evaluated targets whose conformer 0 → XYZ → bonds → SMILES
        equals their SMILES (the metric pipeline on ground truth)."""
        rows = self.trainer.datamodule.rows(2)
        if self.cfg.eval_targets > 0:
            rows = rows[:self.cfg.eval_targets]
        smiles = decode_strings(self.data["smiles"])
        hits = 0
        with BondWorker(self.cfg.bond_timeout_s) as worker:
            for row in rows.tolist():
                symbols, n = self.atoms(row)
                res = worker(xyz_block(symbols, self.data["coords"][row, 0, :n].double().numpy()))
                hits += res is not None and res.smiles == smiles[row]
        return hits / max(len(rows), 1)

    def paper_metrics(self) -> dict[str, Any]:
        """Return the data's numbers (n_molecules, duplicate_spectrum_rate, embedding
        failures, σ_data, round-trip accuracy), the last training loss and, after the test
        loop, the sampling metrics per mode and CFG weight."""
        if "roundtrip_acc" not in self._examples:
            self._examples["roundtrip_acc"] = self.roundtrip_accuracy()
        out = {"n_molecules": int(self.data["split"].numel()),
               "duplicate_spectrum_rate": float(self.data["duplicate_spectrum_rate"]),
               "n_embed_failed": int(self.data["n_embed_failed"]),
               "sigma_data": float(self.sd),
               "roundtrip_acc": float(self._examples["roundtrip_acc"]),
               "final_train_loss": float(self._last_loss)}
        out.update(self._metrics)
        return out

    # ----------------------------------------------------------------------------- spectra
    def spectral_probe_batch(self) -> tuple[torch.Tensor, None]:
        """Return the fixed probe rows [¹H ; ¹³C] of the first 64 train molecules."""
        rows = self.trainer.datamodule.rows(0)[:64]
        h = self.data["h_spectrum"][rows].float()
        c = self.data["c_spectrum"][rows].float()
        return torch.cat([h, c], 1).to(self.device), None

    @torch.no_grad()
    def spectral_matrices(self) -> dict[str, dict[str, Any]]:
        """Return the covariance of the spectrum embeddings on the probe rows (eigvals_sym);
        after evaluation also, for the first `both` target, the Laplacian spectra of its bond
        graph and of the first sample's inferred graph (eigvals_sym) and the centred distance Gram
        matrices −½·J·D²·J of the first sample and of the true conformer (eigvals_sym)."""
        x, _ = self.spectral_probe_batch()
        y = self.forward(x)
        cov = StreamingCovariance(y.shape[1], device=y.device, name="embedding")
        cov.update(y)
        out: dict[str, dict[str, Any]] = {
            "embedding_cov": {"matrix": cov.covariance(), "kind": "eigvals_sym"}}
        if "first" in self._examples:
            target, got, pred, ref = self._examples["first"]
            for name, smiles in (("laplacian_target", target), ("laplacian_inferred", got[0])):
                lap = bond_laplacian(smiles) if smiles else None
                if lap is not None:
                    out[name] = {"matrix": torch.as_tensor(lap), "kind": "eigvals_sym"}
            for name, pts in (("gram_pred", pred), ("gram_true", ref)):
                p = torch.as_tensor(np.asarray(pts), dtype=torch.float64)
                d2 = torch.cdist(p, p) ** 2
                j = torch.eye(len(p), dtype=torch.float64) - 1.0 / len(p)
                out[name] = {"matrix": -0.5 * j @ d2 @ j, "kind": "eigvals_sym"}
        return out

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["chefnmr_last_loss"] = self._last_loss

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._last_loss = float(checkpoint.get("chefnmr_last_loss", math.nan))
