"""`llm-sidecar bridge`: the HTTP bridge alone, in front of a sidecar reached over gRPC.

It needs no configuration: the models and the answers come from the sidecar.
The master key comes from --master-key, else $LLM_SIDECAR_MASTER_KEY, else the
general_settings.master_key of --config; with none of them the bridge is open
(and the sidecar behind it checks the keys it is passed). --config also gives
the `limits` section its connections obey. With --ollama-port, Ollama's API is
served too, on the same gRPC connection to the sidecar.
"""

from __future__ import annotations

import argparse
import logging
import os

from bridge.app import BridgeSettings, MiB
from bridge.ollama.app import OllamaApp
from bridge.remote import RemoteBackend
from bridge.server import BridgeServer
from sidecar.cli import options
from sidecar.config import load_config
from sidecar.config.model import Limits
from sidecar.errors import ConfigError
from sidecar.hostport import host_port
from sidecar.redaction import redact_logs
from sidecar.runtime.signals import run_until_signalled

log = logging.getLogger("bridge")


async def run_bridge(args: argparse.Namespace) -> int:
    target = args.sidecar
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError([f"--sidecar: expected HOST:PORT, got {target!r}"], "command line")
    key = options.master_key(args, dict(os.environ))
    redact_logs([key])
    limits = load_config(args.config).limits if args.config else Limits()
    settings = BridgeSettings(
        master_key=key, max_body_bytes=int(args.max_request_mb * MiB), limits=limits
    )
    backend = RemoteBackend(target, options.client_tls(args))
    server = BridgeServer(backend, host=args.host, port=args.http_port, settings=settings)
    await server.start()
    doors = [server]
    if args.ollama_port is not None:
        ollama = BridgeServer(
            backend,
            host=args.host,
            port=args.ollama_port,
            settings=settings,
            app=OllamaApp,
            owns_backend=False,
        )
        try:
            await ollama.start()
        except BaseException:
            await server.stop(0)
            raise
        doors.insert(0, ollama)  # stopped first: the OpenAI door closes the shared backend
    unready = await backend.ready()
    if unready is not None:
        # Not fatal: the sidecar may come up after the bridge; readiness reports it meanwhile.
        log.warning("the sidecar is not ready yet: %s", unready)
    url = f"http://{host_port(args.host, server.port)}"
    key = "master key required" if settings.master_key else "no key"
    lines = [
        f"llm-sidecar bridge serving HTTP on {url} (OpenAI base_url {url}/v1, {key}) "
        f"in front of the sidecar at {target}"
    ]
    if len(doors) > 1:
        url = f"http://{host_port(args.host, doors[0].port)}"
        lines.append(f"llm-sidecar bridge serving Ollama's API on {url} (OLLAMA_HOST={url}, {key})")
    print("\n".join(lines), flush=True)

    async def stop(grace: float) -> None:
        for door in doors:
            await door.stop(grace)

    await run_until_signalled(stop, args.drain_seconds)
    return 0
