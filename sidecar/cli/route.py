"""`llm-sidecar route`: build a request from the command line and print its plan."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from sidecar.config import load_config
from sidecar.engine import Engine
from sidecar.errors import InvalidRequest
from sidecar.routing import RoutePlan
from sidecar.types import ChatRequest, Message, RoutingHints


def explain_route(args: argparse.Namespace) -> str:
    engine = Engine(load_config(args.config))
    request = ChatRequest(
        model=args.model,
        messages=_messages(args),
        metadata={"task": args.task} if args.task else {},
        hints=RoutingHints(local_only=args.local_only),
    )
    return render_plan(engine.plan(request))


def render_plan(route_plan: RoutePlan) -> str:
    lines = [
        f"model: {route_plan.model}",
        f"estimated prompt tokens: {route_plan.estimated_prompt_tokens:,}",
        f"sensitive: {'yes' if route_plan.sensitive else 'no'}",
        "candidates, in the order they are tried:",
    ]
    for i, candidate in enumerate(route_plan.candidates, 1):
        d = candidate.deployment
        lines.append(
            f"  {i}. {d.id}  ({d.provider.value} {d.upstream_model}, {d.locality.value})"
            f"  - {candidate.reason}"
        )
    if route_plan.notes:
        lines.append("notes:")
        lines.extend(f"  - {note}" for note in route_plan.notes)
    return "\n".join(lines)


def _messages(args: argparse.Namespace) -> tuple[Message, ...]:
    if args.prompt is not None:
        return (Message(role="user", content=args.prompt),)
    path = Path(args.messages_file)
    try:
        raw = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InvalidRequest("--messages-file", f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise InvalidRequest("--messages-file", "expected a JSON list of {role, content} objects")
    return tuple(
        Message(role=str(m.get("role", "")), content=str(m.get("content", ""))) for m in raw
    )
