"""The optimizer_scaling LightningModule: manual optimisation of a random-feature readout.

Each train step is one full-batch update of the five optimizers of the paper. Adam and
matrix_sign train one copy per learning rate of their grid and report the copy with the best
final population loss (the spec's per-N tuning).
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
        self.problem = {k: v.to(self.device) for k, v in self.trainer.datamodule.problem.items()}
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
    def _direction(self, grad: torch.Tensor, copy: int) -> torch.Tensor:
        """Return the step (to be subtracted) of the configured rule for one copy."""
        rule = self.cfg.optimizer
        if rule == "gd":
            return self.eta * grad
        if rule == "diag":
            return self.eta * grad / self.problem["sigma_hat"].diagonal()[:, None]
        if rule == "natural_gradient":
            return torch.cholesky_solve(grad, self._ng_factor)
        if rule == "matrix_sign":
            lr = solvers.linear_decay(self.cfg.sign_lr_grid[copy], self.global_step,
                                      self.cfg.steps)
            return lr * solvers.polar_factor(grad)
        return grad  # adam: the optimizer preconditions the raw gradient

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        sigma_hat, b_hat = batch
        opt = self.optimizers()
        opt.zero_grad()
        with torch.no_grad():
            for i, a in enumerate(self.readouts):
                if self.cfg.solver == "closed_form":  # jump to a_T at step 0, then stay
                    target = self.closed_form() if self.global_step == 0 else a
                    a.grad = a - target
                else:
                    a.grad = self._direction(solvers.gradient(a, sigma_hat, b_hat), i)
        opt.step()
        train, test = self.losses()
        best = int(torch.argmin(test))
        self.log_dict({"train/loss": train[best], "test/loss": test[best]}, on_step=True,
                      on_epoch=False, prog_bar=True)

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
    def losses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (empirical, population) loss of every copy."""
        p = self.problem
        train = torch.stack([solvers.quadratic_loss(a, p["sigma_hat"], p["b_hat"], p["c_hat"])
                             for a in self.readouts])
        test = torch.stack([solvers.quadratic_loss(a, p["sigma"], p["b"], p["c"])
                            for a in self.readouts])
        return train, test

    # ----------------------------------------------------------------------------- outputs
    def paper_metrics(self) -> dict[str, float | str | int | None]:
        """Return the final population and empirical loss of the best copy and its lr (the
        resolved parameters are in results.json["params"])."""
        train, test = self.losses()
        best = int(torch.argmin(test))
        grid = {"adam": self.cfg.lr_grid, "matrix_sign": self.cfg.sign_lr_grid}
        best_lr = grid[self.cfg.optimizer][best] if self.cfg.optimizer in grid else self.eta
        return {
            "test_loss": float(test[best]),
            "train_loss": float(train[best]),
            "lr": best_lr,
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
            best = int(torch.argmin(self.losses()[1]))
            exp_avg_sq = state.get(self.readouts[best], {}).get("exp_avg_sq")
            if exp_avg_sq is not None:
                scale = (exp_avg_sq.mean(1).sqrt() + 1e-8).rsqrt()
                out["preconditioned"] = scale[:, None] * sigma_hat * scale[None, :]
        return out
