"""Configuration conventions shared by every rushes config.

Every config is a pydantic model that forbids unknown keys, loaded from YAML. A typo or a bad value
is an error naming the key, the value given and what is allowed (see `format_validation_error`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from curation.core.yamlfile import ConfigError, read_yaml_mapping


class StrictModel(BaseModel):
    """Base of every rushes config: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


MAX_ERRORS_SHOWN = 20  # a 20 MB file of typos gets a readable message, not megabytes of it


def short(value) -> str:
    """`repr(value)`, cut short: bounded in length and depth, so a huge or self-similar value (a YAML
    alias bomb) costs nothing to show."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxstring, r.maxother = 3, 6, 6, 60, 60
    return r.repr(value)


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    lines = [f"{source} is not valid:"]
    errors = err.errors()
    for e in errors[:MAX_ERRORS_SHOWN]:
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        key = key if len(key) <= 80 else key[:77] + "..."
        if e["type"] == "extra_forbidden":
            lines.append(f"  - unknown key '{key}' (value {short(e.get('input'))}); remove it or fix its spelling")
        else:
            lines.append(f"  - {key}: {e['msg']} (got {short(e.get('input'))})")
    if len(errors) > MAX_ERRORS_SHOWN:
        lines.append(f"  ... and {len(errors) - MAX_ERRORS_SHOWN} more")
    return "\n".join(lines)


def load_yaml(path: Path | str, model: type[StrictModel]) -> StrictModel:
    """Load and validate a YAML file into `model`, raising ConfigError with a readable message."""
    return validate(read_yaml_mapping(path), model, source=str(path))


def validate(data: dict, model: type[StrictModel], source: str = "config") -> StrictModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
