"""llm-sidecar: a hybrid local/cloud LLM router that runs next to each service."""

__version__ = "0.1.0"
