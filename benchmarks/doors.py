"""What the newer HTTP front doors add, each against the direct call in the same run.

    python -m benchmarks.doors [ROUNDS]        (default 100 streams per path)

Three processes: a simulated Ollama pinned to the local-8b figures (45 ms to the first
token, 100 tokens/s, 20-token answers), the sidecar serving the OpenAI-compatible
bridge and the Ollama-compatible door on one engine, and this load generator. Paths,
one stream at a time, alternating so that drift on a noisy machine hits all alike:

    direct /api/chat            the baseline for chat
    ollama door /api/chat       Ollama NDJSON in -> sidecar -> Ollama NDJSON
    bridge /v1/chat/completions the existing OpenAI door, for comparison
    direct /api/generate        the baseline for text completions
    /v1/completions             OpenAI text_completion SSE -> sidecar -> Ollama /api/generate

Printed: time to first token (p50, p99) per path, what each door adds to it, and the
sidecar's CPU per stream, read from its own process (/proc, 10 ms ticks averaged).
"""

from __future__ import annotations

import statistics
import sys
import tempfile

import aiohttp
import orjson
import uvloop

from benchmarks import procs
from benchmarks.load import PROMPT, Call, Sample, Timer, ollama_direct, openai_stream, percentile

_PINNED = {"ttft": 0.045, "tokens_per_second": 100, "answer_tokens": 20}
_OLLAMA_READY = r"serving Ollama's API on (http://\S+)"
_WARM_UP = 5


def generate_direct(session: aiohttp.ClientSession, root_url: str, model: str) -> Call:
    """Stream one raw prompt straight from Ollama's /api/generate."""
    body = orjson.dumps({"model": model, "prompt": PROMPT, "raw": True, "stream": True})

    async def call() -> Sample:
        timer = Timer()
        done = False
        tail = b""
        async with session.post(f"{root_url}/api/generate", data=body) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            while data := await response.content.readany():
                lines = (tail + data).split(b"\n")
                tail = lines.pop()
                for line in filter(None, lines):
                    frame = orjson.loads(line)
                    if frame.get("response"):
                        timer.token()
                    done = done or bool(frame.get("done"))
        return timer.sample(ok=done and timer.tokens > 0)

    return call


def completions_stream(session: aiohttp.ClientSession, root_url: str, model: str) -> Call:
    """Stream one legacy text completion from the OpenAI-compatible bridge."""
    body = orjson.dumps({"model": model, "prompt": PROMPT, "stream": True})
    headers = {"Content-Type": "application/json"}

    async def call() -> Sample:
        timer = Timer()
        done = False
        tail = b""
        async with session.post(f"{root_url}/v1/completions", data=body, headers=headers) as r:
            if r.status != 200:
                raise ValueError(f"HTTP {r.status}")
            while data := await r.content.readany():
                events = (tail + data).split(b"\n\n")
                tail = events.pop()
                for event in events:
                    payload = event.removeprefix(b"data: ")
                    if payload == b"[DONE]":
                        done = True
                    elif any(c.get("text") for c in orjson.loads(payload).get("choices", ())):
                        timer.token()
        return timer.sample(ok=done and timer.tokens > 0)

    return call


async def main(rounds: int) -> None:
    async with procs.simulator("ollama", "local-8b") as sim:
        with tempfile.TemporaryDirectory() as tmp:
            entry = {"model": "ollama/llama3.2:8b", "api_base": sim.address}
            config = {
                "model_list": [{"model_name": "fast-local", "litellm_params": entry}],
                "health": {"probe_interval": 0},
            }
            path = procs.write_config(tmp, config)
            args = ["serve", "--config", path, "--grpc-port", "0", "--http-port", "0"]
            args += ["--ollama-port", "0", "--data-dir", tmp]
            also = {"http": procs.HTTP_READY, "ollama": _OLLAMA_READY}
            async with (
                procs.running(args, procs.GRPC_READY, also) as sidecar,
                aiohttp.ClientSession() as session,
            ):
                await procs.configure(session, sim.address, profile=dict(_PINNED))
                http, door = sidecar.more["http"], sidecar.more["ollama"]
                paths: dict[str, Call] = {
                    "direct /api/chat": ollama_direct(session, sim.address, "llama3.2:8b"),
                    "ollama door /api/chat": ollama_direct(session, door, "fast-local"),
                    "bridge /v1/chat/completions": openai_stream(
                        session, f"{http}/v1", "fast-local", "none"
                    ),
                    "direct /api/generate": generate_direct(session, sim.address, "llama3.2:8b"),
                    "/v1/completions": completions_stream(session, http, "fast-local"),
                }
                for call in paths.values():
                    for _ in range(_WARM_UP):
                        await call()
                ttft: dict[str, list[float]] = {name: [] for name in paths}
                cpu = dict.fromkeys(paths, 0.0)
                for _ in range(rounds):
                    for name, call in paths.items():
                        before = sidecar.cpu_seconds()
                        sample = await call()
                        cpu[name] += sidecar.cpu_seconds() - before
                        if not sample.ok:
                            raise RuntimeError(f"{name}: a stream failed")
                        ttft[name].append(sample.ttft * 1000)
    for name, values in ttft.items():
        print(
            f"{name:28s} ttft p50 {statistics.median(values):7.2f} ms  "
            f"p99 {percentile(values, 99):7.2f} ms  sidecar CPU/stream "
            f"{cpu[name] / rounds * 1000:5.2f} ms"
        )
    for door_name, direct in (
        ("ollama door /api/chat", "direct /api/chat"),
        ("bridge /v1/chat/completions", "direct /api/chat"),
        ("/v1/completions", "direct /api/generate"),
    ):
        p50 = statistics.median(ttft[door_name]) - statistics.median(ttft[direct])
        p99 = percentile(ttft[door_name], 99) - percentile(ttft[direct], 99)
        print(f"added by {door_name}: ttft p50 {p50:+.2f} ms, p99 {p99:+.2f} ms")


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
