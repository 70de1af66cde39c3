"""The maps from a representational kernel ``C`` to the prior covariance ``K(C)`` and the
readout covariance ``G(C)`` (THEORY.md §3). The sharing pattern enters only through masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from ..spec import Architecture, Prior, Task, check_compatible

__all__ = ["Problem", "make_problem", "shift", "shift_adjoint"]


@dataclass(frozen=True)
class Problem:
    """Everything the theory needs, flattened to the time-major index ``t*P + a``.

    MW: ``g² [W_t ≡ W_s]`` expanded to (n, n); Mv: ``σ_v² [v_t ≡ v_s]`` (n, n);
    K_in: input and bias part of ``K`` (does not depend on ``C``);
    S: supervised flat indices; y: targets on ``S``; components: label per time step of the
    connected components of the time-coupling graph (cross-time kernel blocks between
    different components do not enter the action and vanish at its maximum).
    """

    T: int
    P: int
    MW: np.ndarray
    Mv: np.ndarray
    K_in: np.ndarray
    S: np.ndarray
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
        """``G_S(C) = (σ_v² M_v ∘ C)`` restricted to the supervised set ``S``."""
        return (self.Mv * C)[np.ix_(self.S, self.S)]

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


def make_problem(arch: Architecture, task: Task, prior: Prior, kappa: float) -> Problem:
    """Assemble masks, input kernel and supervision; validates ``kappa`` and that the
    input kernel at ``t = 0`` is positive definite (otherwise ``K(C)`` is singular)."""
    check_compatible(arch, task)
    kappa = _positive("kappa", kappa)
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
    S = task.supervised
    return Problem(
        T=T,
        P=P,
        MW=prior.g**2 * np.kron(arch.mask("W"), ones),
        Mv=prior.sigma_v**2 * np.kron(arch.mask("v"), ones),
        K_in=K_in,
        S=S,
        y=task.y_supervised,
        kappa=kappa,
        components=_components(arch, np.abs(K_in).reshape(T, P, T, P).max(axis=(1, 3)), np.unique(S // P)),
    )


def _positive(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a real number > 0, got {value!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: must be finite and > 0, got {value}")
    return value
