"""The egress: the one place where a request leaves the process.

Every attempt of every call (first tries, retries, fallbacks, hedges) goes
through `Egress.open`, so the rules that must hold whatever the plan says are
enforced here once: a sensitive request never reaches a deployment that is not
local. Budget reservation and settlement for cloud calls belong here too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from sidecar.config.model import Deployment
from sidecar.errors import PrivacyBlocked
from sidecar.providers import ProviderRegistry
from sidecar.types import ChatRequest, Chunk, Locality


class Egress:
    __slots__ = ("_providers",)

    def __init__(self, providers: ProviderRegistry) -> None:
        self._providers = providers

    def open(
        self, deployment: Deployment, request: ChatRequest, *, sensitive: bool
    ) -> AsyncGenerator[Chunk, None]:
        """The upstream stream of `request` on `deployment`; raises PrivacyBlocked when
        a sensitive request would leave for a deployment that is not local."""
        if sensitive and deployment.locality is not Locality.LOCAL:
            raise PrivacyBlocked(
                f"request held back for privacy: refused to send a sensitive request to "
                f"cloud deployment {deployment.id!r}"
            )
        return self._providers.stream(deployment, request)
