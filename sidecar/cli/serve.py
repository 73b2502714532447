"""`llm-sidecar serve`: load the config, start stand-ins if asked, serve until signalled."""

from __future__ import annotations

import argparse
import logging

from bridge.app import BridgeSettings, MiB
from sidecar.config import load_config
from sidecar.config.table import render_model_table
from sidecar.engine import Engine
from sidecar.health.discovery import discover_context_windows
from sidecar.providers import ProviderRegistry
from sidecar.runtime.process import SidecarServer
from sidecar.runtime.standins import StandIns

log = logging.getLogger("sidecar")


async def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with StandIns(config, args.simulate) as standins:
        config = standins.config
        http = BridgeSettings(
            master_key=config.general_settings.master_key,
            max_body_bytes=int(args.max_request_mb * MiB),
        )
        providers = ProviderRegistry()
        config = await discover_context_windows(config, providers.pool)
        server = SidecarServer(
            Engine(config, providers),
            host=args.host,
            grpc_port=args.grpc_port,
            http_port=None if args.no_http else args.http_port,
            http_settings=http,
        )
        await server.start()
        print(banner(server, standins), flush=True)
        await server.run_until_signalled(grace=args.drain_seconds)
    return 0


def banner(server: SidecarServer, standins: StandIns) -> str:
    lines = [f"llm-sidecar serving gRPC on {server.host}:{server.grpc_port}"]
    if server.http_port is not None:
        url = f"http://{_host(server.host)}:{server.http_port}"
        keyed = bool(server.engine.config.general_settings.master_key)
        key = "master key required" if keyed else "no key"
        lines.append(f"llm-sidecar serving HTTP on {url} (OpenAI base_url {url}/v1, {key})")
    lines.append(render_model_table(server.engine.config))
    if standins.simulated:
        bar = "!" * 78
        lines += [
            bar,
            "!! SIMULATED BACKENDS: these deployments are answered by built-in simulators,",
            "!! not by real models: " + ", ".join(standins.simulated),
            *(f"!!   {reason}" for reason in standins.reasons),
            bar,
        ]
    return "\n".join(lines)


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
