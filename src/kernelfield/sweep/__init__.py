"""Parameter sweeps: a grid of run configurations computed locally or on a Dask cluster, kept in
a resumable store of labelled results.

Sweep file (TOML)::

    name = "coherence"                    # optional; default: the file name without .toml
    compute = ["solve", "coherence"]      # per-point computations, see COMPUTATIONS

    [base]                                # a run configuration as in kernelfield.config
    architecture = { kind = "rnn", T = 4 }
    task = { generator = "endpoint_patterns", P = 3, D = 4 }
    theory = { kappa = 0.1 }            # e.g. { phi = "erf", method = "gaussian" }: the Gaussian closure

    [axes]                                # the grid is the outer product of all axes, in this order
    architecture = [{ kind = "rnn" }, { kind = "dnn" }, { kind = "tied_every", k = 2 }]
    "task.target_scale" = { start = 0.0, stop = 2.0, num = 11 }   # spacing = "linear" | "log"
    "sampling.seed" = [0, 1, 2]

    [options.predictive_error]            # options of a computation, when it has any
    truth = { supervise_every = 1 }

An axis is either one field ``"section.key"`` (sections ``architecture``, ``prior``, ``task``,
``theory``, ``sampling``) with a list of values or a range ``{start, stop, num, spacing}``
(integers when ``start`` and ``stop`` are integers), or a whole section with a list of tables
merged over the base's table (an optional ``label`` key names the value; by default the
architecture's name, e.g. ``tied_every_2``, or ``key=value,...``). Every point is validated like
a run configuration before anything runs; errors name the field (``base.…``, ``axes.…``,
``compute``, ``options.…``) and what is allowed.

Execution (:func:`run`): a local process pool (``spawn``) sized to the machine (its workers share
compiled programs through JAX's persistent compilation cache in the store, or in
``$JAX_COMPILATION_CACHE_DIR`` when set, so each program is compiled once), or the workers of
an existing Dask distributed cluster (``scheduler="tcp://host:8786"``), or ``workers=0`` in this
process. Points are computed independently; one that raises records its error and traceback and
the sweep goes on. Results come back to this process, which writes them, so the store only needs
to be visible here.

Store layout (a directory)::

    index.json           the grid: axes (coordinates), points (key, index), the sweep's config and hash
    points/<key>.nc      one finished point: its outputs and provenance (netCDF, written atomically)
    failed/<key>.json    one failed point: error, traceback, timings, attempts
    .jax_cache/          compiled XLA programs shared by the local workers (safe to delete)

A point's key is a hash of its full run configuration (defaults filled in), the computations and
their options, so re-running a sweep (after an interruption, or with more axis values) computes
only points without a result; failed points are recomputed with ``retry_failed=True``. Each point
file carries provenance attributes: ``sweep_config_hash``, ``point_key``, ``run_id`` (one per
invocation of :func:`run`), ``kernelfield_version``, ``config`` (the point's run configuration as
JSON), ``task_seed``, ``sampling_seed``, ``started``, ``finished``, ``seconds``,
``seconds_<computation>``, ``host``, ``pid`` and ``warnings``, and ``theory_method`` (the solver of
the theory results, ``exact``, ``particles`` or ``gaussian``: the Gaussian closure, from
``theory.method``, which may also be an axis); solver and sampler diagnostics are variables. :func:`load` returns one ``xarray.Dataset`` with one dimension per axis.

New per-point computations are added with :func:`register_computation` (one function each).

Modules: :mod:`.computations` (the registry and the built-in computations), :mod:`.grid` (the
sweep file and its grid), :mod:`.executors` (local pool, Dask, this process), :mod:`.store` (the
store, :func:`run` and :func:`load`).
"""

from .computations import COMPUTATIONS, Computation, PointContext, compute_point, register_computation
from .executors import default_workers
from .grid import Axis, Range, Sweep, SweepPoint, load_config, parse_config
from .store import JAX_CACHE, SweepInterrupted, SweepRun, load, read_index, run

__all__ = [
    "Axis",
    "Range",
    "Computation",
    "COMPUTATIONS",
    "PointContext",
    "Sweep",
    "SweepPoint",
    "SweepRun",
    "SweepInterrupted",
    "register_computation",
    "load_config",
    "parse_config",
    "run",
    "load",
    "read_index",
    "compute_point",
    "default_workers",
    "JAX_CACHE",
]
