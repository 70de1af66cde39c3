"""The headline figure: the theory's two claims side by side, from library output.

(a) Temporal coherence of the trained kernel against the learning signal (target scale) on the
    endpoint task for linear networks: RNN, DNN and ``tied_every(2)`` from the exact theory
    (lines) and sampled networks (open markers). Only weight sharing across time (RNN, tied)
    lets the coherence switch on, above a critical signal (claim 1).
(b) The same for erf networks: the Gaussian closure (lines), the particle solver (filled markers)
    and sampled networks (open markers).
(c) Error at the unsupervised steps of training sequences against the number of training
    sequences ``P`` on real data (a :mod:`kernelfield.experiments.generalization` study): the
    trained theory, the lazy kernel and, where the study has them, sampled or trained networks,
    RNN against DNN (claim 2: the RNN interpolates steps without supervision, the DNN cannot).
"""

from __future__ import annotations

import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .plots import _save, draw_theory_and_networks
from .plots_generalization import draw_learning_curve

__all__ = ["plot_headline"]


def plot_headline(linear_curve: xr.Dataset, linear_points: xr.Dataset | None, erf_curve: xr.Dataset,
                  erf_points: xr.Dataset | None, learning: xr.Dataset, path=None, title: str | None = None) -> Figure:
    """Panels (a)–(c) of the module docstring: ``linear_curve`` / ``erf_curve`` are sweep datasets
    (:func:`kernelfield.sweep.load`) with ``coherence_theory`` over ``target_scale`` per
    ``architecture``, ``linear_points`` / ``erf_points`` sweeps with ``coherence_theory`` and/or
    ``coherence_sampled`` at a few target scales (``None``: no points), ``learning`` the dataset of a
    generalization study (its first supervision schedule is drawn). Saves a PNG at ``path``."""
    fig = Figure(figsize=(17, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    a, b, c = fig.subplots(1, 3)
    draw_theory_and_networks(a, linear_curve, linear_points)
    a.set_title("(a) linear networks: coherence vs learning signal", fontsize=10)
    draw_theory_and_networks(b, erf_curve, erf_points)
    b.set_title("(b) erf networks: coherence vs learning signal", fontsize=10)
    draw_learning_curve(c, learning, learning.schedule.values[0], "unsupervised", legend=True)
    c.set_yscale("log")  # errors from a few per cent to above 1 (small P)
    c.set_title(f"(c) {learning.attrs.get('task', 'real data')}: error at unsupervised steps vs P", fontsize=10)
    fig.suptitle(title or "Weight sharing across time: correlated representations above a critical signal (a, b) "
                          "and interpolation of unsupervised steps (c)")
    _save(fig, path)
    return fig
