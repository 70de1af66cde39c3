"""Heatmaps of kernels and of per-block errors (matplotlib).

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg canvas: no
pyplot state, no interactive windows, safe on headless machines and in worker threads. Every
function returns the ``Figure`` (which notebooks display) and saves a PNG when ``path`` is given.
Kernels are ``(T*P, T*P)`` time-major (index ``t*P + a``); thin lines separate time blocks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_kernels", "plot_block_errors"]

_CMAP = "RdBu_r"


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
