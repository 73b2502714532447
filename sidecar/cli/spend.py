"""`llm-sidecar spend`: a running sidecar's spend per model and what each budget has left."""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime

import grpc

from sidecar.errors import SidecarError
from sidecar.redaction import redact
from sidecar.rpc.api import router_pb2_grpc as pb_grpc
from sidecar.rpc.spend_codec import decode_report, encode_query
from sidecar.rpc.tls import ClientTls, open_channel
from sidecar.types import BudgetStatus, DailySpend, SpendQuery, SpendReport

_DAY = 86400


async def show_spend(
    args: argparse.Namespace,
    master_key: str | None = None,
    tls: ClientTls | None = None,
    timeout: float = 10.0,
) -> str:
    now = time.time()
    start = now - now % _DAY - (max(args.days, 1) - 1) * _DAY
    query = SpendQuery(caller=args.caller, model=args.model, start=start, limit=1)
    metadata = (("authorization", f"Bearer {master_key}"),) if master_key else None
    try:
        async with open_channel(args.sidecar, tls, []) as channel:
            answer = await pb_grpc.RouterStub(channel).GetSpend(
                encode_query(query), timeout=timeout, metadata=metadata
            )
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNAUTHENTICATED:
            hint = "give the master key (--master-key, $LLM_SIDECAR_MASTER_KEY or --config)"
            raise SidecarError(
                f"the sidecar at {args.sidecar} wants its master key: {hint}"
            ) from None
        detail = redact(exc.details() or exc.code().name, [master_key])
        raise SidecarError(f"cannot reach the sidecar at {args.sidecar}: {detail}") from None
    report = decode_report(answer)
    text = render_spend(args.sidecar, args.days, report)
    if args.plot:
        plot_spend(report.daily, args.plot)
        text += f"\nplot written to {args.plot}"
    return text


def render_spend(address: str, days: int, report: SpendReport) -> str:
    lines = [f"sidecar {address}: spend of the last {days} day(s), UTC"]
    per_model: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0, 0, 0])
    for d in report.daily:
        sums = per_model[(d.model_group, d.model)]
        sums[0] += d.spend
        sums[1] += d.requests
        sums[2] += d.prompt_tokens
        sums[3] += d.completion_tokens
    rows = [("model group", "model", "requests", "prompt tokens", "completion tokens", "spend")]
    for (group, model), (spend, requests, prompt, completion) in sorted(
        per_model.items(), key=lambda item: -item[1][0]
    ):
        rows.append(
            (
                group,
                model or "-",
                f"{requests:.0f}",
                f"{prompt:.0f}",
                f"{completion:.0f}",
                _usd(spend),
            )
        )
    total = sum(s[0] for s in per_model.values())
    rows.append(("total", "", "", "", "", _usd(total)))
    lines += _table(rows)
    lines += ["", "budgets"]
    lines += _table(_budget_rows(report.budgets)) if report.budgets else ["  (none configured)"]
    return "\n".join(lines)


def _budget_rows(budgets: Sequence[BudgetStatus]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("budget", "cap", "spent", "held", "remaining", "resets")]
    for b in budgets:
        resets = "never" if b.resets_at is None else _date(b.resets_at)
        rows.append(
            (b.budget, _usd(b.cap), _usd(b.spent), _usd(b.reserved), _usd(b.remaining), resets)
        )
    return rows


def plot_spend(daily: Sequence[DailySpend], path: str) -> None:
    """Daily spend per model group as stacked bars, written to `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SidecarError("--plot needs matplotlib: pip install 'llm-sidecar[plot]'") from exc
    days = sorted({d.date for d in daily})
    groups = sorted({d.model_group for d in daily})
    spend = {(d.date, d.model_group): 0.0 for d in daily}
    for d in daily:
        spend[(d.date, d.model_group)] += d.spend
    figure, axes = plt.subplots(figsize=(max(6.0, len(days) * 0.5), 4.0))
    bottom = [0.0] * len(days)
    for group in groups:
        heights = [spend.get((day, group), 0.0) for day in days]
        axes.bar(days, heights, bottom=bottom, label=group)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_ylabel("spend (USD)")
    axes.set_title("daily spend per model group")
    if groups:
        axes.legend()
    axes.tick_params(axis="x", labelrotation=45)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def _usd(amount: float) -> str:
    return f"${amount:,.4f}"


def _date(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")
