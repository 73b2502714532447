"""The one place where text that may carry a credential is made safe to show.

Everything the sidecar passes on from somewhere else (an upstream's error body,
a frame it could not parse, a URL from the configuration) goes through `redact`
before it reaches a caller, a log line, a status page or a trailer:

    configured secrets   every provider key, the master key, URL passwords -> [redacted]
    Authorization forms  `Bearer …`, `Basic …`, `x-api-key: …`, `?key=…`    -> [redacted]
    key-shaped tokens    `sk-…`, `sk-ant-…`, `AIza…`, `ghp_…`, `xoxb-…`      -> [redacted]
    URL userinfo         `https://user:pass@host`                             -> https://[redacted]@host

then has its control characters turned into spaces (so it cannot forge a log
line) and is cut to `limit` characters (so a hostile upstream cannot make the
sidecar repeat a megabyte either). `clip` is the cut alone, for values callers
sent themselves (a model name, a path), which carry no one else's secret but
must not be echoed at any length.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Final

REDACTED: Final = "[redacted]"
# What the sidecar shows of a foreign text at most, by default: an error body's gist.
DEFAULT_LIMIT: Final = 300
# Shorter configured secrets are not searched for: replacing every "abc" in a message
# would garble it without protecting anything worth the name.
MIN_SECRET: Final = 4
_ELLIPSIS: Final = "…"

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_PATTERNS: Final = (
    # Authorization header values, wherever they appear (headers echoed in an error body,
    # a repr of a request): the scheme stays, the credential goes.
    (re.compile(r"\b([Bb]earer|BEARER)(\s+)[^\s'\",;]+"), rf"\1\2{REDACTED}"),
    (re.compile(r"\b(Basic)(\s+)[A-Za-z0-9+/]{6,}={0,2}"), rf"\1\2{REDACTED}"),
    # Header-shaped or key=value credentials: x-api-key: …, "api-key": "…", ?key=…
    (
        re.compile(
            r"((?:x-)?(?:api[-_]?key|goog-api-key|access[-_]token|auth[-_]token|password|secret)"
            # The value must look like a key (8+ characters, a digit among them), so that
            # "api_key: environment variable X is not set" stays readable.
            r"['\"]?\s*[:=]\s*['\"]?)(?=[^\s'\",;&)]*\d)[^\s'\",;&)]{8,}",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"([?&](?:key|token|sig|signature)=)[^&\s'\"]+", re.IGNORECASE), rf"\1{REDACTED}"),
    # Provider key shapes: OpenAI / Anthropic (sk-, sk-ant-, sk-proj-), Google (AIza),
    # GitHub (ghp_, github_pat_), Slack (xoxb-), and AWS access key ids.
    (
        re.compile(
            r"\b(?:(?:sk|pk|rk)[-_][A-Za-z0-9_\-]{6,}|AIza[0-9A-Za-z_\-]{20,}"
            r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
            r"|xox[abprs]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16})"
        ),
        REDACTED,
    ),
    # user:password@ (or a bare token@) in any URL.
    (re.compile(r"([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@", re.IGNORECASE), rf"\1{REDACTED}@"),
)


def redact(text: str, secrets: Iterable[str | None] = (), limit: int | None = DEFAULT_LIMIT) -> str:
    """`text` with every credential replaced, then cut to `limit` characters (None: uncut).

    `secrets` are the exact values to hide wherever they appear (the configured keys);
    the patterns catch credentials the sidecar was never told about.
    """
    known = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)
    if limit is not None:
        # Cut before searching (a hostile text may be huge), but far enough out that a
        # secret starting before `limit` is still whole and so still found.
        text = text[: limit + max((len(s) for s in known), default=0) + 256]
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    text = _CONTROL.sub(" ", text)
    return text if limit is None else clip(text, limit)


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, marked as cut when it was."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + _ELLIPSIS


def shown(value: str, limit: int = 80) -> str:
    """A caller's value quoted for a message: repr-quoted (so control characters show
    as escapes and cannot forge log lines) and cut to about `limit` characters."""
    return repr(clip(value, limit))


class RedactingFilter(logging.Filter):
    """Redacts every record a handler emits, its traceback included, with `redact`.

    The sidecar's own messages are redacted where they are built; this catches what
    libraries log (a traceback quoting an exception's text), line by line so that a
    traceback stays readable. Installed on the process's handlers by the CLI.
    """

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._lines(record.getMessage())
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._lines(record.exc_text)
        if record.stack_info:
            record.stack_info = self._lines(record.stack_info)
        return True

    def _lines(self, text: str) -> str:
        return "\n".join(redact(line, self._secrets, limit=None) for line in text.split("\n"))


def redact_logs(secrets: Iterable[str | None]) -> None:
    """Put a RedactingFilter on every handler of the root logger."""
    flt = RedactingFilter(secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
