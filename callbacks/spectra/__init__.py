"""Spectral math for the spectrum callbacks: pure torch, device-agnostic, no Lightning, no I/O.

dense       eigenvalues / singular values with a float64 precision policy
weights     WeightWatcher-compatible weight ESDs and per-layer metrics
powerlaw    power-law tail fit (continuous MLE, xmin by KS distance)
lanczos     Lanczos top-k / bottom-k with full re-orthogonalisation
trace       Hutchinson, Hutch++, stochastic Lanczos quadrature
hessian     Hessian-vector products reusing one gradient graph; Hessian eigenvalues / trace
ntk         empirical NTK (structured, Jacobian), matrix-free top-k, kernel metrics
summaries   effective rank, participation ratio, stable rank, decay exponent, summary dict
rmt         Marchenko–Pastur edges, circular law radius, outlier counts
covariance  streaming, mergeable feature covariance; spectra of a linear map's output covariance
"""

from .covariance import StreamingCovariance, mapped_covariance_eigvals
from .dense import eigvals_general, eigvals_sym, gram_eigvals, singular_values
from .hessian import dense_hessian, hessian_eigs, hessian_matvec, hessian_trace
from .lanczos import LanczosResult, lanczos
from .ntk import flatten_ntk, ntk_jacobian, ntk_matrix, ntk_metrics, ntk_topk, sign_ntk
from .params import select_params
from .powerlaw import PowerLawFit, powerlaw_fit, powerlaw_fits
from .rmt import (
    circular_law_radius,
    count_outliers,
    mp_bulk_fit,
    mp_density,
    mp_edge,
    mp_edges,
)
from .summaries import (
    alpha_req,
    condition_number,
    effective_rank,
    participation_ratio,
    spectral_entropy,
    spectrum_summary,
    stable_rank,
    topk,
)
from .trace import (
    SLQResult,
    TraceEstimate,
    hutchinson_trace,
    hutchpp_trace,
    slq_density,
    slq_quadrature,
)
from .validate import check_finite, check_matrix
from .weights import (
    esd_metrics,
    esd_metrics_batch,
    iter_weight_matrices,
    model_weight_metrics,
    model_weight_spectra,
    weight_esd,
    weight_metrics,
)

__all__ = [
    "LanczosResult",
    "PowerLawFit",
    "SLQResult",
    "StreamingCovariance",
    "TraceEstimate",
    "alpha_req",
    "check_finite",
    "check_matrix",
    "circular_law_radius",
    "condition_number",
    "count_outliers",
    "dense_hessian",
    "effective_rank",
    "eigvals_general",
    "eigvals_sym",
    "esd_metrics",
    "esd_metrics_batch",
    "flatten_ntk",
    "gram_eigvals",
    "hessian_eigs",
    "hessian_matvec",
    "hessian_trace",
    "hutchinson_trace",
    "hutchpp_trace",
    "iter_weight_matrices",
    "lanczos",
    "mapped_covariance_eigvals",
    "model_weight_metrics",
    "model_weight_spectra",
    "mp_bulk_fit",
    "mp_density",
    "mp_edge",
    "mp_edges",
    "ntk_jacobian",
    "ntk_matrix",
    "ntk_metrics",
    "ntk_topk",
    "participation_ratio",
    "powerlaw_fit",
    "powerlaw_fits",
    "select_params",
    "sign_ntk",
    "singular_values",
    "slq_density",
    "slq_quadrature",
    "spectral_entropy",
    "spectrum_summary",
    "stable_rank",
    "topk",
    "weight_esd",
    "weight_metrics",
]
