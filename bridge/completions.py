"""`POST /v1/completions` (OpenAI's legacy text completions) -> canonical requests, and back.

Each prompt becomes one `ChatRequest` marked `completion`: a deployment whose upstream
completes text (OpenAI-compatible `/completions`, Ollama's `/api/generate`) gets the
raw prompt; any other answers it as a chat turn, and the response says so in
`x-sidecar-translated: chat`. A list of prompts is a call per prompt, answered as
the choices of one response (`index` = the prompt's place). What the router cannot
give faithfully is refused with a 400 naming the field: `echo`, `suffix`,
`logprobs`, `best_of` and `n` above 1, token-id prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from bridge.errors import bad_request
from bridge.parse import call_timeout, include_usage, routing_metadata, wrong_field
from bridge.render import DONE, usage_object
from sidecar.types import ChatRequest, ChatResponse, Chunk, GenerationParams, Message, Usage

# Fields read here; the others (frequency_penalty, presence_penalty, logit_bias, user,
# provider extras) pass on to the upstream as they are.
_CONSUMED: Final = frozenset(
    {
        "model",
        "prompt",
        "stream",
        "stream_options",
        "max_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "metadata",
        "timeout",
        "echo",
        "suffix",
        "logprobs",
        "n",
        "best_of",
    }
)
# OpenAI's limit on prompts in one request.
_MAX_PROMPTS: Final = 2048


@dataclass(frozen=True, slots=True)
class ParsedCompletion:
    requests: tuple[ChatRequest, ...]  # one per prompt, in order
    stream: bool
    include_usage: bool
    timeout: float | None


def parse_completion(body: dict[str, Any], request_id: str) -> ParsedCompletion:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise wrong_field("model", model, "a non-empty string")
    _refuse_unsupported(body)
    prompts = _prompts(body.get("prompt"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise wrong_field("stream", stream, "a boolean")
    usage = include_usage(body.get("stream_options"), stream)
    hints, metadata = routing_metadata(body.get("metadata"))
    extra = {k: v for k, v in body.items() if k not in _CONSUMED and v is not None}
    params = _params(body)
    requests = tuple(
        ChatRequest(
            model=model,
            messages=(Message("user", prompt),),
            params=params,
            extra=extra,
            metadata=metadata,
            hints=hints,
            request_id=request_id if len(prompts) == 1 else f"{request_id}-{i}",
            completion=True,
        )
        for i, prompt in enumerate(prompts)
    )
    return ParsedCompletion(requests, stream, usage, call_timeout(body.get("timeout")))


def _refuse_unsupported(body: dict[str, Any]) -> None:
    if body.get("echo"):
        raise bad_request(
            "echo", "echo: not supported; the router returns the completion only", "unsupported"
        )
    if body.get("suffix"):
        raise bad_request(
            "suffix",
            "suffix: not supported (insertion needs a model-specific template)",
            "unsupported",
        )
    if body.get("logprobs") is not None:
        raise bad_request(
            "logprobs",
            "logprobs: not supported; the relay carries no log probabilities",
            "unsupported",
        )
    for key in ("n", "best_of"):
        value = body.get(key)
        if value is not None and (isinstance(value, bool) or value != 1):
            raise bad_request(key, f"{key}: only 1 is supported, got {value!r}")


def _prompts(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(p, str) for p in value):
        if len(value) > _MAX_PROMPTS:
            raise bad_request("prompt", f"prompt: at most {_MAX_PROMPTS} prompts")
        return tuple(value)
    if isinstance(value, list) and value and not isinstance(value[0], str):
        raise bad_request(
            "prompt", "prompt: token ids are not supported; send the prompt as text", "unsupported"
        )
    raise wrong_field("prompt", value, "a string or a non-empty array of strings")


# The legacy completions endpoint's `max_tokens` when the request sets none.
DEFAULT_MAX_TOKENS: Final = 16


def _params(body: dict[str, Any]) -> GenerationParams:
    # OpenAI's documented default for this endpoint (vLLM's too), applied here so that every
    # deployment, a chat model answering it as a chat turn included, answers the same length.
    max_tokens = body.get("max_tokens", DEFAULT_MAX_TOKENS)
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise wrong_field("max_tokens", max_tokens, "an integer of at least 1")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise wrong_field("stop", stop, "a string or an array of strings")
    numbers: dict[str, float | None] = {}
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise wrong_field(key, value, "a number")
        numbers[key] = None if value is None else float(value)
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise wrong_field("seed", seed, "an integer")
    return GenerationParams(
        max_tokens=max_tokens,
        temperature=numbers["temperature"],
        top_p=numbers["top_p"],
        stop=tuple(stop or ()),
        seed=seed,
    )


# -- answers ---------------------------------------------------------------------------


def _choice(text: str, index: int, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def completion_body(
    response_id: str, created: int, model: str, answers: list[ChatResponse]
) -> bytes:
    """The `text_completion` object: one choice per prompt, usage summed."""
    prompt = sum(a.usage.prompt_tokens or 0 for a in answers)
    completion = sum(a.usage.completion_tokens or 0 for a in answers)
    return orjson.dumps(
        {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                _choice(a.content, i, a.finish_reason or "stop") for i, a in enumerate(answers)
            ],
            "usage": usage_object(Usage(prompt, completion)),
        }
    )


class TextStreamWriter:
    """The SSE frames of a streamed text completion: text chunks per choice, a finish
    frame per choice, the usage frame when asked for, then [DONE]. A text frame is
    spliced from constant bytes around the text, so a relayed token costs one small
    orjson call."""

    __slots__ = ("_completion", "_include_usage", "_prefix", "_prompt", "_tail")

    def __init__(self, response_id: str, created: int, model: str, include_usage: bool) -> None:
        head = {"id": response_id, "object": "text_completion", "created": created, "model": model}
        self._prefix = b"data: " + orjson.dumps(head)[:-1] + b',"choices":['
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self._include_usage = include_usage
        self._prompt = 0
        self._completion = 0

    def chunk(self, chunk: Chunk, index: int) -> bytes:
        frames = b""
        if chunk.content:
            frames = (
                self._prefix
                + b'{"text":'
                + orjson.dumps(chunk.content)
                + b',"index":%d,"logprobs":null,"finish_reason":null}' % index
                + self._tail
            )
        if chunk.usage is not None:
            self._prompt += chunk.usage.prompt_tokens or 0
            self._completion += chunk.usage.completion_tokens or 0
        if chunk.finish_reason:
            finish = orjson.dumps(_choice("", index, chunk.finish_reason))
            frames += self._prefix + finish + self._tail
        return frames

    def end(self) -> bytes:
        if not self._include_usage:
            return DONE
        usage = orjson.dumps(usage_object(Usage(self._prompt, self._completion)))
        return self._prefix + b'],"usage":' + usage + b"}\n\n" + DONE
