"""The Hyperscan engine of the privacy detector, used when `hyperscan` is installed.

One Hyperscan pass over the bytes reports every candidate identifier and term
(with its leftmost start); the exact `re` checks of `privacy.py` then confirm
each candidate on its own stretch of text, so both engines give the same
answers. The package is optional: `load_hyperscan()` returns None without it.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from types import ModuleType
from typing import Any

from sidecar.routing.privacy import IdentifierRule, TermRule

# A byte no identifier can hold ends a stretch: look-aheads at the stretch's end
# then see what they would see in the whole text.
_BREAK = re.compile(rb"[^A-Za-z0-9 _-]")


def load_hyperscan() -> ModuleType | None:
    try:
        return importlib.import_module("hyperscan")
    except ImportError:
        return None


class HyperscanScan:
    """One compiled database (of at least one expression) and one scratch space:
    scan from one thread at a time."""

    name = "hyperscan"

    def __init__(
        self, hs: ModuleType, identifiers: Iterable[IdentifierRule], terms: Iterable[TermRule]
    ) -> None:
        self._identifiers = tuple(identifiers)
        self._terms = tuple(terms)
        expressions = [rule.prefilter for rule in self._identifiers]
        expressions += [_term_expression(term.term) for term in self._terms]
        som = hs.HS_FLAG_SOM_LEFTMOST
        flags = [som] * len(self._identifiers) + [som | hs.HS_FLAG_CASELESS] * len(self._terms)
        self._db: Any = hs.Database()
        self._db.compile(
            expressions=expressions,
            ids=list(range(len(expressions))),
            elements=len(expressions),
            flags=flags,
        )
        self._scratch: Any = hs.Scratch(self._db)

    def scan(self, data: bytes) -> set[str]:
        hits: list[tuple[int, int, int]] = []

        def on_match(ident: int, start: int, end: int, flags: int, context: object) -> None:
            hits.append((ident, start, end))

        self._db.scan(data, match_event_handler=on_match, scratch=self._scratch)
        fired: set[str] = set()
        # Per identifier rule, the stretch last checked: Hyperscan reports a long
        # digit run once per end offset, and one check covers them all.
        checked: dict[int, tuple[int, int]] = {}
        count = len(self._identifiers)
        for ident, start, end in hits:
            if ident >= count:
                term = self._terms[ident - count]
                if term.name not in fired and term.on_bytes.match(data, start):
                    fired.add(term.name)
                continue
            rule = self._identifiers[ident]
            if rule.name in fired:
                continue
            done = checked.get(ident)
            if done is not None and done[0] <= start and end <= done[1]:
                continue
            stop = _stretch_end(data, end)
            checked[ident] = (start, stop)
            if rule.found(data, start, stop):
                fired.add(rule.name)
        return fired


def _term_expression(term: bytes) -> bytes:
    """The term as a whole word; `re.escape` output is valid Hyperscan syntax."""
    before = rb"\b" if _is_word(term[:1]) else b""
    after = rb"s?\b" if _is_word(term[-1:]) else b"s?"
    return before + re.escape(term) + after


def _is_word(char: bytes) -> bool:
    return char.isalnum() or char == b"_"


def _stretch_end(data: bytes, end: int) -> int:
    found = _BREAK.search(data, end)
    return found.start() if found else len(data)
