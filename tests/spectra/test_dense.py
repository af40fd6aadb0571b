import pytest
import torch

from callbacks.spectra import eigvals_general, eigvals_sym, gram_eigvals, singular_values

from .helpers import random_orthogonal, sym_with_spectrum


def test_eigvals_sym_diagonal_exact():
    d = torch.tensor([3.0, -1.0, 2.0, 0.5, 10.0])
    ev = eigvals_sym(torch.diag(d))
    assert ev.dtype == torch.float64
    assert torch.equal(ev, torch.sort(d.double()).values)


def test_eigvals_sym_rotated_diagonal(gen):
    d = torch.linspace(-2.0, 7.0, 60, dtype=torch.float64) ** 3
    A = sym_with_spectrum(d, gen)
    ev = eigvals_sym(A)
    torch.testing.assert_close(ev, torch.sort(d).values, rtol=0, atol=1e-11)


def test_eigvals_sym_batched_and_float32(gen):
    ds = [torch.rand(20, generator=gen, dtype=torch.float64) for _ in range(3)]
    A = torch.stack([sym_with_spectrum(d, gen) for d in ds])
    ev = eigvals_sym(A)
    assert ev.shape == (3, 20)
    for i, d in enumerate(ds):
        torch.testing.assert_close(ev[i], torch.sort(d).values, rtol=0, atol=1e-12)
    ev32 = eigvals_sym(A.float(), precision="float32")
    assert ev32.dtype == torch.float32
    # auto promotes float32 input to float64
    assert eigvals_sym(A.float()).dtype == torch.float64


def test_auto_precision_keeps_small_end():
    # eigenvalues spanning 12 orders of magnitude: float32 loses the small end, auto does not
    d = torch.logspace(-12, 0, 30, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    A = sym_with_spectrum(d, g)
    ev = eigvals_sym(A)
    assert abs(ev[0].item() - 1e-12) < 1e-14
    ev32 = eigvals_sym(A, precision="float32").double()
    assert abs(ev32[0].item() - 1e-12) > 1e-9  # float32 cannot resolve it


def test_singular_values_known(gen):
    s = torch.tensor([9.0, 4.0, 2.0, 1e-3], dtype=torch.float64)
    U = random_orthogonal(7, gen)[:, :4]
    V = random_orthogonal(4, gen)
    W = (U * s) @ V.T
    sv = singular_values(W)
    torch.testing.assert_close(sv, s, rtol=1e-12, atol=1e-13)
    assert singular_values(torch.stack([W, 2 * W])).shape == (2, 4)


def test_eigvals_general_rotation_and_batch():
    t = 0.3
    R = torch.tensor(
        [
            [torch.cos(torch.tensor(t)), -torch.sin(torch.tensor(t))],
            [torch.sin(torch.tensor(t)), torch.cos(torch.tensor(t))],
        ]
    )
    ev = eigvals_general(R)
    assert ev.dtype == torch.complex128
    angles = torch.sort(ev.angle()).values
    torch.testing.assert_close(
        angles, torch.tensor([-t, t], dtype=torch.float64), rtol=0, atol=1e-7
    )
    torch.testing.assert_close(ev.abs(), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-7)
    assert eigvals_general(torch.stack([R, R, R])).shape == (3, 2)


@pytest.mark.parametrize("fn", [eigvals_sym, eigvals_general])
def test_non_square_rejected(fn):
    with pytest.raises(ValueError, match="square"):
        fn(torch.ones(3, 4))


def test_eigvals_sym_uses_the_symmetric_part(gen):
    """A non-symmetric input: the eigenvalues of (A + Aᵀ)/2, batched or not."""
    A = torch.randn(3, 6, 6, generator=gen, dtype=torch.float64)
    ref = torch.linalg.eigvalsh(0.5 * (A + A.transpose(-1, -2)))
    torch.testing.assert_close(eigvals_sym(A), ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(eigvals_sym(A[0]), ref[0], rtol=1e-12, atol=1e-12)


def test_precision_policy_of_singular_values_and_gram_eigvals(gen):
    W = torch.randn(7, 4, generator=gen)  # float32
    s = singular_values(W)
    assert s.dtype == torch.float64  # auto: float64
    torch.testing.assert_close(s, torch.linalg.svdvals(W.double()), rtol=1e-12, atol=1e-12)
    assert singular_values(W, precision="float32").dtype == torch.float32
    ev = gram_eigvals(W)
    torch.testing.assert_close(ev, s.square().flip(0), rtol=1e-12, atol=1e-12)  # ascending
    torch.testing.assert_close(gram_eigvals(W, normalize=7.0), ev / 7.0, rtol=1e-12, atol=0)
    assert gram_eigvals(W, precision="float32").dtype == torch.float32


@pytest.mark.parametrize("fn", [eigvals_sym, eigvals_general, singular_values, gram_eigvals])
def test_dense_errors_name_the_matrix(fn):
    bad = torch.eye(3)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"^matrix has non-finite"):
        fn(bad)
    with pytest.raises(ValueError, match=r"^W1 has non-finite"):
        fn(bad, name="W1")
