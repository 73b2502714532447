"""Hot reload: the configuration file read again, validated, and swapped in whole.

Three things trigger it: SIGHUP (which `llm-sidecar reload` sends to the pid in
`serve --pid-file`), a change of the file seen by polling its stat every
`--reload-interval` seconds (so an edited file, or a Kubernetes ConfigMap whose mount
swaps a symlink, is picked up with no extra dependency), and tests calling `reload()`.

A file that fails to load or validate, or that changes what only a restart can change
(the master key, connection limits, telemetry, quality sampling, the front doors' ports,
where budgets are stored), is rejected:
the error is logged and counted, and the old configuration keeps serving. A valid one
replaces the old between two calls (`Engine.adopt`): calls in flight finish on the plan
they started with, new ones plan against the new configuration.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from sidecar.config import SidecarConfig, load_config_hashed
from sidecar.engine import Engine
from sidecar.errors import ConfigError
from sidecar.redaction import redact, redact_logs

log = logging.getLogger("sidecar.reload")

# What the process bound or opened at start, by the configuration's words.
_RESTART_ONLY: tuple[tuple[str, Callable[[SidecarConfig], object]], ...] = (
    ("general_settings.master_key", lambda c: c.general_settings.master_key),
    ("general_settings.database_url", lambda c: c.general_settings.database_url),
    ("limits", lambda c: c.limits),
    ("telemetry", lambda c: c.telemetry),
    # The shadow sampler and the Ollama door's listener are built at start-up.
    ("quality_monitoring", lambda c: c.quality),
    ("front_doors", lambda c: c.front_doors),
    (
        "budget storage (data_dir, ledger, redis, spend log settings)",
        lambda c: dataclasses.replace(c.budget, callers={}, default_caller=None),
    ),
)

# How long a changed file must stay unchanged before it is read.
_SETTLE = 0.1

Prepare = Callable[[SidecarConfig], Awaitable[SidecarConfig]]


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    outcome: str  # applied, unchanged or rejected
    config_hash: str  # of the configuration serving now
    problems: tuple[str, ...] = ()


async def _as_is(config: SidecarConfig) -> SidecarConfig:
    return config


class Reloader:
    """Reloads `path` into `engine`; `prepare` completes a loaded configuration as serve
    does at start (stand-in simulators, discovered context windows)."""

    def __init__(
        self,
        engine: Engine,
        path: str,
        *,
        prepare: Prepare = _as_is,
        interval: float = 2.0,
    ) -> None:
        self._engine = engine
        self._path = path
        self._prepare = prepare
        self._interval = interval
        self._lock = asyncio.Lock()
        self._seen = _stat(path)
        self._tasks: set[asyncio.Task[object]] = set()

    def hangup(self) -> None:
        """SIGHUP: reload in the background (signal handlers cannot await)."""
        self._spawn(self.reload("SIGHUP"))

    def start_watching(self) -> None:
        self._spawn(self.watch())

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.create_task(work, name="config reload")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop watching; a reload under way is cut short (the old configuration stays)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reload(self, why: str) -> ReloadOutcome:
        """Load, validate and swap in the file; one reload at a time."""
        async with self._lock:
            return await self._reload(why)

    async def _reload(self, why: str) -> ReloadOutcome:
        ops = self._engine.operations
        old = self._engine.config
        # What the watch compares against: the file as this reload reads it.
        self._seen = await asyncio.to_thread(_stat, self._path)
        try:
            config, digest = await asyncio.to_thread(load_config_hashed, self._path)
            if digest == ops.config_hash:
                log.info("configuration unchanged (%s): %s", why, digest[:12])
                self._engine.telemetry.config_reloaded("unchanged")
                return ReloadOutcome("unchanged", digest)
            fixed = [name for name, part in _RESTART_ONLY if part(config) != part(old)]
            if fixed:
                raise ConfigError(
                    [f"{', '.join(fixed)} changed: that takes a restart, not a reload"],
                    self._path,
                )
            config = await self._prepare(config)
            await self._engine.adopt(config)
        except (ConfigError, OSError) as exc:
            problems = _problems(exc, old)
            ops.reloads_rejected += 1
            ops.last_reload_error = "; ".join(problems)
            log.error(
                "configuration reload rejected (%s); still serving %s: %s",
                why,
                ops.config_hash[:12],
                ops.last_reload_error,
            )
            self._engine.telemetry.config_reloaded("rejected")
            return ReloadOutcome("rejected", ops.config_hash, problems)
        new_secrets = set(config.secrets).difference(old.secrets)
        if new_secrets:
            redact_logs(new_secrets)
        ops.loaded(digest)
        ops.reloads_applied += 1
        ops.last_reload_error = ""
        log.info(
            "configuration reloaded (%s): %s, %d aliases, %d deployments",
            why,
            digest[:12],
            len(config.groups),
            len(config.deployments),
        )
        self._engine.telemetry.config_reloaded("applied")
        return ReloadOutcome("applied", digest)

    async def watch(self) -> None:
        """Poll the file's stat; reload when it changes. Runs until cancelled."""
        if self._interval <= 0:
            return
        while True:
            await asyncio.sleep(self._interval)
            seen = await asyncio.to_thread(_stat, self._path)
            # A file being written in place (truncated, then filled) is read once it has
            # stopped changing, not half-written.
            while seen != self._seen:
                await asyncio.sleep(_SETTLE)
                settled = await asyncio.to_thread(_stat, self._path)
                if settled == seen:
                    break
                seen = settled
            if seen != self._seen:
                self._seen = seen
                if seen is not None:  # a file being replaced: wait for the new one
                    await self.reload("the file changed")


def _stat(path: str) -> tuple[int, int, int] | None:
    """What tells a changed file: inode (an editor or a ConfigMap swaps the file), size, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _problems(exc: ConfigError | OSError, old: SidecarConfig) -> tuple[str, ...]:
    if isinstance(exc, ConfigError):
        # The new file's secrets are unknown when it failed to load: the patterns still apply.
        return tuple(redact(problem, old.secrets, limit=500) for problem in exc.problems)
    return (f"cannot prepare the new configuration: {exc.strerror or type(exc).__name__}",)
