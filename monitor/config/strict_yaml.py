"""The config file reader: a strict YAML loader that yields plain JSON-like data only.

Duplicate keys, aliases (`*name`, so no billion-laughs expansion), merge keys, tags and non-JSON
scalars (dates, `!!binary`, `!!set`) are refused, and so is nesting deeper than `MAX_CONFIG_DEPTH`.
Every refusal is a one-line `ConfigError` with the YAML path or the position.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NoReturn

import yaml

from monitor.errors import ConfigError
from monitor.textfile import read_text_file

__all__ = ["MAX_CONFIG_BYTES", "MAX_CONFIG_DEPTH", "read_config_file", "read_config_yaml"]

MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 64


def read_config_file(path: Path) -> dict[str, Any]:
    text = read_text_file(path, "config", MAX_CONFIG_BYTES)
    loaded = read_config_yaml(text, source=str(path))
    if loaded is None:
        raise ConfigError(f"{path}: the config file is empty (see `llm-monitor init` for an example)")
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (storage:, targets:, probes:)")
    return loaded


class _Refused(Exception):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        self.problem, self.mark = problem, mark


class _ConfigLoader(yaml.SafeLoader):
    """Builds the node tree only (`_plain` turns it into data); refuses aliases and deep nesting as it goes."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"aliases (*{event.anchor}) are not allowed in a config file", event.start_mark)
        # The composer recurses once per level: refuse before Python's recursion limit does.
        self.depth += 1
        if self.depth > MAX_CONFIG_DEPTH:
            raise _Refused(f"nested deeper than {MAX_CONFIG_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.2 (and JSON) floats without a dot, such as 1e3; YAML 1.1 would read them as strings.
_ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)
_YAML = "tag:yaml.org,2002:"
_SCALARS = {f"{_YAML}{kind}" for kind in ("null", "bool", "int", "float", "str")}
_REFUSED_TAGS = {
    f"{_YAML}timestamp": "a date or time is not allowed here (quote it to send text)",
    f"{_YAML}binary": "!!binary values are not allowed",
    f"{_YAML}set": "!!set values are not allowed (use a list)",
    f"{_YAML}omap": "!!omap values are not allowed (use a mapping)",
    f"{_YAML}pairs": "!!pairs values are not allowed (use a mapping)",
    f"{_YAML}merge": "merge keys (<<) are not allowed",
}


def read_config_yaml(text: str, *, source: str = "<config>") -> Any:
    """Parse a config document into plain JSON-like data (dict, list, str, int, float, bool, None).

    Raises ConfigError with one line: the YAML path (`probes[0].extra_body.when`) or the position.
    """
    loader = _ConfigLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _plain(loader, node, "")
    except _Refused as exc:
        raise ConfigError(f"{source}: {exc.problem}{_at(exc.mark)}") from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{source}: invalid YAML{_at(getattr(exc, 'problem_mark', None))}: {problem}") from None
    finally:
        loader.dispose()


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _plain(loader: _ConfigLoader, node: yaml.Node, path: str) -> Any:
    def refuse(problem: str) -> NoReturn:
        raise ConfigError(f"{path or '(top level)'}: {problem} (line {node.start_mark.line + 1})")

    if node.tag in _REFUSED_TAGS:
        refuse(_REFUSED_TAGS[node.tag])
    if isinstance(node, yaml.ScalarNode):
        if node.tag not in _SCALARS:
            refuse(f"YAML tag {node.tag} is not allowed")
        return loader.construct_object(node)
    if isinstance(node, yaml.SequenceNode):
        if node.tag != f"{_YAML}seq":
            refuse(f"YAML tag {node.tag} is not allowed")
        return [_plain(loader, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
    if node.tag != f"{_YAML}map":
        refuse(f"YAML tag {node.tag} is not allowed")
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        if key_node.tag in _REFUSED_TAGS:
            refuse(_REFUSED_TAGS[key_node.tag])
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALARS:
            refuse("a key must be a plain string or number")
        key = loader.construct_object(key_node)
        where = f"{path}.{key}" if path else str(key)
        if key in out:
            raise ConfigError(f"{where}: duplicate key (line {key_node.start_mark.line + 1})")
        out[key] = _plain(loader, value_node, where)
    return out
