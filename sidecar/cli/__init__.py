"""The `llm-sidecar` command line: one module per command; `main` dispatches."""

from sidecar.cli.main import main

__all__ = ["main"]
