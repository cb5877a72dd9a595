"""Synthetic prompts of controlled length, the same for the same seed.

Each prompt is words drawn from a fixed vocabulary until it holds the input length drawn for it
(normal around the mean, at least 1 token), counted with the run's tokenizer. Distinct words per
prompt keep a server's prefix cache from serving one prompt from another's, unless the run asks
for shared prefixes: then each prompt starts with one of G prefixes of N tokens (in turn), as vLLM's
prefix-repetition dataset does, and only the rest is its own. Output lengths are the workload's
business (see workloads.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tokenbench.producer.prompts import Prompt
from tokenbench.producer.tokenizer import TokenCounter

_VOCABULARY = (
    "time person year way day thing man world life hand part child eye woman place work week case point "
    "government company number group problem fact river mountain city garden window music paper market "
    "energy signal network server engine model token stream budget design report answer question reason "
    "story history science nature planet ocean forest winter summer morning evening animal machine system "
    "light water stone metal glass bridge road train station harbour island valley desert village castle "
    "theory method result measure sample change pattern memory language picture colour sound voice letter "
    "quickly slowly carefully rarely often always never perhaps together alone inside outside above below "
    "bright quiet heavy simple strange ancient modern gentle narrow distant careful sudden common famous "
    "build carry choose describe explain follow gather imagine improve listen measure notice open reach"
).split()


@dataclass(frozen=True)
class LengthSpec:
    """A token length: ``mean``, with a normal spread of ``stddev`` (0: every prompt the same)."""

    mean: int
    stddev: float = 0.0

    def draw(self, rng: random.Random) -> int:
        return self.mean if not self.stddev else max(1, round(rng.gauss(self.mean, self.stddev)))


@dataclass(frozen=True)
class SharedPrefixes:
    """``groups`` prefixes of ``tokens`` tokens each; prompt i starts with prefix i mod groups."""

    tokens: int
    groups: int = 1


def synthetic_prompts(count: int, input_length: LengthSpec, seed: int, counter: TokenCounter,
                      prefixes: SharedPrefixes | None = None) -> list[Prompt]:
    rng = random.Random(seed)
    heads = [""]
    if prefixes is not None:
        prefix_rng = random.Random(f"{seed}:prefixes")
        heads = [text_of_length(prefixes.tokens, prefix_rng, counter) + " " for _ in range(prefixes.groups)]
    shortest = prefixes.tokens + 1 if prefixes is not None else 1
    prompts = []
    for index in range(count):
        head = heads[index % len(heads)]
        text = text_of_length(max(input_length.draw(rng), shortest), rng, counter, head)
        category = f"prefix-{index % len(heads)}" if prefixes is not None else "synthetic"
        prompts.append(Prompt(f"synthetic-{index:05d}", category, text, input_tokens=counter.count(text)))
    return prompts


def text_of_length(target: int, rng: random.Random, counter: TokenCounter, head: str = "") -> str:
    """``head``, then random words, cut to ``target`` tokens in all: a few more words than needed, then
    truncated by the tokenizer (the cut falls after the head, which is shorter)."""
    words: list[str] = []
    while True:
        words += rng.choices(_VOCABULARY, k=max(8, target - len(words) // 2))
        text = head + " ".join(words)
        if counter.count(text) >= target:
            break
    text = counter.truncate(text, target)
    # Decoding can merge across the cut and land a token off; step back until the count fits.
    cut = target
    while counter.count(text) > target and cut > 1:
        cut -= 1
        text = counter.truncate(text, cut)
    return text
