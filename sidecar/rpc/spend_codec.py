"""Translation of spend reports between the gRPC messages and the canonical types."""

from __future__ import annotations

from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.codec import LOCALITY_FROM_PB, LOCALITY_TO_PB
from sidecar.types import (
    BudgetStatus,
    DailySpend,
    Locality,
    SpendQuery,
    SpendRecord,
    SpendReport,
)

DEFAULT_LIMIT = 100
_LOCALITIES = {locality.value: locality for locality in Locality}
_UNSPECIFIED = pb.LOCALITY_UNSPECIFIED


def encode_query(query: SpendQuery, *, budgets_only: bool = False) -> pb.SpendRequest:
    return pb.SpendRequest(
        request_id=query.request_id,
        caller=query.caller,
        model=query.model,
        start_time=query.start or 0.0,
        end_time=query.end or 0.0,
        limit=query.limit,
        budgets_only=budgets_only,
    )


def decode_query(msg: pb.SpendRequest) -> SpendQuery:
    return SpendQuery(
        request_id=msg.request_id,
        caller=msg.caller,
        model=msg.model,
        start=msg.start_time or None,
        end=msg.end_time or None,
        limit=msg.limit if msg.limit > 0 else DEFAULT_LIMIT,
    )


def encode_report(report: SpendReport) -> pb.SpendResponse:
    return pb.SpendResponse(
        records=[_encode_record(r) for r in report.rows],
        daily=[
            pb.DailySpend(
                date=d.date,
                model_group=d.model_group,
                model=d.model,
                caller=d.caller,
                spend=d.spend,
                prompt_tokens=d.prompt_tokens,
                completion_tokens=d.completion_tokens,
                requests=d.requests,
            )
            for d in report.daily
        ],
        budgets=[encode_budget(b) for b in report.budgets],
    )


def decode_report(msg: pb.SpendResponse) -> SpendReport:
    return SpendReport(
        rows=tuple(_decode_record(r) for r in msg.records),
        daily=tuple(
            DailySpend(
                d.date,
                d.model_group,
                d.model,
                d.caller,
                d.spend,
                d.prompt_tokens,
                d.completion_tokens,
                d.requests,
            )
            for d in msg.daily
        ),
        budgets=tuple(decode_budget(b) for b in msg.budgets),
    )


def encode_budget(status: BudgetStatus) -> pb.BudgetStatus:
    return pb.BudgetStatus(
        budget=status.budget,
        cap=status.cap,
        spent=status.spent,
        reserved=status.reserved,
        duration=status.duration or "",
        window_start=status.window_start or 0.0,
        resets_at=status.resets_at or 0.0,
    )


def decode_budget(msg: pb.BudgetStatus) -> BudgetStatus:
    return BudgetStatus(
        budget=msg.budget,
        cap=msg.cap,
        spent=msg.spent,
        reserved=msg.reserved,
        duration=msg.duration or None,
        window_start=msg.window_start or None,
        resets_at=msg.resets_at or None,
    )


def _encode_record(r: SpendRecord) -> pb.SpendRecord:
    msg = pb.SpendRecord(
        request_id=r.request_id,
        start_time=r.start_time,
        end_time=r.end_time,
        caller=r.caller,
        model_group=r.model_group,
        model=r.model,
        deployment=r.deployment,
        provider=r.provider,
        locality=LOCALITY_TO_PB[_LOCALITIES[r.locality]] if r.locality else _UNSPECIFIED,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        cached_tokens=r.cached_tokens,
        cost=r.cost,
        latency_ms=r.latency_ms,
        status=r.status,
        attempts=r.attempts,
        fallbacks=r.fallbacks,
        route_reason=r.route_reason,
    )
    if r.ttft_ms is not None:
        msg.ttft_ms = r.ttft_ms
    return msg


def _decode_record(m: pb.SpendRecord) -> SpendRecord:
    locality = LOCALITY_FROM_PB.get(m.locality)
    return SpendRecord(
        request_id=m.request_id,
        start_time=m.start_time,
        end_time=m.end_time,
        caller=m.caller,
        model_group=m.model_group,
        model=m.model,
        deployment=m.deployment,
        provider=m.provider,
        locality="" if locality is None else locality.value,
        prompt_tokens=m.prompt_tokens,
        completion_tokens=m.completion_tokens,
        cached_tokens=m.cached_tokens,
        cost=m.cost,
        ttft_ms=m.ttft_ms if m.HasField("ttft_ms") else None,
        latency_ms=m.latency_ms,
        status=m.status,
        attempts=m.attempts,
        fallbacks=m.fallbacks,
        route_reason=m.route_reason,
    )
