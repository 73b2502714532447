"""The sensitive-data detector: which of its detectors fire on a request's text.

Detectors (each on by default, each switchable under `privacy.detectors`):

    ssn           US social security numbers `AAA-GG-SSSS` with an issuable area,
                  group and serial (not 000/666/9xx, 00, 0000)
    card          payment card numbers, 13-19 digits, contiguous or in groups
                  separated by spaces or dashes, that pass the Luhn check
    passport      two capital letters and 6-8 digits (`AB1234567`), case-sensitive;
                  the seed lowercased the text first, so its pattern never matched
    iban          IBANs, spaced or not, of a registered country and length, that
                  pass the mod-97 check
    medical       the terms patient, diagnosis, diagnoses, medical record
    confidential  the terms confidential, proprietary, nda

`privacy.terms` adds term lists and `privacy.patterns` adds regular expressions.
A term matches case-insensitively as a whole word (not next to an ASCII letter,
digit or underscore), also with a trailing "s".

How it stays fast: the text is mapped once through a byte table (digits -> `0`,
letters lowercased, characters no pattern can contain -> `.`); every identifier
shows there as six zeros in a row, two groups of zeros split by a space or a
dash, or `000-00-0000`, and only the few places like that are checked with the
exact patterns, on the stretch of text around them. Terms are searched
on the same lowered bytes, one literal-prefixed pattern each, which `re` scans at
memory speed. With the optional `hyperscan` package (`privacy.engine`), one
Hyperscan pass finds the candidates instead, and the same exact checks confirm
them. Custom patterns run as written, with Python's `re`, over the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from sidecar.routing.checksums import card_valid, iban_prefix, ssn_valid

IDENTIFIER_DETECTORS = ("ssn", "card", "passport", "iban")
BUILTIN_TERMS: Mapping[str, tuple[str, ...]] = {
    "medical": ("patient", "diagnosis", "diagnoses", "medical record"),
    "confidential": ("confidential", "proprietary", "nda"),
}
DETECTORS = (*IDENTIFIER_DETECTORS, *BUILTIN_TERMS)
ENGINES = ("auto", "python", "hyperscan")

# How far before the digits the prefilter finds an identifier can start: an IBAN
# is at most 34 characters plus the spaces between its groups.
_LOOKBACK = 48
_WORD = b"A-Za-z0-9_"
# The longest IBAN (34 characters) in groups of four, and one character after it.
_IBAN_SPAN = 34 + 8 + 1


def _shape_table() -> bytes:
    table = bytearray(b"." * 256)
    for c in range(ord("a"), ord("z") + 1):
        table[c] = c
        table[c - 32] = c
    for c in b"0123456789":
        table[c] = ord("0")
    for c in b" _-":
        table[c] = c
    return bytes(table)


# Lowercase letters, digits as `0`, and `.` for every byte no identifier can hold:
# a pattern never matches across a `.`, so a stretch of text may end there.
_SHAPE = _shape_table()


@dataclass(frozen=True, slots=True)
class IdentifierRule:
    """An exact pattern over UTF-8 bytes, a check on each match, and a looser
    pattern Hyperscan uses to find candidates (it has no look-behind)."""

    name: str
    pattern: re.Pattern[bytes]
    valid: Callable[[bytes, int, int], bool]
    prefilter: bytes

    def found(self, data: bytes, start: int, end: int) -> bool:
        """Whether a valid match lies in data[start:end]; `end` must be a `.` byte
        of the shape (or the end), so that look-aheads see what they would in full."""
        return any(
            self.valid(data, m.start(), m.end()) for m in self.pattern.finditer(data, start, end)
        )


def _ascii(data: bytes, start: int, end: int) -> str:
    return data[start:end].decode("ascii")


def identifier_rules() -> dict[str, IdentifierRule]:
    return {
        "ssn": IdentifierRule(
            "ssn",
            re.compile(rb"(?<![0-9])(?<![0-9]-)[0-9]{3}-[0-9]{2}-[0-9]{4}(?![0-9])(?!-[0-9])"),
            lambda d, s, e: ssn_valid(_ascii(d, s, e)),
            rb"[0-9]{3}-[0-9]{2}-[0-9]{4}",
        ),
        "card": IdentifierRule(
            "card",
            re.compile(
                rb"(?<![0-9])(?<![0-9][ -])(?:[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{3,6}){2,4})"
                rb"(?![0-9])(?![ -][0-9])"
            ),
            lambda d, s, e: card_valid(_ascii(d, s, e)),
            rb"[0-9]{13,19}|[0-9]{4}(?:[ -][0-9]{3,6}){2,4}",
        ),
        "passport": IdentifierRule(
            "passport",
            re.compile(rb"(?<![" + _WORD + rb"#])[A-Z]{2}[0-9]{6,8}(?![" + _WORD + rb"])"),
            lambda d, s, e: True,
            rb"[A-Z]{2}[0-9]{6,8}",
        ),
        "iban": IdentifierRule(
            "iban",
            # Where an IBAN may start; the country's length decides where it ends,
            # so the check reads on past the match (and starts may not overlap).
            re.compile(rb"(?<![" + _WORD + rb"])[A-Z]{2}[0-9]{2}"),
            lambda d, s, e: (
                iban_prefix(d[s : s + _IBAN_SPAN].decode("ascii", "replace")) is not None
            ),
            rb"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}",
        ),
    }


@dataclass(frozen=True, slots=True)
class TermRule:
    """One term of a list, matched on the lowered shape bytes."""

    name: str
    term: bytes
    on_shape: re.Pattern[bytes]
    # The same match on raw bytes, ignoring case: confirms a Hyperscan candidate.
    on_bytes: re.Pattern[bytes]


def term_rule(name: str, term: str) -> TermRule:
    raw = term.lower().encode("ascii")
    esc = re.escape(raw)
    # The literal comes first so that `re` finds it with its fast substring search;
    # the word boundary before it is checked afterwards, looking back.
    on_shape = re.compile(esc + rb"(?<![a-z0-9_]" + esc + rb")s?(?![a-z0-9_])")
    on_bytes = re.compile(rb"(?<![" + _WORD + rb"])" + esc + rb"s?(?![" + _WORD + rb"])", re.I)
    return TermRule(name, raw, on_shape, on_bytes)


def shape_safe(term: str) -> bool:
    """Terms of ASCII letters, spaces, hyphens and underscores survive the shape table."""
    return bool(term) and all(c in "abcdefghijklmnopqrstuvwxyz _-" for c in term.lower())


def text_terms_pattern(terms: Iterable[str]) -> re.Pattern[str]:
    """Terms with other characters (digits, accents, symbols), matched on the text."""
    alternatives = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9_])(?:{alternatives})s?(?![A-Za-z0-9_])", re.IGNORECASE)


class CandidateScan(Protocol):
    """Finds which identifier and term rules fire; the engines differ only in speed."""

    name: str

    def scan(self, data: bytes) -> set[str]: ...


class PythonScan:
    """Prefilters with one byte-table pass, then confirms with `re` on small stretches."""

    name = "python"

    def __init__(self, identifiers: Iterable[IdentifierRule], terms: Iterable[TermRule]) -> None:
        self._identifiers = tuple(identifiers)
        self._terms = tuple(terms)
        # Every identifier holds one of these digit shapes: six digits in a row
        # (passports, unspaced cards and IBANs), two groups with a space or dash
        # between (spaced cards and IBANs), or an SSN. The literal `000` first lets
        # `re` skip ahead at memory speed; years and ports rarely go further.
        self._hits = re.compile(rb"000(?:000|0[ -]000|-00-0000)")

    def scan(self, data: bytes) -> set[str]:
        fired: set[str] = set()
        shape = data.translate(_SHAPE)
        if self._identifiers:
            for start, end in _digit_stretches(shape, self._hits):
                for rule in self._identifiers:
                    if rule.name not in fired and rule.found(data, start, end):
                        fired.add(rule.name)
                if len(fired) == len(self._identifiers):
                    break
        for term in self._terms:
            if term.name not in fired and term.on_shape.search(shape):
                fired.add(term.name)
        return fired


def _digit_stretches(shape: bytes, hits: re.Pattern[bytes]) -> Iterator[tuple[int, int]]:
    """(start, end) around each identifier-shaped spot, ending at a `.` of the shape."""
    size = len(shape)
    found = hits.search(shape)
    while found is not None:
        hit = found.start()
        end = shape.find(b".", hit)
        if end == -1:
            end = size
        yield max(0, hit - _LOOKBACK), end
        found = hits.search(shape, end)


class Detector:
    """Compiled once from the privacy settings; `detect` runs on every request."""

    def __init__(
        self,
        scan: CandidateScan | None,
        text_terms: Mapping[str, re.Pattern[str]],
        patterns: Mapping[str, re.Pattern[str]],
    ) -> None:
        self._scan = scan
        self._text_terms = dict(text_terms)
        self._patterns = dict(patterns)
        self.engine = scan.name if scan is not None else "python"

    def detect(self, text: str) -> tuple[str, ...]:
        """Names of the detectors that fire on `text`, sorted."""
        fired: set[str] = set()
        if self._scan is not None:
            fired = self._scan.scan(text.encode("utf-8", "surrogatepass"))
        for name, pattern in self._text_terms.items():
            if name not in fired and pattern.search(text):
                fired.add(name)
        for name, pattern in self._patterns.items():
            if pattern.search(text):
                fired.add(name)
        return tuple(sorted(fired))
