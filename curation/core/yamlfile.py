"""Reading a YAML config file safely: the part of the config conventions that needs only PyYAML.

`training/` reads its configs with it on a torch-only box (no pydantic there); `curation.core.config`
validates the mapping it returns against a pydantic model.
"""

from __future__ import annotations

from pathlib import Path

import yaml

MAX_YAML_NODES = 100_000  # values after YAML aliases are expanded; far above any real config
MAX_YAML_BYTES = 10 << 20


class ConfigError(ValueError):
    """A config file or value is wrong; the message names the key, the value and what is allowed."""


def read_yaml_mapping(path: Path | str) -> dict:
    """The mapping a YAML config file holds; ConfigError (naming the file) for anything else."""
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
    return data


def _safe_yaml(text: str, path: Path):
    """`yaml.safe_load`, refusing a document whose aliases expand to more than MAX_YAML_NODES values
    ("billion laughs": 466 bytes that expand to 10^9 strings). Counted on the node graph, where an
    alias is the node it names, so counting costs no expansion. The text is parsed once, by libyaml
    where PyYAML was built with it (pure Python takes seconds on a multi-megabyte file)."""
    loader = _SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        if _expanded_size(node) > MAX_YAML_NODES:
            raise ConfigError(f"{path}: its YAML aliases (&anchor / *alias) expand to more than {MAX_YAML_NODES:,} "
                              "values; a config needs none of that: write the values out")
        return loader.construct_document(node)
    finally:
        loader.dispose()


_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _expanded_size(root) -> int:
    """How many values `root` stands for once its aliases are expanded, counted up to MAX_YAML_NODES + 1."""
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

    return size(root)
