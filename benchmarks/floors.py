"""The floors: reference relays that do nothing but the transport, to measure against.

    python -m benchmarks.floors grpc --upstream http://127.0.0.1:PORT [--port 0]
    python -m benchmarks.floors http --upstream http://127.0.0.1:PORT --api-key KEY

What remains of the sidecar's added latency and CPU once a floor's is taken away
is the sidecar's own share: routing, translation, health, budgets, metering.
What a floor costs is what any Python relay on the same libraries pays.

- `grpc`: a bare grpc.aio servicer on uvloop, the Router service's StreamChat and
  Chat on the wire, no interceptor, no routing. Each call POSTs one pre-built Ollama
  request to the simulated upstream (aiohttp, the sidecar's HTTP client) and, for each
  read of the NDJSON answer, sends one pre-serialized ChatChunk (a read is what the
  sidecar coalesces into one chunk too); the last one carries the finish reason.
- `http`: a bare aiohttp relay of the OpenAI API: each POST /v1/chat/completions is
  passed to the simulated OpenAI upstream with its own key, and the answer's bytes
  are written back as they arrive (SSE) or whole.

Each prints the line the benchmark's process runner waits for, as the sidecar does
("serving gRPC on HOST:PORT", "serving HTTP on URL"), and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
import grpc
import orjson
import uvloop
from aiohttp import web

from sidecar.rpc.api import router_pb2 as pb

_SERVICE: Final = "llmsidecar.v1.Router"
_OLLAMA_MODEL: Final = "llama3.2:8b"
_PROMPT: Final = "Classify this as positive or negative: Great product!"
# What every read of the upstream's answer becomes: built once, sent as bytes.
_TOKEN: Final = pb.ChatChunk(delta="tok ").SerializeToString()
_LAST: Final = pb.ChatChunk(
    delta="tok ",
    finish_reason="stop",
    usage=pb.Usage(prompt_tokens=12, completion_tokens=20),
).SerializeToString()
_ANSWER: Final = pb.ChatResponse(
    content="tok " * 20, finish_reason="stop", usage=pb.Usage(prompt_tokens=12)
).SerializeToString()
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _ollama_body(stream: bool) -> bytes:
    messages = [{"role": "user", "content": _PROMPT}]
    return orjson.dumps({"model": _OLLAMA_MODEL, "stream": stream, "messages": messages})


class GrpcFloor:
    """StreamChat and Chat relayed from an Ollama upstream with nothing in between."""

    def __init__(self, session: aiohttp.ClientSession, upstream: str) -> None:
        self._session = session
        self._url = f"{upstream}/api/chat"
        self._stream_body = _ollama_body(True)
        self._unary_body = _ollama_body(False)

    async def stream_chat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async with self._session.post(self._url, data=self._stream_body) as response:
            read = response.content.readany
            while data := await read():
                yield _LAST if b'"done":true' in data else _TOKEN

    async def chat(self, request: pb.ChatRequest, context: grpc.aio.ServicerContext) -> bytes:
        async with self._session.post(self._url, data=self._unary_body) as response:
            await response.read()
        return _ANSWER

    def handler(self) -> grpc.GenericRpcHandler:
        # No response serializer: the handlers hand grpc.aio the bytes themselves.
        return grpc.method_handlers_generic_handler(
            _SERVICE,
            {
                "StreamChat": grpc.unary_stream_rpc_method_handler(
                    self.stream_chat, request_deserializer=pb.ChatRequest.FromString
                ),
                "Chat": grpc.unary_unary_rpc_method_handler(
                    self.chat, request_deserializer=pb.ChatRequest.FromString
                ),
            },
        )


async def serve_grpc(upstream: str, port: int, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((GrpcFloor(session, upstream).handler(),))
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print(f"serving gRPC on 127.0.0.1:{bound}", flush=True)
        await stop.wait()
        await server.stop(1.0)


class HttpFloor:
    """POST /v1/chat/completions passed through to an OpenAI upstream, bytes as they come."""

    def __init__(self, session: aiohttp.ClientSession, upstream: str, api_key: str) -> None:
        self._session = session
        self._url = f"{upstream}/v1/chat/completions"
        self._headers = {"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"}

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        stream = bool(orjson.loads(body).get("stream"))
        async with self._session.post(self._url, data=body, headers=self._headers) as upstream:
            if not stream:
                return web.Response(body=await upstream.read(), content_type="application/json")
            response = web.StreamResponse(headers=_SSE_HEADERS)
            await response.prepare(request)
            read = upstream.content.readany
            while data := await read():
                await response.write(data)
            await response.write_eof()
            return response


async def serve_http(upstream: str, api_key: str, port: int, stop: asyncio.Event) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        app = web.Application()
        floor = HttpFloor(session, upstream, api_key)
        app.router.add_post("/v1/chat/completions", floor.chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port, backlog=2048)
        await site.start()
        bound = runner.addresses[0][1]
        print(f"serving HTTP on http://127.0.0.1:{bound}", flush=True)
        await stop.wait()
        await runner.cleanup()


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.kind == "grpc":
        await serve_grpc(args.upstream, args.port, stop)
    else:
        await serve_http(args.upstream, args.api_key, args.port, stop)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("grpc", "http"))
    parser.add_argument("--upstream", required=True, help="the simulated upstream's root URL")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default="", help="the upstream's key (http)")
    # Accepted for the process runner, which passes it to every process it starts.
    parser.add_argument("--log-level", default="WARNING", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    uvloop.run(main(parse()))
