"""Generalisation on sequential tasks: learning curves of RNN, DNN and partially shared
networks (THEORY.md §4, "Sequential tasks").

With supervision on only some ``(a, t)`` the RNN's shared weights carry what it learned to the
unsupervised steps; an untied readout has no information there. :func:`learning_curves`
measures this, for every architecture, supervision schedule and number of training sequences
``P``, by up to four methods on the *same* task draws:

* ``theory`` — the feature-learning kernel (:func:`kernelfield.solve`), posterior mean
  ``G_{·S}(G_S + κI)⁻¹ y_S`` (THEORY.md §4);
* ``lazy`` — the same predictor with the prior (NNGP) kernel (:func:`kernelfield.prior_kernel`);
* ``sampled`` — width-``N`` networks sampled from the posterior (:func:`kernelfield.sample`);
* ``langevin`` — width-``N`` networks trained by Langevin gradient descent
  (:func:`kernelfield.finite.training.train`).

Protocol. For repeat ``r`` a pool of ``max(P) + P_test`` sequences is drawn (generator seed
``seed + r``, or a seeded shuffle of a pool you supply). The last ``P_test`` sequences are the
held-out set (fully unsupervised rows); the training set of size ``P`` is the first ``P``
sequences (nested across ``P``), supervised where the schedule says. Held-out rows are solved
together with the training rows as unsupervised rows — exactly what :func:`kernelfield.predict`
does; the theory is consistent under adding unsupervised rows (the training block and ``S`` do
not change), so the training predictions come from the same solve. ``heldout_batch`` solves the
held-out rows in batches instead (smaller kernels).

Errors are those of the posterior-mean predictor against the noise-free truth:
``mse = mean (f - truth)²`` over a set of entries and ``nmse = mse / mean truth²`` (1 = predicting
zero), on three sets — ``unsupervised`` entries of the training sequences (where the truth is
defined), ``heldout`` sequences, and the ``supervised`` entries (training fit) — plus per step.
Network methods carry standard errors (``*_sem``) propagated from the per-entry standard
errors of their posterior-mean estimates (``sampled``: ``sqrt(f_var/ESS)``; ``langevin``: the
spread across independent networks): ``sem(mse) = sqrt(Σ (2 r_i σ_i)²) / n``. These error bars
assume the networks have equilibrated: a sampled run with effective sample size below
:data:`MIN_ESS` triggers a warning (long RNNs, e.g. ``T = 6`` at ``g = 1``, mix slowly — check
``sampled_ess`` and compare sampled with Langevin-trained networks). Classification
tasks add the fraction of wrong signs. The result is an ``xarray.Dataset`` (layout in
:func:`learning_curves`) that :mod:`kernelfield.plots_generalization` draws and
:func:`kernelfield.save` writes.

Everything takes ``phi``: the lazy kernel, sampler and trainer handle every registered
nonlinearity, and so does ``theory``, by the solver chosen in ``solve_kwargs["method"]``
(:func:`kernelfield.solve`: exact for linear ``phi``; for others the particle solver, slow, or
``"gaussian"``, the Gaussian closure: fast and approximate). The solver that ran is the
dataset's ``theory_method`` attribute.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import xarray as xr

from ..compilation import release_programs_if_crowded
from ..nonlinearities import get_nonlinearity
from ..progress import ProgressArg, ProgressCallback, ProgressEvent, reporter
from ..finite.sampling import sample
from ..schedules import Schedule, all_steps
from ..spec import Architecture, Prior, Task
from ..storage import _atomic_write, provenance
from ..tasks import TASKS, LabelledTask
from ..validation import integer
from ..theory.lazy import prior_kernel
from ..theory.solver import solve
from ..finite.training import train

__all__ = ["architecture", "learning_curves", "METHODS", "evaluate"]

METHODS = ("theory", "lazy", "sampled", "langevin")
MIN_ESS = 100  # below this a sampled run gets a warning (its error bars are not trustworthy)
SETS = ("unsupervised", "heldout", "supervised")


def architecture(name: str | Architecture, T: int) -> Architecture:
    """An architecture from its name (:meth:`~kernelfield.Architecture.from_name`: ``"rnn"``,
    ``"dnn"``, ``"tied_every_K"``, ``"share_<families>"``, e.g. ``"share_Uv"``: only ``U`` and
    ``v`` shared). An :class:`~kernelfield.Architecture` is returned unchanged (its ``T`` must match)."""
    if isinstance(name, Architecture):
        if name.T != T:
            raise ValueError(f"architectures: {name.name} has T = {name.T}, the task has T = {T}")
        return name
    return Architecture.from_name(name, T, field="architectures")


def _sorted_positive(name: str, values) -> list[int]:
    try:
        values = [int(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a list of integers >= 1, got {values!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{name}: must be a non-empty list of integers >= 1, got {values!r}")
    return sorted(set(values))


def _pool_source(task, T: int, task_kwargs: dict) -> Callable[[int, int], LabelledTask]:
    """``draw(P_pool, seed)`` for a generator name, a callable or a fixed pool."""
    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"task: unknown generator {task!r}; allowed: {', '.join(sorted(TASKS))}")
        task = TASKS[task]
    if isinstance(task, Task):
        pool = task if isinstance(task, LabelledTask) else LabelledTask(task.inputs, task.targets)
        if pool.T != T:
            raise ValueError(f"task: has T = {pool.T}, expected T = {T}")

        def draw(P_pool: int, seed: int) -> LabelledTask:
            if P_pool > pool.P:
                raise ValueError(f"task: the pool holds {pool.P} sequences, fewer than max(P) + P_test = {P_pool}")
            return pool.rows(np.random.default_rng(seed).permutation(pool.P)[:P_pool])

        return draw
    if callable(task):
        def draw(P_pool: int, seed: int) -> LabelledTask:
            out = task(P=P_pool, T=T, seed=seed, **task_kwargs)
            if not isinstance(out, Task) or out.inputs.shape[:2] != (P_pool, T):
                raise ValueError(f"task: the generator must return a Task with P = {P_pool}, T = {T}")
            return out if isinstance(out, LabelledTask) else LabelledTask(out.inputs, out.targets)

        return draw
    raise ValueError(f"task: expected a generator name, a callable or a LabelledTask, got {type(task).__name__}")


def evaluate(mean, truth, mask, sem=None, classification: bool = False) -> dict:
    """Errors of predictions ``mean`` against ``truth`` over the entries ``mask`` (all ``(P, T)``):
    ``mse``, ``nmse`` (``mse / mean truth²``), their standard errors from per-entry standard
    errors ``sem`` (``NaN`` without), per-step ``step_mse`` / ``step_nmse`` ``(T,)`` and, for
    classification, ``sign_error``. Empty masks give ``NaN``."""
    mean, truth, mask = np.asarray(mean), np.asarray(truth), np.asarray(mask, dtype=bool) & ~np.isnan(truth)
    residual = np.where(mask, mean - np.where(mask, truth, 0.0), 0.0)
    power = np.where(mask, truth, 0.0) ** 2
    count = mask.sum()
    nan = float("nan")
    out = {"mse": nan, "nmse": nan, "mse_sem": nan, "nmse_sem": nan, "sign_error": nan}
    with np.errstate(invalid="ignore", divide="ignore"):
        step_count = mask.sum(axis=0)
        step_mse = np.where(step_count > 0, (residual**2).sum(axis=0) / np.maximum(step_count, 1), np.nan)
        step_power = np.where(step_count > 0, power.sum(axis=0) / np.maximum(step_count, 1), np.nan)
        out["step_mse"] = step_mse
        out["step_nmse"] = step_mse / step_power
    if count == 0:
        return out
    out["mse"] = float((residual**2).sum() / count)
    norm = float(power.sum() / count)
    out["nmse"] = out["mse"] / norm if norm > 0 else nan
    if sem is not None:
        sem = np.where(mask, np.asarray(sem), 0.0)
        out["mse_sem"] = float(np.sqrt(np.sum((2.0 * residual * sem) ** 2)) / count)
        out["nmse_sem"] = out["mse_sem"] / norm if norm > 0 else nan
    if classification:
        out["sign_error"] = float(np.sum(mask & (np.sign(mean) != np.sign(np.where(mask, truth, 0.0)))) / count)
    return out


def _in_batches(predict_rows: Callable[[Task], np.ndarray], train_task: Task, test_inputs: np.ndarray,
                batch: int | None) -> np.ndarray:
    """Predictions ``(P + P_test, T)`` from one or several enlarged tasks (test rows unsupervised)."""
    P_test = test_inputs.shape[0]
    if batch is None or batch >= P_test:
        return predict_rows(train_task.with_sequences(test_inputs))
    parts, train_part = [], None
    for start in range(0, P_test, batch):
        mean = predict_rows(train_task.with_sequences(test_inputs[start:start + batch]))
        if train_part is None:
            train_part = mean[: train_task.P]
        parts.append(mean[train_task.P:])
    return np.concatenate([train_part, *parts])


def learning_curves(
    task,
    T: int,
    P: Sequence[int],
    archs: Sequence[str | Architecture] = ("rnn", "dnn"),
    schedules: Sequence[Schedule] | Schedule = (),
    P_test: int = 4,
    repeats: int = 1,
    task_kwargs: dict | None = None,
    prior: Prior = Prior(),
    phi="linear",
    kappa: float = 0.1,
    methods: Sequence[str] = ("theory", "lazy"),
    solve_kwargs: dict | None = None,
    sampling: dict | None = None,
    langevin: dict | None = None,
    heldout_batch: int | None = None,
    seed: int = 0,
    progress: ProgressArg = True,
    checkpoint: str | Path | None = None,
) -> xr.Dataset:
    """Generalisation errors of every architecture, schedule and training-set size ``P``.

    task: a generator name (:data:`kernelfield.tasks.TASKS`) or callable ``(P, T, seed, **task_kwargs)``
    returning a :class:`~kernelfield.tasks.LabelledTask`, or a ``LabelledTask`` pool (shuffled
    per repeat). archs: names for :func:`architecture` or Architectures. schedules: one or
    more :class:`~kernelfield.schedules.Schedule` (default: every step the task defines),
    applied on top of the generator's own targets. methods: any of :data:`METHODS`; ``sampled``
    uses ``sampling`` (keyword arguments of :func:`kernelfield.sample`) and ``langevin`` uses
    ``langevin`` (of :func:`kernelfield.finite.training.train`), each optionally with ``"P"``: the subset
    of ``P`` at which to run the networks (they are slow). solve_kwargs: extra arguments of
    :func:`kernelfield.solve` (``tol``, ``init``, ``method``, ...). progress: ``True`` (a rich progress bar),
    ``False`` or a callable receiving :class:`~kernelfield.progress.ProgressEvent` s (task
    ``"generalisation"``, one unit per architecture, schedule, ``P`` and repeat). checkpoint: a
    directory where every finished method on every cell is kept as it finishes (:class:`Checkpoint`):
    a run that is stopped and started again with the same arguments recomputes nothing it had
    finished; the directory must hold no other study's results.

    Returns a Dataset with coordinates ``predictor, arch, schedule, P, repeat, t`` (plus
    ``supervised_fraction`` on ``schedule``) and variables ``{mse,nmse}_{set}`` and
    ``{mse,nmse}_{set}_sem`` (``predictor, arch, schedule, P, repeat``), ``step_{mse,nmse}_{set}`` (same
    + ``t``), ``sign_error_{set}`` for classification tasks, for ``set`` in ``unsupervised,
    heldout, supervised``; ``prediction_train`` (``…, a_train, t``; NaN-padded beyond ``P``) and
    ``prediction_heldout`` (``…, a_test, t``); the data ``inputs``, ``truth``, ``targets``
    (``repeat, a_pool, t[, d]``) and ``supervised`` (``schedule, repeat, a_train, t``);
    ``theory_converged``/``theory_residual``, ``sampled_ess``/``sampled_acceptance`` and ``seconds``. Entries a method did not run are
    ``NaN``. (The dimension is called ``predictor``, not ``method``, which is a keyword of
    ``Dataset.sel``.) attrs hold the provenance (``config`` JSON) and ``theory_method``, the solver
    of the ``theory`` predictions (``Solution.method``: ``exact``, ``particles`` or ``gaussian``;
    empty without them).
    """
    started = time.perf_counter()
    study = _plan_study(task, T, P, archs, schedules, P_test, repeats, task_kwargs, prior, phi, kappa, methods,
                        solve_kwargs, sampling, langevin, heldout_batch, seed)
    results = _StudyResults.empty(study)
    store = None if checkpoint is None else Checkpoint(checkpoint, _study_config(study))
    with reporter(progress) as report:
        _run_study(study, results, report, store)
    return _study_dataset(study, results, started)


class Checkpoint:
    """Finished results of one study in ``directory``: one ``.npz`` per method and cell (written
    atomically), and ``study.json``, the study's configuration, which a later run must match."""

    def __init__(self, directory: str | Path, config: dict):
        self.directory = Path(directory)
        text = json.dumps(config, default=str, sort_keys=True)
        marker = self.directory / "study.json"
        if marker.exists():
            if marker.read_text() != text:
                raise ValueError(f"checkpoint: {self.directory} holds results of another study "
                                 "(its study.json differs); use another directory or delete it")
        elif self.directory.exists() and any(self.directory.iterdir()):
            raise ValueError(f"checkpoint: {self.directory} is not empty and holds no study.json; "
                             "use another directory")
        else:
            _atomic_write(marker, lambda tmp: Path(tmp).write_text(text))

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str):
        """``(mean, sem, extra, seconds)`` of a finished result, or ``None``."""
        path = self._path(key)
        if not path.exists():
            return None
        with np.load(path) as f:
            sem = f["sem"] if "sem" in f else None
            return f["mean"], sem, tuple(json.loads(str(f["extra"]))), float(f["seconds"])

    def save(self, key: str, mean, sem, extra: tuple, seconds: float) -> None:
        arrays = dict(mean=np.asarray(mean), extra=np.array(json.dumps(list(extra))), seconds=np.array(seconds))
        if sem is not None:
            arrays["sem"] = np.asarray(sem)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        _atomic_write(self._path(key), write)


@dataclass(frozen=True)
class _Study:
    """A validated learning-curve study: what :func:`learning_curves` runs. ``network``: keyword
    arguments of the network methods, ``network_P``: the ``P`` at which each runs; ``draw(P_pool,
    seed)`` draws a repeat's pool; ``task_name``: the task's provenance label."""

    T: int
    P: list[int]
    P_test: int
    repeats: int
    archs: list[Architecture]
    schedules: list[Schedule]
    methods: list[str]
    network: dict
    network_P: dict
    solve_kwargs: dict
    draw: Callable[[int, int], LabelledTask]
    task_name: str
    task_kwargs: dict
    prior: Prior
    phi: object
    kappa: float
    heldout_batch: int | None
    seed: int

    @property
    def shape(self) -> tuple[int, ...]:
        """``(predictor, arch, schedule, P, repeat)``."""
        return (len(self.methods), len(self.archs), len(self.schedules), len(self.P), self.repeats)


def _plan_study(task, T, P, archs, schedules, P_test, repeats, task_kwargs, prior, phi, kappa, methods,
                solve_kwargs, sampling, langevin, heldout_batch, seed) -> _Study:
    """Validate the arguments of :func:`learning_curves` into a :class:`_Study`."""
    integer("T", T, 1)
    P_list = _sorted_positive("P", P)
    integer("P_test", P_test, 0)
    integer("repeats", repeats, 1)
    if heldout_batch is not None:
        integer("heldout_batch", heldout_batch, 1)
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ValueError(f"methods: must be a non-empty list from {', '.join(METHODS)}, got {methods!r}")
    if isinstance(schedules, Schedule):
        schedules = [schedules]
    schedules = list(schedules) or [all_steps()]
    if not all(isinstance(s, Schedule) for s in schedules):
        raise ValueError("schedules: must be kernelfield Schedules (see kernelfield.schedules)")
    labels = [s.label for s in schedules]
    if len(set(labels)) != len(labels):
        raise ValueError(f"schedules: labels must be distinct, got {labels}")
    arch_list = [architecture(a, int(T)) for a in archs]
    names = [a.name for a in arch_list]
    if not arch_list or len(set(names)) != len(names):
        raise ValueError(f"archs: must be a non-empty list of distinct architectures, got {names}")
    network = {"sampled": dict(sampling or {}), "langevin": dict(langevin or {})}
    network_P = {}
    for m in ("sampled", "langevin"):
        subset = network[m].pop("P", None)
        network_P[m] = P_list if subset is None else _sorted_positive(f"{m}.P", subset)
        if not set(network_P[m]) <= set(P_list):
            raise ValueError(f"{m}.P: must be a subset of P = {P_list}, got {network_P[m]}")
        network[m].setdefault("progress", False)
    task_kwargs = dict(task_kwargs or {})
    return _Study(T=int(T), P=P_list, P_test=P_test, repeats=repeats, archs=arch_list, schedules=schedules,
                  methods=[m for m in METHODS if m in methods], network=network, network_P=network_P,
                  solve_kwargs=dict(solve_kwargs or {}), draw=_pool_source(task, int(T), task_kwargs),
                  task_name=task if isinstance(task, str) else getattr(task, "__name__", type(task).__name__),
                  task_kwargs=task_kwargs, prior=prior, phi=phi, kappa=kappa, heldout_batch=heldout_batch, seed=seed)


@dataclass
class _StudyResults:
    """What the study measured so far, filled in place by :func:`_run_study` (NaN: not run)."""

    errors: dict  # "{q}_{set}" -> (predictor, arch, schedule, P, repeat)
    step_errors: dict  # "step_{q}_{set}" -> (..., t)
    prediction_train: np.ndarray
    prediction_heldout: np.ndarray
    seconds: np.ndarray
    converged: np.ndarray  # (arch, schedule, P, repeat)
    residual: np.ndarray
    ess: np.ndarray
    acceptance: np.ndarray
    supervised: np.ndarray  # (schedule, repeat, a_train, t)
    pools: list
    theory_methods: set  # Solution.method of the theory's solves
    classification: bool = False

    @classmethod
    def empty(cls, study: _Study) -> "_StudyResults":
        full = lambda *extra: np.full(study.shape + extra, np.nan)  # noqa: E731
        cell = lambda: np.full(study.shape[1:], np.nan)  # noqa: E731
        return cls(errors={f"{q}_{s}": full() for s in SETS for q in ("mse", "nmse", "mse_sem", "nmse_sem", "sign_error")},
                   step_errors={f"step_{q}_{s}": full(study.T) for s in ("unsupervised", "heldout") for q in ("mse", "nmse")},
                   prediction_train=full(study.P[-1], study.T), prediction_heldout=full(study.P_test, study.T),
                   seconds=full(), converged=cell(), residual=cell(), ess=cell(), acceptance=cell(),
                   supervised=np.zeros((len(study.schedules), study.repeats, study.P[-1], study.T), dtype=np.int8),
                   pools=[], theory_methods=set())

    def record(self, idx: tuple, mean: np.ndarray, sem: np.ndarray | None, job: "_Job") -> None:
        """The predictions ``mean`` ``(P + P_test, T)`` of one method and their errors on the three sets."""
        P_ = job.train_task.P
        self.prediction_train[idx][:P_] = mean[:P_]
        self.prediction_heldout[idx] = mean[P_:]
        sem_train = None if sem is None else sem[:P_]
        sem_test = None if sem is None else sem[P_:]
        c = self.classification
        results = {
            "unsupervised": evaluate(mean[:P_], job.truth, ~job.mask, sem_train, c),
            "supervised": evaluate(mean[:P_], job.truth, job.mask, sem_train, c),
            "heldout": evaluate(mean[P_:], job.test_truth, np.ones_like(job.test_truth, bool), sem_test, c),
        }
        for set_name, res in results.items():
            for q in ("mse", "nmse", "mse_sem", "nmse_sem", "sign_error"):
                self.errors[f"{q}_{set_name}"][idx] = res[q]
            if set_name != "supervised":
                self.step_errors[f"step_mse_{set_name}"][idx] = res["step_mse"]
                self.step_errors[f"step_nmse_{set_name}"][idx] = res["step_nmse"]


class _Job(NamedTuple):
    """One architecture on one training set: ``cell = (arch, schedule, P, repeat)`` indices;
    ``truth``, ``mask``: noise-free truth and supervised entries of the training rows."""

    cell: tuple[int, int, int, int]
    arch: Architecture
    schedule: Schedule
    train_task: Task
    truth: np.ndarray
    mask: np.ndarray
    test_inputs: np.ndarray
    test_truth: np.ndarray
    seed: int

    @property
    def description(self) -> str:
        return f"{self.arch.name} · {self.schedule.label} · P={self.train_task.P} · repeat {self.cell[3]}"


def _run_study(study: _Study, results: _StudyResults, report: ProgressCallback, store: Checkpoint | None = None) -> None:
    """Every method on every job, in the order repeat, schedule, ``P``, architecture (results
    found in ``store`` are taken from it, new ones saved to it)."""
    total = study.repeats * len(study.schedules) * len(study.P) * len(study.archs)
    done, P_max = 0, study.P[-1]
    for r in range(study.repeats):
        pool = study.draw(P_max + study.P_test, study.seed + r)
        results.pools.append(pool)
        results.classification = results.classification or pool.classification
        for s, sched in enumerate(study.schedules):
            mask = sched.mask(P_max, study.T) & ~np.isnan(pool.targets[:P_max])
            results.supervised[s, r] = mask
            for p, P_ in enumerate(study.P):
                if not mask[:P_].any():
                    raise ValueError(f"schedules: {sched.label} leaves no supervised (a, t) among the first "
                                     f"P = {P_} training sequences; supervise more or raise P")
                train_task = Task(pool.inputs[:P_], np.where(mask[:P_], pool.targets[:P_], np.nan))
                for a, arch in enumerate(study.archs):
                    job = _Job((a, s, p, r), arch, sched, train_task, pool.truth[:P_], mask[:P_],
                               pool.inputs[P_max:], pool.truth[P_max:], study.seed + r)
                    report(ProgressEvent("generalisation", done, total, {"job": job.description}))
                    for mi, method in enumerate(study.methods):
                        if method not in study.network or P_ in study.network_P[method]:
                            _run_method(study, results, job, mi, method, store)
                    release_programs_if_crowded()  # every P compiles new programs: a long study stays within the limit
                    done += 1
    report(ProgressEvent("generalisation", done, total))


def _run_method(study: _Study, results: _StudyResults, job: _Job, mi: int, method: str,
                store: Checkpoint | None = None) -> None:
    """One method on one job: predictions, errors, diagnostics and wall time into ``results``
    (from ``store`` if it holds them; saved to it otherwise)."""
    key = "{}-{}-{}-{}-{}".format(method, *job.cell)
    saved = None if store is None else store.load(key)
    if saved is None:
        t0 = time.perf_counter()
        mean, sem = _run(method, job.arch, job.train_task, job.test_inputs, study.prior, study.phi, study.kappa,
                         study.solve_kwargs, study.network.get(method), study.heldout_batch, job.seed)
        mean, extra = mean if method in ("theory", "sampled") else (mean, ())
        saved = (mean, sem, tuple(extra), time.perf_counter() - t0)
        if store is not None:
            store.save(key, *saved)
    mean, sem, extra, seconds = saved
    cell = job.cell
    if method == "theory":
        results.converged[cell], results.residual[cell], solver = extra
        results.theory_methods.add(solver)
    if method == "sampled":
        results.ess[cell], results.acceptance[cell] = extra
        if results.ess[cell] < MIN_ESS:
            warnings.warn(
                f"sampled: effective sample size {results.ess[cell]:.0f} < {MIN_ESS} for "
                f"{job.arch.name}, {job.schedule.label}, P = {job.train_task.P}, repeat {cell[3]}: the sampled errors "
                "and their error bars are unreliable; raise num_samples / num_warmup",
                stacklevel=4)  # the caller of learning_curves
    results.seconds[(mi, *cell)] = seconds
    results.record((mi, *cell), mean, sem, job)


def _study_dataset(study: _Study, results: _StudyResults, started: float) -> xr.Dataset:
    """The Dataset of :func:`learning_curves` (layout in its docstring), with the provenance."""
    base = ("predictor", "arch", "schedule", "P", "repeat")
    data_vars = {key: (base, values) for key, values in results.errors.items()
                 if results.classification or not key.startswith("sign_error")}
    data_vars.update({key: (base + ("t",), values) for key, values in results.step_errors.items()})
    pools = results.pools
    data_vars.update(
        prediction_train=(base + ("a_train", "t"), results.prediction_train,
                          {"description": "posterior-mean prediction, training rows"}),
        prediction_heldout=(base + ("a_test", "t"), results.prediction_heldout,
                            {"description": "posterior-mean prediction, held-out rows"}),
        inputs=(("repeat", "a_pool", "t", "d"), np.stack([p.inputs for p in pools])),
        truth=(("repeat", "a_pool", "t"), np.stack([p.truth for p in pools]), {"description": "noise-free target"}),
        targets=(("repeat", "a_pool", "t"), np.stack([p.targets for p in pools]),
                 {"description": "generator targets before the schedule (NaN = none)"}),
        supervised=(("schedule", "repeat", "a_train", "t"), results.supervised, {"description": "1 = supervised"}),
        sampled_ess=(base[1:], results.ess, {"description": "minimum effective sample size of the HMC run"}),
        sampled_acceptance=(base[1:], results.acceptance),
        theory_converged=(base[1:], results.converged),
        theory_residual=(base[1:], results.residual),
        seconds=(base, results.seconds),
    )
    P_max, labels = study.P[-1], [s.label for s in study.schedules]
    coords = {
        "predictor": study.methods, "arch": [a.name for a in study.archs], "schedule": labels, "P": study.P,
        "repeat": np.arange(study.repeats), "t": np.arange(study.T), "a_train": np.arange(P_max),
        "a_test": np.arange(study.P_test), "a_pool": np.arange(P_max + study.P_test), "d": np.arange(pools[0].D),
        "supervised_fraction": ("schedule", [s.fraction(study.T) for s in study.schedules]),
    }
    config = _study_config(study)
    attrs = provenance("generalization", json.dumps(config, default=str))
    attrs.update(task=config["task"], classification=int(results.classification),
                 seconds=time.perf_counter() - started, theory_method=", ".join(sorted(results.theory_methods)))
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _study_config(study: _Study) -> dict:
    """The study's configuration (the provenance's ``config``; what a :class:`Checkpoint` must match)."""
    labels = [s.label for s in study.schedules]
    return {
        "task": study.task_name, "task_kwargs": study.task_kwargs, "T": study.T, "P": study.P, "P_test": study.P_test,
        "repeats": study.repeats, "seed": study.seed, "architectures": [a.to_dict() for a in study.archs],
        "schedules": labels, "prior": study.prior.to_dict(), "phi": get_nonlinearity(study.phi).name,
        "kappa": float(study.kappa), "methods": study.methods, "solve": study.solve_kwargs,
        "heldout_batch": study.heldout_batch,
        "sampling": {**study.network["sampled"], "P": study.network_P["sampled"]} if "sampled" in study.methods else None,
        "langevin": ({**study.network["langevin"], "P": study.network_P["langevin"]}
                     if "langevin" in study.methods else None),
    }


def _run(method, arch, train_task, test_inputs, prior, phi, kappa, solve_kwargs, network_kwargs, batch, seed):
    """Predictions ``(P + P_test, T)`` and per-entry standard errors (or ``None``) of one method;
    for ``theory`` the mean comes with ``(converged, residual, method)`` of the (last) solve."""
    if method == "theory":
        status = {}

        def theory_rows(task):
            sol = solve(arch, task, prior=prior, phi=phi, kappa=kappa, **solve_kwargs)
            status["converged"] = min(status.get("converged", True), bool(sol.converged))
            status["residual"] = max(status.get("residual", 0.0), float(sol.residual))
            status["method"] = sol.method
            return sol.predict().mean

        mean = _in_batches(theory_rows, train_task, test_inputs, batch)
        return (mean, (float(status["converged"]), status["residual"], status["method"])), None
    if method == "lazy":
        def lazy_rows(task):
            return prior_kernel(arch, task, prior, phi, kappa).predict().mean

        return _in_batches(lazy_rows, train_task, test_inputs, batch), None
    task = train_task.with_sequences(test_inputs)  # networks: no kernel, so no batching needed
    kwargs = {"seed": seed, **network_kwargs}
    if method == "sampled":
        s = sample(arch, task, prior=prior, phi=phi, kappa=kappa, **kwargs)
        sem = np.sqrt(np.asarray(s.f_var) / max(float(s.ess), 1.0))
        return (np.asarray(s.f_mean), (float(s.ess), float(s.acceptance_rate))), sem
    run = train(arch, task, prior=prior, phi=phi, kappa=kappa, **kwargs)
    return np.asarray(run.f_mean), np.asarray(run.f_sem)
