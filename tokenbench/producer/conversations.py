"""Multi-turn conversations: sessions whose user turns go out in order, each request carrying the
whole history with the model's *actual* earlier answers (the worker builds it: worker/conversation.py).

A session's turns are prompts that share ``session_id``, numbered by ``turn`` from 1; the producer
puts each session in one job (producer/enqueue.py). Two ways to get them:

- ``--turns N`` over any other source (built-in, file, synthetic, ShareGPT first turns): each
  session takes the next N prompts as its user turns.
- ``--conversations FILE``: JSONL of ``{"id", "turns": [...]}`` (a turn is a string, or an object
  with ``content`` and optionally ``max_tokens``), or ShareGPT records
  (``{"id", "conversations": [{"from": "human"|"gpt", "value"}, ...]}``, as a JSON list or JSONL):
  their human turns are the user turns; a recorded answer is not sent (the model's own is), its
  token length becomes the max_tokens of the turn it answered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import orjson

from tokenbench.producer.prompt_files import PromptFileError, json_lines, read_text
from tokenbench.producer.prompts import Prompt
from tokenbench.producer.tokenizer import TokenCounter

CONVERSATION_CATEGORY = "conversation"
MAX_TURNS = 1000
_SHAREGPT_USER = ("human", "user")
_SHAREGPT_MODEL = ("gpt", "assistant", "model", "chatgpt", "bard")


@dataclass(frozen=True)
class Conversation:
    id: str
    turns: tuple[Prompt, ...]  # the user's turns, in order


def session_id(number: int) -> str:
    return f"session-{number}"


def as_sessions(prompts: list[Prompt], turns: int) -> list[Prompt]:
    """The prompts grouped ``turns`` at a time into sessions, in order (a short last group is a
    shorter session)."""
    return [replace(prompt, session_id=session_id(n // turns), turn=n % turns + 1) for n, prompt in enumerate(prompts)]


def conversation_prompts(conversations: tuple[Conversation, ...], count: int | None,
                         max_turns: int | None) -> list[Prompt]:
    """``count`` sessions (all when None; cycling when more), each a conversation's first
    ``max_turns`` turns (all when None), flat and in order."""
    chosen = list(conversations) if count is None else list(islice(cycle(conversations), count))
    prompts = []
    for number, conversation in enumerate(chosen):
        for turn, prompt in enumerate(conversation.turns[:max_turns], start=1):
            prompts.append(replace(prompt, session_id=session_id(number), turn=turn))
    return prompts


def sessions_of(prompts: list[Prompt]) -> list[list[tuple[int, Prompt]]]:
    """(index, prompt) of each request, grouped: a session's consecutive turns together, any other
    prompt alone."""
    groups: list[list[tuple[int, Prompt]]] = []
    for index, prompt in enumerate(prompts):
        if prompt.session_id is not None and groups and groups[-1][-1][1].session_id == prompt.session_id:
            groups[-1].append((index, prompt))
        else:
            groups.append([(index, prompt)])
    return groups


def load_conversation_file(path: Path, counter: TokenCounter) -> tuple[Conversation, ...]:
    """The conversations of ``path``; a PromptFileError naming the file (and line) for a bad one."""
    text = read_text(path)
    if text.lstrip().startswith("["):
        try:
            entries = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise PromptFileError(f"{path}: not JSON: {exc}") from None
        items = [(f"{path}: conversation {n}", entry) for n, entry in enumerate(entries)]
    else:
        items = [(f"{path}:{n}", entry) for n, entry in json_lines(path, text)]
    conversations = tuple(_conversation(where, n, entry, counter) for n, (where, entry) in enumerate(items))
    conversations = tuple(c for c in conversations if c.turns)
    if not conversations:
        raise PromptFileError(f"{path}: no conversation with a user turn in the file")
    return conversations


def _conversation(where: str, position: int, entry: Any, counter: TokenCounter) -> Conversation:
    if not isinstance(entry, dict):
        raise PromptFileError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    conversation_id = str(entry.get("id") or f"conversation-{position}")
    if "turns" in entry:
        turns = _listed_turns(where, conversation_id, entry["turns"])
    elif "conversations" in entry:
        turns = _sharegpt_turns(where, conversation_id, entry["conversations"], counter)
    else:
        raise PromptFileError(f'{where}: needs "turns" (a list of user turns) or ShareGPT\'s "conversations"')
    if len(turns) > MAX_TURNS:
        raise PromptFileError(f"{where}: {len(turns)} turns, more than {MAX_TURNS}")
    return Conversation(conversation_id, tuple(turns))


def _listed_turns(where: str, conversation_id: str, turns: Any) -> list[Prompt]:
    if not isinstance(turns, list) or not turns:
        raise PromptFileError(f'{where}: "turns" must be a non-empty list')
    prompts = []
    for n, turn in enumerate(turns, start=1):
        content, max_tokens = (turn, None) if isinstance(turn, str) else \
            (turn.get("content"), turn.get("max_tokens")) if isinstance(turn, dict) else (None, None)
        if not isinstance(content, str) or not content.strip():
            raise PromptFileError(f'{where}: turns[{n - 1}] must be a non-empty string or {{"content": "..."}}')
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 1):
            raise PromptFileError(f"{where}: turns[{n - 1}].max_tokens must be a whole number >= 1")
        prompts.append(Prompt(f"{conversation_id}/{n}", CONVERSATION_CATEGORY, content, max_tokens=max_tokens))
    return prompts


def _sharegpt_turns(where: str, conversation_id: str, messages: Any, counter: TokenCounter) -> list[Prompt]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and isinstance(m.get("value"), str)
                                                 for m in messages):
        raise PromptFileError(f'{where}: expected "conversations": [{{"from": ..., "value": "..."}}, ...]')
    prompts: list[Prompt] = []
    for message in messages:
        speaker = str(message.get("from", "")).lower()
        if speaker in _SHAREGPT_USER and message["value"].strip():
            prompts.append(Prompt(f"{conversation_id}/{len(prompts) + 1}", CONVERSATION_CATEGORY, message["value"]))
        elif speaker in _SHAREGPT_MODEL and prompts and prompts[-1].max_tokens is None:
            prompts[-1] = replace(prompts[-1], max_tokens=max(counter.count(message["value"]), 1))
    return prompts
