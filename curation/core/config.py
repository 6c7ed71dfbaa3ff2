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


MAX_ERRORS_SHOWN = 20  # a 20 MB file of typos gets a readable message, not megabytes of it
MAX_YAML_NODES = 100_000  # values after YAML aliases are expanded; far above any real config
MAX_YAML_BYTES = 10 << 20


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
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    if path.is_dir():
        raise ConfigError(f"config {path} is a directory; give a YAML file")
    try:
        if path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"config {path} is {path.stat().st_size >> 20} MB; a config is a few lines of YAML")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config {path} cannot be read ({e.strerror})") from None
    try:
        data = _safe_yaml(text, path)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e)[:500]}") from None
    except RecursionError:
        raise ConfigError(f"{path}: its YAML is nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of settings, not {type(data).__name__}")
    return validate(data, model, source=str(path))


def _safe_yaml(text: str, path: Path):
    """`yaml.safe_load`, refusing a document whose aliases expand to more than MAX_YAML_NODES values
    ("billion laughs": 466 bytes that expand to 10^9 strings). Counted on the node graph, where an
    alias is the node it names, so counting costs no expansion."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return {}
    sizes: dict[int, int] = {}

    def size(n) -> int:
        if id(n) not in sizes:
            sizes[id(n)] = 0  # a recursive alias counts once
            if isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k) + size(v) for k, v in n.value)
            elif isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(v) for v in n.value)
            else:
                total = 1
            sizes[id(n)] = min(total, MAX_YAML_NODES + 1)
        return sizes[id(n)]

    if size(node) > MAX_YAML_NODES:
        raise ConfigError(f"{path}: its YAML aliases (&anchor / *alias) expand to more than {MAX_YAML_NODES:,} "
                          "values; a config needs none of that: write the values out")
    return yaml.safe_load(text)


def validate(data: dict, model: type[StrictModel], source: str = "config") -> StrictModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
