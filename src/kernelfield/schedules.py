"""Supervision schedules: which ``(a, t)`` of a task are shown to the network (THEORY.md §1:
the supervised set ``S``; every other pair is unsupervised and is where the theory predicts
generalisation).

A :class:`Schedule` gives a ``(P, T)`` boolean mask (``True`` = supervised) for any task size;
:meth:`Schedule.apply` keeps a task's targets on the mask and sets the rest to ``NaN``
(entries the task itself leaves undefined stay ``NaN``). Schedules combine with ``&``
(supervised only where both are). Masks are *row-consistent*: row ``a`` gets the same mask
whatever ``P`` is, so the first ``P`` rows of a larger pool see the same supervision (nested
learning curves).

* :func:`every` — every ``k``-th step (``t = k-1, 2k-1, ...`` by default);
* :func:`first` / :func:`last` — the first / last ``k`` steps;
* :func:`random` — a random subset of ``round(fraction·T)`` steps per sequence (seeded);
* :func:`held_out` — the last ``n`` sequences entirely unsupervised (new sequences);
* :func:`all_steps` — everything the task defines.

:data:`SCHEDULES` maps the ``kind`` names of configuration files to these constructors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .validation import integer, real_in
from .validation import seed as check_seed

__all__ = ["Schedule", "every", "first", "last", "random", "held_out", "all_steps", "supervise", "SCHEDULES"]


class Schedule:
    """Base class: subclasses implement :meth:`mask`. ``label`` names the schedule in results
    and figures."""

    label: str = "schedule"

    def mask(self, P: int, T: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __and__(self, other: "Schedule") -> "Schedule":
        if not isinstance(other, Schedule):
            return NotImplemented
        return _Both(self, other)

    def fraction(self, T: int) -> float:
        """Fraction of the steps of one (not held-out) sequence that are supervised."""
        return float(self.mask(1, T)[0].mean())

    def apply(self, task):
        """``task`` with its targets kept on the mask and ``NaN`` elsewhere; a
        :class:`~kernelfield.tasks.LabelledTask` keeps its truth. Raises ``ValueError`` when
        nothing would remain supervised."""
        mask = self.mask(task.P, task.T)
        targets = np.where(mask, task.targets, np.nan)
        if np.all(np.isnan(targets)):
            raise ValueError(f"schedule: {self.label} leaves no supervised (a, t) on this task "
                             f"(P = {task.P}, T = {task.T}); supervise more steps")
        if hasattr(task, "with_targets"):
            return task.with_targets(targets)
        return type(task)(task.inputs, targets)

    def __repr__(self) -> str:
        return f"<Schedule {self.label}>"


@dataclass(frozen=True, repr=False)
class _Both(Schedule):
    left: Schedule
    right: Schedule

    @property
    def label(self) -> str:
        return f"{self.left.label} & {self.right.label}"

    def mask(self, P: int, T: int) -> np.ndarray:
        return self.left.mask(P, T) & self.right.mask(P, T)


@dataclass(frozen=True, repr=False)
class _Steps(Schedule):
    """The same steps for every sequence."""

    kind: str
    k: int
    offset: int = 0

    @property
    def label(self) -> str:
        if self.kind == "every":
            return f"every {self.k}" + (f" from {self.offset}" if self.offset != self.k - 1 else "")
        if self.kind == "all":
            return "all steps"
        return f"{self.kind} {self.k}"

    def steps(self, T: int) -> np.ndarray:
        t = np.arange(T)
        if self.kind == "every":
            return (t >= self.offset) & ((t - self.offset) % self.k == 0)
        if self.kind == "first":
            return t < self.k
        if self.kind == "last":
            return t >= T - self.k
        return np.ones(T, dtype=bool)

    def mask(self, P: int, T: int) -> np.ndarray:
        return np.broadcast_to(self.steps(T), (P, T)).copy()


@dataclass(frozen=True, repr=False)
class _Random(Schedule):
    fraction_: float
    seed: int

    @property
    def label(self) -> str:
        return f"random {self.fraction_:g}"

    def fraction(self, T: int) -> float:
        return round(self.fraction_ * T) / T

    def mask(self, P: int, T: int) -> np.ndarray:
        k = int(round(self.fraction_ * T))
        out = np.zeros((P, T), dtype=bool)
        for a in range(P):  # one generator per row: row a's steps do not depend on P
            out[a, np.random.default_rng([self.seed, a]).permutation(T)[:k]] = True
        return out


@dataclass(frozen=True, repr=False)
class _HeldOut(Schedule):
    n: int

    @property
    def label(self) -> str:
        return f"{self.n} held out"

    def fraction(self, T: int) -> float:
        return 1.0

    def mask(self, P: int, T: int) -> np.ndarray:
        out = np.ones((P, T), dtype=bool)
        out[max(P - self.n, 0):] = False
        return out


def every(k: int, offset: int | None = None) -> Schedule:
    """Every ``k``-th step, starting at ``offset`` (default ``k - 1``: the steps ``k-1, 2k-1, ...``,
    the convention of :func:`kernelfield.tasks.integration`)."""
    k = integer("k", k, 1)
    offset = k - 1 if offset is None else integer("offset", offset, 0)
    return _Steps("every", k, offset)


def first(k: int) -> Schedule:
    """The first ``k`` steps (``t < k``): the rest of each sequence is extrapolation."""
    return _Steps("first", integer("k", k, 1))


def last(k: int) -> Schedule:
    """The last ``k`` steps (``t >= T - k``); ``last(1)`` is endpoint supervision."""
    return _Steps("last", integer("k", k, 1))


def all_steps() -> Schedule:
    """Every step the task defines a target for."""
    return _Steps("all", 1)


def random(fraction: float, seed: int = 0) -> Schedule:
    """In each sequence a random subset of ``round(fraction·T)`` steps (seeded per row)."""
    return _Random(real_in("fraction", fraction, 0.0, 1.0), check_seed(seed))


def held_out(n: int) -> Schedule:
    """The last ``n`` sequences unsupervised (new sequences to predict); the others untouched."""
    return _HeldOut(integer("n", n, 0))


def supervise(task, schedule: Schedule):
    """``schedule.apply(task)``."""
    if not isinstance(schedule, Schedule):
        raise ValueError(f"schedule: must be a kernelfield Schedule, got {type(schedule).__name__}")
    return schedule.apply(task)


#: Schedule constructors by ``kind`` (configuration files).
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "all": all_steps,
    "every": every,
    "first": first,
    "last": last,
    "random": random,
    "held_out": held_out,
}
