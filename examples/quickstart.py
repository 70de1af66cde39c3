"""Quickstart: trained kernels of a linear RNN and DNN on the same endpoint task."""

import numpy as np

import kernelfield as kf
from kernelfield.tasks import endpoint_patterns

T = 4
task = endpoint_patterns(P=4, T=T, D=4, target_scale=1.0, seed=0)  # input at t=0, target at t=T-1
for arch in (kf.Architecture.rnn(T), kf.Architecture.dnn(T)):
    sol = kf.solve(arch, task, kf.Prior(g=1.0), phi="linear", kappa=0.1)
    pred = sol.predict(N=128)  # posterior predictive at every (a, t), variance at width N = 128
    print(f"{arch.name}: S = {sol.S:.4f}  converged = {sol.converged}  branches = {len(sol.branches)}")
    print("  targets   :", np.round(task.targets[:, -1], 3))
    print("  prediction:", np.round(pred.mean[:, -1], 3), "+-", np.round(np.sqrt(pred.var[:, -1]), 3))
