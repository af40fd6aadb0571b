import re

import pytest
import torch
from torch import nn

from callbacks.spectra import dense_hessian, hessian_eigs, hessian_matvec, hessian_trace


def tiny_problem(gen):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    return model, nn.functional.cross_entropy, (x, y)


def explicit_hessian(model, loss_fn, batch, names=None):
    pattern = None if names is None else "^(" + "|".join(re.escape(n) for n in names) + ")$"
    return dense_hessian(model, loss_fn, batch, params=pattern)


def test_matvec_matches_explicit_hessian(gen):
    model, loss_fn, batch = tiny_problem(gen)
    H = explicit_hessian(model, loss_fn, batch)
    mv, dim = hessian_matvec(model, loss_fn, batch)
    assert dim == H.shape[0] == sum(p.numel() for p in model.parameters())
    for _ in range(3):
        v = torch.randn(dim, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(mv(v), H @ v, rtol=1e-10, atol=1e-12)
    # float32 vectors come back as float32
    assert mv(torch.ones(dim)).dtype == torch.float32


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_hessian_eigs_match_dense(gen, which):
    model, loss_fn, batch = tiny_problem(gen)
    ev = torch.linalg.eigvalsh(explicit_hessian(model, loss_fn, batch))
    ref = ev.flip(0)[:3] if which == "LA" else ev[:3]
    res = hessian_eigs(model, loss_fn, batch, k=3, which=which, tol=1e-8)
    assert res.converged.all()
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-6, atol=1e-10)


def test_param_subset(gen):
    model, loss_fn, batch = tiny_problem(gen)
    H = explicit_hessian(model, loss_fn, batch, names={"2.weight", "2.bias"})
    mv, dim = hessian_matvec(model, loss_fn, batch, params=r"^2\.")
    assert dim == 6 * 3 + 3
    v = torch.randn(dim, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(mv(v), H @ v, rtol=1e-10, atol=1e-12)
    mv2, dim2 = hessian_matvec(model, loss_fn, batch, params=[model[2].weight])
    assert dim2 == 18
    with pytest.raises(ValueError, match="no parameters selected"):
        hessian_matvec(model, loss_fn, batch, params="lora")


def test_gradient_graph_built_once(gen):
    model, loss_fn, batch = tiny_problem(gen)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    res = hessian_eigs(model, loss_fn, batch, k=2)
    assert len(calls) == 1 and res.n_matvecs > 2


def test_hessian_trace(gen):
    model, loss_fn, batch = tiny_problem(gen)
    true = torch.trace(explicit_hessian(model, loss_fn, batch)).item()
    dim = sum(p.numel() for p in model.parameters())
    exact = hessian_trace(model, loss_fn, batch, n_matvecs=3 * dim)  # sketch spans everything
    assert exact.trace == pytest.approx(true, rel=1e-8)
    ests = [hessian_trace(model, loss_fn, batch, n_matvecs=12, seed=s).trace for s in range(20)]
    assert sum(ests) / 20 == pytest.approx(true, rel=0.15)


def test_nan_loss_rejected(gen):
    model, loss_fn, (x, y) = tiny_problem(gen)
    x = x.clone()
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="loss"):
        hessian_matvec(model, loss_fn, (x, y))


def test_dense_hessian_of_least_squares_is_two_xtx_over_n(gen):
    model = nn.Linear(3, 1, bias=False).double()
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 1, generator=gen, dtype=torch.float64)
    H = dense_hessian(model, nn.functional.mse_loss, (x, y))
    assert torch.allclose(H, 2 * x.T @ x / 20, atol=1e-12)  # mean((Wx − y)²) is quadratic in W


# ----------------------------------------------------------------------------- added for the
# mutation run of 2026-12-02 (each kills survivors of scripts/mutation.py hessian)
def test_hessian_trace_of_a_parameter_block_and_its_defaults(gen):
    """With 3·dim products the Hutch++ sketch spans the block: the trace of the chosen block
    (params, with param_filter on top) is exact against the explicit Hessian's diagonal; the
    defaults are 30 products and seed 0; a one-parameter model works; a NaN Hessian product
    (√|ŷ| at ŷ = 0: finite loss, NaN curvature) is refused naming the Hessian."""
    model, loss_fn, batch = tiny_problem(gen)
    H2 = explicit_hessian(model, loss_fn, batch, names={"2.weight", "2.bias"})
    Hw = H2[:18, :18]  # 2.weight comes first
    est = hessian_trace(model, loss_fn, batch, n_matvecs=3 * 21, params=r"^2\.")
    assert est.trace == pytest.approx(float(H2.trace()), rel=1e-9)
    only_w = hessian_trace(model, loss_fn, batch, n_matvecs=3 * 18, params=r"^2\.",
                           param_filter="weight")
    assert only_w.trace == pytest.approx(float(Hw.trace()), rel=1e-9)
    default = hessian_trace(model, loss_fn, batch)
    explicit = hessian_trace(model, loss_fn, batch, n_matvecs=30, seed=0)
    assert default.n_matvecs == 30 and default.trace == explicit.trace
    lin = nn.Linear(3, 1, bias=False).double()
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(8, 1, generator=gen, dtype=torch.float64)
    one = hessian_trace(lin, nn.functional.mse_loss, (x, y), n_matvecs=9)
    assert one.trace == pytest.approx(float((2 * x.T @ x / 8).trace()), rel=1e-9)
    with torch.no_grad():
        lin.weight.zero_()
    with pytest.raises(ValueError, match=r"^hessian matvec output has non-finite"):
        hessian_trace(lin, lambda out, _: out.abs().sqrt().mean(), (x, y), n_matvecs=3)
    with pytest.raises(ValueError, match=r"^hessian matvec output has non-finite"):
        hessian_eigs(lin, lambda out, _: out.abs().sqrt().mean(), (x, y), k=1)


def test_hessian_eigs_of_a_block_with_every_option_and_the_matvec_checks(gen):
    """Every argument of hessian_eigs reaches Lanczos: the 2 smallest eigenvalues of the
    block chosen by params and param_filter (against the explicit block), 2 vectors of that
    block's size (H y = λ y), blocks of 2, the gap bound, a 12-vector budget; defaults: k = 5,
    seed 0, no vectors, single vectors (float32 basis for float32 parameters). hessian_matvec:
    a parameter the loss ignores gets a zero row, a loss that does not depend on θ
    quadratically gives zero products, and bad losses or vectors are refused by name."""
    model, loss_fn, batch = tiny_problem(gen)
    Hw = dense_hessian(model, loss_fn, batch, params=r"^2\.", param_filter="weight")
    assert Hw.shape == (18, 18)
    ev = torch.linalg.eigvalsh(Hw)
    res = hessian_eigs(model, loss_fn, batch, k=2, which="SA", params=r"^2\.",
                       param_filter="weight", tol=1e-10, max_iter=18, seed=3,
                       return_vectors=True, block_size=2, bound="gap")
    torch.testing.assert_close(res.eigenvalues, ev[:2], rtol=1e-8, atol=1e-12)
    assert res.eigenvectors.shape == (18, 2) and res.n_matvecs <= 18
    torch.testing.assert_close(Hw @ res.eigenvectors, res.eigenvectors * res.eigenvalues,
                               rtol=1e-6, atol=1e-10)
    default = hessian_eigs(model, loss_fn, batch)
    assert default.eigenvalues.shape == (5,) and default.eigenvectors is None
    same = hessian_eigs(model, loss_fn, batch, k=5, seed=0, block_size=1)
    assert torch.equal(default.eigenvalues, same.eigenvalues)
    assert default.n_matvecs == same.n_matvecs
    short = hessian_eigs(model, loss_fn, batch, k=1, max_iter=4)
    assert short.n_matvecs == 4 and not bool(short.converged.all())
    m32 = nn.Linear(3, 2).float()
    x32, y32 = torch.randn(6, 3, generator=gen), torch.randn(6, 2, generator=gen)
    h32 = torch.linalg.eigvalsh(dense_hessian(m32, nn.functional.mse_loss, (x32, y32)).double())
    got = hessian_eigs(m32, nn.functional.mse_loss, (x32, y32), k=1, tol=1e-5)
    assert float(got.eigenvalues[0]) == pytest.approx(float(h32[-1]), rel=1e-4)
    # an unused parameter (no gradient) and a linear loss (no second derivative)
    two = nn.ModuleDict({"used": nn.Linear(2, 1), "unused": nn.Linear(2, 1)}).double()
    xs, ys = torch.randn(5, 2, generator=gen, dtype=torch.float64), torch.zeros(5, 1)
    mv, dim = hessian_matvec(two["used"], nn.functional.mse_loss, (xs, ys.double()),
                             params=list(two["used"].parameters()))
    assert dim == 3
    only_used = lambda out, y: ((out - y) ** 2).mean()  # noqa: E731
    full = nn.Sequential()
    full.add_module("a", two["used"])
    full.register_parameter("spare", nn.Parameter(torch.ones(2, dtype=torch.float64)))
    mv3, dim3 = hessian_matvec(full, only_used, (xs, ys.double()))
    out = mv3(torch.ones(dim3, dtype=torch.float64))
    assert dim3 == 5 and out[:2].tolist() == [0.0, 0.0]  # "spare" comes first, unused
    assert torch.allclose(out[2:], mv(torch.ones(3, dtype=torch.float64)))
    linear = lambda out, y: out.sum()  # noqa: E731
    mv4, dim4 = hessian_matvec(two["used"], linear, (xs, ys.double()))
    zero = mv4(torch.ones(dim4, dtype=torch.float32))
    assert zero.dtype == torch.float32 and zero.tolist() == [0.0] * 3
    assert mv4(torch.ones(dim4, dtype=torch.float64)).dtype == torch.float64
    assert hessian_matvec(model, loss_fn, batch, params=r"^2\.", param_filter="weight")[1] == 18
    with pytest.raises(ValueError, match=r"^loss_fn must return a scalar, got shape \(5, 1\)$"):
        hessian_matvec(two["used"], lambda out, y: out, (xs, ys.double()))
    with pytest.raises(ValueError, match=r"^loss has non-finite"):
        hessian_matvec(two["used"], lambda out, y: out.sum() * float("nan"), (xs, ys.double()))
    with pytest.raises(ValueError, match=r"^hessian matvec: vector has 2 entries, expected 3$"):
        mv(torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^hessian matvec: vector on meta, parameters on cpu$"):
        mv(torch.empty(3, dtype=torch.float64, device="meta"))


def test_hessian_eigs_passes_tol_and_bound_to_lanczos():
    """tol and bound reach the Lanczos stopping rule: on a 291-parameter MLP the top-2 Hessian
    eigenvalues take 7 products at tol 1e-1, 16 at 1e-3 and 26 at 1e-8 (residual bound), and
    the gap bound stops earlier at each tol (6, 14, 20): the counts are what `lanczos` itself
    gives on the same Hessian-vector product."""
    from callbacks.spectra import hessian_matvec, lanczos

    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.Tanh(), nn.Linear(24, 3)).double()
    x = torch.randn(64, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=gen)
    batch, loss = (x, y), nn.functional.cross_entropy
    mv, dim = hessian_matvec(model, loss, batch)
    counts = {}
    for tol in (1e-1, 1e-3, 1e-8):
        for bound in ("residual", "gap"):
            got = hessian_eigs(model, loss, batch, k=2, tol=tol, bound=bound)
            ref = lanczos(mv, dim, k=2, tol=tol, bound=bound, seed=0, dtype=torch.float64)
            assert got.n_matvecs == ref.n_matvecs
            counts[tol, bound] = got.n_matvecs
    assert counts[1e-1, "residual"] < counts[1e-3, "residual"] < counts[1e-8, "residual"]
    assert all(counts[t, "gap"] < counts[t, "residual"] for t in (1e-1, 1e-3, 1e-8))


def test_hessian_eigs_reorthogonalises_partially_by_default():
    """hessian_eigs' default reorth="partial" orthogonalises only some vectors against the whole
    basis and gives the values of reorth="full" (a 2-layer tanh MLP, 1,114 parameters, tol 1e-8:
    a few dozen products)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 48), nn.Tanh(), nn.Linear(48, 2)).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 20, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (200,), generator=g)
    loss = nn.functional.cross_entropy
    part = hessian_eigs(model, loss, (x, y), k=3, tol=1e-8)
    full = hessian_eigs(model, loss, (x, y), k=3, tol=1e-8, reorth="full")
    assert full.n_reorth == full.n_matvecs
    assert 0 < part.n_reorth < part.n_matvecs
    torch.testing.assert_close(part.eigenvalues, full.eigenvalues, rtol=1e-9, atol=0)
