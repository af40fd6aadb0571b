import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from callbacks.spectra import (
    flatten_ntk,
    ntk_jacobian,
    ntk_matrix,
    ntk_metrics,
    ntk_topk,
    sign_ntk,
)
from callbacks.spectra.dense import symmetric_gram


def mlp():
    return nn.Sequential(
        nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 12), nn.ReLU(inplace=True), nn.Linear(12, 3)
    ).double()


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.norm = nn.LayerNorm(3 * 4 * 4)
        self.head = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x):
        return self.head(self.norm(torch.tanh(self.conv(x)).flatten(1)))


def explicit_jacobian(model, x, names=None):
    """(n, C, P) Jacobian of the flat selected parameters (all when names is None), in
    named_parameters order, from autograd on the flat-parameter function."""
    named = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(theta):
        d, i = {}, 0
        for n, p in named:
            d[n] = theta[i : i + p.numel()].view_as(p)
            i += p.numel()
        return functional_call(model, d, (x,)).reshape(x.shape[0], -1)

    return torch.autograd.functional.jacobian(f, flat)


def explicit_ntk(model, x, names=None):
    """(n, n, C, C) kernel J Jᵀ from :func:`explicit_jacobian`."""
    J = explicit_jacobian(model, x, names)
    return torch.einsum("icp,jdp->ijcd", J, J)


def test_structured_jacobian_and_explicit_agree(gen):
    model = mlp()
    x = torch.randn(8, 5, generator=gen, dtype=torch.float64)
    ref = explicit_ntk(model, x)
    for method in ("structured", "jacobian", "auto"):
        K = ntk_matrix(model, x, method=method)
        assert K.shape == (8, 8, 3, 3)
        torch.testing.assert_close(K, ref, rtol=1e-10, atol=1e-10)
    Kt = ntk_matrix(model, x, trace_outputs=True)
    torch.testing.assert_close(Kt, torch.einsum("ijcc->ij", ref), rtol=1e-10, atol=1e-10)
    Kt_j = ntk_matrix(model, x, trace_outputs=True, method="jacobian")
    torch.testing.assert_close(Kt_j, Kt, rtol=1e-10, atol=1e-10)


def test_param_filter(gen):
    model = mlp()
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    ref = explicit_ntk(model, x, names={"2.weight", "2.bias"})
    for method in ("structured", "jacobian"):
        K = ntk_matrix(model, x, method=method, param_filter=r"^2\.")
        torch.testing.assert_close(K, ref, rtol=1e-10, atol=1e-10)
    ref_w = explicit_ntk(model, x, names={"0.weight", "2.weight", "4.weight"})
    K_w = ntk_matrix(model, x, method="structured", param_filter="weight")
    torch.testing.assert_close(K_w, ref_w, rtol=1e-10, atol=1e-10)
    full = ntk_matrix(model, x)
    assert not torch.allclose(full, K_w)
    with pytest.raises(ValueError, match="no parameters selected"):
        ntk_matrix(model, x, param_filter="lora")


def test_cnn_uses_jacobian_and_structured_refuses(gen):
    model = SmallCNN().double()
    x = torch.randn(4, 1, 6, 6, generator=gen, dtype=torch.float64)
    ref = explicit_ntk(model, x)
    torch.testing.assert_close(ntk_matrix(model, x), ref, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="structured"):
        ntk_matrix(model, x, method="structured")
    # only the Linear head in scope: the structured identity applies again
    K = ntk_matrix(model, x, method="structured", param_filter="head")
    torch.testing.assert_close(
        K, explicit_ntk(model, x, names={"head.weight", "head.bias"}), rtol=1e-10, atol=1e-10
    )


class ConvNet(nn.Module):
    """Two convolutions (stride, padding, dilation, one without bias) and a Linear head."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 3, (2, 3), dilation=(1, 2), bias=False)
        self.head = nn.Linear(3 * 3 * 2, 3)  # 8x12 input -> 4x6 -> 3x2

    def forward(self, x):
        h = torch.tanh(self.c2(torch.tanh(self.c1(x))))
        return self.head(h.flatten(1))


def test_structured_conv_matches_the_explicit_jacobian(gen):
    model = ConvNet().double()
    x = torch.randn(5, 2, 8, 12, generator=gen, dtype=torch.float64)
    ref = explicit_ntk(model, x)
    K = ntk_matrix(model, x, method="structured")
    assert K.shape == (5, 5, 3, 3)
    torch.testing.assert_close(K, ref, rtol=1e-10, atol=1e-10)
    Kt = ntk_matrix(model, x, method="structured", trace_outputs=True)
    torch.testing.assert_close(Kt, torch.einsum("ijcc->ij", ref), rtol=1e-10, atol=1e-10)
    K_c2 = ntk_matrix(model, x, method="structured", param_filter=r"^c2\.")
    torch.testing.assert_close(K_c2, explicit_ntk(model, x, names={"c2.weight"}),
                               rtol=1e-10, atol=1e-10)
    K_b = ntk_matrix(model, x, method="structured", param_filter=r"^c1\.bias")
    torch.testing.assert_close(K_b, explicit_ntk(model, x, names={"c1.bias"}),
                               rtol=1e-10, atol=1e-10)


def test_structured_refuses_grouped_conv(gen):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(16, 2)).double()
    x = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    with pytest.raises(ValueError, match="groups=1"):
        ntk_matrix(model, x, method="structured")
    torch.testing.assert_close(ntk_matrix(model, x), explicit_ntk(model, x), rtol=1e-10, atol=1e-10)


def test_structured_refuses_reused_layer(gen):
    lin = nn.Linear(4, 4).double()
    model = nn.Sequential(lin, nn.Tanh(), lin)
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    with pytest.raises(ValueError, match="more than once"):
        ntk_matrix(model, x, method="structured")
    torch.testing.assert_close(ntk_matrix(model, x), explicit_ntk(model, x), rtol=1e-10, atol=1e-10)


def test_ntk_topk_matches_dense(gen):
    model = mlp()
    x = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    M = flatten_ntk(ntk_matrix(model, x))
    ev = torch.linalg.eigvalsh(M).flip(0)
    res = ntk_topk(model, x, k=4, tol=1e-8)
    assert res.converged.all()
    torch.testing.assert_close(res.eigenvalues, ev[:4], rtol=1e-8, atol=0)
    sub = ntk_topk(model, x, k=2, param_filter=r"^4\.")
    ev_sub = torch.linalg.eigvalsh(flatten_ntk(ntk_matrix(model, x, param_filter=r"^4\."))).flip(0)
    torch.testing.assert_close(sub.eigenvalues, ev_sub[:2], rtol=1e-6, atol=0)


def test_flatten_layout():
    K = torch.arange(2 * 2 * 3 * 3, dtype=torch.float64).reshape(2, 2, 3, 3)
    M = flatten_ntk(K)
    assert M.shape == (6, 6)
    assert M[1 * 3 + 2, 0 * 3 + 1] == K[1, 0, 2, 1]


def test_ntk_metrics(gen):
    y = torch.randn(12, generator=gen, dtype=torch.float64)
    m = ntk_metrics(torch.outer(y, y), y)
    assert m["alignment"] == pytest.approx(1.0, rel=1e-12)
    assert m["effective_rank"] == pytest.approx(1.0, rel=1e-6)
    assert m["trace"] == pytest.approx(float(y @ y))
    eye = ntk_metrics(torch.eye(12, dtype=torch.float64), y, k=3)
    assert eye["alignment"] == pytest.approx(1 / 12**0.5, rel=1e-12)
    assert eye["topk"] == [1.0, 1.0, 1.0]
    assert eye["condition_number"] == pytest.approx(1.0)
    assert eye["effective_rank"] == pytest.approx(12.0)
    # (n, n, C, C) kernel with (n, C) targets: flattened consistently
    Y = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    K4 = torch.einsum("ic,jd->ijcd", Y, Y)
    assert ntk_metrics(K4, Y)["alignment"] == pytest.approx(1.0, rel=1e-12)
    assert ntk_metrics(torch.diag(torch.tensor([2.0, 1e-6])))["condition_number"] == pytest.approx(
        2e6
    )
    with pytest.raises(ValueError, match="does not match"):
        ntk_metrics(torch.eye(12), torch.ones(5))


class LoRALinear(nn.Module):
    """y = W0 x + s·(x Aᵀ)Bᵀ over the last axis (the contract of ``is_lora``), W0 frozen."""

    def __init__(self, d_in: int, d_out: int, r: int, scale: float, gen):
        super().__init__()
        self.base = nn.Linear(d_in, d_out).double().requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(r, d_in, generator=gen, dtype=torch.float64))
        self.lora_B = nn.Parameter(torch.randn(d_out, r, generator=gen, dtype=torch.float64))
        self.lora_scale = scale

    def forward(self, x):
        return self.base(x) + self.lora_scale * (x @ self.lora_A.T) @ self.lora_B.T


class SeqLoRA(nn.Module):
    """(n, T, d) → LoRA on every position → tanh → mean over T → Linear head (C = 3)."""

    def __init__(self, gen, scale: float = 1.5):
        super().__init__()
        self.lora = LoRALinear(4, 6, 2, scale, gen)
        self.head = nn.Linear(6, 3).double()

    def forward(self, x):
        return self.head(torch.tanh(self.lora(x)).mean(dim=1))


@pytest.mark.parametrize("names", [("lora.lora_A", "lora.lora_B"), ("lora.lora_A",),
                                   ("lora.lora_B",), ("lora.lora_A", "lora.lora_B", "head.weight")])
def test_structured_lora_kernel_and_jacobian_equal_the_explicit_ones(gen, names):
    """The LoRA gradients ∂f/∂A = s Σ_t (Δ_t B)ᵀ a_tᵀ and ∂f/∂B = s Σ_t Δ_t (A a_t)ᵀ over the
    sequence axis, with s = 1.5 (a dropped s would scale the kernel by 2.25), each parameter
    alone and together, against autograd's Jacobian of the flat parameters."""
    model = SeqLoRA(gen)
    x = torch.randn(5, 7, 4, generator=gen, dtype=torch.float64)
    params = [p for n, p in model.named_parameters() if n in names]
    J = explicit_jacobian(model, x, set(names))
    ref = torch.einsum("icp,jdp->ijcd", J, J)
    K = ntk_matrix(model, x, params=params, method="structured")
    torch.testing.assert_close(K, ref, rtol=1e-10, atol=1e-10)
    Kt = ntk_matrix(model, x, params=params, method="structured", trace_outputs=True)
    torch.testing.assert_close(Kt, torch.einsum("ijcc->ij", ref), rtol=1e-10, atol=1e-10)
    for method in ("structured", "jacobian"):
        torch.testing.assert_close(ntk_jacobian(model, x, params=params, method=method), J,
                                   rtol=1e-10, atol=1e-10)


def test_a_module_without_lora_scale_is_not_lora(gen):
    """``is_lora`` needs lora_A, lora_B (both 2-D) and lora_scale: without the scale the
    structured method refuses the module and "auto" falls back to the exact Jacobian."""
    model = SeqLoRA(gen)
    del model.lora.lora_scale
    model.lora.lora_scale_missing = 1.5
    model.lora.forward = lambda x: model.lora.base(x) + 1.5 * (x @ model.lora.lora_A.T) @ \
        model.lora.lora_B.T
    x = torch.randn(3, 2, 4, generator=gen, dtype=torch.float64)
    params = [model.lora.lora_A, model.lora.lora_B]
    with pytest.raises(ValueError, match="parameter lora_A of LoRALinear is not nn.Linear"):
        ntk_matrix(model, x, params=params, method="structured")
    J = explicit_jacobian(model, x, {"lora.lora_A", "lora.lora_B"})
    torch.testing.assert_close(ntk_matrix(model, x, params=params),
                               torch.einsum("icp,jdp->ijcd", J, J), rtol=1e-10, atol=1e-10)


class UnusedBranch(nn.Module):
    """A Linear whose output does not reach f: its Δ is None, its kernel and Jacobian zero;
    registered first, so the layers after it must still be summed."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Linear(3, 4).double()
        self.used = nn.Linear(3, 2).double()

    def forward(self, x):
        self.unused(x)
        return self.used(x)


def test_a_layer_that_does_not_reach_the_output_adds_zero(gen):
    model = UnusedBranch()
    x = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    K = ntk_matrix(model, x, method="structured")
    torch.testing.assert_close(K, ntk_matrix(model, x, method="structured", param_filter="^used"))
    torch.testing.assert_close(K, explicit_ntk(model, x), rtol=1e-10, atol=1e-10)
    Js = ntk_jacobian(model, x, method="structured")
    assert Js.shape == (4, 2, 4 * 3 + 4 + 2 * 3 + 2)
    torch.testing.assert_close(Js[:, :, :16], torch.zeros(4, 2, 16, dtype=torch.float64))
    torch.testing.assert_close(Js, ntk_jacobian(model, x, method="jacobian"), rtol=1e-12,
                               atol=1e-12)
    with pytest.raises(ValueError, match=r"^method='structured' does not apply: no structured "
                                         r"Jacobian for Conv2d$"):
        ntk_jacobian(ConvNet().double(), torch.randn(2, 2, 8, 12, dtype=torch.float64),
                     method="structured")


def test_structured_jacobian_of_an_mlp_in_parameter_order(gen):
    """ntk_jacobian's columns follow named_parameters order (weights then biases per layer),
    for the full model and a filtered subset, against autograd; J Jᵀ is ntk_matrix."""
    model = mlp()
    x = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    names = [n for n, _ in model.named_parameters()]
    J = explicit_jacobian(model, x, set(names))
    for method in ("structured", "auto", "jacobian"):
        torch.testing.assert_close(ntk_jacobian(model, x, method=method), J, rtol=1e-10,
                                   atol=1e-10)
    sub = {"2.bias", "4.weight"}
    Jsub = explicit_jacobian(model, x, sub)
    torch.testing.assert_close(
        ntk_jacobian(model, x, params=[p for n, p in model.named_parameters() if n in sub]),
        Jsub, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="method='structured' does not apply"):
        ntk_jacobian(nn.Sequential(nn.Linear(5, 3), nn.LayerNorm(3)).double(), x,
                     method="structured")


@pytest.mark.parametrize("rows,block", [(300, 128), (50, 16), (40, 20), (33, 128)])
def test_symmetric_gram_equals_the_full_product(gen, rows, block):
    """Blocks on and above the diagonal, mirrored below: every entry equals G Gᵀ, including the
    last partial block (rows not a multiple of block) and the one-matmul path (rows ≤ 2·block)."""
    G = torch.randn(rows, 7, generator=gen, dtype=torch.float64)
    out = symmetric_gram(G, block=block)
    torch.testing.assert_close(out, G @ G.T, rtol=1e-12, atol=1e-12)


def test_sign_ntk_by_hand():
    """K = ½(J Sᵀ + S Jᵀ), S = J/(|J| + eps), on a (2, 2, 2) Jacobian with hand values."""
    J = torch.tensor([[[1.0, -2.0], [0.5, 0.0]], [[-1.0, 3.0], [2.0, 1.0]]],
                     dtype=torch.float64)  # (n = 2, C = 2, P = 2)
    eps = 0.5
    Jf = J.reshape(4, 2)
    S = Jf / (Jf.abs() + eps)
    M = np.zeros((4, 4))
    for a in range(4):
        for b in range(4):
            M[a, b] = 0.5 * (sum(float(Jf[a, p] * S[b, p]) for p in range(2))
                             + sum(float(S[a, p] * Jf[b, p]) for p in range(2)))
    K = sign_ntk(J, eps=eps)
    assert K.shape == (2, 2, 2, 2)
    # S[0] = (1/1.5, -2/2.5): K[0, 0, 0, 0] = 1/1.5 + 4/2.5
    assert float(K[0, 0, 0, 0]) == pytest.approx(1 / 1.5 + 4 / 2.5, rel=1e-12)
    np.testing.assert_allclose(flatten_ntk(K).numpy(), M, rtol=1e-12)
    Kt = sign_ntk(J, eps=eps, trace_outputs=True)
    np.testing.assert_allclose(Kt.numpy(), [[M[0, 0] + M[1, 1], M[0, 2] + M[1, 3]],
                                            [M[2, 0] + M[3, 1], M[2, 2] + M[3, 3]]], rtol=1e-12)
    # the default eps = 1e-8 makes S the sign: K[i, i, c, c] = ‖J_ic‖₁
    assert float(sign_ntk(J)[1, 1, 0, 0]) == pytest.approx(4.0, rel=1e-7)
    J3 = torch.cat([J, torch.ones(2, 2, 1, dtype=torch.float64)], dim=2)  # P = 3 ≠ C
    assert sign_ntk(J3).shape == (2, 2, 2, 2)
    assert float(sign_ntk(J3, eps=eps)[0, 0, 0, 0]) == pytest.approx(1 / 1.5 + 4 / 2.5 + 1 / 1.5)


def test_ntk_metrics_eigenvalue_fields_and_messages(gen):
    """topk (descending, k of them), λ_min, condition number (inf at λ_min ≤ 0), trace of a
    (n, n, C, C) kernel; alignment with an (n, C) target on an (n, n) kernel uses Y Yᵀ; the
    messages name the kernel."""
    Q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    lam = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    K = Q @ torch.diag(lam) @ Q.T
    m = ntk_metrics(K, k=4)
    assert m["topk"] == pytest.approx([5.0, 4.0, 3.0, 2.0], rel=1e-10)
    assert (m["lambda_max"], m["lambda_min"]) == (pytest.approx(5.0), pytest.approx(0.5))
    assert m["condition_number"] == pytest.approx(10.0, rel=1e-10)
    p = lam / lam.sum()
    assert m["effective_rank"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-10)
    assert "alignment" not in m
    sing = ntk_metrics(torch.diag(torch.tensor([1.0, 0.0, -1e-3], dtype=torch.float64)))
    assert sing["condition_number"] == float("inf")
    assert sing["effective_rank"] == pytest.approx(1.0)
    K4 = torch.randn(3, 3, 2, 2, generator=gen, dtype=torch.float64)
    assert ntk_metrics(K4)["trace"] == pytest.approx(float(torch.einsum("iicc->", K4)))
    Y = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    yy = Y @ Y.T
    ref = float((K * yy).sum() / (torch.linalg.matrix_norm(K) * torch.linalg.matrix_norm(yy)))
    assert ntk_metrics(K, Y)["alignment"] == pytest.approx(ref, rel=1e-12)
    assert math.isnan(ntk_metrics(K, torch.zeros(6))["alignment"])
    with pytest.raises(ValueError, match=r"y of shape \(4,\) does not match gram of size 6"):
        ntk_metrics(K, torch.ones(4), name="gram")
    with pytest.raises(ValueError, match=r"NTK must have shape \(n, n\) or \(n, n, C, C\)"):
        flatten_ntk(torch.zeros(2, 2, 2))


class PyTanh(torch.autograd.Function):
    """tanh whose backward goes through numpy: the batched backward over the C outputs
    (``is_grads_batched``, vmap) cannot run it, so the structured pass takes its per-output
    fallback."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return torch.from_numpy(g.detach().numpy() * (1 - y * y).detach().numpy())


class FallbackMLP(nn.Module):
    def __init__(self, n_out: int = 3):
        super().__init__()
        # the unused layer first: its Δ is None on this path (the batched backward returns
        # zeros instead), and the layers after it must still be summed
        self.unused, self.l1, self.l2 = nn.Linear(4, 2), nn.Linear(4, 6), nn.Linear(6, n_out)

    def forward(self, x):
        self.unused(x)  # no path to f: its Δ is None in the fallback too
        return self.l2(PyTanh.apply(self.l1(x)))


def test_structured_per_output_fallback_equals_the_explicit_kernel(gen):
    model = FallbackMLP().double()
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    with pytest.raises(RuntimeError):  # the premise: no batched backward through PyTanh
        y = model.l2(PyTanh.apply(model.l1(x)))
        E = torch.eye(3, dtype=torch.float64)[:, None, :].expand(3, 5, 3)
        torch.autograd.grad(y, [model.l1.weight], grad_outputs=E, is_grads_batched=True)
    ref = explicit_ntk(model, x)
    torch.testing.assert_close(ntk_matrix(model, x, method="structured"), ref, rtol=1e-10,
                               atol=1e-10)
    torch.testing.assert_close(ntk_jacobian(model, x, method="structured"),
                               explicit_jacobian(model, x), rtol=1e-10, atol=1e-10)


class ReshapedInput(nn.Module):
    """A Linear (or Conv2d) fed a reshaped batch: its first axis is not the sample axis."""

    def __init__(self, conv: bool):
        super().__init__()
        self.conv = conv
        self.layer = nn.Conv2d(1, 2, 2) if conv else nn.Linear(3, 2)

    def forward(self, x):  # x: (n, 2, 3) for Linear, (n, 2, 3, 3) for Conv2d
        n = x.shape[0]
        if self.conv:
            return self.layer(x.reshape(2 * n, 1, 3, 3)).reshape(n, -1)
        return self.layer(x.reshape(2 * n, 3)).reshape(n, -1)


class FlatLoRA(LoRALinear):
    """A LoRA update whose output is not shaped like its input (flattened over positions)."""

    def forward(self, x):
        return super().forward(x).reshape(x.shape[0], -1)


class TwoDimLoRA(nn.Module):
    def __init__(self, gen):
        super().__init__()
        self.lora = LoRALinear(4, 3, 2, 0.5, gen)

    def forward(self, x):
        return self.lora(x)


def _refusal(model, x, params=None):
    with pytest.raises(ValueError) as err:
        ntk_matrix(model, x, params=params, method="structured")
    torch.testing.assert_close(ntk_matrix(model, x, params=params),
                               explicit_ntk(model, x, None if params is None else
                                            {n for n, p in model.named_parameters()
                                             if any(p is q for q in params)}),
                               rtol=1e-10, atol=1e-10)
    return str(err.value)


def test_structured_refusals_name_their_reason_and_auto_falls_back(gen):
    """Every case the structured identity does not cover is refused with its reason, and
    "auto" gives the exact kernel there."""
    pre = "method='structured' does not apply: "
    x = torch.randn(3, 2, 3, generator=gen, dtype=torch.float64)
    assert _refusal(ReshapedInput(False).double(), x) == (
        pre + "structured NTK needs every Linear input of shape (n, features)")
    xc = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    assert _refusal(ReshapedInput(True).double(), xc) == (
        pre + "structured NTK needs every Conv2d input of shape (n, c, h, w)")
    for conv in (nn.Conv2d(2, 2, 3, padding="same"), nn.Conv2d(2, 2, 3, padding=1,
                                                               padding_mode="reflect"),
                 nn.Conv2d(2, 2, 3, groups=2)):
        model = nn.Sequential(conv, nn.Flatten()).double()
        assert _refusal(model, torch.randn(2, 2, 4, 4, generator=gen, dtype=torch.float64)) == (
            pre + "structured NTK needs Conv2d with groups=1 and zero padding given as numbers")
    lin = nn.Linear(4, 4).double()
    assert _refusal(nn.Sequential(lin, nn.Tanh(), lin),
                    torch.randn(3, 4, generator=gen, dtype=torch.float64)) == (
        pre + "Linear is called more than once per forward")
    a, b = nn.Linear(4, 4, bias=False).double(), nn.Linear(4, 4, bias=False).double()
    b.weight = a.weight  # one parameter, two modules
    assert _refusal(nn.Sequential(a, nn.Tanh(), b),
                    torch.randn(3, 4, generator=gen, dtype=torch.float64)) == (
        pre + "a parameter is shared by several modules")
    norm = nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)).double()
    assert _refusal(norm, torch.randn(3, 4, generator=gen, dtype=torch.float64)) == (
        pre + "parameter weight of LayerNorm is not nn.Linear, nn.Conv2d or a LoRA update")
    functional = nn.Linear(4, 3).double()
    holder = nn.Module()
    holder.lin = functional
    holder.forward = lambda x: torch.nn.functional.linear(x, functional.weight, functional.bias)
    assert _refusal(holder, torch.randn(3, 4, generator=gen, dtype=torch.float64)) == (
        pre + "a Linear layer in scope was not called as a module")
    flat = nn.Sequential(FlatLoRA(4, 3, 2, 1.5, gen))
    ps = [flat[0].lora_A, flat[0].lora_B]
    assert _refusal(flat, torch.randn(3, 2, 4, generator=gen, dtype=torch.float64), ps) == (
        pre + "structured NTK needs every LoRA input of shape (n, ..., d_in)")


def test_lora_on_a_two_dimensional_input_is_structured(gen):
    """A LoRA update applied to (n, d_in) (no sequence axis) is covered: T = 1."""
    model = TwoDimLoRA(gen)
    x = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    ps = [model.lora.lora_A, model.lora.lora_B]
    torch.testing.assert_close(ntk_matrix(model, x, params=ps, method="structured"),
                               explicit_ntk(model, x, {"lora.lora_A", "lora.lora_B"}),
                               rtol=1e-10, atol=1e-10)


def test_ntk_topk_options_reach_lanczos(gen):
    """which="SA" gives the bottom of the spectrum; params, max_iter, tol and the default k = 5
    are passed on; a float32 model works (the float64 basis is cast to its dtype and back); a
    NaN input is refused by name."""
    model = mlp()
    x = torch.randn(10, 5, generator=gen, dtype=torch.float64)
    ev = torch.linalg.eigvalsh(flatten_ntk(ntk_matrix(model, x)))
    low = ntk_topk(model, x, k=3, which="SA", tol=1e-10)
    torch.testing.assert_close(low.eigenvalues, ev[:3], rtol=1e-6, atol=1e-8 * float(ev[-1]))
    top = ntk_topk(model, x)
    assert top.eigenvalues.shape == (5,)
    torch.testing.assert_close(top.eigenvalues, ev.flip(0)[:5], rtol=1e-6, atol=0)
    few = ntk_topk(model, x, k=4, max_iter=2, block_size=1)
    full = ntk_topk(model, x, k=4, block_size=1)
    assert few.n_matvecs < full.n_matvecs and not bool(few.converged.all())
    assert bool(full.converged.all())
    loose = ntk_topk(model, x, k=4, tol=1e-1)
    assert loose.n_matvecs < ntk_topk(model, x, k=4, tol=1e-10).n_matvecs
    head = [p for n, p in model.named_parameters() if n.startswith("4.")]
    ev_head = torch.linalg.eigvalsh(flatten_ntk(ntk_matrix(model, x, params=head))).flip(0)
    torch.testing.assert_close(ntk_topk(model, x, k=3, params=head, tol=1e-10).eigenvalues,
                               ev_head[:3], rtol=1e-6, atol=0)
    m32 = mlp().float()
    x32 = x.float()
    ev32 = torch.linalg.eigvalsh(flatten_ntk(ntk_matrix(m32, x32)).double()).flip(0)
    r32 = ntk_topk(m32, x32, k=2, tol=1e-5)
    assert r32.eigenvalues.dtype == torch.float64
    torch.testing.assert_close(r32.eigenvalues, ev32[:2], rtol=1e-4, atol=0)
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^x has non-finite entries \(1 NaN"):
        ntk_topk(model, bad)
    with pytest.raises(ValueError, match=r"^x has non-finite entries \(1 NaN"):
        ntk_jacobian(model, bad)


class ScalarInput(nn.Module):
    """A model of one scalar per sample: x has shape (n,)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(1, 4)
        self.out = nn.Linear(4, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.lin(x.reshape(-1, 1))))


def test_one_dimensional_inputs_and_the_metrics_defaults(gen):
    """x of shape (n,) is a valid batch; ntk_metrics' default k = 5, λ_min = 0 gives an infinite
    condition number, and the alignment is scale-free (a kernel and targets below 1)."""
    model = ScalarInput().double()
    x = torch.randn(6, generator=gen, dtype=torch.float64)
    for method in ("structured", "jacobian"):
        torch.testing.assert_close(ntk_matrix(model, x, method=method), explicit_ntk(model, x),
                                   rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ntk_jacobian(model, x, method=method),
                                   explicit_jacobian(model, x), rtol=1e-10, atol=1e-10)
    K = torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.5, 0.25, 0.125, 0.0], dtype=torch.float64))
    m = ntk_metrics(K)
    assert m["topk"] == [3.0, 2.0, 1.0, 0.5, 0.25]
    assert m["condition_number"] == float("inf") and m["lambda_min"] == 0.0
    y = torch.randn(7, generator=gen, dtype=torch.float64)
    a = ntk_metrics(K, y)["alignment"]
    assert ntk_metrics(K * 1e-3, y * 1e-2)["alignment"] == pytest.approx(a, rel=1e-12)
    K32 = (K + 1e-9 * torch.eye(7, dtype=torch.float64)).float()
    assert ntk_metrics(K32)["trace"] == pytest.approx(float(K32.double().trace()), rel=1e-15)


class ReshapedLoRA(nn.Module):
    """A LoRA update fed (n·T, d): its first axis is not the sample axis."""

    def __init__(self, gen):
        super().__init__()
        self.lora = LoRALinear(4, 3, 2, 1.0, gen)

    def forward(self, x):
        return self.lora(x.reshape(-1, 4)).reshape(x.shape[0], -1)


def test_remaining_paths_messages_and_layouts(gen):
    """"auto" takes the structured path where vmap(jacrev) cannot run (PyTanh's numpy
    backward); bias-only Linear scope (A = 11ᵀ); a Conv2d with c_out ≠ h_out; a LoRA fed a
    reshaped batch is refused; param_filter reaches ntk_jacobian; symmetric_gram of a wide G;
    float32 targets; exact messages with their default names."""
    fb = FallbackMLP().double()
    x = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ntk_matrix(fb, x), explicit_ntk(fb, x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ntk_jacobian(fb, x), explicit_jacobian(fb, x), rtol=1e-10,
                               atol=1e-10)
    model = mlp()
    xm = torch.randn(6, 5, generator=gen, dtype=torch.float64)
    names = {n for n, _ in model.named_parameters() if n.endswith("bias")}
    torch.testing.assert_close(ntk_matrix(model, xm, method="structured", param_filter="bias"),
                               explicit_ntk(model, xm, names), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ntk_jacobian(model, xm, param_filter="bias"),
                               explicit_jacobian(model, xm, names), rtol=1e-10, atol=1e-10)
    conv = nn.Sequential(nn.Conv2d(2, 5, 3), nn.Tanh(), nn.Flatten(), nn.Linear(5 * 4 * 5, 2))
    conv = conv.double()
    xc = torch.randn(3, 2, 6, 7, generator=gen, dtype=torch.float64)  # conv out (5, 4, 5)
    torch.testing.assert_close(ntk_matrix(conv, xc, method="structured"), explicit_ntk(conv, xc),
                               rtol=1e-10, atol=1e-10)
    rl = ReshapedLoRA(gen)
    ps = [rl.lora.lora_A, rl.lora.lora_B]
    assert _refusal(rl, torch.randn(3, 2, 4, generator=gen, dtype=torch.float64), ps) == (
        "method='structured' does not apply: structured NTK needs every LoRA input of shape "
        "(n, ..., d_in)")
    G = torch.randn(10, 300, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(symmetric_gram(G), G @ G.T, rtol=1e-12, atol=1e-12)
    K = explicit_ntk(model, xm)
    Y = torch.randn(6, 3, generator=gen)
    a32 = ntk_metrics(K, Y)["alignment"]
    assert a32 == pytest.approx(ntk_metrics(K, Y.double())["alignment"], rel=1e-14)
    for fn in (ntk_matrix, ntk_jacobian):
        with pytest.raises(ValueError, match=r"^method='fast' is not allowed; allowed values: "
                                             r"\['auto', 'structured', 'jacobian'\]$"):
            fn(model, xm, method="fast")
    with pytest.raises(ValueError, match=r"^ntk must be square, got \(3, 4\)$"):
        ntk_metrics(torch.ones(3, 4, dtype=torch.float64))
    bad = torch.eye(3, dtype=torch.float64)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^ntk has non-finite entries"):
        ntk_metrics(bad)
    with pytest.raises(ValueError, match=r"^y has non-finite entries"):
        ntk_metrics(torch.eye(3, dtype=torch.float64), torch.tensor([1.0, float("nan"), 0.0]))


def test_fallback_with_one_output_and_the_operator_name_in_lanczos_messages(gen):
    """The per-output fallback with C = 1 (one backward); a NaN parameter makes the NTK operator
    return NaN, which lanczos refuses under the operator's name "ntk"."""
    fb = FallbackMLP(n_out=1).double()
    x = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ntk_matrix(fb, x, method="structured"), explicit_ntk(fb, x),
                               rtol=1e-10, atol=1e-10)
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^ntk matvec output has non-finite entries"):
        ntk_topk(model, torch.randn(4, 5, generator=gen, dtype=torch.float64), k=2)
