"""Reading the user's prompts: JSONL (prompt or messages), CSV and plain text."""

from __future__ import annotations

from tokenbench.producer.prompt_files import load_prompt_file
from tokenbench.producer.prompts import as_messages, select_prompts


def test_jsonl_prompts_conversations_and_per_prompt_max_tokens(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"prompt": "Say hi", "id": "hi", "category": "greeting", "max_tokens": 3}\n'
        "\n"
        '{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why?"},'
        ' {"role": "assistant", "content": "Because."}, {"role": "user", "content": "And?"}]}\n'
    )
    first, second = load_prompt_file(path)
    assert (first.id, first.category, first.text, first.max_tokens) == ("hi", "greeting", "Say hi", 3)
    assert as_messages(first) == [{"role": "user", "content": "Say hi"}]
    assert (second.id, second.category, second.text, second.max_tokens) == ("line-3", "file", "And?", None)
    assert [m["role"] for m in as_messages(second)] == ["system", "user", "assistant", "user"]


def test_csv_with_optional_columns_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes('\ufeffprompt,category,max_tokens\n"Hello, world",chat,7\nSecond one,,\n'.encode())
    first, second = load_prompt_file(path)
    assert (first.text, first.category, first.max_tokens, first.id) == ("Hello, world", "chat", 7, "line-2")
    assert (second.text, second.category, second.max_tokens) == ("Second one", "file", None)


def test_plain_text_is_one_prompt_per_non_blank_line(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first prompt\n\n   second prompt  \n")
    prompts = load_prompt_file(path)
    assert [(p.id, p.text) for p in prompts] == [("line-1", "first prompt"), ("line-3", "second prompt")]
    assert [p.id for p in select_prompts(5, prompts)] == ["line-1", "line-3", "line-1", "line-3", "line-1"]
