import pytest
import torch
from torch import nn
from torch.func import functional_call

from callbacks.spectra import flatten_ntk, ntk_matrix, ntk_metrics, ntk_topk


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


def explicit_ntk(model, x, names=None):
    """(n, n, C, C) kernel from the full Jacobian of the flat-parameter function."""
    named = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def f(theta):
        d, i = {}, 0
        for n, p in named:
            d[n] = theta[i : i + p.numel()].view_as(p)
            i += p.numel()
        return functional_call(model, d, (x,)).reshape(x.shape[0], -1)

    J = torch.autograd.functional.jacobian(f, flat)  # (n, C, P)
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
