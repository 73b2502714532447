"""Context windows the configuration leaves unknown, asked of Ollama once at start-up.

The usable window of an Ollama model is, in order: what the loaded runner
allocated (`/api/ps` `context_length`), the Modelfile's `num_ctx` (`/api/show`
`parameters`), and the model's trained maximum (`/api/show` `model_info`
`<arch>.context_length`). A discovered window is used for routing only: it is
never sent back as `num_ctx`, which would make Ollama reload the model with a
different allocation.

Discovery is bounded in time; an Ollama that does not answer leaves the window
unknown and start-up goes on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re

from sidecar.config.model import Deployment, ProviderKind, SidecarConfig
from sidecar.errors import UpstreamError
from sidecar.providers.http import HttpPool, NotOffered, fetch_json
from sidecar.providers.ollama import listed_names

log = logging.getLogger("sidecar.health.discovery")

_NUM_CTX = re.compile(r"^\s*num_ctx\s+(\d+)\s*$", re.MULTILINE)


async def discover_context_windows(
    config: SidecarConfig, pool: HttpPool, within: float = 3.0
) -> SidecarConfig:
    """The config with unknown Ollama context windows filled in where Ollama says."""
    unknown = [
        d
        for d in config.deployments
        if d.provider is ProviderKind.OLLAMA and d.context_window is None and not d.simulated
    ]
    if not unknown:
        return config
    found: dict[str, int] = {}

    async def one(deployment: Deployment) -> None:
        try:
            async with asyncio.timeout(within):
                window = await _window(pool, deployment)
        except (UpstreamError, TimeoutError) as exc:
            log.warning("%s: context window not discovered: %s", deployment.id, exc)
            return
        if window is not None:
            found[deployment.id] = window
            log.info("%s: context window %s discovered from Ollama", deployment.id, window)

    await asyncio.gather(*(one(d) for d in unknown))
    return config.with_deployments(
        {
            d.id: dataclasses.replace(d, context_window=found[d.id], discovered_window=True)
            for d in unknown
            if d.id in found
        }
    )


async def _window(pool: HttpPool, deployment: Deployment) -> int | None:
    model = deployment.upstream_model
    names = listed_names(model)
    try:
        loaded = await fetch_json(pool, deployment, "GET", "/api/ps")
    except NotOffered:
        loaded = {}  # servers without /api/ps still answer /api/show
    running_models = loaded.get("models")
    for running in running_models if isinstance(running_models, list) else ():
        if isinstance(running, dict) and running.get("name") in names:
            allocated = running.get("context_length")
            if isinstance(allocated, int) and allocated > 0:
                return allocated
    shown = await fetch_json(pool, deployment, "POST", "/api/show", body={"model": model})
    match = _NUM_CTX.search(str(shown.get("parameters") or ""))
    if match:
        return int(match.group(1))
    info = shown.get("model_info")
    if not isinstance(info, dict):
        return None
    arch = info.get("general.architecture")
    trained = info.get(f"{arch}.context_length") if arch else None
    return trained if isinstance(trained, int) and trained > 0 else None
