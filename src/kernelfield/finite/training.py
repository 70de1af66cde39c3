"""Langevin training: gradient descent with weight decay and gradient noise at the same
temperature, whose stationary distribution is the posterior of THEORY.md §2.

The network is the width-``N`` network of :mod:`kernelfield.finite.networks` in the muP conventions
(readout ``v·phi(h)/N``), trained on the *standardised* weights ``z`` (every entry ``N(0, 1)``
under the prior, natural units ``W = g/√N z_W`` etc.). The posterior is

    p(z | data) ∝ exp(-U(z)),   U(z) = |z|²/2 + (N / 2κ) Σ_{(a,t) ∈ S} (f_a(t) - y_a(t))²

(:func:`kernelfield.finite.networks.log_posterior` is ``-U``): the squared loss at temperature
``κ/N`` with weight decay equal to the prior precision (in ``z`` coordinates a decay of 1).
The update is the unadjusted Langevin algorithm (Euler–Maruyama) with step size ``η``:

    z ← z - η ∇U(z) + √(2η) ξ,   ξ ~ N(0, I)

built as an optax gradient transformation: the gradient of the data term,
``optax.add_decayed_weights(1.0)`` (the prior), Gaussian gradient noise of standard deviation
``√(2/η)`` and ``optax.scale(-η)`` — i.e. plain SGD with weight decay and noise. (Adaptive
optimisers such as Adam do not sample the posterior; plain SGD does, up to an ``O(η)``
discretisation bias.)

The step size must resolve the stiffest direction of ``U``: with ``λ_max`` the largest
eigenvalue of its Hessian, the stationary variance along it is biased by ``ηλ_max/2``
relative. ``step_size="auto"`` measures ``λ_max`` at the initial weights (the data term's
Gauss–Newton matrix ``(N/κ) JᵀJ``, whose nonzero eigenvalues are those of ``(N/κ) J Jᵀ`` on
``S``) and uses ``η = safety / (1 + λ_max)``.

``num_networks`` independent networks (each from its own prior draw and noise) run together
with ``jax.vmap`` inside jitted ``lax.scan`` chunks; after ``burn_in`` steps each network
accumulates its outputs and empirical kernel every ``record_every`` steps. Their time
averages estimate the posterior means; the spread across the independent networks gives the
error bars.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import networks
from ..model import Model, ModelResult, as_model
from ..nonlinearities import Nonlinearity
from ..progress import ProgressArg, ProgressCallback, ProgressEvent, reporter
from ..spec import Architecture, Prior, Task
from ..symmetry import align_to_first, parity_flip
from ..theory.predict import Prediction
from ..validation import nonnegative_int, positive_int, real_in

__all__ = ["train", "Trained", "langevin_optimizer", "gaussian_noise"]

_MAX_CHUNKS = 50  # progress granularity


class _NoiseState(NamedTuple):
    key: jax.Array


def gaussian_noise(std: float, key) -> optax.GradientTransformation:
    """Add ``std · N(0, 1)`` to every entry of the updates; the key lives in the optimiser state."""

    def init(params):
        del params
        return _NoiseState(key=jnp.asarray(key))

    def update(updates, state, params=None):
        del params
        key, sub = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sub, len(leaves))
        # float32 draws (cast up): half the cost of float64 ones, which dominate a step on CPU
        noisy = [u + std * jax.random.normal(k, u.shape, jnp.float32).astype(u.dtype) for u, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, noisy), _NoiseState(key=key)

    return optax.GradientTransformation(init, update)


def langevin_optimizer(step_size: float, key, weight_decay: float = 1.0) -> optax.GradientTransformation:
    """Unadjusted Langevin dynamics as an optax optimiser fed with the gradient of the data term:
    ``z ← z - η (∇E + weight_decay·z) + √(2η) ξ``. With ``weight_decay = 1`` (the prior
    precision of the standardised weights) its stationary distribution is ``∝ exp(-E - |z|²/2)``."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        gaussian_noise(math.sqrt(2.0 / step_size), key),
        optax.scale(-step_size),
    )


@dataclass(frozen=True, eq=False)
class Trained(ModelResult):
    """Result of :func:`train` on ``model``.

    f_networks: ``(num_networks, P, T)`` time average of each network's outputs after burn-in;
    f_mean: their mean (the posterior mean estimate); f_sem: ``(P, T)`` its standard error
    (spread across networks / √num_networks); f_var: ``(P, T)`` posterior variance of the outputs
    (pooled over networks and time). C_networks: ``(num_networks, n, n)`` time-averaged empirical
    kernels ``Φᵀ Φ / N`` (time-major ``t·P + a``); C_centred: the mean kernel of the centred
    features (mean over neurons removed, aligned like C_mean; for non-odd ``phi`` such as ReLU); C_mean: their mean after aligning each network
    to network 0 under ``W -> -W`` (as :class:`kernelfield.Samples`; also as ``C``); C_sem: its standard error.
    loss: ``(num_chunks, num_networks)`` mean squared error on the supervised set at the end of
    each chunk; step: the step count at those points. params: final standardised weights of
    every network (leading axis ``num_networks``). step_size: ``η``; lambda_max: the estimated
    largest curvature of ``U`` (``NaN`` when ``step_size`` was given); num_records: samples per
    network in the averages; seconds: wall time, compilation included.
    """

    model: Model
    N: int
    seed: int
    num_networks: int
    num_steps: int
    burn_in: int
    record_every: int
    step_size: float
    lambda_max: float
    f_networks: np.ndarray
    f_mean: np.ndarray
    f_sem: np.ndarray
    f_var: np.ndarray
    C_networks: np.ndarray
    C_centred: np.ndarray
    C_mean: np.ndarray
    C_sem: np.ndarray
    loss: np.ndarray
    step: np.ndarray
    params: dict
    num_records: int
    seconds: float

    C = property(lambda self: self.C_mean, doc="posterior mean kernel estimate (``C_mean``)")

    def predict(self) -> Prediction:
        """Posterior predictive estimated by the trained networks (mean and variance of ``f``)."""
        return Prediction(mean=self.f_mean, var=self.f_var, N=self.N)


@dataclass(frozen=True)
class _Dynamics:
    """Static (hashable) part of the dynamics; data and ``kappa`` travel as arrays."""

    arch: Architecture
    prior: Prior
    phi: Nonlinearity

    def data_term(self, z, inputs, targets, kappa):
        """``E(z) = (N / 2κ) Σ_S (f - y)²`` and the outputs ``f`` (auxiliary)."""
        N, D = z["U"].shape[-2:]
        f = networks.outputs(networks.scale(z, self.prior, N, D), self.arch, inputs, self.phi)
        supervised = ~jnp.isnan(targets)
        residual = jnp.where(supervised, f - jnp.where(supervised, targets, 0.0), 0.0)
        return N / (2.0 * kappa) * jnp.sum(residual**2), f


@partial(jax.jit, static_argnames=("dynamics",))
def _curvature(z, inputs, targets, kappa, dynamics: _Dynamics):
    """Largest eigenvalue of the Gauss–Newton matrix ``(N/κ) JᵀJ`` of the data term at ``z``
    (``J = ∂f_S/∂z``), from the small ``|S| × |S|`` matrix ``(N/κ) J Jᵀ``."""
    N, D = z["U"].shape[-2:]
    supervised = ~jnp.isnan(targets)

    def f_flat(z):
        return networks.outputs(networks.scale(z, dynamics.prior, N, D), dynamics.arch, inputs,
                                dynamics.phi).reshape(-1)

    J = jax.jacrev(f_flat)(z)
    rows = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jax.tree.leaves(J)], axis=1)
    rows = rows * supervised.reshape(-1)[:, None]
    return N / kappa * jnp.linalg.eigvalsh(rows @ rows.T)[-1]


class _RecordSums(NamedTuple):
    """Per-network sums over the recorded steps: outputs ``f`` and their square, kernel ``C``,
    its square ``C2``, the centred kernel, and the number of records ``count``."""

    f: jax.Array
    f2: jax.Array
    C: jax.Array
    C2: jax.Array
    C_centred: jax.Array
    count: jax.Array


class _LangevinCarry(NamedTuple):
    """The carry of the Langevin scan: standardised weights, optimiser state, record sums."""

    z: dict
    opt_state: optax.OptState
    sums: _RecordSums


@partial(jax.jit, static_argnames=("dynamics", "length", "record_every", "step_size"))
def _chunk(carry, start, burn_in, inputs, targets, kappa, dynamics: _Dynamics, length: int, record_every: int,
           step_size: float):
    """``length`` Langevin steps of every network (vmapped), accumulating outputs and kernels of
    the steps ``>= burn_in`` that are multiples of ``record_every``."""
    grad = jax.grad(dynamics.data_term, has_aux=True)

    def one_network(z, opt_state, acc):
        def step(state, i):
            z, opt_state, acc = state
            g, _ = grad(z, inputs, targets, kappa)
            updates, opt_state = opt.update(g, opt_state, z)
            z = optax.apply_updates(z, updates)
            record = (i >= burn_in) & ((i - burn_in) % record_every == 0)
            N, D = z["U"].shape[-2:]

            def add(acc):
                params = networks.scale(z, dynamics.prior, N, D)
                phi_h = networks.features(params, dynamics.arch, inputs, dynamics.phi)
                f = networks.readout(params, dynamics.arch, phi_h)
                C = networks.empirical_kernel(phi_h)
                C_centred = networks.empirical_kernel(phi_h - jnp.mean(phi_h, axis=-1, keepdims=True))
                return _RecordSums(f=acc.f + f, f2=acc.f2 + f**2, C=acc.C + C, C2=acc.C2 + C**2,
                                   C_centred=acc.C_centred + C_centred, count=acc.count + 1)

            acc = jax.lax.cond(record, add, lambda acc: acc, acc)
            return _LangevinCarry(z, opt_state, acc), None

        (z, opt_state, acc), _ = jax.lax.scan(step, _LangevinCarry(z, opt_state, acc), start + jnp.arange(length))
        _, f = dynamics.data_term(z, inputs, targets, kappa)
        supervised = ~jnp.isnan(targets)
        mse = jnp.sum(jnp.where(supervised, f - jnp.where(supervised, targets, 0.0), 0.0) ** 2) / jnp.sum(supervised)
        return z, opt_state, acc, mse

    opt = langevin_optimizer(step_size, jax.random.PRNGKey(0))  # the key part of the state is carried
    z, opt_state, acc, mse = jax.vmap(one_network)(carry.z, carry.opt_state, carry.sums)
    return _LangevinCarry(z, opt_state, acc), mse


class _TrainingSettings(NamedTuple):
    """The validated settings of :func:`train` (``burn_in`` in steps; ``step_size`` a number or
    ``"auto"``) and the chunking into ``num_chunks`` scans of ``length`` steps."""

    N: int
    num_networks: int
    num_steps: int
    burn_in: int
    record_every: int
    step_size: float | str
    safety: float
    seed: int
    length: int
    num_chunks: int


def _plan_training(N, num_networks, num_steps, burn_in, record_every, step_size, safety, seed) -> _TrainingSettings:
    """Validate the training settings and split the run into chunks."""
    num_steps = positive_int("num_steps", num_steps)
    if isinstance(burn_in, float):
        if not 0 <= burn_in < 1:
            raise ValueError(f"burn_in: a fraction must lie in [0, 1), got {burn_in!r}")
        burn_in = int(burn_in * num_steps)
    burn_in = nonnegative_int("burn_in", burn_in)
    if burn_in >= num_steps:
        raise ValueError(f"burn_in: must be < num_steps = {num_steps}, got {burn_in}")
    if isinstance(step_size, str):
        if step_size != "auto":
            raise ValueError(f"step_size: must be a number > 0 or 'auto', got {step_size!r}")
    else:
        step_size = real_in("step_size", step_size, 0.0, 2.0, open_low=True, open_high=True)
    length = math.ceil(num_steps / min(num_steps, _MAX_CHUNKS))
    return _TrainingSettings(
        N=positive_int("N", N), num_networks=positive_int("num_networks", num_networks), num_steps=num_steps,
        burn_in=burn_in, record_every=positive_int("record_every", record_every), step_size=step_size,
        safety=real_in("safety", safety, 0.0, 2.0, open_low=True, open_high=True),
        seed=nonnegative_int("seed", seed), length=length, num_chunks=math.ceil(num_steps / length),
    )


def train(
    arch: Architecture | Model,
    task: Task | None = None,
    N: int = 128,
    prior: Prior | None = None,
    phi=None,
    kappa: float | None = None,
    num_networks: int = 8,
    num_steps: int = 20000,
    burn_in: int | float = 0.25,
    record_every: int = 10,
    step_size="auto",
    safety: float = 0.2,
    seed: int = 0,
    progress: ProgressArg = True,
) -> Trained:
    """Train ``num_networks`` independent width-``N`` networks by Langevin dynamics (module
    docstring) for ``num_steps`` steps and average their outputs and kernels after ``burn_in``
    steps (an int, or a fraction of ``num_steps``), recording every ``record_every`` steps. The
    model is a :class:`~kernelfield.Model` as first argument, or its parts.

    step_size: ``η`` in standardised coordinates (the prior's relaxation time is 1), or
    ``"auto"``: ``safety / (1 + λ_max)`` with ``λ_max`` the largest curvature of the data term
    at the first network's initial weights (with ``safety = 0.2`` the stiffest direction's
    variance is inflated by about 10%, the prior-dominated bulk by ``η/2``, far less; means are
    affected less than variances). Continuous training time is ``num_steps · η``: it must
    cover a few relaxation times (units of 1) for burn-in and many for averaging. progress:
    ``True`` draws a rich progress bar, ``False`` is silent, a callable receives
    :class:`~kernelfield.progress.ProgressEvent` s (``num_steps`` units, the training loss as
    ``info``). Every registered ``phi`` works. Same ``seed`` and arguments give identical
    results; a diverging run (non-finite weights) raises ``FloatingPointError`` naming the step size.
    """
    started = time.perf_counter()
    model = as_model(arch, task, prior, phi, kappa)
    settings = _plan_training(N, num_networks, num_steps, burn_in, record_every, step_size, safety, seed)
    with reporter(progress) as report:
        carry, step_size, lambda_max, losses, steps = _run_langevin(model, settings, report)
    return _assemble_trained(model, settings, carry, step_size, lambda_max, losses, steps,
                             time.perf_counter() - started)


def _run_langevin(model: Model, s: _TrainingSettings, report: ProgressCallback):
    """Initial weights, the step size, then every chunk of Langevin steps; returns the final
    carry ``(z, optimiser states, sums)``, ``η``, ``λ_max`` and the loss after each chunk."""
    dynamics = _Dynamics(model.arch, model.prior, model.nonlinearity)
    task, kappa = model.task, model.kappa
    T, P, D, n = task.T, task.P, task.D, task.T * task.P
    inputs, targets = jnp.asarray(task.inputs), jnp.asarray(task.targets)
    key_init, key_noise = jax.random.split(jax.random.PRNGKey(s.seed))
    z = jax.vmap(lambda k: networks.init_standardised(k, model.arch, s.N, D))(jax.random.split(key_init, s.num_networks))
    step_size, lambda_max = s.step_size, float("nan")
    if step_size == "auto":
        lambda_max = float(_curvature(jax.tree.map(lambda x: x[0], z), inputs, targets, kappa, dynamics=dynamics))
        step_size = s.safety / (1.0 + lambda_max)
    step_size = float(step_size)
    opt_states = jax.vmap(lambda k, z: langevin_optimizer(step_size, k).init(z))(
        jax.random.split(key_noise, s.num_networks), z
    )
    zeros = lambda *shape: jnp.zeros((s.num_networks, *shape))  # noqa: E731
    acc = _RecordSums(f=zeros(P, T), f2=zeros(P, T), C=zeros(n, n), C2=zeros(n, n), C_centred=zeros(n, n),
                      count=jnp.zeros(s.num_networks, dtype=jnp.int32))
    carry = _LangevinCarry(z, opt_states, acc)
    run = partial(_chunk, dynamics=dynamics, length=s.length, record_every=s.record_every, step_size=step_size)
    label = f"Langevin N={s.N} {model.arch.name} ×{s.num_networks}"
    losses, steps = [], []
    for c in range(s.num_chunks):
        carry, mse = run(carry, c * s.length, s.burn_in, inputs, targets, kappa)
        mse = np.asarray(mse)
        done = min((c + 1) * s.length, s.num_steps)
        if not np.all(np.isfinite(mse)):
            raise FloatingPointError(
                f"step_size: Langevin training diverged at step {done} with step size {step_size:.3g}; "
                "use a smaller step_size (or safety)"
            )
        losses.append(mse)
        steps.append(done)
        report(ProgressEvent(label, done, s.num_steps, {"train MSE": float(np.mean(mse))}))
    return carry, step_size, lambda_max, losses, steps


def _assemble_trained(model: Model, s: _TrainingSettings, carry: _LangevinCarry, step_size: float,
                      lambda_max: float, losses: list, steps: list, seconds: float) -> Trained:
    """Time averages per network, their network-aligned means and standard errors (see :class:`Trained`)."""
    z, acc = carry.z, jax.tree.map(np.asarray, carry.sums)
    count = acc.count.astype(np.float64)
    if np.any(count < 1):
        raise ValueError("record_every: no step was recorded after burn_in; lower burn_in or record_every")
    f_networks = acc.f / count[:, None, None]
    C_networks = acc.C / count[:, None, None]
    T, P = model.task.T, model.task.P
    aligned, flipped = align_to_first(C_networks, T, P)
    centred = acc.C_centred / count[:, None, None]
    C_centred = np.where(flipped[:, None, None], parity_flip(centred, T, P), centred).mean(axis=0)
    sem = lambda x: (x.std(axis=0, ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.full(x.shape[1:], np.nan))  # noqa: E731
    f_mean = f_networks.mean(axis=0)
    f_var = np.maximum(acc.f2.sum(axis=0) / count.sum() - f_mean**2, 0.0)
    # the last chunk may overrun num_steps by < length steps: those steps are simulated too and
    # their records (if past burn_in) counted; the reported num_steps is what ran
    return Trained(
        model=model, N=s.N, seed=s.seed, num_networks=s.num_networks, num_steps=s.num_chunks * s.length,
        burn_in=s.burn_in, record_every=s.record_every, step_size=step_size, lambda_max=lambda_max,
        f_networks=f_networks, f_mean=f_mean, f_sem=sem(f_networks), f_var=f_var, C_networks=C_networks,
        C_mean=aligned.mean(axis=0), C_centred=C_centred, C_sem=sem(aligned), loss=np.stack(losses), step=np.asarray(steps),
        params=jax.tree.map(np.asarray, z), num_records=int(count.min()), seconds=seconds,
    )
