"""Prompts from the user's own file: JSONL, CSV with a ``prompt`` column, or plain text.

Every problem is reported as ``PromptFileError("FILE:LINE: what is wrong")``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from tokenbench.producer.prompts import Prompt

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
FILE_CATEGORY = "file"  # the category of prompts whose file names none


class PromptFileError(ValueError):
    pass


def read_text(path: Path) -> str:
    """The file as UTF-8 text (a BOM dropped); a PromptFileError naming the file if it cannot be."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise PromptFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise PromptFileError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def json_lines(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSONL text; a PromptFileError naming the
    line for one that is not a JSON object."""
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise PromptFileError(f"{path}:{n}: not JSON ({exc})") from None
        if not isinstance(item, dict):
            raise PromptFileError(f"{path}:{n}: expected a JSON object, got {type(item).__name__}")
        yield n, item


def load_prompt_file(path: Path) -> tuple[Prompt, ...]:
    """Read ``path`` by its suffix: .jsonl/.ndjson/.json lines, .csv, anything else one prompt per line."""
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        prompts = _from_jsonl(path, text)
    elif suffix == ".csv":
        prompts = _from_csv(path, text)
    else:
        prompts = tuple(Prompt(f"line-{n}", FILE_CATEGORY, line.strip())
                        for n, line in enumerate(text.splitlines(), start=1) if line.strip())
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts


def _from_jsonl(path: Path, text: str) -> tuple[Prompt, ...]:
    return tuple(_prompt_from_fields(path, n, item) for n, item in json_lines(path, text))


def _from_csv(path: Path, text: str) -> tuple[Prompt, ...]:
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "prompt" not in reader.fieldnames:
        found = ", ".join(reader.fieldnames or []) or "none"
        raise PromptFileError(f"{path}:1: no 'prompt' column (columns: {found})")
    prompts = []
    for row in reader:
        n = reader.line_num
        fields: dict[str, Any] = {k: v for k, v in row.items() if k and v not in (None, "")}
        if "max_tokens" in fields:
            raw = fields["max_tokens"]
            try:
                fields["max_tokens"] = int(raw)
            except ValueError:
                raise PromptFileError(f"{path}:{n}: max_tokens {raw!r} is not a whole number") from None
        prompts.append(_prompt_from_fields(path, n, fields))
    return tuple(prompts)


def _prompt_from_fields(path: Path, n: int, item: dict[str, Any]) -> Prompt:
    where = f"{path}:{n}"
    messages = item.get("messages")
    prompt = item.get("prompt")
    if messages is not None:
        messages = _checked_messages(where, messages)
        text = next((m["content"] for m in reversed(messages) if m["role"] == "user"), messages[-1]["content"])
    elif isinstance(prompt, str) and prompt.strip():
        text = prompt
    else:
        raise PromptFileError(f'{where}: needs "prompt" (a non-empty string) or "messages" (a list)')
    max_tokens = item.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise PromptFileError(f"{where}: max_tokens must be a whole number >= 1, got {max_tokens!r}")
    return Prompt(
        id=str(item.get("id") or f"line-{n}"),
        category=str(item.get("category") or FILE_CATEGORY),
        text=text,
        messages=tuple(messages) if messages is not None else None,
        max_tokens=max_tokens,
    )


def _checked_messages(where: str, messages: Any) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise PromptFileError(f'{where}: "messages" must be a non-empty list')
    for i, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise PromptFileError(f'{where}: messages[{i}] needs a "role" and a "content" string')
    return [{"role": m["role"], "content": m["content"]} for m in messages]
