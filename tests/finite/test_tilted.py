"""Tilted expectations (THEORY.md §3) by MCMC against closed forms and brute-force quadrature.

Tolerances: entries are compared in units of their own standard error across 64 independent
chains (|z| < 4.5: with ~20-40 entries per test a 4.5-sigma excursion has probability < 1e-4),
so a biased sampler fails while Monte Carlo noise at a fixed seed does not.
"""

import numpy as np
import pytest

import kernelfield as kf
from kernelfield.gaussian import expect_phiphi
from kernelfield.finite.tilted import tilted_moments

Z_MAX = 4.5


def _kernels(n, tilt, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    K = A @ A.T / n + 0.5 * np.eye(n)
    B = rng.normal(size=(n, n))
    Ct = (B + B.T) / 2
    Ct *= tilt / (np.abs(np.linalg.eigvalsh(Ct)).max() * np.linalg.eigvalsh(K)[-1])
    return K, Ct


def _z(estimate, error, exact):
    return np.abs((estimate - exact) / np.maximum(error, 1e-300)).max()


def test_linear_tilt_matches_the_gaussian_closed_form():
    # phi = h: q = N(0, (K⁻¹ - 2Ct)⁻¹) and log Z = -1/2 log det(I - 2 K Ct)
    K, Ct = _kernels(6, tilt=0.4)
    m = tilted_moments(K, Ct, "linear", log_Z=True, seed=1)
    exact = np.linalg.inv(np.linalg.inv(K) - 2 * Ct)
    assert _z(m.hh, m.hh_err, exact) < Z_MAX and _z(m.phiphi, m.phiphi_err, exact) < Z_MAX
    log_Z = -0.5 * np.linalg.slogdet(np.eye(6) - 2 * K @ Ct)[1]
    assert abs(m.log_Z - log_Z) < Z_MAX * m.log_Z_err + 1e-4  # + Gauss-Legendre quadrature error
    assert m.ess > 1000 and 0.5 < m.acceptance_rate <= 1 and m.positions.shape == (64, 6)


def test_linear_tilt_on_the_support_of_a_singular_prior():
    # K of rank 4 in R^6 with range spanned by Q: q lives there, <hh^T> = Q (K_r^-1 - 2 Ct_r)^-1 Q^T
    # with K_r = Q^T K Q, Ct_r = Q^T Ct Q, and log Z = -1/2 log det(I - 2 K_r Ct_r)
    K_r, Ct_r = _kernels(4, tilt=0.4)
    Q = np.linalg.qr(np.random.default_rng(3).normal(size=(6, 4)))[0]
    K, Ct = Q @ K_r @ Q.T, Q @ Ct_r @ Q.T + 0.3 * (np.eye(6) - Q @ Q.T)  # Ct off the support enters nothing
    m = tilted_moments(K, Ct, "linear", log_Z=True, seed=1, basis=Q)
    exact = Q @ np.linalg.inv(np.linalg.inv(K_r) - 2 * Ct_r) @ Q.T
    assert _z(m.hh, m.hh_err, exact) < Z_MAX
    log_Z = -0.5 * np.linalg.slogdet(np.eye(4) - 2 * K_r @ Ct_r)[1]
    assert abs(m.log_Z - log_Z) < Z_MAX * m.log_Z_err + 1e-4
    assert np.abs(m.positions - m.positions @ Q @ Q.T).max() < 1e-10
    with pytest.raises(ValueError, match="K: must be positive definite"):
        tilted_moments(K, Ct, "linear")
    with pytest.raises(ValueError, match="basis: expected an orthonormal"):
        tilted_moments(K, Ct, "linear", basis=2 * Q)


def test_untilted_erf_matches_the_arcsine_kernel():
    K, _ = _kernels(5, tilt=0.0, seed=2)
    m = tilted_moments(K, np.zeros_like(K), "erf", num_samples=300, seed=2)
    exact = np.asarray(expect_phiphi(K, kf.get_nonlinearity("erf")))
    assert _z(m.phiphi, m.phiphi_err, exact) < Z_MAX
    assert _z(m.hh, m.hh_err, K) < Z_MAX


# n = 2 problem of the quadrature test (relu scales the tilt by 0.4 to keep 2|Ct||K| < 1)
K2 = np.array([[1.0, 0.6], [0.6, 1.5]])
CT2 = np.array([[0.3, -0.25], [-0.25, 0.2]])


@pytest.mark.parametrize("phi", ["tanh", "relu"])
def test_tilted_nonlinear_two_dimensional_against_quadrature(phi):
    # n = 2: brute-force tensor Gauss-Hermite quadrature (80 x 80 nodes) in whitened coordinates
    K = K2
    Ct = CT2 * (0.4 if phi == "relu" else 1.0)
    fn = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0.0)}[phi]
    x, w = np.polynomial.hermite_e.hermegauss(80)
    Z1, Z2 = np.meshgrid(x, x, indexing="ij")
    W = np.outer(w, w) / (2 * np.pi)
    H = np.stack([Z1, Z2], -1) @ np.linalg.cholesky(K).T
    P = fn(H)
    weight = W * np.exp(np.einsum("...i,ij,...j->...", P, Ct, P))
    Z = weight.sum()
    phiphi = np.einsum("xy,xyi,xyj->ij", weight, P, P) / Z
    hh = np.einsum("xy,xyi,xyj->ij", weight, H, H) / Z
    m = tilted_moments(K, Ct, phi, log_Z=True, seed=3, num_temperatures=4)
    assert _z(m.phiphi, m.phiphi_err, phiphi) < Z_MAX
    assert _z(m.hh, m.hh_err, hh) < Z_MAX
    assert abs(m.log_Z - np.log(Z)) < Z_MAX * m.log_Z_err + 1e-4


def test_warm_start_and_bad_input():
    # the tanh problem and sampler settings of the quadrature test: one compilation for both
    first = tilted_moments(K2, CT2, "tanh")
    again = tilted_moments(K2, CT2, "tanh", init=first.positions)
    assert np.isfinite(again.phiphi).all()
    with pytest.raises(ValueError, match="init"):
        tilted_moments(K2, CT2, "tanh", init=first.positions[:4])
    K, Ct = _kernels(3, tilt=0.2)
    with pytest.raises(ValueError, match="K: must be positive definite"):
        tilted_moments(-K, Ct, "tanh")
    with pytest.raises(ValueError, match="Ct: expected shape"):
        tilted_moments(K, Ct[:2, :2], "tanh")
    with pytest.raises(ValueError, match="Ct: must be symmetric"):
        tilted_moments(K, Ct + np.triu(np.ones_like(Ct), 1), "tanh")
    with pytest.raises(ValueError, match="not normalisable"):
        tilted_moments(K, 10 * np.eye(3), "linear")
    with pytest.raises(ValueError, match="num_chains"):
        tilted_moments(K, Ct, "tanh", num_chains=1)
    with pytest.raises(ValueError, match="phi"):
        tilted_moments(K, Ct, "sigmoid")
