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


@pytest.mark.parametrize("d", [12, 150])  # 150 > 2·(150 // 4): the block-triangle product
def test_batched_equals_all_at_once_at_any_width(gen, d):
    X = data(gen, n=400, d=d)
    acc = StreamingCovariance(d)
    for chunk in torch.split(X, 97):
        acc.update(chunk)
    C = acc.covariance()
    torch.testing.assert_close(C, torch.cov(X.T), rtol=1e-12, atol=1e-12 * float(C.abs().max()))


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


@pytest.mark.parametrize("bad", [[float("inf")], [float("-inf")], [float("inf"), float("-inf")]])
def test_update_refuses_infinite_entries_in_any_row(bad):
    # the column means are the finiteness check: +inf, -inf, and both in one column (mean NaN)
    x = torch.ones(6, 3, dtype=torch.float64)
    x[2:2 + len(bad), 1] = torch.tensor(bad, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"features has non-finite entries \(0 NaN, "
                                         rf"{len(bad)} Inf\)"):
        StreamingCovariance(3, name="features").update(x)


def test_update_leaves_a_float64_batch_unchanged(gen):
    # the batch is centred in place in its own float64 copy, never in the caller's tensor
    x = torch.randn(50, 4, generator=gen, dtype=torch.float64) + 3.0
    before = x.clone()
    acc = StreamingCovariance(4).update(x).update(x[:20])
    assert torch.equal(x, before)
    torch.testing.assert_close(acc.covariance(), torch.cov(torch.cat([x, x[:20]]).T),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("out_dim", "rank", "rank_a"),
                         [(40, 12, 12), (40, 7, 12), (9, 12, 9), (40, 12, 5), (40, 7, 5)])
def test_mapped_covariance_eigvals_match_the_output_covariance(gen, out_dim, rank, rank_a):
    # inputs of dimension 12 and the given rank (a LayerNorm output is rank-deficient too); a map
    # of rank < 12 has a singular AᵀA (no Cholesky: the eigen-decomposition path)
    X = torch.randn(300, rank, generator=gen, dtype=torch.float64) @ torch.randn(
        rank, 12, generator=gen, dtype=torch.float64)
    A = torch.randn(out_dim, rank_a, generator=gen, dtype=torch.float64) @ torch.randn(
        rank_a, 12, generator=gen, dtype=torch.float64) if rank_a < 12 else torch.randn(
        out_dim, 12, generator=gen, dtype=torch.float64)
    b = torch.randn(out_dim, generator=gen, dtype=torch.float64)
    C = torch.cov(X.T)
    got = mapped_covariance_eigvals(C, A)
    ref = eigvals_sym(torch.cov((X @ A.T + b).T))  # the direct, out-dimensional computation
    assert got.shape == (out_dim,)
    assert torch.all(got[1:] >= got[:-1])
    top = float(ref[-1])
    torch.testing.assert_close(got, ref.clamp(min=0.0), rtol=1e-9, atol=1e-10 * top)
    assert int((got > 1e-10 * top).sum()) == min(rank, out_dim, rank_a)  # generic rank of A C Aᵀ
    if out_dim > 12:  # which path ran: Cholesky of AᵀA exactly when A has full column rank
        assert (int(torch.linalg.cholesky_ex(A.T @ A).info) == 0) == (rank_a == 12)


def test_mapped_covariance_eigvals_bad_input():
    with pytest.raises(ValueError, match="map"):
        mapped_covariance_eigvals(torch.eye(3), torch.ones(4, 5))
    with pytest.raises(ValueError, match="covariance"):
        mapped_covariance_eigvals(torch.full((3, 3), float("nan")), torch.ones(4, 3))


# ----------------------------------------------------------------------------- added for the
# mutation run of 2026-12-02 (each kills survivors of scripts/mutation.py covariance)
def test_streaming_edge_cases_dtypes_and_messages():
    """One row (a 1-D sample) counts; n = 1 with correction 1 is refused, n = 2 gives the
    sample variance; the empty accumulator, its state and sums are float64; a float32 batch
    with mean 1e4 and spread 0.01 is reduced in float64 (float32 would lose ~1e-3 relative);
    errors name the accumulator ("features" by default) and the checks."""
    import numpy as np

    acc = StreamingCovariance(3)
    assert acc.state()["mean"].dtype == torch.float64 and acc.state()["m2"].dtype == torch.float64
    assert all(t.dtype == torch.float64 for t in acc.sums())
    acc.update(torch.tensor([1.0, 2.0, 3.0]))
    assert acc.n == 1 and acc.mean.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"^features: need more than 1 samples, have 1$"):
        acc.covariance()
    acc.update(torch.tensor([[3.0, 2.0, 1.0]]))
    assert acc.n == 2
    torch.testing.assert_close(acc.covariance().diagonal(),
                               torch.tensor([2.0, 0.0, 2.0], dtype=torch.float64))
    x32 = (1e4 + 0.01 * torch.randn(500, 2, generator=torch.Generator().manual_seed(0))).float()
    got = StreamingCovariance(2).update(x32).covariance()
    ref = np.cov(x32.double().numpy(), rowvar=False)
    assert np.allclose(got.numpy(), ref, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match=r"^dim must be >= 1, got 0$"):
        StreamingCovariance(0)
    with pytest.raises(ValueError, match=r"^can only merge StreamingCovariance objects of equal"):
        StreamingCovariance(2).merge(StreamingCovariance(3))
    huge = StreamingCovariance(1).update(torch.tensor([[1e200], [-1e200]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"^features covariance has non-finite"):
        huge.eigenvalues()


def test_mapped_covariance_checks_dtypes_and_messages():
    """float32 inputs are computed in float64 (agreeing with the float64 result to 1e-12, both
    branches); non-finite inputs, a non-square or 1-D covariance and an overflowing product are
    refused by name."""
    c32 = torch.tensor([[1 / 3, 0.1], [0.1, 1 / 7]], dtype=torch.float32)
    for a32 in (torch.tensor([[1.0, 1 / 3]], dtype=torch.float32),
                torch.tensor([[1.0, 1 / 3], [0.7, 1 / 9], [1 / 11, 2.0]], dtype=torch.float32)):
        got = mapped_covariance_eigvals(c32, a32)
        ref = mapped_covariance_eigvals(c32.double(), a32.double())
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"^covariance has non-finite"):
        mapped_covariance_eigvals(torch.full((2, 2), float("nan")), torch.eye(2))
    with pytest.raises(ValueError, match=r"^linear map has non-finite"):
        mapped_covariance_eigvals(torch.eye(2), torch.full((2, 2), float("nan")))
    for cov, a in ((torch.ones(3), torch.ones(1, 3)), (torch.ones(3, 2), torch.ones(1, 3))):
        with pytest.raises(ValueError, match=r"^need a square covariance \(in, in\)"):
            mapped_covariance_eigvals(cov, a)
    big = torch.tensor([[1e200]], dtype=torch.float64)
    for a in (big, torch.tensor([[1e200], [1.0]], dtype=torch.float64)):
        with pytest.raises(ValueError, match=r"^mapped covariance has non-finite"):
            mapped_covariance_eigvals(big, a)


def test_mapped_eigvals_when_the_map_ignores_its_first_input(gen):
    """A zero first column of A makes AᵀA fail Cholesky at its first pivot (info = 1): the
    eigen-decomposition path must give the output covariance's spectrum."""
    X = torch.randn(200, 6, generator=gen, dtype=torch.float64)
    A = torch.randn(15, 6, generator=gen, dtype=torch.float64)
    A[:, 0] = 0.0
    assert int(torch.linalg.cholesky_ex(A.T @ A).info) == 1
    got = mapped_covariance_eigvals(torch.cov(X.T), A)
    ref = eigvals_sym(torch.cov((X @ A.T).T)).clamp(min=0.0)
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10 * float(ref[-1]))


def test_an_empty_accumulator_has_a_square_scatter():
    state = StreamingCovariance(4).state()
    assert state["m2"].shape == (4, 4) and state["mean"].shape == (4,)
    assert StreamingCovariance.from_state(state).merge(
        StreamingCovariance(4).update(torch.eye(4, dtype=torch.float64))).m2.shape == (4, 4)
