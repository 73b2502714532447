"""The seed's production picture: simulated local and cloud tiers behind one sidecar, `auto`
routing, a mixed workload; the share served locally, TTFT per tier and the cloud bill.

    python -m benchmarks --only hybrid [--quick]

Every alias of the seed's `examples/litellm_config.yaml` gets its own simulated
upstream with the seed's latency table (TIERS); the config is the seed's, with
api_base and api_key pointed at the simulators and the cloud entries marked
`locality: cloud` (the simulators listen on 127.0.0.1, which would otherwise read
as local). `cloud-reasoning` (Anthropic) is left out: no Anthropic simulator yet.

The workload (`prompts.yaml`) arrives open loop at a fixed rate. Each answer's
route and usage come back in the gRPC stream; the cost prices every cloud answer
at its model's list price (`prices.yaml`) and compares it with the same requests,
same token counts, all sent to GPT-4o. Token counts are the simulators' (prompt
characters / 4, and a fixed answer length), so the bill is a model of one, not
an invoice.
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from benchmarks import procs
from benchmarks.load import Call, Sample, open_loop, stream_chat
from benchmarks.progress import ticking
from benchmarks.stats import cdf, ms, summary
from benchmarks.suite import Context, Outcome, Scale, Scenario
from sidecar.routing import estimate_tokens
from sidecar.rpc.api import router_pb2 as pb
from sidecar.rpc.api import router_pb2_grpc as pb_grpc

HERE = Path(__file__).parent
SEED_CONFIG = HERE.parent / "examples" / "litellm_config.yaml"
PROMPTS = HERE / "prompts.yaml"
PRICES = HERE / "prices.yaml"
AUTO = "auto"
CLOUD_KEY = "sk-bench-cloud"


@dataclass(frozen=True, slots=True)
class Tier:
    kind: str  # simulator protocol
    profile: str  # simulator preset: the seed's latency table
    cloud: bool


# The seed's latency table, per alias. It has no row for the 32B coder, so code-local
# takes the 70B row (the nearest local model it lists, and the slower one).
TIERS: Mapping[str, Tier] = {
    "fast-local": Tier("ollama", "local-8b", cloud=False),
    "strong-local": Tier("ollama", "local-70b", cloud=False),
    "code-local": Tier("ollama", "local-70b", cloud=False),
    "cloud-strong": Tier("openai", "gpt-4o", cloud=True),
    "cloud-fast": Tier("openai", "gpt-4o-mini", cloud=True),
}


@dataclass(frozen=True, slots=True)
class Plan:
    rate: float  # requests per second, open loop
    seconds: float
    answer_tokens: int


PLANS: Mapping[Scale, Plan] = {
    Scale.FULL: Plan(rate=20, seconds=60, answer_tokens=60),
    Scale.QUICK: Plan(rate=20, seconds=10, answer_tokens=60),
    Scale.SMOKE: Plan(rate=10, seconds=1, answer_tokens=5),
}


# -- the workload ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Category:
    name: str
    weight: float
    note: str
    requests: tuple[pb.ChatRequest, ...]


class Workload:
    """The prompt set of prompts.yaml, drawn by weight in a seeded order."""

    def __init__(self, categories: Sequence[Category], seed: int) -> None:
        self.categories = tuple(categories)
        self._rng = random.Random(seed)
        self._weights = [c.weight for c in self.categories]

    @classmethod
    def load(cls, path: Path = PROMPTS) -> Workload:
        raw = yaml.safe_load(path.read_text())
        paragraphs = [" ".join(p.split()) for p in raw["document"]]
        categories = [
            Category(
                name,
                float(spec["weight"]),
                " ".join(str(spec.get("note", "")).split()),
                tuple(_request(p, paragraphs) for p in spec["prompts"]),
            )
            for name, spec in raw["categories"].items()
        ]
        return cls(categories, int(raw.get("seed", 0)))

    def draw(self) -> tuple[str, pb.ChatRequest]:
        category = self._rng.choices(self.categories, self._weights)[0]
        return category.name, self._rng.choice(category.requests)


def _request(prompt: Any, paragraphs: Sequence[str]) -> pb.ChatRequest:
    if isinstance(prompt, str):
        texts = [prompt]
    elif "turns" in prompt:
        texts = [str(t) for t in prompt["turns"]]
    else:
        texts = [f"{document(paragraphs, int(prompt['document_tokens']))}\n\n{prompt['question']}"]
    roles = ("user", "assistant")
    messages = [pb.Message(role=roles[i % 2], content=t) for i, t in enumerate(texts)]
    return pb.ChatRequest(model=AUTO, messages=messages)


def document(paragraphs: Sequence[str], tokens: int) -> str:
    """Paragraphs repeated in turn until the text holds about `tokens` tokens."""
    parts: list[str] = []
    size = 0
    while size < tokens:
        paragraph = paragraphs[len(parts) % len(paragraphs)]
        parts.append(paragraph)
        size += estimate_tokens(paragraph) + 1
    return "\n\n".join(parts)


# -- prices ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prices:
    per_million: Mapping[str, tuple[float, float]]  # model -> (input, output) USD / 1M tokens
    baseline: str
    as_of: str

    @classmethod
    def load(cls, path: Path = PRICES) -> Prices:
        raw = yaml.safe_load(path.read_text())
        models = {
            str(name): (float(p["input"]), float(p["output"])) for name, p in raw["models"].items()
        }
        return cls(models, str(raw["baseline"]), str(raw.get("as_of", "")))

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        price_in, price_out = self.per_million[model]
        return (prompt_tokens * price_in + completion_tokens * price_out) / 1e6


# -- the processes --------------------------------------------------------------------------


def seed_config(sims: Mapping[str, str]) -> dict[str, Any]:
    """The seed's config, each alias pointed at its simulator's root URL in `sims`."""
    raw = yaml.safe_load(SEED_CONFIG.read_text())
    entries = []
    for entry in raw["model_list"]:
        alias = entry["model_name"]
        if alias not in sims:
            continue
        params = dict(entry["litellm_params"])
        tier = TIERS[alias]
        if tier.cloud:
            params["api_base"] = f"{sims[alias]}/v1"
            params["api_key"] = CLOUD_KEY
            entry = {**entry, "model_info": {**entry.get("model_info", {}), "locality": "cloud"}}
        else:
            params["api_base"] = sims[alias]
        entries.append({**entry, "litellm_params": params})
    general = {k: v for k, v in raw.get("general_settings", {}).items() if k != "database_url"}
    return {**raw, "model_list": entries, "general_settings": general}


def upstream_models(config: Mapping[str, Any]) -> dict[str, str]:
    """alias -> the model name it sends upstream, prefix removed."""
    return {
        e["model_name"]: str(e["litellm_params"]["model"]).rpartition("/")[2]
        for e in config["model_list"]
    }


@asynccontextmanager
async def stack(answer_tokens: int) -> AsyncIterator[tuple[pb_grpc.RouterStub, dict[str, Any]]]:
    async with AsyncExitStack() as exits:
        sims = {}
        for alias, tier in TIERS.items():
            sim = await exits.enter_async_context(
                procs.simulator(tier.kind, tier.profile, "--answer-tokens", str(answer_tokens))
            )
            sims[alias] = sim.address
        config = seed_config(sims)
        tmp = exits.enter_context(tempfile.TemporaryDirectory())
        sidecar = await exits.enter_async_context(procs.sidecar(procs.write_config(tmp, config)))
        channel = await exits.enter_async_context(grpc.aio.insecure_channel(sidecar.address))
        yield pb_grpc.RouterStub(channel), config


# -- the run --------------------------------------------------------------------------------


def labelled_call(stub: pb_grpc.RouterStub, workload: Workload, key: str | None) -> Call:
    # The seed's config sets a master key, which the gRPC door wants too.
    metadata = (("authorization", f"Bearer {key}"),) if key else None

    async def call() -> Sample:
        label, request = workload.draw()
        return dataclasses.replace(await stream_chat(stub, request, metadata), label=label)

    return call


async def run(context: Context) -> Outcome:
    plan = PLANS[context.scale]
    workload = Workload.load()
    prices = Prices.load()
    async with stack(plan.answer_tokens) as (stub, config):
        context.progress.advance("tiers up")
        call = labelled_call(stub, workload, config["general_settings"].get("master_key"))
        requests = int(plan.rate * plan.seconds)
        async with ticking(context.progress, plan.seconds, int(plan.seconds), "load"):
            samples = await open_loop(call, plan.rate, requests, plan.seconds)
    context.progress.advance("done")
    data = analyse(samples, workload, prices, upstream_models(config), plan)
    return Outcome(metrics(data), data)


def analyse(
    samples: Sequence[Sample],
    workload: Workload,
    prices: Prices,
    models: Mapping[str, str],
    plan: Plan,
) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    by_group: dict[str, list[Sample]] = {}
    for s in ok:
        by_group.setdefault(_group(s), []).append(s)
    tiers = []
    for group in [*TIERS, *sorted(set(by_group) - set(TIERS))]:
        served = by_group.get(group, [])
        figures: dict[str, Any] = dict(summary(served))
        figures.update(
            group=group,
            locality="cloud" if group in TIERS and TIERS[group].cloud else "local",
            profile=TIERS[group].profile if group in TIERS else "",
            share=len(served) / len(ok) if ok else 0.0,
            ttft_cdf_ms=cdf(ms(s.ttft for s in served)),
        )
        tiers.append(figures)
    cloud_cost = sum(
        prices.cost(models[_group(s)], s.prompt_tokens, s.completion_tokens)
        for s in ok
        if s.locality == "cloud"
    )
    baseline = sum(prices.cost(prices.baseline, s.prompt_tokens, s.completion_tokens) for s in ok)
    mix = Counter((s.label, _group(s)) for s in ok)
    local = sum(s.locality == "local" for s in ok)
    return {
        "plan": dataclasses.asdict(plan),
        "overall": summary(samples),
        "by_locality": {
            where: summary([s for s in ok if s.locality == where]) for where in ("local", "cloud")
        },
        "tiers": tiers,
        "local_requests": local,
        "local_share": local / len(ok) if ok else 0.0,
        "categories": [
            {
                "name": c.name,
                "weight": c.weight,
                "note": c.note,
                "served_by": {g: mix[c.name, g] for g in by_group if mix[c.name, g]},
            }
            for c in workload.categories
        ],
        "cost": {
            "cloud_usd": cloud_cost,
            "baseline_usd": baseline,
            "baseline_model": prices.baseline,
            "saving": 1 - cloud_cost / baseline if baseline else 0.0,
            "prices_as_of": prices.as_of,
            "prompt_tokens": sum(s.prompt_tokens for s in ok),
            "completion_tokens": sum(s.completion_tokens for s in ok),
            "cloud_prompt_tokens": sum(s.prompt_tokens for s in ok if s.locality == "cloud"),
        },
        "errors": dict(Counter(s.error for s in samples if not s.ok).most_common(5)),
        "overall_ttft_cdf_ms": cdf(ms(s.ttft for s in ok)),
    }


def _group(sample: Sample) -> str:
    return sample.deployment.rpartition("/")[0] or "?"


def metrics(data: Mapping[str, Any]) -> dict[str, float]:
    overall = data["overall"]
    out = {
        "hybrid.requests": float(overall["n"]),
        "hybrid.failures": float(overall["failures"]),
        "hybrid.ok_requests": float(overall["n"] - overall["failures"]),
        "hybrid.local_requests": float(data["local_requests"]),
        "hybrid.local_share": data["local_share"],
        "hybrid.ttft_p50_ms": overall["ttft_p50_ms"],
        "hybrid.ttft_p99_ms": overall["ttft_p99_ms"],
        "hybrid.cloud_cost_usd": data["cost"]["cloud_usd"],
        "hybrid.all_gpt4o_cost_usd": data["cost"]["baseline_usd"],
        "hybrid.cost_saving": data["cost"]["saving"],
    }
    for where, figures in data["by_locality"].items():
        out[f"hybrid.{where}.ttft_p50_ms"] = figures["ttft_p50_ms"]
        out[f"hybrid.{where}.ttft_p99_ms"] = figures["ttft_p99_ms"]
    for tier in data["tiers"]:
        out[f"hybrid.{tier['group']}.requests"] = float(tier["n"])
        out[f"hybrid.{tier['group']}.ttft_p50_ms"] = tier["ttft_p50_ms"]
        out[f"hybrid.{tier['group']}.ttft_p99_ms"] = tier["ttft_p99_ms"]
    return out


# -- the tables -----------------------------------------------------------------------------


def markdown(data: Mapping[str, Any]) -> str:
    plan, overall, cost = data["plan"], data["overall"], data["cost"]
    lines = [
        f"{overall['n']} requests to model `auto`, open loop at {plan['rate']:g}/s for "
        f"{plan['seconds']:g} s, answers of {plan['answer_tokens']} tokens; "
        f"{overall['failures']} failed. **{data['local_share']:.1%} served locally** "
        "(the seed: 85-95%).",
        "",
        "| tier (alias) | locality | simulated as | requests | share | TTFT p50 | TTFT p99 |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for t in data["tiers"]:
        lines.append(
            f"| {t['group']} | {t['locality']} | {t['profile']} | {t['n']} | {t['share']:.1%} "
            f"| {_ms(t['ttft_p50_ms'])} | {_ms(t['ttft_p99_ms'])} |"
        )
    for where, figures in data["by_locality"].items():
        lines.append(
            f"| *all {where}* | {where} | | {figures['n']} | | {_ms(figures['ttft_p50_ms'])} "
            f"| {_ms(figures['ttft_p99_ms'])} |"
        )
    lines.append(
        f"| **overall** | | | {overall['n']} | | **{_ms(overall['ttft_p50_ms'])}** "
        f"| **{_ms(overall['ttft_p99_ms'])}** |"
    )
    lines += [
        "",
        "| category | weight | where the seed's rule sends it | served by |",
        "|---|---:|---|---|",
    ]
    for c in data["categories"]:
        served = ", ".join(f"{g} {n}" for g, n in sorted(c["served_by"].items()))
        lines.append(f"| {c['name']} | {c['weight']:g} | {c['note']} | {served} |")
    lines += [
        "",
        f"Cloud cost of this run: **${cost['cloud_usd']:.4f}** vs **${cost['baseline_usd']:.4f}** "
        f"with every request sent to {cost['baseline_model']} at the same token counts: "
        f"**{cost['saving']:.1%} lower** (the seed claims 80-95% lower). Cloud requests carried "
        f"{cost['cloud_prompt_tokens']:,} of {cost['prompt_tokens']:,} prompt tokens. "
        f"List prices as of {cost['prices_as_of']}.",
    ]
    if data["errors"]:
        lines += ["", "Failures: " + "; ".join(f"{n} x {e}" for e, n in data["errors"].items())]
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:,.1f} ms" if value == value else "-"


SCENARIO = Scenario(
    name="hybrid",
    title="Hybrid: the seed's tiers behind one sidecar, auto routing",
    steps=lambda scale: int(PLANS[scale].seconds) + 2,
    run=run,
    time_limit=lambda scale: PLANS[scale].seconds + 60.0,
    markdown=markdown,
)
