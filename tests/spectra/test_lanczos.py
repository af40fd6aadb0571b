import pytest
import torch

from callbacks.spectra import lanczos

from .helpers import sym_with_spectrum


def spectrum(gen) -> torch.Tensor:
    bulk = torch.rand(290, generator=gen, dtype=torch.float64) * 4 - 2
    top = torch.tensor([10.0, 9.0, 8.0, 7.5, 7.0], dtype=torch.float64)
    bottom = torch.tensor([-9.0, -8.0, -7.0, -6.5, -6.0], dtype=torch.float64)
    return torch.cat([bulk, top, bottom])


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_topk_matches_eigvalsh(gen, which):
    A = sym_with_spectrum(spectrum(gen), gen)
    ref = torch.linalg.eigvalsh(A)
    ref = ref.flip(0)[:5] if which == "LA" else ref[:5]
    res = lanczos(lambda v: A @ v, A.shape[0], k=5, which=which, tol=1e-8, seed=1)
    assert res.converged.all()
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-8, atol=0)
    assert res.n_matvecs < A.shape[0]  # far fewer products than the dimension


def test_ordering_and_vectors(gen):
    A = sym_with_spectrum(spectrum(gen), gen)
    res = lanczos(lambda v: A @ v, 300, k=4, which="LA", return_vectors=True, seed=2)
    ev = res.eigenvalues
    assert torch.all(ev[:-1] >= ev[1:])
    V = res.eigenvectors
    assert V.shape == (300, 4)
    torch.testing.assert_close(A @ V, V * ev, rtol=0, atol=1e-5)
    lm = lanczos(lambda v: A @ v, 300, k=2, which="LM", seed=2)
    torch.testing.assert_close(lm.eigenvalues, torch.tensor([10.0, -9.0], dtype=torch.float64))


def test_repeated_eigenvalues_found_with_multiplicity(gen):
    d = torch.cat(
        [
            torch.full((3,), 5.0, dtype=torch.float64),
            torch.rand(100, generator=gen, dtype=torch.float64),
        ]
    )
    A = torch.diag(d)
    e1 = torch.zeros(103, dtype=torch.float64)
    e1[0] = 1.0  # starts inside an invariant subspace: must restart to find the others
    res = lanczos(lambda v: A @ v, 103, k=4, v0=e1, seed=0)
    assert res.converged.all()
    torch.testing.assert_close(res.eigenvalues[:3], torch.full((3,), 5.0, dtype=torch.float64))
    assert res.eigenvalues[3] == pytest.approx(float(torch.sort(d).values[-4]), rel=1e-8)


def test_unconverged_is_flagged(gen):
    d = torch.linspace(0, 1, 400, dtype=torch.float64)  # no gaps: slow convergence
    A = sym_with_spectrum(d, gen)
    res = lanczos(lambda v: A @ v, 400, k=5, max_iter=12, tol=1e-10, seed=0)
    assert res.n_matvecs == 12
    assert not res.converged.all()


def test_small_dim_is_exact(gen):
    d = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64)
    A = sym_with_spectrum(d, gen)
    res = lanczos(lambda v: A @ v, 3, k=3)
    torch.testing.assert_close(res.eigenvalues, torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
    assert res.converged.all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="allowed values"):
        lanczos(lambda v: v, 10, k=2, which="largest")
    with pytest.raises(ValueError):
        lanczos(lambda v: v, 10, k=11)
    with pytest.raises(ValueError, match="operator"):
        lanczos(lambda v: v * float("nan"), 10, k=2)


def test_block_lanczos_finds_exact_multiplicity(gen):
    d = torch.cat(
        [
            torch.full((3,), 5.0, dtype=torch.float64),
            torch.tensor([4.0], dtype=torch.float64),
            torch.rand(150, generator=gen, dtype=torch.float64),
        ]
    )
    A = sym_with_spectrum(d, gen)
    res = lanczos(lambda v: A @ v, d.numel(), k=4, block_size=3, tol=1e-8, seed=0)
    assert res.converged.all()
    expected = torch.tensor([5.0, 5.0, 5.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(res.eigenvalues, expected, rtol=1e-8, atol=0)
    sa = lanczos(lambda v: A @ v, d.numel(), k=3, which="SA", block_size=2, tol=1e-8, seed=0)
    torch.testing.assert_close(sa.eigenvalues, torch.sort(d).values[:3], rtol=1e-6, atol=1e-9)


def test_gap_bound_stops_earlier_and_keeps_the_eigenvalue_tolerance(gen):
    A = sym_with_spectrum(spectrum(gen), gen)
    ref = torch.linalg.eigvalsh(A).flip(0)[:5]
    strict = lanczos(lambda v: A @ v, 300, k=5, which="LA", tol=1e-4, seed=3)
    gap = lanczos(lambda v: A @ v, 300, k=5, which="LA", tol=1e-4, seed=3, bound="gap")
    assert strict.converged.all() and gap.converged.all()
    assert gap.n_matvecs < strict.n_matvecs
    assert ((gap.eigenvalues - ref).abs() / ref).max() <= 1e-4
    with pytest.raises(ValueError, match="bound='vectors' is not allowed"):
        lanczos(lambda v: A @ v, 300, k=5, bound="vectors")
