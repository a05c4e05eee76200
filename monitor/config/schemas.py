"""The JSON schemas a probe carries (tool parameters, `response_format`, `expect.json_schema`), checked once.

A schema that is itself invalid is a config error naming its YAML path
(`probes[0].tools[1].function.parameters: not a valid JSON schema: 'strin' is not valid ...`):
otherwise every reply would fail `schema_invalid` for a reason that is the config's, not the server's.
The check is jsonschema's own metaschema check (Draft 2020-12 unless the schema's `$schema` says otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.config.base import FieldError

__all__ = [
    "check_json_schema",
    "check_response_format",
    "check_tool_choice",
    "check_tools",
    "response_schema",
    "tool_names",
]

_MAX_PATH = 80


def check_json_schema(schema: object, where: str = "") -> dict[str, Any]:
    """The schema if jsonschema accepts it; otherwise a FieldError naming `where` (a ValueError if empty)."""
    import jsonschema  # lazily: only configs with schemas pay for it

    if not isinstance(schema, dict):
        raise FieldError(where, "a JSON schema must be a mapping")
    try:
        validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        pointer = "/".join(str(p) for p in exc.absolute_path)[:_MAX_PATH]
        at = f" at /{pointer}" if pointer else ""
        raise _error(where, f"not a valid JSON schema{at}: {exc.message}") from None
    return schema


def _error(where: str, message: str) -> ValueError:
    return FieldError(where, message) if where else ValueError(message)


def check_tools(tools: object) -> list[dict[str, Any]]:
    """OpenAI's `tools` list: each `{type: function, function: {name, description?, parameters?}}`."""
    if not isinstance(tools, list) or not tools:
        raise FieldError("tools", "must be a non-empty list of {type: function, function: {name, parameters}}")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise FieldError(where, "must be {type: function, function: {name, parameters}}")
        function = tool.get("function")
        if not isinstance(function, dict):
            raise FieldError(f"{where}.function", "must be a mapping with name and parameters")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise FieldError(f"{where}.function.name", "required (a string)")
        if name in names:
            raise FieldError(f"{where}.function.name", f"duplicate tool name {name!r}")
        names.add(name)
        if "parameters" in function:
            check_json_schema(function["parameters"], f"{where}.function.parameters")
    return tools


def tool_names(tools: object) -> list[str]:
    if not isinstance(tools, list):
        return []
    return [t["function"]["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]


def check_tool_choice(choice: object, tools: object) -> object:
    """`none`, `auto`, `required` or `{type: function, function: {name}}` naming one of `tools`."""
    if choice in ("none", "auto", "required"):
        if choice != "none" and tools is None:
            raise FieldError("tool_choice", f"{choice} needs tools")
        return choice
    if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        name = choice["function"].get("name")
        known = tool_names(tools)
        if name not in known:
            raise FieldError(
                "tool_choice.function.name", f"{name!r} is not one of the tools ({', '.join(known) or 'none'})"
            )
        return choice
    raise FieldError("tool_choice", "must be none, auto, required or {type: function, function: {name: NAME}}")


def check_response_format(value: object) -> object:
    """`{type: text}`, `{type: json_object}` or `{type: json_schema, json_schema: {name, schema, strict?}}`."""
    if not isinstance(value, Mapping) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise FieldError("response_format", "must be {type: text | json_object | json_schema, ...}")
    if value["type"] == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise FieldError("response_format.json_schema", "must be {name: NAME, schema: {...}}")
        if "schema" not in spec:
            raise FieldError("response_format.json_schema.schema", "required (the JSON schema of the reply)")
        check_json_schema(spec["schema"], "response_format.json_schema.schema")
    return value


def response_schema(sampling: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schema `response_format` asks the server to enforce, if any."""
    value = sampling.get("response_format")
    if isinstance(value, Mapping) and value.get("type") == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, Mapping) else None
        if isinstance(schema, dict):
            return schema
    return None
