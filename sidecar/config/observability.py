"""The `telemetry`, `logging` and `quality_monitoring` sections."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from sidecar.config.model import LoggingConfig, QualityConfig, TelemetryConfig
from sidecar.config.reader import Section

_C = TypeVar("_C", TelemetryConfig, LoggingConfig, QualityConfig)
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def telemetry_config(section: Section) -> TelemetryConfig:
    section.check_keys(frozenset(f.name for f in dataclasses.fields(TelemetryConfig)))
    values: dict[str, Any] = {
        "console_interval": section.number("console_interval", ge=0),
        "metrics": section.boolean("metrics"),
        "traces": section.choice("traces", ("auto", "none", "otlp", "console", "record")),
        "export_interval": section.number("export_interval", gt=0),
        "metrics_open": section.boolean("metrics_open"),
    }
    return _filled(TelemetryConfig(), values)


def logging_config(section: Section) -> LoggingConfig:
    section.check_keys(frozenset(f.name for f in dataclasses.fields(LoggingConfig)))
    level = section.string("level")
    if level is not None and level.upper() not in _LEVELS:
        section.error("level", f"expected one of {', '.join(_LEVELS)}, got {level[:40]!r}")
        level = None
    values: dict[str, Any] = {
        "level": None if level is None else level.upper(),
        "format": section.choice("format", ("text", "json", "auto")),
        "call_log": section.choice("call_log", ("auto", "on", "off")),
        "include_prompts": section.boolean("include_prompts"),
    }
    return _filled(LoggingConfig(), values)


def quality_config(section: Section) -> QualityConfig:
    section.check_keys(frozenset(f.name for f in dataclasses.fields(QualityConfig)))
    values: dict[str, Any] = {
        "compare_with": section.string("compare_with"),
        "sample_rate": section.number("sample_rate", ge=0),
        "log_path": section.string("log_path"),
        "max_concurrency": section.integer("max_concurrency", gt=0),
        "max_queue": section.integer("max_queue", gt=0),
        "judge": section.string("judge"),
        "preview_chars": section.integer("preview_chars", gt=0),
        "max_log_mb": section.number("max_log_mb", gt=0),
    }
    rate = values["sample_rate"]
    if rate is not None and rate > 1:
        section.error("sample_rate", f"must be between 0 and 1, got {rate}")
        values["sample_rate"] = None
    for key in ("compare_with", "judge"):
        if values[key] is not None:
            section.findings.references.append((section.path_of(key), values[key]))
    return _filled(QualityConfig(), values)


def _filled(base: _C, values: dict[str, Any]) -> _C:
    return dataclasses.replace(base, **{k: v for k, v in values.items() if v is not None})
