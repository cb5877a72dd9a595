"""The built-in prompt set: 30 prompts over the eight categories of the original harness."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import cycle, islice


@dataclass(frozen=True)
class Prompt:
    id: str
    category: str
    text: str  # the user's words (for a conversation: its last user message)
    messages: tuple[dict[str, str], ...] | None = None  # a whole conversation, sent as is
    max_tokens: int | None = None  # overrides the run's --max-tokens for this prompt
    input_tokens: int | None = None  # the prompt's length as the workload counted it (see producer/tokenizer.py)
    arrival_s: float | None = None  # a replayed trace's send time after its first request (see producer/trace.py)
    session_id: str | None = None  # a conversation's turns share it (see producer/conversations.py)
    turn: int | None = None  # which user turn of its conversation, from 1


def _category(category: str, prefix: str, *texts: str) -> list[Prompt]:
    return [Prompt(f"{prefix}-{n:02d}", category, text) for n, text in enumerate(texts, start=1)]


BUILTIN_PROMPTS: tuple[Prompt, ...] = tuple(
    _category(
        "simple_factual",
        "fact",
        "What is the boiling point of water at sea level in Celsius and Fahrenheit?",
        "Which planet in our solar system has the most moons?",
        "Who wrote the novel 'One Hundred Years of Solitude'?",
        "What is the chemical symbol for tungsten, and why is it that letter?",
    )
    + _category(
        "reasoning",
        "reason",
        "A train leaves at 09:40 and arrives at 13:05. How long is the trip? Show your steps.",
        "If all bloops are razzies and some razzies are lazzies, must some bloops be lazzies? Explain.",
        "Three boxes are labelled apples, oranges and mixed, and every label is wrong. "
        "You may take one fruit from one box. How do you relabel them correctly?",
        "A bat and a ball cost 1.10 in total and the bat costs 1.00 more than the ball. "
        "What does the ball cost? Walk through the reasoning.",
    )
    + _category(
        "coding",
        "code",
        "Write a Python function that returns the n-th Fibonacci number in O(log n) time.",
        "Explain what this SQL does and how to speed it up: "
        "SELECT * FROM orders WHERE DATE(created_at) = '2024-01-01';",
        "Write a bash one-liner that lists the ten largest files under the current directory.",
        "Implement an LRU cache class in TypeScript with get and put in O(1).",
    )
    + _category(
        "writing",
        "write",
        "Write a polite email declining a meeting invitation and proposing two other times.",
        "Summarise the causes of the 2008 financial crisis in one paragraph for a general reader.",
        "Draft a short product announcement for a lighter, longer-lasting e-bike battery.",
        "Rewrite this sentence to be clearer: 'The implementation of the solution was "
        "performed by the team in a manner that was efficient.'",
    )
    + _category(
        "creative",
        "create",
        "Write a haiku about a server rack humming at night.",
        "Tell a 150-word story about a lighthouse keeper who finds a message in a bottle.",
        "Invent three names for a coffee shop run by robots, with a tagline for each.",
        "Describe a sunrise on Mars as a tour guide would.",
    )
    + _category(
        "opinion_analysis",
        "opinion",
        "What are the strongest arguments for and against a four-day work week?",
        "Is it better for a small startup to build on a monolith or on microservices? Why?",
        "Analyse the trade-offs of remote work for junior engineers.",
        "Should cities ban cars from their centres? Weigh the main considerations.",
    )
    + _category(
        "comparison",
        "compare",
        "Compare PostgreSQL and MySQL for a write-heavy analytics workload.",
        "Compare TCP and UDP, and give one use case where each is the better choice.",
        "How do electric cars and hydrogen fuel-cell cars compare in efficiency and infrastructure?",
    )
    + _category(
        "technical_explanation",
        "explain",
        "Explain how the attention mechanism in a transformer works, step by step.",
        "How does TLS 1.3 establish a secure connection? Keep it concise.",
        "Explain what a KV cache is in LLM inference and why it speeds up generation.",
    )
)

CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(p.category for p in BUILTIN_PROMPTS))


def select_prompts(count: int | None, prompts: tuple[Prompt, ...] = BUILTIN_PROMPTS) -> list[Prompt]:
    """The first ``count`` prompts (all when None), cycling through the set when ``count`` is larger."""
    if count is None:
        return list(prompts)
    return list(islice(cycle(prompts), count))


def as_messages(prompt: Prompt) -> list[dict[str, str]]:
    if prompt.messages is not None:
        return [dict(m) for m in prompt.messages]
    return [{"role": "user", "content": prompt.text}]
