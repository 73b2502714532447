"""Call and attempt spans over real calls, read with the SDK's in-memory exporter; the
caller's trace context continued (HTTP traceparent, gRPC metadata) and passed on to the
upstream; and OTLP export received by real OTLP receivers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from sidecar.cli.serve import SidecarProcess
from sidecar.engine import Engine
from sidecar.errors import ConfigError
from sidecar.simulate import Fault, OllamaSimulator, OpenAISimulator, SimProfile, profile_by_name
from sidecar.telemetry import Telemetry
from sidecar.types import ChatRequest, Message
from tests.bridge_harness import KEY, standard_config
from tests.harness import chat_request, fallback_config, make_config
from tests.otlp_receiver import grpc_receiver, http_receiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    exporter.clear()


def _traced(exporter: InMemorySpanExporter, *, legacy: bool = False) -> Telemetry:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Telemetry(tracers=provider, legacy_names=legacy)


def _by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


async def test_http_call_continues_the_callers_trace_and_passes_it_upstream(
    spans: InMemorySpanExporter,
) -> None:
    instant = profile_by_name("instant")
    async with OllamaSimulator(profile=instant) as ollama, OpenAISimulator(profile=instant) as oai:
        config = standard_config(ollama, oai)
        engine = Engine(config, telemetry=_traced(spans))
        process = SidecarProcess(engine, grpc_port=0, http_port=0)
        await process.start()
        try:
            headers = {"Authorization": f"Bearer {KEY}", "traceparent": TRACEPARENT}
            body = {
                "model": "fast-local",
                "messages": [{"role": "user", "content": "Say hello"}],
                "stream": True,
                "max_tokens": 50,
            }
            url = f"http://127.0.0.1:{process.http_port}/v1/chat/completions"
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.post(url, json=body) as resp,
            ):
                assert resp.status == 200
                await resp.read()
            upstream_saw = list(ollama.stats.traceparents)
        finally:
            await process.stop(grace=0)
    named = _by_name(spans)
    [call] = named["chat fast-local"]
    [attempt] = named["chat llama3.2:8b"]
    assert call.kind is SpanKind.SERVER
    assert attempt.kind is SpanKind.CLIENT
    # Continued from the caller's traceparent...
    assert call.parent is not None
    assert format(call.parent.span_id, "016x") == PARENT_ID
    assert format(call.context.trace_id, "032x") == TRACE_ID
    # ...the attempt is the call's child...
    assert attempt.parent is not None
    assert attempt.parent.span_id == call.context.span_id
    # ...and the upstream was told the attempt's span.
    assert upstream_saw == [f"00-{TRACE_ID}-{format(attempt.context.span_id, '016x')}-01"]
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "ollama"
    assert attrs["gen_ai.request.model"] == "fast-local"
    assert attrs["gen_ai.response.model"] == "llama3.2:8b"
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.output_tokens"] == 20
    assert isinstance(attrs["gen_ai.usage.input_tokens"], int)
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    ttft = attrs["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttft, float)
    assert ttft > 0
    assert attrs["llm_sidecar.route.deployment"] == "fast-local/0"
    assert attrs["llm_sidecar.route.locality"] == "local"
    assert attrs["llm_sidecar.route.attempts"] == 1
    assert attrs["llm_sidecar.privacy.sensitive"] is False
    assert attrs["llm_sidecar.budget.verdict"] == "ok"
    assert "gen_ai.system" not in attrs
    assert "gen_ai.usage.prompt_tokens" not in attrs
    attempt_attrs = dict(attempt.attributes or {})
    assert attempt_attrs["server.address"] == "127.0.0.1"
    assert attempt_attrs["server.port"] == ollama.port


async def test_grpc_metadata_trace_fallback_attempts_and_legacy_names(
    spans: InMemorySpanExporter,
) -> None:
    instant = profile_by_name("instant")
    async with OllamaSimulator(profile=instant) as a, OllamaSimulator(profile=instant) as b:
        config = fallback_config(a.base_url, b.base_url)
        engine = Engine(config, telemetry=_traced(spans, legacy=True))
        process = SidecarProcess(engine, grpc_port=0)
        await process.start()
        try:
            import grpc

            from sidecar.rpc.api import router_pb2_grpc as pb_grpc

            a.fault = Fault("http_500")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{process.grpc_port}") as channel:
                stub = pb_grpc.RouterStub(channel)
                chunks = [
                    c
                    async for c in stub.StreamChat(
                        chat_request("fast-local"), metadata=(("traceparent", TRACEPARENT),)
                    )
                ]
            assert chunks
            fallback_saw = list(b.stats.traceparents)
        finally:
            await process.stop(grace=0)
    named = _by_name(spans)
    [call] = named["chat fast-local"]
    [failed] = named["chat llama3.2:8b"]
    [answered] = named["chat llama3.3:70b"]
    assert format(call.context.trace_id, "032x") == TRACE_ID
    for attempt in (failed, answered):
        assert attempt.parent is not None
        assert attempt.parent.span_id == call.context.span_id
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["error.type"] == "UNAVAILABLE"
    assert fallback_saw == [f"00-{TRACE_ID}-{format(answered.context.span_id, '016x')}-01"]
    attrs = dict(call.attributes or {})
    assert attrs["llm_sidecar.route.attempts"] == 2
    assert attrs["llm_sidecar.route.fallbacks"] == 1
    # OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai/dup: the older names beside the new ones.
    assert attrs["gen_ai.system"] == attrs["gen_ai.provider.name"] == "ollama"
    assert attrs["gen_ai.usage.completion_tokens"] == attrs["gen_ai.usage.output_tokens"]


async def test_tracing_off_makes_no_spans_and_sends_no_traceparent() -> None:
    async with OllamaSimulator(profile=profile_by_name("instant")) as ollama:
        config = make_config([("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})])
        engine = Engine(config)
        try:
            assert engine.telemetry.tracer is None
            await engine.complete(ChatRequest("fast-local", (Message("user", "hi"),)), 5)
        finally:
            await engine.aclose()
        assert ollama.stats.requests == 1
        assert not ollama.stats.traceparents


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
async def test_otlp_export_reaches_a_real_receiver(
    protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = http_receiver if protocol == "http/protobuf" else grpc_receiver
    async with receiver() as (endpoint, received):
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=sidecar-tests")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        async with OllamaSimulator(profile=profile_by_name("instant")) as ollama:
            config = make_config(
                [("fast-local", "ollama/llama3.2:8b", {"api_base": ollama.base_url})]
            )
            engine = Engine(config)
            try:
                assert engine.telemetry.tracer is not None
                await engine.complete(ChatRequest("fast-local", (Message("user", "hi"),)), 5)
            finally:
                await engine.aclose()  # shuts telemetry down, which flushes both exporters
    assert "chat fast-local" in received.span_names()
    assert "chat llama3.2:8b" in received.span_names()
    assert {"llm_sidecar.calls", "gen_ai.client.operation.duration"} <= received.metric_names()
    assert any(h.get("x-tenant") == "sidecar-tests" for h in received.headers)


def test_otlp_protocol_must_be_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    config = make_config([("m", "ollama/x", {"api_base": "http://127.0.0.1:9"})])
    with pytest.raises(ConfigError) as err:
        Telemetry.from_config(config.telemetry)
    assert "grpc or http/protobuf" in err.value.problems[0]


async def test_a_won_hedge_in_spans_and_metrics(spans: InMemorySpanExporter) -> None:
    slow = SimProfile(ttft=(2.0, 2.0), tokens_per_second=None, answer_tokens=20)
    async with (
        OllamaSimulator(profile=slow) as a,
        OllamaSimulator(profile=profile_by_name("instant")) as b,
    ):
        config = fallback_config(
            a.base_url,
            b.base_url,
            router_settings={"model_group_retry_policy": {"fast-local": {"hedge_after_ms": 50}}},
        )
        telemetry = _traced(spans)
        engine = Engine(config, telemetry=telemetry)
        try:
            answer = await engine.complete(ChatRequest("fast-local", (Message("user", "hi"),)), 5)
        finally:
            await engine.aclose()
    assert answer.route.deployment == "strong-local/0"
    named = _by_name(spans)
    [call] = named["chat fast-local"]
    attrs = dict(call.attributes or {})
    assert (attrs["llm_sidecar.route.hedges"], attrs["llm_sidecar.route.hedge_won"]) == (1, True)
    # Both raced attempts are the call's children; the loser ended when it was cancelled.
    attempts = named["chat llama3.2:8b"] + named["chat llama3.3:70b"]
    assert len(attempts) == 2
    assert all(s.parent is not None and s.parent.span_id == call.context.span_id for s in attempts)
    found: dict[str, list[Any]] = {
        m.name: list(m.data.data_points)
        for r in telemetry.metrics_data().resource_metrics
        for sc in r.scope_metrics
        for m in sc.metrics
    }
    [started] = found["llm_sidecar.hedges.started"]
    [won] = found["llm_sidecar.hedges.won"]
    assert (started.value, dict(started.attributes or {})) == (1, {"model_group": "fast-local"})
    assert (won.value, dict(won.attributes or {})["deployment"]) == (1, "strong-local/0")


def test_exporter_choice_follows_the_standard_variables() -> None:
    from sidecar.telemetry.otlp import exporter_choice

    assert exporter_choice({}, "traces", "auto") == "none"
    assert exporter_choice({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, "traces", "auto") == "otlp"
    assert (
        exporter_choice({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://x"}, "traces", "auto")
        == "none"
    )
    assert (
        exporter_choice({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x"}, "traces", "auto")
        == "otlp"
    )
    assert exporter_choice({"OTEL_TRACES_EXPORTER": "console"}, "traces", "none") == "console"
    assert exporter_choice({"OTEL_METRICS_EXPORTER": "prometheus"}, "metrics", "auto") == "none"
    assert exporter_choice({}, "traces", "record") == "record"
    with pytest.raises(ConfigError):
        exporter_choice({"OTEL_TRACES_EXPORTER": "zipkin"}, "traces", "auto")
