"""kernelfield: trained kernels of recurrent and deep networks from a mean-field theory in
which RNNs and DNNs differ only by which time steps share weights."""

import jax

jax.config.update("jax_enable_x64", True)

from ._version import __version__  # noqa: E402
from .nonlinearities import Nonlinearity, available, get_nonlinearity, register  # noqa: E402
from .spec import Architecture, Prior, Task  # noqa: E402
from .model import Model  # noqa: E402
from .theory.lazy import LazyKernel, prior_kernel  # noqa: E402
from .theory.predict import Prediction  # noqa: E402
from .theory.solver import Branch, ConvergenceWarning, Solution, predict, solve  # noqa: E402
from .finite.sampling import Samples, sample  # noqa: E402
from .finite.training import Trained, train  # noqa: E402
from .compare import Comparison, compare  # noqa: E402
from .storage import load, save, to_xarray  # noqa: E402
from .observables import coherence_by_lag, temporal_coherence  # noqa: E402
from .theory.stability import critical_signal, outlier_eigenvalues, stability  # noqa: E402
from . import schedules, tasks  # noqa: E402
from . import sweep  # noqa: E402  (kernelfield.report writes reports of sweep stores)

__all__ = [
    "Architecture",
    "Prior",
    "Task",
    "Model",
    "Nonlinearity",
    "register",
    "available",
    "get_nonlinearity",
    "solve",
    "predict",
    "Solution",
    "Branch",
    "ConvergenceWarning",
    "prior_kernel",
    "LazyKernel",
    "Prediction",
    "sample",
    "Samples",
    "train",
    "Trained",
    "compare",
    "Comparison",
    "save",
    "load",
    "to_xarray",
    "__version__",
    "tasks",
    "schedules",
    "temporal_coherence",
    "coherence_by_lag",
    "stability",
    "critical_signal",
    "outlier_eigenvalues",
    "sweep",
]
