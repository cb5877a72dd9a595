"""Replaying a production arrival trace: when each request came, and how long its input and output were.

Two formats, by suffix:
- ``.jsonl``: the public Mooncake traces, one ``{"timestamp": ms, "input_length", "output_length",
  "hash_ids": [...]}`` per line (``timestamp`` in milliseconds from the trace's start);
- ``.csv``: a header ``timestamp,input_tokens,output_tokens``, ``timestamp`` in seconds.

Each request becomes a synthetic prompt of its input length (random words, counted with the run's
tokenizer, see synthetic.py) whose ``max_tokens`` is its output length, sent at its timestamp
after the first, divided by ``speed``. Mooncake's ``hash_ids`` name the prompt's blocks of 512
tokens, shared between requests with the same id: each id is replayed as the same block of text,
so requests that share leading blocks share that prefix exactly (a prefix cache sees what the
trace's server saw); the prompt is its blocks, cut or topped up with its own words to its input
length. Every problem is a ``PromptFileError("FILE:LINE: ...")``.
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass, replace
from pathlib import Path

from tokenbench.producer.prompt_files import PromptFileError, json_lines, read_text
from tokenbench.producer.prompts import Prompt
from tokenbench.producer.synthetic import text_of_length
from tokenbench.producer.tokenizer import TokenCounter

CSV_COLUMNS = ("timestamp", "input_tokens", "output_tokens")
BLOCK_TOKENS = 512  # the tokens of one Mooncake hash_ids block


@dataclass(frozen=True)
class TraceRow:
    at_s: float  # seconds from the trace's start
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()  # the prompt's shared blocks, in order (Mooncake)


def read_trace(path: Path) -> list[TraceRow]:
    """The rows of a trace file, in time order."""
    text = read_text(path)
    rows = _from_csv(path, text) if path.suffix.lower() == ".csv" else _from_jsonl(path, text)
    if not rows:
        raise PromptFileError(f"{path}: no requests in the trace")
    return sorted(rows, key=lambda row: row.at_s)


def _from_jsonl(path: Path, text: str) -> list[TraceRow]:
    return [replace(_row(path, number, entry.get("timestamp"), entry.get("input_length"), entry.get("output_length"),
                         timestamp_scale=1e-3, names=("timestamp", "input_length", "output_length")),
                    hash_ids=_hash_ids(path, number, entry.get("hash_ids")))
            for number, entry in json_lines(path, text)]


def _hash_ids(path: Path, number: int, value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in value):
        raise PromptFileError(f"{path}:{number}: hash_ids must be a list of whole numbers")
    return tuple(value)


def _from_csv(path: Path, text: str) -> list[TraceRow]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [name for name in CSV_COLUMNS if name not in (reader.fieldnames or ())]
    if missing:
        raise PromptFileError(f"{path}:1: no {', '.join(missing)} column (needs {','.join(CSV_COLUMNS)})")
    return [_row(path, number, row["timestamp"], row["input_tokens"], row["output_tokens"], timestamp_scale=1.0,
                 names=CSV_COLUMNS)
            for number, row in enumerate(reader, start=2)]


def _row(path: Path, number: int, timestamp: object, input_tokens: object, output_tokens: object,
         timestamp_scale: float, names: tuple[str, str, str]) -> TraceRow:
    try:
        at = float(timestamp)  # type: ignore[arg-type]
        lengths = [int(str(value)) for value in (input_tokens, output_tokens)]
    except (TypeError, ValueError):
        raise PromptFileError(f"{path}:{number}: {', '.join(names)} must be numbers") from None
    if not math.isfinite(at) or at < 0:
        raise PromptFileError(f"{path}:{number}: {names[0]} must be a finite number >= 0")
    if min(lengths) < 1:
        raise PromptFileError(f"{path}:{number}: {names[1]} and {names[2]} must be at least 1")
    return TraceRow(at * timestamp_scale, lengths[0], lengths[1])


def trace_prompts(rows: list[TraceRow], speed: float, seed: int, counter: TokenCounter) -> list[Prompt]:
    """One synthetic prompt per row, of its input length, with its output length as max_tokens and
    its send time after the first request's (the trace's own gaps, divided by ``speed``)."""
    rng = random.Random(f"{seed}:trace")
    blocks: dict[int, str] = {}
    start = rows[0].at_s
    prompts = []
    for index, row in enumerate(rows):
        text = _prompt_text(row, rng, counter, blocks, seed)
        prompts.append(Prompt(f"trace-{index:06d}", "trace", text, max_tokens=row.output_tokens,
                              input_tokens=counter.count(text), arrival_s=(row.at_s - start) / speed))
    return prompts


def _prompt_text(row: TraceRow, rng: random.Random, counter: TokenCounter, blocks: dict[int, str], seed: int) -> str:
    """The row's prompt: its blocks' text (each id always the same words), cut or topped up with its
    own words to its input length; without hash_ids, its own words alone."""
    if not row.hash_ids:
        return text_of_length(row.input_tokens, rng, counter)
    for block in row.hash_ids:
        if block not in blocks:
            blocks[block] = text_of_length(BLOCK_TOKENS, random.Random(f"{seed}:block:{block}"), counter)
    shared = " ".join(blocks[block] for block in row.hash_ids)
    if counter.count(shared) >= row.input_tokens:
        return counter.truncate(shared, row.input_tokens)
    return text_of_length(row.input_tokens, rng, counter, head=shared + " ")

