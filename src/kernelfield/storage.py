"""Labelled, self-describing results: ``xarray.Dataset`` <-> netCDF (h5netcdf).

Layout (all datasets):

* kernels ``(n, n)`` in time-major order ``t*P + a`` are stored as 4-d arrays with dims
  ``(t, a, t2, a2)``, i.e. ``C.reshape(T, P, T, P)``; :func:`kernel_matrix` undoes it;
* ``inputs`` ``(a, t, d)`` and ``targets`` ``(a, t)`` (``NaN`` = unsupervised) so the task can
  be rebuilt;
* attrs: the provenance stamp of :func:`provenance` (``kind``: ``"solution"``, ``"samples"`` or
  ``"comparison"``; ``kernelfield_version``; ``created``, ISO 8601, UTC; ``config``, the JSON of
  ``arch.to_dict()``, ``prior.to_dict()``, ``phi``, ``kappa`` and, for samples, ``N``, ``seed``
  and the sampler settings; ``seed`` where the run had one) and the diagnostics of the run.
  Booleans are stored as ``0``/``1`` integers (netCDF has no bool).

Solutions (:func:`solution_to_dataset`): ``C``, ``Ct`` of the dominant branch,
``prediction_mean`` / ``prediction_var_coeff`` ``(a, t)`` (``N·var``, width independent),
and per branch (dim ``branch``, sorted by decreasing ``S``): ``branch_C``, ``branch_Ct``,
``branch_S``, ``branch_Gamma``, ``branch_E``, ``branch_init``, ``branch_converged``,
``branch_residual_forward``, ``branch_residual_backward``, ``branch_iterations``,
``branch_stopped`` (why the closure stopped without converging; ``""`` otherwise) and, for the
particle solver's Monte Carlo estimates, ``branch_C_err``, ``branch_S_err``, ``branch_mc_error``,
``branch_phi_mean`` ``(branch, t, a)`` (NaN where not applicable).
Attrs ``S``, ``converged``, ``residual``, ``seconds``, ``method`` (the solver; for the Gaussian
closure also ``note``: "Gaussian closure: approximation, S is a lower bound"; ``Sigma`` is not
stored).

Samples (:func:`samples_to_dataset`): ``C`` (= ``C_mean``), ``C_sem``, ``C_centred``, the per-chain
``C_chains`` and ``C_centred_chains`` ``(chain, t, a, t2, a2)``, ``f_mean``/``f_var`` ``(a, t)``, and the kept weight samples as
``weights_<family>`` with dims ``(sample, <family>_group, <family>_axis0, ...)``.
``step_size`` is an attr when scalar, else a variable (dim ``chain`` for one per chain).
Attrs ``N``, ``seed``, ``acceptance_rate``, ``ess``, ``seconds``, ``num_divergent``.

Trained networks (:func:`trained_to_dataset`): ``C`` (= ``C_mean``), ``C_sem``, ``C_centred``, the
per-network ``C_networks`` ``(network, t, a, t2, a2)`` and ``f_networks`` ``(network, a, t)``,
``f_mean``/``f_sem``/``f_var`` ``(a, t)``, ``loss`` ``(chunk, network)`` at ``step`` ``(chunk,)`` and
the final standardised weights ``params_<family>`` ``(network, <family>_group, ...)``; attrs
``N``, ``seed``, ``step_size``, ``lambda_max``, ``num_records``, ``seconds`` (settings in ``config``).

Lazy kernels (:func:`lazy_kernel_to_dataset`): ``C``, ``C_centred`` and ``mean_outer`` (``<φ><φ>ᵀ``,
NaN for odd ``phi``).

Comparisons (:func:`comparison_to_dataset`): ``C_theory``, ``C_sampled``, ``C_sem``,
``block_error``/``block_error_bar`` ``(t, t2)``; attrs ``error``, ``error_bar``,
``prediction_error``, ``parity``, ``N``.

:func:`to_xarray` converts any of these results (this module owns every conversion: the result
types do not serialise themselves). :func:`save` writes a dataset or a result atomically
(netCDF-4 via h5netcdf), as do :func:`save_text` and :func:`save_json`; :func:`load` reads fully
into memory and closes the file. :func:`solution_from_dataset` rebuilds a full
:class:`~kernelfield.Solution` (``predict()`` works); :func:`samples_from_dataset` a
:class:`~kernelfield.Samples`, :func:`trained_from_dataset` a :class:`~kernelfield.Trained` and
:func:`lazy_kernel_from_dataset` a :class:`~kernelfield.LazyKernel`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from ._version import __version__
from .compare import Comparison
from .model import Model
from .finite.sampling import Samples
from .spec import Architecture, Prior, Task
from .theory.kernels import make_problem
from .theory.closure import NOTE as CLOSURE_NOTE
from .theory.lazy import LazyKernel
from .theory.solver import Branch, Solution
from .finite.training import Trained

__all__ = [
    "to_xarray",
    "provenance",
    "solution_to_dataset",
    "samples_to_dataset",
    "comparison_to_dataset",
    "trained_to_dataset",
    "lazy_kernel_to_dataset",
    "solution_from_dataset",
    "samples_from_dataset",
    "trained_from_dataset",
    "lazy_kernel_from_dataset",
    "spec_from_dataset",
    "model_from_dataset",
    "kernel_matrix",
    "config_json",
    "save",
    "save_text",
    "save_json",
    "load",
]

KERNEL_DIMS = ("t", "a", "t2", "a2")

_UMASK = os.umask(0o022)  # read the process umask once (restored immediately) for file modes
os.umask(_UMASK)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _kernel(C, T: int, P: int) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    if C.shape[-2:] != (T * P, T * P):
        raise ValueError(f"C: expected a ({T * P}, {T * P}) kernel for T = {T}, P = {P}, got shape {C.shape}")
    return C.reshape(C.shape[:-2] + (T, P, T, P))


def kernel_matrix(da) -> np.ndarray:
    """The ``(n, n)`` time-major matrix of a kernel stored with dims ``(..., t, a, t2, a2)``."""
    arr = np.asarray(da)
    T, P = arr.shape[-4], arr.shape[-3]
    return arr.reshape(arr.shape[:-4] + (T * P, T * P))


def _coords(T: int, P: int, D: int | None = None) -> dict:
    coords = {"t": np.arange(T), "a": np.arange(P), "t2": np.arange(T), "a2": np.arange(P)}
    if D is not None:
        coords["d"] = np.arange(D)
    return coords


def _task_vars(task: Task) -> dict:
    return {
        "inputs": (("a", "t", "d"), np.asarray(task.inputs), {"description": "input x_a(t)"}),
        "targets": (("a", "t"), np.asarray(task.targets), {"description": "target y_a(t); NaN = unsupervised"}),
    }


def config_json(arch: Architecture, prior: Prior, phi: str, kappa: float, **extra) -> str:
    """JSON provenance string: ``arch.to_dict()``, ``prior.to_dict()``, ``phi``, ``kappa`` and any
    further (non-``None``) settings such as ``N`` and ``seed``."""
    cfg = {"architecture": arch.to_dict(), "prior": prior.to_dict(), "phi": str(phi), "kappa": float(kappa)}
    cfg.update({k: v for k, v in extra.items() if v is not None})
    return json.dumps(cfg, default=_json_default)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _attr(value):
    """A netCDF-safe attribute value (no bools, no None)."""
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None:
        return "none"
    if isinstance(value, np.generic):
        return value.item()
    return value


def provenance(kind: str, config: dict | str, seed: int | None = None) -> dict:
    """The provenance stamp every stored dataset carries: ``kind``, ``kernelfield_version``,
    ``created`` (ISO 8601, UTC), ``config`` (a JSON string; a dict is serialised) and, when
    given, ``seed``."""
    if not isinstance(config, str):
        config = json.dumps(config, default=_json_default)
    stamp = {"kind": kind, "kernelfield_version": __version__, "created": _now(), "config": config}
    if seed is not None:
        stamp["seed"] = int(seed)
    return stamp


def model_config(model: Model, **extra) -> str:
    """:func:`config_json` of a :class:`~kernelfield.Model`."""
    return config_json(model.arch, model.prior, model.phi, model.kappa, **extra)


def to_xarray(result) -> xr.Dataset:
    """Labelled dataset with provenance of a :class:`~kernelfield.Solution`,
    :class:`~kernelfield.Samples`, :class:`~kernelfield.Trained`, :class:`~kernelfield.LazyKernel`
    or :class:`~kernelfield.Comparison`."""
    for kind, convert in ((Solution, solution_to_dataset), (Samples, samples_to_dataset),
                          (Trained, trained_to_dataset), (LazyKernel, lazy_kernel_to_dataset),
                          (Comparison, comparison_to_dataset)):
        if isinstance(result, kind):
            return convert(result)
    raise TypeError(f"result: cannot convert a {type(result).__name__} to a dataset; "
                    "expected a Solution, Samples, Trained, LazyKernel or Comparison")


# --------------------------------------------------------------------------------------------
# to Dataset


def _or_nan(x, shape) -> np.ndarray:
    return np.full(shape, np.nan) if x is None else np.asarray(x, dtype=np.float64)


def solution_to_dataset(sol) -> xr.Dataset:
    """Dataset of a :class:`~kernelfield.Solution` (see the module docstring for the layout)."""
    task = sol.task
    T, P, D = task.T, task.P, task.D
    branches = list(sol.branches)
    pred = sol.predict()
    kdims = KERNEL_DIMS
    data_vars = {
        "C": (kdims, _kernel(sol.C, T, P), {"description": "trained kernel C (dominant branch)"}),
        "Ct": (kdims, _kernel(sol.Ct, T, P), {"description": "conjugate kernel C-tilde (dominant branch)"}),
        "prediction_mean": (("a", "t"), np.asarray(pred.mean), {"description": "posterior predictive mean"}),
        "prediction_var_coeff": (
            ("a", "t"),
            np.asarray(pred.var),
            {"description": "N * posterior predictive variance (width independent)"},
        ),
        "branch_C": (("branch",) + kdims, np.stack([_kernel(b.C, T, P) for b in branches])),
        "branch_Ct": (("branch",) + kdims, np.stack([_kernel(b.Ct, T, P) for b in branches])),
        "branch_S": (("branch",), np.array([b.S for b in branches], dtype=np.float64)),
        "branch_Gamma": (("branch",), np.array([b.Gamma for b in branches], dtype=np.float64)),
        "branch_E": (("branch",), np.array([b.E for b in branches], dtype=np.float64)),
        "branch_init": (("branch",), np.array([str(b.init) for b in branches], dtype=object)),
        "branch_converged": (("branch",), np.array([int(b.converged) for b in branches], dtype=np.int64)),
        "branch_residual_forward": (("branch",), np.array([b.residual_forward for b in branches], dtype=np.float64)),
        "branch_residual_backward": (("branch",), np.array([b.residual_backward for b in branches], dtype=np.float64)),
        "branch_iterations": (("branch",), np.array([b.iterations for b in branches], dtype=np.int64)),
        "branch_stopped": (("branch",), np.array([b.stopped for b in branches], dtype=object)),
        "branch_C_err": (("branch",) + kdims, np.stack([_kernel(_or_nan(b.C_err, (T * P, T * P)), T, P)
                                                       for b in branches]),
                         {"description": "Monte Carlo standard error of C (NaN: exact solver)"}),
        "branch_S_err": (("branch",), np.array([b.S_err for b in branches], dtype=np.float64)),
        "branch_mc_error": (("branch",), np.array([b.mc_error for b in branches], dtype=np.float64)),
        "branch_phi_mean": (("branch", "t", "a"), np.stack([_or_nan(b.phi_mean, (T * P,)).reshape(T, P)
                                                           for b in branches]),
                            {"description": "<phi> per (t, a) (NaN: zero by symmetry)"}),
        **_task_vars(task),
    }
    coords = _coords(T, P, D)
    coords["branch"] = np.arange(len(branches))
    attrs = provenance("solution", model_config(sol.model))
    attrs.update(
        S=float(sol.S),
        converged=int(bool(sol.converged)),
        residual=float(sol.residual),
        seconds=float(sol.seconds),
        best_branch=int(np.argmax([b.S for b in branches])),
        method=str(sol.method),
    )
    if sol.method == "gaussian":
        attrs["note"] = CLOSURE_NOTE
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


_SAMPLER_SETTINGS = ("num_samples", "num_warmup", "num_chains", "num_integration_steps", "thin", "keep_weights")


def samples_to_dataset(samples) -> xr.Dataset:
    """Dataset of :class:`~kernelfield.finite.sampling.Samples` (see the module docstring for the layout)."""
    task = samples.task
    T, P, D = task.T, task.P, task.D
    kdims = KERNEL_DIMS
    C_chains = _kernel(samples.C_chains, T, P)
    data_vars = {
        "C": (kdims, _kernel(samples.C_mean, T, P), {"description": "posterior mean empirical kernel"}),
        "C_sem": (kdims, _kernel(samples.C_sem, T, P), {"description": "standard error of C (between chains)"}),
        "C_chains": (("chain",) + kdims, C_chains, {"description": "per-chain mean kernel"}),
        "C_centred": (kdims, _kernel(samples.C_centred, T, P),
                      {"description": "posterior mean kernel of the centred features (mean over neurons removed)"}),
        "C_centred_chains": (("chain",) + kdims, _kernel(samples.C_centred_chains, T, P),
                             {"description": "per-chain mean kernel of the centred features"}),
        "f_mean": (("a", "t"), np.asarray(samples.f_mean, dtype=np.float64), {"description": "posterior mean output"}),
        "f_var": (("a", "t"), np.asarray(samples.f_var, dtype=np.float64), {"description": "posterior output variance"}),
        **_task_vars(task),
    }
    coords = _coords(T, P, D)
    coords["chain"] = np.arange(C_chains.shape[0])
    data_vars.update(_family_vars("weights_", "sample", samples.weights, "kept posterior samples of"))

    settings = {k: getattr(samples, k) for k in _SAMPLER_SETTINGS}
    config = model_config(samples.model, N=int(samples.N), seed=int(samples.seed), **settings)
    attrs = provenance("samples", config, seed=samples.seed)
    attrs.update(N=int(samples.N),
                 acceptance_rate=float(samples.acceptance_rate), ess=float(samples.ess),
                 seconds=float(samples.seconds))
    step = np.asarray(samples.step_size, dtype=np.float64)
    if step.size == 1:
        attrs["step_size"] = float(step.reshape(()))
    elif step.shape == (C_chains.shape[0],):  # one adapted step size per chain
        data_vars["step_size"] = (("chain",), step, {"description": "adapted HMC step size per chain"})
    else:
        data_vars["step_size"] = (tuple(f"step_size_axis{k}" for k in range(step.ndim)), step)
    attrs["num_divergent"] = int(samples.num_divergent)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _family_vars(prefix: str, lead: str, arrays: dict, description: str) -> dict:
    """``<prefix><family>`` variables with dims ``(lead, <family>_group, <family>_axis0, ...)``."""
    out = {}
    for fam, arr in arrays.items():
        arr = np.asarray(arr)
        dims = (lead, f"{fam}_group") + tuple(f"{fam}_axis{k}" for k in range(arr.ndim - 2))
        out[f"{prefix}{fam}"] = (dims[: arr.ndim], arr, {"description": f"{description} {fam}"})
    return out


_TRAINING_SETTINGS = ("num_networks", "num_steps", "burn_in", "record_every")


def trained_to_dataset(trained) -> xr.Dataset:
    """Dataset of a :class:`~kernelfield.Trained` (see the module docstring for the layout)."""
    task = trained.task
    T, P, D = task.T, task.P, task.D
    kdims = KERNEL_DIMS
    data_vars = {
        "C": (kdims, _kernel(trained.C_mean, T, P), {"description": "mean kernel of the trained networks"}),
        "C_sem": (kdims, _kernel(trained.C_sem, T, P), {"description": "standard error of C (between networks)"}),
        "C_centred": (kdims, _kernel(trained.C_centred, T, P),
                      {"description": "mean kernel of the centred features (mean over neurons removed)"}),
        "C_networks": (("network",) + kdims, _kernel(trained.C_networks, T, P),
                       {"description": "time-averaged kernel of each network"}),
        "f_networks": (("network", "a", "t"), np.asarray(trained.f_networks, dtype=np.float64),
                       {"description": "time-averaged output of each network"}),
        "f_mean": (("a", "t"), np.asarray(trained.f_mean, dtype=np.float64), {"description": "posterior mean output"}),
        "f_sem": (("a", "t"), np.asarray(trained.f_sem, dtype=np.float64), {"description": "standard error of f_mean"}),
        "f_var": (("a", "t"), np.asarray(trained.f_var, dtype=np.float64), {"description": "posterior output variance"}),
        "loss": (("chunk", "network"), np.asarray(trained.loss, dtype=np.float64),
                 {"description": "training MSE on the supervised set after each chunk"}),
        "step": (("chunk",), np.asarray(trained.step), {"description": "step count at the end of each chunk"}),
        **_family_vars("params_", "network", trained.params, "final standardised weights of"),
        **_task_vars(task),
    }
    coords = _coords(T, P, D)
    coords["network"] = np.arange(trained.num_networks)
    settings = {k: int(getattr(trained, k)) for k in _TRAINING_SETTINGS}
    config = model_config(trained.model, N=int(trained.N), seed=int(trained.seed), **settings)
    attrs = provenance("trained", config, seed=trained.seed)
    attrs.update(N=int(trained.N), step_size=float(trained.step_size), lambda_max=float(trained.lambda_max),
                 num_records=int(trained.num_records), seconds=float(trained.seconds))
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def lazy_kernel_to_dataset(lazy) -> xr.Dataset:
    """Dataset of a :class:`~kernelfield.LazyKernel` (see the module docstring for the layout)."""
    task = lazy.task
    T, P, D = task.T, task.P, task.D
    data_vars = {
        "C": (KERNEL_DIMS, _kernel(lazy.C, T, P), {"description": "lazy (NNGP) prior feature kernel"}),
        "C_centred": (KERNEL_DIMS, _kernel(lazy.C_centred, T, P),
                      {"description": "lazy kernel of the centred features C - <phi><phi>^T"}),
        "mean_outer": (KERNEL_DIMS, _kernel(_or_nan(lazy.mean_outer, (T * P, T * P)), T, P),
                       {"description": "<phi><phi>^T (NaN: zero for odd phi)"}),
        **_task_vars(task),
    }
    return xr.Dataset(data_vars, coords=_coords(T, P, D), attrs=provenance("lazy_kernel", model_config(lazy.model)))


def comparison_to_dataset(cmp, config: dict | str | None = None) -> xr.Dataset:
    """Dataset of a :class:`~kernelfield.compare.Comparison`. ``config`` (a dict or JSON string,
    e.g. the solution's ``ds.attrs["config"]``) is stored as provenance; by default that of the
    comparison's model (with ``N`` and ``seed`` of the samples)."""
    T, P = cmp.T, cmp.P
    kdims = KERNEL_DIMS
    data_vars = {
        "C_theory": (kdims, _kernel(cmp.C_theory, T, P)),
        "C_sampled": (kdims, _kernel(cmp.C_sampled, T, P), {"description": "after the parity flip"}),
        "C_sem": (kdims, _kernel(cmp.C_sem, T, P)),
        "block_error": (("t", "t2"), np.asarray(cmp.block_error, dtype=np.float64)),
        "block_error_bar": (("t", "t2"), np.asarray(cmp.block_error_bar, dtype=np.float64)),
    }
    if config is None:
        config = "{}" if cmp.model is None else model_config(cmp.model, N=int(cmp.N), seed=cmp.seed)
    attrs = provenance("comparison", config, seed=cmp.seed)
    attrs.update(N=int(cmp.N), error=float(cmp.error), error_bar=float(cmp.error_bar),
                 prediction_error=float(cmp.prediction_error), parity=int(cmp.parity))
    return xr.Dataset(data_vars, coords=_coords(T, P), attrs=attrs)


# --------------------------------------------------------------------------------------------
# from Dataset


def model_from_dataset(ds: xr.Dataset) -> Model:
    """The :class:`~kernelfield.Model` of a solution or samples dataset."""
    return Model(*spec_from_dataset(ds))


def spec_from_dataset(ds: xr.Dataset) -> tuple[Architecture, Task, Prior, str, float]:
    """``(arch, task, prior, phi, kappa)`` rebuilt from a solution or samples dataset."""
    cfg = json.loads(ds.attrs["config"])
    a = cfg["architecture"]
    arch = Architecture(a["T"], a["W_groups"], a["U_groups"], a["b_groups"], a["v_groups"], name=a.get("name", "custom"))
    prior = Prior(**cfg["prior"])
    task = Task(np.asarray(ds["inputs"].values), np.asarray(ds["targets"].values))
    return arch, task, prior, str(cfg["phi"]), float(cfg["kappa"])


def solution_from_dataset(ds: xr.Dataset):
    """Rebuild the :class:`~kernelfield.Solution` stored by :func:`solution_to_dataset`.

    Architecture, prior, task, ``phi``, ``kappa`` and every branch (kernels, actions,
    diagnostics) are restored; the solver's internal ``problem`` is re-assembled from them, so
    ``predict()`` works as on the original.
    """
    if ds.attrs.get("kind", "solution") != "solution":
        raise ValueError(f"ds: holds a {ds.attrs.get('kind')!r} dataset, not a solution")
    model = model_from_dataset(ds)
    branches = tuple(
        Branch(
            C=kernel_matrix(ds["branch_C"].values[i]),
            Ct=kernel_matrix(ds["branch_Ct"].values[i]),
            S=float(ds["branch_S"].values[i]),
            Gamma=float(ds["branch_Gamma"].values[i]),
            E=float(ds["branch_E"].values[i]),
            init=str(ds["branch_init"].values[i]),
            converged=bool(ds["branch_converged"].values[i]),
            residual_forward=float(ds["branch_residual_forward"].values[i]),
            residual_backward=float(ds["branch_residual_backward"].values[i]),
            iterations=int(ds["branch_iterations"].values[i]),
            stopped=str(ds["branch_stopped"].values[i]) if "branch_stopped" in ds else "",  # files before it: ""
            **_monte_carlo_fields(ds, i),
        )
        for i in range(ds.sizes["branch"])
    )
    problem = make_problem(model.arch, model.task, model.prior, model.kappa)
    method = ds.attrs.get("method", "exact" if model.phi == "linear" else "particles")  # files before the closure
    return Solution(model, branches, problem, float(ds.attrs.get("seconds", 0.0)), str(method))


def _monte_carlo_fields(ds: xr.Dataset, i: int) -> dict:
    """``C_err``, ``S_err``, ``mc_error``, ``phi_mean`` of branch ``i`` (absent in files written
    before the particle solver: defaults)."""
    if "branch_C_err" not in ds:
        return {}
    C_err = kernel_matrix(ds["branch_C_err"].values[i])
    mean = ds["branch_phi_mean"].values[i].reshape(-1)
    return dict(C_err=None if np.all(np.isnan(C_err)) else C_err, S_err=float(ds["branch_S_err"].values[i]),
                mc_error=float(ds["branch_mc_error"].values[i]), phi_mean=None if np.all(np.isnan(mean)) else mean)


def samples_from_dataset(ds: xr.Dataset):
    """Rebuild the :class:`~kernelfield.Samples` stored by :func:`samples_to_dataset` (settings
    absent from older files are ``None``)."""
    if ds.attrs.get("kind", "samples") != "samples":
        raise ValueError(f"ds: holds a {ds.attrs.get('kind')!r} dataset, not samples")
    cfg = json.loads(ds.attrs["config"])
    weights = _families(ds, "weights_")
    step = ds.attrs["step_size"] if "step_size" in ds.attrs else np.asarray(ds["step_size"].values)
    return Samples(
        model=model_from_dataset(ds), N=int(ds.attrs["N"]), seed=int(ds.attrs["seed"]),
        num_samples=cfg.get("num_samples"), num_chains=cfg.get("num_chains", ds.sizes["chain"]),
        num_warmup=cfg.get("num_warmup"), num_integration_steps=cfg.get("num_integration_steps"),
        thin=cfg.get("thin"), num_divergent=int(ds.attrs.get("num_divergent", 0)),
        C_chains=kernel_matrix(ds["C_chains"].values), C_mean=kernel_matrix(ds["C"].values),
        C_sem=kernel_matrix(ds["C_sem"].values), C_centred=kernel_matrix(ds["C_centred"].values),
        C_centred_chains=kernel_matrix(ds["C_centred_chains"].values), f_mean=np.asarray(ds["f_mean"].values),
        f_var=np.asarray(ds["f_var"].values), weights=weights,
        acceptance_rate=float(ds.attrs["acceptance_rate"]), ess=float(ds.attrs["ess"]), step_size=step,
        seconds=float(ds.attrs["seconds"]),
    )


def _families(ds: xr.Dataset, prefix: str) -> dict:
    return {name[len(prefix):]: np.asarray(ds[name].values) for name in ds.data_vars if name.startswith(prefix)}


def trained_from_dataset(ds: xr.Dataset):
    """Rebuild the :class:`~kernelfield.Trained` stored by :func:`trained_to_dataset`."""
    if ds.attrs.get("kind") != "trained":
        raise ValueError(f"ds: holds a {ds.attrs.get('kind')!r} dataset, not trained networks")
    cfg = json.loads(ds.attrs["config"])
    values = lambda name: np.asarray(ds[name].values)  # noqa: E731
    return Trained(
        model=model_from_dataset(ds), N=int(ds.attrs["N"]), seed=int(ds.attrs["seed"]),
        **{k: int(cfg[k]) for k in _TRAINING_SETTINGS}, step_size=float(ds.attrs["step_size"]),
        lambda_max=float(ds.attrs["lambda_max"]), f_networks=values("f_networks"), f_mean=values("f_mean"),
        f_sem=values("f_sem"), f_var=values("f_var"), C_networks=kernel_matrix(values("C_networks")),
        C_centred=kernel_matrix(values("C_centred")), C_mean=kernel_matrix(values("C")),
        C_sem=kernel_matrix(values("C_sem")), loss=values("loss"), step=values("step"),
        params=_families(ds, "params_"), num_records=int(ds.attrs["num_records"]), seconds=float(ds.attrs["seconds"]),
    )


def lazy_kernel_from_dataset(ds: xr.Dataset):
    """Rebuild the :class:`~kernelfield.LazyKernel` stored by :func:`lazy_kernel_to_dataset`
    (its ``problem`` re-assembled, so ``predict()`` works)."""
    if ds.attrs.get("kind") != "lazy_kernel":
        raise ValueError(f"ds: holds a {ds.attrs.get('kind')!r} dataset, not a lazy kernel")
    model = model_from_dataset(ds)
    mean_outer = kernel_matrix(ds["mean_outer"].values)
    problem = make_problem(model.arch, model.task, model.prior, model.kappa)
    return LazyKernel(model, kernel_matrix(ds["C"].values), problem, None if np.all(np.isnan(mean_outer)) else mean_outer)


# --------------------------------------------------------------------------------------------
# files


def _atomic_write(path, write) -> Path:
    """Call ``write(tmp)`` on a temporary name in the directory of ``path`` and move the result into
    place with ``os.replace``: ``path`` is never left half-written and no temporary file remains.
    Parent directories are created. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def save(obj, path) -> Path:
    """Write ``obj`` (an ``xarray.Dataset``, or a result that :func:`to_xarray` converts) to
    netCDF-4 (h5netcdf) at ``path`` atomically: the file is written to a temporary name in the
    same directory and moved into place with ``os.replace``, so ``path`` is never left
    half-written and no temporary file remains. Parent directories are created. Returns the path."""
    ds = (obj if isinstance(obj, xr.Dataset) else to_xarray(obj)).copy()
    ds.attrs = {k: _attr(v) for k, v in ds.attrs.items()}
    return _atomic_write(path, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))


def save_text(text: str, path) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, like :func:`save`. Returns the path."""
    return _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_json(obj, path) -> Path:
    """Write ``obj`` as JSON (numpy scalars and arrays converted) to ``path`` atomically."""
    return save_text(json.dumps(obj, indent=1, default=_json_default) + "\n", path)


def load(path) -> xr.Dataset:
    """Read a dataset written by :func:`save`, fully into memory; the file is closed on return."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such file {str(path)!r}")
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()
