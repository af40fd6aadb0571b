"""Empirical neural tangent kernel: exact structured kernel, Jacobian contraction, matrix-free top-k.

Layout: for f: R^d → R^C evaluated on n inputs, the kernel is returned as a tensor of shape
(n, n, C, C) with K[i, j, c, e] = Σ_θ ∂f_c(x_i)/∂θ · ∂f_e(x_j)/∂θ (the torch.func NTK tutorial /
neural-tangents layout). ``trace_outputs=True`` returns the (n, n) kernel Σ_c K[i, j, c, c].
:func:`flatten_ntk` turns (n, n, C, C) into the (n·C, n·C) matrix with row index i·C + c, the
layout of the operator used by :func:`ntk_topk`. Outputs of any shape are flattened to C.
Both methods treat the model as a per-sample function (no batch statistics: use eval mode).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from .dense import eigvals_sym, symmetric_gram
from .lanczos import LanczosResult, lanczos
from .params import select_params
from .summaries import effective_rank
from .validate import check_choice, check_finite, check_matrix

NTK_METHODS = ("auto", "structured", "jacobian")
STRUCTURED_TYPES = (nn.Linear, nn.Conv2d)
LORA_PARAMS = ("lora_A", "lora_B")


def is_lora(module: nn.Module) -> bool:
    """Return True for a LoRA update: a module with parameters `lora_A` (r, d_in) and `lora_B`
    (d_out, r) and a float `lora_scale` s whose output is y = g(x) + s·(x Aᵀ)Bᵀ over the last
    axis of its input x (..., d_in), g not depending on A or B (e.g. g(x) = W0 x, or 0)."""
    params = dict(module.named_parameters(recurse=False))
    return (all(k in params for k in LORA_PARAMS) and hasattr(module, "lora_scale")
            and params["lora_A"].dim() == 2 and params["lora_B"].dim() == 2)


class _NotStructured(Exception):
    """The structured identity does not apply to this model / parameter set."""


def flatten_ntk(K: torch.Tensor) -> torch.Tensor:
    """(n, n, C, C) kernel → (n·C, n·C) matrix M[i·C + c, j·C + e] = K[i, j, c, e]."""
    if K.dim() == 2:
        return K
    if K.dim() != 4:
        raise ValueError(f"NTK must have shape (n, n) or (n, n, C, C), got {tuple(K.shape)}")
    n, _, C, _ = K.shape
    return K.permute(0, 2, 1, 3).reshape(n * C, n * C)


def _owners(model: nn.Module, chosen: list[tuple[str, torch.Tensor]]):
    """{module: (weight in scope, bias in scope)} for the modules owning the chosen parameters."""
    ids = {id(p) for _, p in chosen}
    owners: dict[nn.Module, list[bool]] = {}
    seen: dict[int, int] = {}
    for mod in model.modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) not in ids:
                continue
            seen[id(p)] = seen.get(id(p), 0) + 1
            if is_lora(mod) and pname in LORA_PARAMS:
                flags = owners.setdefault(mod, [False, False])
                flags[LORA_PARAMS.index(pname)] = True
                continue
            if not isinstance(mod, STRUCTURED_TYPES) or pname not in ("weight", "bias"):
                raise _NotStructured(
                    f"parameter {pname} of {type(mod).__name__} is not nn.Linear, nn.Conv2d "
                    "or a LoRA update")
            if isinstance(mod, nn.Conv2d) and (
                    mod.groups != 1 or mod.padding_mode != "zeros" or mod.padding == "same"):
                raise _NotStructured("structured NTK needs Conv2d with groups=1 and zero "
                                     "padding given as numbers")
            flags = owners.setdefault(mod, [False, False])
            flags[0 if pname == "weight" else 1] = True
    if any(c > 1 for c in seen.values()):
        raise _NotStructured("a parameter is shared by several modules")
    return owners


def _structured_pass(model: nn.Module, x: torch.Tensor, chosen: list[tuple[str, torch.Tensor]]):
    """Return (owners, modules in scope, {module: (input, output)}, per-module output gradients
    Δ (C, n, *output shape) or None, f (n, C)) from one forward and one batched backward."""
    owners = _owners(model, chosen)
    n = x.shape[0]
    captured: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(mod, inp, out):
        if mod in captured:
            raise _NotStructured(f"{type(mod).__name__} is called more than once per forward")
        a = inp[0]
        if isinstance(mod, nn.Linear) and (a.dim() != 2 or a.shape[0] != n or out.dim() != 2):
            raise _NotStructured("structured NTK needs every Linear input of shape (n, features)")
        if isinstance(mod, nn.Conv2d) and (a.dim() != 4 or a.shape[0] != n):
            raise _NotStructured("structured NTK needs every Conv2d input of shape (n, c, h, w)")
        if is_lora(mod) and (a.dim() < 2 or a.shape[0] != n or out.shape[:-1] != a.shape[:-1]):
            raise _NotStructured("structured NTK needs every LoRA input of shape (n, ..., d_in)")
        captured[mod] = (a.detach(), out)
        return out.clone()  # later in-place ops must not rewrite the captured pre-activation

    saved = {id(p): p.requires_grad for _, p in chosen}
    handles = [m.register_forward_hook(hook) for m in owners]
    try:
        for _, p in chosen:
            p.requires_grad_(True)
        with torch.enable_grad():
            f = model(x)
            f = f.reshape(n, -1)
            C = f.shape[1]
            if set(captured) != set(owners):
                raise _NotStructured("a Linear layer in scope was not called as a module")
            mods = list(owners)
            zs = [captured[m][1] for m in mods]
            E = torch.eye(C, dtype=f.dtype, device=f.device)[:, None, :].expand(C, n, C)
            try:  # the graph is kept: a failed batched backward may have freed part of it
                deltas = torch.autograd.grad(
                    f, zs, grad_outputs=E, is_grads_batched=True, allow_unused=True,
                    retain_graph=True,
                )
            except RuntimeError:  # an op without a batching rule: one backward per output
                per_c = [
                    torch.autograd.grad(
                        f, zs, grad_outputs=E[c], retain_graph=True, allow_unused=True
                    )
                    for c in range(C)
                ]
                deltas = tuple(
                    None if per_c[0][i] is None else torch.stack([g[i] for g in per_c])
                    for i in range(len(zs))
                )
    finally:
        for h in handles:
            h.remove()
        for _, p in chosen:
            p.requires_grad_(saved[id(p)])
    return owners, mods, captured, deltas, f


def _ntk_structured(
    model: nn.Module, x: torch.Tensor, chosen: list[tuple[str, torch.Tensor]], trace_outputs: bool
) -> torch.Tensor:
    """K = Σ_l (Δ_l Δ_lᵀ) ∘ ([W_l] a_{l−1} a_{l−1}ᵀ + [b_l] 11ᵀ), Δ_l = ∂f/∂z_l per sample, for
    Linear layers; Conv2d layers add the Gram matrix of their per-sample gradients
    (:func:`_conv_kernel`), LoRA updates that of theirs in A and B (:func:`_lora_grads`)."""
    owners, mods, captured, deltas, f = _structured_pass(model, x, chosen)
    n, C = f.shape
    dt = f.dtype
    K = torch.zeros((n, n) if trace_outputs else (n, n, C, C), dtype=dt, device=f.device)
    for m, D in zip(mods, deltas, strict=True):
        if D is None:
            continue
        D = D.detach()  # (C, n, d_out) for Linear, (C, n, c_out, h_out, w_out) for Conv2d
        use_w, use_b = owners[m]
        a = captured[m][0].to(dt)
        if is_lora(m):
            for G in _lora_grads(m, a, D.to(dt), use_w, use_b):
                K += _output_gram(G.reshape(C, n, -1), trace_outputs)
            continue
        if isinstance(m, nn.Conv2d):
            K += _conv_kernel(m, a, D.to(dt), use_w, use_b, trace_outputs)
            continue
        A = (a @ a.T) if use_w else torch.zeros(n, n, dtype=dt, device=a.device)
        if use_b:
            A = A + 1.0
        if trace_outputs:
            G = torch.einsum("cik,cjk->ij", D, D)
            K += G * A
        else:
            Df = D.reshape(C * n, -1)
            G = (Df @ Df.T).reshape(C, n, C, n).permute(1, 3, 0, 2)
            K += G * A[:, :, None, None]
    return K


def _lora_grads(mod: nn.Module, a: torch.Tensor, D: torch.Tensor, use_a: bool, use_b: bool
                ) -> list[torch.Tensor]:
    """Return the per-sample gradients of one LoRA update y = g(x) + s·(x Aᵀ)Bᵀ from its
    captured input a (n, ..., d_in) and output gradients D = ∂f_c/∂y (C, n, ..., d_out):
    ∂f_c(x_i)/∂A = s Σ_t (D_{c,i,t} B)ᵀ a_{i,t}ᵀ  (C, n, r, d_in) and
    ∂f_c(x_i)/∂B = s Σ_t D_{c,i,t} (A a_{i,t})ᵀ  (C, n, d_out, r), t over the middle axes
    (sequence positions), in that order for the parameters in scope."""
    A = mod.lora_A.detach().to(a.dtype)
    B = mod.lora_B.detach().to(a.dtype)
    s = float(mod.lora_scale)
    C, n = D.shape[0], D.shape[1]
    a = a.reshape(n, -1, a.shape[-1])  # (n, T, d_in)
    D = D.reshape(C, n, a.shape[1], D.shape[-1])  # (C, n, T, d_out)
    out = []
    if use_a:
        out.append(s * torch.einsum("cntr,ntd->cnrd", D @ B, a))
    if use_b:
        out.append(s * torch.einsum("cnto,ntr->cnor", D, a @ A.T))
    return out


def _conv_kernel(conv: nn.Conv2d, a: torch.Tensor, D: torch.Tensor, use_w: bool, use_b: bool,
                 trace_outputs: bool) -> torch.Tensor:
    """One Conv2d layer's NTK term from its per-sample gradients.

    With U_i = unfold(a_i) (patches, (c_in·k_h·k_w, P)) and Δ_{c,i} = ∂f_c(x_i)/∂z (c_out, P):
    ∂f_c(x_i)/∂W = Δ_{c,i} U_iᵀ and ∂f_c(x_i)/∂b = Δ_{c,i} 1, so the term is the Gram matrix
    K[i, j, c, e] = ⟨Δ_{c,i}U_iᵀ, Δ_{e,j}U_jᵀ⟩ + ⟨Δ_{c,i}1, Δ_{e,j}1⟩ (no Jacobian of the other
    layers is formed).
    """
    C, n = D.shape[0], D.shape[1]
    D = D.reshape(C, n, D.shape[2], -1)  # (C, n, c_out, P)
    K = None
    if use_w:
        U = torch.nn.functional.unfold(a, conv.kernel_size, dilation=conv.dilation,
                                       padding=conv.padding, stride=conv.stride)  # (n, ckk, P)
        # per-sample weight gradients Δ_{c,i} U_iᵀ as one batched matmul over the samples
        o, P = D.shape[2], D.shape[3]
        Gw = torch.bmm(D.transpose(0, 1).reshape(n, C * o, P), U.transpose(1, 2))  # (n, C·o, ckk)
        K = _output_gram(Gw.reshape(n, C, -1).transpose(0, 1), trace_outputs)
    if use_b:
        Kb = _output_gram(D.sum(dim=3), trace_outputs)
        K = Kb if K is None else K + Kb
    assert K is not None
    return K


def _output_gram(G: torch.Tensor, trace_outputs: bool) -> torch.Tensor:
    """Return the kernel of per-sample gradients G (C, n, F): Σ_c G_c G_cᵀ (n, n) when
    `trace_outputs`, else K[i, j, c, e] = ⟨G[c, i], G[e, j]⟩ (n, n, C, C)."""
    C, n = G.shape[0], G.shape[1]
    if trace_outputs:
        return torch.einsum("cif,cjf->ij", G, G)
    return symmetric_gram(G.reshape(C * n, -1)).reshape(C, n, C, n).permute(1, 3, 0, 2)


def _ntk_jacobian(
    model: nn.Module,
    x: torch.Tensor,
    chosen: list[tuple[str, torch.Tensor]],
    trace_outputs: bool,
    chunk_size: int | None,
) -> torch.Tensor:
    """K = J Jᵀ with per-sample Jacobians J_i = ∂f(x_i)/∂θ from vmap(jacrev(functional_call))."""
    prm = {nm: p.detach() for nm, p in chosen}

    def f_single(pr, xi):
        return functional_call(model, pr, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f_single), (None, 0), chunk_size=chunk_size)(prm, x)
    n = x.shape[0]
    K = None
    for nm in prm:
        J = jac[nm].reshape(n, jac[nm].shape[1], -1)  # (n, C, P_l)
        C = J.shape[1]
        if trace_outputs:
            Kl = torch.einsum("icp,jcp->ij", J, J)
        else:
            Jf = J.reshape(n * C, -1)
            Kl = (Jf @ Jf.T).reshape(n, C, n, C).permute(0, 2, 1, 3)
        K = Kl if K is None else K + Kl
    assert K is not None
    return K.contiguous()


def ntk_matrix(
    model: nn.Module,
    x: torch.Tensor,
    params: Iterable[torch.Tensor] | str | None = None,
    method: str = "auto",
    param_filter: str | None = None,
    trace_outputs: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Empirical NTK K[i, j, c, e] = ⟨∂f_c(x_i)/∂θ, ∂f_e(x_j)/∂θ⟩ of shape (n, n, C, C), or the
    output-traced (n, n) kernel Σ_c K[i, j, c, c] with ``trace_outputs``.

    θ: ``params`` / ``param_filter`` (regex on parameter names), default all trainable.
    method: "structured" — exact per-layer identity K = Σ_l (Δ_l Δ_lᵀ) ∘ (a_{l−1}a_{l−1}ᵀ + 1[bias])
    from one forward pass (activations a) and one batched backward (Δ_l = ∂f/∂z_l) when every
    parameter in scope belongs to an nn.Linear called once on (n, features) inputs or an
    nn.Conv2d (groups 1, zero padding; its term is the Gram matrix of per-sample gradients
    Δ_l unfold(a_{l−1})ᵀ, formed per layer); "jacobian" —
    J Jᵀ from torch.func vmap(jacrev) (any model; memory n·C·#θ); "auto" — structured when it
    applies, else jacobian. Returned in the parameters' dtype.
    """
    check_choice(method, NTK_METHODS, "method")
    x = check_matrix(x, "x", min_dim=1) if x.is_floating_point() else x
    chosen = select_params(model, params, param_filter)
    if method in ("auto", "structured"):
        try:
            return _ntk_structured(model, x, chosen, trace_outputs).detach()
        except _NotStructured as err:
            if method == "structured":
                raise ValueError(f"method='structured' does not apply: {err}") from err
    return _ntk_jacobian(model, x, chosen, trace_outputs, chunk_size).detach()


def _jacobian_structured(model: nn.Module, x: torch.Tensor,
                         chosen: list[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Return {name: ∂f/∂θ (n, C, *θ.shape)} for LoRA updates (:func:`_lora_grads`) and Linear
    layers on (n, features) inputs (∂f_c(x_i)/∂W = Δ_{c,i} a_iᵀ, ∂f_c(x_i)/∂b = Δ_{c,i})."""
    owners, mods, captured, deltas, f = _structured_pass(model, x, chosen)
    n, C = f.shape
    names = {id(p): nm for nm, p in chosen}
    out: dict[str, torch.Tensor] = {}
    for m, D in zip(mods, deltas, strict=True):
        if isinstance(m, nn.Conv2d):
            raise _NotStructured("no structured Jacobian for Conv2d")
        keys = LORA_PARAMS if is_lora(m) else ("weight", "bias")
        params = [getattr(m, k) for k, use in zip(keys, owners[m]) if use]
        if D is None:
            grads = [torch.zeros(C, n, *p.shape, dtype=f.dtype, device=f.device) for p in params]
        elif is_lora(m):
            grads = _lora_grads(m, captured[m][0].to(f.dtype), D.detach().to(f.dtype),
                                *owners[m])
        else:
            D = D.detach().to(f.dtype)
            a = captured[m][0].to(f.dtype)
            grads = ([D[..., :, None] * a[None, :, None, :]] if owners[m][0] else []) + (
                [D] if owners[m][1] else [])
        for p, G in zip(params, grads, strict=True):
            out[names[id(p)]] = G.transpose(0, 1)
    return {nm: out[nm] for nm, _ in chosen}


def ntk_jacobian(
    model: nn.Module,
    x: torch.Tensor,
    params: Iterable[torch.Tensor] | str | None = None,
    method: str = "auto",
    param_filter: str | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Per-sample Jacobian J of shape (n, C, P): J[i, c] = ∂f_c(x_i)/∂θ, the selected parameters
    flattened and concatenated in ``model.named_parameters()`` order (so ntk_matrix = J Jᵀ).

    method: "structured" — from the captured inputs and output gradients of LoRA updates and
    nn.Linear layers (one forward, one batched backward); "jacobian" — torch.func
    vmap(jacrev); "auto" — structured when it applies. Returned in the parameters' dtype.
    """
    check_choice(method, NTK_METHODS, "method")
    x = check_matrix(x, "x", min_dim=1) if x.is_floating_point() else x
    chosen = select_params(model, params, param_filter)
    n = x.shape[0]
    if method in ("auto", "structured"):
        try:
            jac = _jacobian_structured(model, x, chosen)
            C = next(iter(jac.values())).shape[1]
            return torch.cat([j.reshape(n, C, -1) for j in jac.values()], dim=2).detach()
        except _NotStructured as err:
            if method == "structured":
                raise ValueError(f"method='structured' does not apply: {err}") from err
    prm = {nm: p.detach() for nm, p in chosen}

    def f_single(pr, xi):
        return functional_call(model, pr, (xi.unsqueeze(0),)).reshape(-1)

    jac = vmap(jacrev(f_single), (None, 0), chunk_size=chunk_size)(prm, x)
    C = next(iter(jac.values())).shape[1]
    return torch.cat([jac[nm].reshape(n, C, -1) for nm in prm], dim=2).detach()


def sign_ntk(J: torch.Tensor, eps: float = 1e-8, trace_outputs: bool = False) -> torch.Tensor:
    """Sign-NTK of a per-sample Jacobian J (n, C, P): the symmetrised contraction of J with
    sign(J) ≈ J/(|J| + eps) (the kernel of sign-like, Adam-style updates),
    K = ½(J Sᵀ + S Jᵀ), S = J/(|J| + eps); shape (n, n, C, C), or (n, n) traced over outputs.
    J Sᵀ alone is not symmetric; its symmetric part has the same quadratic form."""
    n, C = J.shape[0], J.shape[1]
    Jf = J.reshape(n * C, -1)
    S = Jf / (Jf.abs() + eps)
    M = Jf @ S.T
    M = 0.5 * (M + M.T)
    K = M.reshape(n, C, n, C).permute(0, 2, 1, 3)
    return torch.einsum("ijcc->ij", K) if trace_outputs else K.contiguous()


def ntk_topk(
    model: nn.Module,
    x: torch.Tensor,
    k: int = 5,
    params: Iterable[torch.Tensor] | str | None = None,
    param_filter: str | None = None,
    which: str = "LA",
    tol: float = 1e-6,
    max_iter: int | None = None,
    seed: int | None = 0,
    block_size: int | None = None,
) -> LanczosResult:
    """Top-k (or bottom-k) eigenvalues of the (n·C, n·C) NTK without forming it.

    Block Lanczos (float64 basis) on v ↦ J (Jᵀ v), with Jᵀv from one torch.func.vjp closure
    (built once) and J u from torch.func.jvp. Same flattening as :func:`flatten_ntk`.
    ``block_size`` defaults to min(C, k): kernels restricted to the last layer are K₀ ⊗ I_C,
    whose eigenvalues repeat C times, which a single-vector Lanczos would report once.
    """
    if x.is_floating_point():
        check_finite(x, "x")
    chosen = select_params(model, params, param_filter)
    prm = {nm: p.detach() for nm, p in chosen}

    def f(pr):
        return functional_call(model, pr, (x,)).reshape(-1)

    out, vjp_fn = vjp(f, prm)
    dim = out.numel()

    def matvec(v: torch.Tensor) -> torch.Tensor:
        (g,) = vjp_fn(v.to(out.dtype))
        _, ju = jvp(f, (prm,), (g,))
        return ju.detach().to(v.dtype)

    n_out = max(1, dim // max(1, x.shape[0]))
    bs = min(n_out, k) if block_size is None else block_size
    return lanczos(
        matvec,
        dim,
        k=min(k, dim),
        which=which,
        tol=tol,
        max_iter=max_iter,
        dtype=torch.float64,
        device=out.device,
        seed=seed,
        block_size=bs,
        name="ntk",
    )


def ntk_metrics(
    K: torch.Tensor, y: torch.Tensor | None = None, k: int = 5, name: str = "ntk"
) -> dict[str, float | list[float]]:
    """Summary of a kernel K ((n, n) or (n, n, C, C), flattened by :func:`flatten_ntk`).

    trace = Σ K_ii; topk = the k largest eigenvalues (float64, descending); lambda_max,
    lambda_min; condition_number = λ_max / λ_min (inf when λ_min ≤ 0); effective_rank =
    exp(entropy of λ/Σλ); with targets y: alignment = ⟨K, yyᵀ⟩_F / (‖K‖_F ‖yyᵀ‖_F), where y
    of shape (n, C) is flattened to match an (n·C) kernel, or gives YYᵀ for an (n, n) kernel.
    """
    K = check_matrix(K, name)
    M = flatten_ntk(K).to(torch.float64)
    if M.shape[0] != M.shape[1]:
        raise ValueError(f"{name} must be square, got {tuple(M.shape)}")
    ev = eigvals_sym(M, name=name)
    lmax, lmin = float(ev[-1]), float(ev[0])
    out: dict[str, float | list[float]] = {
        "trace": float(torch.diagonal(M).sum()),
        "topk": ev.flip(0)[:k].tolist(),
        "lambda_max": lmax,
        "lambda_min": lmin,
        "condition_number": lmax / lmin if lmin > 0 else float("inf"),
        "effective_rank": effective_rank(ev.clamp(min=0.0), name),
    }
    if y is not None:
        y = torch.as_tensor(y, device=M.device)
        Y = check_matrix(y, "y", min_dim=1).to(torch.float64)
        if Y.numel() == M.shape[0]:
            Y = Y.reshape(-1, 1)
        else:
            Y = Y.reshape(Y.shape[0], -1)
        if Y.shape[0] != M.shape[0]:
            raise ValueError(
                f"y of shape {tuple(y.shape)} does not match {name} of size {M.shape[0]}"
            )
        yy = Y @ Y.T
        den = float(torch.linalg.matrix_norm(M) * torch.linalg.matrix_norm(yy))
        out["alignment"] = float((M * yy).sum()) / den if den > 0 else float("nan")
    return out
