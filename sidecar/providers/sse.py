"""Server-sent events (OpenAI, Anthropic and Gemini streams) from a byte stream.

Follows the WHATWG event-stream rules: lines end in LF, CRLF or a lone CR (even
when a CRLF is split across two reads); a line starting with ":" is a comment;
`data:` lines accumulate and a blank line dispatches them joined by LF; `event:`
names the next event ("message" when unnamed); one space after the colon is
dropped; a leading byte-order mark is ignored. `id:` and `retry:` are read past:
no provider resumes a chat stream. An event still incomplete when the stream
ends is never dispatched.
"""

from __future__ import annotations

from typing import TypeAlias

# (event name, data): what a provider needs of one event.
Event: TypeAlias = tuple[str, bytes]

_BOM = b"\xef\xbb\xbf"
_MESSAGE = "message"


class SseReader:
    """Splits a byte stream into events, bounding the size of any one event.

    `overflow` becomes True when one event (its data so far plus the line being
    read) grows past `max_frame` bytes; `feed` then returns only the events before
    it and the stream should be given up.
    """

    __slots__ = ("_data", "_event", "_size", "_skip", "_tail", "max_frame", "overflow")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.overflow = False
        self._tail = b""
        self._data: list[bytes] = []
        self._size = 0  # bytes in _data
        self._event = _MESSAGE
        # What to drop if the next read starts with it: a byte-order mark before the
        # first read, the LF of a CRLF after a read that ended in its CR.
        self._skip: bytes | None = _BOM

    def feed(self, data: bytes) -> list[Event]:
        skip = self._skip
        if skip is not None and data:
            self._skip = None
            if data.startswith(skip):
                data = data[len(skip) :]
        if b"\r" in data:
            if data.endswith(b"\r"):
                self._skip = b"\n"
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._tail:
            data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()
        events: list[Event] = []
        pending = self._data
        size = self._size
        for line in lines:
            if line.startswith(b"data: "):
                value = line[6:]
            elif not line:
                if pending:
                    if size > self.max_frame:
                        self.overflow = True
                        return events
                    payload = pending[0] if len(pending) == 1 else b"\n".join(pending)
                    events.append((self._event, payload))
                    pending.clear()
                    size = 0
                self._event = _MESSAGE
                continue
            elif line.startswith(b"data:"):
                value = line[5:]
            elif line.startswith(b"event:"):
                name = line[7:] if line.startswith(b"event: ") else line[6:]
                self._event = name.decode("utf-8", "replace")
                continue
            elif line == b"data":
                # A field name with no colon has an empty value.
                value = b""
            else:
                continue  # a comment (":..."), id, retry or an unknown field
            pending.append(value)
            size += len(value)
        self._size = size
        if len(self._tail) + size > self.max_frame:
            self.overflow = True
        return events

    @property
    def rest(self) -> bytes:
        """What the stream held of an event it never finished, if anything."""
        return b"\n".join([*self._data, self._tail]) if self._data else self._tail
