"""host:port as sockets, URLs and gRPC targets write it: IPv6 hosts in brackets."""

from __future__ import annotations


def bracketed(host: str) -> str:
    """`host` as it appears before a port: `[::1]` for IPv6, unchanged otherwise."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def host_port(host: str, port: int) -> str:
    return f"{bracketed(host)}:{port}"
