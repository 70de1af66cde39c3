"""The record of one stationary point of the action (a branch), shared by the solvers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .kernels import Support

__all__ = ["Branch", "ConvergenceWarning"]


class ConvergenceWarning(UserWarning):
    """A start of the solver (the dominant branch's or another) stopped before both stationarity
    residuals fell below ``tol``."""


@dataclass(frozen=True)
class Branch:
    """One stationary point of ``S``: kernel, conjugate kernel, action and diagnostics.

    Monte Carlo solutions (nonlinear ``phi``) also carry ``C_err`` (standard errors of ``C``),
    ``S_err`` and ``mc_error`` (largest entrywise standard error relative to
    ``sqrt(C_ii C_jj)``) and ``phi_mean`` (``<φ>`` per ``(t, a)``, ``None`` where it vanishes by
    symmetry); for the exact linear solver these are ``None``/0. ``iterations``: Newton steps
    (plus the L-BFGS steps of the low-rank stage on a dense broken start) or particle iterations.

    Gaussian-closure solutions (``method="gaussian"``, an approximation whose ``S`` is a lower
    bound on the exact one for nonlinear ``phi``) carry ``Sigma``, the covariance of the
    preactivations ``h ~ N(0, Sigma)`` with ``C = <φφᵀ>_{N(0, Sigma)}``, and the ``support``
    of the closure's kernels (:func:`.closure.closure_support`, or the trained kernel's where that
    was numerically singular, :func:`.closure.trained_support`; full where the prior covariance
    is regular; not stored on disk); ``None`` otherwise. ``stopped``: why the closure's Newton
    iteration ended without converging (:data:`.closure.STOP_REASONS`; ``""`` where it converged,
    and for the other solvers)."""

    C: np.ndarray
    Ct: np.ndarray
    S: float
    Gamma: float
    E: float
    init: str
    converged: bool
    residual_forward: float
    residual_backward: float
    iterations: int
    C_err: np.ndarray | None = None
    S_err: float = 0.0
    mc_error: float = 0.0
    phi_mean: np.ndarray | None = None
    Sigma: np.ndarray | None = None
    support: Support | None = None
    stopped: str = ""

    @property
    def residual(self) -> float:
        return max(self.residual_forward, self.residual_backward)

    @property
    def C_centred(self) -> np.ndarray:
        """Kernel of the centred features ``C - <φ><φ>ᵀ`` (THEORY.md §4; equal to ``C`` for odd ``phi``)."""
        return self.C if self.phi_mean is None else self.C - np.outer(self.phi_mean, self.phi_mean)
