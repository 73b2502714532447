"""A listener of its own for Prometheus scrapers (`serve --metrics-port`).

    GET /metrics    the exposition (OpenMetrics when Accept asks for it)

Unless `open`, the scraper must send the master key as a bearer token, as on
the bridge. Anything else is a 404; nothing here reaches the engine.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from aiohttp import web

Render = Callable[[str | None], tuple[bytes, str] | None]


class MetricsEndpoint:
    def __init__(
        self,
        render: Render,
        *,
        host: str,
        port: int,
        master_key: str | None,
        open: bool,
        reuse_port: bool = False,
    ) -> None:
        """`reuse_port`: share the port with the other workers of `serve --workers`; a
        scrape then reads the metrics of whichever worker the kernel picks."""
        self._render = render
        self._reuse_port = reuse_port
        self._host = host
        self._port = port
        self._key = None if open or not master_key else master_key.encode()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self._host, self._port, reuse_port=self._reuse_port or None)
        await site.start()
        self._runner, self._site = runner, site
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        for sock in sockets:
            self._port = sock.getsockname()[1]
            break

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._key is not None:
            given = request.headers.get("Authorization", "")
            scheme, _, token = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), self._key):
                return web.json_response(
                    {"error": "send the master key: 'Authorization: Bearer <master key>'"},
                    status=401,
                )
        rendered = self._render(request.headers.get("Accept"))
        if rendered is None:
            return web.json_response({"error": "metrics are off (telemetry.metrics)"}, status=404)
        body, content_type = rendered
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def stop(self, grace: float) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
