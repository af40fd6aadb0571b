"""A hand-written LoRA for the GPT-2 attention's fused q, k, v projection.

`LoRADelta` is one low-rank update, y = s·B(Ax) (A: (r, d_in), B: (d_out, r)); `LoRAQKV` wraps
a block's `c_attn` (a transformers Conv1D computing [q | k | v] = xW + b) and adds the updates
of the chosen matrices to their slices. Plain tensors and modules only, so the model composes
with `torch.func.functional_call`, `vmap`, `jacrev` and `jvp`; `callbacks.spectra.ntk_matrix`
recognises `LoRADelta` (parameters `lora_A`, `lora_B`, attribute `lora_scale`) and takes its
exact structured path. A is Gaussian N(0, 1/d_in); B is N(0, b_std²), zero by default (the
standard init: then the Jacobian with respect to A is exactly zero at initialisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from tasks.small_lm.config import MATRICES, check_lora_choice


class LoRADelta(nn.Module):
    """y = lora_scale · (x Aᵀ) Bᵀ, the update of one (d_out, d_in) matrix by s·BA."""

    def __init__(self, d_in: int, d_out: int, rank: int, scale: float, b_std: float,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.lora_A = nn.Parameter(torch.randn(rank, d_in, generator=generator) / math.sqrt(d_in))
        self.lora_B = nn.Parameter(b_std * torch.randn(d_out, rank, generator=generator))
        self.lora_scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora_scale * ((x @ self.lora_A.T) @ self.lora_B.T)

    def delta_weight(self) -> torch.Tensor:
        """Return ΔW = s·BA, (d_out, d_in)."""
        return self.lora_scale * (self.lora_B @ self.lora_A)


class LoRAQKV(nn.Module):
    """[q | k | v] = c_attn(x) + [Δ_q(x) | Δ_k(x) | Δ_v(x)] for the matrices that have an update."""

    def __init__(self, base: nn.Module, deltas: dict[str, LoRADelta]) -> None:
        super().__init__()
        self.base = base
        self.deltas = nn.ModuleDict(deltas)
        self.width = base.weight.shape[1] // len(MATRICES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        parts = []
        for i, name in enumerate(MATRICES):
            piece = y[..., i * self.width:(i + 1) * self.width]
            if name in self.deltas:
                piece = piece + self.deltas[name](x)
            parts.append(piece)
        return torch.cat(parts, dim=-1)

    def base_weight(self, name: str) -> torch.Tensor:
        """Return the frozen W0 of one matrix, (d_out, d_in) (Conv1D stores W0ᵀ, fused)."""
        i = MATRICES.index(name)
        return self.base.weight[:, i * self.width:(i + 1) * self.width].T


def add_lora(transformer: nn.Module, layers: Sequence[int], matrices: Sequence[str], rank: int,
             scale: float, b_std: float, seed: int) -> dict[str, LoRADelta]:
    """Freeze every parameter of `transformer` (a GPT2Model), wrap the c_attn of each chosen
    layer in a LoRAQKV with one LoRADelta per chosen matrix (drawn from a generator seeded with
    `seed`, layers and matrices in order) and return {"<layer>.<matrix>": delta}."""
    check_lora_choice(layers, matrices, len(transformer.h))
    for p in transformer.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, LoRADelta] = {}
    for layer in sorted(int(i) for i in layers):
        attn = transformer.h[layer].attn
        d_in = attn.c_attn.weight.shape[0]
        width = attn.c_attn.weight.shape[1] // len(MATRICES)
        deltas = {m: LoRADelta(d_in, width, rank, scale, b_std, gen)
                  for m in MATRICES if m in matrices}
        attn.c_attn = LoRAQKV(attn.c_attn, deltas)
        out.update({f"{layer}.{m}": d for m, d in deltas.items()})
    return out


def lora_named_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Return the LoRA parameters of `model` by name (`...lora_A` / `...lora_B`), in order."""
    return [(n, p) for n, p in model.named_parameters()
            if n.endswith(".lora_A") or n.endswith(".lora_B")]


def layer_of(name: str) -> int:
    """Return the block index of a parameter name `...h.<layer>.attn...`."""
    parts = name.split(".")
    return int(parts[parts.index("h") + 1])


def lora_modules(model: nn.Module) -> dict[str, tuple[LoRAQKV, str, LoRADelta]]:
    """Return {"<layer>.<matrix>": (its LoRAQKV, matrix name, its LoRADelta)} in layer order."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoRAQKV):
            for m, delta in mod.deltas.items():
                out[f"{layer_of(name)}.{m}"] = (mod, m, delta)
    return out


# ----------------------------------------------------------------------------- every Linear
LINEAR_NAMES = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # a GPT-2 block's Conv1Ds


class LoRALinear(nn.Module):
    """y = base(x) + s·B(Ax): one low-rank update of a whole linear layer (a transformers
    Conv1D, y = xW + b with W (d_in, d_out), or an nn.Linear)."""

    def __init__(self, base: nn.Module, delta: LoRADelta) -> None:
        super().__init__()
        self.base = base
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)

    def base_weight(self) -> torch.Tensor:
        """Return the frozen W0 as (d_out, d_in) (a Conv1D stores its transpose)."""
        w = self.base.weight
        return w if isinstance(self.base, nn.Linear) else w.T


def add_lora_linear(transformer: nn.Module, rank: int, scale: float, b_std: float, seed: int,
                    names: Sequence[str] = LINEAR_NAMES) -> dict[str, LoRADelta]:
    """Freeze every parameter of `transformer` (a GPT2Model) and wrap each named linear layer
    of every block (default: all four, the paper's "all linear layers") in a LoRALinear (A, B
    drawn from a generator seeded with `seed`, blocks and names in order); return
    {"<layer>.<name>": delta}."""
    for p in transformer.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, LoRADelta] = {}
    for layer, block in enumerate(transformer.h):
        for name in names:
            parent_name, _, attr = name.rpartition(".")
            parent = block.get_submodule(parent_name)
            base = getattr(parent, attr)
            d_in, d_out = ((base.in_features, base.out_features) if isinstance(base, nn.Linear)
                           else tuple(base.weight.shape))
            delta = LoRADelta(d_in, d_out, rank, scale, b_std, gen)
            setattr(parent, attr, LoRALinear(base, delta))
            out[f"{layer}.{name}"] = delta
    return out


def linear_lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    """Return {"<layer>.<name>": LoRALinear} of a model adapted by add_lora_linear."""
    out = {}
    for name, mod in model.named_modules():
        if isinstance(mod, LoRALinear):
            parts = name.split(".")
            at = parts.index("h")
            out[f"{parts[at + 1]}.{'.'.join(parts[at + 2:])}"] = mod
    return out
