"""The action on a low-rank innovation ``D = V Vᵀ`` in factored form: ``O(n² R)`` work per
evaluation and no ``n × n`` factorisation, for the low-rank stage of the exact solver
(:func:`.solver._low_rank_stage`). :func:`.action.low_rank_objective` computes the same
quantities with dense ``n × n`` matrices and is the reference it is tested against.

The causal sweep as a sum of congruences. ``𝒮^k(X)_ts = m_k(t, s) X_{t-k,s-k}`` with the
time-level mask ``m_k(t, s) = Π_{j<k} g²[W_{t-j} ≡ W_{s-j}]`` (zero where ``t < k`` or
``s < k``), a Schur product of shifted positive semidefinite masks, so ``m_k = Σ_i λ_i e_i e_iᵀ``
(eigendecomposition, ``T × T``; one term for an RNN) and

    (I - 𝒮)⁻¹X = X + Σ_j O_j X O_jᵀ,    O_j = diag(√λ_i e_i ⊗ 1_P) Z^k   (j = (k, i), k >= 1),

with ``Z`` the shift by one time step. For ``D = V Vᵀ`` (``V`` of shape ``(n, r)``) this gives

    C = C_in + V Vᵀ + B₊B₊ᵀ,    K = C - D = C_in + B₊B₊ᵀ,    B₊ = [O_j V]_j  (n × R, R = r·#terms),

with ``C_in = (I - 𝒮)⁻¹K_in`` factorised once (``C_in = L₀L₀ᵀ``). Woodbury's identity with the
capacity matrix ``Q = I_R + Z₊ᵀZ₊`` (``Z₊ = L₀⁻¹B₊``) gives ``Y = K⁻¹V`` by triangular solves
with ``R + r`` right-hand sides. Then, as in :mod:`.action`, with ``M = I_r + VᵀY``,

    Gamma = ½[tr(VᵀY) - log det M],     E = ½ yᵀ(M_v ∘ C_SS + κI)⁻¹y = ½ yᵀa,
    G = ∂F/∂C = ½ Y M⁻¹Yᵀ - ½ Σ_{j: k=1} (O_jᵀY)(O_jᵀY)ᵀ - ½ Σ_i μ_i [e_i ∘ a][e_i ∘ a]ᵀ_S

(``M_v`` on ``S`` is ``Σ_i μ_i e_i e_iᵀ``), a sum of ``m`` signed rank-one terms
``G = Σ s_l f_l f_lᵀ``, and

    ∂F/∂V = 2 (I - 𝒮)⁻ᵀ(G) V = 2 [G V + Σ_j O_jᵀ G O_j V].

The backward residual ``2‖C G C‖_F/‖C‖_F`` of :func:`.action.backward_residual` follows from
``C f_l`` (``O(n² m)``).

On a support of rank ``r < n`` (:mod:`.kernels`) the columns of ``V`` lie in it, ``L₀`` factorises
``C_in + P⊥`` (so ``K⁻¹`` above is ``K⁺ + P⊥``, which acts on ``V`` as ``K⁺``) and ``∂F/∂V`` is
projected onto it; ``C``, ``C f`` and the residuals need no change (``C = ΠCΠ``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from .linalg import cholesky_logdet, data_fit, psd_factors

__all__ = ["FactoredInnovation"]


def _cho_solve(L, B):
    return scipy.linalg.cho_solve((L, True), B, check_finite=False)


@dataclass(frozen=True)
class _Evaluation:
    """One point ``V``: ``B = [V, O_j V]``, ``G = f diag(s) fᵀ``, ``Gamma``, ``E`` and ``∂F/∂V``."""

    V: np.ndarray
    B: np.ndarray
    f: np.ndarray
    s: np.ndarray
    gamma: float
    energy: float
    grad: np.ndarray


class FactoredInnovation:
    """``F = -S`` and ``∂F/∂V`` at ``D = V Vᵀ`` on a dense layout, and there the kernel, the
    conjugate kernel and both stationarity residuals (module docstring). ``C_in`` is
    ``(I - 𝒮)⁻¹K_in`` in that layout. The last point evaluated is cached."""

    def __init__(self, lay, C_in: np.ndarray):
        T, P = lay.T, lay.P
        self.lay, self.T, self.P, self.n = lay, T, P, lay.n
        self.C_in = C_in
        self.L0 = np.linalg.cholesky(lay.regularised(C_in))
        self.C_in_norm2 = float(np.vdot(C_in, C_in))
        # time operator of the terms j = (k, i), k >= 1: rows (j, t), column t - k, entry √λ_i e_i[t]
        MW = lay.MW
        rows, shift1 = [], []
        m = np.ones((T, T))
        for k in range(1, T):
            m_next = np.zeros((T, T))
            m_next[k:, k:] = MW[k:, k:] * m[k - 1:-1, k - 1:-1]
            m = m_next
            for w in psd_factors(m).T:
                A = np.zeros((T, T))
                A[np.arange(k, T), np.arange(T - k)] = w[k:]
                rows.append(A)
                shift1.append(k == 1)
        self.time_op = np.concatenate(rows) if rows else np.zeros((0, T))
        self.n_terms = len(rows)
        self.first_lag = np.array(shift1, dtype=bool)
        self.readout = psd_factors(lay.Mv_S)  # M_v on S = Σ μ e eᵀ
        self.C_in_SS = C_in[np.ix_(lay.supervised, lay.supervised)]
        self._last: _Evaluation | None = None

    def apply(self, V):
        """``[O_j V]_j`` as an ``(n, n_terms·r)`` array (term-major columns)."""
        r = V.shape[1]
        out = self.time_op @ V.reshape(self.T, self.P * r)  # (n_terms·T, P·r)
        return out.reshape(self.n_terms, self.T, self.P, r).transpose(1, 2, 0, 3).reshape(self.n, self.n_terms * r)

    def adjoint(self, H, r: int):
        """``Σ_j O_jᵀ H_j`` for ``H = [H_j]_j`` of shape ``(n, n_terms·r)``."""
        H = H.reshape(self.T, self.P, self.n_terms, r).transpose(2, 0, 1, 3).reshape(self.n_terms * self.T, self.P * r)
        return (self.time_op.T @ H).reshape(self.n, r)

    def __call__(self, V):
        """``(F, ∂F/∂V)`` at ``D = V Vᵀ``."""
        e = self._evaluate(V)
        return e.gamma + e.energy, e.grad

    def _evaluate(self, V) -> _Evaluation:
        if self._last is not None and np.array_equal(self._last.V, V):
            return self._last
        lay, r = self.lay, V.shape[1]
        Bp = self.apply(V)
        B = np.hstack([V, Bp])
        Z = scipy.linalg.solve_triangular(self.L0, B, lower=True, check_finite=False)
        Zv, Zp = Z[:, :r], Z[:, r:]
        Lq = np.linalg.cholesky(np.eye(Zp.shape[1]) + Zp.T @ Zp)
        W = Zv - Zp @ _cho_solve(Lq, Zp.T @ Zv)  # (I + Z₊Z₊ᵀ)⁻¹ L₀⁻¹V
        Y = scipy.linalg.solve_triangular(self.L0, W, lower=True, trans="T", check_finite=False)  # K⁻¹V
        Lm = np.linalg.cholesky(np.eye(r) + Zv.T @ W)  # M = I + VᵀK⁻¹V
        C_SS = self.C_in_SS + B[lay.supervised] @ B[lay.supervised].T
        fit = data_fit(lay.Mv_S * C_SS + lay.kappa * np.eye(len(lay.supervised)), lay.y)
        if fit is None:
            raise np.linalg.LinAlgError("G_S + κI is not positive definite")
        a = fit.a[:, 0]
        gamma = 0.5 * (float(np.vdot(V, Y)) - cholesky_logdet(Lm))
        shift_terms = self._first_lag_adjoint(Y)
        read = np.zeros((self.n, self.readout.shape[1]))
        read[lay.supervised] = self.readout * a[:, None]
        f = np.hstack([scipy.linalg.solve_triangular(Lm, Y.T, lower=True, check_finite=False).T, shift_terms, read])
        s = np.concatenate([np.full(r, 0.5), np.full(shift_terms.shape[1] + read.shape[1], -0.5)])
        grad = 2.0 * lay.project_columns(self.adjoint_sweep(f @ (s[:, None] * (f.T @ B)), r))
        self._last = _Evaluation(V.copy(), B, f, s, gamma, fit.energy, grad)
        return self._last

    def adjoint_sweep(self, GB, r: int):
        """``(I - 𝒮)⁻ᵀ(G) V = G V + Σ_j O_jᵀ G O_j V`` from ``GB = G [V, O_1 V, ...]``."""
        return GB[:, :r] + self.adjoint(GB[:, r:], r)

    def _first_lag_adjoint(self, Y):
        """Columns ``O_jᵀ Y`` of the lag-1 terms: ``𝒮ᵀ(Y Yᵀ) = Σ (O_jᵀY)(O_jᵀY)ᵀ``."""
        r = Y.shape[1]
        ops = self.time_op.reshape(self.n_terms, self.T, self.T)[self.first_lag]  # (j1, T, T)
        Y3 = Y.reshape(self.T, self.P * r)
        out = np.einsum("jts,tq->jsq", ops, Y3)  # (j1, T, P·r)
        return out.reshape(len(ops), self.T, self.P, r).transpose(1, 2, 0, 3).reshape(self.n, len(ops) * r)

    def _norms(self, e: _Evaluation):
        """``X = C f``, ``‖C G C‖_F = ‖X diag(s) Xᵀ‖_F`` and ``‖BᵀB‖_F²``. The norm comes from
        ``tr(diag(s) H diag(s) H)``, ``H = XᵀX`` (``O(n m²)``), unless its terms of both signs
        cancel to within 10⁴ ε of their magnitudes (a residual near ``√ε`` would be lost to
        rounding): then from the ``(n, n)`` matrix itself (``O(n² m)``)."""
        X = self.C_in @ e.f + e.B @ (e.B.T @ e.f)
        BtB = e.B.T @ e.B
        terms = np.outer(e.s, e.s) * (X.T @ X) ** 2
        squared = float(np.sum(terms))
        if squared > 1e4 * np.finfo(float).eps * float(np.sum(np.abs(terms))):
            CGC = np.sqrt(squared)
        else:
            CGC = np.linalg.norm((X * e.s) @ X.T)
        return X, CGC, float(np.vdot(BtB, BtB))

    def _kernel_norm(self, e: _Evaluation, BBt2: float) -> float:
        LB = self.L0.T @ e.B
        return np.sqrt(self.C_in_norm2 + 2.0 * float(np.vdot(LB, LB)) + BBt2)

    def backward_residual(self, V, below: float | None = None) -> float:
        """``2‖C G C‖_F/‖C‖_F`` at ``D = V Vᵀ`` (:func:`.action.backward_residual`). With ``below``
        given, an upper bound (from ``‖C‖_F² >= ‖C_in‖_F² + ‖BᵀB‖_F²``, ``C_in`` and ``BBᵀ`` being
        positive semidefinite) is returned where it is already below ``below``, and a lower
        bound where that is not (``‖C‖_F <= ‖C_in‖_F + ‖BᵀB‖_F``) and above ``below``: the exact
        value is only computed where the comparison needs it."""
        e = self._evaluate(V)
        _, CGC, BBt2 = self._norms(e)
        if below is not None:
            upper = 2.0 * CGC / np.sqrt(self.C_in_norm2 + BBt2)
            lower = 2.0 * CGC / (np.sqrt(self.C_in_norm2) + np.sqrt(BBt2))
            if upper < below:
                return upper
            if lower >= below:
                return lower
        return 2.0 * CGC / self._kernel_norm(e, BBt2)

    def residuals(self, V) -> tuple[float, float]:
        """Forward and backward residuals (:func:`.action.residuals`) at ``D = V Vᵀ``. Forward:
        with ``G = f diag(s) fᵀ``, ``K⁻¹ - 2Ct = C⁻¹ + 2G`` and by Woodbury
        ``C - (C⁻¹ + 2G)⁻¹ = X N Xᵀ``, ``X = C f``, ``N = (½ diag(s)⁻¹ + fᵀX)⁻¹`` (its norm taken of
        the ``(n, n)`` matrix, as in :meth:`_norms`); ``C⁻¹ + 2G`` is positive definite iff ``N⁻¹`` has exactly as many
        negative eigenvalues as ``s`` has negative entries (Haynsworth's inertia additivity);
        ``inf`` otherwise."""
        e = self._evaluate(V)
        X, CGC, BBt2 = self._norms(e)
        norm = self._kernel_norm(e, BBt2)
        Ninv = np.diag(0.5 / e.s) + e.f.T @ X
        Ninv = 0.5 * (Ninv + Ninv.T)
        mu = np.linalg.eigvalsh(Ninv)
        scale = np.max(np.abs(mu))
        if np.sum(mu < 0) != np.sum(e.s < 0) or np.min(np.abs(mu)) <= 1e-14 * scale:
            return np.inf, 2.0 * CGC / norm
        XN = X @ np.linalg.inv(Ninv)
        return np.linalg.norm(XN @ X.T) / norm, 2.0 * CGC / norm

    def prior_covariance(self, V) -> np.ndarray:
        """``K = C - D = C_in + B₊B₊ᵀ`` (``(n, n)``; on a support of rank ``r < n`` singular, so
        factorise ``lay.regularised(K)``)."""
        Bp = self.apply(V)
        return self.C_in + Bp @ Bp.T

    def kernel(self, V) -> np.ndarray:
        """``C = C_in + B Bᵀ`` (``(n, n)``)."""
        e = self._evaluate(V)
        return self.C_in + e.B @ e.B.T

    def conjugate_kernel(self, V) -> np.ndarray:
        """``Ct = ½ 𝒮ᵀ(K⁻¹DK⁻¹) + ½ M_v ∘ [a aᵀ]_S``: the negative terms of ``G`` (``(n, n)``), on
        the support (``ΠCtΠ``)."""
        e = self._evaluate(V)
        negative = self.lay.project_columns(e.f[:, e.s < 0])
        return 0.5 * negative @ negative.T

    def parts(self, V) -> tuple[float, float]:
        """``(Gamma, E)`` at ``D = V Vᵀ``."""
        e = self._evaluate(V)
        return e.gamma, e.energy
