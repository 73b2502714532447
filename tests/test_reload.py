"""Reload in-process: outcomes and their metric, health carried over by identity, and the
restart-only settings refused (the end-to-end cases are in test_operations.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from opentelemetry.sdk.metrics.export import NumberDataPoint

from sidecar.config import load_config_hashed
from sidecar.engine import Engine
from sidecar.runtime.reload import Reloader
from sidecar.telemetry import Telemetry


def _config(first_base: str, second_base: str, **extra: Any) -> dict[str, Any]:
    return {
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "ollama/m", "api_base": first_base}},
            {"model_name": "b", "litellm_params": {"model": "ollama/m", "api_base": second_base}},
        ],
        "health": {"probe_interval": 0},
        **extra,
    }


def _write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")


async def test_outcomes_are_counted_and_health_follows_identity(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    _write(path, _config("http://127.0.0.1:9", "http://127.0.0.1:10"))
    config, digest = load_config_hashed(path)
    engine = Engine(config, telemetry=Telemetry())
    engine.operations.loaded(digest)
    reloader = Reloader(engine, str(path), interval=0)
    try:
        for _ in range(3):
            engine.health.failed("a/0", "connection refused")
            engine.health.failed("b/0", "connection refused")
        assert engine.health["a/0"].state.value == "cooling"
        assert (await reloader.reload("test")).outcome == "unchanged"
        # b moves to another address: a new deployment under the same id, health afresh.
        _write(path, _config("http://127.0.0.1:9", "http://127.0.0.1:11"))
        applied = await reloader.reload("test")
        assert applied.outcome == "applied"
        assert engine.operations.config_hash == applied.config_hash != digest
        assert engine.health["a/0"].state.value == "cooling"
        assert engine.health["a/0"].consecutive_failures == 3
        assert engine.health["b/0"].state.value == "up"
        assert engine.config.groups["b"].deployments[0].api_base == "http://127.0.0.1:11"
        _write(
            path,
            _config("http://127.0.0.1:9", "http://127.0.0.1:11", limits={"max_answer_chars": 5}),
        )
        rejected = await reloader.reload("test")
        assert rejected.outcome == "rejected"
        assert rejected.problems == ("limits changed: that takes a restart, not a reload",)
        assert engine.config.limits.max_answer_chars != 5
        # Built at start-up: the Ollama door's port and the shadow sampler.
        _write(
            path,
            _config(
                "http://127.0.0.1:9",
                "http://127.0.0.1:11",
                front_doors={"ollama_port": 11434},
                quality_monitoring={"sample_rate": 0.5},
            ),
        )
        (problem,) = (await reloader.reload("test")).problems
        assert problem.startswith("quality_monitoring, front_doors changed")
        path.write_text("model_list: 7\n", encoding="utf-8")
        assert (await reloader.reload("test")).outcome == "rejected"
        assert engine.operations.reloads_applied == 1
        assert engine.operations.reloads_rejected == 3
        assert engine.operations.last_reload_error.startswith("model_list: expected a list")
    finally:
        await reloader.aclose()
        await engine.aclose()
    data = engine.telemetry.metrics_data()
    (metric,) = [
        m
        for r in data.resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
        if m.name == "llm_sidecar.config_reloads"
    ]
    counts = {
        (p.attributes or {})["outcome"]: p.value
        for p in metric.data.data_points
        if isinstance(p, NumberDataPoint)
    }
    assert counts == {"unchanged": 1, "applied": 1, "rejected": 3}
