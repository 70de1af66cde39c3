"""Errors of configuration files: :class:`ConfigError`, one line per invalid field
(:func:`format_error`), and TOML reading (:func:`read_toml`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ValidationError

__all__ = ["ConfigError", "format_error", "read_toml", "validate"]


class ConfigError(ValueError):
    """A configuration file could not be read or is invalid; the message names the file and fields."""


def format_error(err: dict, root: type[BaseModel]) -> str:
    """One line naming the field of a pydantic error; ``root``: the validated model."""
    loc = ".".join(str(x) for x in err.get("loc", ()))
    msg = err.get("msg", "")
    typ = err.get("type", "")
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    if typ == "extra_forbidden":
        msg = "unknown key (check the spelling)"
        parent = _fields_at(err.get("loc", ())[:-1], root)
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



def validate(model: type[BaseModel], data: dict, source: str, what: str = "configuration"):
    """``model`` validated from ``data``; raise :class:`ConfigError` naming ``source`` and every invalid field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = [format_error(err, model) for err in e.errors(include_url=False)]
        plural = "s" if len(lines) > 1 else ""
        raise ConfigError(f"{source}: invalid {what}{plural}: " + "; ".join(lines)) from None


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

