import numpy as np
import pytest

import kernelfield as kf


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


@pytest.fixture
def endpoint():
    return endpoint_task()


@pytest.fixture
def sequential():
    return sequential_task()
