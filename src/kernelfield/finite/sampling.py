"""Finite-width ground truth (THEORY.md §5): HMC samples of the posterior of §2 at width ``N``.

The sampler is BlackJAX's HMC on the standardised weights ``z`` (all entries ``N(0, 1)`` under
the prior, :mod:`kernelfield.finite.networks`), so one step size fits every family. Each chain starts
from its own prior draw and runs its **own** Stan-style warm-up (:func:`blackjax.window_adaptation`:
dual-averaging step size and diagonal inverse mass matrix), vmapped over chains; independent
warm-ups keep chains that settle in different modes (e.g. the two signs of the ``W -> -W``
symmetry) properly tuned. Sampling then runs all chains with ``jax.vmap`` inside ``lax.scan``
chunks, accumulating kernel and output sums in the scan carry so memory does not grow with
``num_samples``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.diagnostics import effective_sample_size

from . import networks
from ..model import Model, ModelResult, as_model
from ..nonlinearities import Nonlinearity
from ..progress import ProgressArg, ProgressCallback, ProgressEvent, reporter
from ..spec import FAMILIES, Architecture, Prior, Task
from ..symmetry import align_to_first, output_parity, parity_flip
from ..theory.predict import Prediction
from ..validation import integer, nonnegative_int, positive_int

__all__ = ["sample", "Samples"]

_MAX_CHUNKS = 20  # progress granularity: the sampling phase runs in at most this many scans


@dataclass(frozen=True, eq=False)
class Samples(ModelResult):
    """Posterior samples of the width-``N`` network, summarised.

    C_chains: ``(num_chains, n, n)`` per-chain mean of the empirical kernel ``Φᵀ Φ / N`` (§3),
    time-major index ``t·P + a``. C_mean: ``(n, n)`` mean over chains after aligning each chain to
    chain 0 under ``W -> -W`` (``C_ts -> (-1)^(t-s) C_ts``, the parity closer to chain 0).
    The outputs of a flipped chain are aligned with it (:func:`kernelfield.symmetry.output_parity`).
    C: the same as C_mean (the kernel every result has).
    C_sem: ``(n, n)`` standard error of ``C_mean``: ``sqrt(var / ess)`` with ``var`` the pooled
    posterior variance of each entry and ``ess`` below; with ``num_chains >= 2`` the larger of that
    and the between-chain estimate ``std(aligned chain means) / sqrt(num_chains)``.
    C_centred: ``(n, n)`` posterior mean kernel of the centred features ``Φ - mean over neurons``
    (aligned like ``C_mean``), for the temporal coherence of non-odd ``phi`` such as ReLU (§4).
    C_centred_chains: ``(num_chains, n, n)`` per-chain mean of the centred kernel (as ``C_chains``).
    f_mean, f_var: ``(P, T)`` posterior mean and variance of the outputs ``f_a(t)`` over all
    samples. weights: family -> ``(num_chains·keep_weights, groups, ...)`` weight samples in
    natural units (evenly spaced in each chain), for spectra (§4: the posterior mean of ``W`` is
    zero, spectra need individual samples). acceptance_rate: mean HMC acceptance probability;
    num_divergent: divergent transitions; ess: minimum effective sample size (BlackJAX, over
    chains) of the per-sample summaries: diagonal-block means of ``C``, the cross-time energy
    ``Σ_{t≠s} |C_ts|²`` (T > 1) and the log posterior. step_size: ``(num_chains,)`` adapted HMC
    step sizes. seconds: wall time of :func:`sample`, compilation included.
    """

    model: Model
    N: int
    seed: int
    num_samples: int
    num_chains: int
    num_warmup: int
    num_integration_steps: int
    thin: int
    C_chains: np.ndarray
    C_mean: np.ndarray
    C_sem: np.ndarray
    C_centred: np.ndarray
    C_centred_chains: np.ndarray
    f_mean: np.ndarray
    f_var: np.ndarray
    weights: dict
    acceptance_rate: float
    num_divergent: int
    ess: float
    step_size: np.ndarray
    seconds: float

    C = property(lambda self: self.C_mean, doc="posterior mean kernel (``C_mean``)")

    @property
    def keep_weights(self) -> int:
        """Weight samples kept per chain."""
        return len(self.weights["W"]) // self.num_chains

    def predict(self) -> Prediction:
        """Sampled posterior predictive: mean and variance of ``f_a(t)`` at width ``N``."""
        return Prediction(mean=self.f_mean, var=self.f_var, N=self.N)


@dataclass(frozen=True)
class _Density:
    """The static (hashable) part of the posterior; data and ``kappa`` are passed as arrays, so
    calls that differ only in those share one compilation."""

    arch: Architecture
    prior: Prior
    phi: Nonlinearity

    def logdensity(self, z, inputs, targets, kappa):
        return networks.log_posterior(z, self.arch, inputs, targets, self.prior, self.phi, kappa)


@partial(jax.jit, static_argnames=("density", "N", "num_chains", "num_warmup", "num_integration_steps"))
def _warmup(
    key, inputs, targets, kappa, density: _Density, N: int, num_chains: int, num_warmup: int, num_integration_steps: int
):
    """Prior draws as starting points, then per-chain window adaptation; returns the HMC states,
    step sizes and inverse mass matrices, each with a leading chain axis."""
    adaptation = blackjax.window_adaptation(
        blackjax.hmc,
        partial(density.logdensity, inputs=inputs, targets=targets, kappa=kappa),
        num_integration_steps=num_integration_steps,
        adaptation_info_fn=get_filter_adapt_info_fn(),
    )

    def one_chain(key):
        key_init, key_run = jax.random.split(key)
        position = networks.init_standardised(key_init, density.arch, N, inputs.shape[-1])
        (state, parameters), _ = adaptation.run(key_run, position, num_warmup)
        return state, parameters["step_size"], parameters["inverse_mass_matrix"]

    return jax.vmap(one_chain)(jax.random.split(key, num_chains))


class _ChainSums(NamedTuple):
    """Per-chain sums over the kept samples (leading axis: chain): kernel ``C``, its square
    ``C2``, centred kernel, outputs ``f`` and their square, acceptance rates, divergent
    transitions, and the weight buffer (family -> ``(chain, keep, ...)``, standardised)."""

    C: jax.Array
    C2: jax.Array
    C_centred: jax.Array
    f: jax.Array
    f2: jax.Array
    accept: jax.Array
    divergent: jax.Array
    weights: dict


class _SamplerCarry(NamedTuple):
    """The carry of the sampling scan: every chain's HMC state and the running sums."""

    states: blackjax.mcmc.hmc.HMCState
    sums: _ChainSums


@partial(
    jax.jit,
    static_argnames=("density", "num_integration_steps", "thin", "length", "num_samples", "stride", "keep"),
)
def _sample_chunk(
    carry, key, start, step_size, inverse_mass_matrix, inputs, targets, kappa,
    density: _Density, num_integration_steps: int, thin: int, length: int, num_samples: int, stride: int, keep: int,
):
    """``length`` samples (each ``thin`` HMC transitions) for every chain, starting at sample index
    ``start``; indices ``>= num_samples`` (padding of the last chunk) are not accumulated."""
    logdensity = partial(density.logdensity, inputs=inputs, targets=targets, kappa=kappa)
    kernel = blackjax.hmc.build_kernel()
    arch, prior = density.arch, density.prior
    num_chains, N, D = carry.states.position["U"].shape[:1] + carry.states.position["U"].shape[-2:]
    T = arch.T
    P = inputs.shape[0]

    def transition(state, k, step_size, inverse_mass_matrix):
        state, info = kernel(k, state, logdensity, step_size, inverse_mass_matrix, num_integration_steps)
        return state, (info.acceptance_rate, info.is_divergent)

    def chain_sample(key, state, step_size, inverse_mass_matrix):
        """``thin`` transitions of one chain, then its kernel, outputs and summaries."""
        step = partial(transition, step_size=step_size, inverse_mass_matrix=inverse_mass_matrix)
        state, (rate, divergent) = jax.lax.scan(step, state, jax.random.split(key, thin))
        params = networks.scale(state.position, prior, N, D)
        phi_h = networks.features(params, arch, inputs, density.phi)
        C = networks.empirical_kernel(phi_h)
        blocks = C.reshape(T, P, T, P)
        summary = [jnp.einsum("tatb->t", blocks) / P**2, state.logdensity[None]]  # diagonal-block means
        if T > 1:
            energy = jnp.sum(blocks**2, axis=(1, 3))
            summary.insert(1, (jnp.sum(energy) - jnp.trace(energy))[None])  # cross-time energy
        C_centred = networks.empirical_kernel(phi_h - jnp.mean(phi_h, axis=-1, keepdims=True))
        stats = (C, C_centred, networks.readout(params, arch, phi_h), jnp.mean(rate), jnp.sum(divergent))
        return state, stats, jnp.concatenate(summary)

    def one_sample(carry, xs):
        i, key = xs
        states, acc = carry.states, carry.sums
        keys = jax.random.split(key, num_chains)
        states, (C, C_centred, f, rate, divergent), summary = jax.vmap(chain_sample)(keys, states, step_size, inverse_mass_matrix)
        w = (i < num_samples).astype(C.dtype)
        slot = jnp.minimum(i // stride, keep - 1)  # shared by all chains: an in-place slice update
        store = (i < num_samples) & (i % stride == stride - 1) & (i // stride < keep)
        acc = _ChainSums(
            C=acc.C + w * C,
            C2=acc.C2 + w * C**2,
            C_centred=acc.C_centred + w * C_centred,
            f=acc.f + w * f,
            f2=acc.f2 + w * f**2,
            accept=acc.accept + w * rate,
            divergent=acc.divergent + w * divergent,
            weights=jax.tree.map(
                lambda buf, z: buf.at[:, slot].set(jnp.where(store, z, buf[:, slot])), acc.weights, states.position
            ),
        )
        return _SamplerCarry(states, acc), summary

    carry, summaries = jax.lax.scan(one_sample, carry, (start + jnp.arange(length), jax.random.split(key, length)))
    return carry, jnp.swapaxes(summaries, 0, 1)


_effective_sample_size = jax.jit(partial(effective_sample_size, chain_axis=0, sample_axis=1))


class _SamplerSettings(NamedTuple):
    """The validated settings of :func:`sample` and the chunking of its sampling phase into
    ``num_chunks`` scans of ``length`` samples (weights stored every ``stride`` samples)."""

    N: int
    num_samples: int
    num_warmup: int
    num_chains: int
    seed: int
    num_integration_steps: int
    thin: int
    keep_weights: int
    length: int
    num_chunks: int
    stride: int


def _plan_sampling(N, num_samples, num_warmup, num_chains, seed, num_integration_steps, thin,
                   keep_weights) -> _SamplerSettings:
    """Validate the sampler settings and split the sampling phase into chunks."""
    num_samples = integer("num_samples", num_samples, 2)
    keep_weights = nonnegative_int("keep_weights", keep_weights)
    if keep_weights > num_samples:
        raise ValueError(f"keep_weights: must be <= num_samples = {num_samples}, got {keep_weights}")
    length = math.ceil(num_samples / min(num_samples, _MAX_CHUNKS))
    return _SamplerSettings(
        N=positive_int("N", N), num_samples=num_samples,
        num_warmup=integer("num_warmup", num_warmup, 10),  # dual averaging needs a few steps
        num_chains=positive_int("num_chains", num_chains), seed=nonnegative_int("seed", seed),
        num_integration_steps=positive_int("num_integration_steps", num_integration_steps),
        thin=positive_int("thin", thin), keep_weights=keep_weights, length=length,
        num_chunks=math.ceil(num_samples / length), stride=num_samples // keep_weights if keep_weights else num_samples,
    )


def sample(
    arch: Architecture | Model,
    task: Task | None = None,
    N: int = 256,
    prior: Prior | None = None,
    phi=None,
    kappa: float | None = None,
    num_samples: int = 1000,
    num_warmup: int = 500,
    num_chains: int = 4,
    seed: int = 0,
    num_integration_steps: int = 16,
    thin: int = 1,
    keep_weights: int = 20,
    progress: ProgressArg = True,
) -> Samples:
    """Sample the posterior ``p(θ | data) ∝ p(θ) exp(-(N/2κ) Σ_S (f - y)²)`` (§2) of the width-``N``
    network with HMC and summarise its kernels and outputs (§5). The model is a
    :class:`~kernelfield.Model` as first argument, or its parts (defaults as in :class:`~kernelfield.Model`).

    ``num_chains`` chains each run ``num_warmup`` adaptation steps, then keep ``num_samples``
    samples, each ``thin`` HMC transitions of ``num_integration_steps`` leapfrog steps;
    ``keep_weights`` evenly spaced weight samples per chain are returned. progress: ``True``
    draws rich progress bars, ``False`` is silent, a callable receives
    :class:`~kernelfield.progress.ProgressEvent` s (``"warm-up ..."``: 1 unit; ``"sampling ..."``:
    ``num_samples`` units). Every registered ``phi`` works. Same ``seed`` and arguments give
    identical results.
    """
    started = time.perf_counter()
    model = as_model(arch, task, prior, phi, kappa)
    settings = _plan_sampling(N, num_samples, num_warmup, num_chains, seed, num_integration_steps, thin, keep_weights)
    with reporter(progress) as report:
        acc, summaries, step_size = _run_chains(model, settings, report)
    return _assemble_samples(model, settings, acc, summaries, step_size, time.perf_counter() - started)


def _run_chains(model: Model, s: _SamplerSettings, report: ProgressCallback):
    """Warm-up, then the sampling phase chunk by chunk; returns the accumulated sums (numpy),
    the per-sample summaries ``(num_chains, num_samples, k)`` and the adapted step sizes."""
    density = _Density(model.arch, model.prior, model.nonlinearity)
    task = model.task
    T, P, n = task.T, task.P, task.T * task.P
    inputs, targets, kappa = jnp.asarray(task.inputs), jnp.asarray(task.targets), model.kappa
    key_warmup, key_sample = jax.random.split(jax.random.PRNGKey(s.seed))
    label = f"N={s.N} {model.arch.name}"
    states, step_size, inverse_mass_matrix = _warmup(
        key_warmup, inputs, targets, kappa, density=density, N=s.N, num_chains=s.num_chains,
        num_warmup=s.num_warmup, num_integration_steps=s.num_integration_steps,
    )
    jax.block_until_ready(step_size)
    report(ProgressEvent(f"warm-up  {label}", 1, 1))
    zeros = lambda *shape: np.zeros((s.num_chains, *shape))  # noqa: E731
    acc = _ChainSums(
        C=zeros(n, n), C2=zeros(n, n), C_centred=zeros(n, n), f=zeros(P, T), f2=zeros(P, T),
        accept=zeros(), divergent=zeros(),
        weights=jax.tree.map(lambda z: np.zeros((s.num_chains, max(s.keep_weights, 1), *z.shape[1:])),
                             states.position),
    )
    chunk = partial(
        _sample_chunk, density=density, num_integration_steps=s.num_integration_steps, thin=s.thin, length=s.length,
        num_samples=s.num_samples, stride=s.stride, keep=max(s.keep_weights, 1),
    )
    carry, summaries = _SamplerCarry(states, acc), []
    for c, key in enumerate(jax.random.split(key_sample, s.num_chunks)):
        carry, summary = chunk(carry, key, c * s.length, step_size, inverse_mass_matrix, inputs, targets, kappa)
        summaries.append(np.asarray(summary))
        report(ProgressEvent(f"sampling {label}", min((c + 1) * s.length, s.num_samples), s.num_samples))
    summaries = np.concatenate(summaries, axis=1)[:, :s.num_samples]
    return jax.tree.map(np.asarray, carry.sums), summaries, step_size


def _assemble_samples(model: Model, s: _SamplerSettings, acc: _ChainSums, summaries: np.ndarray, step_size,
                      seconds: float) -> Samples:
    """Chain-aligned means, standard errors and kept weights (see :class:`Samples`)."""
    task, num_chains, num_samples = model.task, s.num_chains, s.num_samples
    T, P = task.T, task.P
    ess = float(np.min(_effective_sample_size(summaries)))
    aligned, flipped = align_to_first(acc.C / num_samples, T, P)
    C_mean = aligned.mean(axis=0)
    centred = acc.C_centred / num_samples
    C_centred = np.where(flipped[:, None, None], parity_flip(centred, T, P), centred).mean(axis=0)
    C_var = np.maximum(acc.C2.sum(axis=0) / (num_chains * num_samples) - C_mean**2, 0.0)
    C_sem = np.sqrt(C_var / max(ess, 1.0))
    if num_chains >= 2:
        C_sem = np.maximum(C_sem, aligned.std(axis=0, ddof=1) / np.sqrt(num_chains))
    f_chains = acc.f / num_samples
    f_mean = np.where(flipped[:, None, None], f_chains * output_parity(task), f_chains).mean(axis=0)
    f_var = np.maximum(acc.f2.sum(axis=0) / (num_chains * num_samples) - f_mean**2, 0.0)
    natural = networks.scale(acc.weights, model.prior, s.N, task.D)
    k = s.keep_weights
    weights = {fam: np.asarray(natural[fam][:, :k]).reshape(num_chains * k, *natural[fam].shape[2:])
               for fam in FAMILIES}
    return Samples(
        model=model, N=s.N, seed=s.seed, num_samples=num_samples, num_chains=num_chains, num_warmup=s.num_warmup,
        num_integration_steps=s.num_integration_steps, thin=s.thin, C_chains=acc.C / num_samples, C_mean=C_mean,
        C_sem=C_sem, C_centred=C_centred, C_centred_chains=centred, f_mean=f_mean, f_var=f_var, weights=weights,
        acceptance_rate=float(acc.accept.mean() / num_samples), num_divergent=int(acc.divergent.sum()),
        ess=ess, step_size=np.asarray(step_size), seconds=seconds,
    )
