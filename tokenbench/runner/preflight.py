"""One short, unmeasured request before a run, so that a wrong key, URL or model fails in a second
with the status, the URL and a hint, instead of after hundreds of requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

import aiohttp

from tokenbench.producer.prompts import Prompt, as_messages
from tokenbench.shared.endpoint import Endpoint
from tokenbench.shared.errors import TokenbenchError
from tokenbench.shared.presets import api_key_env_names
from tokenbench.shared.records import JobSpec, RequestRecord
from tokenbench.worker.measure import measure_request

# What a whole run would only repeat: the server said no to the key, or to the URL or model, or is not there.
FATAL_STATUSES = frozenset({401, 403, 404})
FATAL_ERROR_TYPES = frozenset({"connect_error", "connect_timeout"})
# A server that takes longer than this to answer one token is left to the run and its own timeouts.
PREFLIGHT_TIMEOUT_S = 30.0
SKIP_HINT = "--no-preflight skips this check"


@dataclass(frozen=True)
class PreflightResult:
    record: RequestRecord
    warning: str | None  # a failure that does not stop the run (429, 5xx, a slow answer)


def preflight(endpoint: Endpoint, prompt: Prompt, api_key: str | None) -> PreflightResult:
    """Send ``prompt`` once with one output token, through the workers' own request code; raise a
    TokenbenchError for a failure the run would only repeat."""
    quick = replace(endpoint, max_retries=0, ttft_timeout_s=min(endpoint.ttft_timeout_s, PREFLIGHT_TIMEOUT_S),
                    total_timeout_s=min(endpoint.total_timeout_s, PREFLIGHT_TIMEOUT_S))
    spec = JobSpec(run_id="preflight", index=0, prompt_id=prompt.id, category=prompt.category,
                   messages=as_messages(prompt), endpoint=quick.to_dict(), max_tokens=1)
    record = asyncio.run(_send(spec, api_key))
    if record.success:
        return PreflightResult(record, None)
    problem = describe(record, endpoint)
    if record.http_status in FATAL_STATUSES or record.error_type in FATAL_ERROR_TYPES:
        raise TokenbenchError(f"{problem}; {SKIP_HINT}")
    return PreflightResult(record, f"{problem}; going on with the run")


async def _send(spec: JobSpec, api_key: str | None) -> RequestRecord:
    async with aiohttp.ClientSession() as session:
        return await measure_request(session, spec, api_key)


def describe(record: RequestRecord, endpoint: Endpoint) -> str:
    """The failure in one line: what was asked, what came back, and what to try."""
    detail = (record.error or record.error_type or "no answer")[:300]
    hint = _hint(record, endpoint)
    return f"pre-flight request to {endpoint.request_url} failed: {detail}" + (f" ({hint})" if hint else "")


def _hint(record: RequestRecord, endpoint: Endpoint) -> str | None:
    if record.http_status in (401, 403):
        names = " or ".join(api_key_env_names(endpoint.mode))
        return f"check the API key: --api-key or {names}"
    if record.http_status == 404:
        path = urlsplit(endpoint.base_url).path.rstrip("/")
        if endpoint.api != "anthropic" and not path.endswith("/v1"):
            return f"did you mean --base-url {endpoint.base_url}/v1?"
        return f"check --base-url and --model {endpoint.model!r}"
    if record.error_type in FATAL_ERROR_TYPES:
        parts = urlsplit(endpoint.base_url)
        return f"is a server listening at {parts.scheme}://{parts.netloc}?"
    return None
