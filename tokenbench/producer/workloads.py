"""What a run sends: the built-in prompts, the user's file, synthetic prompts or a ShareGPT sample,
and a description of it that goes into the result (source, seed, tokenizer, lengths as counted)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tokenbench.producer.conversations import as_sessions, conversation_prompts, load_conversation_file
from tokenbench.producer.prompt_files import load_prompt_file
from tokenbench.producer.prompts import BUILTIN_PROMPTS, Prompt, select_prompts
from tokenbench.producer.sharegpt import load_sharegpt
from tokenbench.producer.synthetic import LengthSpec, SharedPrefixes, synthetic_prompts
from tokenbench.producer.tokenizer import EstimatedCounter, load_counter
from tokenbench.producer.trace import BLOCK_TOKENS, read_trace, trace_prompts

DATASETS = ("sharegpt",)
DEFAULT_COUNT = len(BUILTIN_PROMPTS)  # requests of a synthetic or dataset run without --prompts


@dataclass(frozen=True)
class WorkloadSpec:
    num_prompts: int | None = None
    prompts_file: Path | None = None
    dataset: str | None = None  # "sharegpt", read from dataset_path
    dataset_path: Path | None = None
    input_tokens: LengthSpec | None = None  # synthetic prompts of this length
    output_tokens: LengthSpec | None = None  # every prompt's max_tokens drawn from this
    tokenizer: Path | None = None  # a tokenizer.json; None: lengths are estimated
    seed: int = 0
    prefixes: SharedPrefixes | None = None  # synthetic prompts that start with shared prefixes
    trace: Path | None = None  # replay this arrival trace (producer/trace.py)
    trace_speed: float = 1.0  # the trace's time divided by this
    turns: int | None = None  # conversations: each session sends this many user turns (at most, from a file)
    conversations: Path | None = None  # a file of conversations (producer/conversations.py)
    turn_delay_s: float = 0.0  # conversations: think time between an answer and the next turn


@dataclass(frozen=True)
class Workload:
    prompts: list[Prompt]  # every request, in order (a conversation's turns next to each other)
    description: dict[str, Any]  # where they came from and how their lengths were counted (into the result)
    turn_delay_s: float = 0.0  # conversations: think time between an answer and the next turn


def build_workload(spec: WorkloadSpec) -> Workload:
    """The prompts to send, in order, and the description of where they came from."""
    description: dict[str, Any] = {}
    counts_lengths = spec.input_tokens is not None or spec.dataset is not None or spec.trace is not None \
        or spec.conversations is not None
    counter = load_counter(spec.tokenizer) if counts_lengths or spec.tokenizer else None
    # With --turns, --prompts counts sessions: each takes the next `turns` prompts of the source.
    per_session = spec.turns if spec.turns and spec.conversations is None else 1
    count = (spec.num_prompts or DEFAULT_COUNT) * per_session
    if spec.conversations is not None:
        assert counter is not None
        prompts = conversation_prompts(load_conversation_file(spec.conversations, counter), spec.num_prompts,
                                       spec.turns)
        description |= {"source": "conversations", "path": str(spec.conversations)}
    elif spec.input_tokens is not None:
        assert counter is not None
        prompts = synthetic_prompts(count, spec.input_tokens, spec.seed, counter, spec.prefixes)
        description |= {"source": "synthetic", "input_tokens_requested": _length(spec.input_tokens)}
        if spec.prefixes is not None:
            description["shared_prefixes"] = {"tokens": spec.prefixes.tokens, "groups": spec.prefixes.groups}
    elif spec.trace is not None:
        assert counter is not None
        rows = read_trace(spec.trace)[:spec.num_prompts]
        prompts = trace_prompts(rows, spec.trace_speed, spec.seed, counter)
        description |= {"source": "trace", "path": str(spec.trace), "speed": spec.trace_speed,
                        "requests": len(rows), "trace_duration_s": round(rows[-1].at_s - rows[0].at_s, 3),
                        # Mooncake's hash_ids, replayed as shared blocks of text (producer/trace.py).
                        "requests_with_hash_ids": sum(bool(row.hash_ids) for row in rows),
                        "block_tokens": BLOCK_TOKENS}
    elif spec.dataset == "sharegpt":
        assert counter is not None and spec.dataset_path is not None
        sample, kept = load_sharegpt(spec.dataset_path, count, spec.seed, counter)
        prompts = select_prompts(count, tuple(sample))
        description |= {"source": "sharegpt", "path": str(spec.dataset_path), **kept}
    elif spec.prompts_file is not None:
        prompts = select_prompts(spec.num_prompts and count, load_prompt_file(spec.prompts_file))
        description |= {"source": "file", "path": str(spec.prompts_file)}
    else:
        prompts = select_prompts(spec.num_prompts and count, BUILTIN_PROMPTS)
        description |= {"source": "builtin"}
    if per_session > 1:
        prompts = as_sessions(prompts, per_session)
    if prompts and prompts[0].session_id is not None:
        description["conversations"] = conversation_summary(prompts) | {"turn_delay_s": spec.turn_delay_s}
    if spec.output_tokens is not None:
        rng = random.Random(f"{spec.seed}:output")
        prompts = [replace(p, max_tokens=spec.output_tokens.draw(rng)) for p in prompts]
        description["output_tokens_requested"] = _length(spec.output_tokens)
    description["seed"] = spec.seed
    if counter is not None:
        if not all(p.input_tokens is not None for p in prompts):
            prompts = [replace(p, input_tokens=counter.count(p.text)) for p in prompts]
        lengths = [p.input_tokens or 0 for p in prompts]
        description |= {
            "tokenizer": counter.name,
            "lengths": "exact" if counter.exact else "approximate (4 characters per token; give --tokenizer)",
            "prompt_tokens": {"mean": round(sum(lengths) / len(lengths), 1), "min": min(lengths),
                              "max": max(lengths), "total": sum(lengths)},
        }
    return Workload(prompts, description, spec.turn_delay_s)


def conversation_summary(prompts: list[Prompt]) -> dict[str, Any]:
    """How many sessions a workload has and how many turns each."""
    turns = [p.turn or 1 for p in prompts if p.turn is not None]
    sessions = len({p.session_id for p in prompts})
    return {"sessions": sessions, "turns": {"mean": round(len(turns) / sessions, 2), "max": max(turns)}}


def tokenizer_path(description: dict[str, Any] | None) -> Path | None:
    """The tokenizer.json a workload was counted with (its description, as in the result), if any."""
    name = (description or {}).get("tokenizer")
    return Path(name) if isinstance(name, str) and name != EstimatedCounter.name else None


def _length(spec: LengthSpec) -> dict[str, float]:
    return {"mean": spec.mean, "stddev": spec.stddev}


