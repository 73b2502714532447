"""Newline-delimited JSON frames (Ollama's native API) from a byte stream.

A frame is one complete line, without its LF. A CR before the LF stays: it is
JSON whitespace, so a decoder reads `{...}\\r` as `{...}`. Blank lines are dropped.
Lines may be split anywhere across reads; the unfinished tail is kept for the next.
"""

from __future__ import annotations


class NdjsonReader:
    """Splits a byte stream into NDJSON lines, bounding the size of any one line.

    `overflow` becomes True when a line grows past `max_frame` bytes, complete or
    not; `feed` then returns only the lines before it and the stream should be
    given up.
    """

    __slots__ = ("_tail", "max_frame", "overflow")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.overflow = False
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        if len(data) > self.max_frame:
            # Only a read this large can hold a line over the limit; smaller ones skip the scan.
            lines = self._bounded(lines)
            if len(self._tail) > self.max_frame:
                self.overflow = True
        for line in lines:
            if not line or line.isspace():
                return [line for line in lines if line and not line.isspace()]
        # The usual case, no blank line: the list as split, without building another.
        return lines

    def _bounded(self, lines: list[bytes]) -> list[bytes]:
        for i, line in enumerate(lines):
            if len(line) > self.max_frame:
                self.overflow = True
                return lines[:i]
        return lines

    @property
    def rest(self) -> bytes:
        """The unfinished last line, if the stream stopped inside one."""
        return b"" if self._tail.isspace() else self._tail
