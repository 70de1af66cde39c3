"""Parameter sweeps: a grid of run configurations computed locally or on a Dask cluster, kept in
a resumable store of labelled results.

Sweep file (TOML)::

    name = "coherence"                    # optional; default: the file name without .toml
    compute = ["solve", "coherence"]      # per-point computations, see COMPUTATIONS

    [base]                                # a run configuration as in kernelfield.config
    architecture = { kind = "rnn", T = 4 }
    task = { generator = "endpoint_patterns", P = 3, D = 4 }
    theory = { kappa = 0.1 }

    [axes]                                # the grid is the outer product of all axes, in this order
    architecture = [{ kind = "rnn" }, { kind = "dnn" }, { kind = "tied_every", k = 2 }]
    "task.target_scale" = { start = 0.0, stop = 2.0, num = 11 }   # spacing = "linear" | "log"
    "sampling.seed" = [0, 1, 2]

    [options.predictive_error]            # options of a computation, when it has any
    truth = { supervise_every = 1 }

An axis is either one field ``"section.key"`` (sections ``architecture``, ``prior``, ``task``,
``theory``, ``sampling``) with a list of values or a range ``{start, stop, num, spacing}``
(integers when ``start`` and ``stop`` are integers), or a whole section with a list of tables
merged over the base's table (an optional ``label`` key names the value; by default the
architecture's name, e.g. ``tied_every_2``, or ``key=value,...``). Every point is validated like
a run configuration before anything runs; errors name the field (``base.…``, ``axes.…``,
``compute``, ``options.…``) and what is allowed.

Execution (:func:`run`): a local process pool (``spawn``) sized to the machine (its workers share
compiled programs through JAX's persistent compilation cache in the store, or in
``$JAX_COMPILATION_CACHE_DIR`` when set, so each program is compiled once), or the workers of
an existing Dask distributed cluster (``scheduler="tcp://host:8786"``), or ``workers=0`` in this
process. Points are computed independently; one that raises records its error and traceback and
the sweep goes on. Results come back to this process, which writes them, so the store only needs
to be visible here.

Store layout (a directory)::

    index.json           the grid: axes (coordinates), points (key, index), the sweep's config and hash
    points/<key>.nc      one finished point: its outputs and provenance (netCDF, written atomically)
    failed/<key>.json    one failed point: error, traceback, timings, attempts
    .jax_cache/          compiled XLA programs shared by the local workers (safe to delete)

A point's key is a hash of its full run configuration (defaults filled in), the computations and
their options, so re-running a sweep (after an interruption, or with more axis values) computes
only points without a result; failed points are recomputed with ``retry_failed=True``. Each point
file carries provenance attributes: ``sweep_config_hash``, ``point_key``, ``run_id`` (one per
invocation of :func:`run`), ``kernelfield_version``, ``config`` (the point's run configuration as
JSON), ``task_seed``, ``sampling_seed``, ``started``, ``finished``, ``seconds``,
``seconds_<computation>``, ``host``, ``pid`` and ``warnings``; solver and sampler diagnostics are
variables. :func:`load` returns one ``xarray.Dataset`` with one dimension per axis.

New per-point computations are added with :func:`register_computation` (one function each).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import multiprocessing
import os
import signal
import socket
import threading
import time
import traceback
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as _futures_completed
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import storage
from .config import Config, ConfigError, _format_error, read_toml

__all__ = [
    "Axis",
    "Computation",
    "COMPUTATIONS",
    "PointContext",
    "Sweep",
    "SweepPoint",
    "SweepRun",
    "SweepInterrupted",
    "register_computation",
    "load_config",
    "parse_config",
    "run",
    "load",
    "read_index",
    "compute_point",
    "default_workers",
    "JAX_CACHE",
]

SECTIONS = ("architecture", "prior", "task", "theory", "sampling")


# --------------------------------------------------------------------------------------------
# per-point computations


class PointContext:
    """What a computation sees at one point: the validated run configuration (``config``, a
    :class:`kernelfield.config.Config`), the built ``arch``, ``task`` and ``prior``, the raw results
    of earlier computations (``results[name]``) and the kernels and predictive means they produced
    (``kernels[source]`` ``(T·P, T·P)``, ``predictions[source]`` ``(P, T)``; sources ``theory``,
    ``lazy``, ``sampled``)."""

    def __init__(self, config: Config):
        self.config = config
        self.arch = config.build_architecture()
        self.task = config.build_task()
        self.prior = config.build_prior()
        self.results: dict[str, Any] = {}
        self.kernels: dict[str, np.ndarray] = {}
        self.predictions: dict[str, np.ndarray] = {}
        self.outputs: dict[str, Any] = {}

    def add_kernel(self, source: str, C) -> None:
        """Record kernel ``C`` of ``source``; stored as output ``C_<source>`` (dims ``t, a, t2, a2``)."""
        C = np.asarray(C, dtype=np.float64)
        T, P = self.task.T, self.task.P
        self.kernels[source] = C
        self.outputs[f"C_{source}"] = (storage.KERNEL_DIMS, C.reshape(T, P, T, P))

    def add_prediction(self, source: str, mean) -> None:
        """Record the predictive mean ``(P, T)`` of ``source``; stored as ``prediction_<source>``."""
        mean = np.asarray(mean, dtype=np.float64)
        self.predictions[source] = mean
        self.outputs[f"prediction_{source}"] = (("a", "t"), mean)


@dataclass(frozen=True)
class Computation:
    """A per-point computation: ``fn(point, options) -> {name: value}`` where a value is a number
    or ``(dims, array)``; it may also record kernels and predictions on the
    :class:`PointContext`. ``requires``: computations that must all be in ``compute``;
    ``requires_any``: at least one of them must be. ``options``: pydantic model of its
    ``[options.<name>]`` table (``None``: no options). ``check(config, options)``: raises
    ``ValueError`` naming the field when a point cannot be computed (run at validation time)."""

    name: str
    fn: Callable[[PointContext, Any], dict]
    requires: tuple[str, ...] = ()
    requires_any: tuple[str, ...] = ()
    options: Optional[type[BaseModel]] = None
    check: Optional[Callable[[Config, Any], None]] = None
    description: str = ""


#: Per-point computations by name, in execution order (a computation comes after those it uses).
COMPUTATIONS: dict[str, Computation] = {}


def register_computation(name: str, *, requires=(), requires_any=(), options=None, check=None):
    """Decorator adding ``fn(point, options) -> dict`` to :data:`COMPUTATIONS` under ``name``.

    Computations run in registration order, so ``requires`` and ``requires_any`` may only name
    computations registered before. Worker processes must register it too: define it in a module
    that they import (for the local pool: the main script or an imported module).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: must be an identifier, got {name!r}")
    unknown = [r for r in (*requires, *requires_any) if r not in COMPUTATIONS]
    if unknown:
        raise ValueError(f"requires: unknown computations {unknown}; register them before {name!r}")

    def decorate(fn):
        doc = (fn.__doc__ or "").strip()
        COMPUTATIONS[name] = Computation(name, fn, tuple(requires), tuple(requires_any), options, check,
                                         doc.splitlines()[0] if doc else "")
        return fn

    return decorate


@register_computation("solve")
def _solve(point: PointContext, options) -> dict:
    """Mean-field theory (kf.solve, any phi): dominant kernel C_theory, action S (± S_err, Monte Carlo
    for nonlinear phi), solver diagnostics."""
    from .theory.solver import solve

    sol = solve(**point.config.solve_kwargs())
    point.results["solve"] = sol
    point.add_kernel("theory", sol.C)
    point.add_prediction("theory", sol.predict().mean)
    return {"S": sol.S, "residual": sol.residual, "converged": int(sol.converged),
            "iterations": sol.best.iterations, "n_branches": len(sol.branches),
            "S_err": sol.best.S_err, "mc_error": sol.best.mc_error, "solve_seconds": sol.seconds}


@register_computation("lazy")
def _lazy(point: PointContext, options) -> dict:
    """Lazy (NNGP) prior kernel C_lazy (kf.prior_kernel) and its predictive mean, any phi."""
    from .theory.kernels import make_problem
    from .theory.lazy import prior_kernel
    from .theory.predict import predictive

    cfg = point.config
    C = prior_kernel(point.arch, point.task, point.prior, cfg.theory.phi)
    point.add_kernel("lazy", C)
    point.add_prediction("lazy", predictive(make_problem(point.arch, point.task, point.prior, cfg.theory.kappa), C).mean)
    return {}


@register_computation("sample")
def _sample(point: PointContext, options) -> dict:
    """Finite-width posterior samples (kf.sample, [sampling] table): C_sampled, output mean, HMC diagnostics."""
    from .sampling import sample

    s = sample(**point.config.sample_kwargs(), progress=False)
    point.results["sample"] = s
    point.add_kernel("sampled", s.C_mean)
    point.add_prediction("sampled", s.f_mean)
    T, P = point.task.T, point.task.P
    return {"C_sem": (storage.KERNEL_DIMS, np.asarray(s.C_sem).reshape(T, P, T, P)),
            "acceptance_rate": s.acceptance_rate, "ess": s.ess, "num_divergent": s.num_divergent,
            "step_size": float(np.mean(s.step_size)), "sample_seconds": s.seconds}


@register_computation("compare", requires=("solve", "sample"))
def _compare(point: PointContext, options) -> dict:
    """Theory vs samples block by block (kf.compare): kernel_error ± kernel_error_bar, prediction_error, parity."""
    from .compare import compare

    cmp = compare(point.results["solve"], point.results["sample"])
    return {"kernel_error": cmp.error, "kernel_error_bar": cmp.error_bar, "prediction_error": cmp.prediction_error,
            "parity": cmp.parity, "block_error": (("t", "t2"), cmp.block_error),
            "block_error_bar": (("t", "t2"), cmp.block_error_bar)}


@register_computation("coherence", requires_any=("solve", "lazy", "sample"))
def _coherence(point: PointContext, options) -> dict:
    """Temporal coherence (order parameter, mean rho_ts over t != s >= 1) of every kernel: coherence_<source>."""
    from .observables import mean_coherence

    T, P = point.task.T, point.task.P
    return {f"coherence_{source}": mean_coherence(C, T, P) for source, C in point.kernels.items()}


@register_computation("stability", requires=("solve",))
def _stability(point: PointContext, options) -> dict:
    """Leading cross-time Hessian eigenvalue at the symmetric solution (kf.stability; > 0: unstable)."""
    from .theory.stability import stability

    st = stability(point.results["solve"], k=1)
    return {"leading_eigenvalue": st.leading, "S_symmetric": st.S_sym}


@register_computation("outlier", requires=("solve",))
def _outlier(point: PointContext, options) -> dict:
    """Largest predicted outlier |eigenvalue| of the last step's recurrent matrix (kf.outlier_eigenvalues)."""
    from .theory.stability import outlier_eigenvalues

    return {"outlier": float(np.abs(outlier_eigenvalues(point.results["solve"])[0]))}


class PredictiveErrorOptions(BaseModel):
    """``truth``: task generator arguments that replace the base's to generate the reference targets
    on the same inputs, e.g. ``{ supervise_every = 1 }`` for the integration task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    truth: dict[str, Any] = Field(description="generator arguments giving targets at the unsupervised steps")


def _truth_targets(config: Config, options: PredictiveErrorOptions) -> np.ndarray:
    task = config.build_task()
    name = "options.predictive_error.truth"
    if "T" in options.truth:
        raise ValueError(f"{name}: T comes from [architecture]; give only task generator arguments")
    try:
        truth = config.task.model_copy(update=options.truth).build(config.architecture.T)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: the task generator {config.task.generator!r} rejects these arguments: {e}") from None
    if truth.inputs.shape != task.inputs.shape or not np.array_equal(truth.inputs, task.inputs):
        raise ValueError(f"{name}: must give the same inputs as the task (change only target arguments)")
    unsupervised = np.isnan(task.targets)
    if not unsupervised.any():
        raise ValueError(f"{name}: the task has no unsupervised step to measure the error at")
    if np.isnan(truth.targets[unsupervised]).any():
        raise ValueError(f"{name}: must give a target at every unsupervised step of the task, e.g. "
                         "{ supervise_every = 1 } for the integration task")
    return truth.targets


@register_computation("predictive_error", requires_any=("solve", "lazy", "sample"),
                      options=PredictiveErrorOptions, check=_truth_targets)
def _predictive_error(point: PointContext, options: PredictiveErrorOptions) -> dict:
    """Mean squared error of every predictive mean at the unsupervised steps: pred_error_<source>.

    ``mean over unsupervised (a, t) of (prediction_a(t) - y_true_a(t))^2`` with ``y_true`` from the
    task generator called with ``options.truth`` (THEORY.md §4, sequential tasks)."""
    truth = _truth_targets(point.config, options)
    unsupervised = np.isnan(point.task.targets)
    return {f"pred_error_{source}": float(np.mean((mean[unsupervised] - truth[unsupervised]) ** 2))
            for source, mean in point.predictions.items()}


# --------------------------------------------------------------------------------------------
# the sweep configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """``num`` values from ``start`` to ``stop`` (both included), evenly (``linear``) or
    geometrically (``log``, needs ``start, stop > 0``) spaced; integers when both ends are."""

    start: Union[int, float] = Field(allow_inf_nan=False)
    stop: Union[int, float] = Field(allow_inf_nan=False)
    num: int = Field(ge=1)
    spacing: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _log_positive(self):
        if self.spacing == "log" and (self.start <= 0 or self.stop <= 0):
            raise ValueError(f"spacing: 'log' needs start > 0 and stop > 0, got start = {self.start}, stop = {self.stop}")
        return self

    def values(self) -> list:
        space = np.geomspace if self.spacing == "log" else np.linspace
        values = space(self.start, self.stop, self.num)
        if isinstance(self.start, int) and isinstance(self.stop, int):
            return [int(v) for v in np.rint(values)]
        return [float(v) for v in values]


class SweepFile(_Strict):
    name: Optional[str] = None
    compute: list[str] = Field(min_length=1)
    base: dict[str, Any] = {}
    axes: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must be a non-empty string")
        return v

    @field_validator("compute")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in COMPUTATIONS:
                raise ValueError(f"unknown computation {name!r}; allowed: {', '.join(COMPUTATIONS)}")
        repeated = sorted({n for n in v if v.count(n) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(repr, repeated))} listed more than once")
        for name in v:
            comp = COMPUTATIONS[name]
            missing = [r for r in comp.requires if r not in v]
            if missing:
                raise ValueError(f"{name!r} needs {' and '.join(map(repr, comp.requires))} in compute "
                                 f"(missing {', '.join(map(repr, missing))})")
            if comp.requires_any and not any(r in v for r in comp.requires_any):
                raise ValueError(f"{name!r} needs at least one of {', '.join(map(repr, comp.requires_any))} in compute")
        return v

    @field_validator("base")
    @classmethod
    def _sections(cls, v: dict) -> dict:
        for section, table in v.items():
            if section not in SECTIONS:
                raise ValueError(f"{section}: unknown section; allowed: {', '.join(SECTIONS)}")
            if not isinstance(table, dict):
                raise ValueError(f"{section}: must be a table")
        return v


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid: coordinate ``name``, the config ``path`` it sets (``"task.P"`` or
    a whole section ``"architecture"``), the ``values`` merged into each point and their
    coordinate ``labels`` (the values themselves for a field axis)."""

    name: str
    path: str
    values: tuple
    labels: tuple


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: content ``key`` (hash), ``index`` into the axes, ``coords`` (axis name ->
    label) and the validated run configuration ``config`` (a mapping with every default filled in)."""

    key: str
    index: tuple[int, ...]
    coords: dict
    config: dict


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: see the module docstring. ``points`` is the full grid (outer product of
    ``axes`` in order); ``compute`` is in execution order; ``data`` the sweep file as parsed."""

    name: str
    compute: tuple[str, ...]
    options: dict
    axes: tuple[Axis, ...]
    points: tuple[SweepPoint, ...]
    data: dict
    source: str = "<sweep>"

    @property
    def config_hash(self) -> str:
        """SHA-256 of the sweep's points, computations and options (the provenance of every point)."""
        return _hash({"name": self.name, "points": [p.key for p in self.points]})

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _section_fields(section: str) -> list[str]:
    return list(Config.model_fields[section].annotation.model_fields)


def _axis_values(path: str, spec) -> tuple[list, list[str]]:
    """(values, errors) of one axis."""
    where = f"axes.{path}"
    section = "." not in path
    if isinstance(spec, dict) and not section:
        try:
            return Range.model_validate(spec).values(), []
        except ValidationError as e:
            return [], [f"{where}.{_format_error(err, Range)}" for err in e.errors(include_url=False)]
    if not isinstance(spec, list):
        allowed = "a list of tables" if section else "a list of values or a range { start, stop, num }"
        return [], [f"{where}: must be {allowed}, got {spec!r}"]
    if not spec:
        return [], [f"{where}: needs at least one value"]
    kinds = {isinstance(v, dict) for v in spec}
    if section and kinds != {True}:
        return [], [f"{where}: a whole-section axis takes a list of tables, e.g. [{{ kind = \"rnn\" }}, ...]"]
    if not section and (kinds != {False} or any(isinstance(v, list) for v in spec)):
        return [], [f"{where}: values must be numbers, strings or booleans (or give a range "
                    "{ start, stop, num }), not tables or lists"]
    return list(spec), []


def _axis_path_errors(path: str) -> list[str]:
    parts = path.split(".")
    if parts[0] not in SECTIONS or len(parts) > 2:
        return [f"axes.{path}: unknown field; an axis is 'section.key' or a whole section, sections: "
                f"{', '.join(SECTIONS)}"]
    if len(parts) == 2 and parts[0] != "task" and parts[1] not in _section_fields(parts[0]):
        return [f"axes.{path}: unknown field of [{parts[0]}]; allowed: {', '.join(_section_fields(parts[0]))}"]
    if parts == ["task", "T"]:
        return [f"axes.{path}: the number of time steps is architecture.T"]
    return []


def _merge(base: dict, axes: list[tuple[str, Any]]) -> dict:
    data = {section: dict(table) for section, table in base.items()}
    for path, value in axes:
        if "." in path:
            section, key = path.split(".")
            data.setdefault(section, {})[key] = value
        else:
            data[path] = {**data.get(path, {}), **{k: v for k, v in value.items() if k != "label"}}
    return data


def _label(path: str, value, cfg: Config):
    if "." in path:
        return value
    if "label" in value:
        return str(value["label"])
    if path == "architecture":
        return cfg.build_architecture().name
    return ",".join(f"{k}={v}" for k, v in value.items())


def _coordinate_names(paths: list[str]) -> list[str]:
    short = [p.split(".")[-1] for p in paths]
    return [s if short.count(s) == 1 else p.replace(".", "_") for s, p in zip(short, paths)]


def _point_errors(exc: Exception, axis_paths: list[str], coords: dict, values: dict) -> list[tuple[str, str]]:
    """(message, where) pairs for a point that failed validation; ``where`` is the axis value that
    caused it or, for the base's fields and options, the point."""
    if isinstance(exc, ValidationError):
        lines = [_format_error(err) for err in exc.errors(include_url=False)]
    else:
        lines = [str(exc)]
    out = []
    for line in lines:
        fieldname = line.split(":")[0].strip()
        axis = next((p for p in axis_paths if fieldname == p or fieldname.startswith(p + ".")), None)
        if axis is not None:
            out.append((f"axes.{line}", f"axis value {values[axis]!r}"))
        else:
            where = "point " + ", ".join(f"{k}={v}" for k, v in coords.items())
            out.append((line if fieldname.startswith("options.") else f"base.{line}", where))
    return out


def parse_config(data: dict, source: str = "<sweep>", name: str | None = None) -> Sweep:
    """Validate a parsed sweep file (see the module docstring) and expand its grid; raise
    :class:`~kernelfield.config.ConfigError` naming ``source`` and every invalid field."""

    def fail(lines):
        plural = "s" if len(lines) > 1 else ""
        raise ConfigError(f"{source}: invalid sweep configuration{plural}: " + "; ".join(lines))

    try:
        parsed = SweepFile.model_validate(data)
    except ValidationError as e:
        fail([_format_error(err, SweepFile) for err in e.errors(include_url=False)])
    compute = tuple(c for c in COMPUTATIONS if c in parsed.compute)
    errors: list[str] = []

    options = {}
    for key, table in parsed.options.items():
        comp = COMPUTATIONS.get(key)
        with_options = [c for c in compute if COMPUTATIONS[c].options is not None]
        if comp is None or key not in compute or comp.options is None:
            errors.append(f"options.{key}: not a computation in compute that takes options; "
                          f"allowed: {', '.join(with_options) or 'none'}")
            continue
        try:
            options[key] = comp.options.model_validate(table)
        except ValidationError as e:
            errors += [f"options.{key}.{_format_error(err, comp.options)}" for err in e.errors(include_url=False)]
    for c in compute:
        comp = COMPUTATIONS[c]
        if comp.options is not None and c not in options and c not in parsed.options:
            try:
                options[c] = comp.options.model_validate({})
            except ValidationError as e:
                errors += [f"options.{c}.{_format_error(err, comp.options)}" for err in e.errors(include_url=False)]

    paths, value_lists = list(parsed.axes), []
    for path, spec in parsed.axes.items():
        path_errors = _axis_path_errors(path)
        values, value_errors = ([], []) if path_errors else _axis_values(path, spec)
        errors += path_errors + value_errors
        if values and not value_errors:
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:
                errors.append(f"axes.{path}: value {repeated[0]!r} given more than once")
        value_lists.append(values)
    if errors:
        fail(errors)

    names = _coordinate_names(paths)
    point_errors: dict[str, list[str]] = {}
    points, labels = [], [[None] * len(v) for v in value_lists]
    for index in itertools.product(*(range(len(v)) for v in value_lists)):
        values = {p: value_lists[i][j] for i, (p, j) in enumerate(zip(paths, index))}
        coords = {n: (values[p] if "." in p else j) for n, p, j in zip(names, paths, index)}
        try:
            cfg = Config.model_validate(_merge(parsed.base, list(values.items())))
            for c in compute:
                if COMPUTATIONS[c].check is not None:
                    COMPUTATIONS[c].check(cfg, options.get(c))
        except (ValidationError, ValueError) as e:
            for message, where in _point_errors(e, paths, coords, values):
                point_errors.setdefault(message, [])
                if where not in point_errors[message]:
                    point_errors[message].append(where)
            continue
        for i, (p, j) in enumerate(zip(paths, index)):
            labels[i][j] = _label(p, values[p], cfg)
        config = cfg.model_dump(mode="json")
        key = _hash({"config": config, "compute": compute,
                     "options": {c: options[c].model_dump(mode="json") for c in options}})[:20]
        points.append((key, index, config))
    if point_errors:
        total = math.prod(len(v) for v in value_lists)
        lines = []
        for message, where in point_errors.items():
            if not message.startswith("axes.") and len(where) == total:  # the base's own error
                where = []
            if where:
                shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
                message += f" (at {shown})"
            lines.append(message)
        fail(lines)

    for path, axis_labels in zip(paths, labels):
        repeated = [v for i, v in enumerate(axis_labels) if v in axis_labels[:i]]
        if repeated:
            fail([f"axes.{path}: two values have the label {repeated[0]!r}; give each table a distinct 'label'"])
    axes = tuple(Axis(n, p, tuple(v), tuple(lab)) for n, p, v, lab in zip(names, paths, value_lists, labels))
    sweep_points = tuple(
        SweepPoint(key, index, {a.name: a.labels[j] for a, j in zip(axes, index)}, config)
        for key, index, config in points
    )
    return Sweep(name=parsed.name or name or "sweep", compute=compute, options=options, axes=axes,
                 points=sweep_points, data=data, source=source)


def load_config(path) -> Sweep:
    """Read and validate a sweep TOML file (see the module docstring)."""
    return parse_config(read_toml(path, "sweep configuration"), source=str(path), name=Path(path).stem)


# --------------------------------------------------------------------------------------------
# computing one point (in a worker)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _task_seed(cfg: Config):
    from .tasks import TASKS

    params = inspect.signature(TASKS[cfg.task.generator]).parameters
    if "seed" not in params:
        return "none"
    return cfg.task.kwargs.get("seed", params["seed"].default)


def compute_point(job: dict) -> dict:
    """Compute one point; never raises. ``job``: ``key``, ``config`` (run configuration mapping),
    ``compute`` (names, execution order), ``options`` (name -> mapping). Returns a record with
    ``status`` (``"ok"`` or ``"failed"``), ``dataset`` (outputs and provenance, when ok),
    ``error`` and ``traceback`` (when failed), ``started``, ``finished``, ``seconds``,
    ``timings`` (seconds per computation), ``warnings``, ``host`` and ``pid``."""
    t0 = time.perf_counter()
    record = {"key": job["key"], "started": _now(), "host": socket.gethostname(), "pid": os.getpid(), "timings": {}}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cfg = Config.model_validate(job["config"])
            point = PointContext(cfg)
            for name in job["compute"]:
                if name not in COMPUTATIONS:
                    raise KeyError(f"compute: {name!r} is not registered in this worker process; register it "
                                   "in a module the workers import")
                comp = COMPUTATIONS[name]
                opts = comp.options.model_validate(job["options"].get(name, {})) if comp.options else None
                started = time.perf_counter()
                point.outputs.update(comp.fn(point, opts) or {})
                record["timings"][name] = time.perf_counter() - started
            record["dataset"] = _point_dataset(point, cfg)
            record["status"] = "ok"
        except Exception as e:  # noqa: BLE001  a failing point is recorded, not fatal
            record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    record["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    record["finished"] = _now()
    record["seconds"] = time.perf_counter() - t0
    return record


def _point_dataset(point: PointContext, cfg: Config) -> xr.Dataset:
    data_vars = {}
    for name, value in point.outputs.items():
        if isinstance(value, tuple):
            data_vars[name] = value
        elif isinstance(value, (bool, np.bool_)):
            data_vars[name] = ((), int(value))
        else:
            data_vars[name] = ((), np.asarray(value).item())
    attrs = {"kind": "sweep_point", "config": json.dumps(cfg.model_dump(mode="json")),
             "task_seed": _task_seed(cfg), "sampling_seed": cfg.sampling.seed}
    return xr.Dataset(data_vars, attrs=attrs)


# --------------------------------------------------------------------------------------------
# executors: each yields (job, record) as points finish


def _init_worker(parent: int, cache_dir: str) -> None:
    """Local worker set-up: share compiled XLA programs through ``cache_dir`` (JAX's persistent
    compilation cache, unless ``JAX_COMPILATION_CACHE_DIR`` is set), ignore Ctrl-C (the parent
    stops us) and exit when the parent is gone."""
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        import jax

        jax.config.update("jax_compilation_cache_dir", cache_dir)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)  # the sweep process is gone (e.g. killed): its results can no longer be stored

    threading.Thread(target=watch, daemon=True).start()


def _result(future, job) -> dict:
    try:
        return future.result()
    except Exception as e:  # noqa: BLE001  e.g. a worker process died (out of memory) or was lost
        return {"key": job["key"], "status": "failed", "error": f"{type(e).__name__}: {e} (worker failure)",
                "traceback": traceback.format_exc(), "started": _now(), "finished": _now(), "seconds": 0.0,
                "timings": {}, "warnings": [], "host": "", "pid": 0}


def _run_local(jobs: list[dict], workers: int, cache_dir: Path):
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(), str(cache_dir)))
    finished = False
    try:
        futures = {pool.submit(compute_point, job): job for job in jobs}
        for future in _futures_completed(futures):
            yield futures[future], _result(future, futures[future])
        finished = True
    finally:
        if not finished:  # interrupted: stop the running points now (their results would be lost anyway)
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=finished, cancel_futures=True)


def _run_dask(jobs: list[dict], address: str, run_id: str):
    from distributed import Client, as_completed

    try:
        client = Client(address, set_as_default=False)
    except (OSError, TimeoutError) as e:
        raise ValueError(f"scheduler: cannot connect to the Dask scheduler at {address!r}: {e}") from None
    futures, finished = {}, False
    try:
        for job in jobs:
            futures[client.submit(compute_point, job, key=f"kernelfield-{job['key']}-{run_id}", pure=False)] = job
        for future in as_completed(list(futures), loop=client.loop):
            yield futures[future], _result(future, futures[future])
        finished = True
    finally:
        if not finished:
            client.cancel(list(futures))
        client.close()


def _run_here(jobs: list[dict]):
    for job in jobs:
        yield job, compute_point(job)


# --------------------------------------------------------------------------------------------
# the store and the driver


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by a signal (SIGTERM, SIGINT); finished points are in the store.
    ``signum``: the signal; ``finished`` / ``total``: points with a result in the store / in the sweep."""

    def __init__(self, signum: int):
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum
        self.finished = 0
        self.total = 0


@dataclass(frozen=True)
class SweepRun:
    """Outcome of :func:`run`: ``total`` points, ``reused`` (already in the store), ``computed``
    (finished now), ``failed`` (failed now), ``skipped_failed`` (failed before, not retried),
    ``failures`` (key -> error of every point failed now) and the wall ``seconds``."""

    store: Path
    run_id: str
    total: int
    reused: int
    computed: int
    failed: int
    skipped_failed: int
    seconds: float
    failures: dict = field(default_factory=dict)


#: Directory of a store holding JAX's persistent compilation cache for local workers (safe to delete).
JAX_CACHE = ".jax_cache"


def _point_path(store: Path, key: str) -> Path:
    return store / "points" / f"{key}.nc"


def _failure_path(store: Path, key: str) -> Path:
    return store / "failed" / f"{key}.json"


def _prepare_store(store: Path, sweep: Sweep) -> None:
    if store.exists() and not store.is_dir():
        raise ValueError(f"store: {str(store)!r} is a file; give a directory (created if missing)")
    if store.is_dir() and any(store.iterdir()) and not (store / "index.json").is_file():
        raise ValueError(f"store: {str(store)!r} is not empty and not a kernelfield sweep store (no index.json); "
                         "give a new or empty directory")
    from . import __version__

    index = {
        "kind": "kernelfield_sweep",
        "name": sweep.name,
        "config_hash": sweep.config_hash,
        "kernelfield_version": __version__,
        "source": sweep.source,
        "compute": list(sweep.compute),
        "options": {c: o.model_dump(mode="json") for c, o in sweep.options.items()},
        "config": sweep.data,
        "axes": [{"name": a.name, "path": a.path, "labels": list(a.labels)} for a in sweep.axes],
        "points": [{"key": p.key, "index": list(p.index)} for p in sweep.points],
    }
    storage.save_json(index, store / "index.json")


def _store_record(store: Path, job: dict, record: dict, provenance: dict) -> None:
    key = job["key"]
    common = {**provenance, "point_key": key, "started": record["started"], "finished": record["finished"],
              "seconds": record["seconds"], "host": record["host"], "pid": record["pid"],
              "warnings": "; ".join(record["warnings"]) or "none"}
    if record["status"] == "ok":
        ds = record["dataset"]
        ds.attrs.update(common)
        ds.attrs.update({f"seconds_{name}": t for name, t in record["timings"].items()})
        ds.attrs["compute"] = json.dumps(job["compute"])
        storage.save(ds, _point_path(store, key))
        _failure_path(store, key).unlink(missing_ok=True)
    else:
        previous = _failure_path(store, key)
        attempts = json.loads(previous.read_text()).get("attempts", 0) + 1 if previous.is_file() else 1
        storage.save_json({**common, "coords": job["coords"], "config": job["config"], "compute": job["compute"],
                           "error": record["error"], "traceback": record["traceback"], "attempts": attempts,
                           "timings": record["timings"]}, previous)


def default_workers() -> int:
    """CPUs available to this process (the default size of the local pool)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _progress(enabled: bool, console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.progress import TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, disable=not enabled)


def run(sweep, store, *, scheduler: str | None = None, workers: int | None = None, retry_failed: bool = False,
        progress: bool = True, console=None) -> SweepRun:
    """Compute every point of ``sweep`` (a :class:`Sweep` or a path to its TOML file) that has no
    result in ``store`` yet (with ``retry_failed``, also the failed ones) and write each as it
    finishes (atomically).

    ``scheduler``: address of a Dask distributed scheduler to run on (its workers need
    kernelfield); otherwise a local process pool of ``workers`` processes (default: the CPUs
    available), or ``workers=0`` to compute in this process. A rich progress bar shows points
    done / failed / remaining and an ETA. SIGTERM or Ctrl-C stop the workers and raise
    :class:`SweepInterrupted`; finished points are kept, and running the sweep again computes only
    the rest.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_config(sweep)
    if scheduler is not None and workers is not None:
        raise ValueError("workers: not used with scheduler (the Dask cluster has its own workers)")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers: must be an integer >= 0 (0 = compute in this process), got {workers!r}")
    started = time.perf_counter()
    store = Path(store)
    _prepare_store(store, sweep)
    done = {p.key for p in sweep.points if _point_path(store, p.key).is_file()}
    failed_before = {p.key for p in sweep.points if p.key not in done and _failure_path(store, p.key).is_file()}
    todo = [p for p in sweep.points if p.key not in done and (retry_failed or p.key not in failed_before)]
    run_id = uuid.uuid4().hex[:12]
    from . import __version__

    provenance = {"sweep_name": sweep.name, "sweep_config_hash": sweep.config_hash, "run_id": run_id,
                  "kernelfield_version": __version__}
    jobs = [{"key": p.key, "coords": p.coords, "config": p.config, "compute": list(sweep.compute),
             "options": {c: o.model_dump(mode="json") for c, o in sweep.options.items()}} for p in todo]
    if workers == 0 or not jobs:
        results = _run_here(jobs)
    elif scheduler is not None:
        results = _run_dask(jobs, scheduler, run_id)
    else:
        results = _run_local(jobs, min(workers or default_workers(), len(jobs)), store / JAX_CACHE)

    computed, failures = 0, {}
    previous_handler = None
    received: list[int] = []  # signals seen: the handler's exception is lost when Python runs the
    # handler inside a weakref callback or finaliser (it prints "Exception ignored"), so the loop
    # also stops at the next finished point
    if threading.current_thread() is threading.main_thread():
        def interrupt(signum, frame):
            received.append(signum)
            raise SweepInterrupted(signum)

        previous_handler = signal.signal(signal.SIGTERM, interrupt)
    try:
        with closing(results), _progress(progress, console) as bar:
            counts = lambda: (f"done {computed} · failed {len(failures)} · remaining "  # noqa: E731
                              f"{len(jobs) - computed - len(failures)} · from store {len(done)}")
            task = bar.add_task(sweep.name, total=len(jobs), counts=counts())
            for job, record in results:
                _store_record(store, job, record, provenance)
                if record["status"] == "ok":
                    computed += 1
                else:
                    failures[job["key"]] = record["error"]
                bar.update(task, advance=1, counts=counts())
                if received:
                    raise SweepInterrupted(received[0])
    except KeyboardInterrupt as e:
        stop = e if isinstance(e, SweepInterrupted) else SweepInterrupted(signal.SIGINT)
        # counted on disk: the signal may land between a point's file being written and ``computed += 1``
        stop.finished = sum(_point_path(store, p.key).is_file() for p in sweep.points)
        stop.total = len(sweep.points)
        raise stop from None
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    return SweepRun(store=store, run_id=run_id, total=len(sweep.points), reused=len(done), computed=computed,
                    failed=len(failures), skipped_failed=len(failed_before) if not retry_failed else 0,
                    seconds=time.perf_counter() - started, failures=failures)


# --------------------------------------------------------------------------------------------
# loading


def read_index(store) -> dict:
    """The ``index.json`` of a sweep store (raises ``ValueError`` naming ``store`` if there is none)."""
    path = Path(store) / "index.json"
    if not path.is_file():
        raise ValueError(f"store: {str(store)!r} is not a kernelfield sweep store (no index.json)")
    return json.loads(path.read_text())


_PROVENANCE = ("run_id", "started", "finished", "kernelfield_version", "host", "warnings")


def load(store) -> xr.Dataset:
    """One labelled dataset of a sweep store: one dimension per axis (coordinates: the axis values,
    or labels for whole-section axes) followed by the output's own dims (``t, a, t2, a2`` for
    kernels, ...). Every output is ``NaN`` where the point failed or is missing (arrays of different
    per-point sizes, e.g. with ``architecture.T`` as an axis, are NaN-padded). Per point:
    ``status`` (``ok`` / ``failed`` / ``missing``), ``error``, ``seconds``, ``seconds_<computation>``,
    ``point_key`` and the provenance strings ``run_id``, ``started``, ``finished``,
    ``kernelfield_version``, ``host``, ``warnings``. Attrs: the sweep's ``name``, ``config_hash``,
    ``compute`` and ``config`` (JSON)."""
    store = Path(store)
    index = read_index(store)
    axes = index["axes"]
    shape = tuple(len(a["labels"]) for a in axes)
    dims = tuple(a["name"] for a in axes)
    coords = {a["name"]: np.asarray(a["labels"], dtype=object if any(isinstance(v, str) for v in a["labels"])
                                    else None) for a in axes}
    strings = {name: np.full(shape, "", dtype=object) for name in ("status", "error", "point_key", *_PROVENANCE)}
    numbers: dict[str, np.ndarray] = {"seconds": np.full(shape, np.nan)}
    outputs: dict[str, tuple[tuple, dict]] = {}  # name -> (inner dims, {index: array})
    for point in index["points"]:
        idx = tuple(point["index"])
        strings["point_key"][idx] = point["key"]
        path, failure = _point_path(store, point["key"]), _failure_path(store, point["key"])
        if path.is_file():
            ds = storage.load(path)
            strings["status"][idx] = "ok"
            for name in _PROVENANCE:
                strings[name][idx] = str(ds.attrs.get(name, ""))
            for name, value in ds.attrs.items():
                if name == "seconds" or name.startswith("seconds_"):
                    numbers.setdefault(name, np.full(shape, np.nan))[idx] = float(value)
            for name, var in ds.data_vars.items():
                outputs.setdefault(name, (var.dims, {}))[1][idx] = np.asarray(var.values, dtype=np.float64)
        elif failure.is_file():
            record = json.loads(failure.read_text())
            strings["status"][idx] = "failed"
            strings["error"][idx] = record["error"]
            numbers["seconds"][idx] = record["seconds"]
            for name in _PROVENANCE:
                strings[name][idx] = str(record.get(name, ""))
        else:
            strings["status"][idx] = "missing"
    data_vars = {name: (dims, arr) for name, arr in {**strings, **numbers}.items()}
    sizes: dict[str, int] = {}  # per-point dims padded to their largest size over all points and outputs
    for inner, values in outputs.values():
        for k, d in enumerate(inner):
            sizes[d] = max([sizes.get(d, 0)] + [v.shape[k] for v in values.values()])
    for name, (inner, values) in outputs.items():
        arr = np.full(shape + tuple(sizes[d] for d in inner), np.nan)
        for idx, v in values.items():
            arr[idx + tuple(slice(0, s) for s in v.shape)] = v
        data_vars[name] = (dims + tuple(inner), arr)
    inner_coords = {d: np.arange(size) for d, size in sizes.items()}
    attrs = {"name": index["name"], "config_hash": index["config_hash"], "compute": json.dumps(index["compute"]),
             "config": json.dumps(index["config"]), "store": str(store)}
    return xr.Dataset(data_vars, coords={**coords, **inner_coords}, attrs=attrs)
