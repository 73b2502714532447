"""The weekly review, in numbers: pairs grouped by route and task, an agreement score,
optional blind verdicts from a judge model, and a routing-rule suggestion.

The agreement score is lexical: the Jaccard overlap of the two answers' word sets
(1.0 the same words, 0.0 none in common). It is a cheap screen, not a verdict;
the judge gives the verdict.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

_WORD: Final = re.compile(r"\w+")
# A task needs this many judged pairs before a suggestion is made from them.
MIN_JUDGED: Final = 5

Pair = dict[str, Any]
# Asks the judge one prompt, returns its answer text.
Ask = Callable[[str], Awaitable[str]]


def agreement(a: str, b: str) -> float:
    words_a = set(_WORD.findall(a.lower()))
    words_b = set(_WORD.findall(b.lower()))
    if not words_a and not words_b:
        return 1.0
    return len(words_a & words_b) / len(words_a | words_b)


@dataclass
class Group:
    """The pairs of one route and task."""

    model_group: str
    task: str
    pairs: list[Pair] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.pairs)

    def mean(self, side: str, key: str) -> float | None:
        values = [p[side][key] for p in self.pairs if p[side].get(key) is not None]
        return statistics.fmean(values) if values else None

    def total_cost(self, side: str) -> float:
        return sum(p[side].get("cost_usd") or 0.0 for p in self.pairs)

    @property
    def length_ratio(self) -> float | None:
        ratios = [
            len(p["local"]["answer"]) / len(p["shadow"]["answer"])
            for p in self.pairs
            if p["shadow"]["answer"]
        ]
        return statistics.fmean(ratios) if ratios else None

    @property
    def agreement(self) -> float:
        return statistics.fmean(
            agreement(p["local"]["answer"], p["shadow"]["answer"]) for p in self.pairs
        )

    def verdicts(self) -> dict[str, int]:
        counted = {"local": 0, "shadow": 0, "tie": 0}
        for pair in self.pairs:
            verdict = pair.get("verdict")
            if verdict in counted:
                counted[verdict] += 1
        return counted


def group_pairs(pairs: Iterable[Pair]) -> list[Group]:
    groups: dict[tuple[str, str], Group] = {}
    for pair in pairs:
        key = (pair["route"]["model_group"], pair.get("task") or "")
        groups.setdefault(key, Group(*key)).pairs.append(pair)
    return sorted(groups.values(), key=lambda g: (-g.count, g.model_group, g.task))


_JUDGE_PROMPT: Final = """You are comparing two answers to the same request.

Request:
{prompt}

Answer A:
{a}

Answer B:
{b}

Which answer serves the request better? Reply with JSON: {{"verdict": "A"}}, {{"verdict": "B"}}
or {{"verdict": "TIE"}}."""
# Asked as structured output, so that a judge that supports it cannot ramble.
VERDICT_FORMAT: Final = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"verdict": {"type": "string", "enum": ["A", "B", "TIE"]}},
            "required": ["verdict"],
            "additionalProperties": False,
        },
    },
}


async def judge(pairs: Sequence[Pair], ask: Ask, rng: random.Random) -> None:
    """Add a blind verdict to each pair: the order of the two answers is drawn at random,
    so the judge cannot tell which side is local."""
    for pair in pairs:
        local_first = rng.random() < 0.5
        local, shadow = pair["local"]["answer"], pair["shadow"]["answer"]
        a, b = (local, shadow) if local_first else (shadow, local)
        reply = await ask(_JUDGE_PROMPT.format(prompt=pair["prompt_preview"], a=a, b=b))
        word = _verdict(reply)
        if word == "TIE":
            pair["verdict"] = "tie"
        elif word in ("A", "B"):
            pair["verdict"] = "local" if (word == "A") == local_first else "shadow"
        else:
            pair["verdict"] = None  # the judge did not answer in the form asked


def _verdict(reply: str) -> str:
    """A, B or TIE from the judge's JSON, or from the first word of a plain answer."""
    try:
        parsed = orjson.loads(reply)
    except orjson.JSONDecodeError:
        parsed = None
    verdict = parsed.get("verdict") if isinstance(parsed, dict) else None
    if isinstance(verdict, str):
        return verdict.strip().upper()
    words: list[str] = _WORD.findall(reply.upper())
    return words[0] if words else ""


def suggestions(groups: Sequence[Group], compare_with: str) -> list[str]:
    """Routing-rule suggestions: tasks where the local side lost most judged pairs, or,
    with no judge, agreed least with the comparison model."""
    found: list[str] = []
    for group in groups:
        task = group.task or "(untagged)"
        verdicts = group.verdicts()
        judged = sum(verdicts.values())
        if judged >= MIN_JUDGED:
            lost = verdicts["shadow"]
            if lost * 2 > judged:
                found.append(
                    f"task `{task}`: local lost {lost} of {judged} -> consider "
                    f"`routing_rules: tasks: {{{group.task or task}: {compare_with}}}`"
                )
            else:
                found.append(
                    f"task `{task}`: local lost {lost} of {judged} -> keep it on "
                    f"`{group.model_group}`"
                )
        elif group.count >= MIN_JUDGED and group.agreement < 0.2:
            found.append(
                f"task `{task}`: local and {compare_with} agree little "
                f"({group.agreement:.2f}); configure quality_monitoring.judge for a verdict"
            )
    return found or ["no change suggested: not enough evidence against the local routes"]
