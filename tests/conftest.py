from pathlib import Path

import jax
import numpy as np
import pytest

# One persistent compilation cache for both test workers (and for later runs): a program that one
# worker compiled, the other loads instead of compiling it again. Set before the first compilation.
jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parent.parent / ".jax_cache_tests"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import kernelfield as kf  # noqa: E402
from kernelfield.compilation import release_programs_if_crowded  # noqa: E402


def endpoint_task(P=3, T=3, D=4, scale=1.0, seed=0):
    """Inputs only at t = 0, targets ±scale only at t = T-1 (THEORY.md §1 'patterns')."""
    rng = np.random.default_rng(seed)
    X = np.zeros((P, T, D))
    X[:, 0] = rng.normal(size=(P, D))
    Y = np.full((P, T), np.nan)
    Y[:, -1] = scale * np.where(np.arange(P) % 2 == 0, 1.0, -1.0)
    return kf.Task(X, Y)


def sequential_task(P=3, T=4, D=5, scale=1.0, seed=0):
    """Inputs at every step; targets on even steps only (odd steps unsupervised)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(P, T, D))
    Y = scale * np.cumsum(X[:, :, 0], axis=1) / np.sqrt(np.arange(1, T + 1))
    Y[:, 1::2] = np.nan
    return kf.Task(X, Y)


# One small Langevin training run, shared (per worker process) by the trainer's bookkeeping test
# and the storage round trip: every kf.train call with these settings reuses one compilation.
TRAIN_RUN = dict(N=16, num_networks=3, num_steps=300, burn_in=100, record_every=5, progress=False, seed=2)


def train_run_model():
    """The architecture and task of :data:`TRAIN_RUN`: an RNN on a 2-sequence integration task."""
    return kf.Architecture.rnn(3), kf.tasks.integration(P=2, T=3, D=3, supervise_every=2, seed=0)


@pytest.fixture(autouse=True)
def release_compiled_programs():
    """Free the compiled XLA programs of this worker once they hold too many memory mappings
    (:func:`kernelfield.compilation.release_programs_if_crowded`, as sweep workers and studies do).
    Every CPU executable holds mappings of its own and a pytest worker compiles thousands of
    programs: without this a worker reached the kernel's limit of 65,530 (``vm.max_map_count``)
    near the end of the suite and crashed with a segmentation fault inside XLA's compiler (the
    core dump of such a worker held 65,473 mappings). Freeing only when crowded keeps the
    programs that later test modules share."""
    yield
    release_programs_if_crowded()


@pytest.fixture(scope="session")
def trained_rnn():
    return kf.train(*train_run_model(), **TRAIN_RUN)


@pytest.fixture
def endpoint():
    return endpoint_task()


@pytest.fixture
def sequential():
    return sequential_task()
