"""Power-law tail fit of a spectrum (Clauset–Shalizi–Newman continuous MLE, xmin by KS distance).

Matches WeightWatcher's default fit (``weightwatcher.WW_powerlaw.WWFit``, pl_package='ww'):
the positive values are sorted ascending, x_0 ≤ … ≤ x_{N−1}; every x_i with i ≤ N − min_tail
is a candidate xmin (duplicates included; WeightWatcher uses min_tail = 2, i.e. every value
but the largest), and for each candidate

    n_i = N − i,    α_i = 1 + n_i / Σ_{j≥i} log(x_j / x_i),
    D_i = max_{j≥i} | 1 − (x_j / x_i)^{1−α_i} − (j − i)/n_i |      (D_i = 1 when α_i ≤ 1)

(the empirical CDF taken at its left limits, as the ``powerlaw`` package does). The chosen xmin
minimises D_i (first minimum). No upper cap on α and no xmax. For fewer than ``small_n`` values
WeightWatcher switches to a small-sample rule, reproduced here: tails of at least 8 points, the
bias-corrected α_i = 1 + (n_i − 1)/Σ log(x_j/x_i), and xmin minimising D_i − 0.868/√n_i.
That is the rule of WeightWatcher's ``fit_powerlaw_smallN``; in weightwatcher 0.7.7
``WWFit.__init__`` then re-selects the candidate of smallest D_i, so its ``analyze()`` reports
that one when N < 20 (tests/fixtures/weightwatcher.json keeps both). The (n_i − 1) is Clauset et
al.'s (2009, app. B) correction, unbiased for a known xmin; with xmin at the smallest tail value,
Σ log(x_j/x_i) has n_i − 1 exponential terms and E α_i = 1 + (n_i − 1)(α − 1)/(n_i − 2).
All candidates are evaluated at once (cumulative sums over the sorted logs; the D matrix in
row chunks), so the cost is O(N²/chunk) tensor ops instead of a Python loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .validate import check_vector


class PowerLawFit(NamedTuple):
    """Result of :func:`powerlaw_fit` (``alpha`` is NaN when the fit is impossible)."""

    alpha: float  # tail exponent α of p(x) ∝ x^(−α), x ≥ xmin
    xmin: float  # start of the tail
    ks_distance: float  # KS distance D between the tail and the fitted law
    n_tail: int  # number of values ≥ xmin used in the fit
    sigma: float  # standard error (α − 1)/√n_tail


_NAN_FIT = PowerLawFit(float("nan"), float("nan"), float("nan"), 0, float("nan"))
_CHUNK_ELEMS = 1 << 22  # entries of the (candidates × values) D matrix built at once


def _ks_rows(logx: torch.Tensor, idx: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """KS distances D_i for ascending candidate indices ``idx`` (with exponents ``alphas``).

    D_i = max_{j≥i} |(n_i − (j − i))/n_i − exp((1 − α_i)(log x_j − log x_i))|, evaluated in row
    blocks that span only the columns j ≥ (the block's first i), so about half the triangle of
    the (candidates × values) matrix is never formed; in-place operations on one buffer.
    """
    n_total = logx.numel()
    dt = logx.dtype
    j_all = torch.arange(n_total, device=logx.device, dtype=dt)
    out = torch.empty(idx.numel(), dtype=dt, device=logx.device)
    # blocks of ~n/4 rows keep the wasted part of the triangle small; at most _CHUNK_ELEMS each
    rows = max(1, min(max(n_total // 4, 16), _CHUNK_ELEMS // max(n_total, 1)))
    for s in range(0, idx.numel(), rows):
        ii = idx[s : s + rows]
        first = int(ii[0])
        c = 1.0 - alphas[s : s + rows]
        i_f = ii.to(dt)
        inv_n = 1.0 / (n_total - i_f)
        cols = j_all[first:]
        arg = torch.outer(c, logx[first:])
        arg.sub_((c * logx[ii])[:, None]).exp_()  # (x_j / x_i)^(1 − α_i)
        base = torch.outer(-inv_n, cols)
        base.add_((n_total * inv_n)[:, None])  # 1 − (j − i)/n_i = (N − j)/n_i
        base.sub_(arg).abs_()
        base.masked_fill_(cols[None, :] < i_f[:, None], 0.0)  # only j ≥ i counts
        out[s : s + rows] = base.max(dim=1).values
    return out


def powerlaw_fit(
    evals: torch.Tensor,
    xmin: str | float = "ks",
    min_tail: int = 2,
    small_n: int = 20,
    threshold: float = 0.0,
    name: str = "evals",
) -> PowerLawFit:
    """Fit p(x) ∝ x^(−α) to the tail x ≥ xmin of the positive values of ``evals``.

    α = 1 + n / Σ_{x ≥ xmin} log(x / xmin) (continuous MLE); xmin="ks" picks the xmin that
    minimises the KS distance (see module docstring), a float fixes it (tail = values ≥ xmin).
    Values ≤ ``threshold`` are dropped first (WeightWatcher drops eigenvalues ≤ 1e-5).
    Returns a :class:`PowerLawFit` (alpha, xmin, ks_distance, n_tail, sigma).
    """
    ev = check_vector(evals, name)
    if ev.is_complex():
        raise ValueError(f"{name}: powerlaw_fit needs real values, got complex")
    if isinstance(xmin, str):
        if xmin != "ks":
            raise ValueError(
                f"xmin={xmin!r} is not allowed; allowed values: ['ks', or a float > 0]"
            )
    elif not (float(xmin) > 0):
        raise ValueError(f"xmin must be 'ks' or a positive float, got {xmin!r}")
    if min_tail < 2:
        raise ValueError(f"min_tail must be >= 2, got {min_tail}")
    x = torch.sort(ev.to(torch.float64)).values
    x = x[x > max(threshold, 0.0)]
    n_total = x.numel()
    if n_total < 2:
        return _NAN_FIT
    logx = x.log()

    if not isinstance(xmin, str):
        x0 = torch.tensor(float(xmin), dtype=x.dtype, device=x.device)
        i0 = int(torch.searchsorted(x, x0))
        n = n_total - i0
        if n < 2:
            return _NAN_FIT
        d = logx[i0:] - torch.log(x0)  # log(x / xmin)
        s = float(d.sum())
        if s <= 0:
            return _NAN_FIT
        alpha = 1.0 + n / s
        theo = 1.0 - torch.exp((1.0 - alpha) * d)
        emp = torch.arange(n, dtype=x.dtype, device=x.device) / n
        ks = float((theo - emp).abs().max())
        return PowerLawFit(alpha, float(xmin), ks, n, (alpha - 1.0) / n**0.5)

    small = n_total < small_n
    tail_min = max(min_tail, 8) if small else min_tail
    n_cand = n_total - tail_min + 1
    if n_cand < 1:
        tail_min, n_cand = 2, n_total - 1  # too few values for the small-sample rule
    idx = torch.arange(n_cand, device=x.device)
    n = (n_total - idx).to(x.dtype)
    suffix = torch.flip(torch.cumsum(torch.flip(logx, [0]), 0), [0])  # Σ_{j≥i} log x_j
    s = suffix[idx] - n * logx[idx]
    num = (n - 1.0) if small else n
    with torch.no_grad():
        alphas = torch.where(s > 0, 1.0 + num / s.clamp(min=1e-300), torch.full_like(s, torch.inf))
    valid = (s > 1e-12 if small else s > 0) & (alphas > 1.0) & torch.isfinite(alphas)
    ks = torch.ones_like(alphas)
    if bool(valid.any()):
        vi = idx[valid]
        ks[valid] = _ks_rows(logx, vi, alphas[valid])
    objective = ks - 0.868 / n.sqrt() if small else ks.clone()
    objective = torch.where(valid, objective, torch.full_like(objective, torch.inf))
    if not bool(torch.isfinite(objective).any()):
        return _NAN_FIT
    best = int(torch.argmin(objective))
    alpha = float(alphas[best])
    nt = int(n[best])
    return PowerLawFit(alpha, float(x[best]), float(ks[best]), nt, (alpha - 1.0) / nt**0.5)
