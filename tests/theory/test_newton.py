"""The trust-region Newton step (:func:`kernelfield.theory.newton.steihaug_newton`) on quadratic
models with known minimisers, in the matrix layout the solvers use (symmetric ``(m, m)``
directions, preconditioner ``R ↦ K R K``)."""

import numpy as np
import pytest

from kernelfield.theory.newton import steihaug_newton, symmetric_factor


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


@pytest.mark.parametrize("seed", range(3))
def test_norms_on_a_singular_preconditioner_are_the_pseudo_inverse_norm(seed):
    """A closure on a support passes a singular ``K``: the step's norm is then
    ``tr(K⁺pK⁺p)`` on the range of ``K``, finite and non-negative, also on the boundary."""
    hessian_vector, K, g, _ = _problem(seed)
    m = K.shape[0]
    Q = np.linalg.qr(np.random.default_rng(seed).normal(size=(m, m - 2)))[0]  # range of rank m - 2
    K = Q @ Q.T @ K @ Q @ Q.T * 1e3
    Kplus = np.linalg.pinv(K, rcond=1e-12, hermitian=True)
    pseudo = lambda p: np.sqrt(np.sum((Kplus @ p) * (Kplus @ p).T))  # noqa: E731
    for radius in (1e6, 1e-3):  # eta as the closure's: CG on a singular K cannot reduce r off its range
        p, length, decrease = steihaug_newton(hessian_vector, K, g, radius=radius, max_cg=200, eta=1e-4)
        assert np.isfinite(length) and length == pytest.approx(pseudo(p), rel=1e-6)
        assert length <= radius * (1 + 1e-9) and decrease > 0.0


@pytest.mark.parametrize("seed", range(4))
def test_norms_stay_exact_when_the_hessian_products_are_inexact(seed):
    """At an ill-conditioned point the closure's Hessian-vector products are not exactly
    symmetric. The step's norm must still be its ``K``-norm and within the radius (the short CG
    recurrences for the norms assume exact conjugacy: with a 30 % non-symmetric ``H`` they were
    wrong, or NaN, in about a third of these cases)."""
    rng = np.random.default_rng(seed)
    m = 12
    dim = m * m
    A = rng.normal(size=(dim, dim))
    H = A @ A.T / dim + 0.01 * np.eye(dim)
    H = H + 0.3 * np.linalg.norm(H, 2) * rng.normal(size=(dim, dim)) / np.sqrt(dim)

    def hessian_vector(V):
        V = 0.5 * (V + V.T)
        out = (H @ V.ravel()).reshape(m, m)
        return 0.5 * (out + out.T)

    U = np.linalg.qr(rng.normal(size=(m, m)))[0]
    K = U @ np.diag(np.logspace(0, -10, m)) @ U.T
    Kinv = U @ np.diag(np.logspace(0, 10, m)) @ U.T
    g = rng.normal(size=(m, m))
    g = 0.5 * (g + g.T)
    for radius in (1e-2, 1.0, 1e2):
        p, length, _ = steihaug_newton(hessian_vector, K, g, radius=radius, max_cg=100, eta=1e-3)
        exact = np.sqrt(np.sum((Kinv @ p) * (Kinv @ p).T))
        assert np.isfinite(length) and length == pytest.approx(exact, rel=1e-3)
        assert length <= radius * (1 + 1e-9)


def test_norms_stay_accurate_where_the_preconditioner_is_ill_conditioned():
    """``K`` with condition number 1e12 and a gradient large along its small directions (as for
    the trained closure kernels at P = 256): the step's length is its ``K``-norm, computed here in
    ``K``'s eigenbasis, to 1e-4 (the reference's own rounding is ~1e-5). Taken as
    ``tr(p·K⁺pK⁺)`` from carried ``K⁺pK⁺`` it was 5 % off here, and 0 at cond 1e14."""
    m = 12
    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.normal(size=(m, m)))[0]
    lam = np.logspace(0, -12, m)
    K = Q @ np.diag(lam) @ Q.T
    K = 0.5 * (K + K.T)
    G = rng.normal(size=(m, m))
    g = Q @ ((G + G.T) / np.sqrt(np.outer(lam, lam))) @ Q.T
    g = 0.5 * (g + g.T)

    def hessian_vector(V):  # K⁻¹ ⊗ K⁻¹: the preconditioner's inverse
        return Q @ ((Q.T @ V @ Q) / np.outer(lam, lam)) @ Q.T

    p, length, _ = steihaug_newton(hessian_vector, K, g, radius=1e3, max_cg=50, eta=1e-10)
    reference = np.sqrt(np.sum((Q.T @ p @ Q) ** 2 / np.outer(lam, lam)))
    assert length == pytest.approx(reference, rel=1e-4)


def test_directions_keep_the_blocks_where_the_preconditioner_vanishes():
    """A branch's structure (e.g. a time-symmetric branch: ``K`` zero between time steps of
    different parity) must survive the CG directions ``F(FᵀrF)Fᵀ`` exactly, or an odd-``phi`` prior
    start drifts off its branch (tanh RNN, endpoint task: it did, after 50 Newton steps, when
    ``F`` came from an eigendecomposition). Also singular blocks (a support) are fine."""
    rng = np.random.default_rng(0)
    m = 8
    parity = np.arange(m) % 2
    same = parity[:, None] == parity[None, :]
    B = rng.normal(size=(m, m))
    K = (B @ B.T) * same
    K[:, 0] = K[0, :] = 0.0  # a zero variance: singular K
    F = symmetric_factor(K)
    np.testing.assert_allclose(F @ F.T, K, atol=1e-12)
    r = rng.normal(size=(m, m)) * same
    assert np.all((F @ (F.T @ (r + r.T) @ F) @ F.T)[~same] == 0.0)  # K r K as the CG forms it
    g = rng.normal(size=(m, m)) * same
    p, _, _ = steihaug_newton(lambda V: V, K, g + g.T, radius=10.0, max_cg=20, eta=1e-12)
    assert np.all(p[~same] == 0.0)
