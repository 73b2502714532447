"""The call log: one JSON line per call with ids, route, timings, tokens and cost; no key,
no prompt unless asked for; the log's level and format from config and flags."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider

from sidecar.cli.main import build_parser
from sidecar.config import parse_config
from sidecar.engine import Engine
from sidecar.errors import ConfigError
from sidecar.redaction import redact_logs
from sidecar.simulate import OllamaSimulator, profile_by_name
from sidecar.telemetry import Telemetry
from sidecar.telemetry.logs import CALLS, CallLog, configure_logging, resolve_format
from sidecar.types import ChatRequest, Message
from tests.harness import make_config

SECRET = "sk-live-0123456789abcdefghijklmnop"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    configure_logging("INFO", "json", out)
    redact_logs([SECRET])
    yield out
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved[0]:
        root.addHandler(handler)
    root.setLevel(saved[1])


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("include_prompts", [False, True])
async def test_one_json_line_per_call(captured: io.StringIO, include_prompts: bool) -> None:
    async with OllamaSimulator(profile=profile_by_name("instant")) as ollama:
        config = make_config(
            [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})],
            general_settings={"master_key": SECRET},
        )
        telemetry = Telemetry(
            tracers=TracerProvider(), call_log=CallLog(include_prompts=include_prompts)
        )
        engine = Engine(config, telemetry=telemetry)
        prompt = f"my key is {SECRET}, summarise the report"
        try:
            for _ in range(2):
                request = ChatRequest("fast-local", (Message("user", prompt),), request_id="req-1")
                await engine.complete(request, 5)
        finally:
            await engine.aclose()
    calls = [line for line in _lines(captured) if line["logger"] == CALLS]
    assert len(calls) == 2
    line = calls[0]
    assert line["request_id"] == "req-1"
    assert isinstance(line["trace_id"], str)
    assert len(line["trace_id"]) == 32
    assert line["deployment"] == "fast-local/0"
    assert line["locality"] == "local"
    assert line["status"] == "ok"
    assert line["output_tokens"] == 20
    assert line["cost_usd"] == 0.0
    assert isinstance(line["duration_ms"], float)
    assert isinstance(line["ttft_ms"], float)
    assert SECRET not in captured.getvalue()
    if include_prompts:
        assert "summarise the report" in str(line["prompt"])
    else:
        assert "prompt" not in line
        assert "summarise" not in captured.getvalue()


def test_logging_section_and_serve_flags() -> None:
    config = make_config(
        [("m", "ollama/x", {"api_base": "http://127.0.0.1:9"})],
        logging={"level": "debug", "format": "json", "call_log": "on"},
    )
    assert (config.logging.level, config.logging.format) == ("DEBUG", "json")
    with pytest.raises(ConfigError) as err:
        make_config(
            [("m", "ollama/x", {"api_base": "http://127.0.0.1:9"})], logging={"format": "xml"}
        )
    assert err.value.problems == (
        "logging.format: expected one of 'text', 'json', 'auto', got 'xml'",
    )
    args = build_parser().parse_args(
        ["--log-level", "WARNING", "serve", "--config", "x.yaml", "--log-format", "json",
         "--log-level", "DEBUG", "--metrics-port", "9464"]
    )  # fmt: skip
    assert (args.log_level, args.serve_log_level, args.log_format) == ("WARNING", "DEBUG", "json")
    assert args.metrics_port == 9464
    # A terminal keeps the human-readable log; a pipe gets JSON under `auto`.
    assert resolve_format("auto", io.StringIO()) == "json"
    assert resolve_format("text", io.StringIO()) == "text"


def test_example_configs_still_load() -> None:
    from pathlib import Path

    import yaml

    examples = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        data = yaml.safe_load(path.read_text())
        env = {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y", "GEMINI_API_KEY": "g"}
        config = parse_config(data, source=str(path), env=env, log_warnings=False)
        # The new sections' defaults: text logs, no call log, no shadow sampling.
        assert (config.logging.format, config.logging.call_log) == ("text", "auto")
        assert config.quality.compare_with is None
        assert config.telemetry.metrics
