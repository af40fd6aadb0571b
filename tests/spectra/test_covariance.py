import pytest
import torch

from callbacks.spectra import StreamingCovariance, eigvals_sym, mapped_covariance_eigvals


def data(gen, n=500, d=12, shift=0.0):
    L = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) @ L + shift


def test_batched_equals_all_at_once(gen):
    X = data(gen)
    acc = StreamingCovariance(12)
    for chunk in torch.split(X, 37):
        acc.update(chunk)
    ref = torch.cov(X.T)
    torch.testing.assert_close(acc.covariance(), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(acc.eigenvalues(), eigvals_sym(ref), rtol=1e-10, atol=1e-10)
    assert acc.n == 500


def test_merge_state_and_sums(gen):
    X = data(gen)
    a, b = StreamingCovariance(12), StreamingCovariance(12)
    a.update(X[:123])
    b.update(X[123:])
    ref = torch.cov(X.T)
    merged = StreamingCovariance.from_state(a.state()).merge(b)
    torch.testing.assert_close(merged.covariance(), ref, rtol=1e-12, atol=1e-12)
    # all_reduce-style: add the plain sums of two 'ranks'
    sa, sb = a.sums(), b.sums()
    summed = StreamingCovariance.from_sums(*(x + y for x, y in zip(sa, sb, strict=True)))
    torch.testing.assert_close(summed.covariance(), ref, rtol=1e-9, atol=1e-9)
    assert a.n == 123  # merge did not touch its argument's source


def test_uncentred_and_large_mean(gen):
    X = data(gen, n=300, d=5)
    acc = StreamingCovariance(5, center=False).update(X[:100]).update(X[100:])
    torch.testing.assert_close(acc.covariance(), X.T @ X / 300, rtol=1e-12, atol=1e-12)
    big = data(gen, n=400, d=5, shift=1e6)
    acc2 = StreamingCovariance(5)
    for chunk in torch.split(big, 50):
        acc2.update(chunk)
    torch.testing.assert_close(acc2.covariance(), torch.cov((big - 1e6).T), rtol=1e-6, atol=1e-6)


def test_errors():
    acc = StreamingCovariance(3, name="features")
    with pytest.raises(ValueError, match="no samples"):
        acc.covariance()
    with pytest.raises(ValueError, match="last dim 3"):
        acc.update(torch.ones(4, 2))
    with pytest.raises(ValueError, match="features"):
        acc.update(torch.tensor([[1.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="merge"):
        acc.merge(StreamingCovariance(4))


@pytest.mark.parametrize(("out_dim", "rank"), [(40, 12), (40, 7), (9, 12)])
def test_mapped_covariance_eigvals_match_the_output_covariance(gen, out_dim, rank):
    # inputs of dimension 12 and the given rank (a LayerNorm output is rank-deficient too)
    X = torch.randn(300, rank, generator=gen, dtype=torch.float64) @ torch.randn(
        rank, 12, generator=gen, dtype=torch.float64)
    A = torch.randn(out_dim, 12, generator=gen, dtype=torch.float64)
    b = torch.randn(out_dim, generator=gen, dtype=torch.float64)
    C = torch.cov(X.T)
    got = mapped_covariance_eigvals(C, A)
    ref = eigvals_sym(torch.cov((X @ A.T + b).T))  # the direct, out-dimensional computation
    assert got.shape == (out_dim,)
    assert torch.all(got[1:] >= got[:-1])
    top = float(ref[-1])
    torch.testing.assert_close(got, ref.clamp(min=0.0), rtol=1e-9, atol=1e-10 * top)
    assert int((got > 1e-10 * top).sum()) == min(rank, out_dim)


def test_mapped_covariance_eigvals_bad_input():
    with pytest.raises(ValueError, match="map"):
        mapped_covariance_eigvals(torch.eye(3), torch.ones(4, 5))
    with pytest.raises(ValueError, match="covariance"):
        mapped_covariance_eigvals(torch.full((3, 3), float("nan")), torch.ones(4, 3))
