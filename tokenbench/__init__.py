"""tokenbench: measure how fast LLM endpoints stream tokens."""

__version__ = "0.1.0"
