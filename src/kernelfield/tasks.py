"""Task library: seeded generators returning a :class:`LabelledTask` — a :class:`kernelfield.Task`
plus its full ground truth (THEORY.md §1, §4).

Endpoint ("pattern") tasks, input at ``t = 0`` and target at ``t = T-1``:

* :func:`endpoint_patterns` — random Gaussian patterns, balanced ``±`` labels;
* :func:`digits` — the 8×8 handwritten digits bundled with scikit-learn (two or more classes,
  pixels randomly projected to ``D`` dimensions), ``±1`` labels.

Sequential tasks, inputs at many steps and targets at many steps:

* :func:`integration` — running sum of the first input coordinate;
* :func:`delayed_copy` — ``y(t) = x(t - delay)[0]``;
* :func:`oscillator` — continuation of sine / damped-oscillator signals from a cue window;
* :func:`sequential_digits` — digit images read row by row, the label at the end or at every step;
* :func:`sunspots` — yearly sunspot numbers bundled with statsmodels, one-step-ahead forecasting;
* :func:`from_arrays` / :func:`from_file` — your own arrays.

Every generator returns the targets *wherever the task defines one* (plus optional label noise)
and ``truth``, the noise-free target (``NaN`` where the task defines none, e.g. before the
delay of a copy task). Which of those targets are shown to the network is the job of a
supervision schedule (:mod:`kernelfield.schedules`); ``integration`` keeps its own
``supervise_every`` argument for convenience. Every generator is deterministic given ``seed``
(``numpy.random.default_rng(seed)``) and validates its arguments, raising ``ValueError``
messages that start with the argument name. Real data are read from files shipped inside the
installed packages: nothing is downloaded. :data:`TASKS` maps the names used in configuration
files to the generators; every generator takes ``P``, ``T`` and ``seed``.

Any ``P`` works with any ``D``: with more sequences than input dimensions (or repeated or
linearly dependent inputs) the input kernel ``sigma_u² x·xᵀ/D`` is singular and every solver
(exact, particles, Gaussian closure) and the lazy kernel take kernels on its support
(THEORY.md §3, "Rank-deficient prior covariances"). The scalar signals (oscillator, sunspots)
are given as delay embeddings of ``D`` past values.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .spec import Task
from .validation import nonnegative_int, nonnegative_real, positive_int, real_in
from .validation import seed as check_seed

__all__ = [
    "LabelledTask",
    "endpoint_patterns",
    "integration",
    "delayed_copy",
    "oscillator",
    "digits",
    "sequential_digits",
    "sunspots",
    "from_arrays",
    "from_file",
    "load_digits",
    "load_sunspots",
    "TASKS",
]


@dataclass(frozen=True, eq=False)
class LabelledTask(Task):
    """A :class:`~kernelfield.Task` with its ground truth.

    truth: ``(P, T)`` noise-free target at every ``(a, t)`` where the task defines one, ``NaN``
    elsewhere; every supervised entry of ``targets`` must lie where ``truth`` is defined.
    classification: the targets are ``±scale`` labels (errors are then also reported as the
    fraction of wrong signs). name: the generator that made it.
    """

    truth: np.ndarray = None
    classification: bool = False
    name: str = "custom"

    def __post_init__(self):
        super().__post_init__()
        if self.truth is None:
            truth = np.array(self.targets)
        else:
            truth = np.array(self.truth, dtype=np.float64)
        if truth.shape != self.targets.shape:
            raise ValueError(f"truth: expected shape (P, T) = {self.targets.shape}, got {truth.shape}")
        if np.any(np.isinf(truth)):
            raise ValueError("truth: contains inf; use NaN where the task defines no target")
        if np.any(~np.isnan(self.targets) & np.isnan(truth)):
            raise ValueError("targets: supervised entries where truth is NaN (undefined); truth must be "
                             "defined wherever a target is given")
        truth.setflags(write=False)
        object.__setattr__(self, "truth", truth)
        object.__setattr__(self, "classification", bool(self.classification))

    @property
    def defined(self) -> np.ndarray:
        """``(P, T)`` bool: where the task defines a target (``truth`` not ``NaN``)."""
        return ~np.isnan(self.truth)

    def rows(self, index) -> "LabelledTask":
        """The sequences ``index`` (an int array, slice or bool mask) as a new task; every row
        keeps its targets, so at least one of the chosen rows must be supervised."""
        return LabelledTask(self.inputs[index], self.targets[index], truth=self.truth[index],
                            classification=self.classification, name=self.name)

    def with_targets(self, targets) -> "LabelledTask":
        """The same inputs and truth with other ``targets`` (``NaN`` = unsupervised)."""
        return LabelledTask(self.inputs, targets, truth=self.truth, classification=self.classification,
                            name=self.name)


# ---------------------------------------------------------------------------------------------
# argument checks


def _classes(classes, positive) -> tuple[tuple[int, ...], tuple[int, ...]]:
    try:
        classes = tuple(int(c) for c in classes)
    except (TypeError, ValueError):
        raise ValueError(f"classes: must be a list of digits 0-9, got {classes!r}") from None
    if len(classes) < 2 or len(set(classes)) != len(classes) or any(not 0 <= c <= 9 for c in classes):
        raise ValueError(f"classes: must be at least two distinct digits 0-9, got {list(classes)}")
    if positive is None:
        positive = classes[: len(classes) // 2]
    try:
        positive = tuple(int(c) for c in positive)
    except (TypeError, ValueError):
        raise ValueError(f"positive: must be a list of digits taken from classes, got {positive!r}") from None
    if not positive or not set(positive) < set(classes):
        raise ValueError(f"positive: must be a non-empty proper subset of classes {list(classes)}, got {list(positive)}")
    return classes, positive


# ---------------------------------------------------------------------------------------------
# synthetic tasks


def endpoint_patterns(P: int, T: int, D: int, target_scale: float = 1.0, seed: int = 0) -> LabelledTask:
    """``P`` random patterns presented at ``t = 0`` and read out at ``t = T-1``.

    inputs: ``x_a(0) ~ N(0, I_D)`` i.i.d., ``x_a(t) = 0`` for ``t >= 1``.
    targets: ``y_a(T-1) = ±target_scale`` with balanced signs (``+`` for ``ceil(P/2)``
    patterns, ``-`` for the rest, assigned in a seeded random order); every other step is
    ``NaN`` (unsupervised). ``target_scale`` sets the learning signal (``0`` = lazy limit).
    A classification task; truth = targets.
    """
    P, T, D = positive_int("P", P), positive_int("T", T), positive_int("D", D)
    target_scale = nonnegative_real("target_scale", target_scale)
    rng = np.random.default_rng(check_seed(seed))
    inputs = np.zeros((P, T, D))
    inputs[:, 0, :] = rng.standard_normal((P, D))
    signs = rng.permutation(np.where(np.arange(P) % 2 == 0, 1.0, -1.0))
    targets = np.full((P, T), np.nan)
    targets[:, T - 1] = target_scale * signs
    return LabelledTask(inputs, targets, truth=targets, classification=True, name="endpoint_patterns")


def integration(P: int, T: int, D: int = 1, supervise_every: int = 2, seed: int = 0, noise: float = 0.0) -> LabelledTask:
    """Running-sum (integration) task on ``P`` sequences of length ``T``.

    inputs: ``x_a(t) ~ N(0, I_D)`` i.i.d. at every step.
    truth: ``y_a(t) = (sum_{s <= t} x_a(s)[0]) / sqrt(t + 1)`` (unit variance at every step) at
    every step. targets: the truth plus ``noise · N(0, 1)`` label noise, given on every
    ``supervise_every``-th step — the steps ``t = supervise_every - 1, 2·supervise_every - 1, ...``
    (so ``supervise_every = 1`` supervises every step and ``supervise_every = 2`` the steps
    ``1, 3, 5, ...``); all other steps are ``NaN`` (unsupervised), which is where the theory
    predicts interpolation. ``supervise_every`` must be ``<= T`` so that at least one step is
    supervised. ``D < P`` is fine for every solver (kernels on the support of the prior covariance).
    """
    P, T, D = positive_int("P", P), positive_int("T", T), positive_int("D", D)
    supervise_every = positive_int("supervise_every", supervise_every)
    if supervise_every > T:
        raise ValueError(
            f"supervise_every: must be <= T = {T} so that at least one step is supervised, got {supervise_every}"
        )
    noise = nonnegative_real("noise", noise)
    rng = np.random.default_rng(check_seed(seed))
    inputs = rng.standard_normal((P, T, D))
    truth = np.cumsum(inputs[:, :, 0], axis=1) / np.sqrt(np.arange(1, T + 1))
    running = truth + noise * rng.standard_normal((P, T))
    targets = np.full((P, T), np.nan)
    steps = np.arange(supervise_every - 1, T, supervise_every)
    targets[:, steps] = running[:, steps]
    return LabelledTask(inputs, targets, truth=truth, name="integration")


def delayed_copy(P: int, T: int, D: int = 1, delay: int = 1, seed: int = 0, noise: float = 0.0) -> LabelledTask:
    """Delayed copy: reproduce the first input coordinate ``delay`` steps later.

    inputs: ``x_a(t) ~ N(0, I_D)`` i.i.d. at every step. truth: ``y_a(t) = x_a(t - delay)[0]``
    for ``t >= delay``, ``NaN`` (undefined) before. targets: truth plus ``noise · N(0, 1)``
    wherever defined. ``delay`` must be ``< T``; ``delay = 0`` is the identity map.
    """
    P, T, D = positive_int("P", P), positive_int("T", T), positive_int("D", D)
    delay = nonnegative_int("delay", delay)
    if delay >= T:
        raise ValueError(f"delay: must be < T = {T} so that some step has a target, got {delay}")
    noise = nonnegative_real("noise", noise)
    rng = np.random.default_rng(check_seed(seed))
    inputs = rng.standard_normal((P, T, D))
    truth = np.full((P, T), np.nan)
    truth[:, delay:] = inputs[:, : T - delay, 0]
    targets = truth + noise * rng.standard_normal((P, T))
    return LabelledTask(inputs, targets, truth=truth, name="delayed_copy")


def _delay_embedding(signal: np.ndarray, start: int, T: int, D: int) -> np.ndarray:
    """``(P, T, D)`` windows ``x(t) = (s(t), s(t-1), ..., s(t-D+1))`` of rows of ``signal``
    whose column ``start`` is time ``t = 0``."""
    idx = start + np.arange(T)[:, None] - np.arange(D)[None, :]
    return signal[:, idx]


def oscillator(
    P: int,
    T: int,
    D: int = 8,
    frequency: float = 0.6,
    frequency_spread: float = 0.2,
    damping: float = 0.0,
    cue: int = 1,
    input_noise: float = 0.1,
    seed: int = 0,
    noise: float = 0.0,
) -> LabelledTask:
    """Sine (``damping = 0``) or damped-oscillator continuation.

    Signals ``s_a(t) = exp(-damping·t) sin(omega_a t + phase_a)`` with
    ``omega_a = frequency·(1 + frequency_spread·u_a)``, ``u_a ~ U(-1, 1)``, ``phase_a ~ U(0, 2π)``
    (radians per step). inputs: during the first ``cue`` steps the delay embedding
    ``x_a(t) = (s_a(t), s_a(t-1), ..., s_a(t-D+1)) + input_noise · N(0, I_D)`` (the recent past),
    zero afterwards. truth: the next value ``y_a(t) = s_a(t+1)`` at every step, so after the cue
    the network must continue the oscillation on its own. targets: truth plus
    ``noise · N(0, 1)``. ``input_noise > 0`` keeps the ``t = 0`` input kernel non-singular
    (noise-free windows of a few frequencies span only a few dimensions), which only the particle
    solver and the Gaussian closure need.
    """
    P, T, D = positive_int("P", P), positive_int("T", T), positive_int("D", D)
    frequency = real_in("frequency", frequency, 0.0, np.pi, open_low=True)
    frequency_spread = real_in("frequency_spread", frequency_spread, 0.0, 1.0)
    damping = nonnegative_real("damping", damping)
    cue = positive_int("cue", cue)
    if cue > T:
        raise ValueError(f"cue: must be <= T = {T}, got {cue}")
    input_noise = nonnegative_real("input_noise", input_noise)
    noise = nonnegative_real("noise", noise)
    rng = np.random.default_rng(check_seed(seed))
    omega = frequency * (1.0 + frequency_spread * rng.uniform(-1.0, 1.0, P))
    phase = rng.uniform(0.0, 2.0 * np.pi, P)
    times = np.arange(-(D - 1), T + 1)  # history for the embedding, then one step past T-1
    signal = np.exp(-damping * times)[None, :] * np.sin(omega[:, None] * times[None, :] + phase[:, None])
    inputs = np.zeros((P, T, D))
    inputs[:, :cue] = _delay_embedding(signal, D - 1, cue, D) + input_noise * rng.standard_normal((P, cue, D))
    truth = signal[:, D:]  # s(t + 1) for t = 0..T-1
    targets = truth + noise * rng.standard_normal((P, T))
    return LabelledTask(inputs, targets, truth=truth, name="oscillator")


# ---------------------------------------------------------------------------------------------
# real data (shipped inside registry packages; nothing is downloaded)


@lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8×8 handwritten digits bundled with scikit-learn (``sklearn.datasets.load_digits``,
    read from the installed package, no download): images ``(1797, 8, 8)`` with values 0–16 and
    labels ``(1797,)``. Arrays are read-only and cached."""
    from sklearn.datasets import load_digits as _load  # heavy optional dependency: imported on first use

    bunch = _load()
    images, labels = np.array(bunch.images, dtype=np.float64), np.array(bunch.target, dtype=int)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@lru_cache(maxsize=1)
def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Yearly mean sunspot numbers 1700–2008 bundled with statsmodels
    (``statsmodels.datasets.sunspots``, read from the installed package, no download):
    ``(years, activity)``, each ``(309,)``, read-only and cached."""
    from statsmodels.datasets import sunspots as _sunspots  # heavy optional dependency: imported on first use

    data = _sunspots.load_pandas().data
    years = np.array(data["YEAR"], dtype=np.float64)
    activity = np.array(data["SUNACTIVITY"], dtype=np.float64)
    years.setflags(write=False)
    activity.setflags(write=False)
    return years, activity


def _pick_balanced(labels: np.ndarray, classes: Sequence[int], P: int, rng) -> np.ndarray:
    """``P`` distinct indices cycling through ``classes`` in a seeded order (balanced up to one)."""
    order = rng.permutation(np.resize(np.asarray(classes), P))
    pools = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in classes}
    picked = []
    for c in order:
        if not pools[c]:
            raise ValueError(f"P: asks for more images of digit {c} than the {np.sum(labels == c)} available")
        picked.append(pools[c].pop())
    return np.asarray(picked)


def _projection(rng, D: int, width: int) -> np.ndarray:
    return rng.standard_normal((D, width))


def digits(
    P: int,
    T: int,
    D: int = 16,
    classes: Sequence[int] = (0, 1),
    positive: Sequence[int] | None = None,
    target_scale: float = 1.0,
    seed: int = 0,
) -> LabelledTask:
    """Endpoint classification of the scikit-learn 8×8 digits (:func:`load_digits`).

    ``P`` images of the digits in ``classes``, balanced across them (seeded). Pixels are centred
    by the mean image of the whole data set, scaled to unit mean square and projected to ``D``
    dimensions by a seeded Gaussian matrix (``E|x|²/D = 1``); the projection is presented at
    ``t = 0``, zero input afterwards. targets: ``+target_scale`` at ``t = T-1`` for digits in
    ``positive`` (default: the first half of ``classes``), ``-target_scale`` for the others.
    With two classes this is a binary task; with more, a grouping (e.g. even vs odd digits).
    """
    P, T, D = positive_int("P", P), positive_int("T", T), positive_int("D", D)
    classes, positive = _classes(classes, positive)
    target_scale = nonnegative_real("target_scale", target_scale)
    rng = np.random.default_rng(check_seed(seed))
    images, labels = load_digits()
    pixels = images.reshape(len(images), -1)
    centred = pixels - pixels.mean(axis=0)
    centred = centred / np.sqrt(np.mean(np.sum(centred**2, axis=1)))
    picked = _pick_balanced(labels, classes, P, rng)
    inputs = np.zeros((P, T, D))
    inputs[:, 0] = centred[picked] @ _projection(rng, D, pixels.shape[1]).T
    targets = np.full((P, T), np.nan)
    targets[:, T - 1] = np.where(np.isin(labels[picked], positive), target_scale, -target_scale)
    return LabelledTask(inputs, targets, truth=targets, classification=True, name="digits")


def sequential_digits(
    P: int,
    T: int = 8,
    D: int = 16,
    classes: Sequence[int] = (0, 1),
    positive: Sequence[int] | None = None,
    label: str = "end",
    input_noise: float = 0.1,
    target_scale: float = 1.0,
    seed: int = 0,
) -> LabelledTask:
    """The 8×8 digits read row by row: image rows are time steps.

    ``T <= 8``: the 8 rows are split into ``T`` consecutive bands and step ``t`` shows the mean of
    its band (``T = 8``: one row per step). Each step's 8 pixels (centred by the data set's mean,
    unit mean square per row) are projected to ``D`` dimensions by one seeded Gaussian matrix,
    plus ``input_noise · N(0, I_D)`` (the top rows are nearly blank, and 8 pixels span at most 8
    dimensions: the noise keeps the ``t = 0`` input kernel non-singular for ``P <= D``; the solvers
    take singular ones too). targets:
    ``±target_scale`` as in :func:`digits`, at the last step (``label = "end"``) or at every step
    (``label = "every"``, a running classification whose early steps a schedule can leave
    unsupervised).
    """
    P, T, D = positive_int("P", P), positive_int("T", T), positive_int("D", D)
    if T > 8:
        raise ValueError(f"T: the images have 8 rows, so T must be <= 8, got {T}")
    classes, positive = _classes(classes, positive)
    if label not in ("end", "every"):
        raise ValueError(f"label: must be 'end' or 'every', got {label!r}")
    input_noise = nonnegative_real("input_noise", input_noise)
    target_scale = nonnegative_real("target_scale", target_scale)
    rng = np.random.default_rng(check_seed(seed))
    images, labels = load_digits()
    centred = images - images.mean(axis=0)
    centred = centred / np.sqrt(np.mean(np.sum(centred**2, axis=2)))
    picked = _pick_balanced(labels, classes, P, rng)
    bands = np.array_split(np.arange(8), T)
    steps = np.stack([centred[picked][:, band].mean(axis=1) for band in bands], axis=1)  # (P, T, 8)
    inputs = steps @ _projection(rng, D, 8).T + input_noise * rng.standard_normal((P, T, D))
    y = np.where(np.isin(labels[picked], positive), target_scale, -target_scale)
    targets = np.full((P, T), np.nan)
    if label == "end":
        targets[:, T - 1] = y
    else:
        targets[:] = y[:, None]
    return LabelledTask(inputs, targets, truth=targets, classification=True, name="sequential_digits")


def sunspots(P: int, T: int, D: int = 8, horizon: int = 1, input_noise: float = 0.0, seed: int = 0) -> LabelledTask:
    """Forecasting the yearly sunspot numbers (:func:`load_sunspots`, 1700–2008).

    The series is square-root transformed (variance stabilising) and standardised. Sequence
    ``a`` is a window of ``T`` years starting at a seeded random year (distinct starts, sorted by
    start year so the last rows are the most recent windows). inputs: the delay embedding of
    the ``D`` most recent values ``x_a(t) = (z(t), z(t-1), ..., z(t-D+1))`` (plus
    ``input_noise · N(0, I_D)``); truth and targets: ``y_a(t) = z(t + horizon)``, the value
    ``horizon`` years ahead, at every step.
    """
    P, T, D = positive_int("P", P), positive_int("T", T), positive_int("D", D)
    horizon = positive_int("horizon", horizon)
    input_noise = nonnegative_real("input_noise", input_noise)
    rng = np.random.default_rng(check_seed(seed))
    _, activity = load_sunspots()
    z = np.sqrt(activity)
    z = (z - z.mean()) / z.std()
    first, last = D - 1, len(z) - T - horizon  # admissible window starts (inclusive)
    if last < first:
        raise ValueError(f"T: windows of T + D + horizon - 1 = {T + D + horizon - 1} years exceed the {len(z)} in the series")
    if P > last - first + 1:
        raise ValueError(f"P: only {last - first + 1} distinct windows fit for T = {T}, D = {D}, horizon = {horizon}")
    starts = np.sort(rng.choice(np.arange(first, last + 1), size=P, replace=False))
    lags = starts[:, None, None] + np.arange(T)[None, :, None] - np.arange(D)[None, None, :]
    inputs = z[lags] + input_noise * rng.standard_normal((P, T, D))
    truth = z[starts[:, None] + np.arange(T)[None, :] + horizon]
    return LabelledTask(inputs, truth, truth=truth, name="sunspots")


# ---------------------------------------------------------------------------------------------
# your own arrays


def from_arrays(inputs, truth, targets=None, classification: bool = False, name: str = "arrays") -> LabelledTask:
    """A :class:`LabelledTask` from your own arrays: ``inputs`` ``(P, T, D)``, ``truth`` ``(P, T)``
    (``NaN`` where undefined) and optionally noisy ``targets`` (default: the truth)."""
    truth = np.asarray(truth, dtype=np.float64)
    return LabelledTask(inputs, truth if targets is None else targets, truth=truth,
                        classification=classification, name=name)


def from_file(P: int, T: int, path: str, seed: int = 0, shuffle: bool = False) -> LabelledTask:
    """Your own arrays from an ``.npz`` file with ``inputs`` ``(P_file, T, D)``, ``truth``
    ``(P_file, T)`` and optionally ``targets`` and ``classification`` (a 0-d bool): the first
    ``P`` sequences, or ``P`` drawn without replacement when ``shuffle`` (seeded)."""
    P, T = positive_int("P", P), positive_int("T", T)
    try:
        with np.load(Path(path)) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except FileNotFoundError:
        raise ValueError(f"path: no such file {str(path)!r}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"path: cannot read {str(path)!r} as .npz: {e}") from None
    for key in ("inputs", "truth"):
        if key not in arrays:
            raise ValueError(f"path: {str(path)!r} has no array {key!r} (found: {', '.join(arrays) or 'none'})")
    inputs = arrays["inputs"]
    if inputs.ndim != 3 or inputs.shape[1] != T:
        raise ValueError(f"T: the file's inputs have shape {inputs.shape}, expected (P_file, T = {T}, D)")
    if P > inputs.shape[0]:
        raise ValueError(f"P: the file holds {inputs.shape[0]} sequences, fewer than P = {P}")
    rows = np.random.default_rng(check_seed(seed)).permutation(inputs.shape[0])[:P] if shuffle else np.arange(P)
    targets = arrays.get("targets")
    return from_arrays(inputs[rows], arrays["truth"][rows], None if targets is None else targets[rows],
                       classification=bool(arrays.get("classification", False)), name="file")


#: Task generators by name (the ``generator`` key of a configuration file's ``[task]`` table).
#: Every generator takes ``P``, ``T`` and ``seed`` plus its own keyword arguments.
TASKS: dict[str, Callable[..., Task]] = {
    "endpoint_patterns": endpoint_patterns,
    "integration": integration,
    "delayed_copy": delayed_copy,
    "oscillator": oscillator,
    "digits": digits,
    "sequential_digits": sequential_digits,
    "sunspots": sunspots,
    "file": from_file,
}
