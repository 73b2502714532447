"""Which provider serves a LiteLLM model string, where it lives, and whether that is local.

LiteLLM names a deployment by `<provider>/<model>` (`ollama/llama3.2:8b`) or, for the
big clouds, by the bare model name (`gpt-4o`, `claude-sonnet-4-20250514`). Locality is
inferred from the api_base host alone, without DNS: a lookup at load time would be slow,
could leak the host names, and would make the privacy decision depend on the network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from sidecar.config.model import ProviderKind
from sidecar.redaction import redact
from sidecar.types import Locality

OLLAMA_API_BASE = "http://localhost:11434"
OPENAI_API_BASE = "https://api.openai.com/v1"
ANTHROPIC_API_BASE = "https://api.anthropic.com"
GEMINI_API_BASE = "https://generativelanguage.googleapis.com"


@dataclass(frozen=True, slots=True)
class _Prefix:
    provider: ProviderKind
    default_api_base: str | None  # None: the config must give one


_PREFIXES: dict[str, _Prefix] = {
    "ollama/": _Prefix(ProviderKind.OLLAMA, OLLAMA_API_BASE),
    "ollama_chat/": _Prefix(ProviderKind.OLLAMA, OLLAMA_API_BASE),
    "openai/": _Prefix(ProviderKind.OPENAI, OPENAI_API_BASE),
    "hosted_vllm/": _Prefix(ProviderKind.OPENAI, None),
    "anthropic/": _Prefix(ProviderKind.ANTHROPIC, ANTHROPIC_API_BASE),
    "gemini/": _Prefix(ProviderKind.GEMINI, GEMINI_API_BASE),
}

# Bare model names LiteLLM routes to a cloud without a prefix, by name start.
_BARE: tuple[tuple[tuple[str, ...], _Prefix], ...] = (
    (("gpt-", "o1", "o3", "o4", "chatgpt-"), _Prefix(ProviderKind.OPENAI, OPENAI_API_BASE)),
    (("claude-",), _Prefix(ProviderKind.ANTHROPIC, ANTHROPIC_API_BASE)),
    (("gemini-",), _Prefix(ProviderKind.GEMINI, GEMINI_API_BASE)),
)

SUPPORTED_MODELS = (
    "use a provider prefix ("
    + ", ".join(_PREFIXES)
    + ") or a bare OpenAI (gpt-*, o1*, o3*, o4*, chatgpt-*), Anthropic (claude-*) "
    "or Gemini (gemini-*) model name"
)

_LOCAL_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    )
)


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    provider: ProviderKind
    upstream_model: str  # the name sent upstream, provider prefix removed
    prefix: str  # as written, e.g. "hosted_vllm/"; "" for a bare name
    default_api_base: str | None  # None when the config must give an api_base


def resolve_model(model: str) -> ResolvedModel:
    """Resolve a LiteLLM model string; ValueError says what is wrong with it."""
    for prefix, spec in _PREFIXES.items():
        if model.startswith(prefix):
            upstream = model[len(prefix) :]
            if not upstream.strip():
                raise ValueError(f"model name missing after {prefix!r}")
            return ResolvedModel(spec.provider, upstream, prefix, spec.default_api_base)
    for starts, spec in _BARE:
        if model.startswith(starts):
            return ResolvedModel(spec.provider, model, "", spec.default_api_base)
    raise ValueError(f"unsupported model {model!r}: {SUPPORTED_MODELS}")


@dataclass(frozen=True, slots=True)
class ApiBase:
    url: str  # without credentials, without trailing slashes
    auth: tuple[str, str] | None  # (user, password) the URL carried, if any


def normalize_api_base(url: str) -> ApiBase:
    """Check an http(s) URL with a host, split off its credentials and drop trailing
    slashes; ValueError (never showing the credentials) if unusable."""
    shown = redact(url.strip(), limit=200)
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises on a malformed port
    except ValueError:
        raise ValueError(f"invalid URL {shown!r}: malformed host or port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {shown!r}")
    auth = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        auth = (unquote(user), unquote(password))
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return ApiBase(clean.rstrip("/"), auth)


def is_local_host(host: str) -> bool:
    """True for loopback, private and link-local addresses and single-label host names.

    A single-label name (`ollama`, `vllm`) only resolves through a local resolver such
    as a container network, so it is taken as local; anything with a dot may be public.
    """
    host = host.strip("[]").lower()
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return bool(host) and "." not in host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _LOCAL_NETWORKS)


def infer_locality(provider: ProviderKind, api_base: str) -> Locality:
    """Ollama is local; a cloud-protocol provider is local only when its host is."""
    if provider is ProviderKind.OLLAMA:
        return Locality.LOCAL
    host = urlsplit(api_base).hostname or ""
    return Locality.LOCAL if is_local_host(host) else Locality.CLOUD
