"""The networks: MLP backbone (the representation), projector, SimSiam predictor."""

from __future__ import annotations

from torch import nn


def mlp(dims: list[int], batch_norm: bool = True) -> nn.Sequential:
    """Return Linear → [BatchNorm] → ReLU blocks along `dims`, the last Linear without either."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class SSLNet(nn.Module):
    """backbone in → hidden → hidden → rep_dim; projector rep_dim → rep_dim → proj_dim;
    predictor (SimSiam only) proj_dim → proj_dim/2 → proj_dim (a bottleneck)."""

    def __init__(self, in_dim: int, hidden_dim: int, rep_dim: int, proj_dim: int,
                 predictor: bool) -> None:
        super().__init__()
        self.backbone = mlp([in_dim, hidden_dim, hidden_dim, rep_dim])
        self.projector = mlp([rep_dim, rep_dim, proj_dim])
        self.predictor = mlp([proj_dim, max(2, proj_dim // 2), proj_dim]) if predictor else None
