"""Heatmaps of kernels and of per-block errors, and the figures of the phase transition and of
theory-vs-network sweeps (matplotlib).

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas: no
pyplot state, no interactive windows, safe on headless machines and in worker threads. Every
function returns the ``Figure`` (which notebooks display) and saves a PNG when ``path`` is given.
Kernels are ``(T*P, T*P)`` time-major (index ``t*P + a``); thin lines separate time blocks.
Theory results are labelled by the method that produced them (:data:`METHOD_LABELS`): results of
the Gaussian closure, an approximation, say "Gaussian closure".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_kernels", "plot_block_errors", "plot_bifurcation", "plot_phase_diagram", "plot_spectrum",
           "plot_theory_and_networks", "draw_theory_and_networks", "METHOD_LABELS"]

_CMAP = "RdBu_r"

#: How figures name the solver of a theory result (``Solution.method``, a sweep's ``theory_method``).
METHOD_LABELS = {"exact": "exact theory", "particles": "particle solver", "gaussian": "Gaussian closure"}


def _theory_label(config: dict) -> str:
    """The label of a study's theory results: "Gaussian closure" for ``method = "gaussian"``, else "theory"."""
    return METHOD_LABELS["gaussian"] if config.get("method") == "gaussian" else "theory"


def _check_kernel(name: str, C, T: int, P: int) -> np.ndarray:
    C = np.asarray(C, dtype=np.float64)
    if C.ndim == 4:  # stored layout (t, a, t2, a2)
        C = C.reshape(C.shape[0] * C.shape[1], -1)
    if C.shape != (T * P, T * P):
        raise ValueError(f"{name}: expected a ({T * P}, {T * P}) kernel for T = {T}, P = {P}, got shape {C.shape}")
    return C


def _symmetric_limit(*arrays) -> float:
    m = max(float(np.nanmax(np.abs(a))) if a.size else 0.0 for a in arrays)
    return m if m > 0 and np.isfinite(m) else 1.0


def _heatmap(fig, ax, C, T, P, vmax, title):
    im = ax.imshow(C, cmap=_CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
    for k in range(1, T):
        ax.axhline(k * P - 0.5, color="0.2", lw=0.8)
        ax.axvline(k * P - 0.5, color="0.2", lw=0.8)
    centres = np.arange(T) * P + (P - 1) / 2
    ax.set_xticks(centres, [f"t={t}" for t in range(T)], fontsize=8)
    ax.set_yticks(centres, [f"t={t}" for t in range(T)], fontsize=8)
    ax.tick_params(length=0)
    ax.set_title(title)
    return im


def _save(fig: Figure, path) -> None:
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")


def _finish(fig: Figure, path, title: str | None) -> Figure:
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def plot_kernels(C_theory, C_sampled, T: int, P: int, path=None, title: str | None = None) -> Figure:
    """Heatmaps ``theory | sampled | difference`` (sampled - theory).

    The first two panels share one symmetric colour scale (one colour bar); the difference has
    its own. ``C_sampled=None`` draws the theory kernel alone. Kernels may be ``(n, n)`` or the
    stored ``(t, a, t2, a2)`` layout. Saves a PNG at ``path`` when given.
    """
    C_theory = _check_kernel("C_theory", C_theory, T, P)
    if C_sampled is None:
        fig = Figure(figsize=(5.2, 4.4), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        im = _heatmap(fig, ax, C_theory, T, P, _symmetric_limit(C_theory), "kernel C")
        fig.colorbar(im, ax=ax, shrink=0.85)
    else:
        C_sampled = _check_kernel("C_sampled", C_sampled, T, P)
        diff = C_sampled - C_theory
        fig = Figure(figsize=(14, 4.4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        vmax = _symmetric_limit(C_theory, C_sampled)
        _heatmap(fig, axes[0], C_theory, T, P, vmax, "theory")
        im = _heatmap(fig, axes[1], C_sampled, T, P, vmax, "sampled")
        fig.colorbar(im, ax=axes[:2].tolist(), shrink=0.85, label="C (shared scale)")
        rel = np.linalg.norm(diff) / max(np.linalg.norm(C_theory), 1e-300)
        im_d = _heatmap(fig, axes[2], diff, T, P, _symmetric_limit(diff), f"sampled - theory (rel. {rel:.3f})")
        fig.colorbar(im_d, ax=axes[2], shrink=0.85, label="difference")
    if title:
        fig.suptitle(title)
    _save(fig, path)
    return fig


def plot_block_errors(comparison, path=None, title: str | None = None) -> Figure:
    """Heatmap of ``comparison.block_error[t, s]`` annotated with ``error ± sampling error``
    (``block_error_bar``). Saves a PNG at ``path`` when given."""
    err = np.asarray(comparison.block_error, dtype=np.float64)
    bar = np.asarray(comparison.block_error_bar, dtype=np.float64)
    T = err.shape[0]
    if err.shape != (T, T) or bar.shape != (T, T):
        raise ValueError(f"comparison: block_error and block_error_bar must be (T, T), got {err.shape} and {bar.shape}")
    size = 1.2 + 0.9 * T
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    vmax = float(np.nanmax(err)) if np.any(np.isfinite(err)) else 1.0
    im = ax.imshow(err, cmap="viridis", vmin=0.0, vmax=vmax if vmax > 0 else 1.0, interpolation="nearest")
    for t in range(T):
        for s in range(T):
            light = err[t, s] < 0.6 * vmax
            ax.text(s, t, f"{err[t, s]:.3f}\n±{bar[t, s]:.3f}", ha="center", va="center", fontsize=8,
                    color="white" if light else "black")
    ax.set_xticks(range(T), [f"s={s}" for s in range(T)])
    ax.set_yticks(range(T), [f"t={t}" for t in range(T)])
    ax.set_title(title or f"block error (N = {getattr(comparison, 'N', '?')})")
    fig.colorbar(im, ax=ax, shrink=0.85, label="relative block error")
    _save(fig, path)
    return fig


def plot_bifurcation(ds, path=None, title: str | None = None) -> Figure:
    """Order parameter against the control parameter (:func:`kernelfield.experiments.phase.bifurcation`):
    theory lines per architecture, sampled networks as markers with error bars (one marker per
    width), the critical values as dotted lines; right panel: leading cross-time Hessian eigenvalue."""
    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    ax, ax_eig = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    markers = "osD^v<>"
    config = json.loads(ds.attrs.get("config", "{}"))
    control, theory = config.get("control", "control"), _theory_label(config)
    for i, arch in enumerate(ds["arch"].values):
        line, = ax.plot(ds["value"], ds["coherence"].sel(arch=arch), lw=2, label=f"{arch} ({theory})")
        ax_eig.plot(ds["value"], ds["leading_eigenvalue"].sel(arch=arch), lw=2, color=line.get_color(), label=arch)
        crit = float(ds["critical"].sel(arch=arch))
        if np.isfinite(crit):
            ax.axvline(crit, color=line.get_color(), ls=":", lw=1)
        for w, N in enumerate(ds["N"].values):
            ax.errorbar(ds["sample_value"], ds["sampled_coherence"].sel(arch=arch, N=N),
                        yerr=ds["sampled_coherence_err"].sel(arch=arch, N=N), fmt=markers[w % len(markers)],
                        color=line.get_color(), mfc="none", capsize=3, label=f"{arch}, N = {N}")
    ax.set_xlabel(control)
    ax.set_ylabel("temporal coherence rho")
    ax.legend(fontsize=7)
    ax_eig.axhline(0.0, color="0.5", lw=0.8)
    ax_eig.set_xlabel(control)
    ax_eig.set_ylabel("leading cross-time Hessian eigenvalue")
    ax_eig.legend(fontsize=7)
    return _finish(fig, path, title)


def plot_phase_diagram(ds, path=None, title: str | None = None) -> Figure:
    """Heatmap of the critical signal over a 2-D grid with its level lines
    (:func:`kernelfield.experiments.phase.phase_diagram`); grey cells: no transition found."""
    x_name, y_name = ds["critical"].dims
    crit = np.asarray(ds["critical"].values, dtype=float)
    x, y = np.asarray(ds[x_name].values, dtype=float), np.asarray(ds[y_name].values, dtype=float)
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_facecolor("0.85")
    mesh = ax.pcolormesh(x, y, np.ma.masked_invalid(crit).T, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=ds["critical"].attrs.get("description", "critical value"))
    if np.isfinite(crit).sum() >= 4 and len(x) > 1 and len(y) > 1:
        levels = ax.contour(x, y, np.ma.masked_invalid(crit).T, colors="w", linewidths=1)
        ax.clabel(levels, fontsize=7)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    theory = _theory_label(json.loads(ds.attrs.get("config", "{}")))
    ax.set_title(title or "critical learning signal" + ("" if theory == "theory" else f" ({theory})"))
    _save(fig, path)
    return fig


def plot_spectrum(ds, value_index: int = -1, path=None, title: str | None = None) -> Figure:
    """Complex spectra of sampled recurrent matrices at one control value (one panel per width),
    with the bulk circle of radius ``g`` and the predicted outliers
    (:func:`kernelfield.experiments.phase.weight_spectrum`); last panel: largest ``|lambda|``
    of the samples against the predicted outlier over all control values."""
    widths = ds["N"].values
    fig = Figure(figsize=(4.4 * (len(widths) + 1), 4))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(widths) + 1, gridspec_kw={"wspace": 0.4}))
    v = ds["value"].values[value_index]
    radius = float(ds["radius"].values[value_index])
    pred = ds["predicted_real"].values[value_index] + 1j * ds["predicted_imag"].values[value_index]
    circle = np.exp(1j * np.linspace(0, 2 * np.pi, 200)) * radius
    for ax, N in zip(axes, widths):
        ev = (ds["eigenvalues_real"] + 1j * ds["eigenvalues_imag"]).sel(N=N).values[value_index].ravel()
        ev = ev[np.isfinite(ev)]
        ax.plot(ev.real, ev.imag, ".", ms=2, alpha=0.4, color="C0", label="sampled W")
        ax.plot(circle.real, circle.imag, "k--", lw=1, label=f"bulk |lambda| = {radius:g}")
        for sign in (1, -1):  # W -> -W: the outlier's sign is arbitrary
            ax.plot((sign * pred).real, (sign * pred).imag, "x", color="C3", ms=9, mew=2,
                    label="predicted (±)" if sign == 1 else None)
        ax.set_aspect("equal")
        ax.set_title(f"N = {N}, value = {v:g}")
        ax.set_xlabel("Re lambda")
        ax.set_ylabel("Im lambda")
    axes[0].legend(fontsize=7, loc="upper left")
    ax = axes[-1]
    ax.plot(ds["value"], np.abs(ds["predicted_real"] + 1j * ds["predicted_imag"]).max("mode"), "k-", lw=2,
            label="predicted outlier")
    ax.plot(ds["value"], ds["radius"], "k--", lw=1, label="bulk radius")
    for N in widths:
        ax.errorbar(ds["value"], ds["top_modulus"].sel(N=N), yerr=ds["top_modulus_err"].sel(N=N), fmt="o",
                    mfc="none", capsize=3, label=f"sampled, N = {N}")
    ax.set_xlabel(json.loads(ds.attrs.get("config", "{}")).get("control", "control"))
    ax.set_ylabel("largest |lambda|")
    ax.legend(fontsize=7)
    return _finish(fig, path, title)


def _method_label(ds, sel: dict) -> str:
    """The :data:`METHOD_LABELS` name of the theory's method at the points ``sel`` of a sweep dataset."""
    methods = sorted(set(np.asarray(ds["theory_method"].sel(sel).values).ravel()) - {""}) \
        if "theory_method" in ds else []
    return " / ".join(METHOD_LABELS.get(m, m) for m in methods) or "theory"


def _control_dim(ds, name: str, by: str, which: str) -> str:
    dims = [d for d in ds[name].dims if d != by]
    if len(dims) != 1:
        raise ValueError(f"{which}: {name} must have one axis besides {by!r} (the control), got {ds[name].dims}")
    return dims[0]


def plot_theory_and_networks(curve, points=None, observable: str = "coherence", by: str = "architecture",
                             path=None, title: str | None = None) -> Figure:
    """An observable of sweep datasets (:func:`kernelfield.sweep.load`) against their control axis:
    ``<observable>_theory`` of ``curve`` (e.g. the Gaussian closure on a fine grid) as one line per
    value of the axis ``by``, and from ``points`` (e.g. the particle solver and sampled networks at
    a few control values) ``<observable>_theory`` as filled and ``<observable>_sampled`` as open
    markers, with error bars ``<observable>_<source>_err`` where stored. Theory results are labelled
    by their method (``theory_method``: "Gaussian closure", "particle solver", ...)."""
    fig = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(fig)
    draw_theory_and_networks(fig.subplots(), curve, points, observable, by)
    return _finish(fig, path, title)


def draw_theory_and_networks(ax, curve, points=None, observable: str = "coherence", by: str = "architecture") -> None:
    """:func:`plot_theory_and_networks` drawn on the axes ``ax``."""
    name = f"{observable}_theory"
    control = _control_dim(curve, name, by, "curve")
    for i, value in enumerate(curve[by].values):
        sel, color = {by: value}, f"C{i % 10}"
        ax.plot(curve[control], curve[name].sel(sel), color=color, lw=2, label=f"{value}: {_method_label(curve, sel)}")
        if points is None or value not in points[by].values:
            continue
        for source, marker, fill in (("theory", "o", color), ("sampled", "s", "none")):
            var = f"{observable}_{source}"
            if var not in points:
                continue
            x = points[_control_dim(points, var, by, "points")]
            err = points[f"{var}_err"].sel(sel) if f"{var}_err" in points else None
            label = _method_label(points, sel) if source == "theory" else "sampled networks"
            ax.errorbar(x, points[var].sel(sel), yerr=err, fmt=marker, color=color, mfc=fill, ms=7, capsize=3,
                        label=f"{value}: {label}")
    ax.set_xlabel(control)
    ax.set_ylabel("temporal coherence rho" if observable == "coherence" else observable)
    ax.legend(fontsize=7)
