"""Configuration: LiteLLM-compatible YAML, resolved into frozen data once."""

from sidecar.config.loader import load_config, load_config_hashed, parse_config
from sidecar.config.model import (
    Deployment,
    GeneralSettings,
    LitellmSettings,
    ModelGroup,
    ProviderKind,
    RetryPolicy,
    RouterSettings,
    SidecarConfig,
    Timeouts,
)

__all__ = [
    "Deployment",
    "GeneralSettings",
    "LitellmSettings",
    "ModelGroup",
    "ProviderKind",
    "RetryPolicy",
    "RouterSettings",
    "SidecarConfig",
    "Timeouts",
    "load_config",
    "load_config_hashed",
    "parse_config",
]
