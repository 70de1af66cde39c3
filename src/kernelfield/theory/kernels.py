"""The maps from a representational kernel ``C`` to the prior covariance ``K(C)`` and the
readout covariance ``G(C)`` (THEORY.md §3). The sharing pattern enters only through masks.

Three layouts hold kernels for the closed-form derivatives of :mod:`.action` (numpy):
:class:`DenseLayout` (``(n, n)`` matrices), :class:`TimeLocalLayout` (``(T, P, P)`` stacks of
equal-time blocks, for kernels that are time-block diagonal) and :class:`SupportLayout` (``(r, r)``
matrices in an orthonormal basis of the support below, for dense kernels of a singular prior
covariance); :func:`layout` picks one by the blocks a kernel can reach
(:func:`invariant_components`) and the support's rank.

Rank-deficient prior covariances (THEORY.md §3; more sequences than input dimensions, duplicate
sequences, inputs that are combinations of others). Every kernel with a finite action lives on
one subspace ``R`` of ``R^n``, the range of the prior kernel ``C₀ = (I - 𝒮)⁻¹K_in``
(:class:`Support`): ``Gamma < ∞`` needs ``range C = range K(C)``, so ``range C`` is a fixed
point of ``R ↦ range(K_in + 𝒮(Π_R))``, and by causality (the first ``t + 1`` time blocks of
``K`` depend only on the first ``t`` of ``C``) that fixed point is unique: ``R = range C₀``.
``𝒮`` maps ``Sym(R)`` (symmetric matrices with range in ``R``) into itself, so the innovation
``D = C - K(C)`` lives there too. The layouts hold ``Π`` (projector onto ``R``) and ``P⊥ = I - Π``
and the action is evaluated with ``C + P⊥`` and ``K + P⊥`` in place of ``C`` and ``K``: for
``C, K ∈ Sym(R)`` positive definite on ``R``, ``(K + P⊥)⁻¹ = K⁺ + P⊥`` and
``log det(K + P⊥) = log pdet K``, so the Wishart rate on the support,
``½[tr(K⁺C) - log pdet C + log pdet K - r]`` (``r = dim R``), needs no other change; gradients
are projected onto ``Sym(R)`` (:meth:`DenseLayout.sweep_adjoint`). With full rank ``Π = I``,
``P⊥ = 0`` and nothing is added or projected (the same code path, the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ..spec import Architecture, Prior, Task, check_compatible
from ..validation import positive_real
from .linalg import data_fit

__all__ = ["Problem", "Support", "kernel_support", "make_problem", "shift", "shift_adjoint", "invariant_components", "layout", "DenseLayout",
           "TimeLocalLayout", "SupportLayout"]

#: Pivoted-Cholesky tolerance of :func:`_range_basis`: a direction belongs to the support when its
#: squared distance from the span of those before it exceeds this, relative to its own norm.
SUPPORT_RTOL = 1e-10


@partial(jax.tree_util.register_dataclass, data_fields=["MW", "Mv", "K_in", "supervised", "y", "kappa", "components"],
         meta_fields=["T", "P"])
@dataclass(frozen=True)
class Problem:
    """Everything the theory needs, flattened to the time-major index ``t*P + a``.

    MW: ``g² [W_t ≡ W_s]`` expanded to (n, n); Mv: ``σ_v² [v_t ≡ v_s]`` (n, n);
    K_in: input and bias part of ``K`` (does not depend on ``C``);
    supervised: the supervised flat indices; y: targets on them; components: label per time
    step of the connected components of the time-coupling graph (cross-time kernel blocks between
    different components do not enter the action and vanish at its maximum).

    A JAX pytree: ``T`` and ``P`` are static, the arrays and ``kappa`` are leaves, so a problem
    passes through ``jax.jit`` as an argument.
    """

    T: int
    P: int
    MW: np.ndarray
    Mv: np.ndarray
    K_in: np.ndarray
    supervised: np.ndarray
    y: np.ndarray
    kappa: float
    components: np.ndarray

    @property
    def n(self) -> int:
        return self.T * self.P

    @property
    def couples_steps(self) -> bool:
        """Whether anything couples two time steps (a coupled component spanning several steps:
        a shared ``W``, inputs or biases correlated across steps, a readout shared between
        supervised steps). Without it (a DNN) the cross-time Hessian of ``S`` is ``-I``."""
        return not np.array_equal(self.components, np.arange(self.T))

    @property
    def direct_step_coupling(self) -> str | None:
        """What, besides ``W``, correlates two different time steps directly: ``"inputs"`` (inputs
        or biases shared between steps: a nonzero cross-time block of ``K_in``), ``"readout"`` (a
        readout shared between different supervised steps) or ``None``. Without it the
        time-symmetric (time-block-diagonal) subspace can be invariant."""
        T, P = self.T, self.P
        if np.abs(self.K_in).reshape(T, P, T, P).max(axis=(1, 3))[~np.eye(T, dtype=bool)].max(initial=0.0) > 0:
            return "inputs"
        step = self.supervised // P
        readout = np.abs(self.Mv[np.ix_(self.supervised, self.supervised)])[step[:, None] != step[None, :]]
        return "readout" if readout.max(initial=0.0) > 0 else None

    def K(self, C):
        """``K(C) = g² M_W ∘ shift(C) + σ_u² M_U ∘ x xᵀ/D + σ_b² M_b``."""
        return self.MW * shift(C, self.P) + self.K_in

    def G_S(self, C):
        """``G_S(C) = (σ_v² M_v ∘ C)`` restricted to the supervised set."""
        return (self.Mv * C)[np.ix_(self.supervised, self.supervised)]

    def block_mask(self) -> np.ndarray:
        """(n, n) 0/1 mask of kernel entries within one coupled component."""
        c = self.components
        return np.kron((c[:, None] == c[None, :]).astype(np.float64), np.ones((self.P, self.P)))

    @cached_property
    def support(self) -> "Support":
        """The subspace every kernel with a finite action lives on (:class:`Support`)."""
        return _prior_support(self)


@dataclass(frozen=True)
class Support:
    """The range ``R`` of the prior kernel ``C₀ = (I - 𝒮)⁻¹K_in``, on which ``C``, ``K(C)`` and the
    innovation live (module docstring), per class of the prior kernel's time partition
    (:func:`invariant_components` at ``C = 0``): ``classes`` holds the flat indices of each class,
    ``bases`` an orthonormal basis of ``R`` restricted to it (``(len(idx), r_c)``), or ``None`` where
    that is the whole class. ``rank = dim R``; ``full``: ``R = R^n``."""

    n: int
    P: int
    classes: tuple[np.ndarray, ...]
    bases: tuple[np.ndarray | None, ...]

    @property
    def rank(self) -> int:
        return int(sum(len(idx) if Q is None else Q.shape[1] for idx, Q in zip(self.classes, self.bases)))

    @property
    def full(self) -> bool:
        return self.rank == self.n

    @cached_property
    def basis(self) -> np.ndarray | None:
        """Orthonormal basis ``(n, r)`` of ``R`` (block diagonal over the classes); ``None`` if full."""
        if self.full:
            return None
        columns = []
        for idx, Q in zip(self.classes, self.bases):
            block = np.zeros((self.n, len(idx) if Q is None else Q.shape[1]))
            block[idx] = np.eye(len(idx)) if Q is None else Q
            columns.append(block)
        return np.hstack(columns)

    @cached_property
    def complement(self) -> np.ndarray | None:
        """``P⊥ = I - Π`` ``(n, n)``; ``None`` if full."""
        if self.full:
            return None
        out = np.zeros((self.n, self.n))
        for idx, Q in zip(self.classes, self.bases):
            if Q is not None:
                out[np.ix_(idx, idx)] = np.eye(len(idx)) - Q @ Q.T
        return out

    @cached_property
    def time_local(self) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
        """Per time step (where the classes are single steps): bases ``(T, P, r_max)`` (zero
        columns pad the steps of lower rank) and ``P⊥`` ``(T, P, P)``; ``(None, None)`` if full."""
        if self.full:
            return None, None
        T, P = self.n // self.P, self.P
        if len(self.classes) != T:
            raise ValueError("layout: the support couples time steps, so kernels on it are not time-local")
        r_max = max(P if Q is None else Q.shape[1] for Q in self.bases)
        bases, complements = np.zeros((T, P, r_max)), np.zeros((T, P, P))
        for idx, Q in zip(self.classes, self.bases):
            t = idx[0] // P
            Q = np.eye(P) if Q is None else Q
            bases[t, :, : Q.shape[1]] = Q
            complements[t] = np.eye(P) - Q @ Q.T
        return bases, complements


def _range_basis(C: np.ndarray, rtol: float = SUPPORT_RTOL) -> np.ndarray | None:
    """Orthonormal basis of the range of a positive semidefinite ``C``, ``None`` if it has full
    rank. Rank by pivoted Cholesky (LAPACK ``pstrf``) of the correlation matrix
    ``diag(C)^-½ C diag(C)^-½`` (kernels that grow or decay in time compared on one scale; rows
    with zero variance are outside the range), stopped where the largest remaining pivot, a
    squared relative distance from the span of the pivots before it, is below ``rtol``."""
    m = len(C)
    d = np.diagonal(C)
    live = np.flatnonzero(d > 0)
    if not len(live):
        return np.zeros((m, 0))
    s = np.sqrt(d[live])
    L, piv, rank, _ = scipy.linalg.lapack.dpstrf(C[np.ix_(live, live)] / np.outer(s, s), tol=rtol, lower=1)
    if rank == m:
        return None
    order = piv - 1  # C[live][:, live][order][:, order] = L Lᵀ
    factor = np.zeros((m, rank))
    factor[live[order]] = s[order, None] * np.tril(L)[:, :rank]
    return np.linalg.qr(factor)[0]


def _prior_support(prob: Problem) -> Support:
    """:class:`Support` from the prior kernel ``(I - 𝒮)⁻¹K_in``, swept per time step where the
    prior partition is time-local (``O(T P³)``), as a dense ``(n, n)`` kernel otherwise."""
    T, P = prob.T, prob.P
    labels = invariant_components(prob, np.zeros((prob.n, prob.n)))
    steps = [np.flatnonzero(labels == label) for label in np.unique(labels)]
    classes = tuple(np.concatenate([np.arange(t * P, (t + 1) * P) for t in ts]) for ts in steps)
    if len(steps) == T:
        w = np.diagonal(prob.MW[::P, ::P])
        K_in = prob.K_in.reshape(T, P, T, P)
        blocks, c = [], np.zeros((P, P))
        for t in range(T):
            c = K_in[t, :, t, :] + w[t] * c
            blocks.append(c)
        blocks = [blocks[ts[0]] for ts in steps]
    else:
        C0 = _causal_sweep(prob.MW[::P, ::P], prob.K_in, T, P)
        blocks = [C0[np.ix_(idx, idx)] for idx in classes]
    return Support(prob.n, P, classes, tuple(_range_basis(sym(block)) for block in blocks))


def kernel_support(prob: Problem, kernel: np.ndarray) -> Support:
    """:class:`Support` of the range of a positive semidefinite ``kernel`` ``(n, n)`` per class of
    the prior kernel's time partition (as :attr:`Problem.support`, which is that of
    ``(I - 𝒮)⁻¹K_in``): for the Gaussian closure, the range of its lazy preactivation kernel."""
    labels = invariant_components(prob, np.zeros((prob.n, prob.n)))
    classes = tuple(np.concatenate([np.arange(t * prob.P, (t + 1) * prob.P) for t in np.flatnonzero(labels == label)])
                    for label in np.unique(labels))
    kernel = np.asarray(kernel, dtype=np.float64)
    return Support(prob.n, prob.P, classes, tuple(_range_basis(sym(kernel[np.ix_(idx, idx)])) for idx in classes))


def _causal_sweep(MW: np.ndarray, B, T: int, P: int) -> np.ndarray:
    """``(I - 𝒮)⁻¹B`` for ``(n, n)`` ``B``: ``C_ts = B_ts + MW_ts C_{t-1,s-1}`` (``MW`` time-level
    ``g²[W_t ≡ W_s]``), one row of blocks after another."""
    C = np.array(B, dtype=np.float64)
    blocks = C.reshape(T, P, T, P)
    for t in range(1, T):
        blocks[t, :, 1:, :] += MW[t, 1:, None] * blocks[t - 1, :, :-1, :]
    return C


def shift(C, P: int):
    """Move block ``(t-1, s-1)`` to ``(t, s)``; rows/columns at ``t = 0`` become 0."""
    return jnp.pad(C[: C.shape[0] - P, : C.shape[1] - P], ((P, 0), (P, 0)))


def shift_adjoint(D, P: int):
    """Adjoint of :func:`shift`: move block ``(t, s)`` to ``(t-1, s-1)`` (``shiftᵀ``)."""
    return jnp.pad(D[P:, P:], ((0, P), (0, P)))


def _components(arch: Architecture, K_in_blocks: np.ndarray, supervised_times: np.ndarray) -> np.ndarray:
    """Connected components of the graph on time steps with an edge (t, s) whenever block
    ``C_ts`` enters the action: through ``K`` (``W_{t+1} ≡ W_{s+1}``), through ``tr(K⁻¹C)``
    wherever ``K`` itself couples t and s (``W_t ≡ W_s``, or a nonzero input/bias block), or
    through a readout shared between supervised steps. Between components ``C`` is zero at the
    maximum of ``S`` (Fischer's inequality: only ``log det C`` sees those blocks)."""
    T = arch.T
    MW = arch.mask("W") > 0
    adj = MW | (K_in_blocks > 0)
    adj[: T - 1, : T - 1] |= MW[1:, 1:]
    sup = np.zeros(T, dtype=bool)
    sup[supervised_times] = True
    adj |= (arch.mask("v") > 0) & sup[:, None] & sup[None, :]
    return _connected(adj)


def _connected(adj: np.ndarray) -> np.ndarray:
    """Label per node of the connected components of the graph with adjacency ``adj`` (T, T);
    each component is labelled by its smallest node."""
    T = len(adj)
    labels = -np.ones(T, dtype=int)
    for start in range(T):
        if labels[start] >= 0:
            continue
        stack = [start]
        labels[start] = start
        while stack:
            t = stack.pop()
            for s in np.flatnonzero(adj[t]):
                if labels[s] < 0:
                    labels[s] = start
                    stack.append(s)
    return labels


def invariant_components(prob: Problem, C0: np.ndarray) -> np.ndarray:
    """Label per time step of the finest partition whose blocks hold every kernel reachable from
    ``C0`` by a gradient or Newton method on ``S``.

    Time steps t and s are joined wherever ``C0``, ``K_in`` or the readout (supervised steps
    sharing ``v``) has a nonzero block ``(t, s)``, and the partition is closed under the maps of
    the action: ``t ~ s`` joins ``t+1 ~ s+1`` when ``W_{t+1} ≡ W_{s+1}`` (``K = 𝒮(C) + K_in``)
    and ``t-1 ~ s-1`` when ``W_t ≡ W_s`` (``𝒮ᵀ`` in the backward field). Matrices supported on
    the blocks within the classes are closed under sums, products and inverses, so ``C``, ``K``,
    the gradient of ``S`` and its Hessian-vector products all stay there: the iterates never
    leave. The classes refine :attr:`Problem.components`; e.g. an RNN started from its prior
    kernel on a task with inputs only at ``t = 0`` and targets at one step keeps a
    time-block-diagonal kernel (the symmetric branch)."""
    T, P = prob.T, prob.P
    W = prob.MW[::P, ::P] != 0
    sup = np.zeros(T, dtype=bool)
    sup[np.unique(prob.supervised // P)] = True
    blocks = lambda M: np.abs(M).reshape(T, P, T, P).max(axis=(1, 3)) > 0  # noqa: E731
    adj = blocks(C0) | blocks(prob.K_in) | ((prob.Mv[::P, ::P] != 0) & sup[:, None] & sup[None, :])
    while True:
        labels = _connected(adj)
        same = labels[:, None] == labels[None, :]
        closed = same.copy()
        closed[1:, 1:] |= same[:-1, :-1] & W[1:, 1:]
        closed[:-1, :-1] |= same[1:, 1:] & W[1:, 1:]
        if np.array_equal(closed, same):
            return labels
        adj = closed


def make_problem(arch: Architecture, task: Task, prior: Prior, kappa: float) -> Problem:
    """Assemble masks, input kernel and supervision; validates ``kappa``. The input kernel may be
    singular (``P > D``, repeated or linearly dependent inputs): kernels then live on
    :attr:`Problem.support`."""
    check_compatible(arch, task)
    kappa = positive_real("kappa", kappa)
    T, P, D = task.T, task.P, task.D
    ones = np.ones((P, P))
    X = task.inputs.transpose(1, 0, 2).reshape(T * P, D)  # time-major rows
    K_in = prior.sigma_u**2 * np.kron(arch.mask("U"), ones) * (X @ X.T) / D
    K_in = K_in + prior.sigma_b**2 * np.kron(arch.mask("b"), ones)
    supervised = task.supervised
    return Problem(
        T=T,
        P=P,
        MW=prior.g**2 * np.kron(arch.mask("W"), ones),
        Mv=prior.sigma_v**2 * np.kron(arch.mask("v"), ones),
        K_in=K_in,
        supervised=supervised,
        y=task.y_supervised,
        kappa=kappa,
        components=_components(arch, np.abs(K_in).reshape(T, P, T, P).max(axis=(1, 3)), np.unique(supervised // P)),
    )


def sym(X):
    """Symmetric part of a matrix, or of each matrix of a stack ``(..., m, m)``."""
    return 0.5 * (X + np.swapaxes(X, -1, -2))


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
        """``Π X Π = Q(QᵀXQ)Qᵀ`` (each matrix of a stack)."""
        if self.basis is None:
            return X
        Q, Qt = self.basis, np.swapaxes(self.basis, -1, -2)
        return Q @ (Qt @ X @ Q) @ Qt


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
        return _causal_sweep(self.MW, B, self.T, self.P)

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
        T, P = prob.T, prob.P
        self.T, self.P, self.n = T, P, prob.n
        self.w = np.diagonal(prob.MW[::P, ::P]).copy()
        self.rank = prob.support.rank
        self.basis, self.complement = prob.support.time_local
        self.K_in = self.restrict(prob.K_in)
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


def _psd_columns(M: np.ndarray, rtol: float = 1e-12) -> np.ndarray:
    """Columns ``√λ e`` of a positive semidefinite matrix (eigenpairs with ``λ > rtol·λ_max``):
    ``M = Σ (√λ e)(√λ e)ᵀ``."""
    lam, E = np.linalg.eigh(0.5 * (M + M.T))
    keep = lam > rtol * max(lam[-1], 0.0) if len(lam) else np.zeros(0, dtype=bool)
    return E[:, keep] * np.sqrt(lam[keep])


def _support_shift(prob: Problem, rtol: float = 1e-8) -> list[np.ndarray] | None:
    """The shift in the support's coordinates: ``A_i = QᵀO_iQ`` for ``𝒮(X) = Σ_i O_i X O_iᵀ``
    (:class:`SupportLayout`), or ``None`` where some ``O_iQ`` leaves the span of ``Q`` by more than
    ``rtol`` relative: the support's numerical rank cut (:data:`SUPPORT_RTOL`) dropped directions
    that the shift reaches (a nearly but not exactly singular prior covariance)."""
    P, Q = prob.P, prob.support.basis
    blocks = Q.reshape(prob.T, P, -1)
    factors = []
    for w in _psd_columns(prob.MW[::P, ::P][1:, 1:]).T:
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
        u = _psd_columns(prob.Mv[::P, ::P])[time_of]  # (|S|, J): M_v on S = Σ_j u_j u_jᵀ
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
        return TimeLocalLayout(prob)
    shift_factors = None if prob.support.full else _support_shift(prob)
    return DenseLayout(prob, labels) if shift_factors is None else SupportLayout(prob, labels, shift_factors)

