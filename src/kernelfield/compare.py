"""Theory against finite-width samples, block by block (THEORY.md §5).

Cross-time blocks are compared up to the ``W -> -W`` symmetry, which maps
``C_ts -> (-1)^(t-s) C_ts``: the sampled kernel is flipped by that parity when this brings it
closer to the theory. Errors of block ``(t, s)`` are normalised by
``sqrt(||C_tt||_F ||C_ss||_F)`` of the theory so that blocks the theory predicts to vanish
(a DNN's cross-layer blocks) are measured on the same scale as the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Model, model_differences
from .observables import block_norms
from .symmetry import output_parity, parity_flip

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True, eq=False)
class Comparison:
    """block_error[t, s]: ``||C_samp - C_theory||_F`` of block ``(t, s)`` over
    ``sqrt(||C_tt|| ||C_ss||)``; block_error_bar: the same norm of the sampling standard error
    (what ``block_error`` would be from sampling noise alone); error / error_bar: the same over the
    whole kernel relative to ``||C_theory||_F``; prediction_error: ``||f_samp - f_theory||`` over
    ``||f_theory||`` for the posterior mean outputs at every ``(a, t)``; parity: +1, or -1 when the
    sampled kernel was flipped by ``W -> -W``; model: the model both sides describe; seed: the
    finite-width run's seed."""

    T: int
    P: int
    N: int
    C_theory: np.ndarray
    C_sampled: np.ndarray
    C_sem: np.ndarray
    block_error: np.ndarray
    block_error_bar: np.ndarray
    error: float
    error_bar: float
    prediction_error: float
    parity: int
    model: Model | None = None
    seed: int | None = None

    def table(self) -> str:
        """Plain-text table of the per-block errors."""
        lines = [f"N = {self.N}: kernel error {self.error:.4f} ± {self.error_bar:.4f} (sampling), "
                 f"prediction error {self.prediction_error:.4f}, parity {self.parity:+d}",
                 "block (t, s): error ± sampling error"]
        for t in range(self.T):
            lines.append("  " + "  ".join(f"({t},{s}) {self.block_error[t, s]:.4f}±{self.block_error_bar[t, s]:.4f}"
                                            for s in range(self.T)))
        return "\n".join(lines)


def compare(sol, samples) -> Comparison:
    """Per-block relative errors between a theory result (a :class:`~kernelfield.Solution`) and a
    finite-width one (:class:`~kernelfield.Samples` or :class:`~kernelfield.Trained`) of the same
    :class:`~kernelfield.Model`; a ``ValueError`` names what differs otherwise."""
    differences = model_differences(sol.model, samples.model)
    if differences:
        raise ValueError("samples: must describe the same model as the solution; differs in "
                         + "; ".join(differences))
    T, P = sol.task.T, sol.task.P
    C_th = np.asarray(sol.C)
    candidates = {+1: samples.C, -1: parity_flip(samples.C, T, P)}
    parity = min(candidates, key=lambda p: np.linalg.norm(candidates[p] - C_th))
    C_samp = candidates[parity]
    f_samp = samples.f_mean * (output_parity(sol.task) if parity < 0 else 1.0)
    diag = np.sqrt(np.diag(block_norms(C_th, T, P)))
    scale = diag[:, None] * diag[None, :]
    f_th = sol.predict().mean
    return Comparison(
        T=T,
        P=P,
        N=samples.N,
        C_theory=C_th,
        C_sampled=C_samp,
        C_sem=samples.C_sem,
        block_error=block_norms(C_samp - C_th, T, P) / scale,
        block_error_bar=block_norms(samples.C_sem, T, P) / scale,
        error=float(np.linalg.norm(C_samp - C_th) / np.linalg.norm(C_th)),
        error_bar=float(np.linalg.norm(samples.C_sem) / np.linalg.norm(C_th)),
        prediction_error=float(np.linalg.norm(f_samp - f_th) / np.linalg.norm(f_th)),
        parity=int(parity),
        model=sol.model,
        seed=samples.seed,
    )
