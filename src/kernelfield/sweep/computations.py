"""Per-point computations of a sweep: the registry (:data:`COMPUTATIONS`, :func:`register_computation`),
what a computation sees (:class:`PointContext`), the built-in computations and
:func:`compute_point`, which runs them for one point (in a worker)."""

from __future__ import annotations

import datetime as dt
import inspect
import json
import os
import socket
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field

from .. import storage
from ..compare import compare
from ..compilation import release_programs_if_crowded
from ..config import Config
from ..observables import block_norms, mean_coherence
from ..finite.sampling import sample
from ..tasks import TASKS
from ..theory.lazy import prior_kernel
from ..theory.solver import solve
from ..theory.stability import outlier_eigenvalues, stability

__all__ = ["COMPUTATIONS", "Computation", "PointContext", "PredictiveErrorOptions", "coherence_error_bound",
           "compute_point", "now", "register_computation"]


class PointContext:
    """What a computation sees at one point: the validated run configuration (``config``, a
    :class:`kernelfield.config.Config`), the built ``arch``, ``task`` and ``prior``, the raw results
    of earlier computations (``results[name]``) and the kernels and predictive means they produced
    (``kernels[source]`` ``(T·P, T·P)``, the kernels of the centred features ``centred[source]``,
    ``predictions[source]`` ``(P, T)``; sources ``theory``, ``lazy``, ``sampled``) and string
    attributes of the point's record (``attrs``, e.g. ``theory_method``)."""

    def __init__(self, config: Config):
        self.config = config
        self.arch = config.build_architecture()
        self.task = config.build_task()
        self.prior = config.build_prior()
        self.results: dict[str, Any] = {}
        self.kernels: dict[str, np.ndarray] = {}
        self.centred: dict[str, np.ndarray] = {}
        self.predictions: dict[str, np.ndarray] = {}
        self.outputs: dict[str, Any] = {}
        self.attrs: dict[str, str] = {}

    def add_kernel(self, source: str, C, C_centred=None) -> None:
        """Record kernel ``C`` of ``source``; stored as output ``C_<source>`` (dims ``t, a, t2, a2``).
        ``C_centred``: the kernel of the centred features ``C - <φ><φ>ᵀ`` that the order parameter
        is measured on (THEORY.md §4); default ``C`` (odd ``phi``, whose features have zero mean)."""
        C = np.asarray(C, dtype=np.float64)
        T, P = self.task.T, self.task.P
        self.kernels[source] = C
        self.centred[source] = C if C_centred is None else np.asarray(C_centred, dtype=np.float64)
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
    """Mean-field theory (kf.solve, any phi, [theory] method): dominant kernel C_theory, action S (± S_err,
    Monte Carlo for the particle solver), solver diagnostics; the solver that ran in attribute theory_method."""
    sol = solve(**point.config.solve_kwargs())
    point.results["solve"] = sol
    point.attrs["theory_method"] = sol.method
    point.add_kernel("theory", sol.C, sol.C_centred)
    point.add_prediction("theory", sol.predict().mean)
    return {"S": sol.S, "residual": sol.residual, "converged": int(sol.converged),
            "iterations": sol.best.iterations, "n_branches": len(sol.branches),
            "S_err": sol.best.S_err, "mc_error": sol.best.mc_error, "solve_seconds": sol.seconds}


@register_computation("lazy")
def _lazy(point: PointContext, options) -> dict:
    """Lazy (NNGP) prior kernel C_lazy (kf.prior_kernel) and its predictive mean, any phi."""
    cfg = point.config
    lazy = prior_kernel(point.arch, point.task, point.prior, cfg.theory.phi, cfg.theory.kappa)
    point.add_kernel("lazy", lazy.C, lazy.C_centred)
    point.add_prediction("lazy", lazy.predict().mean)
    return {}


@register_computation("sample")
def _sample(point: PointContext, options) -> dict:
    """Finite-width posterior samples (kf.sample, [sampling] table): C_sampled, output mean, HMC diagnostics."""
    s = sample(**point.config.sample_kwargs(), progress=False)
    point.results["sample"] = s
    point.add_kernel("sampled", s.C_mean, s.C_centred)
    point.add_prediction("sampled", s.f_mean)
    T, P = point.task.T, point.task.P
    return {"C_sem": (storage.KERNEL_DIMS, np.asarray(s.C_sem).reshape(T, P, T, P)),
            "acceptance_rate": s.acceptance_rate, "ess": s.ess, "num_divergent": s.num_divergent,
            "step_size": float(np.mean(s.step_size)), "sample_seconds": s.seconds}


@register_computation("compare", requires=("solve", "sample"))
def _compare(point: PointContext, options) -> dict:
    """Theory vs samples block by block (kf.compare): kernel_error ± kernel_error_bar, prediction_error, parity."""
    cmp = compare(point.results["solve"], point.results["sample"])
    return {"kernel_error": cmp.error, "kernel_error_bar": cmp.error_bar, "prediction_error": cmp.prediction_error,
            "parity": cmp.parity, "block_error": (("t", "t2"), cmp.block_error),
            "block_error_bar": (("t", "t2"), cmp.block_error_bar)}


@register_computation("coherence", requires_any=("solve", "lazy", "sample"))
def _coherence(point: PointContext, options) -> dict:
    """Temporal coherence (order parameter, mean rho_ts over t != s >= 1) of the centred kernel of
    every source (kf.temporal_coherence): coherence_<source>, with error bars coherence_<source>_err
    where the source has Monte Carlo errors (the particle solver, sampled networks)."""
    T, P = point.task.T, point.task.P
    out = {f"coherence_{source}": mean_coherence(C, T, P) for source, C in point.centred.items()}
    sol, samples = point.results.get("solve"), point.results.get("sample")
    if sol is not None and sol.best.C_err is not None:
        out["coherence_theory_err"] = coherence_error_bound(point.centred["theory"], sol.best.C_err, T, P)
    if samples is not None and samples.num_chains > 1:
        per_chain = [mean_coherence(C, T, P) for C in samples.C_centred_chains]
        out["coherence_sampled_err"] = float(np.std(per_chain, ddof=1) / np.sqrt(len(per_chain)))
    return out


def coherence_error_bound(C: np.ndarray, C_err: np.ndarray, T: int, P: int) -> float:
    """Error bar of ``mean_coherence(C)`` from the entrywise standard errors ``C_err``: the mean over
    ``t != s >= 1`` of ``||C_err_ts||_F / sqrt(||C_tt||_F ||C_ss||_F)``, by the triangle inequality
    the most that moving every entry of the cross-time block by its standard error can change
    ``rho_ts`` (the equal-time blocks' relative errors, much smaller, neglected)."""
    errors, norms = block_norms(C_err, T, P), block_norms(C, T, P)
    scale = np.sqrt(np.diag(norms))
    pairs = [errors[t, s] / max(scale[t] * scale[s], 1e-300) for t in range(1, T) for s in range(1, T) if t != s]
    return float(np.mean(pairs)) if pairs else float("nan")


@register_computation("stability", requires=("solve",))
def _stability(point: PointContext, options) -> dict:
    """Leading cross-time Hessian eigenvalue at the symmetric solution (kf.stability; > 0: unstable)."""
    st = stability(point.results["solve"], k=1)
    return {"leading_eigenvalue": st.leading, "S_symmetric": st.S_sym}


@register_computation("outlier", requires=("solve",))
def _outlier(point: PointContext, options) -> dict:
    """Largest predicted outlier |eigenvalue| of the last step's recurrent matrix (kf.outlier_eigenvalues)."""
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



def now() -> str:
    """The current UTC time, ISO 8601 with milliseconds (a point record's ``started`` / ``finished``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _task_seed(cfg: Config):
    params = inspect.signature(TASKS[cfg.task.generator]).parameters
    if "seed" not in params:
        return "none"
    return cfg.task.kwargs.get("seed", params["seed"].default)


def compute_point(job: dict) -> dict:
    """Compute one point; never raises. ``job``: ``key``, ``config`` (run configuration mapping),
    ``compute`` (names, execution order), ``options`` (name -> mapping). Returns a record with
    ``status`` (``"ok"`` or ``"failed"``), ``dataset`` (outputs and provenance, when ok),
    ``error`` and ``traceback`` (when failed), ``started``, ``finished``, ``seconds``,
    ``timings`` (seconds per computation), ``warnings``, ``host`` and ``pid``. Afterwards the
    process frees its compiled programs if they crowd its memory mappings
    (:func:`kernelfield.compilation.release_programs_if_crowded`), so a long-lived worker never
    reaches the kernel's limit on them."""
    t0 = time.perf_counter()
    record = {"key": job["key"], "started": now(), "host": socket.gethostname(), "pid": os.getpid(), "timings": {}}
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
    record["finished"] = now()
    record["seconds"] = time.perf_counter() - t0
    release_programs_if_crowded()
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
             "task_seed": _task_seed(cfg), "sampling_seed": cfg.sampling.seed, **point.attrs}
    return xr.Dataset(data_vars, attrs=attrs)

