"""The generalisation-study configuration (``kernelfield generalization``, ``examples/generalization/*.toml``)."""

from __future__ import annotations

import inspect
from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..schedules import SCHEDULES
from ..spec import Architecture
from ..tasks import TASKS
from .errors import read_toml, validate
from .run import GeneratorConfig, PriorConfig, SamplingConfig, Section, TheoryConfig

__all__ = ["GeneralizationConfig", "load_generalization_config", "parse_generalization_config"]


class StudyTaskConfig(GeneratorConfig):
    """``[task]`` of a study: ``generator`` (a key of :data:`kernelfield.tasks.TASKS`), ``T`` and
    ``seed`` (repeat ``r`` uses ``seed + r``); every other key goes to the generator (``P`` is set
    by the study)."""

    T: int = Field(ge=1, description="number of time steps")
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _arguments(self):
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


class ScheduleConfig(Section):
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


class StudyConfig(Section):
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


class LangevinConfig(Section):
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


class GeneralizationConfig(Section):
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
        T = self.task.T
        for name in self.study.architectures:
            Architecture.from_name(name, T, field="study.architectures")
        for table in ("sampling", "langevin"):
            subset = getattr(self, table).P
            if subset is not None and not set(subset) <= set(self.study.P):
                raise ValueError(f"{table}.P: must be a subset of study.P = {self.study.P}, got {subset}")
        pool_size = max(self.study.P) + self.study.P_test
        try:
            self.build_pool(pool_size)
        except ValueError as e:  # generator argument checks
            raise ValueError(f"task.{e}") from None
        return self

    def theory_method(self) -> str:
        """The solver that ``theory`` runs: ``theory.method``, with ``"auto"`` resolved as
        :func:`kernelfield.solve` does (exact for linear ``phi``, particles otherwise)."""
        if self.theory.method != "auto":
            return self.theory.method
        return "exact" if self.theory.phi == "linear" else "particles"

    def build_pool(self, P: int):
        return TASKS[self.task.generator](P=P, T=self.task.T, seed=self.task.seed, **self.task.kwargs)

    def solve_kwargs(self) -> dict:
        """Solver settings of ``[theory]`` for :func:`kernelfield.solve` (the study's ``solve_kwargs``)."""
        return self.theory.model_dump(include={"tol", "init", "method", "num_particles", "mc_tol", "seed"})

    def study_kwargs(self) -> dict:
        """Keyword arguments for :func:`kernelfield.experiments.generalization.learning_curves`."""
        methods = self.study.methods
        return dict(
            task=self.task.generator, T=self.task.T, P=self.study.P, archs=self.study.architectures,
            schedules=self.schedule.build(), P_test=self.study.P_test, repeats=self.study.repeats,
            task_kwargs=self.task.kwargs, prior=self.prior.build(), phi=self.theory.phi, kappa=self.theory.kappa,
            methods=methods, solve_kwargs=self.solve_kwargs(),
            sampling=self.sampling.model_dump(exclude_none=True) if "sampled" in methods else None,
            langevin={k: v for k, v in self.langevin.kwargs().items() if v is not None} if "langevin" in methods else None,
            heldout_batch=self.study.heldout_batch, seed=self.task.seed,
        )



def parse_generalization_config(data: dict, source: str = "<config>") -> GeneralizationConfig:
    """Validate a parsed generalisation-study mapping; raise :class:`ConfigError` naming ``source``."""
    return validate(GeneralizationConfig, data, source)


def load_generalization_config(path) -> GeneralizationConfig:
    """Read and validate a generalisation-study TOML file (``examples/generalization/*.toml``)."""
    return parse_generalization_config(read_toml(path), source=str(path))

