"""The maps from a representational kernel ``C`` to the prior covariance ``K(C)`` and the
readout covariance ``G(C)`` (THEORY.md §3). The sharing pattern enters only through masks.

The layouts that hold kernels for the closed-form derivatives of :mod:`.action` are in
:mod:`.layouts`.

Rank-deficient prior covariances (THEORY.md §3; more sequences than input dimensions, duplicate
sequences, inputs that are combinations of others). Every kernel with a finite action lives on
one subspace ``R`` of ``R^n``, the range of the prior kernel ``C₀ = (I - 𝒮)⁻¹K_in``
(:class:`Support`): ``Gamma < ∞`` needs ``range C = range K(C)``, so ``range C`` is a fixed
point of ``R ↦ range(K_in + 𝒮(Π_R))``, and by causality (the first ``t + 1`` time blocks of
``K`` depend only on the first ``t`` of ``C``) that fixed point is unique: ``R = range C₀``.
``𝒮`` maps ``Sym(R)`` (symmetric matrices with range in ``R``) into itself, so the innovation
``D = C - K(C)`` lives there too. How the layouts of :mod:`.layouts` take the action on ``R``
is described there.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ..spec import Architecture, Prior, Task, check_compatible
from ..validation import positive_real

__all__ = ["Problem", "Support", "kernel_support", "make_problem", "shift", "shift_adjoint", "invariant_components",
           "causal_sweep", "sym"]

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
        C0 = causal_sweep(prob.MW[::P, ::P], prob.K_in, T, P)
        blocks = [C0[np.ix_(idx, idx)] for idx in classes]
    return Support(prob.n, P, classes, tuple(_range_basis(sym(block)) for block in blocks))


def kernel_support(prob: Problem, kernel: np.ndarray, rtol: float = SUPPORT_RTOL) -> Support:
    """:class:`Support` of the range of a positive semidefinite ``kernel`` ``(n, n)`` per class of
    the prior kernel's time partition (as :attr:`Problem.support`, which is that of
    ``(I - 𝒮)⁻¹K_in``), rank cut at the pivot ``rtol`` (:func:`_range_basis`): for the Gaussian
    closure, the range of its lazy preactivation kernel or of a trained one."""
    labels = invariant_components(prob, np.zeros((prob.n, prob.n)))
    classes = tuple(np.concatenate([np.arange(t * prob.P, (t + 1) * prob.P) for t in np.flatnonzero(labels == label)])
                    for label in np.unique(labels))
    kernel = np.asarray(kernel, dtype=np.float64)
    return Support(prob.n, prob.P, classes, tuple(_range_basis(sym(kernel[np.ix_(idx, idx)]), rtol) for idx in classes))


def causal_sweep(MW: np.ndarray, B, T: int, P: int) -> np.ndarray:
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
