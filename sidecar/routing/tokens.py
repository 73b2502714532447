"""A fast token estimate, with no tokenizer at run time.

The estimate is a linear model over counts taken from a byte "shape" of the text
(letters -> `a`, digits -> `0`, whitespace -> space, anything else -> `.`):

    tokens = 0.088 * bytes + 0.74 * word starts (` a`) + 0.172 * punctuation (`.`)
             + 0.988 * digits (`0`) + 1.488 * punctuation followed by a letter (`.a`)
             + 0.6 * non-ASCII characters

fitted against OpenAI's cl100k_base and o200k_base tokenizers on about 1,500
samples of 1,500 to 3,000 characters: English prose (manuals, licences, API
docs) and Python, C and JavaScript code. Its error per sample: median 4% (prose)
and 5% (code), 90th percentile 10% and 14%, 95th percentile 12% and 17%; over
each whole set it is within 2%. On long chats (60,000 to 120,000 characters of
mixed samples) the median error is 2% (prose) and 4% (code), the largest 6% and
12%. Scripts other than Latin are only roughly right.

Each count is one C-level pass over bytes. Above `_SAMPLE_LIMIT` characters the
counts are taken on evenly spaced slices (2 KB to 8 KB in all) and scaled to the
full length, so the cost stays flat however long the text.
"""

from __future__ import annotations

_SAMPLE_LIMIT = 2048
_SLICE = 512
_MIN_SLICES = 4
_MAX_SLICES = 16

# Chat-format overhead: role and delimiters per message, and the reply's priming.
PER_MESSAGE_TOKENS = 4
PER_REQUEST_TOKENS = 3


def _shape_table() -> bytes:
    table = bytearray(b"." * 256)
    for c in b"0123456789":
        table[c] = ord("0")
    for c in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = ord("a")
    for c in b" \t\n\r":
        table[c] = ord(" ")
    # UTF-8 lead bytes count characters; continuation bytes count only as bytes.
    for c in range(0xC0, 0x100):
        table[c] = ord("u")
    for c in range(0x80, 0xC0):
        table[c] = ord("c")
    return bytes(table)


_SHAPE = _shape_table()


def estimate_tokens(text: str) -> int:
    """Estimated tokens of one piece of text (no chat overhead)."""
    length = len(text)
    if length <= _SAMPLE_LIMIT:
        return round(_shape_tokens(text))
    # More slices for longer texts, which mix more kinds of content.
    slices = min(_MAX_SLICES, max(_MIN_SLICES, length // 4096))
    step = (length - _SLICE) // (slices - 1)
    sample = "\n".join(text[i * step : i * step + _SLICE] for i in range(slices))
    return round(_shape_tokens(sample) * length / len(sample))


def _shape_tokens(text: str) -> float:
    data = text.encode("utf-8", "surrogatepass")
    shape = data.translate(_SHAPE)
    tokens = (
        0.088 * len(data)
        # A word at the very start counts as a word start too.
        + 0.74 * (shape.count(b" a") + shape.startswith(b"a"))
        + 0.172 * shape.count(b".")
        + 0.988 * shape.count(b"0")
        + 1.488 * shape.count(b".a")
    )
    return tokens if text.isascii() else tokens + 0.6 * shape.count(b"u")


def chat_overhead(messages: int) -> int:
    """Tokens the chat format adds around `messages` messages."""
    return PER_REQUEST_TOKENS + PER_MESSAGE_TOKENS * messages
