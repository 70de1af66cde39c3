"""TOML run configurations, validated with pydantic.

Example (every table but ``[architecture]`` and ``[task]`` may be left out; defaults shown)::

    [architecture]
    kind = "rnn"          # "rnn" | "dnn" | "tied_every" | "custom"
    T = 4
    # k = 2               # tied_every: W tied within blocks of k steps
    # W_groups = [0, 0, 0, 0]   # custom: one group label per step for each of W, U, b, v

    [prior]
    g = 1.0
    sigma_u = 1.0
    sigma_b = 0.0
    sigma_v = 1.0

    [task]
    generator = "endpoint_patterns"   # a key of kernelfield.tasks.TASKS
    P = 4
    D = 4
    target_scale = 1.0                # other keys are passed to the generator
    seed = 0

    [theory]
    phi = "linear"
    kappa = 0.1
    # tol = 1e-6
    # init = "auto"       # "auto" | "prior" | "broken"

    [sampling]
    N = 128
    num_samples = 1000
    num_warmup = 500
    num_chains = 4
    seed = 0
    # num_integration_steps = 16, thin = 1, keep_weights = 20

The task's ``T`` is the architecture's. :func:`load_config` validates the whole file (including
building the architecture and the task, so e.g. a generator argument out of range is reported
at load time) and raises :class:`ConfigError` with one line per problem, each naming the file,
the field (``section.key``) and what is allowed.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .spec import Architecture, Prior, Task

__all__ = ["Config", "ConfigError", "load_config", "parse_config", "GeneralizationConfig",
           "load_generalization_config", "parse_generalization_config"]


class ConfigError(ValueError):
    """A configuration file could not be read or is invalid; the message names the file and fields."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchitectureConfig(_Section):
    kind: Literal["rnn", "dnn", "tied_every", "custom"]
    T: int = Field(ge=1, description="number of time steps")
    k: Optional[int] = Field(default=None, ge=1, description="tied_every: block length of tied W")
    W_groups: Optional[list[int]] = None
    U_groups: Optional[list[int]] = None
    b_groups: Optional[list[int]] = None
    v_groups: Optional[list[int]] = None

    @model_validator(mode="after")
    def _kind_fields(self):
        groups = {f: getattr(self, f"{f}_groups") for f in ("W", "U", "b", "v")}
        if self.kind == "tied_every" and self.k is None:
            raise ValueError("k: required when kind = 'tied_every' (block length of tied W, an integer >= 1)")
        if self.kind != "tied_every" and self.k is not None:
            raise ValueError(f"k: only used with kind = 'tied_every', not with kind = {self.kind!r}")
        if self.kind == "custom":
            missing = [f"{f}_groups" for f, g in groups.items() if g is None]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required when kind = 'custom' (a list of T = {self.T} "
                                 "integer group labels, one per time step)")
        else:
            given = [f"{f}_groups" for f, g in groups.items() if g is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only used with kind = 'custom', not with kind = {self.kind!r}")
        self.build()  # the spec's own validation (e.g. group list lengths)
        return self

    def build(self) -> Architecture:
        if self.kind == "rnn":
            return Architecture.rnn(self.T)
        if self.kind == "dnn":
            return Architecture.dnn(self.T)
        if self.kind == "tied_every":
            return Architecture.tied_every(self.T, self.k)
        return Architecture(self.T, self.W_groups, self.U_groups, self.b_groups, self.v_groups, name="custom")


class PriorConfig(_Section):
    g: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    sigma_u: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    sigma_b: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    sigma_v: float = Field(default=1.0, gt=0, allow_inf_nan=False)

    def build(self) -> Prior:
        return Prior(self.g, self.sigma_u, self.sigma_b, self.sigma_v)


class _GeneratorConfig(BaseModel):
    """A task generator by name (a key of :data:`kernelfield.tasks.TASKS`) and its extra arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    generator: str

    @field_validator("generator")
    @classmethod
    def _known(cls, v: str) -> str:
        from .tasks import TASKS

        if v not in TASKS:
            raise ValueError(f"unknown task generator {v!r}; allowed: {', '.join(sorted(TASKS))}")
        return v

    @property
    def kwargs(self) -> dict:
        return dict(self.model_extra or {})


class TaskConfig(_GeneratorConfig):
    """``generator`` names a function in :data:`kernelfield.tasks.TASKS`; every other key is
    passed to it as a keyword argument (``T`` comes from ``[architecture]``)."""

    @model_validator(mode="after")
    def _arguments(self):
        from .tasks import TASKS

        params = inspect.signature(TASKS[self.generator]).parameters
        allowed = [p for p in params if p != "T"]
        kwargs = self.kwargs
        if "T" in kwargs:
            raise ValueError("T: set the number of time steps in [architecture], not in [task]")
        for key in kwargs:
            if key not in params:
                raise ValueError(f"{key}: not an argument of task generator {self.generator!r}; "
                                 f"allowed: {', '.join(allowed)}")
        missing = [p for p, par in params.items()
                   if p != "T" and par.default is inspect.Parameter.empty and p not in kwargs]
        if missing:
            raise ValueError(f"{', '.join(missing)}: required by task generator {self.generator!r}")
        return self

    def build(self, T: int) -> Task:
        from .tasks import TASKS

        return TASKS[self.generator](T=T, **self.kwargs)


class TheoryConfig(_Section):
    phi: str = "linear"
    kappa: float = Field(default=0.1, gt=0, allow_inf_nan=False)
    tol: float = Field(default=1e-6, gt=0, allow_inf_nan=False)
    init: Literal["auto", "prior", "broken"] = "auto"
    method: Literal["auto", "exact", "particles"] = Field(
        default="auto", description="exact (linear phi) or particles (any phi); auto picks")
    num_particles: int | None = Field(default=None, ge=16,
                                      description="particle solver: population size (default max(4096, 128·n))")
    mc_tol: float = Field(default=0.01, gt=0, allow_inf_nan=False,
                          description="particle solver: target largest entrywise relative standard error of C")
    seed: int = Field(default=0, ge=0, description="particle solver: random seed")

    @field_validator("phi")
    @classmethod
    def _known_phi(cls, v: str) -> str:
        from .nonlinearities import available

        if v not in available():
            raise ValueError(f"unknown nonlinearity {v!r}; allowed: {', '.join(available())}")
        return v


class SamplingConfig(_Section):
    N: int = Field(default=128, ge=1, description="network width")
    num_samples: int = Field(default=1000, ge=1)
    num_warmup: int = Field(default=500, ge=0)
    num_chains: int = Field(default=4, ge=1)
    seed: int = Field(default=0, ge=0)
    num_integration_steps: int = Field(default=16, ge=1)
    thin: int = Field(default=1, ge=1)
    keep_weights: int = Field(default=20, ge=0)


_AXIS_FIELDS = ("architecture.T", "prior.g", "prior.sigma_u", "prior.sigma_v", "theory.kappa")


class AxisConfig(_Section):
    """One axis of a 2-D phase diagram: a configuration field and its values."""

    field: str = Field(description="dotted configuration field, e.g. 'architecture.T' or 'task.P'")
    values: list[float] = Field(min_length=1)

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str) -> str:
        if v not in _AXIS_FIELDS and not v.startswith("task."):
            raise ValueError(f"unknown axis field {v!r}; allowed: {', '.join(_AXIS_FIELDS)} or task.<argument>")
        return v


class PhaseConfig(_Section):
    """``kernelfield phase-diagram``: the bifurcation diagram over ``values`` of ``control`` for
    each of ``architectures`` (``"rnn"``, ``"dnn"`` or ``"tied_every:k"``), sampled networks at
    ``widths`` for ``sample_values``, and (with ``x`` and ``y``) the critical signal over a grid."""

    control: Literal["target_scale", "kappa", "g"] = "target_scale"
    values: list[float] = Field(default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0], min_length=1)
    architectures: list[str] = Field(default=["rnn", "dnn", "tied_every:2"], min_length=1)
    widths: list[int] = []
    sample_values: Optional[list[float]] = None
    tol: float = Field(default=1e-3, gt=0, lt=1)
    x: Optional[AxisConfig] = None
    y: Optional[AxisConfig] = None

    @field_validator("values", "sample_values")
    @classmethod
    def _positive_values(cls, v):
        if v is not None and any(not (x > 0 and x < float("inf")) for x in v):
            raise ValueError("must be finite numbers > 0")
        return v

    @field_validator("widths")
    @classmethod
    def _widths(cls, v):
        if any(N < 1 for N in v):
            raise ValueError("network widths must be integers >= 1")
        return v

    @field_validator("architectures")
    @classmethod
    def _architectures(cls, v):
        for name in v:
            kind, _, k = name.partition(":")
            if kind not in ("rnn", "dnn", "tied_every") or (kind == "tied_every") != bool(k) or \
                    (k and not (k.isdigit() and int(k) >= 1)):
                raise ValueError(f"unknown architecture {name!r}; allowed: 'rnn', 'dnn', 'tied_every:k' (k >= 1)")
        return v

    @model_validator(mode="after")
    def _axes(self):
        if (self.x is None) != (self.y is None):
            raise ValueError("x, y: give both axes of the phase diagram or neither")
        if self.x is not None and self.x.field == self.y.field:
            raise ValueError(f"y.field: must differ from x.field ({self.x.field!r})")
        return self

    def build_architectures(self, T: int) -> list[Architecture]:
        out = []
        for name in self.architectures:
            kind, _, k = name.partition(":")
            out.append(Architecture.tied_every(T, int(k)) if k else getattr(Architecture, kind)(T))
        return out


class SpectrumConfig(_Section):
    """``kernelfield spectrum``: predicted outliers of the recurrent matrix against sampled
    spectra at widths ``widths`` (sampler settings from ``[sampling]``) over ``values`` of ``control``;
    with ``contrast_dnn`` the same for the DNN's last-step matrix ``W_{T-1}``."""

    control: Literal["target_scale", "kappa", "g"] = "target_scale"
    values: list[float] = Field(default=[0.3, 1.0, 2.0], min_length=1)
    widths: list[int] = Field(default=[128, 256], min_length=1)
    contrast_dnn: bool = Field(default=False, description="also sample the DNN (untied W_t) for contrast")

    _positive_values = field_validator("values")(PhaseConfig._positive_values.__func__)
    _widths = field_validator("widths")(PhaseConfig._widths.__func__)


class Config(_Section):
    """A validated run configuration; ``build_*`` make the library objects."""

    architecture: ArchitectureConfig
    prior: PriorConfig = PriorConfig()
    task: TaskConfig
    theory: TheoryConfig = TheoryConfig()
    sampling: SamplingConfig = SamplingConfig()
    phase: PhaseConfig = PhaseConfig()
    spectrum: SpectrumConfig = SpectrumConfig()

    @model_validator(mode="after")
    def _task_builds(self):
        try:
            self.build_task()
        except ValueError as e:  # generator argument checks, e.g. "supervise_every: must be <= T"
            raise ValueError(f"task.{e}") from None
        return self

    def build_architecture(self) -> Architecture:
        return self.architecture.build()

    def build_prior(self) -> Prior:
        return self.prior.build()

    def build_task(self) -> Task:
        return self.task.build(self.architecture.T)

    def solve_kwargs(self) -> dict:
        """Keyword arguments for :func:`kernelfield.solve`."""
        return dict(arch=self.build_architecture(), task=self.build_task(), prior=self.build_prior(),
                    phi=self.theory.phi, kappa=self.theory.kappa, tol=self.theory.tol, init=self.theory.init,
                    method=self.theory.method, num_particles=self.theory.num_particles, mc_tol=self.theory.mc_tol,
                    seed=self.theory.seed)

    def with_values(self, **fields) -> "Config":
        """A copy with dotted fields replaced, e.g. ``cfg.with_values(**{"architecture.T": 5})``;
        integral floats become ints (axis values are read as floats). Validated again."""
        data = self.model_dump(exclude_none=True)
        for dotted, value in fields.items():
            section, key = dotted.split(".", 1)
            data[section][key] = int(value) if float(value).is_integer() else float(value)
        return parse_config(data, source="override " + ", ".join(f"{k}={v}" for k, v in fields.items()))

    def sample_kwargs(self) -> dict:
        """Keyword arguments for :func:`kernelfield.sampling.sample`."""
        return dict(arch=self.build_architecture(), task=self.build_task(), prior=self.build_prior(),
                    phi=self.theory.phi, kappa=self.theory.kappa, **self.sampling.model_dump())


# ---------------------------------------------------------------------------------------------
# the generalisation study (``kernelfield generalization``)


class StudyTaskConfig(_GeneratorConfig):
    """``[task]`` of a study: ``generator`` (a key of :data:`kernelfield.tasks.TASKS`), ``T`` and
    ``seed`` (repeat ``r`` uses ``seed + r``); every other key goes to the generator (``P`` is set
    by the study)."""

    T: int = Field(ge=1, description="number of time steps")
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _arguments(self):
        from .tasks import TASKS

        params = inspect.signature(TASKS[self.generator]).parameters
        allowed = [p for p in params if p not in ("P", "T", "seed")]
        for key in self.kwargs:
            if key == "P":
                raise ValueError("P: set the training-set sizes in [study] (P = [...]), not in [task]")
            if key not in params:
                raise ValueError(f"{key}: not an argument of task generator {self.generator!r}; "
                                 f"allowed: generator, T, seed, {', '.join(allowed)}")
        missing = [p for p, par in params.items()
                   if p not in ("P", "T", "seed") and par.default is inspect.Parameter.empty and p not in self.kwargs]
        if missing:
            raise ValueError(f"{', '.join(missing)}: required by task generator {self.generator!r}")
        return self


class ScheduleConfig(_Section):
    """``[schedule]``: ``kind`` (a key of :data:`kernelfield.schedules.SCHEDULES`) and its
    parameter; a list for ``k`` or ``fraction`` sweeps the supervised fraction."""

    kind: Literal["all", "every", "first", "last", "random"] = "all"
    k: Optional[int | list[int]] = None
    offset: Optional[int] = Field(default=None, ge=0)
    fraction: Optional[float | list[float]] = None
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _parameters(self):
        needs = {"every": "k", "first": "k", "last": "k", "random": "fraction", "all": None}[self.kind]
        for name in ("k", "fraction"):
            value = getattr(self, name)
            if name == needs and value is None:
                raise ValueError(f"{name}: required when kind = {self.kind!r}")
            if name != needs and value is not None:
                raise ValueError(f"{name}: not used with kind = {self.kind!r}")
        if self.offset is not None and self.kind != "every":
            raise ValueError(f"offset: only used with kind = 'every', not with kind = {self.kind!r}")
        self.build()
        return self

    def build(self) -> list:
        from .schedules import SCHEDULES

        if self.kind == "all":
            return [SCHEDULES["all"]()]
        if self.kind == "random":
            values = self.fraction if isinstance(self.fraction, list) else [self.fraction]
            if not values:
                raise ValueError("fraction: give at least one value")
            return [SCHEDULES["random"](f, seed=self.seed) for f in values]
        values = self.k if isinstance(self.k, list) else [self.k]
        if not values:
            raise ValueError("k: give at least one value")
        extra = {"offset": self.offset} if self.kind == "every" and self.offset is not None else {}
        return [SCHEDULES[self.kind](k, **extra) for k in values]


class StudyConfig(_Section):
    architectures: list[str] = Field(default_factory=lambda: ["rnn", "dnn"], min_length=1)
    P: list[int] = Field(min_length=1, description="training-set sizes")
    P_test: int = Field(default=4, ge=0, description="held-out sequences")
    repeats: int = Field(default=1, ge=1, description="independent task draws")
    methods: list[Literal["theory", "lazy", "sampled", "langevin"]] = Field(
        default_factory=lambda: ["theory", "lazy"], min_length=1)
    heldout_batch: Optional[int] = Field(default=None, ge=1)

    @field_validator("P")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        if min(v) < 1:
            raise ValueError(f"training-set sizes must be >= 1, got {v}")
        return sorted(set(v))


class StudySamplingConfig(SamplingConfig):
    P: Optional[list[int]] = Field(default=None, description="subset of study.P at which to sample")


class LangevinConfig(_Section):
    N: int = Field(default=64, ge=1, description="network width")
    num_networks: int = Field(default=8, ge=1)
    num_steps: int = Field(default=20000, ge=1)
    burn_in: float = Field(default=0.25, ge=0, description="steps, or a fraction of num_steps if < 1")
    record_every: int = Field(default=10, ge=1)
    step_size: float | Literal["auto"] = "auto"
    safety: float = Field(default=0.2, gt=0, lt=2)
    seed: int = Field(default=0, ge=0)
    P: Optional[list[int]] = Field(default=None, description="subset of study.P at which to train")

    def kwargs(self) -> dict:
        out = self.model_dump()
        out["burn_in"] = float(self.burn_in) if self.burn_in < 1 else int(self.burn_in)
        return out


class GeneralizationConfig(_Section):
    """A validated generalisation study (see ``examples/generalization/*.toml``)."""

    task: StudyTaskConfig
    schedule: ScheduleConfig = ScheduleConfig()
    study: StudyConfig
    prior: PriorConfig = PriorConfig()
    theory: TheoryConfig = TheoryConfig()
    sampling: StudySamplingConfig = StudySamplingConfig()
    langevin: LangevinConfig = LangevinConfig()

    @model_validator(mode="after")
    def _consistent(self):
        from .experiments.generalization import architecture

        T = self.task.T
        for name in self.study.architectures:
            try:
                architecture(name, T)
            except ValueError as e:
                raise ValueError(f"study.{e}") from None
        for table in ("sampling", "langevin"):
            subset = getattr(self, table).P
            if subset is not None and not set(subset) <= set(self.study.P):
                raise ValueError(f"{table}.P: must be a subset of study.P = {self.study.P}, got {subset}")
        pool_size = max(self.study.P) + self.study.P_test
        try:
            pool = self.build_pool(pool_size)
        except ValueError as e:  # generator argument checks
            raise ValueError(f"task.{e}") from None
        if {"theory", "lazy"} & set(self.study.methods):
            self._check_input_kernel(pool)
        return self

    def _check_input_kernel(self, pool) -> None:
        """The kernels need linearly independent inputs at t = 0 over the rows solved together."""
        import numpy as np

        rows = max(self.study.P) + min(self.study.P_test, self.study.heldout_batch or self.study.P_test)
        x0 = pool.inputs[:rows, 0]
        K0 = self.prior.sigma_u**2 * x0 @ x0.T / pool.D + self.prior.sigma_b**2
        if np.linalg.eigvalsh(K0)[0] <= 1e-10 * max(1.0, np.abs(K0).max()):
            raise ValueError(
                f"task.D: the input kernel at t = 0 over max(P) + P_test = {rows} sequences is singular "
                f"(D = {pool.D}); the theory needs D >= {rows} (better 2x), or set study.heldout_batch to solve "
                "held-out sequences in smaller batches"
            )

    def build_pool(self, P: int):
        from .tasks import TASKS

        return TASKS[self.task.generator](P=P, T=self.task.T, seed=self.task.seed, **self.task.kwargs)

    def study_kwargs(self) -> dict:
        """Keyword arguments for :func:`kernelfield.experiments.generalization.learning_curves`."""
        methods = self.study.methods
        return dict(
            task=self.task.generator, T=self.task.T, P=self.study.P, archs=self.study.architectures,
            schedules=self.schedule.build(), P_test=self.study.P_test, repeats=self.study.repeats,
            task_kwargs=self.task.kwargs, prior=self.prior.build(), phi=self.theory.phi, kappa=self.theory.kappa,
            methods=methods, solve_kwargs={"tol": self.theory.tol, "init": self.theory.init},
            sampling=self.sampling.model_dump(exclude_none=True) if "sampled" in methods else None,
            langevin={k: v for k, v in self.langevin.kwargs().items() if v is not None} if "langevin" in methods else None,
            heldout_batch=self.study.heldout_batch, seed=self.task.seed,
        )


def _format_error(err: dict, root: type[BaseModel] | None = None) -> str:
    """One line naming the field of a pydantic error; ``root``: the validated model (default :class:`Config`)."""
    loc = ".".join(str(x) for x in err.get("loc", ()))
    msg = err.get("msg", "")
    typ = err.get("type", "")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if typ == "extra_forbidden":
        msg = "unknown key (check the spelling)"
        parent = _fields_at(err.get("loc", ())[:-1], root or Config)
        if parent:
            msg += f"; allowed: {', '.join(parent)}"
    elif typ == "missing":
        msg = "required but missing"
    elif ("input" in err and typ not in ("model_type", "dict_type") and not isinstance(err["input"], dict)
          and repr(err["input"]) not in msg):
        msg += f" (got {err['input']!r})"
    if typ == "value_error" and loc and msg.split(":")[0].split(",")[0].strip().isidentifier():
        # the message already names the key, e.g. "k: required when ..."; qualify it with the table
        return f"{loc}.{msg}"
    return f"{loc}: {msg}" if loc else msg


def _fields_at(loc, root: type[BaseModel]) -> list[str]:
    model = root
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        model = field.annotation
    return list(model.model_fields)


def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate an already parsed TOML mapping; raise :class:`ConfigError` naming ``source``."""
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        lines = [_format_error(err) for err in e.errors(include_url=False)]
        plural = "s" if len(lines) > 1 else ""
        raise ConfigError(f"{source}: invalid configuration{plural}: " + "; ".join(lines)) from None


def read_toml(path, what: str = "configuration") -> dict:
    """Parse a TOML file; raise :class:`ConfigError` naming ``path`` when it is missing or invalid."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a TOML {what} file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def parse_generalization_config(data: dict, source: str = "<config>") -> GeneralizationConfig:
    """Validate a parsed generalisation-study mapping; raise :class:`ConfigError` naming ``source``."""
    try:
        return GeneralizationConfig.model_validate(data)
    except ValidationError as e:
        lines = [_format_error(err, GeneralizationConfig) for err in e.errors(include_url=False)]
        plural = "s" if len(lines) > 1 else ""
        raise ConfigError(f"{source}: invalid configuration{plural}: " + "; ".join(lines)) from None


def load_generalization_config(path) -> GeneralizationConfig:
    """Read and validate a generalisation-study TOML file (``examples/generalization/*.toml``)."""
    return parse_generalization_config(read_toml(path), source=str(path))


def load_config(path) -> Config:
    """Read and validate a TOML configuration file (see the module docstring)."""
    return parse_config(read_toml(path), source=str(path))
