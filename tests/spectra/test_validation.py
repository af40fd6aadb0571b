import pytest
import torch
from torch import nn

from callbacks.spectra import (
    alpha_req,
    effective_rank,
    eigvals_general,
    eigvals_sym,
    esd_metrics,
    hessian_eigs,
    ntk_matrix,
    ntk_metrics,
    participation_ratio,
    powerlaw_fit,
    singular_values,
    spectrum_summary,
    weight_esd,
    weight_metrics,
)


def nan_matrix(n=4):
    A = torch.eye(n)
    A[1, 2] = float("nan")
    return A


@pytest.mark.parametrize(
    "fn",
    [
        eigvals_sym,
        singular_values,
        eigvals_general,
        weight_esd,
        weight_metrics,
        lambda A, name: ntk_metrics(A, name=name),
    ],
)
def test_nan_matrix_raises_with_its_name(fn):
    with pytest.raises(ValueError, match=r"layers\.3\.weight.*non-finite"):
        fn(nan_matrix(), name="layers.3.weight")


def test_inf_counted_separately():
    A = torch.eye(3)
    A[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"0 NaN, 1 Inf"):
        eigvals_sym(A, name="J")


@pytest.mark.parametrize(
    "fn",
    [
        effective_rank,
        participation_ratio,
        spectrum_summary,
        alpha_req,
        powerlaw_fit,
        lambda e, name: esd_metrics(e, 10, 4, name=name),
    ],
)
def test_nan_spectrum_raises_with_its_name(fn):
    ev = torch.tensor([1.0, float("nan"), 2.0, 3.0])
    with pytest.raises(ValueError, match="my_evals"):
        fn(ev, name="my_evals")


def test_default_name_is_matrix():
    with pytest.raises(ValueError, match="matrix"):
        eigvals_sym(nan_matrix())


@pytest.mark.parametrize("fn", [eigvals_sym, singular_values, eigvals_general])
def test_bad_precision_lists_allowed(fn):
    with pytest.raises(ValueError, match=r"precision='half'.*\['auto', 'float32', 'float64'\]"):
        fn(torch.eye(3), precision="half")


def test_bad_method_and_which_list_allowed():
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\['auto', 'structured', 'jacobian'\]"):
        ntk_matrix(model, x, method="fast")
    with pytest.raises(ValueError, match=r"\['LA', 'SA', 'LM'\]"):
        hessian_eigs(model, nn.functional.mse_loss, (x, torch.randn(4, 2)), k=1, which="BE")
    with pytest.raises(ValueError, match=r"\['gram', 'svd'\]"):
        weight_esd(torch.eye(3), method="qr")


def test_finiteness_check_is_exact_when_the_sum_is_not_finite():
    from callbacks.spectra import check_finite

    big = torch.full((4,), 3e38)  # finite float32 entries whose sum overflows to inf
    assert check_finite(big, "w") is big
    both = torch.tensor([1.0, float("inf"), float("-inf")])  # their sum is NaN, not Inf
    with pytest.raises(ValueError, match=r"w has non-finite entries \(0 NaN, 2 Inf\) of 3"):
        check_finite(both, "w")
    z = torch.tensor([1 + 1j, complex(1.0, float("nan"))])
    with pytest.raises(ValueError, match=r"1 NaN, 0 Inf"):
        check_finite(z, "z")
    assert check_finite(torch.zeros(0), "e").numel() == 0


def test_nan_in_ntk_input():
    x = torch.randn(3, 3)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="^x has non-finite"):  # not "matrix has ..."
        ntk_matrix(nn.Linear(3, 2), x)


def test_empty_and_wrong_rank():
    with pytest.raises(ValueError, match="empty"):
        eigvals_sym(torch.zeros(0, 0))
    with pytest.raises(ValueError, match="at least 2 dims"):
        singular_values(torch.ones(5), name="v")
