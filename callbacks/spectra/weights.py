"""Weight-matrix spectra and WeightWatcher-compatible per-layer metrics.

Conventions (matching ``WeightWatcher(model).analyze()`` defaults, weightwatcher 0.7.x):

* ESD of a 2-D weight W of shape (a, b): with N = max(a, b), M = min(a, b), the M eigenvalues of
  the smaller Gram matrix, λ_i = σ_i(W)², ascending. WeightWatcher does NOT divide by N (its
  ``normalize`` option is off and was removed in 0.6.5), so neither do we by default;
  ``normalize=True`` gives the Marchenko–Pastur scaling λ_i = σ_i² / N (eigenvalues of WᵀW/N).
  Power-law α, stable rank and the spike count do not depend on this scale; log_norm,
  log_spectral_norm and alpha_weighted do.
* Conv weights (out, in, kh, kw) (PyTorch layout): WeightWatcher cuts them into kh·kw slices
  W[:, :, i, j] of shape (out, in) and, with its default ``pool=True``, pools the M eigenvalues
  of every slice into one ESD of M·kh·kw values; with its default ``conv2d_norm=True`` each
  slice is scaled by √(1/2), i.e. eigenvalues × 1/2. ``conv="pool"`` (default) reproduces this;
  ``conv="slices"`` returns the per-slice batch (kh·kw, M) (WeightWatcher's ``pool=False``);
  ``conv="flatten"`` reshapes to (out, in·kh·kw) instead. 3-D weights (out, in, k) of nn.Conv1d
  are sliced the same way (k slices, no ½ factor; WeightWatcher has no clean rule for them).
* Fused attention projections (GPT-2's ``c_attn`` of shape (d, 3d), ``in_proj_weight`` of shape
  (3d, d)): ``fused_qkv=3`` splits the larger dimension (or ``qkv_dim``) into 3 equal blocks and
  returns a batch of 3 ESDs. WeightWatcher itself analyses the fused matrix whole (the default).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .dense import gram_eigvalsh
from .powerlaw import powerlaw_fits
from .rmt import mp_bulk_fits
from .validate import check_choice, check_matrix, check_rows, check_vector, compute_dtype

CONV_MODES = ("pool", "slices", "flatten")
ESD_METHODS = ("gram", "svd")
WW_EVALS_THRESH = 1e-5  # WeightWatcher fits only eigenvalues above this
WW_EPSILON = 1e-10  # WeightWatcher's epsilon in the matrix entropy


def _split_fused(W: torch.Tensor, k: int, dim: int | None, name: str) -> torch.Tensor:
    if k < 1:
        raise ValueError(f"{name}: fused_qkv must be >= 1, got {k}")
    if dim is None:
        dim = 0 if W.shape[0] >= W.shape[1] else 1
    if dim not in (0, 1):
        raise ValueError(f"{name}: qkv_dim must be 0 or 1, got {dim}")
    if W.shape[dim] % k:
        raise ValueError(
            f"{name}: cannot split dim {dim} of shape {tuple(W.shape)} into fused_qkv={k} pieces"
        )
    return torch.stack(torch.chunk(W, k, dim=dim))


def _weight_stack(
    W: torch.Tensor, fused_qkv: int | None, qkv_dim: int | None, conv: str, name: str
) -> tuple[torch.Tensor, float, bool]:
    """(stack of 2-D matrices (B, a, b), eigenvalue factor, pooled?)."""
    check_choice(conv, CONV_MODES, "conv")
    if W.dim() == 2:
        if fused_qkv is not None and fused_qkv != 1:
            return _split_fused(W, fused_qkv, qkv_dim, name), 1.0, False
        return W.unsqueeze(0), 1.0, True
    if fused_qkv is not None and fused_qkv != 1:
        raise ValueError(f"{name}: fused_qkv needs a 2-D weight, got shape {tuple(W.shape)}")
    if W.dim() in (3, 4):
        if conv == "flatten":
            return W.reshape(W.shape[0], -1).unsqueeze(0), 1.0, True
        out_c, in_c = W.shape[:2]
        slices = W.reshape(out_c, in_c, -1).permute(2, 0, 1)  # (kh*kw, out, in), row-major (i, j)
        factor = 0.5 if W.dim() == 4 else 1.0
        return slices, factor, conv == "pool"
    raise ValueError(f"{name}: weight must be 2-D, 3-D or 4-D, got shape {tuple(W.shape)}")


def _gram_evals(
    ws: torch.Tensor | list[torch.Tensor], method: str, precision: str
) -> torch.Tensor:
    """Ascending eigenvalues σ² of the smaller Gram of each matrix of a (B, a, b) stack or a list
    of same-shape 2-D weights, (B, min(a, b))."""
    dt = compute_dtype(ws[0], precision)
    if method == "svd":
        X = ws if isinstance(ws, torch.Tensor) else torch.stack(ws)
        return torch.linalg.svdvals(X.to(dt)).square().flip(-1)
    return gram_eigvalsh(ws, dt).clamp(min=0.0)


def _mixed_ok(ev: torch.Tensor, n_big: int, xmin: float) -> bool:
    """Whether a float32 ESD (ascending) resolves what the metrics need (else redo in float64).

    Float32 eigenvalues of the Gram carry an absolute error of order M·ε₃₂·λ_max (measured
    ~0.03·M·ε₃₂·λ_max). They are kept unless (a) the rank by WeightWatcher's rule falls below
    M (an eigenvalue lost its sign or sits at the noise floor: the entropy's rank is then
    undecided) or (b) the power-law tail starts within 100·M·ε₃₂·λ_max of zero (α would be fitted
    on values with large relative error).
    """
    lam_max = float(ev[-1])
    if not lam_max > 0:
        return False
    floor = ev.numel() * torch.finfo(torch.float32).eps * lam_max
    sv_tol = math.sqrt(lam_max) * n_big * torch.finfo(torch.float64).eps
    if float(ev[0]) <= sv_tol * sv_tol:
        return False
    return not (math.isfinite(xmin) and xmin <= 100.0 * floor)


def weight_esd(
    W: torch.Tensor,
    fused_qkv: int | None = None,
    *,
    qkv_dim: int | None = None,
    normalize: bool = False,
    conv: str = "pool",
    method: str = "gram",
    precision: str = "auto",
    name: str = "weight",
) -> torch.Tensor:
    """Empirical spectral density of a weight: eigenvalues λ_i = σ_i(W)² (/N if ``normalize``).

    Returns an ascending 1-D tensor of the M = min(a, b) eigenvalues of the smaller Gram of W,
    or a batch (B, M) for ``fused_qkv`` pieces and ``conv="slices"`` (see module docstring for the
    conventions). ``method="gram"`` forms WᵀW in float64 and calls eigvalsh (faster; absolute
    error ~ M·ε·λ_max), ``method="svd"`` squares float64 singular values.
    """
    W = check_matrix(W, name)
    check_choice(method, ESD_METHODS, "method")
    stack, factor, pooled = _weight_stack(W, fused_qkv, qkv_dim, conv, name)
    ev = _gram_evals(stack, method, precision)
    if factor != 1.0:
        ev = ev * factor
    if normalize:
        ev = ev / max(stack.shape[-2:])
    if pooled:
        ev = torch.sort(ev.reshape(-1)).values
    return ev


def _ww_entropy(evals: torch.Tensor, n_big: list[int]) -> torch.Tensor:
    """WeightWatcher's matrix entropy of each row of a (B, L) batch: −Σ p log p / log(rank + 1e-10),
    p = λ/Σλ + 1e-10, rank = #{σ > σ_max · N · ε_float64} (numpy's matrix_rank rule; N of each
    row in the list n_big); NaN at rank ≤ 1, where WeightWatcher's value is a ratio of two
    roundoff terms (e.g. 206 for one nonzero of ten), and where Σλ ≤ 0."""
    sv = evals.clamp(min=0.0).sqrt()
    n = torch.tensor(n_big, dtype=evals.dtype, device=evals.device)[:, None]
    tol = sv.amax(1, keepdim=True) * n * torch.finfo(torch.float64).eps
    rank = (sv > tol).sum(1)
    total = evals.sum(1, keepdim=True)
    p = evals / total + WW_EPSILON
    ent = -(p * p.log()).sum(1) / (rank.to(evals.dtype) + WW_EPSILON).log()
    # log(rank) = 0 at rank 1: no entropy (WeightWatcher divides by log(1 + ε))
    return ent.masked_fill_(~((total[:, 0] > 0) & (rank > 1)), torch.nan)


def esd_metrics_batch(
    evals: torch.Tensor,
    N: int | list[int],
    M: int,
    *,
    min_tail: int = 2,
    evals_thresh: float = WW_EVALS_THRESH,
    name: str = "evals",
) -> list[dict[str, float]]:
    """:func:`esd_metrics` of every row of a (B, L) batch of ESDs of N×M weights, computed in
    one set of tensor operations (the power-law fits by :func:`powerlaw_fits`, the MP fits by
    :func:`mp_bulk_fits`). ``N`` is one int (N and M may then come in either order) or a list
    of B ints ≥ M, one per row (rows of differently shaped weights with the same M).
    Returns one metrics dict per row."""
    ev = check_rows(evals, name)
    if isinstance(N, list | tuple):
        if len(N) != ev.shape[0] or min(N) < M:
            raise ValueError(
                f"{name}: N must be one int or {ev.shape[0]} ints >= M={M} (one per row), got {N}"
            )
        Ns = [int(n) for n in N]
    else:
        N, M = max(int(N), int(M)), min(int(N), int(M))
        Ns = [N] * ev.shape[0]
    fits = powerlaw_fits(ev, min_tail=min_tail, threshold=evals_thresh, name=name)
    alpha = torch.tensor([f.alpha for f in fits], dtype=ev.dtype, device=ev.device)
    pos = ev > 0
    terms = (alpha[:, None] * ev.masked_fill(~pos, 1.0).log()).masked_fill_(~pos, -torch.inf)
    lam_max = ev[:, -1]
    log_alpha_norm = (torch.logsumexp(terms, 1) / math.log(10.0)).masked_fill_(
        ~(torch.isfinite(alpha) & (lam_max > 0)), torch.nan)
    sigma2, edge, spikes = mp_bulk_fits(ev, Ns, M)
    table = torch.stack([lam_max, ev.sum(1), log_alpha_norm, _ww_entropy(ev, Ns), sigma2,
                         edge, spikes.to(ev.dtype)], 1).tolist()
    out = []
    for fit, n_big, (lmax, total, lan, entropy, s2, mp_edge, n_spikes) in zip(
        fits, Ns, table, strict=True
    ):
        lsn = math.log10(lmax) if lmax > 0 else float("-inf")
        out.append({
            "alpha": fit.alpha,
            "alpha_weighted": fit.alpha * lsn,
            "log_norm": math.log10(total) if total > 0 else float("-inf"),
            "log_spectral_norm": lsn,
            "log_alpha_norm": lan,
            "stable_rank": total / lmax if lmax > 0 else 0.0,
            "entropy": entropy,
            "num_spikes": n_spikes,
            "mp_sigma2": s2,
            "mp_edge": mp_edge,
            "xmin": fit.xmin,
            "ks_distance": fit.ks_distance,
            "n_tail": float(fit.n_tail),
            "sigma": fit.sigma,
            "lambda_max": lmax,
            "num_evals": float(ev.shape[1]),
            "N": float(n_big),
            "M": float(M),
        })
    return out


def esd_metrics(
    evals: torch.Tensor,
    N: int,
    M: int,
    *,
    min_tail: int = 2,
    evals_thresh: float = WW_EVALS_THRESH,
    name: str = "evals",
) -> dict[str, float]:
    """WeightWatcher's per-layer metrics from an ESD of an N×M weight (N ≥ M).

    alpha, xmin, ks_distance (WW's ``D``), n_tail (WW's ``num_pl_spikes``), sigma: power-law fit
    of the eigenvalues > evals_thresh (:func:`powerlaw_fit`);
    log_norm = log10 Σλ (log10 of the squared Frobenius norm);
    log_spectral_norm = log10 λ_max; alpha_weighted = α · log10 λ_max;
    log_alpha_norm = log10 Σ λ^α; stable_rank = Σλ / λ_max;
    entropy = −Σ p log p / log(rank), p = λ/Σλ (WW's matrix entropy, in [0, 1]);
    num_spikes = #λ above the Marchenko–Pastur edge σ²(1+√(M/N))² with σ² fitted to the bulk
    (:func:`mp_bulk_fit`), with mp_sigma2 and mp_edge in the ESD's own scale.
    """
    return esd_metrics_batch(check_vector(evals, name)[None], N, M, min_tail=min_tail,
                             evals_thresh=evals_thresh, name=name)[0]


def weight_metrics(
    W: torch.Tensor,
    fused_qkv: int | None = None,
    *,
    qkv_dim: int | None = None,
    conv: str = "pool",
    normalize: bool = False,
    method: str = "gram",
    min_tail: int = 2,
    name: str = "weight",
) -> dict[str, float] | list[dict[str, float]]:
    """WeightWatcher-style metrics of one weight (see :func:`esd_metrics` for the formulas).

    Returns one dict, or a list of dicts (one per piece) when the ESD is a batch
    (``fused_qkv`` > 1 or ``conv="slices"``).
    """
    W = check_matrix(W, name)
    ev = weight_esd(
        W, fused_qkv, qkv_dim=qkv_dim, normalize=normalize, conv=conv, method=method, name=name
    )
    stack, _, _ = _weight_stack(W, fused_qkv, qkv_dim, conv, name)
    a, b = stack.shape[-2:]
    N, M = max(a, b), min(a, b)
    if ev.dim() == 1:
        return esd_metrics(ev, N, M, min_tail=min_tail, name=name)
    return esd_metrics_batch(ev, N, M, min_tail=min_tail, name=name)


_WW_TYPES = ("linear", "conv1d", "conv2d", "embedding")


def iter_weight_matrices(
    model: nn.Module,
    pattern: str | None = None,
    *,
    min_evals: int = 8,
    max_evals: int = 15000,
    max_n: int = 50000,
    skip_tied: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (module name, weight) for the layers WeightWatcher analyses by default.

    Modules whose class is nn.Linear / nn.Conv1d / nn.Conv2d / nn.Embedding, or whose class name
    contains linear, conv1d, conv2d or embedding (so transformers' Conv1D), with a ≥2-D
    ``weight``; kept when min_evals ≤ M·rf ≤ max_evals and N ≤ max_n (WW's defaults 8, 15000,
    50000; rf = kernel size). ``pattern`` is a regex searched in the module name.
    ``skip_tied``: a weight shared by several modules (GPT-2's lm_head and wte) is yielded once,
    under its first name (WeightWatcher analyses each module, so the default is False).
    """
    rx = re.compile(pattern) if pattern is not None else None
    seen: set[int] = set()
    for mod_name, mod in model.named_modules():
        kind = type(mod).__name__.lower()
        typed = isinstance(mod, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Embedding)
        if not typed and not any(t in kind for t in _WW_TYPES):
            continue
        w = getattr(mod, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() < 2:
            continue
        if rx is not None and not rx.search(mod_name):
            continue
        a, b = w.shape[:2]
        rf = int(math.prod(w.shape[2:])) if w.dim() > 2 else 1
        N, M = max(a, b), min(a, b)
        if not (min_evals <= M * rf <= max_evals) or N > max_n:
            continue
        if skip_tied:
            if id(w) in seen:
                continue
            seen.add(id(w))
        yield mod_name, w.detach()


def model_weight_metrics(
    model: nn.Module, pattern: str | None = None, **options: Any
) -> dict[str, dict[str, float]]:
    """Per-layer :func:`esd_metrics` for every layer of :func:`iter_weight_matrices`
    ({module name: metrics}): :func:`model_weight_spectra` (same ``options``) without the ESDs."""
    spectra = model_weight_spectra(model, pattern, **options)
    return {nm: metrics for nm, (_, metrics) in spectra.items()}


def model_weight_spectra(
    model: nn.Module,
    pattern: str | None = None,
    *,
    conv: str = "pool",
    method: str = "gram",
    precision: str = "auto",
    min_tail: int = 2,
    min_evals: int = 8,
    max_evals: int = 15000,
    skip_tied: bool = False,
) -> dict[str, tuple[torch.Tensor, dict[str, float]]]:
    """{module name: (ascending ESD, :func:`esd_metrics`)} for every layer of
    :func:`iter_weight_matrices` (``min_evals``, ``max_evals``, ``skip_tied`` passed on).

    Same-shape matrices are stacked so that their spectra come from one batched call.
    ``conv`` is "pool" or "flatten" (one ESD per layer).

    Precision policy (``precision``):

    * ``"auto"`` (default): float64 weights are analysed in float64. Lower-precision weights
      (float32/half, i.e. nearly all models) get float32 Gram eigenvalues — about 2x faster, and
      their absolute error (~M·ε₃₂·λ_max at worst, ~1e-6·λ_max measured) does not reach the
      metrics: on the B1 benchmark layers (512x512 MLP, GPT-2 256) |Δα| ≤ 2.5e-4 against the
      float64 ESD, entropy and log_norm relative ≤ 1e-7. A layer is recomputed in float64 when its
      float32 ESD cannot support the metrics: an eigenvalue at or below WeightWatcher's rank
      tolerance (the entropy's rank would be undecided) or a power-law xmin within
      100·M·ε₃₂·λ_max of zero (see ``_mixed_ok``).
    * ``"float64"``: everything in float64 (the reference; what :func:`weight_metrics` does).
    * ``"float32"``: float32 eigenvalues without the float64 fallback.
    """
    check_choice(conv, ("pool", "flatten"), "conv")
    check_choice(precision, ("auto", "float32", "float64"), "precision")
    items = list(iter_weight_matrices(model, pattern, min_evals=min_evals, max_evals=max_evals,
                                      skip_tied=skip_tied))
    groups: dict[tuple, list[tuple[str, torch.Tensor]]] = {}
    for nm, w in items:
        groups.setdefault((tuple(w.shape), w.dtype, w.device), []).append((nm, w))
    def esds(ws: list[tuple[str, torch.Tensor]], prec: str) -> list[torch.Tensor]:
        """Ascending ESDs of same-shape weights: 2-D ones from one batched eigen-solve."""
        if ws[0][1].dim() == 2:
            return list(_gram_evals([w for _, w in ws], method, prec))
        return [torch.sort(weight_esd(w, conv=conv, method=method, precision=prec,
                                      name=nm).reshape(-1)).values for nm, w in ws]

    # pass 1: ESDs per same-shape group; rows pooled by (ESD length, M, device) for the fits
    pools: dict[tuple, list[tuple[str, torch.Tensor, torch.Tensor, int, bool]]] = {}
    for (shape, dtype, device), members in groups.items():
        for nm, w in members:
            check_matrix(w, nm)
        mixed = precision == "auto" and dtype != torch.float64
        evs = esds(members, "float32" if mixed else precision)
        if len(shape) == 2:
            a, b = shape
        else:
            stack, _, _ = _weight_stack(members[0][1], None, None, conv, members[0][0])
            a, b = stack.shape[-2:]
        N, M = max(a, b), min(a, b)
        for (nm, w), ev in zip(members, evs, strict=True):
            pools.setdefault((ev.numel(), M, device), []).append((nm, w, ev, N, mixed))
    # pass 2: one batched set of fits per pool; float64 redo where float32 cannot support them
    out: dict[str, tuple[torch.Tensor, dict[str, float]]] = {}
    for (_, M, _), rows in pools.items():
        E = torch.stack([ev.to(torch.float64) for _, _, ev, _, _ in rows])
        ms = esd_metrics_batch(E, [N for *_, N, _ in rows], M, min_tail=min_tail,
                               name=rows[0][0])
        for (nm, w, ev, N, mixed), m in zip(rows, ms, strict=True):
            if mixed and not _mixed_ok(ev, N, m["xmin"]):
                ev = esds([(nm, w)], "float64")[0]
                m = esd_metrics(ev, N, M, min_tail=min_tail, name=nm)
            out[nm] = (ev, m)
    return {nm: out[nm] for nm, _ in items}
