"""The quality loop: shadow sampling of locally served calls, and the weekly review."""

from sidecar.quality.shadow import (
    SHADOW_KEY,
    ShadowAnswer,
    ShadowCapture,
    ShadowRun,
    ShadowSampler,
    is_shadow,
)

__all__ = ["SHADOW_KEY", "ShadowAnswer", "ShadowCapture", "ShadowRun", "ShadowSampler", "is_shadow"]
