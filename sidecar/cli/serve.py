"""`llm-sidecar serve`: load the config, start stand-ins if asked, serve until signalled.

This is where the process is composed: the engine, the gRPC door, (unless
--no-http) the HTTP bridge and (with --ollama-port or front_doors.ollama_port) the
Ollama-compatible door, all calling the same engine in-process, on one loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from bridge.app import BridgeSettings, MiB
from bridge.backend import InProcessBackend
from bridge.ollama.app import OllamaApp
from bridge.server import BridgeServer
from sidecar.cli import options
from sidecar.config import SidecarConfig, load_config_hashed
from sidecar.config.table import render_model_table
from sidecar.engine import Engine
from sidecar.health.discovery import discover_context_windows
from sidecar.hostport import host_port
from sidecar.lifecycle import Lifecycle
from sidecar.providers import ProviderRegistry
from sidecar.redaction import redact_logs
from sidecar.rpc.door import GrpcDoor
from sidecar.rpc.tls import ServerTls
from sidecar.runtime.pidfile import pid_file
from sidecar.runtime.process import FrontDoor, Runtime
from sidecar.runtime.reload import Reloader
from sidecar.runtime.standins import StandIns
from sidecar.runtime.supervisor import WORKERS_ENV, follow_supervisor
from sidecar.telemetry.endpoint import MetricsEndpoint
from sidecar.telemetry.logs import configure_logging


class SidecarProcess(Lifecycle):
    """The engine behind the gRPC door and, when `http_port` is given, the HTTP bridge.

    Ports are the bound ones once started. The bridge's master key and limits come
    from the configuration unless `http_settings` say otherwise; gRPC is served over
    TLS when `grpc_tls` is given.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        host: str = "127.0.0.1",
        grpc_port: int = 50051,
        http_port: int | None = None,
        http_settings: BridgeSettings | None = None,
        grpc_tls: ServerTls | None = None,
        reuse_port: bool = False,
        metrics_port: int | None = None,
        ollama_port: int | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.grpc = GrpcDoor(engine, host=host, port=grpc_port, tls=grpc_tls, reuse_port=reuse_port)
        self.http: BridgeServer | None = None
        doors: list[FrontDoor] = [self.grpc]
        if http_port is not None:
            settings = http_settings or _settings(engine)
            self.http = BridgeServer(
                InProcessBackend(engine),
                host=host,
                port=http_port,
                settings=with_metrics(settings, engine),
                reuse_port=reuse_port,
            )
            doors.append(self.http)
        # Observability: a separate port for Prometheus scrapers.
        self.metrics: MetricsEndpoint | None = None
        if metrics_port is not None:
            config = engine.config
            self.metrics = MetricsEndpoint(
                engine.telemetry.prometheus_text,
                host=host,
                port=metrics_port,
                master_key=config.general_settings.master_key,
                open=config.telemetry.metrics_open,
                reuse_port=reuse_port,
            )
            doors.append(self.metrics)
        # Ollama's API: another HTTP door on the same engine, with the same key and limits.
        self.ollama: BridgeServer | None = None
        if ollama_port is not None:
            self.ollama = BridgeServer(
                InProcessBackend(engine),
                host=host,
                port=ollama_port,
                settings=http_settings or _settings(engine),
                app=OllamaApp,
                reuse_port=reuse_port,
            )
            doors.append(self.ollama)
        self.runtime = Runtime(engine, doors)

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    @property
    def ollama_port(self) -> int | None:
        return None if self.ollama is None else self.ollama.port

    async def start(self) -> None:
        await self.runtime.start()

    async def stop(self, grace: float = 5.0) -> None:
        await self.runtime.stop(grace)


async def serve(args: argparse.Namespace) -> int:
    follow_supervisor()
    if args.log_format:  # so that the configuration's own warnings come out in it too
        configure_logging(args.serve_log_level or args.log_level or "INFO", args.log_format)
    from_file, config_hash = load_config_hashed(args.config)
    config = logging_from_flags(from_file, args)
    configure_logging(config.logging.level, config.logging.format)
    redact_logs(config.secrets)
    async with StandIns(config, args.simulate) as standins:
        config = standins.config
        http = BridgeSettings(
            master_key=config.general_settings.master_key,
            max_body_bytes=int(args.max_request_mb * MiB),
            limits=config.limits,
        )
        providers = ProviderRegistry()
        config = await discover_context_windows(config, providers.pool)
        engine = Engine(config, providers, data_dir=data_dir(args.data_dir, config.budget.data_dir))
        engine.operations.loaded(config_hash)
        engine.operations.workers = int(os.environ.get(WORKERS_ENV, "1"))
        process = SidecarProcess(
            engine,
            host=args.host,
            grpc_port=args.grpc_port,
            http_port=None if args.no_http else args.http_port,
            http_settings=http,
            grpc_tls=options.server_tls(args),
            reuse_port=args.reuse_port,
            metrics_port=args.metrics_port,
            ollama_port=(
                args.ollama_port if args.ollama_port is not None else config.front_doors.ollama_port
            ),
        )

        async def prepare(loaded: SidecarConfig) -> SidecarConfig:
            return await discover_context_windows(await standins.cover(loaded), providers.pool)

        reloader = Reloader(engine, args.config, prepare=prepare, interval=args.reload_interval)
        await process.start()
        with pid_file(args.pid_file):
            print(banner(process, standins), flush=True)
            reloader.start_watching()
            try:
                await process.runtime.run_until_signalled(args.drain_seconds, reloader.hangup)
            finally:
                await reloader.aclose()
    return 0


def logging_from_flags(config: SidecarConfig, args: argparse.Namespace) -> SidecarConfig:
    """The configuration with `logging` as serve's --log-level / --log-format override it."""
    level = args.serve_log_level or args.log_level
    logged = dataclasses.replace(
        config.logging,
        level=(level or config.logging.level).upper(),
        format=args.log_format or config.logging.format,
    )
    return dataclasses.replace(config, logging=logged)


def with_metrics(settings: BridgeSettings, engine: Engine) -> BridgeSettings:
    """The bridge's settings with GET /metrics served from the engine's telemetry."""
    if settings.metrics is not None:
        return settings
    return dataclasses.replace(
        settings,
        metrics=engine.telemetry.prometheus_text,
        metrics_open=engine.config.telemetry.metrics_open,
    )


def _settings(engine: Engine) -> BridgeSettings:
    config = engine.config
    return BridgeSettings(master_key=config.general_settings.master_key, limits=config.limits)


def data_dir(flag: str | None, configured: str | None) -> str:
    """Where the ledger and spend log live: the flag, the config, the environment, or the
    user's state directory, so that spend survives a restart by default."""
    chosen = flag or configured or os.environ.get("LLM_SIDECAR_DATA_DIR")
    if chosen:
        return chosen
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return os.path.join(state, "llm-sidecar")


def banner(process: SidecarProcess, standins: StandIns) -> str:
    config = process.engine.config
    tls = process.grpc.tls
    grpc_mode = "no TLS" if tls is None else "mutual TLS" if tls.client_ca else "TLS"
    grpc_mode += ", master key required" if config.general_settings.master_key else ", no key"
    address = host_port(process.host, process.grpc_port)
    lines = [f"llm-sidecar serving gRPC on {address} ({grpc_mode})"]
    if process.http_port is not None:
        url = f"http://{host_port(process.host, process.http_port)}"
        keyed = bool(config.general_settings.master_key)
        key = "master key required" if keyed else "no key"
        lines.append(f"llm-sidecar serving HTTP on {url} (OpenAI base_url {url}/v1, {key})")
    if process.metrics is not None:
        url = f"http://{host_port(process.host, process.metrics.port)}/metrics"
        lines.append(f"llm-sidecar serving Prometheus metrics on {url}")
    if process.ollama_port is not None:
        url = f"http://{host_port(process.host, process.ollama_port)}"
        key = "master key required" if config.general_settings.master_key else "no key"
        lines.append(f"llm-sidecar serving Ollama's API on {url} (OLLAMA_HOST={url}, {key})")
    lines.append(render_model_table(process.engine.config))
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
