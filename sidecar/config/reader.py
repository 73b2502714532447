"""Reading one YAML mapping with typed getters that record problems instead of raising.

Every section of the configuration (and the routing rules built on it) is read
through `Section`, so each problem carries its key path
(`model_list[2].litellm_params.model: required`) and a broken file is reported
in one pass.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "os.environ/"
# A number in scientific notation. YAML 1.1, which PyYAML implements, reads `1e-05`
# (no dot in the mantissa) as a string, and token prices are written that way.
SCIENTIFIC = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")
# LiteLLM's duration grammar: a count and a unit (seconds, minutes, hours, days, weeks, months).
DURATION = re.compile(r"[1-9][0-9]*(s|m|h|d|w|mo)")


@dataclass(slots=True)
class Findings:
    """Problems and warnings of one parse, plus alias references checked at the end."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # (key path, alias) for every alias named outside model_list
    references: list[tuple[str, str]] = field(default_factory=list)

    def error(self, path: str, problem: str) -> None:
        self.errors.append(f"{path or '(top level)'}: {problem}")

    def warn(self, path: str, problem: str) -> None:
        self.warnings.append(f"{path or '(top level)'}: {problem}")

    def check_aliases(self, known: frozenset[str]) -> None:
        listed = ", ".join(sorted(known))
        for path, alias in self.references:
            if alias not in known:
                self.error(path, f"unknown model {alias!r} (known: {listed})")


@dataclass(slots=True)
class Section:
    """One YAML mapping under a key path; typed getters record problems instead of raising.

    A getter returns None when the key is absent, null, or wrong (the problem is then
    recorded), so parsing carries on and every problem of the file is reported at once.
    """

    data: Mapping[Any, Any]
    path: str
    findings: Findings
    # False when the mapping was missing or not a mapping (already reported), so its
    # required keys are not reported missing on top.
    present: bool = True

    def path_of(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, problem: str) -> None:
        self.findings.error(self.path_of(key), problem)

    def check_keys(
        self,
        known: frozenset[str],
        *,
        quiet: frozenset[str] = frozenset(),
        quiet_prefixes: tuple[str, ...] = (),
    ) -> None:
        for key in self.data:
            if isinstance(key, str) and (
                key in known or key in quiet or any(key.startswith(p) for p in quiet_prefixes)
            ):
                continue
            self.findings.warn(self.path, f"unknown key {key!r} ignored")

    def section(self, key: str, *, required: bool = False) -> Section:
        """The mapping under key; an empty section when absent or wrong."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.error(key, "required")
            return Section({}, self.path_of(key), self.findings, present=not required)
        if not isinstance(value, Mapping):
            self.error(key, f"expected a mapping, got {describe(value)}")
            return Section({}, self.path_of(key), self.findings, present=False)
        return Section(value, self.path_of(key), self.findings)

    def keyed_sections(self, key: str) -> list[tuple[str, Section]]:
        """A mapping of alias -> mapping; each alias is checked against model_list."""
        outer = self.section(key)
        result: list[tuple[str, Section]] = []
        for alias in outer.data:
            if not isinstance(alias, str):
                outer.findings.error(outer.path, f"expected a model name, got {describe(alias)}")
                continue
            self.findings.references.append((outer.path, alias))
            result.append((alias, outer.section(alias)))
        return result

    def raw_mapping(self, key: str) -> dict[str, Any]:
        """A section kept unparsed for a later feature; only its shape is checked."""
        return dict(self.section(key).data)

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required and self.present:
                self.error(key, "required")
            return None
        if not isinstance(value, str):
            self.error(key, f"expected a string, got {describe(value)}")
            return None
        return value

    def integer(self, key: str, *, gt: int | None = None, ge: int | None = None) -> int | None:
        value = _scientific(self.data.get(key))
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"expected an integer, got {describe(value)}")
            return None
        return value if self._in_range(key, value, gt, ge) else None

    def number(self, key: str, *, gt: float | None = None, ge: float | None = None) -> float | None:
        value = _scientific(self.data.get(key))
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"expected a number, got {describe(value)}")
            return None
        return float(value) if self._in_range(key, value, gt, ge) else None

    def _in_range(self, key: str, value: float, gt: float | None, ge: float | None) -> bool:
        if gt is not None and not value > gt:
            self.error(key, f"must be > {gt}, got {value}")
            return False
        if ge is not None and not value >= ge:
            self.error(key, f"must be >= {ge}, got {value}")
            return False
        return True

    def boolean(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.error(key, f"expected true or false, got {describe(value)}")
            return None
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str | None:
        value = self.string(key)
        if value is None:
            return None
        if value not in allowed:
            listed = ", ".join(repr(a) for a in allowed)
            self.error(key, f"expected one of {listed}, got {value!r}")
            return None
        return value

    def duration(self, key: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not DURATION.fullmatch(value):
            self.error(
                key,
                "expected a duration such as '30d', '12h' or '1mo' (a count followed by "
                f"s, m, h, d, w or mo), got {describe(value)}",
            )
            return None
        return value

    def secret(self, key: str, env: Mapping[str, str]) -> str | None:
        """A literal value, or `os.environ/NAME` read from env; unset is only a warning
        so that a config runs (on simulators) before its keys are provisioned."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            # The value itself is not echoed: it may be a secret.
            self.error(key, f"expected a string, got {type(value).__name__}")
            return None
        if not value.startswith(ENV_PREFIX):
            return value
        name = value[len(ENV_PREFIX) :].strip()
        if not name:
            self.error(key, f"{ENV_PREFIX!r} must be followed by a variable name")
            return None
        resolved = env.get(name)
        if not resolved:
            self.findings.warn(self.path_of(key), f"environment variable {name} is not set")
            return None
        return resolved

    def string_list(self, key: str) -> tuple[str, ...] | None:
        """A list of non-empty strings (each stripped); None when absent."""
        value = self.data.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.error(key, f"expected a list of strings, got {describe(value)}")
            return None
        items: list[str] = []
        for index, item in enumerate(value):
            if isinstance(item, str) and item.strip():
                items.append(item.strip())
            else:
                self.error(f"{key}[{index}]", f"expected a non-empty string, got {describe(item)}")
        return tuple(items)

    def aliases(self, key: str) -> tuple[str, ...]:
        return self._alias_list(self.data.get(key), self.path_of(key))

    def _alias_list(self, value: object, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.findings.error(path, f"expected a list of model names, got {describe(value)}")
            return ()
        aliases: list[str] = []
        for index, alias in enumerate(value):
            item_path = f"{path}[{index}]"
            if not isinstance(alias, str):
                self.findings.error(item_path, f"expected a model name, got {describe(alias)}")
                continue
            self.findings.references.append((item_path, alias))
            aliases.append(alias)
        return tuple(aliases)

    def fallback_map(self, key: str) -> dict[str, tuple[str, ...]]:
        """LiteLLM's `[{alias: [fallbacks]}, ...]`, or a plain `{alias: [fallbacks]}`."""
        value = self.data.get(key)
        path = self.path_of(key)
        pairs: list[tuple[object, object, str]] = []
        if value is None:
            return {}
        if isinstance(value, Mapping):
            pairs = [(alias, targets, path) for alias, targets in value.items()]
        elif isinstance(value, list):
            for index, item in enumerate(value):
                item_path = f"{path}[{index}]"
                if isinstance(item, Mapping) and item:
                    pairs.extend((alias, targets, item_path) for alias, targets in item.items())
                else:
                    self.findings.error(
                        item_path,
                        f"expected a mapping of model name to fallbacks, got {describe(item)}",
                    )
        else:
            self.error(key, f"expected a mapping or a list of mappings, got {describe(value)}")
        result: dict[str, tuple[str, ...]] = {}
        for alias, targets, where in pairs:
            if not isinstance(alias, str):
                self.findings.error(where, f"expected a model name, got {describe(alias)}")
                continue
            if alias in result:
                self.findings.error(where, f"fallbacks for {alias!r} are given twice")
                continue
            self.findings.references.append((where, alias))
            result[alias] = self._alias_list(targets, f"{where}.{alias}")
        return result


def _scientific(value: object) -> object:
    """A string such as "1e-05" as the number it is; anything else unchanged."""
    if isinstance(value, str) and SCIENTIFIC.fullmatch(value.strip()):
        return float(value)
    return value


def describe(value: object) -> str:
    """A value's YAML type, and the value when it is short, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
