"""The sweep store (see :mod:`kernelfield.sweep`): its layout and point records, the driver
:func:`run` and the loader :func:`load`."""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from .._version import __version__
from .. import storage
from ..progress import ProgressEvent, RichBars, reporter
from .executors import default_workers, run_dask, run_here, run_local
from .grid import Sweep, load_config

__all__ = ["JAX_CACHE", "SweepInterrupted", "SweepRun", "load", "read_index", "run"]


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


def _reporting(progress, console):
    """Context manager yielding the progress callback: ``True`` draws rich bars on ``console``."""
    return RichBars(console) if progress is True else reporter(progress)


def _jobs(sweep: Sweep, store: Path, retry_failed: bool) -> tuple[list[dict], set, set]:
    """(jobs of the points to compute, keys with a result, keys failed before)."""
    done = {p.key for p in sweep.points if _point_path(store, p.key).is_file()}
    failed_before = {p.key for p in sweep.points if p.key not in done and _failure_path(store, p.key).is_file()}
    todo = [p for p in sweep.points if p.key not in done and (retry_failed or p.key not in failed_before)]
    options = {c: o.model_dump(mode="json") for c, o in sweep.options.items()}
    jobs = [{"key": p.key, "coords": p.coords, "config": p.config, "compute": list(sweep.compute),
             "options": options} for p in todo]
    return jobs, done, failed_before


def run(sweep, store, *, scheduler: str | None = None, workers: int | None = None, retry_failed: bool = False,
        progress=True, console=None) -> SweepRun:
    """Compute every point of ``sweep`` (a :class:`Sweep` or a path to its TOML file) that has no
    result in ``store`` yet (with ``retry_failed``, also the failed ones) and write each as it
    finishes (atomically).

    ``scheduler``: address of a Dask distributed scheduler to run on (its workers need
    kernelfield); otherwise a local process pool of ``workers`` processes (default: the CPUs
    available), or ``workers=0`` to compute in this process. ``progress``: ``True`` draws a rich
    progress bar (on ``console``) with points done / failed / remaining and an ETA; a callable gets
    a :class:`~kernelfield.progress.ProgressEvent` after each point is stored; ``False``: silent.
    SIGTERM or Ctrl-C stop the workers and raise :class:`SweepInterrupted`; finished points are
    kept, and running the sweep again computes only the rest.
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
    jobs, done, failed_before = _jobs(sweep, store, retry_failed)
    run_id = uuid.uuid4().hex[:12]
    provenance = {"sweep_name": sweep.name, "sweep_config_hash": sweep.config_hash, "run_id": run_id,
                  "kernelfield_version": __version__}
    if workers == 0 or not jobs:
        results = run_here(jobs)
    elif scheduler is not None:
        results = run_dask(jobs, scheduler, run_id)
    else:
        results = run_local(jobs, min(workers or default_workers(), len(jobs)), store / JAX_CACHE)

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
        with closing(results), _reporting(progress, console) as report:
            def event():
                return ProgressEvent(sweep.name, computed + len(failures), len(jobs), {
                    "done": computed, "failed": len(failures),
                    "remaining": len(jobs) - computed - len(failures), "from store": len(done)})

            report(event())
            for job, record in results:
                _store_record(store, job, record, provenance)
                if record["status"] == "ok":
                    computed += 1
                else:
                    failures[job["key"]] = record["error"]
                report(event())
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
_POINT_LABELS = ("theory_method",)  # string attributes of a point's results ("" where absent)


def load(store) -> xr.Dataset:
    """One labelled dataset of a sweep store: one dimension per axis (coordinates: the axis values,
    or labels for whole-section axes) followed by the output's own dims (``t, a, t2, a2`` for
    kernels, ...). Every output is ``NaN`` where the point failed or is missing (arrays of different
    per-point sizes, e.g. with ``architecture.T`` as an axis, are NaN-padded). Per point:
    ``status`` (``ok`` / ``failed`` / ``missing``), ``error``, ``seconds``, ``seconds_<computation>``,
    ``point_key``, ``theory_method`` (the solver of the theory results: ``exact``, ``particles`` or
    ``gaussian``, the Gaussian closure; empty without a solve) and the provenance strings ``run_id``,
    ``started``, ``finished``, ``kernelfield_version``, ``host``, ``warnings``. Attrs: the sweep's ``name``, ``config_hash``,
    ``compute`` and ``config`` (JSON)."""
    store = Path(store)
    index = read_index(store)
    axes = index["axes"]
    shape = tuple(len(a["labels"]) for a in axes)
    dims = tuple(a["name"] for a in axes)
    coords = {a["name"]: np.asarray(a["labels"], dtype=object if any(isinstance(v, str) for v in a["labels"])
                                    else None) for a in axes}
    strings = {name: np.full(shape, "", dtype=object)
               for name in ("status", "error", "point_key", *_PROVENANCE, *_POINT_LABELS)}
    numbers: dict[str, np.ndarray] = {"seconds": np.full(shape, np.nan)}
    outputs: dict[str, tuple[tuple, dict]] = {}  # name -> (inner dims, {index: array})
    for point in index["points"]:
        idx = tuple(point["index"])
        strings["point_key"][idx] = point["key"]
        path, failure = _point_path(store, point["key"]), _failure_path(store, point["key"])
        if path.is_file():
            ds = storage.load(path)
            strings["status"][idx] = "ok"
            for name in (*_PROVENANCE, *_POINT_LABELS):
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
