"""Spend reports in LiteLLM's shapes, from the engine's canonical `SpendReport`.

    GET /spend/logs              per-request rows (LiteLLM_SpendLogs fields), newest first;
                                 request_id, user_id, model, api_key, start_date, end_date;
                                 with both dates and summarize (default true): daily
                                 aggregates zero-filled to end_date
    GET /global/spend/logs       daily totals of the last 30 days (`?model=` honoured)
    GET /global/spend/report     by day and model: start_date, end_date (required),
                                 group_by team (default) | customer | api_key
    GET /global/spend            the 30-day total and the global cap

Dates are `YYYY-MM-DD` in UTC; an end date is inclusive. The caller of a call is
LiteLLM's `user`; a caller known by its API key is `key-<hash>`, as `api_key` filters.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from bridge.errors import HttpError, bad_request
from sidecar.types import DailySpend, SpendQuery, SpendRecord, SpendReport

_DAY = 86400.0
_GLOBAL_DAYS = 30
_MAX_LIMIT = 10_000


def key_caller(key: bytes | str) -> str:
    """The caller id of a call made with `key`: a short hash, never the key."""
    raw = key.encode() if isinstance(key, str) else key
    return "key-" + hashlib.sha256(raw).hexdigest()[:16]


def query_params(query_string: bytes) -> dict[str, str]:
    """The last value of each parameter."""
    parsed = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


def logs_query(params: Mapping[str, str]) -> tuple[SpendQuery, bool]:
    """The query of /spend/logs, and whether to summarize by day."""
    start, end = _dates(params, required=False)
    api_key = params.get("api_key", "")
    caller = params.get("user_id") or params.get("user") or ""
    if api_key and not caller:
        caller = key_caller(api_key) if api_key.startswith("sk-") else api_key
    limit = params.get("limit", "100")
    if not limit.isdigit() or not 0 < int(limit) <= _MAX_LIMIT:
        raise bad_request("limit", f"limit: expected 1 to {_MAX_LIMIT}, got {limit!r}")
    summarize = params.get("summarize", "true").lower() != "false"
    query = SpendQuery(
        request_id=params.get("request_id", ""),
        caller=caller,
        model=params.get("model", ""),
        start=start,
        end=end,
        limit=int(limit),
    )
    return query, summarize and start is not None and end is not None


def logs_body(report: SpendReport, query: SpendQuery, summarize: bool) -> list[dict[str, Any]]:
    if not summarize:
        return [_row(r) for r in report.rows]
    assert query.start is not None
    assert query.end is not None
    days: dict[str, dict[str, Any]] = {}
    for day in _each_day(query.start, query.end):
        days[day] = {"startTime": day, "spend": 0.0, "users": {}, "models": {}}
    for d in report.daily:
        entry = days.get(d.date)
        if entry is None:
            continue
        entry["spend"] += d.spend
        if d.caller:
            entry["users"][d.caller] = entry["users"].get(d.caller, 0.0) + d.spend
        if d.model:
            entry["models"][d.model] = entry["models"].get(d.model, 0.0) + d.spend
    return list(days.values())


def global_query(params: Mapping[str, str], now: float) -> SpendQuery:
    today = _day_start(now)
    return SpendQuery(
        model=params.get("model", ""), start=today - (_GLOBAL_DAYS - 1) * _DAY, limit=1
    )


def global_logs_body(daily: Iterable[DailySpend]) -> list[dict[str, Any]]:
    totals: dict[str, float] = defaultdict(float)
    for d in daily:
        totals[d.date] += d.spend
    return [{"date": day, "spend": spend} for day, spend in sorted(totals.items())]


def report_query(params: Mapping[str, str]) -> tuple[SpendQuery, str]:
    start, end = _dates(params, required=True)
    group_by = params.get("group_by", "team")
    if group_by not in ("team", "customer", "api_key"):
        raise bad_request(
            "group_by", f"group_by: expected team, customer or api_key, got {group_by!r}"
        )
    caller = params.get("customer_id") or params.get("internal_user_id") or ""
    api_key = params.get("api_key", "")
    if api_key:
        caller = key_caller(api_key) if api_key.startswith("sk-") else api_key
        group_by = "api_key"
    return SpendQuery(caller=caller, start=start, end=end, limit=1), group_by


def report_body(daily: Iterable[DailySpend], group_by: str) -> list[dict[str, Any]]:
    if group_by == "api_key":
        return _by_key(daily)
    by_day: dict[str, dict[str, list[DailySpend]]] = defaultdict(lambda: defaultdict(list))
    for d in daily:
        group = "Unassigned Team" if group_by == "team" else d.caller or "Unassigned Customer"
        by_day[d.date][group].append(d)
    name, label = ("teams", "team_name") if group_by == "team" else ("customers", "customer")
    return [
        {
            "group_by_day": f"{day}T00:00:00+00:00",
            name: [
                {
                    label: group,
                    "total_spend": sum(d.spend for d in items),
                    "metadata": [
                        {
                            "model": d.model or d.model_group,
                            "api_key": d.caller,
                            "spend": d.spend,
                            "total_tokens": d.prompt_tokens + d.completion_tokens,
                        }
                        for d in items
                    ],
                }
                for group, items in groups.items()
            ],
        }
        for day, groups in sorted(by_day.items())
    ]


def _by_key(daily: Iterable[DailySpend]) -> list[dict[str, Any]]:
    keys: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for d in daily:
        sums = keys[d.caller][d.model or d.model_group]
        sums[0] += d.spend
        sums[1] += d.prompt_tokens
        sums[2] += d.completion_tokens
    rows: list[dict[str, Any]] = []
    for caller, models in keys.items():
        rows.append(
            {
                "api_key": caller,
                "total_cost": sum(cost for cost, _, _ in models.values()),
                "total_input_tokens": int(sum(inp for _, inp, _ in models.values())),
                "total_output_tokens": int(sum(out for _, _, out in models.values())),
                "model_details": [
                    {
                        "model": model,
                        "total_cost": cost,
                        "total_input_tokens": int(inp),
                        "total_output_tokens": int(out),
                    }
                    for model, (cost, inp, out) in models.items()
                ],
            }
        )
    rows.sort(key=lambda row: float(row["total_cost"]), reverse=True)
    return rows


def _row(r: SpendRecord) -> dict[str, Any]:
    ttft = None if r.ttft_ms is None else _iso(r.start_time + r.ttft_ms / 1000)
    return {
        "request_id": r.request_id,
        "call_type": "acompletion",
        "api_key": r.caller if r.caller.startswith("key-") else "",
        "spend": r.cost,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "startTime": _iso(r.start_time),
        "endTime": _iso(r.end_time),
        "completionStartTime": ttft,
        "request_duration_ms": round(r.latency_ms),
        "model": r.model,
        "model_id": r.deployment,
        "model_group": r.model_group,
        "custom_llm_provider": r.provider,
        "user": r.caller,
        "end_user": "",
        "status": "success" if r.status == "ok" else "failure",
        "cache_hit": "False",
        "request_tags": [],
        "metadata": {
            "locality": r.locality,
            "outcome": r.status,
            "cached_tokens": r.cached_tokens,
            "ttft_ms": r.ttft_ms,
            "attempts": r.attempts,
            "fallbacks": r.fallbacks,
            "route_reason": r.route_reason,
        },
    }


def _dates(params: Mapping[str, str], *, required: bool) -> tuple[float | None, float | None]:
    start = _date(params, "start_date", required)
    end = _date(params, "end_date", required)
    if start is not None and end is not None and end < start:
        raise bad_request("end_date", "end_date: must not be before start_date")
    # The end date is inclusive: the query's end is the next midnight.
    return start, None if end is None else end + _DAY


def _date(params: Mapping[str, str], name: str, required: bool) -> float | None:
    text = params.get(name)
    if not text:
        if required:
            raise bad_request(name, f"{name}: required, as YYYY-MM-DD")
        return None
    try:
        day = date.fromisoformat(text[:10])
    except ValueError:
        raise HttpError(400, f"{name}: expected YYYY-MM-DD, got {text!r}", param=name) from None
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


def _each_day(start: float, end: float) -> Iterable[str]:
    day = datetime.fromtimestamp(start, UTC).date()
    last = datetime.fromtimestamp(end - 1, UTC).date()
    while day <= last:
        yield day.isoformat()
        day += timedelta(days=1)


def _day_start(now: float) -> float:
    return now - now % _DAY


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat()
