"""The `llm-sidecar` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import uvloop

from sidecar import __version__
from sidecar.cli import options
from sidecar.cli import quality as quality_cli
from sidecar.cli import simulate as simulate_cli
from sidecar.errors import ConfigError, SidecarError
from sidecar.redaction import redact

log = logging.getLogger("sidecar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm-sidecar", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llm-sidecar {__version__}")
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default INFO)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the sidecar")
    serve.add_argument("--config", required=True, help="LiteLLM-style YAML configuration")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--grpc-port", type=int, default=50051)
    serve.add_argument(
        "--simulate",
        choices=("never", "auto", "always"),
        default="never",
        help="serve built-in simulated backends: 'auto' for every deployment that is "
        "unreachable or has no API key, 'always' for all of them",
    )
    serve.add_argument("--drain-seconds", type=float, default=10.0)
    serve.add_argument(
        "--http-port", type=int, default=4000, help="OpenAI-compatible HTTP bridge port"
    )
    serve.add_argument("--no-http", action="store_true", help="serve gRPC only")
    serve.add_argument(
        "--ollama-port",
        type=int,
        default=None,
        metavar="P",
        help="also serve Ollama's API on port P (11434 is Ollama's own; default: "
        "front_doors.ollama_port, else off)",
    )
    serve.add_argument(
        "--max-request-mb", type=_megabytes, default=8.0, help="largest HTTP request body accepted"
    )
    serve.add_argument(
        "--data-dir",
        default=None,
        help="where the SQLite ledger and spend log live (default: budget.data_dir, else "
        "$LLM_SIDECAR_DATA_DIR, else $XDG_STATE_HOME/llm-sidecar or ~/.local/state/llm-sidecar)",
    )
    options.add_server_tls_flags(serve)
    # -- operations: reload, workers (sidecar/runtime/reload.py, supervisor.py) -----------
    serve.add_argument(
        "--pid-file", default=None, help="write the process id here, for `llm-sidecar reload`"
    )
    serve.add_argument(
        "--reload-interval",
        type=float,
        default=2.0,
        help="seconds between looks at the config file, reloaded when it changes (0: never; "
        "SIGHUP reloads too)",
    )
    serve.add_argument(
        "--workers",
        type=options.integer_at_least(1),
        default=1,
        help="serve from N processes sharing the ports (SO_REUSEPORT), supervised",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="let other processes listen on the same ports (SO_REUSEPORT; --workers sets it)",
    )
    # Observability.
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="also serve GET /metrics (Prometheus) on this port",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json", "auto"),
        default=None,
        help="log lines as text or one JSON object each (default: logging.format, else text)",
    )
    serve.add_argument(
        "--log-level",
        dest="serve_log_level",
        default=None,
        help="DEBUG, INFO, WARNING or ERROR (default: logging.level, else INFO)",
    )

    bridge = commands.add_parser(
        "bridge", help="run the OpenAI-compatible HTTP bridge alone, in front of a remote sidecar"
    )
    bridge.add_argument("--sidecar", required=True, metavar="HOST:PORT", help="its gRPC address")
    bridge.add_argument("--host", default="127.0.0.1", help="address to listen on")
    bridge.add_argument("--http-port", type=int, default=4000)
    bridge.add_argument(
        "--ollama-port",
        type=int,
        default=None,
        metavar="P",
        help="also serve Ollama's API on port P (11434 is Ollama's own)",
    )
    options.add_key_flags(bridge, "callers must send")
    bridge.add_argument("--max-request-mb", type=_megabytes, default=8.0)
    bridge.add_argument("--drain-seconds", type=float, default=10.0)
    options.add_client_tls_flags(bridge)

    check = commands.add_parser("check-config", help="validate a config and print its models")
    check.add_argument("config")

    route = commands.add_parser("route", help="print the routing plan for a prompt")
    route.add_argument("--config", required=True)
    route.add_argument("--model", default="auto", help="alias to route (default: auto)")
    source = route.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="one user message")
    source.add_argument("--messages-file", help="JSON file with a list of {role, content}")
    route.add_argument("--task", help="task tag, as metadata.task")
    route.add_argument("--local-only", action="store_true", help="mark the request sensitive")

    status = commands.add_parser("status", help="show a running sidecar's backend health")
    status.add_argument(
        "--sidecar", default="127.0.0.1:50051", metavar="HOST:PORT", help="its gRPC address"
    )
    options.add_key_flags(status, "the sidecar wants")
    options.add_client_tls_flags(status)

    spend = commands.add_parser(
        "spend", help="show a running sidecar's spend per model and what each budget has left"
    )
    spend.add_argument(
        "--sidecar", default="127.0.0.1:50051", metavar="HOST:PORT", help="its gRPC address"
    )
    spend.add_argument("--days", type=int, default=30, help="days of spend to show (default 30)")
    spend.add_argument("--model", default="", help="only this model group or upstream model")
    spend.add_argument("--caller", default="", help="only this caller")
    spend.add_argument("--plot", metavar="FILE.png", help="also draw daily spend per model")
    options.add_key_flags(spend, "the sidecar wants")
    options.add_client_tls_flags(spend)

    health = commands.add_parser(
        "health", help="exit 0 when a sidecar's gRPC health check says SERVING (HEALTHCHECK)"
    )
    health.add_argument(
        "--sidecar", default="127.0.0.1:50051", metavar="HOST:PORT", help="its gRPC address"
    )
    health.add_argument("--service", default="", help="a model alias (default: the sidecar)")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait")
    options.add_client_tls_flags(health)

    reload = commands.add_parser(
        "reload", help="make a running sidecar load its config file again (SIGHUP)"
    )
    reload.add_argument(
        "--pid-file", required=True, help="the file `serve --pid-file` wrote its pid to"
    )

    simulate = commands.add_parser("simulate", help="run a simulated Ollama or OpenAI server")
    simulate_cli.configure_parser(simulate)

    quality = commands.add_parser(
        "quality", help="review shadow pairs: random samples, or a report with suggestions"
    )
    quality_cli.configure_parser(quality)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `serve --workers` starts its workers with the same arguments.
    args.argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=(args.log_level or "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "check-config":
            from sidecar.cli.check_config import check_config

            print(check_config(args.config))
            return 0
        if args.command == "route":
            from sidecar.cli.route import explain_route

            print(explain_route(args))
            return 0
        if args.command == "status":
            from sidecar.cli.status import fetch_status

            key = options.master_key(args, dict(os.environ))
            tls = options.client_tls(args)
            print(uvloop.run(fetch_status(args.sidecar, key, tls)))
            return 0
        if args.command == "spend":
            from sidecar.cli.spend import show_spend

            key = options.master_key(args, dict(os.environ))
            tls = options.client_tls(args)
            print(uvloop.run(show_spend(args, key, tls)))
            return 0
        if args.command == "health":
            from sidecar.cli.health import check_health

            serving, said = uvloop.run(
                check_health(args.sidecar, args.service, options.client_tls(args), args.timeout)
            )
            print(said)
            return 0 if serving else 1
        if args.command == "reload":
            from sidecar.cli.reload import send_reload

            print(send_reload(args.pid_file))
            return 0
        if args.command == "serve" and args.workers > 1:
            # The supervisor serves nothing itself: it starts without grpc or the bridge.
            from sidecar.runtime.supervisor import supervise

            return uvloop.run(supervise(args))
        if args.command == "serve":
            from sidecar.cli.serve import serve  # imported here: it pulls in grpc

            return uvloop.run(serve(args))
        if args.command == "bridge":
            from sidecar.cli.bridge import run_bridge  # imported here: it pulls in uvicorn

            return uvloop.run(run_bridge(args))
        if args.command == "simulate":
            uvloop.run(simulate_cli.run(args))
            return 0
        if args.command == "quality":
            if args.quality_command == "sample":
                print(quality_cli.show_sample(args))
            else:
                print(quality_cli.write_report(args))
            return 0
    except ConfigError as exc:
        print(f"configuration error in {exc.source or 'configuration'}:", file=sys.stderr)
        for problem in exc.problems:
            # The file failed to load, so its secrets are unknown: the patterns still apply.
            print(f"  {redact(problem, limit=None)}", file=sys.stderr)
        return 2
    except SidecarError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MiB, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
