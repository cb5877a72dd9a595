"""Output tokens of responses that came without usage, counted from their streamed text with the
run's ``--tokenizer`` (llama.cpp's server sends no usage; counting chunks falls a few short).

The worker keeps such a response's text only when the run has a tokenizer (``Endpoint.keep_text_without_usage``);
here it is counted and dropped, so no text reaches a result file. The count re-tokenizes the
decoded text: close to the number of tokens generated, not always equal (docs/metrics.md). A
report made where the tokenizer file is not (another host) keeps the chunk counts, marked as
estimates.
"""

from __future__ import annotations

from typing import Any

from tokenbench.producer.tokenizer import load_counter
from tokenbench.producer.workloads import tokenizer_path
from tokenbench.shared.records import TOKENS_FROM_TOKENIZER, RequestRecord


def count_streamed_tokens(records: list[RequestRecord], workload: dict[str, Any] | None) -> None:
    """Replace the chunk counts of records that kept their text by the tokenizer's count, in place."""
    with_text = [r for r in records if r.output_text is not None]
    if not with_text:
        return
    path = tokenizer_path(workload)
    counter = load_counter(path) if path is not None and path.is_file() else None
    for record in with_text:
        text, record.output_text = record.output_text or "", None
        if counter is None:
            continue
        counted = counter.count(text)
        if record.reasoning_tokens_source == "estimate" and record.output_tokens:
            record.reasoning_tokens = round(record.reasoning_tokens * counted / record.output_tokens)
        record.output_tokens, record.output_tokens_source = counted, TOKENS_FROM_TOKENIZER
        record.answer_tokens = max(counted - record.reasoning_tokens, 0)
