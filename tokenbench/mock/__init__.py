"""A built-in OpenAI-compatible streaming server with exactly known timing: the yardstick."""
