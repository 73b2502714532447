"""Every error the sidecar raises on purpose, in one tree.

    SidecarError                  expected outcomes; each carries an ErrorCode
    ├── InvalidRequest            the caller sent something malformed (names the field)
    │   └── ContextWindowExceeded no deployment can hold the prompt
    ├── UnknownModel              the alias is not configured (lists the known ones)
    ├── PrivacyBlocked            sensitive request and no local deployment left
    ├── BudgetExceeded            a spend cap leaves no deployment of the plan (names the cap)
    ├── SpendUnavailable          the spend log or ledger cannot be read for a report
    ├── NoDeploymentAvailable     every candidate failed before its first token
    └── UpstreamError             one deployment failed (names it)
        ├── UpstreamUnavailable   refused, reset, 5xx
        │   ├── UpstreamRateLimited  429: the upstream asked us to slow down
        │   └── UpstreamNotFound  404: the request names something this upstream lacks
        ├── UpstreamTimeout       connect / first token / idle gap / total
        │   └── CallerDeadline    the caller's own deadline ran out first
        ├── UpstreamMalformed     a reply that is not the protocol it should be
        │   └── AnswerTooLarge    a reply past the sidecar's size limit
        ├── UpstreamRejected      a 4xx that retrying elsewhere will not fix
        ├── ProviderUnsupported   no provider is built for that deployment
        │   └── EmbeddingUnsupported  the deployment's provider cannot embed
        ├── BudgetRefused         the egress could not reserve the call's worst case
        └── LedgerUnavailable     the spend ledger cannot be reached (cloud fails closed)

    ConfigError                   a configuration file that cannot be used

Front doors map ErrorCode to their own status codes (gRPC status, HTTP status);
the code here never imports either.

An UpstreamError says whether it is evidence against the deployment
(`deployment_fault`): only failures the deployment itself caused (it cannot be
reached, timed out on the sidecar's own limits, answered 5xx or 429, or spoke
garbage) count against its health. What the caller caused (a request the
upstream rejects, a deadline too short to answer in) does not, or one caller
could take a deployment away from every other.

Messages are the project's own words. A value a caller sent is quoted through
`redaction.shown` (cut short, control characters escaped); anything an upstream
sent is passed through `redaction.redact` by whoever builds the message.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from datetime import UTC, datetime

from sidecar.redaction import redact, shown


class ErrorCode(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    FAILED_PRECONDITION = "failed_precondition"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"
    UNIMPLEMENTED = "unimplemented"


class SidecarError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL
    # A stable machine-readable name for callers that tell failures apart by more than the
    # status (OpenAI's `code`), e.g. "context_length_exceeded"; None when the status says it.
    kind: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        # The request field that was wrong, when one was.
        self.field: str | None = None
        # Seconds after which a retry may succeed, when whoever failed said so.
        self.retry_after: float | None = None


class InvalidRequest(SidecarError):
    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class ContextWindowExceeded(InvalidRequest):
    kind = "context_length_exceeded"

    def __init__(self, needed: int, largest: int) -> None:
        super().__init__(
            "messages",
            f"the request needs about {needed:,} tokens but the largest context window "
            f"available is {largest:,}",
        )
        self.needed = needed
        self.largest = largest


class UnknownModel(SidecarError):
    code = ErrorCode.NOT_FOUND

    def __init__(self, model: str, known: Sequence[str]) -> None:
        listed = ", ".join(sorted(known)) or "(none configured)"
        super().__init__(f"unknown model {shown(model)}; known models: {listed}")
        self.model = model


class PrivacyBlocked(SidecarError):
    code = ErrorCode.FAILED_PRECONDITION


class BudgetExceeded(SidecarError):
    """A spend cap the call counts toward has no room left for it (LiteLLM's type)."""

    code = ErrorCode.RESOURCE_EXHAUSTED
    kind = "budget_exceeded"

    def __init__(
        self, budget: str, cap: float, spent: float, resets_at: float | None, model: str = ""
    ) -> None:
        resets = "never resets" if resets_at is None else f"resets at {_utc(resets_at)}"
        what = f" for model {model!r}" if model else ""
        super().__init__(
            f"Budget has been exceeded{what}: budget {budget!r} has spent ${spent:.6f} of "
            f"${cap:.6f} and {resets}"
        )
        self.budget = budget
        self.cap = cap
        self.spent = spent
        self.resets_at = resets_at  # unix time of the next reset, None when it never resets


class SpendUnavailable(SidecarError):
    code = ErrorCode.UNAVAILABLE


class ShuttingDown(SidecarError):
    """A call that arrived while the process drains: another instance should take it."""

    code = ErrorCode.UNAVAILABLE
    kind = "shutting_down"

    def __init__(self) -> None:
        super().__init__("the sidecar is shutting down; retry on another instance")
        self.retry_after = 1.0


class NoDeploymentAvailable(SidecarError):
    """Every candidate of the plan failed before producing a token."""

    code = ErrorCode.UNAVAILABLE

    def __init__(self, model: str, failures: Sequence[UpstreamError], note: str = "") -> None:
        detail = "; ".join(f.message for f in failures) or "no candidate deployment"
        super().__init__(f"no deployment of {model!r} could answer{note}: {detail}")
        self.failures = tuple(failures)
        # When every candidate failed the same way, that is the answer's status (all
        # timed out: a timeout; all rate-limited: a rate limit); otherwise unavailable.
        codes = {f.code for f in failures}
        if len(codes) == 1:
            self.code = codes.pop()
        hints = [f.retry_after for f in failures if f.retry_after is not None]
        # The soonest any failed deployment said it could take a call again.
        self.retry_after = min(hints) if hints else None


class UpstreamError(SidecarError):
    code = ErrorCode.UNAVAILABLE
    # Whether this failure is evidence that the deployment cannot serve (see the docstring).
    deployment_fault = True

    def __init__(self, deployment: str, problem: str, *, retry_after: float | None = None) -> None:
        # Whoever builds `problem` redacts what an upstream said with the deployment's own
        # keys; the patterns run once more here for any path that did not.
        super().__init__(f"deployment {deployment!r}: {redact(problem, limit=None)}")
        self.deployment = deployment
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    code = ErrorCode.UNAVAILABLE


class UpstreamRateLimited(UpstreamUnavailable):
    code = ErrorCode.RESOURCE_EXHAUSTED


class UpstreamNotFound(UpstreamUnavailable):
    """A 404: another deployment may have what this one lacks, but the request chose it."""

    deployment_fault = False


class UpstreamTimeout(UpstreamError):
    code = ErrorCode.DEADLINE_EXCEEDED


class CallerDeadline(UpstreamTimeout):
    """The caller's deadline, not one of the deployment's limits, ended the attempt."""

    deployment_fault = False


def timed_out(deployment: str, problem: str, *, callers: bool) -> UpstreamTimeout:
    """A timeout on the deployment's own limit, or (`callers`) on the caller's deadline."""
    return (CallerDeadline if callers else UpstreamTimeout)(deployment, problem)


class UpstreamMalformed(UpstreamError):
    code = ErrorCode.INTERNAL


class AnswerTooLarge(UpstreamMalformed):
    def __init__(self, deployment: str, limit: int) -> None:
        super().__init__(
            deployment,
            f"the answer ran past the limit of {limit:,} characters (limits.max_answer_chars)",
        )
        self.limit = limit


class UpstreamRejected(UpstreamError):
    code = ErrorCode.INVALID_ARGUMENT
    deployment_fault = False


class ProviderUnsupported(UpstreamError):
    code = ErrorCode.UNIMPLEMENTED


class EmbeddingUnsupported(ProviderUnsupported):
    """The deployment's protocol has no embeddings (or not of token ids): a fact about
    the protocol, not evidence that the deployment is down."""

    deployment_fault = False


class BudgetRefused(UpstreamError):
    """The worst case of a call on this deployment no longer fits a cap it counts toward."""

    code = ErrorCode.RESOURCE_EXHAUSTED
    kind = "budget_exceeded"

    def __init__(self, deployment: str, exceeded: BudgetExceeded) -> None:
        super().__init__(deployment, exceeded.message)
        self.exceeded = exceeded


class LedgerUnavailable(UpstreamError):
    """The spend ledger could not be asked, so a cloud call was not made."""

    code = ErrorCode.UNAVAILABLE


def _utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ConfigError(Exception):
    """One or more problems in a configuration, each prefixed with its key path."""

    def __init__(self, problems: Sequence[str], source: str = "") -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))
