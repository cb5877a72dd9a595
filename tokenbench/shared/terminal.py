"""Text from servers (error messages, model and provider names) printed on a terminal, made harmless."""

from __future__ import annotations

# C0 controls but tab and newline, DEL, C1 controls (ESC starts the sequences that move the cursor,
# recolour or retitle a terminal), and the bidirectional overrides that reorder what is shown.
_UNSAFE = {code: None for code in (*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0D, 0x20), *range(0x7F, 0xA0),
                                   *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def terminal_safe(text: str) -> str:
    """``text`` without the characters a terminal would act on rather than show."""
    return text.translate(_UNSAFE)


def one_line(text: str) -> str:
    """``text`` made harmless and kept to one line: each line break in it (a newline from a file name,
    say, or U+2028; whatever str.splitlines splits at) shows as \\n."""
    return "\\n".join(terminal_safe(text).splitlines())
