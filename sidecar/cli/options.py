"""Command-line options shared by the commands that talk to a running sidecar.

The master key comes from --master-key, else $LLM_SIDECAR_MASTER_KEY, else the
general_settings.master_key of --config (prefer the last two to putting a key on
the command line, where `ps` shows it). TLS to the sidecar's gRPC port is
--tls-ca, plus --tls-cert and --tls-key for mutual TLS. Nothing here imports grpc or
the configuration until a command needs them, so that `simulate` starts fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from sidecar.errors import ConfigError

if TYPE_CHECKING:
    from sidecar.rpc.tls import ClientTls, ServerTls

KEY_ENV = "LLM_SIDECAR_MASTER_KEY"


def add_key_flags(parser: argparse.ArgumentParser, who: str) -> None:
    parser.add_argument(
        "--master-key",
        default=None,
        help=f"the key {who} (default: ${KEY_ENV}, else the general_settings.master_key of "
        "--config; prefer those to putting a key on the command line)",
    )
    parser.add_argument("--config", default=None, help="a config to read the master key from")


def master_key(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    if args.master_key:
        return str(args.master_key)
    from_env = environ.get(KEY_ENV)
    if from_env:
        return from_env
    if args.config:
        from sidecar.config import load_config  # here: most commands never need it

        return load_config(args.config).general_settings.master_key
    return None


def add_client_tls_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS to the sidecar's gRPC port")
    group.add_argument("--tls-ca", default=None, help="PEM CA bundle to trust (enables TLS)")
    group.add_argument("--tls-cert", default=None, help="client certificate, for mutual TLS")
    group.add_argument("--tls-key", default=None, help="client private key, for mutual TLS")


def client_tls(args: argparse.Namespace) -> ClientTls | None:
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return None
    from sidecar.rpc.tls import ClientTls  # here, as it pulls in grpc

    return ClientTls(args.tls_ca, args.tls_cert, args.tls_key)


def add_server_tls_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TLS on the gRPC port")
    group.add_argument("--tls-cert", default=None, help="PEM certificate chain (enables TLS)")
    group.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    group.add_argument(
        "--tls-client-ca", default=None, help="PEM CA bundle: require client certificates it signed"
    )


def server_tls(args: argparse.Namespace) -> ServerTls | None:
    if not (args.tls_cert or args.tls_key or args.tls_client_ca):
        return None
    if not (args.tls_cert and args.tls_key):
        raise ConfigError(["--tls-cert and --tls-key go together"], "command line")
    from sidecar.rpc.tls import ServerTls  # here, as it pulls in grpc

    return ServerTls(args.tls_cert, args.tls_key, args.tls_client_ca)


def integer_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse
