"""What the sidecar reports about itself, off the token path: metrics, traces, logs."""

from sidecar.telemetry.report import CallReport
from sidecar.telemetry.telemetry import Telemetry

__all__ = ["CallReport", "Telemetry"]
