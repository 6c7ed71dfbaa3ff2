"""Configuration conventions shared by every rushes config.

Every config is a pydantic model that forbids unknown keys, loaded from YAML. A typo or a bad value
is an error naming the key, the value given and what is allowed (see `format_validation_error`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class StrictModel(BaseModel):
    """Base of every rushes config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the key, the value and what is allowed."""


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    lines = [f"{source} is not valid:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (value {e.get('input')!r}); remove it or fix its spelling")
        else:
            lines.append(f"  - {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def load_yaml(path: Path | str, model: type[StrictModel]) -> StrictModel:
    """Load and validate a YAML file into `model`, raising ConfigError with a readable message."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return validate(data, model, source=str(path))


def validate(data: dict, model: type[StrictModel], source: str = "config") -> StrictModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
