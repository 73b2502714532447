"""A real OTLP receiver for tests: HTTP/protobuf (aiohttp) or gRPC, decoding what it
gets with the OpenTelemetry protocol's own protobuf types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc


@dataclass
class Received:
    spans: list[trace_pb.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_pb.ExportMetricsServiceRequest] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def span_names(self) -> list[str]:
        return [
            span.name
            for request in self.spans
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    def metric_names(self) -> set[str]:
        return {
            metric.name
            for request in self.metrics
            for resource in request.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


@asynccontextmanager
async def http_receiver() -> AsyncIterator[tuple[str, Received]]:
    """An OTLP/HTTP receiver on 127.0.0.1: yields its root URL and what it received."""
    received = Received()

    async def traces(request: web.Request) -> web.Response:
        received.headers.append(dict(request.headers))
        message = trace_pb.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.spans.append(message)
        body = trace_pb.ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    async def metrics(request: web.Request) -> web.Response:
        message = metrics_pb.ExportMetricsServiceRequest()
        message.ParseFromString(await request.read())
        received.metrics.append(message)
        body = metrics_pb.ExportMetricsServiceResponse().SerializeToString()
        return web.Response(body=body, content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    app.router.add_post("/v1/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await runner.cleanup()


class _Traces(trace_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    async def Export(
        self, request: trace_pb.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> trace_pb.ExportTraceServiceResponse:
        self._received.spans.append(request)
        self._received.headers.append(dict(context.invocation_metadata() or ()))
        return trace_pb.ExportTraceServiceResponse()


class _Metrics(metrics_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self._received = received

    async def Export(
        self, request: metrics_pb.ExportMetricsServiceRequest, context: grpc.aio.ServicerContext
    ) -> metrics_pb.ExportMetricsServiceResponse:
        self._received.metrics.append(request)
        return metrics_pb.ExportMetricsServiceResponse()


@asynccontextmanager
async def grpc_receiver() -> AsyncIterator[tuple[str, Received]]:
    """An OTLP/gRPC receiver on 127.0.0.1: yields its address URL and what it received."""
    received = Received()
    server = grpc.aio.server()
    trace_grpc.add_TraceServiceServicer_to_server(_Traces(received), server)  # type: ignore[no-untyped-call]
    metrics_grpc.add_MetricsServiceServicer_to_server(_Metrics(received), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        await server.stop(0)
