"""Known context windows of cloud models, from the bundled `windows.yaml`.

The figures are data that changes with the providers' model pages, so they live in a
YAML file next to this module rather than in code. A config's own figures (model_info,
num_ctx) always win; the bundled table only fills the gaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources

import yaml

from sidecar.errors import ConfigError

WINDOWS_FILE = "windows.yaml"


@dataclass(frozen=True, slots=True)
class ContextWindows:
    exact: Mapping[str, int] = field(default_factory=dict)
    # (prefix, context window), longest prefix first so the first match is the best one.
    prefixes: tuple[tuple[str, int], ...] = ()

    def context_window(self, model: str) -> int | None:
        """The context window of an upstream model name, or None when unknown."""
        name = model.lower()
        exact = self.exact.get(name)
        if exact is not None:
            return exact
        for prefix, window in self.prefixes:
            if name.startswith(prefix):
                return window
        return None

    @classmethod
    def from_data(cls, data: object, source: str = WINDOWS_FILE) -> ContextWindows:
        """Build from parsed YAML; ConfigError lists every malformed entry."""
        if not isinstance(data, Mapping) or not isinstance(data.get("context_windows"), Mapping):
            raise ConfigError(["context_windows: expected a mapping"], source)
        exact: dict[str, int] = {}
        prefixes: list[tuple[str, int]] = []
        problems: list[str] = []
        for name, window in data["context_windows"].items():
            if not isinstance(name, str) or not name.strip("*"):
                problems.append(f"context_windows: expected a model name, got {name!r}")
            elif isinstance(window, bool) or not isinstance(window, int) or window <= 0:
                problems.append(
                    f"context_windows.{name}: expected a positive integer, got {window!r}"
                )
            elif name.endswith("*"):
                prefixes.append((name[:-1].lower(), window))
            else:
                exact[name.lower()] = window
        if problems:
            raise ConfigError(problems, source)
        prefixes.sort(key=lambda entry: len(entry[0]), reverse=True)
        return cls(exact, tuple(prefixes))


def load_context_windows() -> ContextWindows:
    """Read the context windows shipped with the package."""
    text = resources.files("sidecar.config").joinpath(WINDOWS_FILE).read_text(encoding="utf-8")
    return ContextWindows.from_data(yaml.safe_load(text))
