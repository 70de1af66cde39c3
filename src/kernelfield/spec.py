"""Specification objects: the sharing pattern (:class:`Architecture`), the Gaussian prior
(:class:`Prior`) and the data (:class:`Task`). All are immutable and validated on creation.

Conventions (THEORY.md §1, §3): time steps ``t = 0..T-1``, sequences ``a = 0..P-1``; flat
index ``t*P + a`` (time-major), ``n = T*P``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .validation import positive_int

__all__ = ["Architecture", "Prior", "Task", "FAMILIES"]

FAMILIES = ("W", "U", "b", "v")


def _groups(name: str, groups: Sequence[int], T: int) -> tuple[int, ...]:
    arr = np.asarray(groups)
    if arr.ndim != 1 or len(arr) != T:
        raise ValueError(f"{name}: expected a list of {T} group labels (one per time step), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: group labels must be integers, got dtype {arr.dtype}")
    return tuple(int(x) for x in arr)


@dataclass(frozen=True)
class Architecture:
    """Which time steps share each weight family.

    ``X_groups[t]`` is the group label of step ``t`` for family ``X`` in ``W, U, b, v``; steps
    with equal labels use the same matrix. ``W_groups[0]`` is ignored (there is no recurrent
    input at ``t = 0``). The sharing masks ``[X_t ≡ X_s]`` are the only place where RNNs and
    DNNs differ.
    """

    T: int
    W_groups: tuple[int, ...]
    U_groups: tuple[int, ...]
    b_groups: tuple[int, ...]
    v_groups: tuple[int, ...]
    name: str = field(default="custom", compare=False)

    def __init__(self, T: int, W_groups, U_groups, b_groups, v_groups, name: str = "custom"):
        T = positive_int("T", T)
        object.__setattr__(self, "T", T)
        for fam, groups in zip(FAMILIES, (W_groups, U_groups, b_groups, v_groups)):
            object.__setattr__(self, f"{fam}_groups", _groups(f"{fam}_groups", groups, T))
        object.__setattr__(self, "name", name)

    @classmethod
    def rnn(cls, T: int) -> "Architecture":
        """Recurrent network: every family is one shared matrix."""
        return cls(T, [0] * T, [0] * T, [0] * T, [0] * T, name="rnn")

    @classmethod
    def dnn(cls, T: int) -> "Architecture":
        """The RNN unrolled with untied weights: every step its own matrices."""
        steps = list(range(T))
        return cls(T, steps, steps, steps, steps, name="dnn")

    @classmethod
    def tied_every(cls, T: int, k: int) -> "Architecture":
        """``W`` tied within consecutive blocks of ``k`` steps (``t // k``); ``U, b, v`` untied.

        ``k = 1`` is the DNN; ``k >= T`` ties all recurrent matrices.
        """
        k = positive_int("k", k)
        steps = list(range(T))
        W = [max(t - 1, 0) // k for t in steps]  # W_t for t >= 1 maps step t-1 -> t
        return cls(T, W, steps, steps, steps, name=f"tied_every_{k}")

    #: The forms :meth:`from_name` accepts, for error messages.
    NAME_FORMS = ("'rnn', 'dnn', 'tied_every_K' (K >= 1), 'share_<families>' (families from W, U, b, v, "
                  "each at most once, e.g. 'share_Uv'), or the older 'tied_every:K' and "
                  "{ kind = 'tied_every', k = K }")

    @classmethod
    def from_name(cls, name, T: int, *, field: str = "architecture") -> "Architecture":
        """The architecture called ``name``, with ``T`` steps; the one grammar for naming one.

        ``"rnn"``, ``"dnn"``, ``"tied_every_K"`` (:meth:`tied_every` with ``k = K``) or
        ``"share_<families>"`` (the listed families shared across all steps, the others untied:
        ``"share_Uv"`` shares only ``U`` and ``v``; ``"share_WUbv"`` is the RNN). Older spellings:
        ``"tied_every:K"`` and a table ``{"kind": ..., "k": K}`` (``k`` only with
        ``kind = "tied_every"``; ``kind`` may be any name above). The result's ``name`` is the
        canonical spelling (``tied_every_K``; ``share_`` with families in the order W, U, b, v).
        ``field`` names the setting in the ``ValueError`` raised for anything else (``""``: none).
        """
        if isinstance(name, dict):
            return cls._from_table(name, T, field)
        where = f"{field}: " if field else ""
        if not isinstance(name, str):
            raise ValueError(f"{where}expected an architecture name, got {name!r}; allowed: {cls.NAME_FORMS}")
        if name == "rnn":
            return cls.rnn(T)
        if name == "dnn":
            return cls.dnn(T)
        k = name[len("tied_every_"):]
        if name[:len("tied_every_")] in ("tied_every_", "tied_every:") and k.isascii() and k.isdigit() and int(k) >= 1:
            return cls.tied_every(T, int(k))
        listed = name[len("share_"):]
        if name.startswith("share_") and listed and set(listed) <= set(FAMILIES) and len(set(listed)) == len(listed):
            shared = [f for f in FAMILIES if f in listed]
            groups = [[0] * T if f in shared else list(range(T)) for f in FAMILIES]
            return cls(T, *groups, name="share_" + "".join(shared))
        raise ValueError(f"{where}unknown architecture {name!r}; allowed: {cls.NAME_FORMS}")

    @classmethod
    def _from_table(cls, table: dict, T: int, field: str) -> "Architecture":
        """:meth:`from_name` of a table ``{"kind": name, "k": K}``; errors name ``field.kind`` / ``field.k``."""
        prefix = f"{field}." if field else ""
        unknown = sorted(set(table) - {"kind", "k"})
        if unknown:
            raise ValueError(f"{prefix}{unknown[0]}: unknown key of an architecture table; allowed: kind, k")
        kind, k = table.get("kind"), table.get("k")
        if kind is None:
            raise ValueError(f"{prefix}kind: required; allowed: {cls.NAME_FORMS}")
        if kind == "tied_every":
            if k is None:
                raise ValueError(f"{prefix}k: required when kind = 'tied_every' (block length of tied W, "
                                 "an integer >= 1)")
            return cls.tied_every(T, positive_int(f"{prefix}k", k))
        if k is not None:
            raise ValueError(f"{prefix}k: only used with kind = 'tied_every', not with kind = {kind!r}")
        return cls.from_name(kind, T, field=f"{prefix}kind")

    def mask(self, family: str) -> np.ndarray:
        """(T, T) 0/1 matrix ``[X_t ≡ X_s]``; for ``W`` rows and columns at ``t = 0`` are 0."""
        if family not in FAMILIES:
            raise ValueError(f"family: must be one of {FAMILIES}, got {family!r}")
        g = np.asarray(getattr(self, f"{family}_groups"))
        m = (g[:, None] == g[None, :]).astype(np.float64)
        if family == "W":
            m[0, :] = 0.0
            m[:, 0] = 0.0
        return m

    def to_dict(self) -> dict:
        return {"T": self.T, "name": self.name, **{f"{f}_groups": list(getattr(self, f"{f}_groups")) for f in FAMILIES}}


@dataclass(frozen=True)
class Prior:
    """Independent Gaussian priors: ``W ~ N(0, g²/N)``, ``U ~ N(0, σ_u²/D)``, ``b ~ N(0, σ_b²)``,
    ``v ~ N(0, σ_v²)``. ``g, sigma_u, sigma_v > 0``; ``sigma_b >= 0``."""

    g: float = 1.0
    sigma_u: float = 1.0
    sigma_b: float = 0.0
    sigma_v: float = 1.0

    def __post_init__(self):
        for name in ("g", "sigma_u", "sigma_b", "sigma_v"):
            val = getattr(self, name)
            try:
                val = float(val)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: must be a real number, got {val!r}") from None
            if not np.isfinite(val):
                raise ValueError(f"{name}: must be finite, got {val}")
            lower_ok = val >= 0 if name == "sigma_b" else val > 0
            if not lower_ok:
                bound = ">= 0" if name == "sigma_b" else "> 0"
                raise ValueError(f"{name}: prior scale must be {bound}, got {val}")
            object.__setattr__(self, name, val)

    def to_dict(self) -> dict:
        return {"g": self.g, "sigma_u": self.sigma_u, "sigma_b": self.sigma_b, "sigma_v": self.sigma_v}


@dataclass(frozen=True, eq=False)
class Task:
    """Input sequences and (partial) targets.

    inputs: ``(P, T, D)`` finite array; targets: ``(P, T)``, ``NaN`` marks an unsupervised
    ``(a, t)``. At least one target must be given.
    """

    inputs: np.ndarray
    targets: np.ndarray

    def __post_init__(self):
        X = np.array(self.inputs, dtype=np.float64)
        Y = np.array(self.targets, dtype=np.float64)
        if X.ndim != 3 or min(X.shape) < 1:
            raise ValueError(f"inputs: expected a non-empty array of shape (P, T, D), got shape {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("inputs: contains NaN or inf; only targets may be NaN (= unsupervised)")
        if Y.shape != X.shape[:2]:
            raise ValueError(f"targets: expected shape (P, T) = {X.shape[:2]} to match inputs, got {Y.shape}")
        if np.any(np.isinf(Y)):
            raise ValueError("targets: contains inf; use NaN for unsupervised entries")
        if np.all(np.isnan(Y)):
            raise ValueError("targets: all entries are NaN, so nothing is supervised; give at least one target")
        X.setflags(write=False)
        Y.setflags(write=False)
        object.__setattr__(self, "inputs", X)
        object.__setattr__(self, "targets", Y)

    P = property(lambda self: self.inputs.shape[0], doc="number of sequences")
    T = property(lambda self: self.inputs.shape[1], doc="number of time steps")
    D = property(lambda self: self.inputs.shape[2], doc="input dimension")

    @property
    def supervised(self) -> np.ndarray:
        """Flat time-major indices ``t*P + a`` of the supervised pairs (the set ``S``)."""
        return np.flatnonzero(~np.isnan(self.targets.T.reshape(-1)))

    @property
    def y_supervised(self) -> np.ndarray:
        """Targets on ``S`` in the order of :attr:`supervised`."""
        return self.targets.T.reshape(-1)[self.supervised]

    def with_sequences(self, new_inputs: np.ndarray) -> "Task":
        """This task with ``new_inputs`` ``(P_new, T, D)`` appended as unsupervised sequences."""
        new = np.asarray(new_inputs, dtype=np.float64)
        if new.ndim == 2:
            new = new[None]
        if new.ndim != 3 or new.shape[1:] != self.inputs.shape[1:]:
            raise ValueError(f"new_inputs: expected shape (P_new, {self.T}, {self.D}), got {new.shape}")
        nan = np.full(new.shape[:2], np.nan)
        return Task(np.concatenate([self.inputs, new]), np.concatenate([self.targets, nan]))


def check_compatible(arch: Architecture, task: Task) -> None:
    """Raise if the architecture's ``T`` differs from the task's."""
    if arch.T != task.T:
        raise ValueError(f"task.inputs: has T = {task.T} time steps but the architecture has T = {arch.T}")
