"""Hessian-vector products over a model's parameters and Lanczos / Hutch++ on top of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from .lanczos import LanczosResult, lanczos
from .params import select_params
from .trace import TraceEstimate, hutchpp_trace
from .validate import check_finite

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def dense_hessian(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[torch.Tensor],
    params: Iterable[torch.Tensor] | str | None = None,
    param_filter: str | None = None,
) -> torch.Tensor:
    """Return the explicit Hessian H = ∇²_θ loss_fn(model(inputs), targets), (dim, dim).

    θ is chosen and flattened exactly as in :func:`hessian_matvec`; computed with
    ``torch.func.hessian`` through ``functional_call``, so it costs O(dim²) memory: a dense
    reference for small models (tests, benchmarks), not a diagnostic for real ones.
    """
    inputs, targets = batch
    chosen = select_params(model, params, param_filter)
    flat = torch.cat([p.detach().reshape(-1) for _, p in chosen])

    def loss_of(theta: torch.Tensor) -> torch.Tensor:
        pieces, i = {}, 0
        for n, p in chosen:
            pieces[n] = theta[i : i + p.numel()].view_as(p)
            i += p.numel()
        return loss_fn(functional_call(model, pieces, (inputs,)), targets)

    return torch.func.hessian(loss_of)(flat)


def hessian_matvec(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[torch.Tensor],
    params: Iterable[torch.Tensor] | str | None = None,
    param_filter: str | None = None,
) -> tuple[Callable[[torch.Tensor], torch.Tensor], int]:
    """Return (v ↦ H v, dim) for H = ∇²_θ loss_fn(model(inputs), targets) over the chosen θ.

    θ is the flat concatenation of the selected parameters (default: all with requires_grad,
    in ``named_parameters`` order; see :func:`select_params`). The gradient g = ∇_θ L is built
    once with create_graph=True; each product is ∂(g·v)/∂θ through that graph (retain_graph),
    so one product costs about one backward pass. v may have any float dtype; Hv comes back in
    v's dtype. v must be on the parameters' device (a ValueError says so otherwise: build probe
    vectors with ``device=`` that device). The model's mode (train/eval) is used as is.
    """
    inputs, targets = batch
    chosen = select_params(model, params, param_filter)
    ps = [p for _, p in chosen]
    with torch.enable_grad():
        loss = loss_fn(model(inputs), targets)
        if loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
        check_finite(loss.detach(), "loss")
        grads = torch.autograd.grad(loss, ps, create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, ps, strict=True)]
    sizes = [p.numel() for p in ps]
    dim = sum(sizes)
    device = ps[0].device
    # gradients that do not depend on θ (e.g. a parameter entering linearly) give no graph
    live = [i for i, g in enumerate(grads) if g.requires_grad]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        if v.numel() != dim:
            raise ValueError(f"hessian matvec: vector has {v.numel()} entries, expected {dim}")
        if v.device != device:
            raise ValueError(f"hessian matvec: vector on {v.device}, parameters on {device}")
        pieces = torch.split(v.reshape(-1), sizes)
        out_dtype = v.dtype
        if not live:
            return torch.zeros(dim, dtype=out_dtype, device=v.device)
        with torch.enable_grad():
            hv = torch.autograd.grad(
                [grads[i] for i in live],
                ps,
                grad_outputs=[pieces[i].to(grads[i].dtype).view_as(grads[i]) for i in live],
                retain_graph=True,
                allow_unused=True,
            )
        flat = [
            (torch.zeros_like(p) if h is None else h).reshape(-1)
            for h, p in zip(hv, ps, strict=True)
        ]
        return torch.cat(flat).to(out_dtype)

    return matvec, dim


def hessian_eigs(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[torch.Tensor],
    k: int = 5,
    which: str = "LA",
    params: Iterable[torch.Tensor] | str | None = None,
    param_filter: str | None = None,
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int | None = 0,
    return_vectors: bool = False,
    block_size: int = 1,
    bound: str = "residual",
    reorth: str = "partial",
) -> LanczosResult:
    """k extreme Hessian eigenvalues (Lanczos on :func:`hessian_matvec`; ``bound`` as in
    :func:`lanczos`: "residual" or the eigenvalue tolerance "gap"; ``reorth`` as there, partial
    by default: the products are computed in the basis dtype, the precision the estimate of
    the loss of orthogonality assumes).

    The Krylov basis is kept in the parameters' dtype (float32 products are no more accurate
    than a float32 basis, and it halves the re-orthogonalisation traffic); T is float64.
    Returns :class:`LanczosResult` (eigenvalues descending for LA, ascending for SA, converged
    flags, number of Hessian-vector products).
    """
    chosen = select_params(model, params, param_filter)
    mv, dim = hessian_matvec(model, loss_fn, batch, [p for _, p in chosen])
    p0 = chosen[0][1]
    basis_dtype = torch.float64 if p0.dtype == torch.float64 else torch.float32
    return lanczos(
        mv,
        dim,
        k=k,
        which=which,
        tol=tol,
        max_iter=max_iter,
        dtype=basis_dtype,
        device=p0.device,
        block_size=block_size,
        seed=seed,
        return_vectors=return_vectors,
        name="hessian",
        bound=bound,
        reorth=reorth,
    )


def hessian_trace(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Sequence[torch.Tensor],
    n_matvecs: int = 30,
    params: Iterable[torch.Tensor] | str | None = None,
    param_filter: str | None = None,
    seed: int | None = 0,
) -> TraceEstimate:
    """Hutch++ estimate of tr(H) with ``n_matvecs`` Hessian-vector products (probes drawn on the
    device of the chosen parameters)."""
    chosen = select_params(model, params, param_filter)
    mv, dim = hessian_matvec(model, loss_fn, batch, [p for _, p in chosen])
    device = chosen[0][1].device
    return hutchpp_trace(
        mv, dim, n_matvecs, dtype=torch.float64, device=device, seed=seed, name="hessian"
    )
