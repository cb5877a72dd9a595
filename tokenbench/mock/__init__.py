"""A built-in OpenAI-compatible streaming server with exactly known timing: the yardstick."""

# The mock server's first line on stdout, followed by its base URL (kept here, away from aiohttp,
# so that `tokenbench run` can read it without importing the server).
READY_LINE_PREFIX = "listening on "
# The base URL a mock-mode endpoint carries until the mock server it runs against has a port.
PLACEHOLDER_BASE_URL = "http://127.0.0.1:0/v1"

# What a faulty streamed response does (after ``fault_after`` tokens, where that applies). Kept here for
# the same reason: the CLI lists them without importing the server.
FAULTS = {
    "hang": "send nothing at all, not even the response headers",
    "stall": "stop sending and keep the connection open",
    "drop": "close the connection abruptly",
    "garbage": "send a data line that is not JSON, then carry on",
    "error": "send an error chunk (OpenRouter's, finish_reason error) and close",
    "http_error": "answer HTTP 500 with an error body",
    "rate_limit": "answer HTTP 429 with Retry-After",
    "overloaded": "answer HTTP 503 with Retry-After",
}
# The error type tokenbench gives each fault's requests (docs/failure-semantics.md), without retries.
FAULT_ERROR_TYPES = {
    "hang": "ttft_timeout",
    "stall": "idle_timeout",
    "drop": "connection_closed",
    "garbage": "malformed_chunk",
    "error": "stream_error",
    "http_error": "http_error",
    "rate_limit": "rate_limited",
    "overloaded": "http_error",
}
