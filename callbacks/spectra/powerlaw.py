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

from .validate import check_rows, check_vector


class PowerLawFit(NamedTuple):
    """Result of :func:`powerlaw_fit` (``alpha`` is NaN when the fit is impossible)."""

    alpha: float  # tail exponent α of p(x) ∝ x^(−α), x ≥ xmin
    xmin: float  # start of the tail
    ks_distance: float  # KS distance D between the tail and the fitted law
    n_tail: int  # number of values ≥ xmin used in the fit
    sigma: float  # standard error (α − 1)/√n_tail


_NAN_FIT = PowerLawFit(float("nan"), float("nan"), float("nan"), 0, float("nan"))
_CHUNK_ELEMS = 1 << 22  # entries of the (candidates × values) D matrix built at once


def _ks_rows(
    logx: torch.Tensor, alphas: torch.Tensor, valid: torch.Tensor, lo: int, hi: int
) -> torch.Tensor:
    """KS distances D[b, i] of candidates lo ≤ i < hi of a batch of ascending rows (B, n).

    D_i = max_{j≥i} |(n − j)/n_i − exp((1 − α_i)(log x_j − log x_i))|, n_i = n − i (j, i global
    indices: the dropped values of a row are a prefix that no candidate reaches). Row blocks of
    candidates span only the columns j ≥ (the block's first i), so about half the triangle is
    never formed; in-place operations on one buffer. Entries of invalid candidates are 1.
    """
    B, n = logx.shape
    dt = logx.dtype
    j_all = torch.arange(n, device=logx.device, dtype=dt)
    out = torch.ones(B, n, dtype=dt, device=logx.device)
    # blocks of ~n/4 candidates keep the wasted part of the triangle small; ≤ _CHUNK_ELEMS each
    rows = max(1, min(max(n // 4, 16), _CHUNK_ELEMS // max(B * n, 1)))
    for s in range(lo, hi, rows):
        e = min(s + rows, hi)
        c = (1.0 - alphas[:, s:e]).masked_fill_(~valid[:, s:e], 0.0)  # (B, r)
        i_f = j_all[s:e]
        inv_n = 1.0 / (n - i_f)
        cols = j_all[s:]
        arg = c[:, :, None] * logx[:, None, s:]
        arg.sub_((c * logx[:, s:e])[:, :, None]).exp_()  # (x_j / x_i)^(1 − α_i)
        base = torch.outer(inv_n, n - cols)  # (n − j)/n_i, exact integers n − j: offset-free
        arg.sub_(base).abs_()
        arg.masked_fill_((cols[None, :] < i_f[:, None])[None], 0.0)  # only j ≥ i counts
        out[:, s:e] = arg.amax(dim=2)
    return out.masked_fill_(~valid, 1.0)


def _fit_ks(x: torch.Tensor, min_tail: int, small_n: int, threshold: float) -> list[PowerLawFit]:
    """KS-selected fits of a batch of ascending float64 rows x (B, n); values ≤ threshold
    (a prefix of each row) are dropped row by row."""
    B, n = x.shape
    keep = x > max(threshold, 0.0)
    n_valid = keep.sum(1)
    offset = n - n_valid  # (B,) dropped values: the head of each ascending row
    logx = x.masked_fill(~keep, 1.0).log()  # dropped entries: log 1 = 0, never used
    small = n_valid < small_n
    tail_min = min_tail + small.long() * (max(min_tail, 8) - min_tail)
    tail_min = tail_min.masked_fill(n_valid - tail_min + 1 < 1, 2)  # too few for small-N
    i = torch.arange(n, device=x.device)
    cand = (i >= offset[:, None]) & (i <= n - tail_min[:, None])
    n_i = (n - i).to(x.dtype)
    suffix = torch.flip(torch.cumsum(torch.flip(logx, [1]), 1), [1])  # Σ_{j≥i} log x_j
    s = suffix - n_i * logx
    num = torch.where(small[:, None], n_i - 1.0, n_i)
    alphas = (1.0 + num / s.clamp(min=1e-300)).masked_fill_(s <= 0, torch.inf)
    s_ok = torch.where(small[:, None], s > 1e-12, s > 0)
    valid = cand & s_ok & (alphas > 1.0) & torch.isfinite(alphas) & (n_valid >= 2)[:, None]
    cols = valid.any(0).nonzero()
    if cols.numel() == 0:
        return [_NAN_FIT] * B
    ks = _ks_rows(logx, alphas, valid, int(cols[0]), int(cols[-1]) + 1)
    objective = torch.where(small[:, None], ks - 0.868 / n_i.sqrt(), ks)
    objective = objective.masked_fill(~valid, torch.inf)
    best = torch.argmin(objective, dim=1, keepdim=True)  # the first minimum of each row
    rows = torch.cat([alphas.gather(1, best), x.gather(1, best), ks.gather(1, best),
                      n - best.to(x.dtype), valid.any(1, keepdim=True).to(x.dtype)], 1)
    fits = []
    for alpha, xmin, d, nt, ok in rows.tolist():
        if not ok:
            fits.append(_NAN_FIT)
            continue
        fits.append(PowerLawFit(alpha, xmin, d, int(nt), (alpha - 1.0) / nt**0.5))
    return fits


def _check_options(xmin: str | float, min_tail: int) -> None:
    if isinstance(xmin, str):
        if xmin != "ks":
            raise ValueError(
                f"xmin={xmin!r} is not allowed; allowed values: ['ks', or a float > 0]"
            )
    elif not (float(xmin) > 0):
        raise ValueError(f"xmin must be 'ks' or a positive float, got {xmin!r}")
    if min_tail < 2:
        raise ValueError(f"min_tail must be >= 2, got {min_tail}")


def powerlaw_fits(
    evals: torch.Tensor,
    min_tail: int = 2,
    small_n: int = 20,
    threshold: float = 0.0,
    name: str = "evals",
) -> list[PowerLawFit]:
    """:func:`powerlaw_fit` with xmin="ks" of each row of a (B, n) batch of spectra, in one
    set of tensor operations (rows need not be sorted; each keeps its own values > threshold).

    Returns one :class:`PowerLawFit` per row, equal to ``powerlaw_fit(evals[b], ...)``.
    """
    x = check_rows(evals, name)
    _check_options("ks", min_tail)
    return _fit_ks(x, min_tail, small_n, threshold)


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
    _check_options(xmin, min_tail)
    x = torch.sort(ev.to(torch.float64)).values
    if isinstance(xmin, str):
        return _fit_ks(x[None], min_tail, small_n, threshold)[0]
    x = x[x > max(threshold, 0.0)]
    n_total = x.numel()
    if n_total < 2:
        return _NAN_FIT
    x0 = torch.tensor(float(xmin), dtype=x.dtype, device=x.device)
    i0 = int(torch.searchsorted(x, x0))
    n = n_total - i0
    if n < 2:
        return _NAN_FIT
    d = x[i0:].log() - torch.log(x0)  # log(x / xmin)
    s = float(d.sum())
    if s <= 0:
        return _NAN_FIT
    alpha = 1.0 + n / s
    theo = 1.0 - torch.exp((1.0 - alpha) * d)
    emp = torch.arange(n, dtype=x.dtype, device=x.device) / n
    ks = float((theo - emp).abs().max())
    return PowerLawFit(alpha, float(xmin), ks, n, (alpha - 1.0) / n**0.5)
