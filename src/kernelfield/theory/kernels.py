"""The maps from a representational kernel ``C`` to the prior covariance ``K(C)`` and the
readout covariance ``G(C)`` (THEORY.md §3). The sharing pattern enters only through masks.

Two layouts hold kernels for the closed-form derivatives of :mod:`.action` (numpy):
:class:`DenseLayout` (``(n, n)`` matrices) and :class:`TimeLocalLayout` (``(T, P, P)`` stacks of
equal-time blocks, for kernels that are time-block diagonal); :func:`layout` picks one by the
blocks a kernel can reach (:func:`invariant_components`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from ..spec import Architecture, Prior, Task, check_compatible
from ..validation import positive_real

__all__ = ["Problem", "make_problem", "shift", "shift_adjoint", "invariant_components", "layout", "DenseLayout", "TimeLocalLayout"]


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
    """Assemble masks, input kernel and supervision; validates ``kappa`` and that the
    input kernel at ``t = 0`` is positive definite (otherwise ``K(C)`` is singular)."""
    check_compatible(arch, task)
    kappa = positive_real("kappa", kappa)
    T, P, D = task.T, task.P, task.D
    ones = np.ones((P, P))
    X = task.inputs.transpose(1, 0, 2).reshape(T * P, D)  # time-major rows
    K_in = prior.sigma_u**2 * np.kron(arch.mask("U"), ones) * (X @ X.T) / D
    K_in = K_in + prior.sigma_b**2 * np.kron(arch.mask("b"), ones)
    K0 = K_in[:P, :P]
    eig_min = np.linalg.eigvalsh(K0)[0] if P else 1.0
    if eig_min <= 1e-10 * max(1.0, np.abs(K0).max()):
        raise ValueError(
            "inputs: the input kernel at t = 0 (sigma_u² x(0)·x(0)ᵀ/D + sigma_b²) is singular "
            f"(smallest eigenvalue {eig_min:.2e}); use distinct, linearly independent inputs with "
            "D >= P, or add a bias (sigma_b > 0)"
        )
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


class DenseLayout:
    """Kernels as ``(n, n)`` arrays whose free blocks are those within one class of ``labels``
    (a partition of the time steps, :func:`invariant_components`), with
    ``𝒮(X)_ts = g²[W_t ≡ W_s] X_{t-1,s-1}``, so ``K(C) = K_in + 𝒮(C)``. The readout sees
    ``C_SS`` with the weights ``σ_v²[v_t ≡ v_s]`` (``Mv_S``)."""

    def __init__(self, prob: Problem, labels: np.ndarray):
        T, P = prob.T, prob.P
        self.T, self.P, self.n = T, P, prob.n
        self.MW = prob.MW[::P, ::P]  # time-level g²[W_t ≡ W_s]
        self.labels = np.repeat(np.asarray(labels), P)  # class of each flat index t*P + a
        self.mask = (self.labels[:, None] == self.labels[None, :]).astype(np.float64)
        self.K_in = prob.K_in
        self.supervised = prob.supervised
        self.Mv_S = prob.Mv[np.ix_(prob.supervised, prob.supervised)]
        self.y = prob.y[:, None]
        self.kappa = prob.kappa

    def _blocks(self, X):
        return X.reshape(self.T, self.P, self.T, self.P)

    def restrict(self, C):
        """The free part of an ``(n, n)`` kernel."""
        return sym(np.asarray(C, dtype=np.float64)) * self.mask

    def full(self, X):
        """As an ``(n, n)`` array."""
        return X

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
        C = np.array(B, dtype=np.float64)
        blocks = self._blocks(C)
        for t in range(1, self.T):
            blocks[t, :, 1:, :] += self.MW[t, 1:, None] * blocks[t - 1, :, :-1, :]
        return C

    def sweep_adjoint(self, G):
        """``(I - 𝒮)⁻ᵀG`` (backward in time: ``G_ts + g²[W_{t+1} ≡ W_{s+1}] (·)_{t+1,s+1}``),
        restricted to the free blocks."""
        G = np.array(G, dtype=np.float64)
        blocks = self._blocks(G)
        for t in range(self.T - 2, -1, -1):
            blocks[t, :, :-1, :] += self.MW[t + 1, 1:, None] * blocks[t + 1, :, 1:, :]
        return G * self.mask

    def select(self, C):
        """``C_SS``."""
        return C[np.ix_(self.supervised, self.supervised)]

    def embed(self, M):
        """``[M]_S``: ``M`` on ``S x S``, zero elsewhere."""
        out = np.zeros((self.n, self.n))
        out[np.ix_(self.supervised, self.supervised)] = M
        return out


class TimeLocalLayout:
    """Time-block-diagonal kernels as ``(T, P, P)`` stacks of their equal-time blocks ``c_t``,
    for kernels whose classes of :func:`invariant_components` are single time steps (a DNN; an
    RNN's time-symmetric branch): ``c_t = w_t c_{t-1} + b_t`` with ``w_t = g²[W_t ≡ W_t]``, and
    the readout of step t sees only ``c_t`` (``y`` and ``Mv_S`` padded with zeros on the
    unsupervised patterns, so ``G_S + κI`` is a ``(T, P, P)`` stack). Every operation costs
    ``O(T P³)`` instead of ``O((TP)³)``."""

    def __init__(self, prob: Problem):
        T, P = prob.T, prob.P
        self.T, self.P, self.n = T, P, prob.n
        self.w = np.diagonal(prob.MW[::P, ::P]).copy()
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
        """The equal-time blocks of an ``(n, n)`` kernel."""
        T, P = self.T, self.P
        blocks = sym(np.asarray(C, dtype=np.float64)).reshape(T, P, T, P)
        return blocks[np.arange(T), :, np.arange(T), :]

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
        return (self.sweep_matrix.T @ G.reshape(self.T, -1)).reshape(G.shape)

    def select(self, C):
        return C

    def embed(self, M):
        return M


def layout(prob: Problem, C) -> DenseLayout | TimeLocalLayout:
    """The layout for ``C`` and the kernels reachable from it: time-local when every class of
    :func:`invariant_components` is a single time step."""
    labels = invariant_components(prob, np.asarray(C))
    return TimeLocalLayout(prob) if len(np.unique(labels)) == prob.T else DenseLayout(prob, labels)

