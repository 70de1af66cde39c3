"""Langevin training: gradient descent with weight decay and gradient noise at the same
temperature, whose stationary distribution is the posterior of THEORY.md §2.

The network is the width-``N`` network of :mod:`kernelfield.networks` in the muP conventions
(readout ``v·phi(h)/N``), trained on the *standardised* weights ``z`` (every entry ``N(0, 1)``
under the prior, natural units ``W = g/√N z_W`` etc.). The posterior is

    p(z | data) ∝ exp(-U(z)),   U(z) = |z|²/2 + (N / 2κ) Σ_{(a,t) ∈ S} (f_a(t) - y_a(t))²

(:func:`kernelfield.networks.log_posterior` is ``-U``): the squared loss at temperature
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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import networks
from .compare import parity_flip
from .nonlinearities import Nonlinearity, get_nonlinearity
from .sampling import _integer, check_model
from .spec import Architecture, Prior, Task
from .theory.predict import Prediction

__all__ = ["train", "Trained", "langevin_optimizer", "gaussian_noise"]

_MAX_CHUNKS = 50  # progress-bar granularity


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
class Trained:
    """Result of :func:`train`.

    f_networks: ``(num_networks, P, T)`` time average of each network's outputs after burn-in;
    f_mean: their mean (the posterior mean estimate); f_sem: ``(P, T)`` its standard error
    (spread across networks / √num_networks); f_var: ``(P, T)`` posterior variance of the outputs
    (pooled over networks and time). C_networks: ``(num_networks, n, n)`` time-averaged empirical
    kernels ``Φᵀ Φ / N`` (time-major ``t·P + a``); C_mean: their mean after aligning each network
    to network 0 under ``W -> -W`` (as :class:`kernelfield.Samples`); C_sem: its standard error.
    loss: ``(num_chunks, num_networks)`` mean squared error on the supervised set at the end of
    each chunk; step: the step count at those points. params: final standardised weights of
    every network (leading axis ``num_networks``). step_size: ``η``; lambda_max: the estimated
    largest curvature of ``U`` (``NaN`` when ``step_size`` was given); num_records: samples per
    network in the averages; seconds: wall time, compilation included.
    """

    arch: Architecture
    task: Task
    prior: Prior
    phi: str
    kappa: float
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
    C_mean: np.ndarray
    C_sem: np.ndarray
    loss: np.ndarray
    step: np.ndarray
    params: dict
    num_records: int
    seconds: float

    def predict(self) -> Prediction:
        """Posterior predictive estimated by the trained networks (mean and variance of ``f``)."""
        return Prediction(mean=self.f_mean, var=self.f_var, N=self.N)


@dataclass(frozen=True)
class _Model:
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


@partial(jax.jit, static_argnames=("model",))
def _curvature(z, inputs, targets, kappa, model: _Model):
    """Largest eigenvalue of the Gauss–Newton matrix ``(N/κ) JᵀJ`` of the data term at ``z``
    (``J = ∂f_S/∂z``), from the small ``|S| × |S|`` matrix ``(N/κ) J Jᵀ``."""
    N, D = z["U"].shape[-2:]
    supervised = ~jnp.isnan(targets)

    def f_flat(z):
        return networks.outputs(networks.scale(z, model.prior, N, D), model.arch, inputs, model.phi).reshape(-1)

    J = jax.jacrev(f_flat)(z)
    rows = jnp.concatenate([j.reshape(j.shape[0], -1) for j in jax.tree.leaves(J)], axis=1)
    rows = rows * supervised.reshape(-1)[:, None]
    return N / kappa * jnp.linalg.eigvalsh(rows @ rows.T)[-1]


@partial(jax.jit, static_argnames=("model", "length", "record_every", "step_size"))
def _chunk(carry, start, burn_in, inputs, targets, kappa, model: _Model, length: int, record_every: int,
           step_size: float):
    """``length`` Langevin steps of every network (vmapped), accumulating outputs and kernels of
    the steps ``>= burn_in`` that are multiples of ``record_every``."""
    grad = jax.grad(model.data_term, has_aux=True)

    def one_network(z, opt_state, acc):
        def step(state, i):
            z, opt_state, acc = state
            g, _ = grad(z, inputs, targets, kappa)
            updates, opt_state = opt.update(g, opt_state, z)
            z = optax.apply_updates(z, updates)
            record = (i >= burn_in) & ((i - burn_in) % record_every == 0)
            N, D = z["U"].shape[-2:]

            def add(acc):
                phi_h = networks.features(networks.scale(z, model.prior, N, D), model.arch, inputs, model.phi)
                f = networks.readout(networks.scale(z, model.prior, N, D), model.arch, phi_h)
                C = networks.empirical_kernel(phi_h)
                return {"f": acc["f"] + f, "f2": acc["f2"] + f**2, "C": acc["C"] + C, "C2": acc["C2"] + C**2,
                        "count": acc["count"] + 1}

            acc = jax.lax.cond(record, add, lambda acc: acc, acc)
            return (z, opt_state, acc), None

        (z, opt_state, acc), _ = jax.lax.scan(step, (z, opt_state, acc), start + jnp.arange(length))
        _, f = model.data_term(z, inputs, targets, kappa)
        supervised = ~jnp.isnan(targets)
        mse = jnp.sum(jnp.where(supervised, f - jnp.where(supervised, targets, 0.0), 0.0) ** 2) / jnp.sum(supervised)
        return z, opt_state, acc, mse

    opt = langevin_optimizer(step_size, jax.random.PRNGKey(0))  # the key part of the state is carried
    z, opt_state, acc = carry
    z, opt_state, acc, mse = jax.vmap(one_network)(z, opt_state, acc)
    return (z, opt_state, acc), mse




def train(
    arch: Architecture,
    task: Task,
    N: int = 128,
    prior: Prior = Prior(),
    phi="linear",
    kappa: float = 0.1,
    num_networks: int = 8,
    num_steps: int = 20000,
    burn_in: int | float = 0.25,
    record_every: int = 10,
    step_size="auto",
    safety: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> Trained:
    """Train ``num_networks`` independent width-``N`` networks by Langevin dynamics (module
    docstring) for ``num_steps`` steps and average their outputs and kernels after ``burn_in``
    steps (an int, or a fraction of ``num_steps``), recording every ``record_every`` steps.

    step_size: ``η`` in standardised coordinates (the prior's relaxation time is 1), or
    ``"auto"``: ``safety / (1 + λ_max)`` with ``λ_max`` the largest curvature of the data term
    at the first network's initial weights (with ``safety = 0.2`` the stiffest direction's
    variance is inflated by about 10%, the prior-dominated bulk by ``η/2``, far less; means are
    affected less than variances). Continuous training time is ``num_steps · η``: it must
    cover a few relaxation times (units of 1) for burn-in and many for averaging. Every
    registered ``phi`` works. Same ``seed`` and arguments give identical results; a diverging
    run (non-finite weights) raises ``FloatingPointError`` naming the step size.
    """
    started = time.perf_counter()
    nl = get_nonlinearity(phi)
    kappa = check_model(arch, task, prior, kappa)
    N = _integer("N", N, 1)
    num_networks = _integer("num_networks", num_networks, 1)
    num_steps = _integer("num_steps", num_steps, 1)
    record_every = _integer("record_every", record_every, 1)
    seed = _integer("seed", seed, 0)
    if isinstance(burn_in, float):
        if not 0 <= burn_in < 1:
            raise ValueError(f"burn_in: a fraction must lie in [0, 1), got {burn_in!r}")
        burn_in = int(burn_in * num_steps)
    burn_in = _integer("burn_in", burn_in, 0)
    if burn_in >= num_steps:
        raise ValueError(f"burn_in: must be < num_steps = {num_steps}, got {burn_in}")
    if not (isinstance(safety, (int, float)) and 0 < safety < 2):
        raise ValueError(f"safety: must be a number in (0, 2), got {safety!r}")
    if not isinstance(progress, bool):
        raise ValueError(f"progress: must be True or False, got {progress!r}")

    if isinstance(step_size, str):
        if step_size != "auto":
            raise ValueError(f"step_size: must be a number > 0 or 'auto', got {step_size!r}")
    elif isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not 0 < step_size < 2:
        raise ValueError(f"step_size: must be a number in (0, 2) or 'auto', got {step_size!r}")

    model = _Model(arch, prior, nl)
    T, P, D = task.T, task.P, task.D
    n = T * P
    inputs, targets = jnp.asarray(task.inputs), jnp.asarray(task.targets)
    key_init, key_noise = jax.random.split(jax.random.PRNGKey(seed))
    z = jax.vmap(lambda k: networks.init_standardised(k, arch, N, D))(jax.random.split(key_init, num_networks))

    lambda_max = float("nan")
    if step_size == "auto":
        lambda_max = float(_curvature(jax.tree.map(lambda x: x[0], z), inputs, targets, kappa, model=model))
        step_size = safety / (1.0 + lambda_max)
    step_size = float(step_size)

    opt_states = jax.vmap(lambda k, z: langevin_optimizer(step_size, k).init(z))(
        jax.random.split(key_noise, num_networks), z
    )
    zeros = lambda *shape: jnp.zeros((num_networks, *shape))  # noqa: E731
    acc = {"f": zeros(P, T), "f2": zeros(P, T), "C": zeros(n, n), "C2": zeros(n, n),
           "count": jnp.zeros(num_networks, dtype=jnp.int32)}
    carry = (z, opt_states, acc)
    length = math.ceil(num_steps / min(num_steps, _MAX_CHUNKS))
    num_chunks = math.ceil(num_steps / length)
    run = partial(_chunk, model=model, length=length, record_every=record_every, step_size=step_size)
    losses, steps = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task(f"Langevin N={N} {arch.name} ×{num_networks}", total=num_steps, loss="")
        for c in range(num_chunks):
            carry, mse = run(carry, c * length, burn_in, inputs, targets, kappa)
            mse = np.asarray(mse)
            done = min((c + 1) * length, num_steps)
            if not np.all(np.isfinite(mse)):
                raise FloatingPointError(
                    f"step_size: Langevin training diverged at step {done} with step size {step_size:.3g}; "
                    "use a smaller step_size (or safety)"
                )
            losses.append(mse)
            steps.append(done)
            bar.update(job, completed=done, loss=f"train MSE {np.mean(mse):.3g}")
    # the last chunk may overrun num_steps by < length steps: those steps are simulated too and
    # their records (if past burn_in) counted; the reported num_steps is what ran
    num_steps = num_chunks * length
    z, _, acc = carry
    acc = jax.tree.map(np.asarray, acc)
    count = acc["count"].astype(np.float64)
    if np.any(count < 1):
        raise ValueError("record_every: no step was recorded after burn_in; lower burn_in or record_every")
    f_networks = acc["f"] / count[:, None, None]
    C_networks = acc["C"] / count[:, None, None]
    flipped = parity_flip(C_networks, T, P)
    closer = (np.linalg.norm(flipped - C_networks[0], axis=(1, 2))
              < np.linalg.norm(C_networks - C_networks[0], axis=(1, 2)))
    aligned = np.where(closer[:, None, None], flipped, C_networks)
    C_mean = aligned.mean(axis=0)
    sem = lambda x: (x.std(axis=0, ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.full(x.shape[1:], np.nan))  # noqa: E731
    f_mean = f_networks.mean(axis=0)
    f_var = np.maximum(acc["f2"].sum(axis=0) / count.sum() - f_mean**2, 0.0)
    return Trained(
        arch=arch, task=task, prior=prior, phi=nl.name, kappa=kappa, N=N, seed=seed, num_networks=num_networks,
        num_steps=num_steps, burn_in=burn_in, record_every=record_every, step_size=step_size, lambda_max=lambda_max,
        f_networks=f_networks, f_mean=f_mean, f_sem=sem(f_networks), f_var=f_var, C_networks=C_networks,
        C_mean=C_mean, C_sem=sem(aligned), loss=np.stack(losses), step=np.asarray(steps),
        params=jax.tree.map(np.asarray, z), num_records=int(count.min()), seconds=time.perf_counter() - started,
    )
