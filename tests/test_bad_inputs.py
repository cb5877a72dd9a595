"""Any value of any option: a one-line error and exit 1 or 2, never a traceback (hypothesis).

`enqueue` checks every option of a run (workload, schedule, endpoint, request options) before it
touches Redis, and the Redis given here refuses connections: so every case ends in this process,
quickly, with either a usage error (2) or "cannot reach Redis" (1), and nothing is ever sent.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import free_port
from tests.helpers import tokenbench_in_process


def _enqueue_options() -> tuple[str, ...]:
    """Every option of `enqueue` that takes a value (read from the command: a new one is never missed),
    but --redis-url, which the test points at a closed port."""
    import click

    from tokenbench.cli import enqueue

    return tuple(sorted(param.opts[-1] for param in enqueue.params
                        if isinstance(param, click.Option) and not param.is_flag and param.name != "redis_url"))


OPTIONS = _enqueue_options()
# A command line cannot carry a NUL byte (argv is C strings): every other value can come.
NASTY = st.one_of(
    st.sampled_from(["", " ", "0", "-1", "1e309", "-inf", "inf", "nan", "NaN", "1e-300", "9" * 40, "0x10", "1,2",
                     "1,,2", "{}", "[]", "null", '{"a": 1}', "x:y", ":", "http://", "http://h:99999/v1", "ftp://h",
                     "\x1b[31m", "é", "../../etc/passwd", "/dev/null", "/nonexistent/file.jsonl",
                     "Authorization: x", "a" * 5000]),
    st.text(alphabet=st.characters(blacklist_characters="\x00"), max_size=40),
    st.integers().map(str),
    st.floats().map(str),
)


@pytest.fixture(scope="module")
def closed_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(OPTIONS), value=NASTY, second=st.sampled_from(OPTIONS), other=NASTY)
def test_any_value_of_any_option_is_one_line_and_never_a_traceback(option, value, second, other, closed_redis_url,
                                                                    monkeypatch):
    for name in [name for name in os.environ if name.endswith("API_KEY") or name == "REDIS_URL"]:
        monkeypatch.delenv(name)
    done = tokenbench_in_process("enqueue", "--mode", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                                 "--prompts", "2", "--redis-url", closed_redis_url, option, value, second, other)
    lines = done.stderr.strip().splitlines()
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("tokenbench: error: "), done.stderr
    assert "Traceback" not in done.stderr and "\x1b" not in done.stderr


@pytest.mark.parametrize("line_break", ["\n", "\u2028", "\u2029", "\r\n"])
def test_a_file_name_with_a_line_break_is_still_a_one_line_error(line_break, closed_redis_url, monkeypatch):
    """What hypothesis found (a newline, then U+2028): the path is part of the message, which must stay one line."""
    for name in [name for name in os.environ if name.endswith("API_KEY") or name == "REDIS_URL"]:
        monkeypatch.delenv(name)
    done = tokenbench_in_process("enqueue", "--mode", "openai", "--base-url", "http://127.0.0.1:9/v1", "--model", "m",
                                 "--redis-url", closed_redis_url, "--trace", f"no{line_break}such.csv")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["tokenbench: error: Invalid value for '--trace': cannot read no\\nsuch.csv: "
                                        "No such file or directory"]
