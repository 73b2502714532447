"""`make run`'s stack in-process: the seed configuration, simulated stand-ins, both doors.

`make run` serves examples/litellm_config.yaml with `--simulate auto`; on a machine with
no Ollama and no API keys every deployment is then a built-in simulator. The same is
built here on port 0, with no environment (so no key can send a call anywhere but to
the simulators on 127.0.0.1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from bridge.app import BridgeSettings
from sidecar.cli.serve import SidecarProcess
from sidecar.config import load_config
from sidecar.engine import Engine
from sidecar.runtime.standins import StandIns

SEED = Path(__file__).resolve().parent.parent / "examples" / "litellm_config.yaml"
MASTER_KEY = "sk-your-proxy-master-key"  # the seed file's general_settings.master_key


@dataclass
class Demo:
    server: SidecarProcess
    standins: StandIns

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/v1"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"


@asynccontextmanager
async def running_demo(probe_interval: float | None = None) -> AsyncIterator[Demo]:
    """The stack; `probe_interval` compresses time for tests that watch health probes."""
    config = load_config(SEED, env={}, log_warnings=False)
    async with StandIns(config, "auto") as standins:
        config = standins.config
        if probe_interval is not None:
            health = dataclasses.replace(config.health, probe_interval=probe_interval)
            config = dataclasses.replace(config, health=health)
        server = SidecarProcess(
            Engine(config),
            grpc_port=0,
            http_port=0,
            http_settings=BridgeSettings(master_key=config.general_settings.master_key),
        )
        await server.start()
        try:
            yield Demo(server, standins)
        finally:
            await server.stop(grace=0)
