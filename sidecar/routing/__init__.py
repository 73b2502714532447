"""Pure routing: request + snapshots -> an ordered plan of candidate deployments."""

from sidecar.routing.plan import Candidate, RoutePlan, plan

__all__ = ["Candidate", "RoutePlan", "plan"]
