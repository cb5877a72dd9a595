"""Counting prompt tokens: with a real tokenizer when one is at hand offline, else an estimate that says so.

A Hugging Face ``tokenizer.json`` (the file every HF model ships, MiniMax M2.5's included) is read
with the ``tokenizers`` package (``pip install 'tokenbench[tokenizer]'``). Without one, lengths are
estimated at 4 characters per token, OpenAI's rule of thumb for English, and every result says
they are approximate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tokenbench.shared.errors import TokenbenchError

CHARS_PER_TOKEN = 4.0


class TokenCounter(Protocol):
    name: str  # the tokenizer file, or "estimate"
    exact: bool

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, tokens: int) -> str:
        """The longest prefix of ``text`` with at most ``tokens`` tokens (as near as decoding allows)."""
        ...


class HuggingFaceTokenizer:
    exact = True

    def __init__(self, path: Path) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError:
            raise TokenbenchError("--tokenizer needs the tokenizers package: pip install 'tokenbench[tokenizer]'") \
                from None
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises plain Exceptions for unreadable or malformed files
            raise TokenbenchError(f"cannot load tokenizer {path}: {exc}") from None
        self.name = str(path)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def truncate(self, text: str, tokens: int) -> str:
        ids = self._tokenizer.encode(text, add_special_tokens=False).ids
        return self._tokenizer.decode(ids[:tokens])


class EstimatedCounter:
    name = "estimate"
    exact = False

    def count(self, text: str) -> int:
        return max(1, round(len(text) / CHARS_PER_TOKEN)) if text else 0

    def truncate(self, text: str, tokens: int) -> str:
        return text[: int(tokens * CHARS_PER_TOKEN)]


def load_counter(path: Path | None) -> TokenCounter:
    return EstimatedCounter() if path is None else HuggingFaceTokenizer(path)
