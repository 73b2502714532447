"""Metrics over real calls: the SDK's in-memory reader, GET /metrics parsed with
prometheus_client's parser (bridge and --metrics-port), and docs/metrics.md kept
equal to what is exported."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import BridgeSettings
from sidecar.cli.serve import SidecarProcess
from sidecar.engine import Engine
from sidecar.simulate import OllamaSimulator, OpenAISimulator, profile_by_name
from sidecar.telemetry import CallReport, Telemetry
from sidecar.types import Locality, RouteTaken, Usage
from tests.bridge_harness import KEY, standard_config

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"
USER = [{"role": "user", "content": "Say hello"}]


def _families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def _sample(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    found = [
        s.value
        for s in families[family].samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (family, name, labels, families[family].samples)
    return float(found[0])


async def test_bridge_metrics_count_calls_tokens_and_ttft() -> None:
    instant = profile_by_name("instant")
    async with OllamaSimulator(profile=instant) as ollama, OpenAISimulator(profile=instant) as oai:
        config = standard_config(ollama, oai)
        settings = BridgeSettings(master_key=KEY, limits=config.limits)
        process = SidecarProcess(
            Engine(config), grpc_port=0, http_port=0, http_settings=settings, metrics_port=0
        )
        await process.start()
        root = f"http://127.0.0.1:{process.http_port}"
        auth = {"Authorization": f"Bearer {KEY}"}
        try:
            async with aiohttp.ClientSession(headers=auth) as session:
                for model in ("fast-local", "fast-local", "cloud-fast"):
                    body = {"model": model, "messages": USER}
                    async with session.post(f"{root}/v1/chat/completions", json=body) as resp:
                        assert resp.status == 200, await resp.text()
                body = {"model": "no-such-alias", "messages": USER}
                async with session.post(f"{root}/v1/chat/completions", json=body) as resp:
                    assert resp.status == 404
                await process.engine._egress.drain()  # the cloud call's cost is settled
                async with session.get(f"{root}/metrics") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    text = await resp.text()
                assert process.metrics is not None
                scrape = f"http://127.0.0.1:{process.metrics.port}/metrics"
                async with session.get(scrape) as resp:
                    assert resp.status == 200
                    assert "llm_sidecar_calls_total" in await resp.text()
            async with aiohttp.ClientSession() as anonymous:
                async with anonymous.get(f"{root}/metrics") as resp:
                    assert resp.status == 401
                async with anonymous.get(scrape) as resp:
                    assert resp.status == 401
        finally:
            await process.stop(grace=0)
    families = _families(text)
    calls = "llm_sidecar_calls"
    local = {"model_group": "fast-local", "deployment": "fast-local/0", "locality": "local"}
    assert _sample(families, calls, "llm_sidecar_calls_total", **local, outcome="ok") == 2
    assert (
        _sample(
            families, calls, "llm_sidecar_calls_total", model_group="_OTHER", outcome="rejected"
        )
        == 1
    )
    tokens = "llm_sidecar_tokens"
    assert _sample(families, tokens, "llm_sidecar_tokens_total", **local, type="output") == 40
    ttft = "llm_sidecar_time_to_first_token_seconds"
    count = _sample(
        families, ttft, f"{ttft}_count", model_group="fast-local", deployment="fast-local/0"
    )
    inf = _sample(families, ttft, f"{ttft}_bucket", deployment="fast-local/0", le="+Inf")
    assert count == inf == 2
    cost = _sample(
        families, "llm_sidecar_cost_usd", "llm_sidecar_cost_usd_total", model_group="cloud-fast"
    )
    assert cost > 0
    flight = _sample(
        families, "llm_sidecar_in_flight", "llm_sidecar_in_flight", deployment="fast-local/0"
    )
    assert flight == 0
    health = _sample(
        families, "llm_sidecar_health_state", "llm_sidecar_health_state", deployment="cloud-fast/0"
    )
    assert health == 0
    overhead = "llm_sidecar_overhead_before_upstream_seconds"
    assert _sample(families, overhead, f"{overhead}_count", deployment="fast-local/0") == 2
    # No label carries a request id or a prompt.
    assert "Say hello" not in text
    assert "chatcmpl" not in text


async def test_metrics_open_and_openmetrics() -> None:
    instant = profile_by_name("instant")
    async with OllamaSimulator(profile=instant) as ollama, OpenAISimulator() as oai:
        config = standard_config(ollama, oai, telemetry={"metrics_open": True})
        process = SidecarProcess(Engine(config), grpc_port=0, http_port=0)
        await process.start()
        try:
            url = f"http://127.0.0.1:{process.http_port}/metrics"
            headers = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as resp:
                    assert resp.status == 200
                async with session.get(url, headers=headers) as resp:
                    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
                    assert (await resp.text()).rstrip().endswith("# EOF")
        finally:
            await process.stop(grace=0)


async def test_metrics_off_answers_404() -> None:
    async with OllamaSimulator() as ollama, OpenAISimulator() as oai:
        config = standard_config(ollama, oai, telemetry={"metrics": False}, general_settings={})
        process = SidecarProcess(Engine(config), grpc_port=0, http_port=0)
        await process.start()
        try:
            url = f"http://127.0.0.1:{process.http_port}/metrics"
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                assert resp.status == 404
                assert "telemetry.metrics" in (await resp.json())["error"]["message"]
        finally:
            await process.stop(grace=0)


def _documented() -> dict[str, set[str]]:
    text = DOCS.read_text()
    table = text.split("<!-- metrics-table")[1].split("<!-- end metrics-table")[0]
    found = {}
    for row in re.findall(r"^\| `([a-z_]+)` \| (\w+) \| [^|]+ \| ([^|]+) \|", table, re.M):
        name, kind, labels = row
        found[name] = {label.strip() for label in labels.split(",")}
        found[name].add(kind)
    return found


def test_documented_metrics_match_what_is_exported() -> None:
    """Every instrument, fed one report that touches it and read back as Prometheus text,
    is in docs/metrics.md's table with its labels, and the table lists nothing else."""
    telemetry = Telemetry()
    telemetry.bind(
        lambda model: model == "m",
        lambda: [({"deployment": "m/0"}, 1.0)],
        lambda: [({"deployment": "m/0"}, 0.0)],
        lambda: [({"budget": "global"}, 5.0)],
    )
    route = RouteTaken("m/0", "m", "openai", "gpt-4o-mini", Locality.CLOUD, 3, "r1")
    telemetry.call_ended(
        CallReport(
            "r1", "m", route, "ok", 0.0, 1.0, ttft=0.1, usage=Usage(10, 5, 2), cost=0.01,
            attempts=3, fallbacks=1, retries=1, hedges=1, hedge_won=True, budget_refused=True,
            privacy_refused=True, overhead=0.0001, relay_overhead=0.0002,
        )
    )  # fmt: skip
    telemetry.call_ended(
        CallReport(
            "r2", "m", None, "error", 0.0, 1.0, error_type="UNAVAILABLE", budget_refused=True
        )
    )
    telemetry.config_reloaded("applied")
    rendered = telemetry.prometheus_text()
    telemetry.shutdown()
    assert rendered is not None
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(rendered[0].decode()):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {k for s in family.samples for k in s.labels if k != "le"}
        exported[name] = labels | {family.type}
    assert exported == _documented()
