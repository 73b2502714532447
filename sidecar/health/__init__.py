"""Who is up, how busy and how fast: the tracker, its active probes, and discovery."""

from sidecar.health.tracker import DeploymentHealth, HealthTracker, State

__all__ = ["DeploymentHealth", "HealthTracker", "State"]
