"""What the sidecar reports about itself, off the token path."""

from sidecar.telemetry.metrics import Telemetry

__all__ = ["Telemetry"]
