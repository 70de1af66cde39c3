"""Reports of sweep stores: one HTML page (and the same content as Markdown) with the standard
figures of whatever the stores hold and a table of diagnostics.

For each store (:func:`kernelfield.sweep.load`) the report has

* a summary: points ok / failed / missing, compute time, versions, the sweep's config hash;
* **curves** of every scalar observable family present against the *control*, the numeric axis
  with the most values, one line per combination of the other axes: temporal coherence
  (``coherence_<source>``, the order parameter), predictive error at unsupervised steps
  (``pred_error_<source>``, learning curves when the control is e.g. ``P`` or ``N``) and the
  theory-vs-samples kernel error (``kernel_error`` with its sampling error bar), with error bars
  where an observable has them (``<name>_err``: the particle solver's and the sampled networks'
  coherence). Sources are drawn as theory: solid, lazy: dashed, sampled: dotted with square
  markers (markers only when the control has fewer than 4 values); theory results of the Gaussian
  closure (``theory.method = "gaussian"``, an approximation) are labelled "Gaussian closure".
  Without a numeric axis the observables are shown as grouped bars;
* a **phase diagram** (coherence over the two numeric axes with the most values) when there are two;
* **kernel heatmaps** (theory or lazy | sampled | difference) and **kernel spectra** (eigenvalues
  of every kernel) at representative points: one per combination of the non-numeric axes, at the
  largest value of each numeric axis;
* the **diagnostics table**: one row per point with its coordinates, status, the theory's method
  (``exact``, ``particles`` or ``gaussian``), time, solver and sampler diagnostics and
  observables, and the error of failed points.

Further figures (e.g. one that draws several stores together) can be passed to :func:`write_report`.

Figures are PNG files in ``OUT/figures``; nothing is displayed.
"""

from __future__ import annotations

import html
import itertools
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._version import __version__
from . import plots, storage
from .sweep import load

__all__ = ["write_report"]

_STYLE = {"theory": dict(ls="-", marker="o", ms=3), "lazy": dict(ls="--", marker=None),
          "sampled": dict(ls=":", marker="s", ms=5)}
_GROUPS = (("coherence_", "temporal coherence ρ (mean over t≠s≥1)", "coherence"),
           ("pred_error_", "MSE at unsupervised steps", "predictive error"),
           ("kernel_error", "relative kernel error ‖C_samp − C_theory‖/‖C_theory‖", "kernel error"),
           ("leading_eigenvalue", "leading cross-time Hessian eigenvalue",
            "stability"),
           ("outlier", "predicted outlier |λ| of W (bulk radius g)", "weight outlier"))
_FIRST_COLUMNS = ("S", "residual", "converged", "n_branches", "acceptance_rate", "ess", "num_divergent",
                  "kernel_error", "kernel_error_bar", "prediction_error")
_MAX_SERIES = 10
_MIN_LINE = 4  # control values needed to join points by lines
_MAX_POINTS = 6
_MAX_ROWS = 300


def write_report(stores, out, figures=()) -> Path:
    """Write ``out/report.html``, ``out/report.md`` and ``out/figures/*.png`` for one or more sweep
    stores; returns the path of the HTML page. figures: further ``(png_path, caption)`` pairs,
    shown first (paths inside ``out`` are linked relative to it)."""
    if isinstance(stores, (str, Path)):
        stores = [stores]
    if not stores:
        raise ValueError("stores: give at least one sweep store")
    out = Path(out)
    datasets = [load(s) for s in stores]
    blocks = [("h1", f"kernelfield {__version__}: sweep report"),
              ("p", "Stores: " + ", ".join(f"{ds.attrs['name']} ({ds.attrs['store']})" for ds in datasets))]
    for path, caption in figures:
        path = Path(path).resolve()
        link = path.relative_to(out.resolve()) if path.is_relative_to(out.resolve()) else path
        blocks.append(("img", link.as_posix(), caption))
    names = [ds.attrs["name"] for ds in datasets]
    for i, ds in enumerate(datasets):
        prefix = ds.attrs["name"] if names.count(ds.attrs["name"]) == 1 else f"{ds.attrs['name']}_{i}"
        blocks += _section(ds, out, prefix)
    storage.save_text(_markdown(blocks), out / "report.md")
    return storage.save_text(_html(blocks), out / "report.html")


# --------------------------------------------------------------------------------------------
# content


def _axes(ds):
    """(numeric axes with >= 2 values sorted by size, other axes with >= 2 values)."""
    dims = list(ds["status"].dims)
    numeric = [d for d in dims if ds.sizes[d] > 1 and ds[d].dtype != object]
    numeric.sort(key=lambda d: -ds.sizes[d])
    other = [d for d in dims if ds.sizes[d] > 1 and d not in numeric]
    return numeric, other


def _scalars(ds) -> list[str]:
    dims = ds["status"].dims
    return [v for v in ds.data_vars if ds[v].dims == dims and ds[v].dtype != object and not v.startswith("seconds")
            and not v.endswith("_seconds")]


def _combos(ds, dims):
    return [dict(zip(dims, values)) for values in itertools.product(*(ds[d].values for d in dims))]


def _describe(sel: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in sel.items()) or "all points"


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return str(v)


def _section(ds, out: Path, prefix: str) -> list:
    status = ds["status"].values
    counts = {s: int(np.sum(status == s)) for s in ("ok", "failed", "missing")}
    axes = ", ".join(f"{d} ({ds.sizes[d]})" for d in ds["status"].dims) or "one point"
    versions = sorted({v for v in ds["kernelfield_version"].values.ravel() if v})
    blocks = [("h2", f"Sweep {ds.attrs['name']}"),
              ("p", f"{status.size} points over {axes}; computations: {', '.join(json.loads(ds.attrs['compute']))}. "
                    f"{counts['ok']} ok, {counts['failed']} failed, {counts['missing']} missing; compute time "
                    f"{np.nansum(ds['seconds'].values):.1f} s; kernelfield {', '.join(versions) or '?'}; "
                    f"config hash {ds.attrs['config_hash'][:12]}; store {ds.attrs['store']}."
                    + _methods_note(ds))]
    figures = out / "figures"
    numeric, other = _axes(ds)
    for stem, ylabel, title in _GROUPS:
        names = [v for v in _scalars(ds) if v.startswith(stem) and not v.endswith(("_bar", "_err"))]
        if names and counts["ok"]:
            path = figures / f"{prefix}_{title.replace(' ', '_')}.png"
            caption = _curves(ds, names, ylabel, numeric, other, path, title)
            blocks.append(("img", path.relative_to(out).as_posix(), caption))
    coherence = [v for v in ("coherence_theory", "coherence_sampled", "coherence_lazy") if v in ds]
    if len(numeric) >= 2 and coherence and counts["ok"]:
        path = figures / f"{prefix}_phase_diagram.png"
        blocks.append(("img", path.relative_to(out).as_posix(), _phase_diagram(ds, coherence[0], numeric, other, path)))
    points = _representative(ds, numeric, other)
    kernels = [v for v in ("C_theory", "C_lazy", "C_sampled") if v in ds]
    if kernels and points:
        for j, sel in enumerate(points):
            first = next((v for v in ("C_theory", "C_lazy") if v in ds), "C_sampled")
            second = "C_sampled" if "C_sampled" in ds and first != "C_sampled" else None
            path = figures / f"{prefix}_kernels_{j}.png"
            point = ds.sel(sel)
            T, P = _kernel_size(point[first])
            plots.plot_kernels(_matrix(point[first], T, P), None if second is None else _matrix(point[second], T, P),
                               T, P, path, title=f"{ds.attrs['name']}: {_describe(sel)}")
            what = first[2:] + (f" | {second[2:]} | difference" if second else "")
            blocks.append(("img", path.relative_to(out).as_posix(), f"Kernels ({what}) at {_describe(sel)}."))
        path = figures / f"{prefix}_spectra.png"
        blocks.append(("img", path.relative_to(out).as_posix(), _spectra(ds, kernels, points, path)))
    blocks += _table(ds)
    failed = [(idx, ds["error"].values[idx]) for idx in np.ndindex(status.shape) if status[idx] == "failed"]
    if failed:
        blocks.append(("h3", "Failed points"))
        blocks.append(("p", f"Tracebacks are in {ds.attrs['store']}/failed/; `kernelfield sweep ... --retry-failed` "
                            "recomputes them."))
        blocks.append(("table", [*ds["status"].dims, "error"],
                       [[*(_fmt(ds[d].values[i]) for d, i in zip(ds["status"].dims, idx)), err]
                        for idx, err in failed[:_MAX_ROWS]]))
    return blocks


def _methods_note(ds) -> str:
    """A sentence naming the theory's methods of the points (empty without a theory)."""
    methods = sorted({m for m in ds["theory_method"].values.ravel() if m}) if "theory_method" in ds else []
    if not methods:
        return ""
    note = " Theory solved by: " + ", ".join(plots.METHOD_LABELS.get(m, m) for m in methods) + "."
    if "gaussian" in methods:
        note += " The Gaussian closure is an approximation (its S is a lower bound on the exact action)."
    return note


def _source(name: str) -> str:
    return name.rsplit("_", 1)[-1]


def _source_label(ds, name: str, sel: dict) -> str:
    """The legend name of an observable's source: "Gaussian closure" for theory results of the closure."""
    source = _source(name)
    if source == "theory" and "theory_method" in ds:
        methods = set(np.asarray(ds["theory_method"].sel(sel).values).ravel()) - {""}
        if methods == {"gaussian"}:
            return plots.METHOD_LABELS["gaussian"]
    return source


def _error_bar(ds, name: str):
    """The variable holding the error bar of observable ``name`` (``None`` if it has none)."""
    bar = "kernel_error_bar" if name == "kernel_error" else f"{name}_err"
    return bar if bar in ds else None


def _curves(ds, names, ylabel, numeric, other, path, title) -> str:
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    if numeric:
        control = numeric[0]
        series_dims = numeric[1:] + other
        combos = _combos(ds, series_dims)
        shown = combos[:_MAX_SERIES]
        colors = [f"C{i % 10}" for i in range(len(shown))]
        x = ds[control].values
        for sel, color in zip(shown, colors):
            for name in names:
                y = ds[name].sel(sel).values
                label = ", ".join(filter(None, [_describe(sel) if series_dims else "", _source_label(ds, name, sel)]))
                style = dict(_STYLE.get(_source(name), dict(ls="-", marker="^", ms=4)))
                if len(x) < _MIN_LINE:  # too few values to suggest a curve between them
                    style.update(ls="none", marker=style["marker"] or "x", ms=6)
                bar = _error_bar(ds, name)
                if bar is not None and np.isfinite(ds[bar].sel(sel).values).any():
                    ax.errorbar(x, y, yerr=ds[bar].sel(sel).values, color=color, label=label, capsize=3, **style)
                else:
                    ax.plot(x, y, color=color, label=label, **style)
        ax.set_xlabel(control)
        caption = f"{title.capitalize()} against {control}"
        if series_dims:
            caption += f", one colour per {', '.join(series_dims)}"
        if len(combos) > len(shown):
            caption += f" (first {len(shown)} of {len(combos)} combinations shown)"
    else:
        combos = _combos(ds, other)[:_MAX_SERIES * 2]
        width = 0.8 / len(names)
        pos = np.arange(len(combos))
        for k, name in enumerate(names):
            values = [float(ds[name].sel(sel).values) for sel in combos]
            bar = _error_bar(ds, name)
            ax.bar(pos + (k - (len(names) - 1) / 2) * width, values, width=width, label=_source_label(ds, name, {}),
                   yerr=None if bar is None else [float(ds[bar].sel(sel).values) for sel in combos])
        ax.set_xticks(pos, [_describe(sel) for sel in combos], rotation=30 if len(combos) > 3 else 0,
                      ha="right" if len(combos) > 3 else "center", fontsize=8)
        caption = f"{title.capitalize()} per point"
    ax.set(ylabel=ylabel, title=f"{ds.attrs['name']}: {title}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    sources = ", ".join(_source(n) for n in names)
    return caption + f"; sources: {sources} (theory solid, lazy dashed, sampled dotted)."


def _phase_diagram(ds, name, numeric, other, path) -> str:
    xdim, ydim = numeric[0], numeric[1]
    rest = numeric[2:] + other
    combos = _combos(ds, rest)[:4]
    fig = Figure(figsize=(4.2 * len(combos), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(combos)))
    values = ds[name].values
    vmax = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    for ax, sel in zip(axes, combos):
        z = ds[name].sel(sel).transpose(ydim, xdim).values
        im = ax.pcolormesh(ds[xdim].values, ds[ydim].values, z, shading="nearest", vmin=0, vmax=max(vmax, 1e-12),
                           cmap="viridis")
        ax.set(xlabel=xdim, ylabel=ydim, title=_describe(sel) if rest else "")
    source = _source_label(ds, name, {})
    label = name if source == _source(name) else f"{name} ({source})"
    fig.colorbar(im, ax=list(axes), label=label)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return f"Phase diagram: {label} over {xdim} and {ydim}" + (f", one panel per {', '.join(rest)}" if rest else "") + "."


def _representative(ds, numeric, other) -> list[dict]:
    last = {d: ds[d].values[-1] for d in numeric}
    points = []
    for sel in _combos(ds, other):
        sel = {**sel, **last}
        if ds["status"].sel(sel).item() == "ok":
            points.append(sel)
    return points[:_MAX_POINTS]


def _kernel_size(da) -> tuple[int, int]:
    arr = np.asarray(da.values)
    T = int(np.sum(np.isfinite(arr[:, 0, 0, 0])))  # NaN padding when T is an axis
    P = int(np.sum(np.isfinite(arr[0, :, 0, 0])))
    return T, P


def _matrix(da, T: int, P: int) -> np.ndarray:
    return storage.kernel_matrix(np.asarray(da.values)[:T, :P, :T, :P])


def _spectra(ds, kernels, points, path) -> str:
    fig = Figure(figsize=(3.2 * len(points), 3.2))
    axes = np.atleast_1d(fig.subplots(1, len(points), sharey=True))
    for ax, sel in zip(axes, points):
        point = ds.sel(sel)
        for name in kernels:
            T, P = _kernel_size(point[name])
            eig = np.sort(np.linalg.eigvalsh(_matrix(point[name], T, P)))[::-1]
            style = _STYLE.get(_source(name), {})
            ax.semilogy(np.arange(1, eig.size + 1), np.maximum(eig, 1e-16), label=_source(name), **style)
        ax.set(xlabel="index", title=_describe(sel))
        ax.title.set_fontsize(8)
    axes[0].set_ylabel("eigenvalue of C")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return "Kernel spectra (eigenvalues of C, descending) at the same points; negative values are clipped."


def _table(ds) -> list:
    dims = list(ds["status"].dims)
    scalars = _scalars(ds)
    columns = [c for c in _FIRST_COLUMNS if c in scalars] + [c for c in scalars if c not in _FIRST_COLUMNS]
    method = "theory_method" in ds and any(ds["theory_method"].values.ravel())
    header = [*dims, "status", *(["method"] if method else []), "seconds", *columns]
    rows = []
    shape = ds["status"].shape
    for idx in itertools.islice(np.ndindex(shape), _MAX_ROWS):
        row = [_fmt(ds[d].values[i]) for d, i in zip(dims, idx)]
        row += [str(ds["status"].values[idx]), *([ds["theory_method"].values[idx]] if method else []),
                _fmt(float(ds["seconds"].values[idx]))]
        row += ["" if np.isnan(v := float(ds[c].values[idx])) else _fmt(v) for c in columns]
        rows.append(row)
    blocks = [("h3", "Diagnostics"), ("table", header, rows)]
    total = int(np.prod(shape))
    if total > _MAX_ROWS:
        blocks.append(("p", f"First {_MAX_ROWS} of {total} points; kf.sweep.load(store) has all of them."))
    return blocks


# --------------------------------------------------------------------------------------------
# rendering


def _markdown(blocks) -> str:
    lines = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + rest[0], ""]
        elif kind == "p":
            lines += [rest[0], ""]
        elif kind == "img":
            lines += [f"![{rest[1]}]({rest[0]})", "", f"*{rest[1]}*", ""]
        elif kind == "table":
            header, rows = rest
            cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
            lines += ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def _html(blocks) -> str:
    e = html.escape
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{e(rest[0])}</p>")
        elif kind == "img":
            body.append(f'<figure><img src="{e(rest[0])}" alt="{e(rest[1])}"><figcaption>{e(rest[1])}'
                        "</figcaption></figure>")
        elif kind == "table":
            header, rows = rest
            body.append("<table><thead><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in rows)
                        + "</tbody></table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;"
             "text-align:right}img{max-width:100%}figcaption{font-size:13px;color:#444}")
    title = e(blocks[0][1]) if blocks else "kernelfield report"
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{style}</style></head>'
            f"<body>\n" + "\n".join(body) + "\n</body></html>\n")
