"""JSON values that satisfy a JSON schema, and the schema errors of vLLM 0.32's grammar backend.

`instance(schema)` is what the mock "model" writes under guided decoding (tool-call arguments,
`response_format`). It is deterministic: the same schema always gives the same value. Supported:
`type` (also lists), `const`, `enum`, `anyOf`/`oneOf` (the first branch that is not `null`),
`allOf` (merged), local `$ref`; objects (`properties`, every one of them, `required`,
`additionalProperties`, `minProperties`/`maxProperties`), strings (`minLength`, `maxLength`, common
`format`s; `pattern` is best effort), numbers and integers (`minimum`, `maximum`, both
`exclusive*` forms, `multipleOf`), booleans, `null`, arrays (`items`, `prefixItems`, `minItems`,
`maxItems`, `uniqueItems`). A `oneOf` whose first branch also matches a later one is not
detected.

`grammar_error(schema)` names the first structural error the way vLLM 0.32 reports it: with the
default `auto` backend, xgrammar rejects the schema and the request falls back to llguidance,
whose message is returned ("Grammar error: Invalid type: nosuchtype"; read in
vllm/sampling_params.py `_validate_structured_outputs` and
vllm/v1/structured_output/backend_guidance.py, the messages taken from llguidance 1.7.6).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["JSON_TYPES", "grammar_error", "instance"]

JSON_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
MAX_DEPTH = 8  # recursive $refs stop here: deeper objects get only their required keys
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")


def instance(schema: Mapping[str, Any] | bool) -> Any:
    """A value valid against `schema` (see the module docstring for what is understood)."""
    return _Generator(schema).value(schema, "", 0, 0)


class _Generator:
    def __init__(self, root: Mapping[str, Any] | bool) -> None:
        self._root = root

    def _resolve(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """Follow local `$ref`s and merge `allOf`, so the rest sees one plain schema."""
        merged = dict(schema)
        for _ in range(32):  # a bound on chains of refs
            ref = merged.pop("$ref", None)
            if not isinstance(ref, str):
                break
            target = _pointer(self._root, ref)
            merged = {**(target if isinstance(target, dict) else {}), **merged}
        for part in merged.pop("allOf", None) or []:
            if isinstance(part, Mapping):
                merged = _merge(merged, self._resolve(part))
        return merged

    def value(self, schema: Mapping[str, Any] | bool, hint: str, depth: int, variant: int) -> Any:
        if not isinstance(schema, Mapping):
            return hint or "sample"  # `true` accepts anything
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            non_null = [item for item in enum if item is not None]
            return (non_null or enum)[variant % len(non_null or enum)]
        for key in ("anyOf", "oneOf"):
            branches = [b for b in schema.get(key) or [] if isinstance(b, Mapping | bool)]
            if branches:
                chosen = next((b for b in branches if not _is_null(b)), branches[0])
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                return self.value(
                    _merge(rest, self._resolve(chosen)) if isinstance(chosen, Mapping) else chosen, hint, depth, variant
                )
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, hint, depth)
        if kind == "string":
            return _string(schema, hint, variant)
        if kind in ("integer", "number"):
            return _number(schema, integer=kind == "integer", variant=variant)
        if kind == "boolean":
            return variant % 2 == 0
        return None

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        found = schema.get("properties")
        properties: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        required = [key for key in schema.get("required") or [] if isinstance(key, str)]
        keys = [*properties, *(key for key in required if key not in properties)]
        if depth >= MAX_DEPTH:
            keys = [key for key in keys if key in required]
        limit = _count(schema, "maxProperties")
        if limit is not None and len(keys) > limit:
            keys = [key for key in keys if key in required] + [key for key in keys if key not in required]
            keys = keys[: max(limit, len(required))]
        extra = schema.get("additionalProperties", True)
        out = {key: self.value(properties.get(key, extra), key, depth + 1, 0) for key in keys}
        wanted = _count(schema, "minProperties") or 0
        serial = 0
        while len(out) < wanted and extra is not False:
            key = f"key{serial}"
            serial += 1
            if key not in out:
                out[key] = self.value(extra, key, depth + 1, 0)
        return out

    def _array(self, schema: Mapping[str, Any], hint: str, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if isinstance(items, list):  # draft 4-7 tuples
            prefix, items = items, schema.get("additionalItems", True)
        prefix = [p for p in prefix or [] if isinstance(p, Mapping | bool)]
        low = _count(schema, "minItems") or 0
        high = _count(schema, "maxItems")
        count = max(low, len(prefix), 0 if depth >= MAX_DEPTH or items is False else 1)
        if high is not None:
            count = min(count, high)
        unique = schema.get("uniqueItems") is True
        out = []
        for index in range(count):
            item_schema = prefix[index] if index < len(prefix) else items
            out.append(self.value(item_schema, hint, depth + 1, index if unique else 0))
        return out


def _count(schema: Mapping[str, Any], key: str) -> int | None:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pointer(root: object, ref: str) -> object:
    if not ref.startswith("#"):
        return {}
    node = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**extra, **base}
    if isinstance(base.get("properties"), Mapping) and isinstance(extra.get("properties"), Mapping):
        merged["properties"] = {**extra["properties"], **base["properties"]}
    required = [*(base.get("required") or []), *(extra.get("required") or [])]
    if required:
        merged["required"] = list(dict.fromkeys(required))
    return merged


def _is_null(schema: Mapping[str, Any] | bool) -> bool:
    return isinstance(schema, Mapping) and schema.get("type") == "null"


def _type_of(schema: Mapping[str, Any]) -> str:
    declared = schema.get("type")
    if isinstance(declared, list):
        named = [t for t in declared if t in JSON_TYPES]
        declared = next((t for t in named if t != "null"), named[0] if named else None)
    if declared in JSON_TYPES:
        return str(declared)
    if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
        return "array"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return "object"  # an empty schema accepts anything; an object reads best as a reply


def _string(schema: Mapping[str, Any], hint: str, variant: int) -> str:
    fmt = schema.get("format")
    text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
    if not text:
        text = f"sample {hint}".strip() if hint else "sample"
        if variant:
            text += f" {variant}"
    low, high = _count(schema, "minLength"), _count(schema, "maxLength")
    pattern = schema.get("pattern")
    try:
        regex = re.compile(pattern) if isinstance(pattern, str) else None
    except re.error:
        regex = None
    candidates = [text] if regex is None else [text, "a", "A", "0", "a0", "sample", ""]
    fitted = [_fit_length(candidate, low, high) for candidate in candidates]
    return next((c for c in fitted if regex is None or regex.search(c)), fitted[0])


def _fit_length(text: str, low: int | None, high: int | None) -> str:
    if low is not None and len(text) < low:
        text += (text[-1:] or "x") * (low - len(text))  # repeating the last character keeps "^[0-9]+$"
    return text if high is None else text[:high]


def _bounds(schema: Mapping[str, Any]) -> tuple[float | None, bool, float | None, bool]:
    """(low, low exclusive, high, high exclusive), for both the draft-4 and the numeric forms."""
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    low_open = ex_low is True
    high_open = ex_high is True
    if isinstance(ex_low, int | float) and not isinstance(ex_low, bool) and (low is None or ex_low >= low):
        low, low_open = ex_low, True
    if isinstance(ex_high, int | float) and not isinstance(ex_high, bool) and (high is None or ex_high <= high):
        high, high_open = ex_high, True
    return (
        low if isinstance(low, int | float) else None,
        low_open,
        high if isinstance(high, int | float) else None,
        high_open,
    )


def _number(schema: Mapping[str, Any], *, integer: bool, variant: int) -> int | float:
    low, low_open, high, high_open = _bounds(schema)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
        return _multiple(float(low if low is not None else 0) + variant, float(step), schema, integer=integer)
    if integer:
        lo = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
        hi = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
        value = 1 + variant
        if lo is not None:
            value = max(value, lo)
        if hi is not None:
            value = min(value, hi)
        return value
    if low is not None and high is not None:
        return low + (high - low) / (2 + variant)
    if low is not None:
        return low + 1 + variant if low_open else low + variant
    if high is not None:
        return min(1.5, high - 1 if high_open else high) - variant
    return 1.5 + variant


def _in_bounds(value: float, schema: Mapping[str, Any]) -> bool:
    low, low_open, high, high_open = _bounds(schema)
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or (value < high if high_open else value <= high)


def _multiple(start: float, step: float, schema: Mapping[str, Any], *, integer: bool) -> int | float:
    """The multiple of `step` nearest above `start` (else below) that is in bounds and divides exactly.

    "Exactly" in floating point, as validators check it: `candidate / step` must be a whole number.
    """
    first = math.ceil(start / step)
    for k in [*range(first, first + 256), *range(first - 1, first - 256, -1)]:
        candidate = k * step
        if integer and not candidate.is_integer():
            continue
        if candidate / step == k and _in_bounds(candidate, schema):
            return int(candidate) if candidate.is_integer() else candidate
    return int(start) if integer else start


def grammar_error(schema: object, root: object = None) -> str | None:
    """vLLM 0.32's 400 message for a schema its grammar backend rejects, or None when it compiles."""
    root = schema if root is None else root
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, Mapping):
        return "Grammar error: schema must be an object or boolean"
    error = _type_error(schema.get("type")) or _keyword_error(schema, root)
    if error is not None:
        return error
    for child in _children(schema):
        error = grammar_error(child, root)
        if error is not None:
            return error
    return None


def _type_error(declared: object) -> str | None:
    if declared is None:
        return None
    names = [declared] if isinstance(declared, str) else declared
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return "Grammar error: type must be a string or array of strings"
    unknown = [name for name in names if name not in JSON_TYPES]
    return f"Grammar error: Invalid type: {unknown[0]}" if unknown else None


def _keyword_error(schema: Mapping[str, Any], root: object) -> str | None:
    if "required" in schema and not isinstance(schema["required"], list):
        return f"Grammar error: Expected array for 'required', got {json.dumps(schema['required'])}"
    if "enum" in schema and not isinstance(schema["enum"], list):
        return "Grammar error: enum must be an array"
    for key in _COUNTS:
        value = schema.get(key)
        if key in schema and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return f"Grammar error: Expected positive integer for '{key}', got {json.dumps(value)}"
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#") and not _pointer_exists(root, ref):
        return f"Grammar error: Pointer '{ref[1:]}' does not exist"
    if "properties" in schema and not isinstance(schema["properties"], Mapping):
        return "Grammar error: properties must be an object"
    return None


def _pointer_exists(root: object, ref: str) -> bool:
    node = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _children(schema: Mapping[str, Any]) -> list[object]:
    children: list[object] = []
    for key in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(key), Mapping):
            children += schema[key].values()
    for key in ("items", "additionalProperties", "not"):
        if key in schema and not isinstance(schema[key], list):
            children.append(schema[key])
    for key in ("anyOf", "oneOf", "allOf", "prefixItems", "items"):
        if isinstance(schema.get(key), list):
            children += schema[key]
    return children
