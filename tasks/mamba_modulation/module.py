"""The mamba_modulation LightningModule: evaluation by length and the training-free
interventions on the cached backbone.

The backbone (trained at L_train, cached) comes from the data module. The outer fit has one
step per evaluation length L = m · L_train (m in `eval_multipliers`): the step measures the
metric without intervention on the evaluation set, calibrates the chosen intervention on the
disjoint calibration set at the same L, and measures the metric again with its scales
(`lm`: tail CE, the mean CE of the last `tail_tokens` targets; `passkey`: answer accuracy, by
needle depth). After the last step it records the state dynamics at the largest length (state
norm ‖h_t‖, cumulative decay exp(−Σ Δ_t |A|), mean per-step decays), without and with the
intervention, into `<run dir>/mamba_modulation/` (npz + png).

gap_16x = metric(largest m) − metric(smallest m) without intervention (lm: CE difference;
passkey: accuracy drop); recovered_frac = (CE_none − CE_int) / gap at the largest m
(passkey: (acc_int − acc_none) / drop); cost_at_train_len = CE_int − CE_none at the smallest m
(passkey: acc_none − acc_int); void = the failure of claim 1 is absent (gap < 0.5 nats, or a
drop < 0.3).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from tasks.base.contract import resolved_params
from tasks.mamba_modulation import calibrate, metrics
from tasks.mamba_modulation.config import Config
from tasks.mamba_modulation.data import generator

CLAIM1_LM_NATS = 0.5      # claim 1 (lm): tail CE at 16x at least 0.5 nats above L_train
CLAIM1_PASSKEY_DROP = 0.3  # claim 1 (passkey): accuracy at least 30 pp lower
DIAG_SEQUENCES = 2         # evaluation sequences whose state dynamics are recorded
OUT_DIR = "mamba_modulation"
log = logging.getLogger("spectrum")


def gap_and_recovery(setting: str, first: dict[str, float], last: dict[str, float],
                     first_int: dict[str, float], last_int: dict[str, float]
                     ) -> dict[str, float | None]:
    """Return gap_16x, recovered_frac, cost_at_train_len and void from the metric at the
    smallest (`first`) and largest (`last`) length, without and with the intervention (see the
    module docstring for the formulas)."""
    if setting == "lm":
        gap = last["tail_ce"] - first["tail_ce"]
        recovered = (last["tail_ce"] - last_int["tail_ce"]) / gap if gap != 0 else None
        cost = first_int["tail_ce"] - first["tail_ce"]
        void = gap < CLAIM1_LM_NATS
    else:
        gap = first["accuracy"] - last["accuracy"]
        recovered = (last_int["accuracy"] - last["accuracy"]) / gap if gap != 0 else None
        cost = first["accuracy"] - first_int["accuracy"]
        void = gap < CLAIM1_PASSKEY_DROP
    return {"gap_16x": float(gap), "recovered_frac": None if recovered is None
            else float(recovered), "cost_at_train_len": float(cost), "void": bool(void)}


class MambaModulationModule(pl.LightningModule):
    """Length generalisation of the cached Mamba backbone and its training-free repair."""

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = params
        self.save_hyperparameters(resolved_params(params))
        self.automatic_optimization = False
        self.clock = torch.nn.Parameter(torch.zeros(()), requires_grad=False)
        self.lm: torch.nn.Module | None = None
        self.results: dict[int, dict[str, Any]] = {}
        self.diag: dict[str, np.ndarray] = {}
        self.backbone_info: dict[str, Any] = {}

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        if self.lm is not None:
            return
        dm = self.trainer.datamodule
        dm.setup(stage)
        self.lm = copy.deepcopy(dm.backbone.lm).eval()
        for p in self.lm.parameters():
            p.requires_grad_(False)
        self.backbone_info = {"backbone_loaded": bool(dm.backbone.loaded),
                              "backbone_wall_s": float(dm.backbone.seconds),
                              **{f"backbone_{k}": v for k, v in dm.backbone.metrics.items()}}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Return a no-op SGD on `clock` (no gradient ever): its step per evaluation length
        advances `global_step`, so logs, spectra and checkpoints see one step per length (the
        scales are calibrated, not optimised by the Trainer)."""
        return torch.optim.SGD([self.clock], lr=0.0)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return the LM's logits (B, L, vocab) under the scales in effect."""
        return self.lm(tokens)

    def spectral_probe_batch(self) -> torch.Tensor:
        """Return a fixed probe batch: the first training batch's inputs (B, L_train)."""
        return self.trainer.datamodule.train_batch(0)[:, :-1]

    # ----------------------------------------------------------------------------- metric
    @torch.no_grad()
    def measure(self, sets: tuple[torch.Tensor, ...]) -> dict[str, Any]:
        """Return the metric on the evaluation set under the scales in effect: lm {tail_ce};
        passkey {accuracy, answer_ce, by_depth {depth: accuracy}}."""
        c = self.cfg
        if c.setting == "lm":
            return {"tail_ce": metrics.tail_ce(self.lm, sets[0].to(self.device), c.tail_tokens)}
        tokens, depths = sets[0].to(self.device), sets[1]
        correct, ce = metrics.passkey_answers(self.lm, tokens)
        correct = correct.cpu()
        by_depth = {f"{float(d):.3f}": float(correct[depths == d].float().mean())
                    for d in torch.unique(depths)}
        return {"accuracy": float(correct.float().mean()), "answer_ce": ce, "by_depth": by_depth}

    @torch.no_grad()
    def objective(self, sets: tuple[torch.Tensor, ...]) -> float:
        """Return P on the calibration set under the scales in effect: the perplexity
        exp(tail CE) (lm) or exp(answer CE) (passkey)."""
        c = self.cfg
        if c.setting == "lm":
            return math.exp(metrics.tail_ce(self.lm, sets[1].to(self.device), c.tail_tokens))
        return math.exp(metrics.passkey_answers(self.lm, sets[2].to(self.device))[1])

    def calibration_loss(self, sets: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Return the differentiable calibration loss (lm: tail CE; passkey: answer CE)."""
        c = self.cfg
        if c.setting == "lm":
            return metrics.tail_ce_per_sequence(self.lm, sets[1].to(self.device),
                                                c.tail_tokens).mean()
        tokens = sets[2].to(self.device)
        logits = metrics.passkey_logits(self.lm, tokens)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, -2:].flatten())

    # ----------------------------------------------------------------------------- calibration
    def calibrate(self, length: int, sets: tuple[torch.Tensor, ...]
                  ) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
        """Return ({"a_power": per-layer s, "delta": per-layer s}, trace) of the chosen
        intervention at `length`, calibrated on the calibration set (the scales are left set)."""
        c, lm = self.cfg, self.lm
        n = c.n_layers
        ones = [1.0] * n

        def p_a(s: list[float]) -> float:
            lm.set_scales(a_power=s)
            return self.objective(sets)

        def p_delta(s: list[float]) -> float:
            lm.set_scales(delta=s)
            return self.objective(sets)

        intervention = str(c.intervention)
        trace: list[dict[str, Any]] = []
        a_power, delta = ones, ones
        if intervention == "a_power_uniform":
            a_power, trace = calibrate.grid_search(p_a, c.scale_grid, n)
        elif intervention == "a_power_spsa":
            a_power, trace = calibrate.spsa(p_a, n, c.spsa_iters, c.spsa_init, c.scale_min,
                                            generator(self.trainer.datamodule.seed, "spsa", length))
        elif intervention == "delta_spsa":
            delta, trace = calibrate.spsa(p_delta, n, c.spsa_iters, c.spsa_init, c.scale_min,
                                          generator(self.trainer.datamodule.seed, "spsa", length))
        elif intervention == "a_backprop":
            return self.calibrate_backprop(sets)
        lm.set_scales(a_power=a_power, delta=delta)
        return {"a_power": list(a_power), "delta": list(delta)}, trace

    def calibrate_backprop(self, sets: tuple[torch.Tensor, ...]
                           ) -> tuple[dict[str, list[float]], list[dict[str, Any]]]:
        """Train a (d_inner, d_state) A-power scale per layer (init 1, clamped to [scale_min, 1]) by
        AdamW on the calibration loss; return the per-layer mean scales and the loss trace."""
        c, lm = self.cfg, self.lm
        lm.set_scales()
        params = []
        for block in lm.blocks():
            block.a_scale_param = torch.nn.Parameter(torch.ones_like(block.A_log))
            params.append(block.a_scale_param)
        with torch.enable_grad():
            trace = calibrate.backprop_scale(lambda: self.calibration_loss(sets), params,
                                             c.backprop_steps, c.backprop_lr, c.scale_min)
        for block in lm.blocks():  # keep the trained matrices as buffers
            block.a_scale = block.a_scale_param.detach().clone()
            block.a_scale_param = None
        return {"a_power": [float(p.detach().mean()) for p in params],
                "delta": [1.0] * c.n_layers}, trace

    # ----------------------------------------------------------------------------- training
    def training_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        index = int(batch)
        c = self.cfg
        length = c.lengths()[index]
        sets = self.trainer.datamodule.eval_sets(length)
        self.lm.set_scales()
        start = time.perf_counter()
        base = self.measure(sets)
        scales, trace = self.calibrate(length, sets)
        after = self.measure(sets)
        self.results[index] = {"length": length, "multiplier": float(c.eval_multipliers[index]),
                               "none": base, "intervention": after, "scales": scales,
                               "trace": trace, "wall_s": time.perf_counter() - start}
        key = "tail_ce" if c.setting == "lm" else "accuracy"
        logs = {f"eval/{key}_none": base[key], f"eval/{key}_intervention": after[key],
                "eval/length": float(length)}
        for layer, (sa, sd) in enumerate(zip(scales["a_power"], scales["delta"])):
            logs[f"scale/a_power_layer{layer}"] = sa
            logs[f"scale/delta_layer{layer}"] = sd
        self.log_dict(logs, on_step=True, on_epoch=False)
        if index == len(c.eval_multipliers) - 1:
            self.record_dynamics(sets)
            log.info("mamba_modulation: %s by length (intervention %s)\n%s", key,
                     c.intervention, self.length_table())
        self.optimizers().step()  # no gradient: advances global_step only

    def length_table(self) -> str:
        """Return the text table of the metric by length without / with the intervention, the
        share of the gap recovered at each length, and the per-layer scales."""
        c = self.cfg
        key = "tail_ce" if c.setting == "lm" else "accuracy"
        done = [self.results[i] for i in sorted(self.results)]
        first = done[0]["none"][key]
        lines = [f"{'L':>6} {'x L_train':>9} {key + ' none':>14} {key + ' ' + str(c.intervention):>28}"
                 f" {'recovered':>9}  scales (A-power | delta)"]
        for r in done:
            none, inter = r["none"][key], r["intervention"][key]
            gap = none - first if c.setting == "lm" else first - none
            gain = none - inter if c.setting == "lm" else inter - none
            share = f"{gain / gap:9.3f}" if gap > 0 else f"{'-':>9}"  # no failure: no share
            scales = (" ".join(f"{v:.3f}" for v in r["scales"]["a_power"]) + " | "
                      + " ".join(f"{v:.3f}" for v in r["scales"]["delta"]))
            lines.append(f"{r['length']:>6} {r['multiplier']:>9g} {none:>14.4f} {inter:>28.4f}"
                         f" {share}  {scales}")
        return "\n".join(lines)

    @torch.no_grad()
    def record_dynamics(self, sets: tuple[torch.Tensor, ...]) -> None:
        """Record ‖h_t‖, the cumulative decay and the mean per-step decays per layer at the
        largest length, without (`none`) and with (`scaled`) the scales in effect; write them
        with a plot into `<run dir>/mamba_modulation/`."""
        c, lm = self.cfg, self.lm
        tokens = sets[0][:DIAG_SEQUENCES].to(self.device)
        tokens = tokens[:, :-1]
        scaled = [b.a_scale.clone() for b in lm.blocks()], [b.delta_scale.clone()
                                                             for b in lm.blocks()]
        out: dict[str, np.ndarray] = {}
        for tag in ("none", "scaled"):
            if tag == "none":
                lm.set_scales()
            else:
                for block, sa, sd in zip(lm.blocks(), *scaled):
                    block.a_scale, block.delta_scale = sa, sd
            lm.recording(True)
            lm(tokens)
            for layer, block in enumerate(lm.blocks()):
                for name, value in block.recorded.items():
                    out[f"{tag}/layer{layer}/{name}"] = value.detach().cpu().numpy()
                out[f"{tag}/layer{layer}/A"] = block.modulated_A().detach().cpu().numpy()
            lm.recording(False)
        self.diag = out
        run_dir = Path(self.trainer.default_root_dir) / OUT_DIR
        run_dir.mkdir(parents=True, exist_ok=True)
        np.savez(run_dir / "state_dynamics.npz", **{k.replace("/", "__"): v
                                                    for k, v in out.items()})
        plot_dynamics(out, c.n_layers, c.lengths()[-1], run_dir / "state_dynamics.png")

    # ----------------------------------------------------------------------------- resume
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the results of the lengths done and the scales in effect."""
        checkpoint["mamba_modulation"] = {
            "results": copy.deepcopy(self.results),
            "a_scale": [b.a_scale.detach().cpu() for b in self.lm.blocks()],
            "delta_scale": [b.delta_scale.detach().cpu() for b in self.lm.blocks()],
            "diag": dict(self.diag)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("mamba_modulation")
        if state is None:
            return
        self.results = {int(k): v for k, v in state["results"].items()}
        self.diag = dict(state["diag"])
        self._restored_scales = (state["a_scale"], state["delta_scale"])

    def on_fit_start(self) -> None:
        restored = getattr(self, "_restored_scales", None)
        if restored is not None:
            for block, sa, sd in zip(self.lm.blocks(), *restored):
                block.a_scale, block.delta_scale = sa.to(self.device), sd.to(self.device)

    # ----------------------------------------------------------------------------- outputs
    def spectral_matrices(self) -> dict[str, Any]:
        """Return per layer: `A` (λ = −exp(A_log), the eigenvalues of the diagonal A),
        `A_scaled` (−exp(s ⊙ A_log) under the scales in effect), `log_abs_A` (log|λ|, before
        scaling) and, once the dynamics were recorded, `decay` (mean discretised decay
        |λ̄| = mean_t exp(Δ_t A) with the scales) and `timescale` (τ = −1/ln|λ̄|)."""
        out: dict[str, Any] = {}
        for layer, block in enumerate(self.lm.blocks()):
            A = -torch.exp(block.A_log.detach().float()).flatten()
            out[f"layer{layer}/A"] = {"matrix": A, "kind": "values"}
            out[f"layer{layer}/A_scaled"] = {"matrix": block.modulated_A().detach().flatten(),
                                             "kind": "values"}
            out[f"layer{layer}/log_abs_A"] = {"matrix": torch.log(A.abs()), "kind": "values"}
            decay = self.diag.get(f"scaled/layer{layer}/step_decay")
            if decay is not None:
                d = torch.as_tensor(decay).flatten().double().clamp(1e-300, 1 - 1e-12)
                out[f"layer{layer}/decay"] = {"matrix": d, "kind": "values"}
                out[f"layer{layer}/timescale"] = {"matrix": -1.0 / torch.log(d), "kind": "values"}
        return out

    def paper_metrics(self) -> dict[str, Any]:
        """Return tail_ce (lm: {length: CE} without intervention) and tail_ce_intervention, or
        accuracy / accuracy_intervention / accuracy_by_depth (passkey); gap_16x, recovered_frac,
        cost_at_train_len, void; scales {length: per-layer A-power and Δ scales}; the
        calibration traces (SPSA: s per iteration); the backbone's training numbers; the
        fraction of discretised decays above 0.99 and the state norm at the last position."""
        c = self.cfg
        done = [self.results[i] for i in sorted(self.results)]
        out: dict[str, Any] = dict(self.backbone_info)
        if not done:
            return out
        key = "tail_ce" if c.setting == "lm" else "accuracy"
        out[key] = {str(r["length"]): r["none"][key] for r in done}
        out[f"{key}_intervention"] = {str(r["length"]): r["intervention"][key] for r in done}
        if c.setting == "passkey":
            out["accuracy_by_depth"] = {str(r["length"]): r["none"]["by_depth"] for r in done}
            out["accuracy_by_depth_intervention"] = {str(r["length"]): r["intervention"]["by_depth"]
                                                     for r in done}
        out["scales"] = {str(r["length"]): r["scales"] for r in done}
        out["calibration_trace"] = {str(r["length"]): r["trace"] for r in done}
        out["calibration_wall_s"] = float(sum(r["wall_s"] for r in done))
        if len(done) == len(c.eval_multipliers):
            out.update(gap_and_recovery(str(c.setting), done[0]["none"], done[-1]["none"],
                                        done[0]["intervention"], done[-1]["intervention"]))
            out["gap_multiplier"] = float(done[-1]["multiplier"] / done[0]["multiplier"])
        for layer in range(c.n_layers):
            decay = self.diag.get(f"none/layer{layer}/step_decay")
            if decay is not None:
                out[f"slow_decay_frac_layer{layer}"] = float((decay > 0.99).mean())
                out[f"final_state_norm_layer{layer}"] = float(
                    self.diag[f"none/layer{layer}/h_norm"][-1])
                out[f"final_state_norm_scaled_layer{layer}"] = float(
                    self.diag[f"scaled/layer{layer}/h_norm"][-1])
        return out


def plot_dynamics(diag: dict[str, np.ndarray], n_layers: int, length: int, path: Path) -> None:
    """Draw, per layer, ‖h_t‖ against t and exp(−Σ Δ_t|A|) against t (without / with the
    scales) and the histogram of log|A| before and after scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_layers, 3, figsize=(13, 3.2 * n_layers), squeeze=False)
    for layer in range(n_layers):
        ax_h, ax_c, ax_a = axes[layer]
        for tag, style in (("none", "-"), ("scaled", "--")):
            ax_h.plot(diag[f"{tag}/layer{layer}/h_norm"], style, label=tag)
            ax_c.semilogy(np.maximum(diag[f"{tag}/layer{layer}/cum_decay"], 1e-30), style,
                          label=tag)
            ax_a.hist(np.log(np.abs(diag[f"{tag}/layer{layer}/A"]).ravel()), bins=40,
                      alpha=0.5, label="before" if tag == "none" else "after scaling")
        ax_h.set_title(f"layer {layer}: ‖h_t‖ at L = {length}", fontsize=9)
        ax_c.set_title(f"layer {layer}: mean exp(−Σ Δ_t |A|)", fontsize=9)
        ax_a.set_title(f"layer {layer}: log|A|", fontsize=9)
        for ax in (ax_h, ax_c):
            ax.set_xlabel("position t")
        for ax in (ax_h, ax_c, ax_a):
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
