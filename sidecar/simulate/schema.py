"""Instances of a JSON Schema, as a model asked for structured output would write them.

`instance(schema, rng)` returns a value valid against `schema` for the keywords
that tool parameters and structured-output schemas use (OpenAI strict mode,
Pydantic's `model_json_schema()`, Ollama's `format`): `type` (or a list of
types), `properties` / `required` (every property is filled, as models do),
`items` / `prefixItems` / `minItems` / `maxItems` / `uniqueItems`, `enum`,
`const`, `anyOf` / `oneOf` (the first branch that is not null), `allOf`,
local `$ref`s (`#/$defs/...`, `#/definitions/...`), string lengths and
common formats, numeric bounds and `multipleOf`. `pattern` is not honoured.
The same schema and generator state give the same value.

`schema_in_text(text)` finds a JSON Schema written into a prompt, which is how
callers of `response_format: json_object` describe the object they want.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

_WORDS: Final = (
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    "india", "juliett", "kilo", "lima", "mike", "november", "oscar", "papa",
)  # fmt: skip
_FORMATS: Final[Mapping[str, str]] = {
    "date-time": "2024-05-01T12:00:00Z",
    "date": "2024-05-01",
    "time": "12:00:00",
    "duration": "PT1H",
    "email": "sim@example.com",
    "idn-email": "sim@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/sim",
    "iri": "https://example.com/sim",
    "uri-reference": "https://example.com/sim",
    "url": "https://example.com/sim",
}
# Past these depths, recursive schemas (a tree of nodes) get only the items, then only
# the properties, they require.
_SHALLOW: Final = 3
_MAX_DEPTH: Final = 6
# Bounds the search for a schema in a prompt: candidate objects tried, characters read.
_MAX_CANDIDATES: Final = 200
_MAX_TEXT: Final = 256 * 1024
_SCHEMA_KEYS: Final = frozenset({"properties", "$defs", "definitions", "$schema"})


def instance(schema: object, rng: random.Random) -> Any:
    """A value valid against `schema` (a JSON Schema object, or true/false)."""
    root = schema if isinstance(schema, Mapping) else {}
    return _Generator(root, rng).value(root, 0)


def schema_in_text(text: str) -> Mapping[str, Any] | None:
    """The last JSON Schema of an object written in `text`, if there is one."""
    decoder = json.JSONDecoder()
    text = text[-_MAX_TEXT:]
    found: Mapping[str, Any] | None = None
    start = text.find("{")
    tried = 0
    while start != -1 and tried < _MAX_CANDIDATES:
        tried += 1
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict) and _SCHEMA_KEYS & value.keys():
            found = value
        start = text.find("{", end)
    return found


class _Generator:
    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    def value(self, schema: object, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return self._word()  # `true` or a malformed subschema: anything goes
        schema = self._resolve(schema, depth)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return self._rng.choice(enum)
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                rest = {k: v for k, v in schema.items() if k != key}
                return self.value({**rest, **self._branch(branches)}, depth + 1)
        kind = _type_of(schema)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        if kind == "string":
            return self._string(schema)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self._rng.random() < 0.5
        if kind == "null":
            return None
        return self._word()

    def _resolve(self, schema: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
        """The schema with its local $ref and allOf merged in."""
        for _ in range(_MAX_DEPTH * 4):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            target = self._lookup(ref)
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        parts = schema.get("allOf")
        if isinstance(parts, list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if isinstance(part, Mapping):
                    merged = _merge(merged, self._resolve(part, depth))
            schema = merged
        return schema

    def _branch(self, branches: Sequence[object]) -> Mapping[str, Any]:
        """The first branch that is not just null (Optional[X] is anyOf [X, null])."""
        for branch in branches:
            if isinstance(branch, Mapping):
                resolved = self._resolve(branch, 0)
                if resolved.get("type") != "null":
                    return resolved
        first = branches[0]
        return first if isinstance(first, Mapping) else {}

    def _lookup(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            return {}  # remote references are not followed
        node: object = self._root
        for part in ref[1:].split("/"):
            if not part:
                continue
            key = part.replace("~1", "/").replace("~0", "~")
            node = node.get(key) if isinstance(node, Mapping) else None
        return node if isinstance(node, Mapping) else {}

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        required = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
        names = list(properties) if depth < _MAX_DEPTH else []
        names += [r for r in required if r not in names]
        out = {name: self.value(properties.get(name, {}), depth + 1) for name in names}
        wanted = schema.get("minProperties")
        extra = schema.get("additionalProperties", True)
        while isinstance(wanted, int) and len(out) < wanted and extra is not False:
            out[f"{self._word()}_{len(out)}"] = self.value(extra, depth + 1)
        return out

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        low = _count(schema.get("minItems"), 0)
        high = _count(schema.get("maxItems"), max(low, 2))
        # Deep inside (a tree of nodes), only as many items as required.
        size = low if depth >= _SHALLOW else max(low, min(high, 2))
        out: list[Any] = []
        for index in range(size):
            sub = prefix[index] if index < len(prefix) else items
            element = self.value(sub, depth + 1)
            if schema.get("uniqueItems") is True:
                for _ in range(8):
                    if element not in out:
                        break
                    element = self.value(sub, depth + 1)
            out.append(element)
        return out

    def _string(self, schema: Mapping[str, Any]) -> str:
        fmt = schema.get("format")
        if fmt == "uuid":
            text = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        else:
            text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
            text = text or self._word()
        low = _count(schema.get("minLength"), 0)
        high = _count(schema.get("maxLength"), max(low, len(text)))
        while len(text) < low:
            text += " " + self._word()
        return text[: max(high, low)]

    def _integer(self, schema: Mapping[str, Any]) -> int:
        low, high = _bounds(schema, integer=True)
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            if first <= last:
                return self._rng.randint(first, last) * step
        return self._rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))

    def _number(self, schema: Mapping[str, Any]) -> float:
        low, high = _bounds(schema, integer=False)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
            first, last = math.ceil(low / step), math.floor(high / step)
            if first <= last:
                return float(self._rng.randint(first, last) * step)
        value = round(self._rng.uniform(low, high), 2)
        return value if low <= value <= high else low

    def _word(self) -> str:
        return self._rng.choice(_WORDS)


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if isinstance(k, str)]
        kind = next((k for k in kinds if k != "null"), kinds[0] if kinds else None)
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    merged = {**a, **b}
    props_a, props_b = a.get("properties"), b.get("properties")
    if isinstance(props_a, Mapping) and isinstance(props_b, Mapping):
        merged["properties"] = {**props_a, **props_b}
    req_a, req_b = a.get("required"), b.get("required")
    if isinstance(req_a, list) and isinstance(req_b, list):
        merged["required"] = list(dict.fromkeys([*req_a, *req_b]))
    return merged


def _count(value: object, default: int) -> int:
    return (
        value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default
    )


def _bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float, float]:
    nudge = 1 if integer else 0.01
    low = _number_or(schema.get("minimum"), None)
    high = _number_or(schema.get("maximum"), None)
    above = _number_or(schema.get("exclusiveMinimum"), None)
    below = _number_or(schema.get("exclusiveMaximum"), None)
    if above is not None:
        low = max(low if low is not None else above + nudge, above + nudge)
    if below is not None:
        high = min(high if high is not None else below - nudge, below - nudge)
    if low is None:
        low = 0.0 if high is None or high >= 0 else high - 100
    if high is None:
        high = low + 100
    return low, max(low, high)


def _number_or(value: object, default: float | None) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default
