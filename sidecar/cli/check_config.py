"""`llm-sidecar check-config`: validate a configuration and print its models."""

from __future__ import annotations

from sidecar.config import load_config
from sidecar.config.table import render_model_table
from sidecar.routing import compile_routing


def check_config(path: str) -> str:
    """The model table of the configuration at `path`; raises ConfigError naming each problem.

    The routing sections are compiled too, so that what `serve` would refuse is refused here.
    """
    # The table lists the warnings; logging them too would print each one twice.
    config = load_config(path, log_warnings=False)
    compile_routing(config)
    return render_model_table(config)
