"""ShareGPT-format conversations as prompts, sampled as vLLM's ``bench serve --dataset-name sharegpt`` does.

The file is a JSON list of ``{"id": ..., "conversations": [{"from": "human", "value": ...},
{"from": "gpt", "value": ...}, ...]}``. Each conversation with at least two turns gives one
prompt: its first turn, with ``max_tokens`` set to the token length of the second (the answer
the dataset recorded). As in vLLM, prompts or answers under 4 tokens, prompts over 1,024 tokens
and pairs over 2,048 are left out; the rest are shuffled with the seed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from tokenbench.producer.prompt_files import PromptFileError
from tokenbench.producer.prompts import Prompt
from tokenbench.producer.tokenizer import TokenCounter

MIN_TOKENS = 4
MAX_PROMPT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048


def load_sharegpt(path: Path, count: int, seed: int, counter: TokenCounter,
                  output_tokens: int | None = None) -> tuple[list[Prompt], dict[str, Any]]:
    """``count`` prompts (or fewer, when fewer qualify) and what was kept: conversations, usable ones."""
    conversations = _read(path)
    order = list(range(len(conversations)))
    random.Random(seed).shuffle(order)
    prompts: list[Prompt] = []
    usable = 0
    for position in order:
        prompt = _prompt(path, position, conversations[position], counter, output_tokens)
        if prompt is None:
            continue
        usable += 1
        if len(prompts) < count:
            prompts.append(prompt)
    if not prompts:
        raise PromptFileError(f"{path}: no conversation qualifies (a first turn and an answer of "
                              f"{MIN_TOKENS}+ tokens each, prompt <= {MAX_PROMPT_TOKENS}, both <= {MAX_TOTAL_TOKENS})")
    return prompts, {"conversations": len(conversations), "usable": usable}


def _read(path: Path) -> list[Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise PromptFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise PromptFileError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, list):
        raise PromptFileError(f"{path}: a ShareGPT file is a JSON list of conversations")
    return data


def _prompt(path: Path, position: int, entry: Any, counter: TokenCounter, output_tokens: int | None) -> Prompt | None:
    turns = entry.get("conversations") if isinstance(entry, dict) else None
    if not isinstance(turns, list) or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns):
        raise PromptFileError(f"{path}: conversation {position}: expected "
                              '{"conversations": [{"from": ..., "value": "..."}, ...]}')
    if len(turns) < 2:
        return None
    text, answer = turns[0]["value"], turns[1]["value"]
    prompt_tokens = counter.count(text)
    answer_tokens = output_tokens or counter.count(answer)
    if prompt_tokens < MIN_TOKENS or answer_tokens < MIN_TOKENS:
        return None
    if prompt_tokens > MAX_PROMPT_TOKENS or prompt_tokens + answer_tokens > MAX_TOTAL_TOKENS:
        return None
    prompt_id = str(entry.get("id") or f"sharegpt-{position}")
    return Prompt(prompt_id, "sharegpt", text, max_tokens=answer_tokens, input_tokens=prompt_tokens)
