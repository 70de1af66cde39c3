"""Figures of the generalisation study (:mod:`kernelfield.experiments.generalization`).

* :func:`plot_learning_curves` — error against the number of training sequences ``P``: one
  colour per architecture, theory as solid lines, the lazy kernel dashed, sampled networks as
  circles and Langevin-trained networks as squares with error bars; columns: unsupervised steps
  of the training sequences, held-out sequences; one row per schedule. Theory from the Gaussian
  closure (``theory_method = "gaussian"``) is labelled "theory (Gaussian closure)"; a theory
  point whose solve did not converge (``theory_converged = 0`` in any repeat) is crossed.
* :func:`plot_step_errors` — error at every time step at one ``P`` (supervised steps shaded).
* :func:`plot_fraction` — error against the supervised fraction (several schedules).

Values are means over the repeats (independent task draws). Error bars: the standard error
over repeats when there are several, otherwise the method's own standard error (network
methods; theory and lazy are exact for a given draw). Built on :class:`matplotlib.figure.Figure`
(no pyplot state, headless-safe); each function returns the figure and saves a PNG at ``path``.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .plots import METHOD_LABELS, _save

__all__ = ["plot_learning_curves", "draw_learning_curve", "plot_step_errors", "plot_fraction"]

_STYLE = {
    "theory": dict(ls="-", marker=None, label="theory"),
    "lazy": dict(ls="--", marker=None, label="lazy kernel"),
    "sampled": dict(ls="none", marker="o", label="sampled networks"),
    "langevin": dict(ls="none", marker="s", label="Langevin-trained"),
}
_PANELS = {"unsupervised": "unsupervised steps of training sequences", "heldout": "held-out sequences"}


def _check(ds: xr.Dataset) -> None:
    if not isinstance(ds, xr.Dataset) or ds.attrs.get("kind") != "generalization":
        raise ValueError("ds: expected the Dataset of kernelfield.experiments.generalization.learning_curves")


def _summary(da: xr.DataArray, sem: xr.DataArray | None):
    """Mean over repeats and its error bar (SEM over repeats, else the run's own SEM)."""
    mean = da.mean("repeat", skipna=True)
    n = da.notnull().sum("repeat")
    if int(n.max()) >= 2:
        err = da.std("repeat", ddof=1, skipna=True) / np.sqrt(n.where(n > 0))
    elif sem is not None:
        err = sem.mean("repeat", skipna=True)
    else:
        err = xr.full_like(mean, np.nan)
    return mean, err


def _colours(ds):
    cmap = colormaps["tab10"]
    return {arch: cmap(i % 10) for i, arch in enumerate(ds.arch.values)}


def _draw(ax, x, mean, err, predictor, colour, offset=0.0, lw=1.6, points=False, log_x=False):
    """One predictor's curve (or its markers with error bars, shifted by ``offset`` along ``x``:
    added, or a factor ``2**offset`` where ``log_x``)."""
    style = _STYLE.get(predictor, dict(ls=":", marker="^", label=predictor))
    mean, err = np.asarray(mean, float), np.asarray(err, float)
    ok = np.isfinite(mean)
    if not ok.any():
        return
    x = np.asarray(x, float)
    if style["marker"] is None:
        ax.plot(x[ok], mean[ok], ls=style["ls"], color=colour, lw=lw, marker="." if points else None)
        if predictor == "theory" and np.isfinite(err[ok]).any():  # one band per colour keeps it readable
            ax.fill_between(x[ok], (mean - err)[ok], (mean + err)[ok], color=colour, alpha=0.1, lw=0)
    else:
        shifted = x * 2.0**offset if log_x else x + offset
        ax.errorbar(shifted[ok], mean[ok], yerr=np.where(np.isfinite(err), err, 0.0)[ok], ls="none",
                    marker=style["marker"], color=colour, ms=5, capsize=2, mfc="white" if predictor == "langevin" else colour)


def _width(i: int, n: int) -> float:
    """Earlier architectures drawn wider, so coinciding curves (e.g. DNN and tied_every_2 at
    untied readouts) stay visible."""
    return 2.6 - 1.4 * i / max(n - 1, 1)


def _legend(fig, ds, colours):
    fig.legend(handles=_legend_handles(ds, colours), loc="outside right center", fontsize=8, frameon=False)


_UNCONVERGED = "x"  # marker of a theory point whose solve did not converge


def _legend_handles(ds, colours):
    """One line per architecture (its colour), one per predictor (its style)."""
    handles = [Line2D([], [], color=c, lw=2, label=a) for a, c in colours.items()]
    for p in ds.predictor.values:
        st = _STYLE.get(str(p), dict(ls=":", marker="^", label=str(p)))
        label = st["label"]
        if p == "theory" and ds.attrs.get("theory_method") == "gaussian":
            label = f"theory ({METHOD_LABELS['gaussian']})"
        handles.append(Line2D([], [], color="0.3", ls=st["ls"] if st["ls"] != "none" else "none",
                              marker=st["marker"], mfc="white" if p == "langevin" else "0.3", label=label))
    if bool(_unconverged(ds).any()):
        handles.append(Line2D([], [], color="0.3", ls="none", marker=_UNCONVERGED, label="theory: not converged"))
    return handles


def _unconverged(ds: xr.Dataset) -> xr.DataArray:
    """Cells whose theory solve did not converge in some repeat (``(arch, schedule, P)``)."""
    if "theory_converged" not in ds or "theory" not in ds.predictor.values:
        return xr.zeros_like(ds.nmse_heldout.isel(predictor=0, repeat=0, drop=True), dtype=bool)
    return (ds.theory_converged == 0).any("repeat")


def _new_figure(rows: int, cols: int, width: float = 10.5, height: float = 3.3):
    fig = Figure(figsize=(width, height * rows + 0.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def _metric(ds, metric: str) -> str:
    if metric not in ("nmse", "mse", "sign_error"):
        raise ValueError(f"metric: must be 'nmse', 'mse' or 'sign_error', got {metric!r}")
    if metric == "sign_error" and "sign_error_heldout" not in ds:
        raise ValueError("metric: 'sign_error' needs a classification task")
    return metric


_YLABEL = {"nmse": "normalised MSE (1 = predict 0)", "mse": "MSE", "sign_error": "fraction of wrong signs"}


def plot_learning_curves(ds: xr.Dataset, path=None, metric: str = "nmse", title: str | None = None) -> Figure:
    """Error vs ``P`` (see the module docstring); ``metric``: ``nmse`` (default), ``mse`` or
    ``sign_error`` (classification tasks)."""
    _check(ds)
    metric = _metric(ds, metric)
    schedules = list(ds.schedule.values)
    fig, axes = _new_figure(len(schedules), 2)
    for row, sched in enumerate(schedules):
        for col, part in enumerate(_PANELS):
            draw_learning_curve(axes[row, col], ds, sched, part, metric)
    _legend(fig, ds, _colours(ds))
    fig.suptitle(title or _default_title(ds))
    _save(fig, path)
    return fig


def draw_learning_curve(ax, ds: xr.Dataset, schedule, part: str = "unsupervised", metric: str = "nmse",
                        legend: bool = False) -> None:
    """One panel of :func:`plot_learning_curves` on the axes ``ax``: error of ``part``
    (``"unsupervised"`` or ``"heldout"``) against ``P`` for the supervision ``schedule``, with the
    figure's legend on the axes when ``legend``."""
    _check(ds)
    metric = _metric(ds, metric)
    if part not in _PANELS:
        raise ValueError(f"part: must be one of {list(_PANELS)}, got {part!r}")
    colours = _colours(ds)
    P = ds.P.values
    log_x = P.size > 1 and P.min() > 0 and P.max() >= 8 * P.min()  # P = 4 ... 256: a log axis
    spread = 0.015 * (np.log2(P.max() / P.min()) if log_x else P.max() - P.min() if P.size > 1 else 1.0)
    name = f"{metric}_{part}"
    sem_name = f"{metric}_sem_{part}" if metric != "sign_error" else None
    unconverged = _unconverged(ds).sel(schedule=schedule)
    for i, arch in enumerate(ds.arch.values):
        for pred in ds.predictor.values:
            sel = dict(arch=arch, schedule=schedule, predictor=pred)
            mean, err = _summary(ds[name].sel(sel), ds[sem_name].sel(sel) if sem_name else None)
            _draw(ax, P, mean, err, str(pred), colours[arch], offset=(i - len(colours) / 2) * spread,
                  lw=_width(i, len(colours)), log_x=log_x)
            if pred != "theory":
                continue
            crossed = np.asarray(unconverged.sel(arch=arch)) & np.isfinite(mean)
            if crossed.any():
                ax.plot(P[crossed], np.asarray(mean)[crossed], ls="none", marker=_UNCONVERGED, color=colours[arch],
                        ms=8, mew=1.8)
    if metric == "nmse":
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    ax.set(xlabel="training sequences P", ylabel=_YLABEL[metric])
    if log_x:
        ax.set_xscale("log", base=2)
        ax.set_xticks([], minor=True)
    ax.set_xticks(P, [str(p) for p in P])
    frac = float(ds.supervised_fraction.sel(schedule=schedule))
    ax.set_title(f"{_PANELS[part]} — {schedule} (fraction {frac:.2f})", fontsize=9)
    if legend:
        ax.legend(handles=_legend_handles(ds, colours), fontsize=7)


def _default_title(ds) -> str:
    cfg = json.loads(ds.attrs.get("config", "{}"))
    return (f"{ds.attrs.get('task', 'task')}: T = {ds.sizes['t']}, held-out sequences = {ds.sizes['a_test']}, "
            f"phi = {cfg.get('phi', '?')}, kappa = {cfg.get('kappa', '?')}, repeats = {ds.sizes['repeat']}")


def plot_step_errors(ds: xr.Dataset, P: int | None = None, path=None, title: str | None = None) -> Figure:
    """Normalised MSE at every step ``t`` for training sequences (unsupervised entries) and
    held-out sequences, at training-set size ``P`` (default: the largest). Grey bars show the
    fraction of training sequences supervised at each step."""
    _check(ds)
    P = int(ds.P.values[-1]) if P is None else int(P)
    if P not in ds.P.values:
        raise ValueError(f"P: must be one of {list(ds.P.values)}, got {P}")
    schedules = list(ds.schedule.values)
    fig, axes = _new_figure(len(schedules), 2)
    colours = _colours(ds)
    t = ds.t.values
    for row, sched in enumerate(schedules):
        supervised = ds.supervised.sel(schedule=sched).isel(a_train=slice(0, P)).mean(("repeat", "a_train"))
        for col, part in enumerate(_PANELS):
            ax = axes[row, col]
            if part == "unsupervised":
                ax.bar(t, np.asarray(supervised), width=0.8, color="0.88", zorder=0, label="supervised fraction")
            for i, arch in enumerate(ds.arch.values):
                for pred in ds.predictor.values:
                    da = ds[f"step_nmse_{part}"].sel(arch=arch, schedule=sched, predictor=pred, P=P)
                    mean, err = _summary(da, None)
                    _draw(ax, t, mean, err, str(pred), colours[arch], offset=(i - len(colours) / 2) * 0.06,
                          lw=_width(i, len(colours)), points=True)
            ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
            ax.set(xlabel="time step t", ylabel="normalised MSE at step t")
            ax.set_xticks(t)
            ax.set_title(f"{_PANELS[part]} — {sched}, P = {P}", fontsize=9)
    _legend(fig, ds, colours)
    fig.suptitle(title or _default_title(ds) + " (grey: supervised fraction per step)")
    _save(fig, path)
    return fig


def plot_fraction(ds: xr.Dataset, P: int | None = None, path=None, title: str | None = None) -> Figure:
    """Normalised MSE against the supervised fraction of the schedules, at ``P`` (default: the
    largest); columns as in :func:`plot_learning_curves`."""
    _check(ds)
    P = int(ds.P.values[-1]) if P is None else int(P)
    if P not in ds.P.values:
        raise ValueError(f"P: must be one of {list(ds.P.values)}, got {P}")
    order = np.argsort(ds.supervised_fraction.values)
    frac = ds.supervised_fraction.values[order]
    fig, axes = _new_figure(1, 2)
    colours = _colours(ds)
    for col, part in enumerate(_PANELS):
        ax = axes[0, col]
        for i, arch in enumerate(ds.arch.values):
            for pred in ds.predictor.values:
                sel = dict(arch=arch, predictor=pred, P=P)
                mean, err = _summary(ds[f"nmse_{part}"].sel(sel), ds[f"nmse_sem_{part}"].sel(sel))
                _draw(ax, frac, np.asarray(mean)[order], np.asarray(err)[order], str(pred), colours[arch],
                      lw=_width(i, len(colours)), points=True)
        ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
        ax.set(xlabel="supervised fraction of steps", ylabel=_YLABEL["nmse"])
        ax.set_title(f"{_PANELS[part]}, P = {P}", fontsize=9)
    _legend(fig, ds, colours)
    fig.suptitle(title or _default_title(ds))
    _save(fig, path)
    return fig
