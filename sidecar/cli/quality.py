"""`llm-sidecar quality sample|report`: the weekly review of shadow pairs.

    quality sample -n 10     random pairs side by side in the terminal
    quality report           per route and task: count, answer-length ratio, latency and
                             cost of each side, agreement, and with a judge alias blind
                             verdicts; writes a self-contained HTML page ending in a
                             routing-rule suggestion

The log is `--log`, else the configuration's `quality_monitoring.log_path`.
A judge is asked through an engine built from `--config`, so its calls go
through the same egress, privacy rules and budgets as any other.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import textwrap

import uvloop

from sidecar.config import load_config
from sidecar.errors import SidecarError
from sidecar.quality.page import render_page
from sidecar.quality.review import VERDICT_FORMAT, Pair, group_pairs, judge, suggestions
from sidecar.quality.store import read_pairs
from sidecar.types import ChatRequest, Message

JUDGE_TIMEOUT = 120.0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="quality_command", required=True, metavar="ACTION")
    sample = actions.add_parser("sample", help="print random pairs side by side")
    sample.add_argument("-n", type=int, default=10, help="how many pairs (default 10)")
    sample.add_argument("--seed", type=int, default=None, help="the draw's seed, to repeat it")
    report = actions.add_parser("report", help="aggregate the pairs and write an HTML page")
    report.add_argument("--out", default="quality_report.html", help="the page to write")
    report.add_argument("--judge", default=None, help="alias asked for blind verdicts")
    report.add_argument(
        "--judge-limit", type=int, default=50, help="most pairs sent to the judge (default 50)"
    )
    report.add_argument("--seed", type=int, default=None)
    for command in (sample, report):
        command.add_argument("--config", default=None, help="the sidecar's YAML configuration")
        command.add_argument("--log", default=None, help="the pairs (default: log_path)")


def _pairs(args: argparse.Namespace) -> tuple[list[Pair], str]:
    path, compare_with = args.log, "comparison"
    if args.config:
        quality = load_config(args.config).quality
        path = path or quality.log_path
        compare_with = quality.compare_with or compare_with
    path = path or "quality_log.jsonl"
    if not os.path.exists(path):
        raise SidecarError(f"no quality log at {path!r}: is quality_monitoring on?")
    return list(read_pairs(path)), compare_with


def show_sample(args: argparse.Namespace) -> str:
    pairs, compare_with = _pairs(args)
    if not pairs:
        return "no pairs yet"
    rng = random.Random(args.seed)
    chosen = rng.sample(pairs, min(max(args.n, 1), len(pairs)))
    width = max(60, shutil.get_terminal_size((120, 20)).columns)
    column = (width - 3) // 2
    blocks = []
    for number, pair in enumerate(chosen, 1):
        route = pair["route"]
        head = (
            f"#{number} {route['model_group']} task={pair.get('task') or '-'}: "
            f"{pair['prompt_preview']}"
        )
        left = _column(f"local ({pair['local'].get('deployment')})", pair["local"], column)
        right = _column(compare_with, pair["shadow"], column)
        rows = [
            f"{a.ljust(column)} | {b}"
            for a, b in zip(
                left + [""] * (len(right) - len(left)),
                right + [""] * (len(left) - len(right)),
                strict=True,
            )
        ]
        blocks.append("\n".join([textwrap.shorten(head, width), "-" * width, *rows]))
    return "\n\n".join(blocks)


def _column(title: str, side: Pair, width: int) -> list[str]:
    stats = f"{side.get('latency_ms', 0):.0f} ms, ${side.get('cost_usd') or 0:.6f}"
    lines = [title[:width], stats[:width]]
    for paragraph in side["answer"].splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width) or [""]
    return lines


def write_report(args: argparse.Namespace) -> str:
    pairs, compare_with = _pairs(args)
    groups = group_pairs(pairs)
    judge_alias = args.judge
    if judge_alias is None and args.config:
        judge_alias = load_config(args.config).quality.judge
    judged = False
    if judge_alias and pairs:
        if not args.config:
            raise SidecarError("--judge needs --config: the judge is called through the sidecar")
        uvloop.run(_judge(args.config, judge_alias, pairs[: args.judge_limit], args.seed))
        judged = True
    advice = suggestions(groups, compare_with)
    page = render_page(groups, advice, compare_with, judged)
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(page)
    return "\n".join([f"wrote {args.out} ({len(pairs)} pairs)", *advice])


async def _judge(config_path: str, alias: str, pairs: list[Pair], seed: int | None) -> None:
    from sidecar.engine import Engine  # imported here: the engine pulls in the providers

    engine = Engine(load_config(config_path))
    await engine.start()

    async def ask(prompt: str) -> str:
        request = ChatRequest(
            alias,
            (Message("user", prompt),),
            extra={"response_format": VERDICT_FORMAT},
            metadata={"task": "judge"},
        )
        return (await engine.complete(request, JUDGE_TIMEOUT)).content

    try:
        await judge(pairs, ask, random.Random(seed))
    finally:
        await engine.aclose()
