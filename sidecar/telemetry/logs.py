"""Logs: the process's handler (text or one JSON object a line) and the call log.

The call log is one line per call on the `llm_sidecar.calls` logger: request
id, trace id, route, status, timings, tokens and cost. It never holds a key
(the fields are the sidecar's own, and every handler carries the redacting
filter) and holds no prompt text unless `logging.include_prompts` is on, and
then only a redacted preview.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Final, TextIO

import orjson

from sidecar.redaction import redact
from sidecar.telemetry.report import CallReport

CALLS: Final = "llm_sidecar.calls"
_PREVIEW: Final = 200
_TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and a call's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = getattr(record, "call", None)
        if isinstance(call, dict):
            line.update(call)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def resolve_format(chosen: str, stream: TextIO | None = None) -> str:
    """text or json; `auto` is text on a terminal and JSON otherwise."""
    if chosen != "auto":
        return chosen
    target = stream if stream is not None else sys.stderr
    return "text" if target.isatty() else "json"


def configure_logging(level: str, form: str, stream: TextIO | None = None) -> None:
    """Set the root logger's one handler to `form` (text, json or auto) at `level`."""
    handler = logging.StreamHandler(stream)
    use = resolve_format(form, stream)
    handler.setFormatter(JsonFormatter() if use == "json" else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class CallLog:
    """Writes the line for each call, when the call log is on."""

    def __init__(self, *, include_prompts: bool = False) -> None:
        self._log = logging.getLogger(CALLS)
        self._include_prompts = include_prompts

    @property
    def include_prompts(self) -> bool:
        return self._include_prompts

    def enabled(self) -> bool:
        return self._log.isEnabledFor(logging.INFO)

    def write(self, report: CallReport, trace_id: str | None, prompt: str | None) -> None:
        route = report.route
        usage = report.usage
        fields: dict[str, Any] = {
            "request_id": report.request_id,
            "trace_id": trace_id,
            "model": report.model,
            "status": report.outcome,
            "error": report.error_type,
            "deployment": route.deployment if route else None,
            "model_group": route.model_group if route else None,
            "locality": route.locality.value if route else None,
            "reason": report.reason or None,
            "attempts": report.attempts,
            "fallbacks": report.fallbacks,
            "hedges": report.hedges,
            "sensitive": report.sensitive,
            "ttft_ms": _ms(report.ttft),
            "duration_ms": _ms(report.duration),
            "overhead_ms": _ms(report.overhead),
            "input_tokens": usage.prompt_tokens if usage else None,
            "output_tokens": usage.completion_tokens if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
            "cost_usd": round(report.cost, 8),
        }
        if self._include_prompts and prompt is not None:
            fields["prompt"] = redact(prompt, (), limit=_PREVIEW)
        where = route.deployment if route else "-"
        self._log.info(
            "call %s %s -> %s %s in %.1f ms",
            report.request_id or "-",
            report.model,
            where,
            report.outcome,
            report.duration * 1000,
            extra={"call": fields},
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
