"""The trust-region Newton step (:func:`kernelfield.theory.newton.steihaug_newton`) on quadratic
models with known minimisers, in the matrix layout the solvers use (symmetric ``(m, m)``
directions, preconditioner ``R ↦ K R K``)."""

import numpy as np
import pytest

from kernelfield.theory.newton import steihaug_newton


def _problem(seed: int, m: int = 5):
    """A symmetric quadratic ``gᵀp + ½pᵀHp`` on symmetric ``(m, m)`` matrices (``H`` acting on
    their vectorisation), a positive definite ``K`` and the explicit ``K``-norm."""
    rng = np.random.default_rng(seed)
    dim = m * m
    A = rng.normal(size=(dim, dim))
    H = A @ A.T / dim + 0.1 * np.eye(dim)
    sym = lambda X: 0.5 * (X + X.T)  # noqa: E731

    def hessian_vector(V):
        return sym((H @ sym(V).ravel()).reshape(m, m))

    B = rng.normal(size=(m, m))
    K = B @ B.T / m + np.eye(m)
    g = sym(rng.normal(size=(m, m)))
    Kinv = np.linalg.inv(K)
    norm = lambda p: np.sqrt(np.sum((Kinv @ p) * (Kinv @ p).T))  # noqa: E731  sqrt tr(K⁻¹pK⁻¹p)
    return hessian_vector, K, g, norm


@pytest.mark.parametrize("seed", range(3))
def test_inside_the_region_it_is_the_newton_step(seed):
    hessian_vector, K, g, norm = _problem(seed)
    p, length, decrease = steihaug_newton(hessian_vector, K, g, radius=1e6, max_cg=200, eta=1e-12)
    assert np.allclose(hessian_vector(p), -g, atol=1e-9)  # H p = -g on symmetric matrices
    assert length == pytest.approx(norm(p), rel=1e-9)  # the recurrences give the K-norm
    assert decrease == pytest.approx(-(np.sum(g * p) + 0.5 * np.sum(p * hessian_vector(p))), rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_a_small_region_stops_on_its_boundary_with_a_decrease(seed):
    hessian_vector, K, g, norm = _problem(seed)
    full, full_length, _ = steihaug_newton(hessian_vector, K, g, radius=1e6, max_cg=200, eta=1e-12)
    radius = 0.3 * full_length
    p, length, decrease = steihaug_newton(hessian_vector, K, g, radius=radius, max_cg=200, eta=1e-12)
    assert norm(p) == pytest.approx(radius, rel=1e-9) and length == pytest.approx(radius)
    model = -(np.sum(g * p) + 0.5 * np.sum(p * hessian_vector(p)))
    assert decrease == pytest.approx(model, rel=1e-9) and decrease > 0.0


def test_negative_curvature_is_followed_to_the_boundary():
    positive, K, g, norm = _problem(0)
    v = K @ g @ K  # the first CG direction (up to sign) gets negative curvature
    v = v / np.linalg.norm(v)

    def hessian_vector(V):
        return positive(V) - 100.0 * np.sum(v * V) * v

    p, length, decrease = steihaug_newton(hessian_vector, K, g, radius=2.0, max_cg=200, eta=1e-12)
    assert norm(p) == pytest.approx(2.0, rel=1e-9)
    assert np.allclose(p / np.linalg.norm(p), -v)  # along the preconditioned gradient, downhill
    assert decrease == pytest.approx(-(np.sum(g * p) + 0.5 * np.sum(p * hessian_vector(p))), rel=1e-9)
