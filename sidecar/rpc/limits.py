"""The gRPC server's resource limits, from the configuration's `limits` section.

max concurrent RPCs      grpc.aio's own cap: one call more is RESOURCE_EXHAUSTED
max concurrent streams   per HTTP/2 connection, so one client cannot open thousands
max connection idle      a connection with no call in flight is closed after this
keep-alive enforcement   a client pinging more often than min_ping_interval, with
                         or without calls, is disconnected after two strikes; the
                         server itself pings idle links to find dead peers
metadata size            gRPC's default (8 KiB soft, 16 KiB hard) is kept, stated here
"""

from __future__ import annotations

from sidecar.config.model import Limits

# The server's own keep-alive pings: how often on a quiet link, and how long to wait.
_KEEPALIVE_TIME_MS = 60_000
_KEEPALIVE_TIMEOUT_MS = 20_000
_PING_STRIKES = 2
_METADATA_SOFT = 8 * 1024
_METADATA_HARD = 16 * 1024


def server_options(limits: Limits) -> list[tuple[str, int]]:
    min_ping_ms = int(limits.grpc_min_ping_interval * 1000)
    return [
        ("grpc.max_concurrent_streams", limits.grpc_max_concurrent_streams),
        ("grpc.max_connection_idle_ms", int(limits.grpc_max_connection_idle * 1000)),
        ("grpc.keepalive_time_ms", _KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", _KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", min_ping_ms),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", min_ping_ms),
        ("grpc.http2.max_ping_strikes", _PING_STRIKES),
        ("grpc.max_metadata_size", _METADATA_SOFT),
        ("grpc.absolute_max_metadata_size", _METADATA_HARD),
    ]
