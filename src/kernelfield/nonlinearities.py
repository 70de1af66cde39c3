"""Registry of single-neuron nonlinearities ``phi``.

Every nonlinearity can be used by the finite-width networks (:mod:`kernelfield.networks`);
whether the mean-field solver supports it is recorded in ``Nonlinearity.solver_ready``.
New nonlinearities plug in with :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax.numpy as jnp
from jax.scipy.special import erf

__all__ = ["Nonlinearity", "register", "get_nonlinearity", "available"]


@dataclass(frozen=True)
class Nonlinearity:
    """A pointwise nonlinearity.

    name: registry key; fn: the function ``phi(h)`` (jax-traceable); odd: ``phi(-h) = -phi(h)``
    (then the symmetric, time-uncorrelated solution exists for endpoint tasks);
    solver_ready: whether :func:`kernelfield.solve` handles it.
    """

    name: str
    fn: Callable
    odd: bool
    solver_ready: bool = False


_REGISTRY: dict[str, Nonlinearity] = {}


def register(phi: Nonlinearity) -> Nonlinearity:
    """Add ``phi`` to the registry (replacing an entry of the same name)."""
    _REGISTRY[phi.name] = phi
    return phi


def available() -> list[str]:
    """Names of all registered nonlinearities."""
    return sorted(_REGISTRY)


def get_nonlinearity(phi: str | Nonlinearity) -> Nonlinearity:
    """Look ``phi`` up by name; raises ``ValueError`` naming the allowed values."""
    if isinstance(phi, Nonlinearity):
        return phi
    if not isinstance(phi, str) or phi not in _REGISTRY:
        raise ValueError(f"phi: unknown nonlinearity {phi!r}; allowed: {', '.join(available())}")
    return _REGISTRY[phi]


register(Nonlinearity("linear", lambda h: h, odd=True, solver_ready=True))
register(Nonlinearity("erf", erf, odd=True))
register(Nonlinearity("tanh", jnp.tanh, odd=True))
register(Nonlinearity("relu", lambda h: jnp.maximum(h, 0.0), odd=False))
