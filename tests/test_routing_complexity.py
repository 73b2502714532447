"""The complexity scorer: the seed's tiers, code detection and analysis words."""

from __future__ import annotations

import pytest

from sidecar.routing.complexity import ComplexityScorer
from sidecar.routing.rules import AutoRules, CodeSignals, Thresholds, Tier

SCORER = ComplexityScorer(AutoRules())

CODE = [
    ("fenced block", "Why does this fail?\n```\nx = 1\n```"),
    ("def", "What does def parse(line): do here?"),
    ("class", "class Cache(dict):\n    pass"),
    ("class", "public class Main {\n}"),
    ("function", "function add(a, b) { return a + b }"),
    ("arrow function", "const add = (a, b) => a + b"),
    ("arrow function", "items.map(x => x * 2)"),
    ("fn", "fn main() {}"),
    ("func", "func (s *Server) Start() error"),
    ("block", "if (ready) {\n  go();\n}"),
    ("statement ends", "int x = 1;\nint y = 2;\n"),
    ("import", "import numpy as np"),
    ("import", "Look:\nimport { useState } from 'react'"),
    ("from import", "from collections import deque"),
    ("#include", "#include <stdio.h>"),
    ("require", "const fs = require('fs')"),
    ("sql", "SELECT name, email FROM users WHERE id = 3"),
    ("sql", "select * from orders"),
    ("sql", "select id, total from orders"),
    ("shebang", "#!/bin/sh\necho hi"),
    ("the word 'code'", "Can you review my Code?"),
]


@pytest.mark.parametrize(("what", "text"), CODE, ids=[f"{w}-{i}" for i, (w, _) in enumerate(CODE)])
def test_code_is_found(what: str, text: str) -> None:
    verdict = SCORER.score(text, 50, 1)
    assert verdict == verdict.__class__(Tier.CODE, f"code ({what})")


NOT_CODE = [
    "Please select the best option from the list.",
    "I'd like to import some furniture from Italy.",
    "The default setting is fine; define it later.",
    "He decoded the barcode (it was smudged).",
    "Functions of a manager include planning and staffing.",
    "The class was fun: we learned a lot.",
    "Use the coder's guide.",
    "Thanks; see you soon.\nBye; take care.",
]


@pytest.mark.parametrize("text", NOT_CODE)
def test_prose_is_not_code(text: str) -> None:
    assert SCORER.score(text, 50, 1).tier is Tier.FAST


def test_an_arrow_between_words_reads_as_code() -> None:
    # A known limit of the syntax probes: `A => B` looks like an arrow function.
    assert SCORER.score("A => B means that A implies B", 50, 1).tier is Tier.CODE


TIERS = [
    # (text, tokens, messages, tier, why) - the seed's estimate_complexity, row by row
    ("hello", 10, 1, Tier.FAST, "simple (~10 tokens)"),
    ("hello", 8001, 1, Tier.CLOUD, "~8,001 tokens > 8,000"),
    ("```x```", 8001, 1, Tier.CLOUD, "~8,001 tokens > 8,000"),
    (
        "```x``` compare",
        100,
        5,
        Tier.CLOUD,
        "analysis (compare) + code (fenced block) + 5 messages",
    ),
    ("```x``` compare", 100, 4, Tier.CODE, "code (fenced block)"),
    ("```x```", 100, 9, Tier.CODE, "code (fenced block)"),
    ("```x```", 5000, 1, Tier.CODE, "code (fenced block)"),
    ("hello", 2001, 1, Tier.STRONG, "~2,001 tokens > 2,000"),
    ("hello", 2000, 1, Tier.FAST, "simple (~2,000 tokens)"),
    ("Please ANALYZE this", 10, 1, Tier.STRONG, "analysis (analyze)"),
    ("Evaluated twice", 10, 1, Tier.STRONG, "analysis (evaluate)"),
    ("Explain why it broke", 10, 1, Tier.STRONG, "analysis (explain why)"),
    ("We compared notes", 10, 1, Tier.STRONG, "analysis (compare)"),
    ("reevaluate later", 10, 1, Tier.FAST, "simple (~10 tokens)"),
    ("explain what happened", 10, 1, Tier.FAST, "simple (~10 tokens)"),
]


@pytest.mark.parametrize(("text", "tokens", "messages", "tier", "why"), TIERS)
def test_the_seed_tiers(text: str, tokens: int, messages: int, tier: Tier, why: str) -> None:
    verdict = SCORER.score(text, tokens, messages)
    assert (verdict.tier, verdict.why) == (tier, why)


def test_rules_are_configurable() -> None:
    scorer = ComplexityScorer(
        AutoRules(
            thresholds=Thresholds(cloud_tokens=100, strong_tokens=10, multi_turn_messages=1),
            analysis_words=("summarize",),
            code=CodeSignals(fences=False, syntax=True, keyword=False),
        )
    )
    assert scorer.score("hi", 101, 1).tier is Tier.CLOUD
    assert scorer.score("hi", 11, 1).tier is Tier.STRONG
    assert scorer.score("summarize it", 5, 1).tier is Tier.STRONG
    assert scorer.score("compare it", 5, 1).tier is Tier.FAST
    assert scorer.score("```x```, my code", 5, 1).tier is Tier.FAST
    assert scorer.score("def f(): summarize", 5, 2).tier is Tier.CLOUD
    assert (
        ComplexityScorer(AutoRules(code=CodeSignals(False, False, False)))
        .score("def f(x):\n  return x\n", 5, 1)
        .tier
        is Tier.FAST
    )
