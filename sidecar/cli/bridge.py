"""`llm-sidecar bridge`: the HTTP bridge alone, in front of a sidecar reached over gRPC.

It needs no configuration: the models and the answers come from the sidecar.
The master key comes from --master-key, else $LLM_SIDECAR_MASTER_KEY, else the
general_settings.master_key of --config; with none of them the bridge is open
(and the sidecar behind it checks the keys it is passed). --config also gives
the `limits` section its connections obey.
"""

from __future__ import annotations

import argparse
import logging
import os

from bridge.app import BridgeSettings, MiB
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
    unready = await backend.ready()
    if unready is not None:
        # Not fatal: the sidecar may come up after the bridge; readiness reports it meanwhile.
        log.warning("the sidecar is not ready yet: %s", unready)
    url = f"http://{host_port(args.host, server.port)}"
    key = "master key required" if settings.master_key else "no key"
    print(
        f"llm-sidecar bridge serving HTTP on {url} (OpenAI base_url {url}/v1, {key}) "
        f"in front of the sidecar at {target}",
        flush=True,
    )
    await run_until_signalled(server.stop, args.drain_seconds)
    return 0
