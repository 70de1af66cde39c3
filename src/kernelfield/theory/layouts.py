"""Layouts that hold kernels for the closed-form derivatives of :mod:`.action` (numpy):
:class:`DenseLayout` (``(n, n)`` matrices), :class:`TimeLocalLayout` (``(T, P, P)`` stacks of
equal-time blocks, for kernels that are time-block diagonal) and :class:`SupportLayout` (``(r, r)``
matrices in an orthonormal basis of the support, for dense kernels of a singular prior
covariance); :func:`layout` picks one by the blocks a kernel can reach
(:func:`.kernels.invariant_components`) and the support's rank.

On a singular prior covariance (:attr:`.kernels.Problem.support`, range ``R``) the dense and
time-local layouts hold ``Π`` (projector onto ``R``) and ``P⊥ = I - Π`` and the action is
evaluated with ``C + P⊥`` and ``K + P⊥`` in place of ``C`` and ``K``: for ``C, K ∈ Sym(R)``
positive definite on ``R``, ``(K + P⊥)⁻¹ = K⁺ + P⊥`` and ``log det(K + P⊥) = log pdet K``, so the
Wishart rate on the support, ``½[tr(K⁺C) - log pdet C + log pdet K - r]`` (``r = dim R``), needs
no other change; gradients are projected onto ``Sym(R)`` (:meth:`DenseLayout.sweep_adjoint`).
With full rank ``Π = I``, ``P⊥ = 0`` and nothing is added or projected (the same code path, the
same numbers). :class:`SupportLayout` instead works in ``R``'s own coordinates.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable, NamedTuple

import numpy as np
import scipy.linalg

from .kernels import Problem, causal_sweep, invariant_components, sym
from .linalg import Blocks, data_fit, psd_factors

__all__ = ["layout", "DenseLayout", "TimeLocalLayout", "TimeLocalSupportLayout", "SupportLayout"]


class _Support:
    """What both layouts do with :attr:`Problem.support`: ``rank``, ``basis`` ``Q`` and
    ``complement`` ``P⊥ = I - QQᵀ`` (``None`` when full: then nothing below changes a number)."""

    rank: int
    basis: np.ndarray | None
    complement: np.ndarray | None

    def regularised(self, X):
        """``X + P⊥``: positive definite iff ``X ∈ Sym(R)`` is positive definite on ``R``, with
        ``(X + P⊥)⁻¹ = X⁺ + P⊥`` and ``det(X + P⊥) = pdet X``."""
        return X if self.complement is None else X + self.complement

    def project(self, X):
        """``Π X Π`` (each matrix of a stack): as ``Q(QᵀXQ)Qᵀ`` where the rank is at most half the
        size, else with the projector ``Π = I - P⊥`` itself (two products instead of four)."""
        if self.basis is None:
            return X
        if 2 * self.basis.shape[-1] <= self.basis.shape[-2]:
            Q, Qt = self.basis, np.swapaxes(self.basis, -1, -2)
            return Q @ (Qt @ X @ Q) @ Qt
        return self._projector @ X @ self._projector

    @cached_property
    def _projector(self):
        """``Π = I - P⊥`` (each matrix of a stack)."""
        return np.eye(self.complement.shape[-1]) - self.complement


class _DenseReadout:
    """The data term on layouts that hold ``C_SS`` itself (``Mv_S``, ``select``, ``embed``, ``y``):
    ``A = M_v ∘ C_SS + κI`` is factorised and inverted (:func:`.linalg.data_fit`)."""

    def readout_fit(self, C):
        """:class:`.linalg.DataFit` at ``A = M_v ∘ C_SS + κI`` (with ``A⁻¹``); ``None`` if not
        positive definite."""
        return data_fit(self.Mv_S * self.select(C) + self.kappa * np.eye(self.y.shape[-2]), self.y, with_inverse=True)

    def readout_field(self, u, a):
        """``[M_v ∘ u aᵀ]_S``, in the layout's coordinates."""
        return self.embed(self.Mv_S * (u @ np.swapaxes(a, -1, -2)))

    def readout_response(self, fit, dC, a):
        """``da = -A⁻¹ (M_v ∘ dC)_SS a``: the change of ``a = A⁻¹y`` along ``dC``."""
        return -(fit.Ainv @ (self.Mv_S * self.select(dC)) @ a)


class DenseLayout(_Support, _DenseReadout):
    """Kernels as ``(n, n)`` arrays whose free blocks are those within one class of ``labels``
    (a partition of the time steps, :func:`invariant_components`), with
    ``𝒮(X)_ts = g²[W_t ≡ W_s] X_{t-1,s-1}``, so ``K(C) = K_in + 𝒮(C)``. The readout sees
    ``C_SS`` with the weights ``σ_v²[v_t ≡ v_s]`` (``Mv_S``). Free kernels live on
    :attr:`Problem.support`."""

    def __init__(self, prob: Problem, labels: np.ndarray):
        T, P = prob.T, prob.P
        self.T, self.P, self.n = T, P, prob.n
        self.MW = prob.MW[::P, ::P]  # time-level g²[W_t ≡ W_s]
        self.labels = np.repeat(np.asarray(labels), P)  # class of each flat index t*P + a
        self.mask = (self.labels[:, None] == self.labels[None, :]).astype(np.float64)
        self.rank, self.basis, self.complement = prob.support.rank, prob.support.basis, prob.support.complement
        self.K_in = self.project(prob.K_in)
        self.supervised = prob.supervised
        self.Mv_S = prob.Mv[np.ix_(prob.supervised, prob.supervised)]
        self.y = prob.y[:, None]
        self.kappa = prob.kappa

    def _blocks(self, X):
        return X.reshape(self.T, self.P, self.T, self.P)

    def restrict(self, C):
        """The free part of an ``(n, n)`` kernel (on the support)."""
        return self.project(sym(np.asarray(C, dtype=np.float64)) * self.mask)

    def full(self, X):
        """As an ``(n, n)`` array."""
        return X

    def project_columns(self, V):
        """``Π V`` for ``V`` of shape ``(n, r)``."""
        return V if self.basis is None else self.basis @ (self.basis.T @ V)

    def shift(self, X):
        """``𝒮(X)``: block ``(t, s)`` <- ``g²[W_t ≡ W_s] X_{t-1,s-1}``."""
        out = np.zeros_like(X)
        self._blocks(out)[1:, :, 1:, :] = self.MW[1:, None, 1:, None] * self._blocks(X)[:-1, :, :-1, :]
        return out

    def shift_adjoint(self, Y):
        """``𝒮ᵀ(Y)``: block ``(t-1, s-1)`` <- ``g²[W_t ≡ W_s] Y_ts``."""
        out = np.zeros_like(Y)
        self._blocks(out)[:-1, :, :-1, :] = self.MW[1:, None, 1:, None] * self._blocks(Y)[1:, :, 1:, :]
        return out

    def sweep(self, B):
        """``(I - 𝒮)⁻¹B``: ``C_ts = B_ts + g²[W_t ≡ W_s] C_{t-1,s-1}``, one row of blocks after another."""
        return causal_sweep(self.MW, B, self.T, self.P)

    def sweep_adjoint(self, G):
        """``(I - 𝒮)⁻ᵀG`` (backward in time: ``G_ts + g²[W_{t+1} ≡ W_{s+1}] (·)_{t+1,s+1}``),
        restricted to the free blocks on the support (the adjoint of the sweep on ``Sym(R)``)."""
        G = np.array(G, dtype=np.float64)
        blocks = self._blocks(G)
        for t in range(self.T - 2, -1, -1):
            blocks[t, :, :-1, :] += self.MW[t + 1, 1:, None] * blocks[t + 1, :, 1:, :]
        return self.project(G * self.mask)

    def select(self, C):
        """``C_SS``."""
        return C[np.ix_(self.supervised, self.supervised)]

    def embed(self, M):
        """``[M]_S``: ``M`` on ``S x S``, zero elsewhere."""
        out = np.zeros((self.n, self.n))
        out[np.ix_(self.supervised, self.supervised)] = M
        return out


class TimeLocalLayout(_Support, _DenseReadout):
    """Time-block-diagonal kernels as ``(T, P, P)`` stacks of their equal-time blocks ``c_t``,
    for kernels whose classes of :func:`invariant_components` are single time steps (a DNN; an
    RNN's time-symmetric branch): ``c_t = w_t c_{t-1} + b_t`` with ``w_t = g²[W_t ≡ W_t]``, and
    the readout of step t sees only ``c_t`` (``y`` and ``Mv_S`` padded with zeros on the
    unsupervised patterns, so ``G_S + κI`` is a ``(T, P, P)`` stack). Every operation costs
    ``O(T P³)`` instead of ``O((TP)³)``. The support is held per step (bases ``(T, P, r_max)``)."""

    def __init__(self, prob: Problem):
        self._time_steps(prob)
        self.rank = prob.support.rank
        self.basis, self.complement = prob.support.time_local
        self.K_in = self.restrict(prob.K_in)

    def _time_steps(self, prob: Problem):
        """Sizes, the shift's ``w_t``, the readout stacks and the sweep over time."""
        T, P = prob.T, prob.P
        self.T, self.P, self.n = T, P, prob.n
        self.w = np.diagonal(prob.MW[::P, ::P]).copy()
        supervised = np.zeros(prob.n)
        supervised[prob.supervised] = 1.0
        supervised = supervised.reshape(T, P)
        v = np.diagonal(prob.Mv[::P, ::P])
        self.Mv_S = v[:, None, None] * supervised[:, :, None] * supervised[:, None, :]
        y = np.zeros(prob.n)
        y[prob.supervised] = prob.y
        self.y = y.reshape(T, P, 1)
        self.kappa = prob.kappa
        # (I - 𝒮)⁻¹ as a (T, T) matrix over time: c_t = Σ_{s<=t} (Π_{s<r<=t} w_r) b_s
        self.sweep_matrix = np.eye(T)
        for t in range(1, T):
            self.sweep_matrix[t, :t] = self.w[t] * self.sweep_matrix[t - 1, :t]

    def restrict(self, C):
        """The equal-time blocks of an ``(n, n)`` kernel (on the support)."""
        T, P = self.T, self.P
        blocks = sym(np.asarray(C, dtype=np.float64)).reshape(T, P, T, P)
        return self.project(blocks[np.arange(T), :, np.arange(T), :])

    def full(self, X):
        return scipy.linalg.block_diag(*X)

    def shift(self, X):
        out = np.zeros_like(X)
        out[1:] = self.w[1:, None, None] * X[:-1]
        return out

    def shift_adjoint(self, Y):
        out = np.zeros_like(Y)
        out[:-1] = self.w[1:, None, None] * Y[1:]
        return out

    def sweep(self, B):
        return (self.sweep_matrix @ B.reshape(self.T, -1)).reshape(B.shape)

    def sweep_adjoint(self, G):
        return self.project((self.sweep_matrix.T @ G.reshape(self.T, -1)).reshape(G.shape))

    def select(self, C):
        return C

    def embed(self, M):
        return M


class TimeLocalSupportLayout(TimeLocalLayout):
    """:class:`TimeLocalLayout` on a singular prior covariance, in each step's own support
    coordinates: ``c_t = Q_tᵀ C_tt Q_t`` (``r_t × r_t``, a :class:`.linalg.Blocks`) with ``Q_t``
    ``(P, r_t)`` an orthonormal basis of the support at step t. The supports are nested along the
    shift (``range Q_{t-1} ⊂ range Q_t`` where ``w_t ≠ 0``: :func:`time_local_support_layout`
    checks it), so ``Q_t A_t = Q_{t-1}`` with ``A_t = Q_tᵀQ_{t-1}`` and the shift is the congruence
    ``w_t A_t c_{t-1} A_tᵀ``. Each operation costs ``Σ_t r_t³`` instead of ``T P³`` (T = 16,
    P = 256, D = 16 inputs a step: ``r_t = 16(t+1)``, 3.5× less), and nothing is projected.
    Orthonormal coordinates keep the Frobenius inner product: the Newton iterates, residuals and
    ``S`` are those of :class:`TimeLocalLayout`."""

    complement = None  # full rank in these coordinates: nothing to regularise or project

    def __init__(self, prob: Problem, bases: list[np.ndarray], shifts: list[np.ndarray | None]):
        self._time_steps(prob)
        self.Q, self.A = bases, shifts
        self.rank = int(sum(Q.shape[1] for Q in bases))
        self.read = np.any(self.Mv_S != 0.0, axis=(1, 2))  # steps the readout sees
        self.K_in = self.restrict(prob.K_in)

    def restrict(self, C):
        T, P = self.T, self.P
        blocks = np.asarray(C, dtype=np.float64).reshape(T, P, T, P)
        return Blocks(Q.T @ sym(blocks[t, :, t, :]) @ Q for t, Q in enumerate(self.Q))

    def full(self, X):
        return scipy.linalg.block_diag(*(Q @ x @ Q.T for Q, x in zip(self.Q, X.blocks)))

    def regularised(self, X):
        return X

    def project(self, X):
        return X

    def shift(self, X):
        """``(𝒮X)_t = w_t A_t X_{t-1} A_tᵀ`` (zero at t = 0)."""
        out = [self.w[t] * (self.A[t] @ X.blocks[t - 1] @ self.A[t].T) for t in range(1, self.T)]
        return Blocks([np.zeros_like(X.blocks[0])] + out)

    def shift_adjoint(self, Y):
        """``(𝒮ᵀY)_{t-1} = w_t A_tᵀ Y_t A_t`` (zero at the last step)."""
        out = [self.w[t] * (self.A[t].T @ Y.blocks[t] @ self.A[t]) for t in range(1, self.T)]
        return Blocks(out + [np.zeros_like(Y.blocks[-1])])

    def sweep(self, B):
        """``c_t = b_t + w_t A_t c_{t-1} A_tᵀ``, forward in time."""
        out = [B.blocks[0]]
        for t in range(1, self.T):
            out.append(B.blocks[t] + self.w[t] * (self.A[t] @ out[-1] @ self.A[t].T))
        return Blocks(out)

    def sweep_adjoint(self, G):
        """``y_t = g_t + w_{t+1} A_{t+1}ᵀ y_{t+1} A_{t+1}``, backward in time."""
        out = [G.blocks[-1]]
        for t in range(self.T - 2, -1, -1):
            out.append(G.blocks[t] + self.w[t + 1] * (self.A[t + 1].T @ out[-1] @ self.A[t + 1]))
        return Blocks(out[::-1])

    def select(self, C):
        """The readout's ``(T, P, P)`` stack ``Q_t c_t Q_tᵀ`` (zero at the steps it does not see)."""
        out = np.zeros((self.T, self.P, self.P))
        for t in np.flatnonzero(self.read):
            out[t] = self.Q[t] @ C.blocks[t] @ self.Q[t].T
        return out

    def embed(self, M):
        """``Q_tᵀ M_t Q_t`` of a ``(T, P, P)`` stack."""
        return Blocks(Q.T @ M[t] @ Q if self.read[t] else np.zeros((Q.shape[1], Q.shape[1]))
                      for t, Q in enumerate(self.Q))


def time_local_support_layout(prob: Problem, rtol: float = 1e-8) -> TimeLocalSupportLayout | None:
    """:class:`TimeLocalSupportLayout` for ``prob``'s support, or ``None`` where that support
    couples time steps or some ``Q_{t-1}`` leaves the span of ``Q_t`` (with ``w_t ≠ 0``) by more
    than ``rtol``: the numerical rank cut dropped a direction the shift reaches (then the
    projected :class:`TimeLocalLayout`)."""
    support, P = prob.support, prob.P
    if len(support.classes) != prob.T:
        return None
    bases = [np.eye(P)] * prob.T
    for idx, Q in zip(support.classes, support.bases):
        if len(idx) != P or np.any(idx // P != idx[0] // P):
            return None
        bases[idx[0] // P] = np.eye(P) if Q is None else Q
    w = np.diagonal(prob.MW[::P, ::P])
    shifts = [None]
    for t in range(1, prob.T):
        A = bases[t].T @ bases[t - 1]
        if w[t] and np.linalg.norm(bases[t - 1] - bases[t] @ A) > rtol * np.sqrt(bases[t - 1].shape[1]):
            return None
        shifts.append(A)
    return TimeLocalSupportLayout(prob, bases, shifts)


def _support_shift(prob: Problem, rtol: float = 1e-8) -> list[np.ndarray] | None:
    """The shift in the support's coordinates: ``A_i = QᵀO_iQ`` for ``𝒮(X) = Σ_i O_i X O_iᵀ``
    (:class:`SupportLayout`), or ``None`` where some ``O_iQ`` leaves the span of ``Q`` by more than
    ``rtol`` relative: the support's numerical rank cut (:data:`SUPPORT_RTOL`) dropped directions
    that the shift reaches (a nearly but not exactly singular prior covariance)."""
    P, Q = prob.P, prob.support.basis
    blocks = Q.reshape(prob.T, P, -1)
    factors = []
    for w in psd_factors(prob.MW[::P, ::P][1:, 1:]).T:
        OQ = np.zeros_like(blocks)
        OQ[1:] = w[:, None, None] * blocks[:-1]
        OQ = OQ.reshape(prob.n, -1)
        A = Q.T @ OQ
        if np.linalg.norm(OQ - Q @ A) > rtol * max(np.linalg.norm(OQ), 1.0):
            return None
        factors.append(A)
    return factors


class WoodburyFit(NamedTuple):
    """The data term of :class:`SupportLayout`: ``E = ½ yᵀa``, ``a = A⁻¹y`` and ``v ↦ A⁻¹v``."""

    energy: float
    a: np.ndarray
    solve: Callable[[np.ndarray], np.ndarray]


class SupportLayout:
    """Kernels in the coordinates of the support (a rank-deficient prior covariance on a dense
    layout): ``C = Q c Qᵀ`` with ``Q`` ``(n, r)`` the orthonormal basis of :attr:`Problem.support`
    and ``c`` ``(r, r)``, so that every factorisation and product costs ``O(r³)`` instead of
    ``O(n³)`` (for an RNN with inputs at every step ``r <= T·D`` whatever ``P`` is).

    Shift: with ``g²[W_t ≡ W_s] = Σ_i w_i(t) w_i(s)`` (``t, s >= 1``) the shift is a sum of
    congruences ``𝒮(X) = Σ_i O_i X O_iᵀ``, ``(O_i v)_t = w_i(t) v_{t-1}``, and each ``O_i`` maps the
    support into itself (``range 𝒮(C₀) ⊂ range C₀``), so ``O_i Q = Q A_i`` with ``A_i = QᵀO_iQ``
    and ``𝒮(Q c Qᵀ) = Q (Σ_i A_i c A_iᵀ) Qᵀ``. Readout: ``M_v ∘ C_SS = Σ_j B_j c B_jᵀ`` with
    ``B_j = diag(u_j) Q_S`` (``M_v`` on ``S`` is ``Σ_j u_j u_jᵀ``), so ``A = M_v ∘ C_SS + κI`` is
    handled by Woodbury's identity, ``A⁻¹ = κ⁻¹[I - B(κI + c̃ BᵀB)⁻¹c̃ Bᵀ]`` (``B = [B_j]``,
    ``c̃ = I ⊗ c``), and never formed. The free entries of ``c`` are those whose basis vectors
    lie in one class of ``labels``. Orthonormal coordinates keep the Frobenius inner product, so
    the Newton iterates, residuals and ``S`` are those of :class:`DenseLayout` on the support.
    """

    complement = None  # full rank in these coordinates: nothing to regularise or project

    def __init__(self, prob: Problem, labels: np.ndarray, shift_factors: list[np.ndarray] | None = None):
        T, P = prob.T, prob.P
        support = prob.support
        Q = support.basis
        self.T, self.P, self.n = T, P, support.rank
        self.rank, self.Q, self.kappa = support.rank, Q, prob.kappa
        step = np.concatenate([np.full(Qc.shape[1] if Qc is not None else len(idx), idx[0] // P)
                               for idx, Qc in zip(support.classes, support.bases)])
        self.labels = np.asarray(labels)[step]  # the class of each basis vector
        self.mask = (self.labels[:, None] == self.labels[None, :]).astype(np.float64)
        self.K_in = sym(Q.T @ prob.K_in @ Q)
        self.A = _support_shift(prob) if shift_factors is None else shift_factors
        if self.A is None:
            raise ValueError("layout: the shift does not map the support into itself (numerically)")
        time_of = prob.supervised // P
        self.y = prob.y[:, None]
        u = psd_factors(prob.Mv[::P, ::P])[time_of]  # (|S|, J): M_v on S = Σ_j u_j u_jᵀ
        Q_S = Q[prob.supervised]
        self.B = np.hstack([u[:, [j]] * Q_S for j in range(u.shape[1])])  # (|S|, J·r)
        self.BtB = self.B.T @ self.B
        self.readouts = u.shape[1]

    def restrict(self, C):
        """``c = Qᵀ (C on the free blocks) Q`` for an ``(n, n)`` kernel."""
        return sym(self.Q.T @ (np.asarray(C, dtype=np.float64) @ self.Q)) * self.mask

    def full(self, X):
        """``Q X Qᵀ`` ``(n, n)``."""
        return self.Q @ X @ self.Q.T

    def regularised(self, X):
        return X

    def project(self, X):
        return X

    def shift(self, X):
        """``Σ_i A_i X A_iᵀ`` (class docstring)."""
        out = np.zeros_like(X)
        for A in self.A:
            out += A @ X @ A.T
        return out

    def shift_adjoint(self, Y):
        """``Σ_i A_iᵀ Y A_i``."""
        out = np.zeros_like(Y)
        for A in self.A:
            out += A.T @ Y @ A
        return out

    def sweep(self, B):
        """``(I - 𝒮)⁻¹B = Σ_{k<T} 𝒮ᵏ(B)`` (``𝒮`` is nilpotent), by Horner's scheme."""
        C = B
        for _ in range(self.T - 1):
            C = B + self.shift(C)
        return C

    def sweep_adjoint(self, G):
        """``(I - 𝒮)⁻ᵀG`` on the free entries."""
        Y = G
        for _ in range(self.T - 1):
            Y = G + self.shift_adjoint(Y)
        return Y * self.mask

    def _times_c(self, c):
        """``X ↦ c̃ X = (I_J ⊗ c) X`` for ``X`` of shape ``(J·r, m)`` (one ``c`` per readout class)."""
        J, r = self.readouts, self.rank
        return lambda X: (c @ X.reshape(J, r, -1)).reshape(J * r, -1)

    def readout_fit(self, c):
        """The data term at ``A = M_v ∘ C_SS + κI`` by Woodbury (class docstring): ``a = A⁻¹y``,
        ``E = ½ yᵀa`` and ``A⁻¹`` as a solver."""
        times_c = self._times_c(c)
        lu = scipy.linalg.lu_factor(self.kappa * np.eye(len(self.BtB)) + times_c(self.BtB), check_finite=False)

        def solve(v):
            return (v - self.B @ scipy.linalg.lu_solve(lu, times_c(self.B.T @ v), check_finite=False)) / self.kappa

        a = solve(self.y)
        return WoodburyFit(0.5 * float(np.vdot(self.y, a)), a, solve)

    def readout_field(self, u, a):
        """``Qᵀ[M_v ∘ u aᵀ]_S Q = Σ_j (B_jᵀu)(B_jᵀa)ᵀ``."""
        r = self.rank
        Bu, Ba = (self.B.T @ u).reshape(-1, r), (self.B.T @ a).reshape(-1, r)
        return Bu.T @ Ba

    def readout_response(self, fit, dc, a):
        """``da = -A⁻¹ Σ_j B_j dc B_jᵀa``."""
        r = self.rank
        Ba = (self.B.T @ a).reshape(-1, r, a.shape[-1])
        return -fit.solve(self.B @ (dc @ Ba).reshape(-1, a.shape[-1]))


def layout(prob: Problem, C) -> DenseLayout | TimeLocalLayout | SupportLayout:
    """The layout for ``C`` and the kernels reachable from it: time-local when every class of
    :func:`invariant_components` is a single time step; otherwise dense, in the support's
    coordinates where the prior covariance is singular (:class:`SupportLayout`; the dense
    layout on the support where that is only numerically so, :func:`_support_shift`)."""
    labels = invariant_components(prob, np.asarray(C))
    if len(np.unique(labels)) == prob.T:
        per_step = None if prob.support.full else time_local_support_layout(prob)
        return TimeLocalLayout(prob) if per_step is None else per_step
    shift_factors = None if prob.support.full else _support_shift(prob)
    return DenseLayout(prob, labels) if shift_factors is None else SupportLayout(prob, labels, shift_factors)

