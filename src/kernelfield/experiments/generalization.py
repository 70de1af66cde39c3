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
  (:func:`kernelfield.training.train`).

Protocol. For repeat ``r`` a pool of ``max(P) + P_test`` sequences is drawn (generator seed
``seed + r``, or a seeded shuffle of a pool you supply). The last ``P_test`` sequences are the
held-out set (fully unsupervised rows); the training set of size ``P`` is the first ``P``
sequences (nested across ``P``), supervised where the schedule says. Held-out rows are solved
together with the training rows as unsupervised rows — exactly what :func:`kernelfield.predict`
does; the theory is consistent under adding unsupervised rows (the training block and ``S`` do
not change), so the training predictions come from the same solve. ``heldout_batch`` solves the
held-out rows in batches instead (smaller kernels, and a weaker ``D >= P + batch`` condition on
the ``t = 0`` input kernel).

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
nonlinearity; ``theory`` needs a ``phi`` that :func:`kernelfield.solve` supports (currently
``linear``), otherwise leave it out of ``methods``.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from typing import Callable, Sequence

import numpy as np
import xarray as xr
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..nonlinearities import get_nonlinearity
from ..sampling import sample
from ..schedules import Schedule, all_steps
from ..spec import FAMILIES, Architecture, Prior, Task
from ..storage import provenance
from ..tasks import TASKS, LabelledTask
from ..theory.kernels import make_problem
from ..theory.lazy import prior_kernel
from ..theory.predict import predictive
from ..theory.solver import solve
from ..training import train

__all__ = ["architecture", "learning_curves", "METHODS", "evaluate"]

METHODS = ("theory", "lazy", "sampled", "langevin")
MIN_ESS = 100  # below this a sampled run gets a warning (its error bars are not trustworthy)
SETS = ("unsupervised", "heldout", "supervised")


def architecture(name: str | Architecture, T: int) -> Architecture:
    """An architecture from its name: ``"rnn"``, ``"dnn"``, ``"tied_every_K"`` (``W`` tied in
    blocks of ``K`` steps) or ``"share_<families>"`` — the listed families shared across all
    steps, the others untied (``"share_Uv"``: only ``U`` and ``v`` shared; ``"share_WUbv"`` is
    the RNN). An :class:`~kernelfield.Architecture` is returned unchanged (its ``T`` must match)."""
    if isinstance(name, Architecture):
        if name.T != T:
            raise ValueError(f"architectures: {name.name} has T = {name.T}, the task has T = {T}")
        return name
    if not isinstance(name, str):
        raise ValueError(f"architectures: expected a name or an Architecture, got {name!r}")
    if name == "rnn":
        return Architecture.rnn(T)
    if name == "dnn":
        return Architecture.dnn(T)
    m = re.fullmatch(r"tied_every_(\d+)", name)
    if m and int(m.group(1)) >= 1:
        return Architecture.tied_every(T, int(m.group(1)))
    m = re.fullmatch(r"share_([WUbv]+)", name)
    if m and len(set(m.group(1))) == len(m.group(1)):
        shared = set(m.group(1))
        groups = {f: [0] * T if f in shared else list(range(T)) for f in FAMILIES}
        return Architecture(T, groups["W"], groups["U"], groups["b"], groups["v"], name=name)
    raise ValueError(f"architectures: unknown architecture {name!r}; use 'rnn', 'dnn', 'tied_every_K' "
                     "(K >= 1) or 'share_<families>' with families from W, U, b, v (e.g. 'share_Uv')")


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
    progress: bool = True,
) -> xr.Dataset:
    """Generalisation errors of every architecture, schedule and training-set size ``P``.

    task: a generator name (:data:`kernelfield.tasks.TASKS`) or callable ``(P, T, seed, **task_kwargs)``
    returning a :class:`~kernelfield.tasks.LabelledTask`, or a ``LabelledTask`` pool (shuffled
    per repeat). archs: names for :func:`architecture` or Architectures. schedules: one or
    more :class:`~kernelfield.schedules.Schedule` (default: every step the task defines),
    applied on top of the generator's own targets. methods: any of :data:`METHODS`; ``sampled``
    uses ``sampling`` (keyword arguments of :func:`kernelfield.sample`) and ``langevin`` uses
    ``langevin`` (of :func:`kernelfield.training.train`), each optionally with ``"P"``: the subset
    of ``P`` at which to run the networks (they are slow). solve_kwargs: extra arguments of
    :func:`kernelfield.solve` (``tol``, ``init``, ...).

    Returns a Dataset with coordinates ``predictor, arch, schedule, P, repeat, t`` (plus
    ``supervised_fraction`` on ``schedule``) and variables ``{mse,nmse}_{set}`` and
    ``{mse,nmse}_{set}_sem`` (``predictor, arch, schedule, P, repeat``), ``step_{mse,nmse}_{set}`` (same
    + ``t``), ``sign_error_{set}`` for classification tasks, for ``set`` in ``unsupervised,
    heldout, supervised``; ``prediction_train`` (``…, a_train, t``; NaN-padded beyond ``P``) and
    ``prediction_heldout`` (``…, a_test, t``); the data ``inputs``, ``truth``, ``targets``
    (``repeat, a_pool, t[, d]``) and ``supervised`` (``schedule, repeat, a_train, t``);
    ``theory_converged``/``theory_residual``, ``sampled_ess``/``sampled_acceptance`` and ``seconds``. Entries a method did not run are
    ``NaN``. (The dimension is called ``predictor``, not ``method``, which is a keyword of
    ``Dataset.sel``.) attrs hold the provenance (``config`` JSON).
    """
    started = time.perf_counter()
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T: must be an integer >= 1, got {T!r}")
    T = int(T)
    P_list = _sorted_positive("P", P)
    if isinstance(P_test, bool) or not isinstance(P_test, (int, np.integer)) or P_test < 0:
        raise ValueError(f"P_test: must be an integer >= 0, got {P_test!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats: must be an integer >= 1, got {repeats!r}")
    if heldout_batch is not None and (isinstance(heldout_batch, bool) or not isinstance(heldout_batch, (int, np.integer))
                                      or heldout_batch < 1):
        raise ValueError(f"heldout_batch: must be an integer >= 1 or None, got {heldout_batch!r}")
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise ValueError(f"methods: must be a non-empty list from {', '.join(METHODS)}, got {methods!r}")
    methods = [m for m in METHODS if m in methods]
    if isinstance(schedules, Schedule):
        schedules = [schedules]
    schedules = list(schedules) or [all_steps()]
    if not all(isinstance(s, Schedule) for s in schedules):
        raise ValueError("schedules: must be kernelfield Schedules (see kernelfield.schedules)")
    labels = [s.label for s in schedules]
    if len(set(labels)) != len(labels):
        raise ValueError(f"schedules: labels must be distinct, got {labels}")
    arch_list = [architecture(a, T) for a in archs]
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
    solve_kwargs = dict(solve_kwargs or {})
    draw = _pool_source(task, T, dict(task_kwargs or {}))

    P_max = P_list[-1]
    shape = (len(methods), len(arch_list), len(schedules), len(P_list), repeats)
    full = lambda *extra: np.full(shape + extra, np.nan)  # noqa: E731
    err = {f"{q}_{s}": full() for s in SETS for q in ("mse", "nmse", "mse_sem", "nmse_sem", "sign_error")}
    step = {f"step_{q}_{s}": full(T) for s in ("unsupervised", "heldout") for q in ("mse", "nmse")}
    pred_train, pred_test, seconds = full(P_max, T), full(P_test, T), full()
    conv, resid = np.full(shape[1:], np.nan), np.full(shape[1:], np.nan)
    ess, accept = np.full(shape[1:], np.nan), np.full(shape[1:], np.nan)
    pools, sup_masks = [], np.zeros((len(schedules), repeats, P_max, T), dtype=np.int8)
    classification = False

    jobs = [(r, s, p, a) for r in range(repeats) for s in range(len(schedules)) for p in range(len(P_list))
            for a in range(len(arch_list))]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task("generalisation", total=len(jobs))
        for r in range(repeats):
            pool = draw(P_max + P_test, seed + r)
            pools.append(pool)
            classification = classification or pool.classification
            test_inputs, test_truth = pool.inputs[P_max:], pool.truth[P_max:]
            for s, sched in enumerate(schedules):
                mask = sched.mask(P_max, T) & ~np.isnan(pool.targets[:P_max])
                sup_masks[s, r] = mask
                for p, P_ in enumerate(P_list):
                    if not mask[:P_].any():
                        raise ValueError(f"schedules: {sched.label} leaves no supervised (a, t) among the first "
                                         f"P = {P_} training sequences; supervise more or raise P")
                    targets = np.where(mask[:P_], pool.targets[:P_], np.nan)
                    train_task = Task(pool.inputs[:P_], targets)
                    truth_train = pool.truth[:P_]
                    for a, arch in enumerate(arch_list):
                        bar.update(job, description=f"{arch.name} · {sched.label} · P={P_} · repeat {r}")
                        for mi, method in enumerate(methods):
                            if method in network and P_ not in network_P[method]:
                                continue
                            t0 = time.perf_counter()
                            mean, sem = _run(method, arch, train_task, test_inputs, prior, phi, kappa, solve_kwargs,
                                             network.get(method), heldout_batch, seed + r)
                            if method == "theory":
                                mean, (conv[a, s, p, r], resid[a, s, p, r]) = mean
                            if method == "sampled":
                                mean, (ess[a, s, p, r], accept[a, s, p, r]) = mean
                                if ess[a, s, p, r] < MIN_ESS:
                                    warnings.warn(
                                        f"sampled: effective sample size {ess[a, s, p, r]:.0f} < {MIN_ESS} for "
                                        f"{arch.name}, {sched.label}, P = {P_}, repeat {r}: the sampled errors and "
                                        "their error bars are unreliable; raise num_samples / num_warmup",
                                        stacklevel=2)
                            seconds[mi, a, s, p, r] = time.perf_counter() - t0
                            idx = (mi, a, s, p, r)
                            pred_train[idx][:P_] = mean[:P_]
                            pred_test[idx] = mean[P_:]
                            sem_train = None if sem is None else sem[:P_]
                            sem_test = None if sem is None else sem[P_:]
                            results = {
                                "unsupervised": evaluate(mean[:P_], truth_train, ~mask[:P_], sem_train, classification),
                                "supervised": evaluate(mean[:P_], truth_train, mask[:P_], sem_train, classification),
                                "heldout": evaluate(mean[P_:], test_truth, np.ones_like(test_truth, bool), sem_test,
                                                    classification),
                            }
                            for set_name, res in results.items():
                                for q in ("mse", "nmse", "mse_sem", "nmse_sem", "sign_error"):
                                    err[f"{q}_{set_name}"][idx] = res[q]
                                if set_name != "supervised":
                                    step[f"step_mse_{set_name}"][idx] = res["step_mse"]
                                    step[f"step_nmse_{set_name}"][idx] = res["step_nmse"]
                        bar.advance(job)

    base = ("predictor", "arch", "schedule", "P", "repeat")
    data_vars = {}
    for key, values in err.items():
        if key.startswith("sign_error") and not classification:
            continue
        data_vars[key] = (base, values)
    for key, values in step.items():
        data_vars[key] = (base + ("t",), values)
    data_vars.update(
        prediction_train=(base + ("a_train", "t"), pred_train, {"description": "posterior-mean prediction, training rows"}),
        prediction_heldout=(base + ("a_test", "t"), pred_test, {"description": "posterior-mean prediction, held-out rows"}),
        inputs=(("repeat", "a_pool", "t", "d"), np.stack([p.inputs for p in pools])),
        truth=(("repeat", "a_pool", "t"), np.stack([p.truth for p in pools]), {"description": "noise-free target"}),
        targets=(("repeat", "a_pool", "t"), np.stack([p.targets for p in pools]),
                 {"description": "generator targets before the schedule (NaN = none)"}),
        supervised=(("schedule", "repeat", "a_train", "t"), sup_masks, {"description": "1 = supervised"}),
        sampled_ess=(base[1:], ess, {"description": "minimum effective sample size of the HMC run"}),
        sampled_acceptance=(base[1:], accept),
        theory_converged=(base[1:], conv),
        theory_residual=(base[1:], resid),
        seconds=(base, seconds),
    )
    coords = {
        "predictor": methods, "arch": names, "schedule": labels, "P": P_list, "repeat": np.arange(repeats),
        "t": np.arange(T), "a_train": np.arange(P_max), "a_test": np.arange(P_test),
        "a_pool": np.arange(P_max + P_test), "d": np.arange(pools[0].D),
        "supervised_fraction": ("schedule", [s.fraction(T) for s in schedules]),
    }
    config = {
        "task": task if isinstance(task, str) else getattr(task, "__name__", type(task).__name__),
        "task_kwargs": dict(task_kwargs or {}), "T": T, "P": P_list, "P_test": P_test, "repeats": repeats,
        "seed": seed, "architectures": [a.to_dict() for a in arch_list], "schedules": labels,
        "prior": prior.to_dict(), "phi": get_nonlinearity(phi).name, "kappa": float(kappa), "methods": methods,
        "solve": solve_kwargs, "heldout_batch": heldout_batch,
        "sampling": {**network["sampled"], "P": network_P["sampled"]} if "sampled" in methods else None,
        "langevin": {**network["langevin"], "P": network_P["langevin"]} if "langevin" in methods else None,
    }
    attrs = provenance("generalization", json.dumps(config, default=str))
    attrs.update(task=config["task"], classification=int(classification), seconds=time.perf_counter() - started)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _run(method, arch, train_task, test_inputs, prior, phi, kappa, solve_kwargs, network_kwargs, batch, seed):
    """Predictions ``(P + P_test, T)`` and per-entry standard errors (or ``None``) of one method;
    for ``theory`` the mean comes with ``(converged, residual)`` of the (last) solve."""
    if method == "theory":
        status = {}

        def theory_rows(task):
            sol = solve(arch, task, prior=prior, phi=phi, kappa=kappa, **solve_kwargs)
            status["converged"] = min(status.get("converged", True), bool(sol.converged))
            status["residual"] = max(status.get("residual", 0.0), float(sol.residual))
            return sol.predict().mean

        mean = _in_batches(theory_rows, train_task, test_inputs, batch)
        return (mean, (float(status["converged"]), status["residual"])), None
    if method == "lazy":
        def lazy_rows(task):
            return predictive(make_problem(arch, task, prior, kappa), prior_kernel(arch, task, prior, phi)).mean

        return _in_batches(lazy_rows, train_task, test_inputs, batch), None
    task = train_task.with_sequences(test_inputs)  # networks: no kernel, so no batching needed
    kwargs = {"seed": seed, **network_kwargs}
    if method == "sampled":
        s = sample(arch, task, prior=prior, phi=phi, kappa=kappa, **kwargs)
        sem = np.sqrt(np.asarray(s.f_var) / max(float(s.ess), 1.0))
        return (np.asarray(s.f_mean), (float(s.ess), float(s.acceptance_rate))), sem
    run = train(arch, task, prior=prior, phi=phi, kappa=kappa, **kwargs)
    return np.asarray(run.f_mean), np.asarray(run.f_sem)
