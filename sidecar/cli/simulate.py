"""`llm-sidecar simulate`: run one simulated upstream until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from typing import Final

from sidecar.cli import options
from sidecar.simulate.anthropic import AnthropicSimulator
from sidecar.simulate.faults import FAULT_KINDS, Fault
from sidecar.simulate.gemini import GeminiSimulator
from sidecar.simulate.ollama import OllamaSimulator
from sidecar.simulate.openai import OpenAISimulator
from sidecar.simulate.profile import SimProfile, presets, profile_by_name
from sidecar.simulate.server import Simulator

DEFAULT_PORTS: Final = {"ollama": 11434, "openai": 8000, "anthropic": 8001, "gemini": 8002}
# A server that starts refusing could never be told to stop; set it through /_sim/config.
CLI_FAULTS: Final = tuple(kind for kind in FAULT_KINDS if kind != "refuse")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=tuple(DEFAULT_PORTS), help="the protocol to speak")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="default 11434 for ollama, 8000 for openai, 8001 for anthropic, 8002 for gemini",
    )
    parser.add_argument("--profile", default="instant", choices=tuple(presets()))
    parser.add_argument(
        "--ttft-ms", type=_range, default=None, metavar="A[-B]", help="overrides the profile"
    )
    parser.add_argument(
        "--tokens-per-second",
        type=_rate,
        default=None,
        metavar="A[-B]|none",
        help="overrides the profile; 'none' sends as fast as possible",
    )
    parser.add_argument("--answer-tokens", type=_non_negative, default=None, metavar="N")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--fault", choices=CLI_FAULTS, default=None)
    parser.add_argument("--fault-after", type=_non_negative, default=0, metavar="N")
    parser.add_argument("--retry-after", type=float, default=1.0, metavar="S")
    parser.add_argument(
        "--api-key", default=None, help="openai, anthropic, gemini: the API key to require"
    )


async def run(args: argparse.Namespace) -> None:
    """Serve until cancelled."""
    profile = _profile(args)
    fault = None
    if args.fault is not None:
        fault = Fault(args.fault, after_tokens=args.fault_after, retry_after=args.retry_after)
    port = args.port if args.port is not None else DEFAULT_PORTS[args.kind]
    sim: Simulator
    if args.kind == "ollama":
        sim = OllamaSimulator(profile, fault, host=args.host, port=port)
    elif args.kind == "anthropic":
        sim = AnthropicSimulator(profile, fault, host=args.host, port=port, api_key=args.api_key)
    elif args.kind == "gemini":
        sim = GeminiSimulator(profile, fault, host=args.host, port=port, api_key=args.api_key)
    else:
        sim = OpenAISimulator(profile, fault, host=args.host, port=port, api_key=args.api_key)
    async with sim:
        print(
            f"simulated {args.kind} server on {sim.root_url} "
            f"(profile {args.profile}: {profile.describe()})",
            flush=True,
        )
        await asyncio.get_running_loop().create_future()  # until cancelled


def _profile(args: argparse.Namespace) -> SimProfile:
    profile = profile_by_name(args.profile)
    if args.ttft_ms is not None:
        low, high = args.ttft_ms
        profile = dataclasses.replace(profile, ttft=(low / 1000, high / 1000))
    if args.tokens_per_second is not None:
        rate = None if args.tokens_per_second == "none" else args.tokens_per_second
        profile = dataclasses.replace(profile, tokens_per_second=rate)
    if args.answer_tokens is not None:
        profile = dataclasses.replace(profile, answer_tokens=args.answer_tokens)
    if args.seed is not None:
        profile = dataclasses.replace(profile, seed=args.seed)
    return profile


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A or A-B (numbers), got {text!r}") from None
    if bounds[0] < 0 or bounds[0] > bounds[1]:
        raise argparse.ArgumentTypeError(f"expected 0 <= A <= B, got {text!r}")
    return bounds


def _rate(text: str) -> tuple[float, float] | str:
    if text == "none":
        return text
    bounds = _range(text)
    if bounds[0] <= 0:
        raise argparse.ArgumentTypeError(f"a rate must be above 0, got {text!r}")
    return bounds


_non_negative = options.integer_at_least(0)
