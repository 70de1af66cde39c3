"""The factored low-rank action (:mod:`kernelfield.theory.lowrank`) against the dense reference
(:func:`.action.low_rank_objective`, :func:`.action.residuals` on ``C = K(C) + V Vᵀ``), for
sharing patterns whose sweep has one term per lag (RNN) or several (``tied_every``, a mixed
pattern), and readouts shared or not across supervised steps. Both are exact formulas in
float64, so they agree to rounding (1e-10 relative)."""

import numpy as np
import pytest

import kernelfield as kf
from conftest import endpoint_task, sequential_task
from kernelfield.theory import action as act
from kernelfield.theory.kernels import invariant_components, make_problem
from kernelfield.theory.layouts import DenseLayout
from kernelfield.theory.lowrank import FactoredInnovation
from kernelfield.theory.solver import _low_rank_stage, broken_factor

CASES = [
    (kf.Architecture.rnn(4), endpoint_task(P=3, T=4)),
    (kf.Architecture.tied_every(6, 2), endpoint_task(P=3, T=6)),
    (kf.Architecture(5, [0, 0, 1, 1, 0], [0] * 5, [0] * 5, list(range(5)), name="mixed"), sequential_task(P=3, T=5)),
]


def _dense_layout(arch, task):
    prob = make_problem(arch, task, kf.Prior(sigma_b=0.3), 0.1)
    lay = DenseLayout(prob, invariant_components(prob, np.ones((prob.n, prob.n)) * prob.block_mask()))
    return prob, lay


@pytest.mark.parametrize("arch, task", CASES, ids=lambda c: getattr(c, "name", ""))
def test_factored_action_matches_the_dense_reference(arch, task):
    prob, lay = _dense_layout(arch, task)
    classes = np.array([lay.labels[0], lay.labels[-1], lay.labels[-1]])
    support = (lay.labels[:, None] == classes[None, :]).astype(float)
    V = 0.6 * np.random.default_rng(1).normal(size=(prob.n, 3)) * support
    C_in = lay.sweep(lay.K_in)
    F, gV, _, C = act.low_rank_objective(lay, C_in, V, support)
    objective = FactoredInnovation(lay, C_in)
    F2, gV2 = objective(V)
    assert abs(F2 - F) < 1e-10 * max(1.0, abs(F))
    np.testing.assert_allclose(gV2 * support, gV, rtol=1e-10, atol=1e-10 * np.abs(gV).max())
    forward, backward, Ct = act.residuals(prob, C)
    np.testing.assert_allclose(objective.kernel(V), C, rtol=1e-12, atol=1e-12 * np.abs(C).max())
    np.testing.assert_allclose(objective.conjugate_kernel(V), Ct, rtol=1e-10, atol=1e-10 * np.abs(Ct).max())
    f2, b2 = objective.residuals(V)
    assert abs(b2 - backward) < 1e-10 * backward
    assert (np.isinf(f2) and np.isinf(forward)) or abs(f2 - forward) < 1e-10 * forward
    assert objective.n_terms >= arch.T - 1


def test_factored_residuals_near_a_maximum():
    """Near the RNN's broken maximum (T = P = 6) the forward residual is finite; both residuals
    match the dense ones along a path away from it, including where the tilted Gaussian stops
    being normalisable (forward residual inf). Rounding sets a floor of ~1e-9 on residuals of
    size ~1e-7 (both ways compute a small matrix as a difference of large ones)."""
    task, arch = endpoint_task(P=6, T=6, D=6), kf.Architecture.rnn(6)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    lay, V, classes = broken_factor(prob, kf.solve(arch, task, init="prior").C)
    objective, V, _ = _low_rank_stage(lay, V, classes, max_iter=5000, tol=1e-6)
    rng = np.random.default_rng(0)
    finite = infinite = 0
    for eps in (0.0, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1):
        Vp = V + eps * rng.normal(size=V.shape)
        forward, backward, _ = act.residuals(prob, objective.kernel(Vp))
        f2, b2 = objective.residuals(Vp)
        assert abs(b2 - backward) < 1e-8 * backward + 1e-8
        if np.isinf(forward):
            assert np.isinf(f2)
            infinite += 1
        else:
            assert abs(f2 - forward) < 1e-8 * forward + 1e-8
            finite += 1
    assert finite >= 3 and infinite >= 1


def test_factored_residuals_are_resolved_below_the_square_root_of_epsilon():
    """Where the low-rank stage stops on the RNN's broken branch asked for 1e-11 (residual 7e-8)
    the factored residuals equal the dense ones to 1 %: taken through ``tr(sHsH)``, whose
    terms cancel, they carried an absolute rounding error near ``√ε ≈ 1e-8`` (a backward
    residual read 0.0 at a kernel whose dense residual was 3e-8)."""
    task, arch = endpoint_task(scale=3.0), kf.Architecture.rnn(3)
    prob = make_problem(arch, task, kf.Prior(), 0.1)
    lay, V, classes = broken_factor(prob, kf.solve(arch, task, init="prior", tol=1e-10).C)
    objective, V, _ = _low_rank_stage(lay, V, classes, max_iter=5000, tol=1e-11)
    forward, backward, _ = act.residuals(prob, objective.kernel(V))
    assert max(forward, backward) < 1e-6
    f2, b2 = objective.residuals(V)
    assert f2 == pytest.approx(forward, rel=1e-2) and b2 == pytest.approx(backward, rel=1e-2)


def test_backward_residual_bounds_decide_like_the_exact_value():
    """``backward_residual(V, below)`` may return a bound, but it is below ``below`` exactly
    when the exact residual is."""
    prob, lay = _dense_layout(*CASES[0])
    objective = FactoredInnovation(lay, lay.sweep(lay.K_in))
    rng = np.random.default_rng(2)
    for scale in (0.01, 0.1, 1.0):
        V = scale * rng.normal(size=(prob.n, 2))
        exact = objective.backward_residual(V)
        for below in exact * np.array([0.3, 0.9, 0.999, 1.001, 1.1, 3.0]):
            assert (objective.backward_residual(V, below=below) < below) == (exact < below)
