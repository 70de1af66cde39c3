"""The phase transition (THEORY.md §4) as labelled studies: bifurcation diagrams of the order
parameter, phase diagrams of the critical signal, and weight spectra against the predicted
outlier. Every function returns an :class:`xarray.Dataset` that :mod:`kernelfield.plots` draws
and :func:`kernelfield.save` writes; theory and finite-width networks sit side by side.

Every function takes the theory's ``method`` (:func:`kernelfield.solve`: ``"auto"``, ``"exact"``,
``"particles"`` or ``"gaussian"``, the Gaussian closure: fast for any ``phi``, approximate), recorded
in the dataset's ``config`` attribute. Critical signals come from the cross-time Hessian at the
symmetric solution (:func:`kernelfield.critical_signal`); for linear ``phi`` every method gives the
exact one (the closure is exact there), for other ``phi`` it is that of ``method`` where
:func:`kernelfield.stability` supports it, and ``nan`` (no critical value) where it does not.
"""

from __future__ import annotations

import json
import warnings
from typing import Callable, Sequence

import numpy as np
import xarray as xr

from ..observables import coherence_by_lag, mean_coherence, temporal_coherence
from ..progress import ProgressArg, ProgressEvent, reporter
from ..finite.sampling import sample
from ..spec import Architecture, Prior, Task
from ..storage import provenance
from ..nonlinearities import get_nonlinearity
from ..theory.solver import solve
from ..theory.stability import (
    NoTransitionError,
    _controlled,
    critical_signal,
    outlier_eigenvalues,
    stability,
    symmetric_solution,
)

__all__ = ["bifurcation", "order_parameter_exponent", "phase_diagram", "weight_spectrum"]


def _attrs(kind: str, **config) -> dict:
    return provenance(kind, json.dumps(config, default=str))


def _critical_kwargs(phi, method: str) -> dict:
    """The method argument of :func:`kernelfield.critical_signal`: none for linear ``phi`` (the exact
    Hessian, which every method reproduces there), ``method`` otherwise."""
    return {} if get_nonlinearity(phi).name == "linear" else {"method": method}


def _where_implemented(value: Callable[[], float]) -> float:
    """``value()``, or ``nan`` where the theory does not implement it for this ``phi`` and method."""
    try:
        return value()
    except NotImplementedError:
        return float("nan")


def bifurcation(archs: Sequence[Architecture], task: Task, values: Sequence[float], control: str = "target_scale",
                prior: Prior = Prior(), phi="linear", kappa: float = 0.1, widths: Sequence[int] = (),
                sample_values: Sequence[float] | None = None, sampling: dict | None = None,
                progress: ProgressArg = True, method: str = "auto") -> xr.Dataset:
    """Order parameter against a control parameter for several sharing patterns.

    Theory at every value of ``values`` (``control`` as in :func:`kernelfield.critical_signal`):
    ``coherence`` (mean temporal coherence of the dominant branch's centred kernel,
    :func:`kernelfield.temporal_coherence`), ``coherence_lag`` (per lag, :func:`kernelfield.coherence_by_lag`),
    ``S_gain`` (``S`` of the dominant branch minus ``S`` of the symmetric one), ``leading_eigenvalue``
    of the cross-time Hessian at the symmetric solution, ``outlier`` (largest predicted outlier
    modulus; the last two ``nan`` where not implemented for ``phi`` and ``method``). Per architecture
    ``critical`` (:func:`kernelfield.critical_signal`, ``nan`` when no transition, or when the leading
    eigenvalue is not available) and ``exponent``: the fitted ``beta`` in ``rho ~ (value - critical)^beta`` just
    past the transition (:func:`order_parameter_exponent`). Finite-width networks at each width in
    ``widths`` and each value in ``sample_values`` (default: every third value): ``sampled_coherence``
    (centred kernel) and ``sampled_coherence_err`` (standard error over chains). progress: ``True``
    (rich bars), ``False`` or a callable receiving :class:`~kernelfield.progress.ProgressEvent` s
    (task ``"bifurcation"``, one unit per solved value, critical search and sampled point).
    method: the theory's solver (:func:`kernelfield.solve`), e.g. ``"gaussian"`` for the closure.
    """
    values = np.asarray(values, dtype=float)
    names = [a.name for a in archs]
    if len(set(names)) != len(names):
        raise ValueError(f"archs: architecture names must be distinct, got {names}")
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("values: must be a non-empty 1-D sequence of finite numbers > 0")
    sample_values = values[::3] if sample_values is None else np.asarray(sample_values, dtype=float)
    sampling = dict(num_samples=400, num_warmup=300, num_chains=4, seed=0) | dict(sampling or {})
    T = task.T
    shape = (len(archs), values.size)
    out = {k: np.full(shape, np.nan) for k in ("coherence", "S_gain", "leading_eigenvalue", "outlier")}
    lags = np.full(shape + (max(T - 2, 0),), np.nan)
    critical, exponent = np.full(len(archs), np.nan), np.full(len(archs), np.nan)
    sampled = np.full((len(archs), len(widths), sample_values.size), np.nan)
    sampled_err = np.full_like(sampled, np.nan)
    total = len(archs) * (values.size + 1 + len(widths) * sample_values.size)
    done = 0
    with reporter(progress) as report:
        for i, arch in enumerate(archs):
            for j, v in enumerate(values):
                t, p, kp = _controlled(arch, task, prior, kappa, control, v)
                sol = solve(arch, t, prior=p, phi=phi, kappa=kp, method=method)
                sym = symmetric_solution(arch, t, p, phi, kp, method=method)
                out["coherence"][i, j] = temporal_coherence(sol)
                lags[i, j] = coherence_by_lag(sol)
                out["S_gain"][i, j] = sol.S - sym.S
                out["leading_eigenvalue"][i, j] = _where_implemented(lambda: stability(sol, k=1).leading)
                out["outlier"][i, j] = _where_implemented(lambda: float(np.abs(outlier_eigenvalues(sol)[0])))
                done += 1
                report(ProgressEvent("bifurcation", done, total))
            if np.isfinite(out["leading_eigenvalue"][i]).any():  # its root is the critical signal
                try:
                    critical[i] = critical_signal(arch, task, prior, phi, kappa, control=control,
                                                  **_critical_kwargs(phi, method)).value
                    exponent[i] = order_parameter_exponent(arch, task, critical[i], control, prior, phi, kappa,
                                                           method=method)
                except NoTransitionError:
                    pass
            done += 1
            report(ProgressEvent("bifurcation", done, total))
            for w, N in enumerate(widths):
                for j, v in enumerate(sample_values):
                    sampled[i, w, j], sampled_err[i, w, j] = _sampled_coherence(
                        arch, *_controlled(arch, task, prior, kappa, control, v), phi, N, sampling)
                    done += 1
                    report(ProgressEvent("bifurcation", done, total))
    data = {
        "coherence": (("arch", "value"), out["coherence"], {"description": "mean temporal coherence (theory)"}),
        "coherence_lag": (("arch", "value", "lag"), lags, {"description": "temporal coherence per lag (theory)"}),
        "S_gain": (("arch", "value"), out["S_gain"], {"description": "S(dominant) - S(symmetric)"}),
        "leading_eigenvalue": (("arch", "value"), out["leading_eigenvalue"],
                               {"description": "leading cross-time Hessian eigenvalue at the symmetric solution"}),
        "outlier": (("arch", "value"), out["outlier"], {"description": "largest predicted |outlier eigenvalue| of W"}),
        "critical": (("arch",), critical, {"description": f"critical {control}"}),
        "exponent": (("arch",), exponent, {"description": "fitted beta in rho ~ (value - critical)^beta"}),
        "sampled_coherence": (("arch", "N", "sample_value"), sampled,
                              {"description": "temporal coherence of sampled width-N networks (centred)"}),
        "sampled_coherence_err": (("arch", "N", "sample_value"), sampled_err,
                                  {"description": "standard error over chains"}),
    }
    coords = {"arch": names, "value": values, "lag": np.arange(1, T - 1), "N": np.asarray(widths, dtype=int),
              "sample_value": sample_values}
    attrs = _attrs("bifurcation", control=control, prior=prior.__dict__, phi=str(phi), kappa=kappa, T=T, P=task.P,
                   sampling=sampling, method=method)
    return xr.Dataset(data, coords=coords, attrs=attrs)


def _sampled_coherence(arch, task, prior, kappa, phi, N, sampling) -> tuple[float, float]:
    """Temporal coherence of sampled networks (centred kernel) and its standard error over chains
    (of the coherence of each chain's centred kernel)."""
    s = sample(arch, task, N=N, prior=prior, phi=phi, kappa=kappa, keep_weights=0, progress=False, **sampling)
    per_chain = [mean_coherence(C, task.T, task.P) for C in s.C_centred_chains]
    err = np.std(per_chain, ddof=1) / np.sqrt(len(per_chain)) if len(per_chain) > 1 else np.nan
    return temporal_coherence(s), float(err)


def order_parameter_exponent(arch: Architecture, task: Task, critical: float, control: str = "target_scale",
                             prior: Prior = Prior(), phi="linear", kappa: float = 0.1,
                             offsets: Sequence[float] = (0.005, 0.01, 0.02, 0.04), method: str = "auto") -> float:
    """Fitted ``beta`` in ``rho ~ |value/critical - 1|^beta`` from theory solutions (``method`` as in
    :func:`kernelfield.solve`) at ``value = critical·(1 ± offset)`` on the strong-signal side (a
    pitchfork gives ``beta = 1/2``)."""
    sign = -1.0 if control == "kappa" else 1.0
    rho = []
    for d in offsets:
        t, p, kp = _controlled(arch, task, prior, kappa, control, critical * (1 + sign * d))
        sol = solve(arch, t, prior=p, phi=phi, kappa=kp, init="broken", tol=1e-7, method=method)
        rho.append(temporal_coherence(sol))
    rho = np.asarray(rho)
    if np.any(rho <= 0):
        return float("nan")
    return float(np.polyfit(np.log(offsets), np.log(rho), 1)[0])


def phase_diagram(build: Callable[..., tuple[Architecture, Task, Prior, float]], x: tuple[str, Sequence],
                  y: tuple[str, Sequence], control: str = "target_scale", phi="linear", tol: float = 1e-3,
                  progress: ProgressArg = True, method: str = "auto") -> xr.Dataset:
    """Critical value of ``control`` over a 2-D grid.

    build: ``build(**{x_name: xv, y_name: yv}) -> (arch, task, prior, kappa)``, e.g. from a config
    with two fields overridden. Returns ``critical`` on dims ``(x_name, y_name)`` (``nan`` where
    the symmetric solution never loses stability in the searched range, or where the critical signal
    is not implemented for ``phi`` and ``method``) with the search status. method: the theory's
    solver (see the module docstring).
    progress: ``True``, ``False`` or a callable receiving :class:`~kernelfield.progress.ProgressEvent` s
    (task ``"phase diagram"``, one unit per grid point).
    """
    (x_name, x_values), (y_name, y_values) = x, y
    if x_name == y_name:
        raise ValueError(f"y: the two axes must differ, both are {x_name!r}")
    critical = np.full((len(x_values), len(y_values)), np.nan)
    status = np.full(critical.shape, "", dtype=object)
    with reporter(progress) as report:
        for i, xv in enumerate(x_values):
            for j, yv in enumerate(y_values):
                arch, task, prior, kappa = build(**{x_name: xv, y_name: yv})
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("error", category=UserWarning)  # an unconverged solve fails the point
                        critical[i, j] = critical_signal(arch, task, prior, phi, kappa, control=control, tol=tol,
                                                         **_critical_kwargs(phi, method)).value
                    status[i, j] = "ok"
                except (NoTransitionError, NotImplementedError, UserWarning) as e:
                    status[i, j] = f"{type(e).__name__}: {e}"
                report(ProgressEvent("phase diagram", i * len(y_values) + j + 1, critical.size))
    coords = {x_name: np.asarray(x_values), y_name: np.asarray(y_values)}
    data = {"critical": ((x_name, y_name), critical, {"description": f"critical {control}"}),
            "status": ((x_name, y_name), status.astype(str))}
    return xr.Dataset(data, coords=coords, attrs=_attrs("phase_diagram", control=control, phi=str(phi), tol=tol,
                                                         x=x_name, y=y_name, method=method))


def weight_spectrum(arch: Architecture, task: Task, values: Sequence[float], widths: Sequence[int],
                    control: str = "target_scale", prior: Prior = Prior(), phi="linear", kappa: float = 0.1,
                    sampling: dict | None = None, progress: ProgressArg = True, method: str = "auto") -> xr.Dataset:
    """Predicted outlier eigenvalues of the recurrent matrix (of the last step's ``W`` group), from
    the theory solved by ``method`` (:func:`kernelfield.solve`), against eigenvalues of sampled
    width-``N`` matrices, at each control value.

    Returns ``predicted_real/_imag`` (dims ``value, mode``), ``eigenvalues_real/_imag`` of the kept
    weight samples (dims ``value, N, draw, index``, padded with ``nan`` to the largest ``N``),
    ``top_modulus`` (mean over draws of the largest ``|lambda|`` of each sample) with its
    standard error ``top_modulus_err``, and the bulk ``radius`` ``g``. progress: ``True``, ``False`` or
    a callable receiving :class:`~kernelfield.progress.ProgressEvent` s (task ``"weight spectrum
    <arch>"``, one unit per solve and per sampled width).
    """
    sampling = dict(num_samples=400, num_warmup=300, num_chains=4, keep_weights=10, seed=0) | dict(sampling or {})
    values = np.asarray(values, dtype=float)
    draws = sampling["num_chains"] * sampling["keep_weights"]
    if draws < 1:
        raise ValueError("sampling.keep_weights: must be >= 1 to take spectra of sampled weights")
    label = np.asarray(arch.W_groups)[task.T - 1]
    slot = int(np.searchsorted(np.unique(np.asarray(arch.W_groups)[1:]), label))
    predicted, spectra = [], np.full((values.size, len(widths), draws, max(widths, default=0)), np.nan + 0j)
    top = np.full((values.size, len(widths)), np.nan)
    top_err = np.full_like(top, np.nan)
    total = values.size * (1 + len(widths))
    with reporter(progress) as report:
        for i, v in enumerate(values):
            t, p, kp = _controlled(arch, task, prior, kappa, control, v)
            predicted.append(outlier_eigenvalues(solve(arch, t, prior=p, phi=phi, kappa=kp, method=method)))
            report(ProgressEvent(f"weight spectrum {arch.name}", i * (1 + len(widths)) + 1, total))
            for w, N in enumerate(widths):
                s = sample(arch, t, N=N, prior=p, phi=phi, kappa=kp, progress=False, **sampling)
                ev = np.linalg.eigvals(s.weights["W"][:, slot])
                spectra[i, w, :, :N] = ev
                m = np.abs(ev).max(axis=1)
                top[i, w], top_err[i, w] = m.mean(), m.std(ddof=1) / np.sqrt(m.size) if m.size > 1 else np.nan
                report(ProgressEvent(f"weight spectrum {arch.name}", i * (1 + len(widths)) + w + 2, total))
    predicted = np.asarray(predicted)
    radius = values if control == "g" else np.full(values.size, prior.g)
    data = {
        "predicted_real": (("value", "mode"), predicted.real, {"description": "predicted outlier eigenvalues (real part, by modulus)"}),
        "predicted_imag": (("value", "mode"), predicted.imag, {"description": "imaginary part"}),
        "eigenvalues_real": (("value", "N", "draw", "index"), spectra.real, {"description": "eigenvalues of sampled W (real part)"}),
        "eigenvalues_imag": (("value", "N", "draw", "index"), spectra.imag, {"description": "imaginary part"}),
        "top_modulus": (("value", "N"), top, {"description": "mean largest |eigenvalue| of sampled W"}),
        "top_modulus_err": (("value", "N"), top_err, {"description": "standard error of top_modulus"}),
        "radius": (("value",), radius, {"description": "bulk radius g (circular law)"}),
    }
    coords = {"value": values, "N": np.asarray(widths, dtype=int)}
    attrs = _attrs("weight_spectrum", arch=arch.name, control=control, prior=prior.__dict__, phi=str(phi),
                   kappa=kappa, T=task.T, P=task.P, sampling=sampling, method=method)
    return xr.Dataset(data, coords=coords, attrs=attrs)
