"""Optional TLS on the gRPC port, and the matching client side.

On loopback (the sidecar's usual place, next to its callers) plain gRPC is
fine. Where the port is reachable over a network, give the server a
certificate and key (`serve --tls-cert --tls-key`); add `--tls-client-ca` to
require client certificates signed by that CA (mutual TLS). Clients of the
sidecar (the standalone bridge, `llm-sidecar status`) take `--tls-ca` to trust
the server and, for mutual TLS, their own `--tls-cert` and `--tls-key`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from sidecar.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ServerTls:
    cert: str  # PEM certificate chain file
    key: str  # PEM private key file
    client_ca: str | None = None  # PEM CA bundle; set: clients must present a certificate


@dataclass(frozen=True, slots=True)
class ClientTls:
    ca: str | None = None  # PEM CA bundle to trust; None: the system's roots
    cert: str | None = None  # for mutual TLS, with key
    key: str | None = None


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    key, cert = _read(tls.key, "--tls-key"), _read(tls.cert, "--tls-cert")
    ca = _read(tls.client_ca, "--tls-client-ca") if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=ca is not None
    )


def channel_credentials(tls: ClientTls) -> grpc.ChannelCredentials:
    if (tls.cert is None) != (tls.key is None):
        raise ConfigError(["--tls-cert and --tls-key go together"], "command line")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca, "--tls-ca") if tls.ca else None,
        private_key=_read(tls.key, "--tls-key") if tls.key else None,
        certificate_chain=_read(tls.cert, "--tls-cert") if tls.cert else None,
    )


def add_port(server: grpc.aio.Server, address: str, tls: ServerTls | None) -> int:
    """Listen on `address`, over TLS when `tls` is given; the bound port (0: failed)."""
    if tls is None:
        bound: int = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, server_credentials(tls))
    return bound


def open_channel(
    target: str, tls: ClientTls | None, options: list[tuple[str, int]]
) -> grpc.aio.Channel:
    """A channel to the sidecar at `target`, over TLS when `tls` is given."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=options)


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            [f"{flag}: cannot read {path}: {exc.strerror or 'unreadable'}"], "command line"
        ) from None
