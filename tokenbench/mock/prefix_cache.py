"""The mock's prefix cache: what share of a prompt it has seen before, in whole blocks, as vLLM's
automatic prefix caching counts it (blocks of 16 tokens; the mock's tokens are the prompt's words).

A prompt's blocks are chained (each block's key covers every block before it), so only a shared
*prefix* hits, never the same words further on. The mock then shortens the request's TTFT in
proportion and reports the cached count in usage and in its /metrics.
"""

from __future__ import annotations

BLOCK_WORDS = 16
MAX_BLOCKS = 1_000_000  # a bound on the mock's memory: past it, the cache starts empty again


class PrefixCache:
    def __init__(self) -> None:
        self._blocks: set[int] = set()

    def hit_and_store(self, words: list[str]) -> int:
        """Words of ``words`` served from the cache (whole blocks of an already seen prefix); stores
        the prompt's blocks."""
        key, cached, hitting = 0, 0, True
        if len(self._blocks) > MAX_BLOCKS:
            self._blocks.clear()
        for start in range(0, len(words) - BLOCK_WORDS + 1, BLOCK_WORDS):
            key = hash((key, tuple(words[start:start + BLOCK_WORDS])))
            if hitting and key in self._blocks:
                cached += BLOCK_WORDS
            else:
                hitting = False
                self._blocks.add(key)
        return cached
