"""The optimizer_scaling LightningModule: manual optimisation of a random-feature readout.

Each train step is one full-batch update of the five optimizers of the paper. Adam and
matrix_sign train one copy per learning rate of their grid and report the copy with the lowest
final *validation* loss (the spec's per-N tuning, on held-out samples of the draw; the test
loss never chooses). `train()` runs the same set-up and update code without a Trainer.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import nn

from callbacks.spectra.lanczos import lanczos
from tasks.base.contract import resolved_params
from tasks.optimizer_scaling import solvers
from tasks.optimizer_scaling.config import Config


def top_eigenvalue(matrix: torch.Tensor) -> float:
    """Return λ_max of a symmetric matrix (Lanczos, float64)."""
    result = lanczos(lambda v: matrix @ v, matrix.shape[0], k=1, which="LA", tol=1e-10,
                     dtype=matrix.dtype, device=matrix.device, seed=0, name="sigma_hat")
    return float(result.eigenvalues[0])


class OptimizerScalingModule(pl.LightningModule):
    """Trains a = argmin ½aᵀΣ̂a − aᵀb̂ with one optimizer; logs train and population loss."""

    def __init__(self, params: Config) -> None:
        super().__init__()
        self.cfg = params
        self.save_hyperparameters(resolved_params(params))
        self.automatic_optimization = False
        n_copies = {"adam": len(params.lr_grid), "matrix_sign": len(params.sign_lr_grid)}
        copies = n_copies.get(params.optimizer, 1)
        shape = (params.n_features, params.n_outputs)
        self.readouts = nn.ParameterList(
            nn.Parameter(torch.zeros(shape, dtype=torch.float64)) for _ in range(copies)
        )
        self.problem: dict[str, torch.Tensor] = {}
        self.eta: float | None = None
        self._ng_factor: torch.Tensor | None = None

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        self.prepare(self.trainer.datamodule.problem)

    def prepare(self, problem: dict[str, torch.Tensor]) -> None:
        """Keep the draw's statistics on the module's device; set η (gd, diag) or the NG factor."""
        self.problem = {k: v.to(self.device) for k, v in problem.items()}
        sigma_hat = self.problem["sigma_hat"]
        if self.cfg.optimizer == "gd":
            self.eta = 1.0 / top_eigenvalue(sigma_hat)
        elif self.cfg.optimizer == "diag":
            self.eta = 1.0 / top_eigenvalue(solvers.diag_preconditioned(sigma_hat))
        elif self.cfg.optimizer == "natural_gradient":
            eye = torch.eye(sigma_hat.shape[0], dtype=sigma_hat.dtype, device=sigma_hat.device)
            self._ng_factor = torch.linalg.cholesky(sigma_hat + self.cfg.ng_eps * eye)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.cfg.optimizer == "adam":
            groups = [{"params": [p], "lr": lr} for p, lr in zip(self.readouts, self.cfg.lr_grid)]
            return torch.optim.Adam(groups)
        # The other rules compute their full step; SGD with lr 1 applies it.
        return torch.optim.SGD(self.readouts.parameters(), lr=1.0)

    # ----------------------------------------------------------------------------- training
    def _direction(self, grad: torch.Tensor, copy: int, step: int) -> torch.Tensor:
        """Return the step (to be subtracted) of the configured rule for one copy at `step`."""
        rule = self.cfg.optimizer
        if rule == "gd":
            return self.eta * grad
        if rule == "diag":
            return self.eta * grad / self.problem["sigma_hat"].diagonal()[:, None]
        if rule == "natural_gradient":
            return torch.cholesky_solve(grad, self._ng_factor)
        if rule == "matrix_sign":
            lr = solvers.linear_decay(self.cfg.sign_lr_grid[copy], step, self.cfg.steps)
            return lr * solvers.polar_factor(grad)
        return grad  # adam: the optimizer preconditions the raw gradient

    def update(self, sigma_hat: torch.Tensor, b_hat: torch.Tensor, step: int,
               opt: torch.optim.Optimizer) -> None:
        """Apply update `step` (0-based) of the configured rule to every copy."""
        opt.zero_grad()
        with torch.no_grad():
            for i, a in enumerate(self.readouts):
                if self.cfg.solver == "closed_form":  # jump to a_T at step 0, then stay
                    target = self.closed_form() if step == 0 else a
                    a.grad = a - target
                else:
                    a.grad = self._direction(solvers.gradient(a, sigma_hat, b_hat), i, step)
        opt.step()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        sigma_hat, b_hat = batch
        self.update(sigma_hat, b_hat, self.global_step, self.optimizers())
        train, val, test = self.losses()
        best = self.chosen()
        self.log_dict({"train/loss": train[best], "val/loss": val[best], "test/loss": test[best]},
                      on_step=True, on_epoch=False, prog_bar=True)

    @torch.no_grad()
    def closed_form(self) -> torch.Tensor:
        """Return a_T from the eigenbasis of Σ̂ (gd, diag, natural_gradient)."""
        p, steps = self.problem, self.cfg.steps
        if self.cfg.optimizer == "diag":
            return solvers.diag_closed_form(p["sigma_hat"], p["b_hat"], self.eta, steps)
        evals, evecs = torch.linalg.eigh(p["sigma_hat"])
        if self.cfg.optimizer == "gd":
            return solvers.gd_closed_form(evals, evecs, p["b_hat"], self.eta, steps)
        return solvers.ng_closed_form(evals, evecs, p["b_hat"], self.cfg.ng_eps, steps)

    @torch.no_grad()
    def losses(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return the (training, validation, population) loss of every copy."""
        p = self.problem
        return tuple(torch.stack([solvers.quadratic_loss(a, p[f"sigma{k}"], p[f"b{k}"],
                                                         p[f"c{k}"]) for a in self.readouts])
                     for k in ("_hat", "_val", ""))

    def chosen(self) -> int:
        """Return the copy with the lowest validation loss (the reported one)."""
        return int(torch.argmin(self.losses()[1]))

    # ----------------------------------------------------------------------------- outputs
    def lr_of(self, copy: int) -> float | None:
        """Return the lr of a copy: its grid value (adam, matrix_sign), η (gd, diag), None (NG)."""
        grid = {"adam": self.cfg.lr_grid, "matrix_sign": self.cfg.sign_lr_grid}
        return grid[self.cfg.optimizer][copy] if self.cfg.optimizer in grid else self.eta

    def paper_metrics(self) -> dict[str, float | str | int | None]:
        """Return the final population, validation and training loss of the copy chosen on the
        validation loss and its lr; beside them the lowest population loss over the copies and
        its lr (`*_oracle`: what choosing on the test loss would report), and the validation
        and population loss of every copy (aligned with the lr grid, one entry for gd, diag,
        NG). The resolved parameters are in results.json["params"]."""
        train, val, test = self.losses()
        best, oracle = self.chosen(), int(torch.argmin(test))
        return {
            "test_loss": float(test[best]),
            "val_loss": float(val[best]),
            "train_loss": float(train[best]),
            "lr": self.lr_of(best),
            "test_loss_oracle": float(test[oracle]),
            "lr_oracle": self.lr_of(oracle),
            "val_loss_per_lr": val.tolist(),
            "test_loss_per_lr": test.tolist(),
        }

    def spectral_matrices(self) -> dict[str, torch.Tensor]:
        """Return Σ̂ and, for preconditioned rules, the symmetric form of PΣ̂."""
        sigma_hat = self.problem["sigma_hat"]
        out = {"sigma_hat": sigma_hat}
        if self.cfg.optimizer == "diag":
            out["preconditioned"] = solvers.diag_preconditioned(sigma_hat)
        elif self.cfg.optimizer == "natural_gradient":
            inv_sqrt = torch.linalg.solve_triangular(
                self._ng_factor, torch.eye(sigma_hat.shape[0], dtype=sigma_hat.dtype,
                                           device=sigma_hat.device), upper=False)
            out["preconditioned"] = inv_sqrt @ sigma_hat @ inv_sqrt.T
        elif self.cfg.optimizer == "adam":
            state = self.optimizers().optimizer.state
            exp_avg_sq = state.get(self.readouts[self.chosen()], {}).get("exp_avg_sq")
            if exp_avg_sq is not None:
                scale = (exp_avg_sq.mean(1).sqrt() + 1e-8).rsqrt()
                out["preconditioned"] = scale[:, None] * sigma_hat * scale[None, :]
        return out


def train(params: Config, problem: dict[str, torch.Tensor]) -> OptimizerScalingModule:
    """Return the module after its T updates on `problem` (a `restrict`ed draw), run without a
    Trainer through the same `prepare`, `configure_optimizers` and `update` as a real run."""
    module = OptimizerScalingModule(params)
    module.prepare(problem)
    opt = module.configure_optimizers()
    for step in range(params.steps):
        module.update(module.problem["sigma_hat"], module.problem["b_hat"], step, opt)
    return module
