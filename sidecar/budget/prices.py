"""What a token costs on each deployment: its own model_info prices, else the bundled table.

Prices are held as integer pico-dollars (1e-12 USD) per token, so a call's cost is an exact
integer sum; the ledger counts in micro-dollars, each call's cost rounded up. The table
of list prices is data (`prices.yaml`, dated, with its sources), not code. A cloud
deployment with no price from either place is a configuration error unless it is marked
free (`model_info.free: true`): a cap is worthless if a call can cost an unknown amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from sidecar.config.model import Deployment, SidecarConfig
from sidecar.errors import ConfigError
from sidecar.types import Locality

PRICES_FILE = "prices.yaml"
PICO_PER_USD = 10**12
PICO_PER_MICRO = 10**6
_PER_MILLION = PICO_PER_USD // 10**6  # pico-dollars per token at $1 per 1M tokens


@dataclass(frozen=True, slots=True)
class Price:
    """Per-token rates in pico-dollars; `long_*` apply once the prompt exceeds `long_above`."""

    input: int = 0
    output: int = 0
    cached_input: int = 0
    # Prompt tokens written to the provider's cache (Anthropic bills them above input);
    # 0: at the input rate.
    cache_write_input: int = 0
    max_output: int | None = None
    long_above: int | None = None
    long_input: int = 0
    long_output: int = 0
    source: str = ""

    @property
    def free(self) -> bool:
        return not (self.input or self.output or self.cached_input or self.long_input)

    def cost(self, prompt: int, completion: int, cached: int = 0, written: int = 0) -> int:
        """Pico-dollars for a call; `cached` (read from the cache) and `written` (to it)
        prompt tokens are part of `prompt`."""
        inp, out = self.input, self.output
        if self.long_above is not None and prompt > self.long_above:
            inp, out = self.long_input, self.long_output
        cached = min(max(cached, 0), prompt)
        written = min(max(written, 0), prompt - cached)
        cached_rate = self.cached_input if self.cached_input else inp
        # Never below the input rate in force (the long-context one may be higher).
        write_rate = max(self.cache_write_input, inp)
        plain = prompt - cached - written
        return plain * inp + cached * cached_rate + written * write_rate + completion * out

    def worst(self, prompt: int, completion: int) -> int:
        """The most a call of these bounds can cost: every prompt token written to the
        cache when writing costs more than reading the prompt plainly."""
        return self.cost(prompt, completion, written=prompt)


def per_token(usd: float) -> int:
    """A configured USD-per-token price in pico-dollars (rounded: the price is exact data)."""
    return round(usd * PICO_PER_USD)


def micros(pico: int) -> int:
    """Pico-dollars as ledger micro-dollars, rounded up so a cap is never undercounted."""
    return -(-pico // PICO_PER_MICRO)


@dataclass(frozen=True, slots=True)
class PriceTable:
    as_of: str = ""
    exact: Mapping[str, Price] = field(default_factory=dict)
    prefixes: tuple[tuple[str, Price], ...] = ()  # longest prefix first

    def lookup(self, model: str) -> Price | None:
        name = model.lower()
        found = self.exact.get(name)
        if found is not None:
            return found
        for prefix, price in self.prefixes:
            if name.startswith(prefix):
                return price
        return None

    @classmethod
    def from_data(cls, data: object, source: str = PRICES_FILE) -> PriceTable:
        """Build from parsed YAML; ConfigError lists every malformed entry."""
        if not isinstance(data, Mapping) or not isinstance(data.get("prices"), Mapping):
            raise ConfigError(["prices: expected a mapping"], source)
        problems: list[str] = []
        exact: dict[str, Price] = {}
        prefixes: list[tuple[str, Price]] = []
        for name, entry in data["prices"].items():
            if not isinstance(name, str) or not name.strip("*"):
                problems.append(f"prices: expected a model name, got {name!r}")
                continue
            price = _entry(f"prices.{name}", entry, problems)
            if price is None:
                continue
            if name.endswith("*"):
                prefixes.append((name[:-1].lower(), price))
            else:
                exact[name.lower()] = price
        if problems:
            raise ConfigError(problems, source)
        prefixes.sort(key=lambda item: len(item[0]), reverse=True)
        return cls(str(data.get("as_of", "")), exact, tuple(prefixes))


def _entry(path: str, entry: object, problems: list[str]) -> Price | None:
    if not isinstance(entry, Mapping):
        problems.append(f"{path}: expected a mapping")
        return None

    def rate(key: str, table: Mapping[str, Any] = entry, required: bool = True) -> int:
        value = table.get(key)
        if value is None and not required:
            return 0
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            problems.append(f"{path}.{key}: expected a price in USD per 1M tokens, got {value!r}")
            return 0
        return round(value * _PER_MILLION)

    max_output = entry.get("max_output")
    if max_output is not None and (isinstance(max_output, bool) or not isinstance(max_output, int)):
        problems.append(f"{path}.max_output: expected an integer, got {max_output!r}")
        max_output = None
    long = entry.get("long_context")
    long_above = None
    long_input = long_output = 0
    if isinstance(long, Mapping):
        above = long.get("above")
        if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
            problems.append(f"{path}.long_context.above: expected a token count, got {above!r}")
        else:
            long_above = above
        long_input, long_output = rate("input", long), rate("output", long)
    elif long is not None:
        problems.append(f"{path}.long_context: expected a mapping")
    return Price(
        input=rate("input"),
        output=rate("output"),
        cached_input=rate("cached_input", required=False),
        cache_write_input=rate("cache_write_input", required=False),
        max_output=max_output,
        long_above=long_above,
        long_input=long_input,
        long_output=long_output,
        source=str(entry.get("source", "")),
    )


def load_price_table() -> PriceTable:
    """The list prices shipped with the package."""
    text = resources.files("sidecar.budget").joinpath(PRICES_FILE).read_text(encoding="utf-8")
    return PriceTable.from_data(yaml.safe_load(text))


def resolve_prices(config: SidecarConfig, table: PriceTable | None = None) -> dict[str, Price]:
    """Every deployment's price by id; ConfigError names each cloud one without a price."""
    table = load_price_table() if table is None else table
    prices: dict[str, Price] = {}
    problems: list[str] = []
    for deployment in config.deployments:
        price = _price_of(deployment, table)
        if price is None:
            problems.append(
                f"model_list ({deployment.id}, model {deployment.upstream_model!r}): a cloud "
                "deployment needs a price: set model_info.input_cost_per_token and "
                "output_cost_per_token, or model_info.base_model to a model the price table "
                f"knows (as of {table.as_of}), or mark it model_info.free: true"
            )
            continue
        prices[deployment.id] = price
    if problems:
        raise ConfigError(problems, config.source)
    return prices


def _price_of(deployment: Deployment, table: PriceTable) -> Price | None:
    listed = table.lookup(deployment.upstream_model)
    if listed is None and deployment.base_model:
        listed = table.lookup(deployment.base_model)
    own_in, own_out = deployment.input_cost_per_token, deployment.output_cost_per_token
    if own_in is not None or own_out is not None:
        base = listed or Price()
        cached = deployment.cache_read_input_token_cost
        return Price(
            input=per_token(own_in) if own_in is not None else base.input,
            output=per_token(own_out) if own_out is not None else base.output,
            cached_input=per_token(cached) if cached is not None else 0,
            max_output=base.max_output,
            source="model_info",
        )
    if deployment.locality is Locality.LOCAL:
        return Price(source="local")
    if listed is not None:
        return listed
    if deployment.free:
        return Price(source="free")
    return None
