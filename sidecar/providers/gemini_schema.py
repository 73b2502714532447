"""JSON Schema as Gemini accepts it, for function parameters and structured output.

Gemini's `Schema` is a subset of OpenAPI 3.0: it refuses `$schema`, `$ref`,
`additionalProperties`, `const`, `exclusiveMinimum` and most of the rest of JSON
Schema with a 400, so a tool schema written for OpenAI would sink the whole request.
What can be said another way is translated; what cannot is dropped, which loosens the
schema (the model may then produce what the original forbade) but never refuses it:

- `$ref` to `$defs` / `definitions` is inlined (a recursive one, past `MAX_DEPTH`,
  becomes an object of any shape);
- a type list with "null", or `anyOf` with a `{"type": "null"}` branch, becomes
  `nullable`; `oneOf` becomes `anyOf`; `allOf` is merged into one schema;
- `const` becomes a one-value `enum`; `exclusiveMinimum` / `exclusiveMaximum` become
  the inclusive bound (draft 4's boolean form is dropped);
- an `enum` of non-strings is written as strings (Gemini's enums are strings), and
  `required` keeps only the properties the schema declares;
- every other keyword outside Gemini's `Schema` is dropped.

Pure: no I/O, the input is never modified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

# Nesting (through properties, items and inlined references) past which a schema is
# cut short: it bounds the work a recursive `$ref` or a hostile schema can cause.
MAX_DEPTH: Final = 32
# Keywords of Gemini's Schema that carry one value through unchanged.
_PLAIN: Final = frozenset(
    {
        "title",
        "description",
        "format",
        "nullable",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "pattern",
        "example",
        "default",
        "propertyOrdering",
    }
)
_ANY_OBJECT: Final = {"type": "object"}


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` (JSON Schema) translated to what Gemini's `Schema` accepts."""
    definitions: dict[str, Any] = {}
    for key in ("definitions", "$defs"):
        found = schema.get(key)
        if isinstance(found, Mapping):
            definitions.update(found)
    return _convert(schema, definitions, 0)


def _convert(schema: object, definitions: Mapping[str, Any], depth: int) -> dict[str, Any]:
    if not isinstance(schema, Mapping) or depth > MAX_DEPTH:
        return dict(_ANY_OBJECT)
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = definitions.get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/") else None
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        merged = {**target, **siblings} if isinstance(target, Mapping) else siblings
        return _convert(merged or _ANY_OBJECT, definitions, depth + 1)
    out: dict[str, Any] = {key: schema[key] for key in _PLAIN if key in schema}
    _type(schema.get("type"), out)
    if "const" in schema:
        out["enum"] = [schema["const"]]
    if isinstance(schema.get("enum"), list):
        out["enum"] = list(schema["enum"])
    if "enum" in out:
        out["enum"] = [v if isinstance(v, str) else _as_text(v) for v in out["enum"]]
        out.setdefault("type", "string")
        if out["type"] != "string":
            out["type"] = "string"
            out.pop("format", None)
    for exclusive, inclusive in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        bound = schema.get(exclusive)
        if isinstance(bound, int | float) and not isinstance(bound, bool):
            out.setdefault(inclusive, bound)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        out["properties"] = {
            str(name): _convert(value, definitions, depth + 1) for name, value in properties.items()
        }
        required = schema.get("required")
        if isinstance(required, list):
            kept = [n for n in required if isinstance(n, str) and n in out["properties"]]
            if kept:
                out["required"] = kept
    items = schema.get("items")
    if isinstance(items, Mapping):
        out["items"] = _convert(items, definitions, depth + 1)
    elif isinstance(items, list) and items:  # a tuple form: the first item's shape
        out["items"] = _convert(items[0], definitions, depth + 1)
    _alternatives(schema, definitions, depth, out)
    return out


def _as_text(value: object) -> str:
    """A non-string enum value as the JSON text a model would write for it."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # an integer past 64 bits, which JSON allows and orjson does not
        return str(value)


def _type(kind: object, out: dict[str, Any]) -> None:
    if isinstance(kind, str):
        if kind == "null":
            out["nullable"] = True
        else:
            out["type"] = kind
    elif isinstance(kind, list):
        named = [k for k in kind if isinstance(k, str) and k != "null"]
        if "null" in kind:
            out["nullable"] = True
        if named:
            # Gemini's Schema has one type; several become alternatives.
            if len(named) == 1:
                out["type"] = named[0]
            else:
                out["anyOf"] = [{"type": k} for k in named]


def _alternatives(
    schema: Mapping[str, Any], definitions: Mapping[str, Any], depth: int, out: dict[str, Any]
) -> None:
    branches = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(branches, list) and branches:
        kept = []
        for branch in branches:
            if isinstance(branch, Mapping) and branch.get("type") == "null" and len(branch) == 1:
                out["nullable"] = True
            else:
                kept.append(_convert(branch, definitions, depth + 1))
        if len(kept) == 1:
            for key, value in kept[0].items():
                out.setdefault(key, value)
        elif kept:
            out["anyOf"] = kept
    every = schema.get("allOf")
    if isinstance(every, list):
        for branch in every:
            part = _convert(branch, definitions, depth + 1)
            if "properties" in part:
                out.setdefault("properties", {}).update(part.pop("properties"))
            if "required" in part:
                required = out.setdefault("required", [])
                required.extend(n for n in part.pop("required") if n not in required)
            for key, value in part.items():
                out.setdefault(key, value)
