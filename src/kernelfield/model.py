"""The model record: everything that defines the posterior of THEORY.md §2 (architecture, task,
prior, ``phi``, ``kappa``). :func:`kernelfield.solve`, :func:`~kernelfield.sample`,
:func:`~kernelfield.train`, :func:`~kernelfield.prior_kernel` and the phase tools take one as
their first argument (or the five parts as before), and every result carries it as ``model``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .nonlinearities import Nonlinearity, available, get_nonlinearity
from .spec import Architecture, Prior, Task, check_compatible
from .validation import positive_real

__all__ = ["Model", "ModelResult", "as_model", "model_differences"]


@dataclass(frozen=True, eq=False)
class Model:
    """Architecture, task, prior, nonlinearity and likelihood variance ``kappa`` (the posterior
    ``p(θ | data) ∝ p(θ) exp(-(N/2κ) Σ (f - y)²)``). Validated on creation: ``kappa`` finite and
    ``> 0``; ``phi`` a registered nonlinearity (stored by name); ``arch.T == task.T``.

    Two models are equal when they describe the same posterior: equal architectures (sharing
    patterns), priors, ``phi`` and ``kappa``, and tasks with equal inputs and targets.
    """

    arch: Architecture
    task: Task
    prior: Prior = Prior()
    phi: str = "linear"
    kappa: float = 0.1

    def __post_init__(self):
        for name, cls in (("arch", Architecture), ("task", Task), ("prior", Prior)):
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise ValueError(f"{name}: must be a kernelfield {cls.__name__}, got {type(value).__name__}")
        check_compatible(self.arch, self.task)
        nl = get_nonlinearity(self.phi)
        if isinstance(self.phi, Nonlinearity) and (nl.name not in available() or get_nonlinearity(nl.name) is not nl):
            raise ValueError(f"phi: nonlinearity {nl.name!r} is not registered; call kf.register(phi) first "
                             f"(registered: {', '.join(available())})")
        object.__setattr__(self, "phi", nl.name)
        object.__setattr__(self, "kappa", positive_real("kappa", self.kappa))

    @property
    def nonlinearity(self) -> Nonlinearity:
        """The registered :class:`~kernelfield.Nonlinearity` named by ``phi``."""
        return get_nonlinearity(self.phi)

    def __repr__(self) -> str:
        t = self.task
        return (f"Model(arch={self.arch.name!r} (T={self.arch.T}), task=(P={t.P}, T={t.T}, D={t.D}), "
                f"prior={self.prior}, phi={self.phi!r}, kappa={self.kappa})")

    def __eq__(self, other) -> bool:
        return isinstance(other, Model) and not model_differences(self, other)

    def __hash__(self) -> int:
        return hash((self.arch, self.prior, self.phi, self.kappa, self.task.inputs.shape))


def _same_task(a: Task, b: Task) -> bool:
    return a is b or (a.inputs.shape == b.inputs.shape and np.array_equal(a.inputs, b.inputs)
                      and np.array_equal(a.targets, b.targets, equal_nan=True))


def model_differences(a: Model, b: Model) -> list[str]:
    """What differs between two models, e.g. ``["kappa: 0.1 vs 0.2"]`` (empty when they are equal)."""
    out = []
    if a.arch != b.arch:
        out.append(f"arch: {a.arch.name} {a.arch.to_dict()} vs {b.arch.name} {b.arch.to_dict()}")
    if not _same_task(a.task, b.task):
        what = "shape" if a.task.inputs.shape != b.task.inputs.shape else "inputs or targets"
        out.append(f"task: {what} differ ((P, T, D) = {a.task.inputs.shape} vs {b.task.inputs.shape})")
    if a.prior != b.prior:
        out.append(f"prior: {a.prior} vs {b.prior}")
    if a.phi != b.phi:
        out.append(f"phi: {a.phi!r} vs {b.phi!r}")
    if a.kappa != b.kappa:
        out.append(f"kappa: {a.kappa} vs {b.kappa}")
    return out


def as_model(arch, task=None, prior=None, phi=None, kappa=None) -> Model:
    """The :class:`Model` of a call that takes either a model as its first argument or the parts
    ``(arch, task, prior, phi, kappa)``; unset parts take the defaults of :class:`Model`."""
    if isinstance(arch, Model):
        given = [n for n, v in (("task", task), ("prior", prior), ("phi", phi), ("kappa", kappa)) if v is not None]
        if given:
            raise ValueError(f"{given[0]}: pass either a Model or (arch, task, prior, phi, kappa), not both")
        return arch
    if task is None:
        raise ValueError("task: required unless the first argument is a kernelfield Model")
    return Model(arch, task, Prior() if prior is None else prior, "linear" if phi is None else phi,
                 0.1 if kappa is None else kappa)


class ModelResult:
    """Mixin of every result (Solution, LazyKernel, Samples, Trained): the parts of its ``model``
    as attributes."""

    model: Model

    arch = property(lambda self: self.model.arch, doc="architecture (of ``model``)")
    task = property(lambda self: self.model.task, doc="task (of ``model``)")
    prior = property(lambda self: self.model.prior, doc="prior (of ``model``)")
    phi = property(lambda self: self.model.phi, doc="nonlinearity name (of ``model``)")
    kappa = property(lambda self: self.model.kappa, doc="likelihood variance (of ``model``)")
