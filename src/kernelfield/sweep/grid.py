"""The sweep file: its schema (:class:`SweepFile`, :class:`Range`), validation and the grid of
run configurations it expands to (:class:`Sweep` of :class:`Axis` and :class:`SweepPoint`)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import Config, ConfigError, read_toml
from ..config.errors import format_error
from .computations import COMPUTATIONS

__all__ = ["Axis", "Range", "Sweep", "SweepFile", "SweepPoint", "SECTIONS", "load_config", "parse_config"]

SECTIONS = ("architecture", "prior", "task", "theory", "sampling")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """``num`` values from ``start`` to ``stop`` (both included), evenly (``linear``) or
    geometrically (``log``, needs ``start, stop > 0``) spaced; integers when both ends are."""

    start: Union[int, float] = Field(allow_inf_nan=False)
    stop: Union[int, float] = Field(allow_inf_nan=False)
    num: int = Field(ge=1)
    spacing: Literal["linear", "log"] = "linear"

    @model_validator(mode="after")
    def _log_positive(self):
        if self.spacing == "log" and (self.start <= 0 or self.stop <= 0):
            raise ValueError(f"spacing: 'log' needs start > 0 and stop > 0, got start = {self.start}, stop = {self.stop}")
        return self

    def values(self) -> list:
        space = np.geomspace if self.spacing == "log" else np.linspace
        values = space(self.start, self.stop, self.num)
        if isinstance(self.start, int) and isinstance(self.stop, int):
            return [int(v) for v in np.rint(values)]
        return [float(v) for v in values]


class SweepFile(_Strict):
    name: Optional[str] = None
    compute: list[str] = Field(min_length=1)
    base: dict[str, Any] = {}
    axes: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must be a non-empty string")
        return v

    @field_validator("compute")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for name in v:
            if name not in COMPUTATIONS:
                raise ValueError(f"unknown computation {name!r}; allowed: {', '.join(COMPUTATIONS)}")
        repeated = sorted({n for n in v if v.count(n) > 1})
        if repeated:
            raise ValueError(f"{', '.join(map(repr, repeated))} listed more than once")
        for name in v:
            comp = COMPUTATIONS[name]
            missing = [r for r in comp.requires if r not in v]
            if missing:
                raise ValueError(f"{name!r} needs {' and '.join(map(repr, comp.requires))} in compute "
                                 f"(missing {', '.join(map(repr, missing))})")
            if comp.requires_any and not any(r in v for r in comp.requires_any):
                raise ValueError(f"{name!r} needs at least one of {', '.join(map(repr, comp.requires_any))} in compute")
        return v

    @field_validator("base")
    @classmethod
    def _sections(cls, v: dict) -> dict:
        for section, table in v.items():
            if section not in SECTIONS:
                raise ValueError(f"{section}: unknown section; allowed: {', '.join(SECTIONS)}")
            if not isinstance(table, dict):
                raise ValueError(f"{section}: must be a table")
        return v


@dataclass(frozen=True)
class Axis:
    """One dimension of the grid: coordinate ``name``, the config ``path`` it sets (``"task.P"`` or
    a whole section ``"architecture"``), the ``values`` merged into each point and their
    coordinate ``labels`` (the values themselves for a field axis)."""

    name: str
    path: str
    values: tuple
    labels: tuple


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: content ``key`` (hash), ``index`` into the axes, ``coords`` (axis name ->
    label) and the validated run configuration ``config`` (a mapping with every default filled in)."""

    key: str
    index: tuple[int, ...]
    coords: dict
    config: dict


@dataclass(frozen=True)
class Sweep:
    """A validated sweep (the file format is in :mod:`kernelfield.sweep`). ``points`` is the full
    grid (outer product of ``axes`` in order); ``compute`` is in execution order; ``data`` the
    sweep file as parsed."""

    name: str
    compute: tuple[str, ...]
    options: dict
    axes: tuple[Axis, ...]
    points: tuple[SweepPoint, ...]
    data: dict
    source: str = "<sweep>"

    @property
    def config_hash(self) -> str:
        """SHA-256 of the sweep's points, computations and options (the provenance of every point)."""
        return _hash({"name": self.name, "points": [p.key for p in self.points]})

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(a.values) for a in self.axes)


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _section_fields(section: str) -> list[str]:
    return list(Config.model_fields[section].annotation.model_fields)


def _axis_values(path: str, spec) -> tuple[list, list[str]]:
    """(values, errors) of one axis."""
    where = f"axes.{path}"
    section = "." not in path
    if isinstance(spec, dict) and not section:
        try:
            return Range.model_validate(spec).values(), []
        except ValidationError as e:
            return [], [f"{where}.{format_error(err, Range)}" for err in e.errors(include_url=False)]
    if not isinstance(spec, list):
        allowed = "a list of tables" if section else "a list of values or a range { start, stop, num }"
        return [], [f"{where}: must be {allowed}, got {spec!r}"]
    if not spec:
        return [], [f"{where}: needs at least one value"]
    kinds = {isinstance(v, dict) for v in spec}
    if section and kinds != {True}:
        return [], [f"{where}: a whole-section axis takes a list of tables, e.g. [{{ kind = \"rnn\" }}, ...]"]
    if not section and (kinds != {False} or any(isinstance(v, list) for v in spec)):
        return [], [f"{where}: values must be numbers, strings or booleans (or give a range "
                    "{ start, stop, num }), not tables or lists"]
    return list(spec), []


def _axis_path_errors(path: str) -> list[str]:
    parts = path.split(".")
    if parts[0] not in SECTIONS or len(parts) > 2:
        return [f"axes.{path}: unknown field; an axis is 'section.key' or a whole section, sections: "
                f"{', '.join(SECTIONS)}"]
    if len(parts) == 2 and parts[0] != "task" and parts[1] not in _section_fields(parts[0]):
        return [f"axes.{path}: unknown field of [{parts[0]}]; allowed: {', '.join(_section_fields(parts[0]))}"]
    if parts == ["task", "T"]:
        return [f"axes.{path}: the number of time steps is architecture.T"]
    return []


def _merge(base: dict, axes: list[tuple[str, Any]]) -> dict:
    data = {section: dict(table) for section, table in base.items()}
    for path, value in axes:
        if "." in path:
            section, key = path.split(".")
            data.setdefault(section, {})[key] = value
        else:
            data[path] = {**data.get(path, {}), **{k: v for k, v in value.items() if k != "label"}}
    return data


def _label(path: str, value, cfg: Config):
    if "." in path:
        return value
    if "label" in value:
        return str(value["label"])
    if path == "architecture":
        return cfg.build_architecture().name
    return ",".join(f"{k}={v}" for k, v in value.items())


def _coordinate_names(paths: list[str]) -> list[str]:
    short = [p.split(".")[-1] for p in paths]
    return [s if short.count(s) == 1 else p.replace(".", "_") for s, p in zip(short, paths)]


def _point_errors(exc: Exception, axis_paths: list[str], coords: dict, values: dict) -> list[tuple[str, str]]:
    """(message, where) pairs for a point that failed validation; ``where`` is the axis value that
    caused it or, for the base's fields and options, the point."""
    if isinstance(exc, ValidationError):
        lines = [format_error(err, Config) for err in exc.errors(include_url=False)]
    else:
        lines = [str(exc)]
    out = []
    for line in lines:
        fieldname = line.split(":")[0].strip()
        axis = next((p for p in axis_paths if fieldname == p or fieldname.startswith(p + ".")), None)
        if axis is not None:
            out.append((f"axes.{line}", f"axis value {values[axis]!r}"))
        else:
            where = "point " + ", ".join(f"{k}={v}" for k, v in coords.items())
            out.append((line if fieldname.startswith("options.") else f"base.{line}", where))
    return out


def _parse_options(parsed: SweepFile, compute: tuple[str, ...]) -> tuple[dict, list[str]]:
    """(validated options per computation, errors) of ``[options.*]``; defaults for the rest."""
    options, errors = {}, []
    for key, table in parsed.options.items():
        comp = COMPUTATIONS.get(key)
        with_options = [c for c in compute if COMPUTATIONS[c].options is not None]
        if comp is None or key not in compute or comp.options is None:
            errors.append(f"options.{key}: not a computation in compute that takes options; "
                          f"allowed: {', '.join(with_options) or 'none'}")
            continue
        try:
            options[key] = comp.options.model_validate(table)
        except ValidationError as e:
            errors += [f"options.{key}.{format_error(err, comp.options)}" for err in e.errors(include_url=False)]
    for c in compute:
        comp = COMPUTATIONS[c]
        if comp.options is not None and c not in options and c not in parsed.options:
            try:
                options[c] = comp.options.model_validate({})
            except ValidationError as e:
                errors += [f"options.{c}.{format_error(err, comp.options)}" for err in e.errors(include_url=False)]
    return options, errors


def _parse_axes(parsed: SweepFile) -> tuple[list[list], list[str]]:
    """(values of each axis, errors) of ``[axes]``."""
    value_lists, errors = [], []
    for path, spec in parsed.axes.items():
        path_errors = _axis_path_errors(path)
        values, value_errors = ([], []) if path_errors else _axis_values(path, spec)
        errors += path_errors + value_errors
        if values and not value_errors:
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:
                errors.append(f"axes.{path}: value {repeated[0]!r} given more than once")
        value_lists.append(values)
    return value_lists, errors


def _expand(parsed: SweepFile, compute, options, paths, value_lists):
    """Validate every grid point: (points as (key, index, config), axis labels, errors by message)."""
    names = _coordinate_names(paths)
    point_errors: dict[str, list[str]] = {}
    points, labels = [], [[None] * len(v) for v in value_lists]
    for index in itertools.product(*(range(len(v)) for v in value_lists)):
        values = {p: value_lists[i][j] for i, (p, j) in enumerate(zip(paths, index))}
        coords = {n: (values[p] if "." in p else j) for n, p, j in zip(names, paths, index)}
        try:
            cfg = Config.model_validate(_merge(parsed.base, list(values.items())))
            for c in compute:
                if COMPUTATIONS[c].check is not None:
                    COMPUTATIONS[c].check(cfg, options.get(c))
        except (ValidationError, ValueError) as e:
            for message, where in _point_errors(e, paths, coords, values):
                point_errors.setdefault(message, [])
                if where not in point_errors[message]:
                    point_errors[message].append(where)
            continue
        for i, (p, j) in enumerate(zip(paths, index)):
            labels[i][j] = _label(p, values[p], cfg)
        config = cfg.model_dump(mode="json")
        key = _hash({"config": config, "compute": compute,
                     "options": {c: options[c].model_dump(mode="json") for c in options}})[:20]
        points.append((key, index, config))
    return points, labels, point_errors


def _point_error_lines(point_errors: dict[str, list[str]], total: int) -> list[str]:
    lines = []
    for message, where in point_errors.items():
        if not message.startswith("axes.") and len(where) == total:  # the base's own error
            where = []
        if where:
            shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
            message += f" (at {shown})"
        lines.append(message)
    return lines


def parse_config(data: dict, source: str = "<sweep>", name: str | None = None) -> Sweep:
    """Validate a parsed sweep file (see :mod:`kernelfield.sweep`) and expand its grid; raise
    :class:`~kernelfield.config.ConfigError` naming ``source`` and every invalid field."""

    def fail(lines):
        plural = "s" if len(lines) > 1 else ""
        raise ConfigError(f"{source}: invalid sweep configuration{plural}: " + "; ".join(lines))

    try:
        parsed = SweepFile.model_validate(data)
    except ValidationError as e:
        fail([format_error(err, SweepFile) for err in e.errors(include_url=False)])
    compute = tuple(c for c in COMPUTATIONS if c in parsed.compute)
    options, option_errors = _parse_options(parsed, compute)
    value_lists, axis_errors = _parse_axes(parsed)
    if option_errors or axis_errors:
        fail(option_errors + axis_errors)
    paths = list(parsed.axes)
    points, labels, point_errors = _expand(parsed, compute, options, paths, value_lists)
    if point_errors:
        fail(_point_error_lines(point_errors, math.prod(len(v) for v in value_lists)))
    for path, axis_labels in zip(paths, labels):
        repeated = [v for i, v in enumerate(axis_labels) if v in axis_labels[:i]]
        if repeated:
            fail([f"axes.{path}: two values have the label {repeated[0]!r}; give each table a distinct 'label'"])
    axes = tuple(Axis(n, p, tuple(v), tuple(lab))
                 for n, p, v, lab in zip(_coordinate_names(paths), paths, value_lists, labels))
    sweep_points = tuple(
        SweepPoint(key, index, {a.name: a.labels[j] for a, j in zip(axes, index)}, config)
        for key, index, config in points
    )
    return Sweep(name=parsed.name or name or "sweep", compute=compute, options=options, axes=axes,
                 points=sweep_points, data=data, source=source)


def load_config(path) -> Sweep:
    """Read and validate a sweep TOML file (see :mod:`kernelfield.sweep`)."""
    return parse_config(read_toml(path, "sweep configuration"), source=str(path), name=Path(path).stem)
