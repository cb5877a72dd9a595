"""A built-in OpenAI-compatible streaming server with exactly known timing: the yardstick."""

# The mock server's first line on stdout, followed by its base URL (kept here, away from aiohttp,
# so that `tokenbench run` can read it without importing the server).
READY_LINE_PREFIX = "listening on "
