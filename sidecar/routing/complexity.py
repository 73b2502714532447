"""The complexity scorer behind the auto alias: which tier a request needs.

With the default rules (see `rules.py`) this is the seed article's
`estimate_complexity`, in its order:

    tokens > 8,000, or analysis words AND code AND more than 4 messages -> cloud
    code                                                                 -> code
    tokens > 2,000, or analysis words                                    -> strong
    otherwise                                                            -> fast

Differences from the seed, on purpose: tokens are the estimate of `tokens.py`
(the seed counted words x 1.3); code is found by fences and by code-like
syntax, not only by the word "code", which counts only as a whole word (the
seed's substring test also fired on "decode" and "barcode"); analysis words
match at the start of a word, so "compared" counts and "recompare" does not.

Every probe is a pattern that starts with a literal, which `re` finds with its
fast substring search, and the probes stop at the first hit; the tiers are
decided lazily, so a long prompt never pays for the code and word probes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sidecar.routing.rules import AutoRules, CodeSignals, Tier

# (what it is, a character it cannot do without, pattern). Each pattern begins
# with a literal and checks what must precede it afterwards, with a look-behind;
# the character is looked for first, at memchr speed, to skip hopeless probes.
_SYNTAX = (
    ("def", "(", r"def(?<![\w.]def) +[A-Za-z_]\w*\s*\("),
    ("class", "", r"class(?<![\w.]class) +[A-Z_]\w*\s*(?:[(:{<]|extends\b|implements\b)"),
    ("function", "{", r"function(?<![\w$.]function)\s*\*?\s*[\w$]*\s*\([^()\n]*\)\s*\{"),
    ("arrow function", ">", r"=>(?:(?<=[\w)\]]=>)|(?<=[\w)\]] =>))\s*[{(\w'\"`\[]"),
    ("fn", "(", r"fn(?<![\w.]fn) +[a-z_]\w*\s*[(<]"),
    ("func", "(", r"func(?<![\w.]func) +(?:\([^()\n]*\)\s*)?[A-Za-z_]\w*\s*\("),
    ("block", "{", r"\)[ \t]*\{[ \t]*\n"),
    ("statement ends", ";", r";[ \t]*\n[^\n]*;[ \t]*(?:\n|$)"),
    ("import", "", r"import(?<![^\n]import)[ \t]+[\w.{*\"'(]"),
    ("from import", "", r"from(?<![^\n]from) +[\w.]+ +import +[\w*(]"),
    ("#include", "#", r"#include\s*[<\"]"),
    ("require", "(", r"require\(['\"]"),
    ("sql", "", r"SELECT\s+(?:DISTINCT\s+)?[\w*.,\s()]+?\s+FROM\s+[\w.\"`]+"),
    ("sql", "", r"select\s+(?:\*|[\w.]+\s*,[\w.,\s]*?)\s+from\s+[\w.\"`]+"),
    ("shebang", "#", r"#!/"),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    tier: Tier
    why: str


class ComplexityScorer:
    """Compiled once from `routing_rules.auto`; `score` runs per auto request."""

    def __init__(self, rules: AutoRules) -> None:
        self._limits = rules.thresholds
        self._code = _code_probes(rules.code)
        self._analysis = tuple(
            (word, re.compile(re.escape(word) + rf"(?<![a-z0-9_]{re.escape(word)})"))
            for word in rules.analysis_words
        )

    def score(self, text: str, tokens: int, messages: int) -> Verdict:
        limits = self._limits
        if tokens > limits.cloud_tokens:
            return Verdict(Tier.CLOUD, f"~{tokens:,} tokens > {limits.cloud_tokens:,}")
        lowered = text.lower()
        code = self._find_code(text, lowered)
        if code:
            if messages > limits.multi_turn_messages:
                word = self._find_analysis(lowered)
                if word:
                    return Verdict(
                        Tier.CLOUD, f"analysis ({word}) + code ({code}) + {messages} messages"
                    )
            return Verdict(Tier.CODE, f"code ({code})")
        if tokens > limits.strong_tokens:
            return Verdict(Tier.STRONG, f"~{tokens:,} tokens > {limits.strong_tokens:,}")
        word = self._find_analysis(lowered)
        if word:
            return Verdict(Tier.STRONG, f"analysis ({word})")
        return Verdict(Tier.FAST, f"simple (~{tokens:,} tokens)")

    def _find_code(self, text: str, lowered: str) -> str:
        for probe in self._code:
            if probe.needs in text and probe.pattern.search(lowered if probe.lowered else text):
                return probe.what
        return ""

    def _find_analysis(self, lowered: str) -> str:
        for word, pattern in self._analysis:
            if pattern.search(lowered):
                return word
        return ""


@dataclass(frozen=True, slots=True)
class _Probe:
    what: str
    needs: str
    pattern: re.Pattern[str]
    lowered: bool = False


def _code_probes(signals: CodeSignals) -> tuple[_Probe, ...]:
    """The enabled probes, cheapest and likeliest first."""
    probes: list[_Probe] = []
    if signals.fences:
        probes.append(_Probe("fenced block", "`", re.compile(re.escape("```"))))
    if signals.syntax:
        probes.extend(_Probe(what, needs, re.compile(p)) for what, needs, p in _SYNTAX)
    if signals.keyword:
        word = re.compile(r"code(?<![a-z0-9_]code)s?(?![a-z0-9_])")
        probes.append(_Probe("the word 'code'", "", word, lowered=True))
    return tuple(probes)
