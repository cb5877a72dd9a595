"""The endpoint settings every job carries: where and how a worker sends its request, made from a
mode's preset (shared/presets.py) and the flags. Serialisable and secret-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from tokenbench.shared.errors import UsageProblem
from tokenbench.shared.presets import PRESETS
from tokenbench.shared.records import from_known_fields

DEFAULT_MAX_TOKENS = 256
# Each API's path under the base URL: OpenAI-compatible chat completions, Anthropic Messages, the
# (legacy) text completions and OpenAI's Responses API. Their dialects: worker/dialects.py.
API_PATHS = {"openai": "/chat/completions", "anthropic": "/messages", "completions": "/completions",
             "responses": "/responses"}
APIS = tuple(API_PATHS)
REASONING_EFFORTS = ("minimal", "low", "medium", "high")
MAX_TOKENS_PARAMS = ("max_tokens", "max_completion_tokens")  # the chat-completions field for --max-tokens
ANTHROPIC_VERSION = "2023-06-01"
# Header names that carry credentials. `--header` values travel through Redis with the jobs, so
# these are refused there: the key goes in the workers' environment and --api-key-header names it.
# Words matched after dropping '-' and '_': "api_key", "X-Api-Key", "Ocp-Apim-Subscription-Key",
# "X-Access-Key", "X-Auth", "x-goog-api-key", "Proxy-Authorization", session and signature headers.
_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie", "password", "passwd", "credential",
                        "session", "signature", "bearer")


def is_secret_header(name: str) -> bool:
    squeezed = name.lower().replace("-", "").replace("_", "")
    return any(word in squeezed for word in _SECRET_HEADER_WORDS)


DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_TTFT_TIMEOUT_S = 120.0
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_TOTAL_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how a worker sends one streamed chat completion. Serialisable, secret-free."""

    mode: str
    base_url: str
    model: str
    max_tokens: int = DEFAULT_MAX_TOKENS
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ttft_timeout_s: float = DEFAULT_TTFT_TIMEOUT_S  # request sent -> first token
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S  # longest silence after the first token
    total_timeout_s: float = DEFAULT_TOTAL_TIMEOUT_S  # request sent -> end of stream
    extra_body: dict[str, Any] = field(default_factory=dict)  # merged into every request body
    max_retries: int = 0  # retries of a 429/503 response; reruns of a request whose worker died
    api: str = "openai"  # one of APIS
    reasoning_effort: str | None = None  # OpenRouter's reasoning.effort, else reasoning_effort
    ignore_eos: bool = False  # vLLM/SGLang: generate max_tokens whatever the model says
    api_key_header: str | None = None  # send the API key as this header's whole value, not as a Bearer token
    max_response_bytes: int = 64 * 2**20  # a larger body fails the request (response_too_large)
    max_tokens_param: str = "max_tokens"  # or max_completion_tokens (OpenAI's newer models accept only that)
    # The run counts tokens with --tokenizer: a response without usage keeps its text for the aggregator to count.
    keep_text_without_usage: bool = False

    @property
    def request_url(self) -> str:
        return self.base_url.rstrip("/") + API_PATHS[self.api]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Endpoint:
        return from_known_fields(cls, data)

    def with_base_url(self, base_url: str) -> Endpoint:
        return replace(self, base_url=validate_base_url(base_url))


def validate_base_url(url: str) -> str:
    """Return the URL without a trailing slash, or raise a usage error naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageProblem(f"{url!r} is not an http(s) URL with a host", "--base-url")
    if parts.username is not None or parts.password is not None:
        # The base URL travels through Redis with every job and is written into the result.
        raise UsageProblem("credentials in the URL would travel through Redis and into the results: "
                           "give the key with --api-key or TOKENBENCH_API_KEY", "--base-url")
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise UsageProblem(f"{url!r}: {exc}", "--base-url") from None
    return url.rstrip("/")


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = DEFAULT_CONNECT_TIMEOUT_S
    ttft_s: float = DEFAULT_TTFT_TIMEOUT_S
    idle_s: float = DEFAULT_IDLE_TIMEOUT_S
    total_s: float = DEFAULT_TOTAL_TIMEOUT_S


def resolve_endpoint(
    mode: str,
    base_url: str | None = None,
    model: str | None = None,
    max_tokens: int | None = None,
    *,
    timeouts: Timeouts = Timeouts(),
    headers: dict[str, str] | None = None,
    extra_body: dict[str, Any] | None = None,
    max_retries: int = 0,
    api: str = "openai",
    reasoning_effort: str | None = None,
    ignore_eos: bool = False,
    api_key_header: str | None = None,
    max_response_bytes: int = 64 * 2**20,
    max_tokens_param: str = "max_tokens",
    keep_text_without_usage: bool = False,
    placeholder_base_url: str | None = None,
) -> Endpoint:
    """Apply the mode's preset, then the flags. ``placeholder_base_url`` stands in for a URL known later."""
    preset = PRESETS[mode]
    url = base_url or preset.base_url or placeholder_base_url
    if url is None:
        raise UsageProblem(f"--base-url is required with --mode {mode}")
    chosen_model = model or preset.model
    if chosen_model is None:
        raise UsageProblem(f"--model is required with --mode {mode}")
    return Endpoint(
        mode=mode,
        base_url=validate_base_url(url),
        model=chosen_model,
        max_tokens=max_tokens or DEFAULT_MAX_TOKENS,
        headers={**preset.headers, **(headers or {})},
        connect_timeout_s=timeouts.connect_s,
        ttft_timeout_s=timeouts.ttft_s,
        idle_timeout_s=timeouts.idle_s,
        total_timeout_s=timeouts.total_s,
        extra_body=dict(extra_body or {}),
        max_retries=max_retries,
        api=api,
        reasoning_effort=reasoning_effort,
        ignore_eos=ignore_eos,
        api_key_header=api_key_header,
        max_tokens_param=max_tokens_param,
        keep_text_without_usage=keep_text_without_usage,
        max_response_bytes=max_response_bytes,
    )
