"""What the running process says about itself beyond its routes: the configuration it
serves (hash and load time), its reloads, its worker count, and whether it drains.

Per process: with `serve --workers N` each worker keeps its own (see docs/operations.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from sidecar import __version__
from sidecar.types import ProcessStatus


@dataclass(slots=True)
class Operations:
    config_hash: str = ""
    loaded_at: float = field(default_factory=time.time)
    workers: int = 1
    reloads_applied: int = 0
    reloads_rejected: int = 0
    last_reload_error: str = ""
    draining: bool = False

    def loaded(self, config_hash: str) -> None:
        self.config_hash = config_hash
        self.loaded_at = time.time()

    def status(self) -> ProcessStatus:
        return ProcessStatus(
            version=__version__,
            config_hash=self.config_hash,
            config_loaded_at=self.loaded_at,
            workers=self.workers,
            pid=os.getpid(),
            reloads_applied=self.reloads_applied,
            reloads_rejected=self.reloads_rejected,
            last_reload_error=self.last_reload_error,
            draining=self.draining,
        )
