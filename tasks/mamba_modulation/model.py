"""The small Mamba language model of the task, with the two training-free interventions.

Selective SSM per layer (d_inner = expand·d_model channels, d_state states each):
    h_t = exp(Δ_t A) ⊙ h_{t−1} + Δ_t B_t x_t,   y_t = C_t h_t + D x_t,
A = −exp(A_log) (d_inner × d_state), Δ_t = softplus(dt_proj(·) + b_Δ).

- A-power scaling: A ← −exp(s · A_log), i.e. |A| ← |A|^s (`a_scale`: a scalar per layer, or a
  d_inner × d_state matrix for the backprop variant); s = 1 leaves the model unchanged to the bit.
- Δ-scaling (MambaExtend): Δ_t ← s · Δ_t right after the softplus (`delta_scale`).

`backbone=mambapy` runs `mambapy.mamba.MambaBlock` (its projections, conv, initialisation and
gating; not `mambapy.lm`, which needs mamba_ssm and zeroes the Δ bias) with our SSM method;
`backbone=inhouse` is our own copy of that block (same parameter names, shapes and
initialisation). The scans: `chunked_pscan` (mambapy's parallel scan over chunks of
`SCAN_CHUNK` steps, the state carried between chunks, so any length works and memory stays
bounded), `doubling_scan` (our log-depth Hillis–Steele scan, any length) and
`sequential_scan` (the recurrence itself, the reference).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from mambapy.mamba import MambaBlock, MambaConfig, RMSNorm
from mambapy.pscan import pscan
from torch import nn

SCAN_CHUNK = 1024  # steps per parallel-scan chunk (a power of two; the last chunk is padded)
LONG_MEMORY_A = (0.02, 0.5)   # long_memory init: |A| ~ U(0.02, 0.5)
LONG_MEMORY_DT = (1e-3, 1e-2)  # long_memory init: Δ in [1e-3, 1e-2]
STANDARD_DT = (1e-3, 1e-1)     # Mamba's default Δ range (standard init: |A| = 1..d_state)


# ----------------------------------------------------------------------------- scans
def sequential_scan(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return hs (B, L, D, N) with h_t = a_t ⊙ h_{t−1} + x_t, h_{−1} = 0 (the recurrence)."""
    h = torch.zeros_like(x[:, 0])
    out = []
    for t in range(x.shape[1]):
        h = a[:, t] * h + x[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


def chunked_pscan(a: torch.Tensor, x: torch.Tensor, chunk: int = SCAN_CHUNK) -> torch.Tensor:
    """Return the scan h_t = a_t ⊙ h_{t−1} + x_t (B, L, D, N) by mambapy's parallel scan over
    chunks of `chunk` steps (each padded to a power of two by pscan); the state h of a chunk's
    last step enters the next chunk as x_0 ← x_0 + a_0 ⊙ h."""
    length = x.shape[1]
    if length <= chunk:
        return pscan(a, x)
    outs, h = [], None
    for start in range(0, length, chunk):
        ac, xc = a[:, start:start + chunk], x[:, start:start + chunk]
        if h is not None:
            xc = torch.cat([xc[:, :1] + ac[:, :1] * h[:, None], xc[:, 1:]], dim=1)
        hc = pscan(ac, xc)
        outs.append(hc)
        h = hc[:, -1]
    return torch.cat(outs, dim=1)


def doubling_scan(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return the scan h_t = a_t ⊙ h_{t−1} + x_t (B, L, D, N) by log-depth doubling: after the
    round of shift k, position t holds the composition of the steps (t − 2k, t]:
    h_t ← h_t + p_t ⊙ h_{t−k}, p_t ← p_t ⊙ p_{t−k} (out of place, any length)."""
    h, p, shift, length = x, a, 1, x.shape[1]
    while shift < length:
        h = torch.cat([h[:, :shift], h[:, shift:] + p[:, shift:] * h[:, :-shift]], dim=1)
        p = torch.cat([p[:, :shift], p[:, shift:] * p[:, :-shift]], dim=1)
        shift *= 2
    return h


# ----------------------------------------------------------------------------- the SSM
class Modulation:
    """The intervention state and the diagnostics of one block (mixed into both blocks).

    Buffers: `a_scale` (() or (d_inner, d_state)), `delta_scale` (()). With `record` set, the
    forward keeps, for the batch it ran on: `h_norm` (L,) = mean_b ‖h_t‖_F over (d_inner,
    d_state); `cum_decay` (L,) = mean over (b, channel, state) of exp(−Σ_{r≤t} Δ_r |A|);
    `step_decay` (d_inner, d_state) = mean over (b, t) of exp(Δ_t A).
    """

    scan_name = "chunked_pscan"

    def init_modulation(self) -> None:
        self.register_buffer("a_scale", torch.ones(()), persistent=False)
        self.register_buffer("delta_scale", torch.ones(()), persistent=False)
        self.record = False
        self.parallel_eval = False  # True: evaluate with the parallel scan too (tests)
        self.recorded: dict[str, torch.Tensor] = {}
        self.a_scale_param: nn.Parameter | None = None  # the backprop variant's trainable scale

    def scale(self) -> torch.Tensor:
        """Return the A-power scale in use (the trainable one when set)."""
        return self.a_scale if self.a_scale_param is None else self.a_scale_param

    def modulated_A(self) -> torch.Tensor:
        """Return A = −exp(s ⊙ A_log) (d_inner, d_state) with the current A-power scale s."""
        return -torch.exp(self.A_log.float() * self.scale())

    def scan(self, a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Return the scan of this block's backbone (chunked pscan or doubling)."""
        return chunked_pscan(a, x) if self.scan_name == "chunked_pscan" else doubling_scan(a, x)

    def modulated_ssm(self, x: torch.Tensor) -> torch.Tensor:
        """Return y (B, L, d_inner) of the selective SSM with both interventions applied:
        Δ = s_Δ · softplus(W_Δ δ + b_Δ), A = −exp(s_A · A_log), h_t = exp(Δ_t A) ⊙ h_{t−1} +
        Δ_t x_t B_t, y_t = C_t h_t + D x_t. With gradients: the parallel scan; without (evaluation):
        the fused recurrence (`fused_recurrence`, the same numbers, no (B, L, d_inner, d_state)
        tensor)."""
        A = self.modulated_A()
        D = self.D.float()
        cfg = self.config
        delta, B, C = torch.split(self.x_proj(x), [cfg.dt_rank, cfg.d_state, cfg.d_state], dim=-1)
        delta = (self.dt_proj.weight @ delta.transpose(1, 2)).transpose(1, 2)
        delta = F.softplus(delta + self.dt_proj.bias) * self.delta_scale
        if not torch.is_grad_enabled() and not self.parallel_eval:
            y, self.recorded = fused_recurrence(delta, A, B, C, x, self.record)
            return y + D * x
        dA = torch.exp(delta.unsqueeze(-1) * A)
        BX = (delta * x).unsqueeze(-1) * B.unsqueeze(2)
        hs = self.scan(dA, BX)
        if self.record:
            with torch.no_grad():
                self.recorded = {
                    "h_norm": hs.flatten(2).norm(dim=-1).mean(0),
                    "cum_decay": torch.exp(-(delta.cumsum(1).unsqueeze(-1) * A.abs()))
                    .mean(dim=(0, 2, 3)),
                    "step_decay": dA.mean(dim=(0, 1))}
        return (hs * C.unsqueeze(2)).sum(-1) + D * x


def fused_recurrence(delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                     x: torch.Tensor, record: bool = False
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Return (y (B, L, d_inner) without the D·x term, diagnostics) of the recurrence
    h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t x_t) B_t, y_t = Σ_n C_{t,n} h_{t,·,n}, step by step.
    With `record`: h_norm (L,) = mean_b ‖h_t‖_F, cum_decay (L,) = mean exp(−Σ_{r≤t} Δ_r|A|),
    step_decay (d_inner, d_state) = mean over (b, t) of exp(Δ_t A)."""
    batch, length, d_inner = x.shape
    h = x.new_zeros(batch, d_inner, A.shape[1])
    dx = delta * x
    ys, norms, cums = [], [], []
    total_delta = x.new_zeros(batch, d_inner)
    step_sum = torch.zeros_like(A)
    for t in range(length):
        decay = torch.exp(delta[:, t, :, None] * A)
        h = decay * h + dx[:, t, :, None] * B[:, t, None, :]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
        if record:
            norms.append(h.flatten(1).norm(dim=-1).mean())
            total_delta = total_delta + delta[:, t]
            cums.append(torch.exp(-total_delta[..., None] * A.abs()).mean())
            step_sum = step_sum + decay.mean(0)
    info = ({"h_norm": torch.stack(norms), "cum_decay": torch.stack(cums),
             "step_decay": step_sum / length} if record else {})
    return torch.stack(ys, dim=1), info


class MambapyBlock(Modulation, MambaBlock):
    """mambapy's MambaBlock with the modulated SSM (parallel scan in chunks)."""

    def __init__(self, config: MambaConfig) -> None:
        MambaBlock.__init__(self, config)
        self.init_modulation()

    def ssm(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:  # mambapy's signature
        return self.modulated_ssm(x)


class InhouseBlock(Modulation, nn.Module):
    """Our copy of the Mamba block: in_proj → causal depthwise conv → SiLU → selective SSM,
    gated by SiLU(z) → out_proj; the parameter names, shapes and initialisation of mambapy's."""

    scan_name = "doubling"

    def __init__(self, config: MambaConfig) -> None:
        nn.Module.__init__(self)
        self.config = c = config
        self.in_proj = nn.Linear(c.d_model, 2 * c.d_inner, bias=c.bias)
        self.conv1d = nn.Conv1d(c.d_inner, c.d_inner, kernel_size=c.d_conv, bias=c.conv_bias,
                                groups=c.d_inner, padding=c.d_conv - 1)
        self.x_proj = nn.Linear(c.d_inner, c.dt_rank + 2 * c.d_state, bias=False)
        self.dt_proj = nn.Linear(c.dt_rank, c.d_inner, bias=True)
        std = c.dt_rank ** -0.5 * c.dt_scale
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(c.d_inner) * (math.log(c.dt_max) - math.log(c.dt_min))
                       + math.log(c.dt_min)).clamp(min=c.dt_init_floor)
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus⁻¹(dt)
        A = torch.arange(1, c.d_state + 1, dtype=torch.float32).repeat(c.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(c.d_inner))
        self.out_proj = nn.Linear(c.d_inner, c.d_model, bias=c.bias)
        self.init_modulation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block's output (B, L, d_model) for its input (B, L, d_model)."""
        length = x.shape[1]
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv1d(x.transpose(1, 2))[:, :, :length].transpose(1, 2))
        return self.out_proj(self.modulated_ssm(x) * F.silu(z))


class Layer(nn.Module):
    """Residual layer: x + mixer(RMSNorm(x))."""

    def __init__(self, config: MambaConfig, backbone: str) -> None:
        super().__init__()
        self.mixer = MambapyBlock(config) if backbone == "mambapy" else InhouseBlock(config)
        self.norm = RMSNorm(config.d_model, config.rms_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mixer(self.norm(x))


class MambaLM(nn.Module):
    """Embedding → n_layers residual Mamba layers → RMSNorm → tied output head."""

    def __init__(self, vocab_size: int, d_model: int, n_layers: int, d_state: int, expand: int,
                 a_init: str, backbone: str, generator: torch.Generator) -> None:
        super().__init__()
        dt = LONG_MEMORY_DT if a_init == "long_memory" else STANDARD_DT
        self.config = MambaConfig(d_model=d_model, n_layers=n_layers, d_state=d_state,
                                  expand_factor=expand, dt_min=dt[0], dt_max=dt[1])
        self.embedding = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embedding.weight, std=0.02, generator=generator)
        self.layers = nn.ModuleList([Layer(self.config, backbone) for _ in range(n_layers)])
        self.norm_f = RMSNorm(d_model, self.config.rms_norm_eps)
        if a_init == "long_memory":
            lo, hi = LONG_MEMORY_A
            with torch.no_grad():
                for block in self.blocks():
                    u = torch.rand(block.A_log.shape, generator=generator)
                    block.A_log.copy_(torch.log(lo + (hi - lo) * u))

    def blocks(self) -> list[Modulation]:
        """Return the SSM block of every layer."""
        return [layer.mixer for layer in self.layers]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Return the next-token logits (B, L, vocab) of tokens (B, L)."""
        x = self.embedding(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.norm_f(x) @ self.embedding.weight.T

    # ------------------------------------------------------------------ interventions
    def set_scales(self, a_power: Any = None, delta: Any = None) -> None:
        """Set the per-layer A-power scales and Δ scales (sequences of floats, one per layer,
        or None for 1): A_l = −exp(s_l · A_log_l), Δ_l ← s_l · Δ_l."""
        n = len(self.layers)
        a_power = [1.0] * n if a_power is None else [float(v) for v in a_power]
        delta = [1.0] * n if delta is None else [float(v) for v in delta]
        for block, sa, sd in zip(self.blocks(), a_power, delta):
            block.a_scale_param = None
            block.a_scale = torch.tensor(sa, device=block.A_log.device)
            block.delta_scale = torch.tensor(sd, device=block.A_log.device)

    def recording(self, on: bool) -> None:
        """Turn the per-block diagnostics (state norm, decays) on or off."""
        for block in self.blocks():
            block.record = on
            block.recorded = {}


def build_lm(params: Any, vocab_size: int, seed: int) -> MambaLM:
    """Return a freshly initialised MambaLM of the task's config; every draw comes from torch
    seed `seed` inside a forked RNG (mambapy draws Δ's bias from the global stream), with A's
    long-memory draw from an explicit generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed + 7919)
        return MambaLM(vocab_size, params.d_model, params.n_layers, params.d_state,
                       params.expand, str(params.a_init), str(params.backbone), gen)
