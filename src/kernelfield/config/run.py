"""TOML run configurations, validated with pydantic.

Example (every table but ``[architecture]`` and ``[task]`` may be left out; defaults shown)::

    [architecture]
    kind = "rnn"          # "rnn" | "dnn" | "tied_every_K" | "share_<families>" | "custom"
    T = 4                 #   (Architecture.from_name; the older kind = "tied_every" with k = K also works)
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
    # method = "auto"     # "auto" | "exact" | "particles" | "gaussian" (the Gaussian closure)

    [sampling]
    N = 128
    num_samples = 1000
    num_warmup = 500
    num_chains = 4
    seed = 0
    # num_integration_steps = 16, thin = 1, keep_weights = 20

The task's ``T`` is the architecture's. :func:`load_config` validates the whole file (including
building the architecture and the task, so e.g. a generator argument out of range is reported
at load time) and raises :class:`~kernelfield.config.ConfigError` with one line per problem, each
naming the file, the field (``section.key``) and what is allowed.
"""

from __future__ import annotations

import inspect
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..nonlinearities import available
from ..spec import Architecture, Prior, Task
from ..tasks import TASKS
from .errors import read_toml, validate

__all__ = ["Config", "load_config", "parse_config"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArchitectureConfig(Section):
    """``kind``: an architecture name of :meth:`~kernelfield.Architecture.from_name` (``rnn``,
    ``dnn``, ``tied_every_K``, ``share_<families>``, or ``tied_every`` with ``k``), or ``custom``
    with one group label per step in each of ``W_groups``, ``U_groups``, ``b_groups``, ``v_groups``."""

    kind: str = Field(description="architecture name (Architecture.from_name) or 'custom'")
    T: int = Field(ge=1, description="number of time steps")
    k: Optional[int] = Field(default=None, ge=1, description="tied_every: block length of tied W")
    W_groups: Optional[list[int]] = None
    U_groups: Optional[list[int]] = None
    b_groups: Optional[list[int]] = None
    v_groups: Optional[list[int]] = None

    @model_validator(mode="after")
    def _kind_fields(self):
        groups = {f: getattr(self, f"{f}_groups") for f in ("W", "U", "b", "v")}
        if self.kind == "custom":
            if self.k is not None:
                raise ValueError("k: only used with kind = 'tied_every', not with kind = 'custom'")
            missing = [f"{f}_groups" for f, g in groups.items() if g is None]
            if missing:
                raise ValueError(f"{', '.join(missing)}: required when kind = 'custom' (a list of T = {self.T} "
                                 "integer group labels, one per time step)")
        else:
            given = [f"{f}_groups" for f, g in groups.items() if g is not None]
            if given:
                raise ValueError(f"{', '.join(given)}: only used with kind = 'custom', not with kind = {self.kind!r}")
        self.build()  # the spec's own validation (names, group list lengths)
        return self

    def build(self) -> Architecture:
        if self.kind == "custom":
            return Architecture(self.T, self.W_groups, self.U_groups, self.b_groups, self.v_groups, name="custom")
        table = {"kind": self.kind} if self.k is None else {"kind": self.kind, "k": self.k}
        try:
            return Architecture.from_name(table, self.T, field="")
        except ValueError as e:
            if str(e).startswith("kind:"):
                raise ValueError(f"{e}; or 'custom' with W_groups, U_groups, b_groups, v_groups") from None
            raise


class PriorConfig(Section):
    g: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    sigma_u: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    sigma_b: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    sigma_v: float = Field(default=1.0, gt=0, allow_inf_nan=False)

    def build(self) -> Prior:
        return Prior(self.g, self.sigma_u, self.sigma_b, self.sigma_v)


class GeneratorConfig(BaseModel):
    """A task generator by name (a key of :data:`kernelfield.tasks.TASKS`) and its extra arguments."""

    model_config = ConfigDict(extra="allow", frozen=True)

    generator: str

    @field_validator("generator")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task generator {v!r}; allowed: {', '.join(sorted(TASKS))}")
        return v

    @property
    def kwargs(self) -> dict:
        return dict(self.model_extra or {})


class TaskConfig(GeneratorConfig):
    """``generator`` names a function in :data:`kernelfield.tasks.TASKS`; every other key is
    passed to it as a keyword argument (``T`` comes from ``[architecture]``)."""

    @model_validator(mode="after")
    def _arguments(self):
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
        return TASKS[self.generator](T=T, **self.kwargs)


class TheoryConfig(Section):
    phi: str = "linear"
    kappa: float = Field(default=0.1, gt=0, allow_inf_nan=False)
    tol: float = Field(default=1e-6, gt=0, allow_inf_nan=False)
    init: Literal["auto", "prior", "broken"] = "auto"
    method: Literal["auto", "exact", "particles", "gaussian"] = Field(
        default="auto", description="exact (linear phi), particles (any phi) or gaussian (the Gaussian closure: "
                                    "any phi, fast, approximate); auto: exact for linear phi, particles otherwise")
    num_particles: int | None = Field(default=None, ge=16,
                                      description="particle solver: population size (default max(4096, 128·n))")
    mc_tol: float = Field(default=0.01, gt=0, allow_inf_nan=False,
                          description="particle solver: target largest entrywise relative standard error of C")
    seed: int = Field(default=0, ge=0, description="particle solver: random seed")

    @field_validator("phi")
    @classmethod
    def _known_phi(cls, v: str) -> str:
        if v not in available():
            raise ValueError(f"unknown nonlinearity {v!r}; allowed: {', '.join(available())}")
        return v


class SamplingConfig(Section):
    N: int = Field(default=128, ge=1, description="network width")
    num_samples: int = Field(default=1000, ge=1)
    num_warmup: int = Field(default=500, ge=0)
    num_chains: int = Field(default=4, ge=1)
    seed: int = Field(default=0, ge=0)
    num_integration_steps: int = Field(default=16, ge=1)
    thin: int = Field(default=1, ge=1)
    keep_weights: int = Field(default=20, ge=0)


_AXIS_FIELDS = ("architecture.T", "prior.g", "prior.sigma_u", "prior.sigma_v", "theory.kappa")


class AxisConfig(Section):
    """One axis of a 2-D phase diagram: a configuration field and its values."""

    field: str = Field(description="dotted configuration field, e.g. 'architecture.T' or 'task.P'")
    values: list[float] = Field(min_length=1)

    @field_validator("field")
    @classmethod
    def _known_field(cls, v: str) -> str:
        if v not in _AXIS_FIELDS and not v.startswith("task."):
            raise ValueError(f"unknown axis field {v!r}; allowed: {', '.join(_AXIS_FIELDS)} or task.<argument>")
        return v


class PhaseConfig(Section):
    """``kernelfield phase-diagram``: the bifurcation diagram over ``values`` of ``control`` for
    each of ``architectures`` (names of :meth:`~kernelfield.Architecture.from_name`, e.g. ``"rnn"``,
    ``"dnn"``, ``"tied_every_2"``), sampled networks at
    ``widths`` for ``sample_values``, and (with ``x`` and ``y``) the critical signal over a grid."""

    control: Literal["target_scale", "kappa", "g"] = "target_scale"
    values: list[float] = Field(default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0], min_length=1)
    # the older spelling "tied_every:2" stays the default: it is part of every sweep point's hashed config
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
            Architecture.from_name(name, 1, field="")  # a valid name is valid for every T
        return v

    @model_validator(mode="after")
    def _axes(self):
        if (self.x is None) != (self.y is None):
            raise ValueError("x, y: give both axes of the phase diagram or neither")
        if self.x is not None and self.x.field == self.y.field:
            raise ValueError(f"y.field: must differ from x.field ({self.x.field!r})")
        return self

    def build_architectures(self, T: int) -> list[Architecture]:
        return [Architecture.from_name(name, T, field="phase.architectures") for name in self.architectures]


class SpectrumConfig(Section):
    """``kernelfield spectrum``: predicted outliers of the recurrent matrix against sampled
    spectra at widths ``widths`` (sampler settings from ``[sampling]``) over ``values`` of ``control``;
    with ``contrast_dnn`` the same for the DNN's last-step matrix ``W_{T-1}``."""

    control: Literal["target_scale", "kappa", "g"] = "target_scale"
    values: list[float] = Field(default=[0.3, 1.0, 2.0], min_length=1)
    widths: list[int] = Field(default=[128, 256], min_length=1)
    contrast_dnn: bool = Field(default=False, description="also sample the DNN (untied W_t) for contrast")

    _positive_values = field_validator("values")(PhaseConfig._positive_values.__func__)
    _widths = field_validator("widths")(PhaseConfig._widths.__func__)


class Config(Section):
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
        """Keyword arguments for :func:`kernelfield.finite.sampling.sample`."""
        return dict(arch=self.build_architecture(), task=self.build_task(), prior=self.build_prior(),
                    phi=self.theory.phi, kappa=self.theory.kappa, **self.sampling.model_dump())



def parse_config(data: dict, source: str = "<config>") -> Config:
    """Validate an already parsed TOML mapping; raise :class:`ConfigError` naming ``source``."""
    return validate(Config, data, source)



def load_config(path) -> Config:
    """Read and validate a TOML configuration file (see the module docstring)."""
    return parse_config(read_toml(path), source=str(path))
