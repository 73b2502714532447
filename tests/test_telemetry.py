"""Per-call metrics, read back in OpenTelemetry's data model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from sidecar.engine import Engine
from sidecar.errors import ConfigError, NoDeploymentAvailable, UnknownModel
from sidecar.simulate import Fault, OllamaSimulator, profile_by_name
from sidecar.telemetry import Telemetry
from sidecar.types import ChatRequest, Message
from tests.harness import fallback_config, make_config


def _points(telemetry: Telemetry) -> dict[str, list[Any]]:
    data = telemetry.metrics_data()
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found[metric.name] = list(metric.data.data_points)
    return found


async def test_calls_ttft_and_fallbacks_are_counted() -> None:
    instant = profile_by_name("instant")
    async with OllamaSimulator(profile=instant) as a, OllamaSimulator(profile=instant) as b:
        config = fallback_config(a.base_url, b.base_url)
        telemetry = Telemetry()
        engine = Engine(config, telemetry=telemetry)
        request = ChatRequest("fast-local", (Message("user", "hi"),))
        try:
            await engine.complete(request, 5)
            a.fault = Fault("http_500")
            await engine.complete(request, 5)
            b.fault = Fault("http_500")
            with pytest.raises(NoDeploymentAvailable):
                await engine.complete(request, 5)
            with pytest.raises(UnknownModel):
                await engine.complete(ChatRequest("missing", (Message("user", "hi"),)), 5)
            points = _points(telemetry)
        finally:
            await engine.aclose()
    calls = {
        (p.attributes.get("deployment"), p.attributes["outcome"]): p.value
        for p in points["llm_sidecar.calls"]
    }
    assert calls == {
        ("fast-local/0", "ok"): 1,
        ("strong-local/0", "ok"): 1,
        (None, "error"): 1,
        (None, "rejected"): 1,
    }
    # The alias nobody configured is not a label value of its own.
    models = {p.attributes["model_group"] for p in points["llm_sidecar.calls"]}
    assert models == {"fast-local", "strong-local", "_OTHER"}
    errors = {p.attributes.get("error.type") for p in points["gen_ai.client.operation.duration"]}
    assert errors == {None, "UNAVAILABLE", "NOT_FOUND"}
    ttft = {p.attributes["deployment"]: p.count for p in points["llm_sidecar.time_to_first_token"]}
    assert ttft == {"fast-local/0": 1, "strong-local/0": 1}
    [fallback] = points["llm_sidecar.fallbacks"]
    assert (fallback.attributes["deployment"], fallback.value) == ("strong-local/0", 1)


def test_console_export_is_configured_from_yaml() -> None:
    entries: list[tuple[str, str, Mapping[str, Any]]] = [
        ("m", "ollama/x", {"api_base": "http://127.0.0.1:9"})
    ]
    off = Telemetry.from_config(make_config(entries, telemetry={"metrics": False}).telemetry)
    assert not off.exporting
    assert off.prometheus_text() is None
    telemetry = Telemetry.from_config(
        make_config(entries, telemetry={"console_interval": 60}).telemetry
    )
    try:
        assert telemetry.exporting
        assert telemetry.tracer is None  # no exporter configured: no tracing
    finally:
        telemetry.shutdown()
    with pytest.raises(ConfigError) as err:
        make_config(entries, telemetry={"console_interval": -1})
    assert err.value.problems == ("telemetry.console_interval: must be >= 0, got -1",)
