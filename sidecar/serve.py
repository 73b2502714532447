"""`llm-sidecar serve`: load the config, start stand-ins if asked, serve until signalled."""

from __future__ import annotations

import argparse
import logging

from sidecar.config import load_config
from sidecar.config.table import render_model_table
from sidecar.engine import Engine
from sidecar.server import SidecarServer
from sidecar.standins import StandIns

log = logging.getLogger("sidecar")


async def serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    async with StandIns.for_config(config, args.simulate) as standins:
        config = standins.config
        server = SidecarServer(Engine(config), host=args.host, grpc_port=args.grpc_port)
        await server.start()
        print(banner(server, standins), flush=True)
        await server.run_until_signalled(grace=args.drain_seconds)
    return 0


def banner(server: SidecarServer, standins: StandIns) -> str:
    lines = [
        f"llm-sidecar serving gRPC on {server.host}:{server.grpc_port}",
        render_model_table(server.engine.config),
    ]
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
