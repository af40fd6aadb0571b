"""Every public function of callbacks.spectra makes its tensors on the device of its input.

Three checks over the same cases (one per public function, some with several paths):
- factory audit (CPU): no torch factory call / Generator in callbacks/ without a device;
- pseudo device (CPU): inputs on a second device that holds CPU data, so a tensor made on the
  CPU by mistake raises as on CUDA; the results must be on that device and equal the CPU ones;
- CUDA (`gpu` marker, skipped without a GPU): the same cases on the GPU against the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import nn

import callbacks.spectra as S
from helpers import (
    PSEUDO,
    OnDevice,
    audit_factories,
    module_to_pseudo,
    on_pseudo_device,
    to_pseudo,
)

NO_CUDA = "torch.cuda.is_available() is False: no CUDA device visible"
RESULT_TYPES = {"LanczosResult", "PowerLawFit", "SLQResult", "TraceEstimate"}


@dataclass
class Put:
    """Puts test inputs on one device: `put(tensor)`, `put.module(module)`, `put.device`."""

    device: torch.device

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.device == PSEUDO:
            return to_pseudo(t)
        return t.detach().clone().to(self.device)

    def module(self, m: nn.Module) -> nn.Module:
        return module_to_pseudo(m) if self.device == PSEUDO else m.to(self.device)


def _gen() -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(7)


def _sym(n: int = 12) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=_gen(), dtype=torch.float64))
    d = torch.linspace(-2.0, 5.0, n, dtype=torch.float64)
    return (q * d) @ q.T


def _evals(n: int = 40) -> torch.Tensor:
    return torch.rand(n, generator=_gen(), dtype=torch.float64).square() * 4 + 0.01


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).double()


def _xy(put: Put) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen()
    return (put(torch.randn(5, 4, generator=g, dtype=torch.float64)),
            put(torch.randn(5, 3, generator=g, dtype=torch.float64)))


def _op(put: Put) -> Callable[[torch.Tensor], torch.Tensor]:
    A = put(_sym())
    return lambda v: A @ v


def _covariance(put: Put) -> Any:
    X = torch.randn(30, 5, generator=_gen(), dtype=torch.float64) + 3.0
    a = S.StreamingCovariance(5, device=put.device).update(put(X[:10])).update(put(X[10:20]))
    b = S.StreamingCovariance(5).update(put(X[20:]))  # device=None: follows its first batch
    merged = S.StreamingCovariance.from_state(a.state()).merge(b)
    summed = S.StreamingCovariance.from_sums(*merged.sums())
    return merged.covariance(), summed.eigenvalues(), S.StreamingCovariance(
        5, center=False, device=put.device).update(put(X)).covariance()


def _hessian_matvec(put: Put) -> torch.Tensor:
    model = put.module(_mlp())
    mv, dim = S.hessian_matvec(model, nn.MSELoss(), _xy(put))
    return mv(put(torch.linspace(-1.0, 1.0, dim, dtype=torch.float64)))


# name -> (function of a Put returning the result, draws random probes on the device?)
CASES: dict[str, tuple[Callable[[Put], Any], bool]] = {
    "StreamingCovariance": (_covariance, False),
    "alpha_req": (lambda put: S.alpha_req(put(_evals()), 1, 20), False),
    "check_finite": (lambda put: S.check_finite(put(_sym())), False),
    "check_matrix": (lambda put: S.check_matrix(put(_sym()), square=True), False),
    "circular_law_radius": (lambda put: S.circular_law_radius(10, 0.5), False),
    "condition_number": (lambda put: S.condition_number(put(_evals())), False),
    "count_outliers": (lambda put: (S.count_outliers(put(_evals()), 2.0),
                                    S.count_outliers(put(S.eigvals_general(_sym())), 2.0)),
                       False),
    "dense_hessian": (lambda put: S.dense_hessian(put.module(_mlp()), nn.MSELoss(), _xy(put)),
                      False),
    "effective_rank": (lambda put: S.effective_rank(put(_evals())), False),
    "eigvals_general": (lambda put: S.eigvals_general(put(_sym())), False),
    "eigvals_sym": (lambda put: S.eigvals_sym(put(_sym())), False),
    "esd_metrics": (lambda put: S.esd_metrics(put(_evals()), 60, 40), False),
    "esd_metrics_batch": (lambda put: S.esd_metrics_batch(
        put(torch.stack([_evals(), _evals().flip(0) * 2])), 60, 40), False),
    "flatten_ntk": (lambda put: S.flatten_ntk(put(torch.ones(3, 3, 2, 2))), False),
    "gram_eigvals": (lambda put: S.gram_eigvals(put(_sym()[:, :7]), normalize=12.0), False),
    "hessian_eigs": (lambda put: S.hessian_eigs(put.module(_mlp()), nn.MSELoss(), _xy(put),
                                                k=3, tol=1e-10), True),
    "hessian_matvec": (_hessian_matvec, False),
    "hessian_trace": (lambda put: S.hessian_trace(put.module(_mlp()), nn.MSELoss(), _xy(put),
                                                  n_matvecs=9), True),
    "hutchinson_trace": (lambda put: S.hutchinson_trace(_op(put), 12, 6, device=put.device,
                                                        seed=1), True),
    "hutchpp_trace": (lambda put: (
        S.hutchpp_trace(_op(put), 12, 9, device=put.device, seed=1),
        S.hutchpp_trace(_op(put), 12, 9, device=put.device,
                        generator=torch.Generator(device=put.device).manual_seed(3))), True),
    "iter_weight_matrices": (lambda put: list(S.iter_weight_matrices(put.module(_cnn()),
                                                                     min_evals=1)), False),
    "lanczos": (lambda put: (
        S.lanczos(_op(put), 12, k=3, device=put.device, seed=0, tol=1e-12),
        S.lanczos(_op(put), 12, k=2, which="SA", device=put.device, seed=0, block_size=2,
                  return_vectors=True, bound="gap", tol=1e-12),
        S.lanczos(_op(put), 12, k=2, v0=put(torch.ones(12, dtype=torch.float64)), tol=1e-12)),
                True),
    "mapped_covariance_eigvals": (lambda put: (
        S.mapped_covariance_eigvals(put(_sym(4) + 4 * torch.eye(4, dtype=torch.float64)),
                                    put(_sym(8)[:, :4])),
        S.mapped_covariance_eigvals(put(_sym(8) + 4 * torch.eye(8, dtype=torch.float64)),
                                    put(_sym(8)[:3]))), False),
    "model_weight_metrics": (lambda put: S.model_weight_metrics(put.module(_mlp()), min_evals=1),
                             False),
    "model_weight_spectra": (lambda put: S.model_weight_spectra(put.module(_cnn()), min_evals=1),
                             False),
    "mp_bulk_fit": (lambda put: S.mp_bulk_fit(put(_evals()), 60, 40), False),
    "mp_density": (lambda put: S.mp_density(put(torch.linspace(0.0, 3.0, 9,
                                                               dtype=torch.float64)), 0.5),
                   False),
    "mp_edge": (lambda put: S.mp_edge(100, 40, 2.0), False),
    "mp_edges": (lambda put: S.mp_edges(100, 40, 2.0), False),
    "ntk_matrix": (lambda put: (
        S.ntk_matrix(put.module(_mlp()), _xy(put)[0]),
        S.ntk_matrix(put.module(_mlp()), _xy(put)[0], trace_outputs=True),
        S.ntk_matrix(put.module(_mlp()), _xy(put)[0], method="jacobian"),
        S.ntk_matrix(put.module(_cnn()), put(torch.randn(3, 2, 6, 6, generator=_gen(),
                                                         dtype=torch.float64)))), False),
    "ntk_jacobian": (lambda put: (
        S.ntk_jacobian(put.module(_mlp()), _xy(put)[0]),
        S.ntk_jacobian(put.module(_mlp()), _xy(put)[0], method="jacobian")), False),
    "ntk_metrics": (lambda put: S.ntk_metrics(put(_sym() @ _sym()),
                                              put(torch.arange(12.0, dtype=torch.float64))),
                    False),
    "ntk_topk": (lambda put: S.ntk_topk(put.module(_mlp()), _xy(put)[0], k=3, tol=1e-10), True),
    "participation_ratio": (lambda put: S.participation_ratio(put(_evals())), False),
    "powerlaw_fit": (lambda put: (S.powerlaw_fit(put(_evals(60))),
                                  S.powerlaw_fit(put(_evals(12))),
                                  S.powerlaw_fit(put(_evals(60)), xmin=0.5)), False),
    "powerlaw_fits": (lambda put: S.powerlaw_fits(put(torch.stack([_evals(60), _evals(60) ** 2]))),
                      False),
    "select_params": (lambda put: S.select_params(put.module(_mlp()), r"\.weight"), False),
    "sign_ntk": (lambda put: (
        S.sign_ntk(put(torch.randn(4, 3, 10, generator=_gen(), dtype=torch.float64))),
        S.sign_ntk(put(torch.randn(4, 3, 10, generator=_gen(), dtype=torch.float64)),
                   trace_outputs=True)), False),
    "singular_values": (lambda put: S.singular_values(put(_sym()[:5])), False),
    "slq_density": (lambda put: (
        S.slq_density(_op(put), 12, n_probes=3, n_steps=6, n_grid=32, device=put.device, seed=2),
        S.slq_density(_op(put), 12, n_probes=2, n_steps=12, device=put.device, seed=2,
                      grid=torch.linspace(-3.0, 6.0, 16, dtype=torch.float64))), True),
    "slq_quadrature": (lambda put: S.slq_quadrature(_op(put), 12, 3, 5, device=put.device,
                                                    seed=2), True),
    "spectral_entropy": (lambda put: S.spectral_entropy(put(_evals())), False),
    "spectrum_summary": (lambda put: S.spectrum_summary(put(_evals() - 1.0)), False),
    "stable_rank": (lambda put: S.stable_rank(put(_evals())), False),
    "topk": (lambda put: S.topk(put(_evals()), 5, largest=False), False),
    "weight_esd": (lambda put: (
        S.weight_esd(put(_sym()[:, :9])), S.weight_esd(put(_sym()[:, :6]), fused_qkv=3),
        S.weight_esd(put(torch.randn(6, 4, 3, 3, generator=_gen())), conv="slices"),
        S.weight_esd(put(_sym()[:, :9]), method="svd", normalize=True)), False),
    "weight_metrics": (lambda put: S.weight_metrics(put(torch.randn(
        40, 20, generator=_gen(), dtype=torch.float64))), False),
}
# torch.func's forward-mode AD (jvp, jacfwd) wraps the pseudo-device tensor subclass in its own
# tensors, which the subclass cannot see through: these run in the factory audit and on CUDA
NOT_ON_PSEUDO = {"dense_hessian": "torch.func.hessian (jacfwd)", "ntk_topk": "torch.func.jvp"}


def leaves(out: Any) -> list[Any]:
    """Return the tensors and numbers in a (nested) result, in a fixed order."""
    if isinstance(out, dict):
        return [x for k in sorted(out) for x in leaves(out[k])]
    if isinstance(out, (list, tuple)):
        return [x for item in out for x in leaves(item)]
    return [] if out is None or isinstance(out, (str, nn.Module)) else [out]


def plain(x: Any) -> Any:
    """Return a leaf as a CPU tensor or a Python number."""
    if isinstance(x, OnDevice):
        return x._inner.detach()
    return x.detach().cpu() if isinstance(x, torch.Tensor) else x


def same(a: Any, b: Any) -> bool:
    """Whether two leaves agree to rounding (NaN equals NaN): the pseudo device runs the same CPU
    kernels, but a composite op may reach them decomposed, so the last bits can differ."""
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and torch.allclose(
            a, b, rtol=1e-12, atol=1e-14, equal_nan=True)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-14) or a == b or (
            math.isnan(a) and math.isnan(b))
    return a == b


def test_every_public_function_has_a_case():
    public = {n for n in S.__all__ if n not in RESULT_TYPES}
    assert public == set(CASES), sorted(public ^ set(CASES))


@pytest.mark.parametrize("name", sorted(CASES))
def test_no_factory_call_without_a_device(name):
    fn, _ = CASES[name]
    put = Put(torch.device("cpu"))
    with audit_factories() as audit:
        fn(put)
    assert audit.calls == [], "\n".join(f"{where}: {what}" for where, what in audit.calls)


@pytest.mark.parametrize("name", sorted(CASES))
def test_runs_on_a_second_device_and_gives_the_cpu_results(name):
    if name in NOT_ON_PSEUDO:
        pytest.skip(f"{NOT_ON_PSEUDO[name]} does not run on the pseudo device")
    fn, _ = CASES[name]
    expected = leaves(fn(Put(torch.device("cpu"))))
    with on_pseudo_device():
        got = leaves(fn(Put(PSEUDO)))
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if isinstance(e, torch.Tensor):
            assert isinstance(g, OnDevice), f"result {i} is on {g.device}, not on the input's"
        assert same(plain(g), e), f"result {i} differs from the CPU run"


def test_the_checks_catch_a_tensor_made_on_the_wrong_device():
    # the audit names the line of a device-less factory call and of a device-less Generator
    with audit_factories(roots=(__file__,)) as audit:
        torch.zeros(3)
        torch.zeros(3, device="cpu")
        torch.Generator()
        torch.randn(2, generator=torch.Generator(device="cpu"), device="cpu")
    assert [what for _, what in audit.calls] == ["torch.zeros without device=",
                                                 "torch.Generator without device="]
    assert all("test_devices.py" in where for where, _ in audit.calls)
    # on the pseudo device, a CPU tensor meeting a device tensor raises as CUDA would
    with on_pseudo_device():
        x = to_pseudo(torch.ones(3))
        assert (x + torch.tensor(1.0)).device == PSEUDO  # a 0-dim CPU tensor is fine
        with pytest.raises(RuntimeError, match="same device"):
            x + torch.ones(3)
        with pytest.raises(RuntimeError, match="device type for generator"):
            torch.randn(3, generator=torch.Generator(device="cpu"), device=PSEUDO)
        assert torch.zeros(2, device=PSEUDO).device == PSEUDO
        assert torch.ones(2).to(PSEUDO).device == PSEUDO and x.cpu().device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_on_cuda_matches_the_cpu(name):
    if not torch.cuda.is_available():
        pytest.skip(NO_CUDA)
    fn, random = CASES[name]
    cuda = torch.device("cuda")
    expected = leaves(fn(Put(torch.device("cpu"))))
    got = leaves(fn(Put(cuda)))
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if isinstance(e, torch.Tensor):
            assert g.device.type == "cuda", f"result {i} is on {g.device}"
            assert g.shape == e.shape and g.dtype == e.dtype, i
            if random or not e.is_floating_point() and not e.is_complex():
                continue  # other random probes (CUDA generator): only place and shape agree
            if e.is_complex():  # LAPACK and cuSOLVER order complex eigenvalues differently
                g, e = g.abs().sort().values, e.abs().sort().values
            assert torch.allclose(g.cpu(), e, rtol=1e-6, atol=1e-9), f"result {i}"
        elif isinstance(e, float) and not random:
            assert g == pytest.approx(e, rel=1e-6, abs=1e-9, nan_ok=True), f"result {i}"
