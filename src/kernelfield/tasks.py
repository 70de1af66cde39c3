"""Seeded task generators returning :class:`kernelfield.Task` (THEORY.md §1).

* :func:`endpoint_patterns` — DNN-typical "patterns": input only at ``t = 0``, target only at
  ``t = T-1`` (endpoint supervision).
* :func:`integration` — a sequential task: inputs at every step, the target is the (scaled)
  running sum of the first input coordinate, supervised on a subset of the steps.

Every generator is deterministic given ``seed`` (``numpy.random.default_rng(seed)``) and
validates its arguments, raising ``ValueError`` messages that start with the argument name.
:data:`TASKS` maps the names used in configuration files to the generators.
"""

from __future__ import annotations

import numbers
from typing import Callable

import numpy as np

from .spec import Task

__all__ = ["endpoint_patterns", "integration", "TASKS"]


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
    return int(value)


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"seed: must be an integer >= 0, got {value!r}")
    return int(value)


def _nonnegative_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a real number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
    return value


def endpoint_patterns(P: int, T: int, D: int, target_scale: float = 1.0, seed: int = 0) -> Task:
    """``P`` random patterns presented at ``t = 0`` and read out at ``t = T-1``.

    inputs: ``x_a(0) ~ N(0, I_D)`` i.i.d., ``x_a(t) = 0`` for ``t >= 1``.
    targets: ``y_a(T-1) = ±target_scale`` with balanced signs (``+`` for ``ceil(P/2)``
    patterns, ``-`` for the rest, assigned in a seeded random order); every other step is
    ``NaN`` (unsupervised). ``target_scale`` sets the learning signal (``0`` = lazy limit).
    """
    P, T, D = _positive_int("P", P), _positive_int("T", T), _positive_int("D", D)
    target_scale = _nonnegative_real("target_scale", target_scale)
    rng = np.random.default_rng(_seed(seed))
    inputs = np.zeros((P, T, D))
    inputs[:, 0, :] = rng.standard_normal((P, D))
    signs = rng.permutation(np.where(np.arange(P) % 2 == 0, 1.0, -1.0))
    targets = np.full((P, T), np.nan)
    targets[:, T - 1] = target_scale * signs
    return Task(inputs, targets)


def integration(P: int, T: int, D: int = 1, supervise_every: int = 2, seed: int = 0, noise: float = 0.0) -> Task:
    """Running-sum (integration) task on ``P`` sequences of length ``T``.

    inputs: ``x_a(t) ~ N(0, I_D)`` i.i.d. at every step.
    targets: ``y_a(t) = (sum_{s <= t} x_a(s)[0]) / sqrt(t + 1)`` (unit variance at every step),
    plus ``noise · N(0, 1)`` label noise, given on every ``supervise_every``-th step — the steps
    ``t = supervise_every - 1, 2·supervise_every - 1, ...`` (so ``supervise_every = 1``
    supervises every step and ``supervise_every = 2`` the steps ``1, 3, 5, ...``); all other
    steps are ``NaN`` (unsupervised), which is where the theory predicts interpolation.
    ``supervise_every`` must be ``<= T`` so that at least one step is supervised. The theory
    needs a non-singular input kernel at ``t = 0``: use ``D >= P`` (or a bias, ``sigma_b > 0``).
    """
    P, T, D = _positive_int("P", P), _positive_int("T", T), _positive_int("D", D)
    supervise_every = _positive_int("supervise_every", supervise_every)
    if supervise_every > T:
        raise ValueError(
            f"supervise_every: must be <= T = {T} so that at least one step is supervised, got {supervise_every}"
        )
    noise = _nonnegative_real("noise", noise)
    rng = np.random.default_rng(_seed(seed))
    inputs = rng.standard_normal((P, T, D))
    running = np.cumsum(inputs[:, :, 0], axis=1) / np.sqrt(np.arange(1, T + 1))
    running = running + noise * rng.standard_normal((P, T))
    targets = np.full((P, T), np.nan)
    steps = np.arange(supervise_every - 1, T, supervise_every)
    targets[:, steps] = running[:, steps]
    return Task(inputs, targets)


#: Task generators by name (the ``generator`` key of a configuration file's ``[task]`` table).
#: Every generator takes ``P``, ``T`` and ``seed`` plus its own keyword arguments.
TASKS: dict[str, Callable[..., Task]] = {
    "endpoint_patterns": endpoint_patterns,
    "integration": integration,
}
