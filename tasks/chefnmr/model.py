"""The networks: the spectrum embedder and the DiT denoiser with adaLN-Zero
(../shared/papers/chefnmr.md, Method). No dropout anywhere (no draw from torch's global stream).

Embedder: ¹H (B, P) → Conv1d(1→64, k5) ReLU MaxPool(8) → Conv1d(64→128, k9) ReLU MaxPool(12) →
Linear(128→d) tokens; C80 (B, 80) binary → Embedding(81, d) of (bin index + 1)·is_on (0 =
padding), one token per bin; a ¹³C grid → a second conv tokenizer. + learnable positions and
modality-type embeddings; a dropped modality's tokens are replaced by a learned [MASK] vector
(`mask_token=learned`) or zeros; [CLS] + tokens → TransformerEncoder → y = the [CLS] output.
Denoiser: atom token = MLP([c_in·x ; one-hot type]); c = MLP(Fourier(c_noise)) + Linear(y);
blocks x += g1·Attn(LN(x)(1 + s1) + b1), x += g2·MLP(LN(x)(1 + s2) + b2), (b, s, g) from a
zero-initialised Linear(SiLU(c)); final LN(x)(1 + s) + b → Linear(d→3), zero-initialised.
Masked self-attention over atoms, no positional encoding, no equivariance.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

N_TYPES = 10


class ConvTokenizer(nn.Module):
    """1-D spectrum (B, P) → tokens (B, L, d): two conv blocks (5/9, 64/128, pool 8/12)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 64, 5, padding=2)
        self.conv2 = nn.Conv1d(64, 128, 9, padding=4)
        self.proj = nn.Linear(128, hidden)

    @staticmethod
    def n_tokens(points: int) -> int:
        """Return the token count floor(floor(P/8)/12)."""
        return (points // 8) // 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool1d(F.relu(self.conv1(x.unsqueeze(1))), 8)
        h = F.max_pool1d(F.relu(self.conv2(h)), 12)
        return self.proj(h.transpose(1, 2))


class SpectrumEmbedder(nn.Module):
    """(¹H, ¹³C, keep_h, keep_c) → y (B, d): see the module docstring."""

    def __init__(self, h_points: int, c_format: str, c_points: int, hidden: int, layers: int,
                 heads: int, mask_token: str) -> None:
        super().__init__()
        if ConvTokenizer.n_tokens(h_points) < 1:
            raise ValueError(f"task.h_points={h_points} gives no ¹H token (need >= 96)")
        self.c_format = c_format
        self.h_tok = ConvTokenizer(hidden)
        n_h = ConvTokenizer.n_tokens(h_points)
        if c_format == "c80":
            self.c_tok: nn.Module = nn.Embedding(81, hidden, padding_idx=0)
            n_c = 80
        else:
            self.c_tok = ConvTokenizer(hidden)
            n_c = ConvTokenizer.n_tokens(c_points)
        self.pos = nn.Parameter(torch.randn(1 + n_h + n_c, hidden) * 0.02)
        self.modality = nn.Parameter(torch.randn(3, hidden) * 0.02)  # cls, H, C
        self.cls = nn.Parameter(torch.randn(hidden) * 0.02)
        self.learned_mask = mask_token == "learned"
        self.mask_h = nn.Parameter(torch.zeros(hidden), requires_grad=self.learned_mask)
        self.mask_c = nn.Parameter(torch.zeros(hidden), requires_grad=self.learned_mask)
        layer = nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.n_h = n_h

    def tokens_c(self, c: torch.Tensor) -> torch.Tensor:
        if self.c_format == "c80":
            index = (torch.arange(1, 81, device=c.device) * (c > 0.5).long())
            return self.c_tok(index)
        return self.c_tok(c)

    def forward(self, h: torch.Tensor, c: torch.Tensor, keep_h: torch.Tensor,
                keep_c: torch.Tensor) -> torch.Tensor:
        """Return y (B, d); rows with keep_h = False (keep_c = False) see [MASK] ¹H (¹³C)."""
        th = self.h_tok(h)
        tc = self.tokens_c(c)
        th = torch.where(keep_h.view(-1, 1, 1), th, self.mask_h.expand_as(th))
        tc = torch.where(keep_c.view(-1, 1, 1), tc, self.mask_c.expand_as(tc))
        cls = self.cls.expand(h.shape[0], 1, -1)
        x = torch.cat([cls + self.modality[0], th + self.modality[1], tc + self.modality[2]], 1)
        x = self.encoder(x + self.pos)
        return self.norm(x[:, 0])


def fourier_features(c_noise: torch.Tensor, dim: int) -> torch.Tensor:
    """Return [cos(2π f_k c), sin(2π f_k c)] with fixed f_k = exp(linspace(0, log 32, dim/2))/4."""
    freqs = torch.exp(torch.linspace(0, math.log(32.0), dim // 2, device=c_noise.device)) / 4
    arg = 2 * math.pi * c_noise.unsqueeze(-1) * freqs
    return torch.cat([arg.cos(), arg.sin()], -1)


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block over atom tokens with a key-padding mask."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(),
                                 nn.Linear(4 * hidden, hidden))
        self.ada = nn.Linear(hidden, 6 * hidden)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b1, s1, g1, b2, s2, g2 = self.ada(F.silu(c)).unsqueeze(1).chunk(6, -1)
        h = self.norm1(x) * (1 + s1) + b1
        q, k, v = self.qkv(h).view(*h.shape[:2], 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        x = x + g1 * self.out(att.transpose(1, 2).reshape(h.shape))
        return x + g2 * self.mlp(self.norm2(x) * (1 + s2) + b2)


class DiT(nn.Module):
    """F(c_in·x, c_noise, types, y) → (B, A, 3)."""

    def __init__(self, hidden: int, heads: int, blocks: int, cond_dim: int) -> None:
        super().__init__()
        self.atom_in = nn.Sequential(nn.Linear(3 + N_TYPES, hidden), nn.SiLU(),
                                     nn.Linear(hidden, hidden))
        self.t_emb = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.y_emb = nn.Linear(cond_dim, hidden)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads) for _ in range(blocks))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.final_ada = nn.Linear(hidden, 2 * hidden)
        self.final = nn.Linear(hidden, 3)
        for layer in (self.final_ada, self.final):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.hidden = hidden

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, types: torch.Tensor,
                mask: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = F.one_hot(types.clamp(min=0), N_TYPES).to(x_in.dtype)
        x = self.atom_in(torch.cat([x_in, onehot], -1))
        c = self.t_emb(fourier_features(c_noise, self.hidden)) + self.y_emb(y)
        for block in self.blocks:
            x = block(x, c, mask)
        b, s = self.final_ada(F.silu(c)).unsqueeze(1).chunk(2, -1)
        return self.final(self.final_norm(x) * (1 + s) + b) * mask.unsqueeze(-1)
