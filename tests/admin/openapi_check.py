"""Just enough JSON Schema (2020-12, as OpenAPI 3.1 uses it) to check our own responses.

Covers what `careid_broker.admin.openapi` uses: `$ref` into components, `type` (one or a
list), `enum`, `required`, `properties`, `additionalProperties: false`, `items`,
`minimum`/`maximum`, `maxLength`/`minLength`, `pattern`. A keyword it does not know
fails loudly, so the document cannot grow past what is really checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_KNOWN = {
    "$ref",
    "type",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "description",
    "default",
}
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def schema_errors(
    value: Any, schema: Mapping[str, Any], document: Mapping[str, Any], path: str = "$"
) -> list[str]:
    """Every way `value` breaks `schema` (empty: it conforms)."""
    unknown = set(schema) - _KNOWN
    if unknown:
        return [f"{path}: schema uses unsupported keywords {sorted(unknown)}"]
    if "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return schema_errors(value, target, document, path)
    errors: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, kind) for kind in allowed):
            return [f"{path}: {value!r} is not of type {allowed}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: {key!r} is required")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                errors.extend(schema_errors(item, properties[key], document, f"{path}.{key}"))
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}: {key!r} is not allowed")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            errors.extend(schema_errors(item, schema["items"], document, f"{path}[{index}]"))
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{path}: does not match {schema['pattern']}")
    return errors


def response_schema(
    document: Mapping[str, Any], path: str, method: str, status: int
) -> Mapping[str, Any]:
    """The JSON schema the document gives for a response (fails if it gives none)."""
    operation = document["paths"][path][method.lower()]
    response = operation["responses"][str(status)]
    return response["content"]["application/json"]["schema"]  # type: ignore[no-any-return]
