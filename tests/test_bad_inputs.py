"""Any value of any option of any command: a one-line error and exit 1 or 2, never a traceback (hypothesis).

Each command is given a base command line that cannot start anything real: the Redis it names refuses
connections, and the step that would start a run, a sweep, a calibration or a server, or write a
comparison, is replaced by one that refuses in the same one-line form. So a drawn value either ends as
a usage error (2), or passes every check and reaches that point (1): either way in this process,
quickly, with nothing sent. The options are read from the commands themselves, so a new one is never
missed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import make_meta, make_record
from tests.conftest import free_port
from tests.helpers import tokenbench_in_process
from tokenbench.aggregator.export import document_json
from tokenbench.aggregator.report import build_report
from tokenbench.cli import cli
from tokenbench.shared.errors import TokenbenchError

CLOSED_REDIS = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
CLOSED_HTTP = f"http://127.0.0.1:{free_port()}/v1"
REACHED = "reached the start"  # the refusal of a command whose every check passed


@dataclass(frozen=True)
class Case:
    base: tuple[str, ...]  # a command line that passes every check
    not_drawn: frozenset[str] = frozenset()  # options whose drawn values would leave the sandbox (see below)
    may_succeed: bool = False  # compare and plot finish in this process when every value is good


ENDPOINT = ("--mode", "openai", "--base-url", CLOSED_HTTP, "--model", "m", "--prompts", "2")
# --redis-url stays the closed one everywhere (a drawn host name would wait on DNS; URL forms are
# tested in test_cli), and --mode stays openai for run and sweep: the built-in mock's own options
# are drawn through a second run case that uses it.
CASES = {
    "enqueue": Case(("enqueue", *ENDPOINT, "--redis-url", CLOSED_REDIS), frozenset({"--redis-url"})),
    "run": Case(("run", *ENDPOINT), frozenset({"--redis-url", "--mode"})),
    "run (mock)": Case(("run", "--mode", "mock", "--prompts", "2"), frozenset({"--redis-url", "--mode"})),
    "sweep": Case(("sweep", *ENDPOINT, "--concurrency", "1,2"), frozenset({"--redis-url", "--mode"})),
    "worker": Case(("worker", "--redis-url", CLOSED_REDIS), frozenset({"--redis-url"})),
    "report": Case(("report", "r", "--redis-url", CLOSED_REDIS), frozenset({"--redis-url"})),
    "runs": Case(("runs", "--redis-url", CLOSED_REDIS), frozenset({"--redis-url"})),
    "calibrate": Case(("calibrate",)),
    "mock-server": Case(("mock-server", "--host", "127.0.0.1", "--port", "0")),
    "compare": Case(("compare", "a.json", "b.json"), may_succeed=True),
    "plot": Case(("plot", "a.json", "b.json", "--output", "p.html")),
}


def value_options(command: click.Command) -> tuple[str, ...]:
    return tuple(sorted(param.opts[-1] for param in command.params
                        if isinstance(param, click.Option) and not param.is_flag))


def drawn_options(case: str) -> tuple[str, ...]:
    spec = CASES[case]
    return tuple(option for option in value_options(cli.commands[spec.base[0]]) if option not in spec.not_drawn)


# A command line cannot carry a NUL byte (argv is C strings): every other value can come.
NASTY = st.one_of(
    st.sampled_from(["", " ", "0", "-1", "1e309", "-inf", "inf", "nan", "NaN", "1e-300", "9" * 40, "0x10", "1,2",
                     "1,,2", "{}", "[]", "null", '{"a": 1}', "x:y", ":", "http://", "http://h:99999/v1", "ftp://h",
                     "\x1b[31m", "é", "../../etc/passwd", "/dev/null", "/nonexistent/file.jsonl",
                     "Authorization: x", "a" * 5000, "80", "65536", "1024", "think", "stall"]),
    st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=40),
    # What argv holds for bytes that are not UTF-8: lone surrogates \udc80-\udcff (os.fsdecode).
    st.binary(max_size=40).filter(lambda raw: b"\x00" not in raw).map(os.fsdecode),
    st.integers().map(str),
    st.floats().map(str),
)


def test_every_command_with_options_is_drawn_from():
    """A new command gets a case here (or this fails): the sandbox above is what makes drawing safe.
    `cancel`'s one option is --redis-url."""
    with_options = {name for name, command in cli.commands.items() if set(value_options(command)) - {"--redis-url"}}
    assert with_options == {spec.base[0] for spec in CASES.values()}


@pytest.fixture
def sandbox(tmp_path_factory, monkeypatch) -> Path:
    """A working folder with two result files, no API key or Redis URL from the environment, and every
    step that would start something replaced by a one-line refusal."""
    for name in [name for name in os.environ if name.endswith("API_KEY") or name == "REDIS_URL"]:
        monkeypatch.delenv(name)
    # Deep enough that a drawn "../../x" still lands inside the temporary folder.
    folder = tmp_path_factory.mktemp("bad-inputs") / "a" / "b" / "c"
    folder.mkdir(parents=True)
    result = document_json(build_report(make_meta(2), [make_record(0), make_record(1)]))
    for name in ("a.json", "b.json"):
        (folder / name).write_bytes(result)
    monkeypatch.chdir(folder)

    def refuse(*_args, **_kwargs):
        raise TokenbenchError(REACHED)

    def refuse_to_serve(_settings, sock, _processes):
        sock.close()
        raise TokenbenchError(REACHED)

    monkeypatch.setattr("tokenbench.runner.local_run.run_benchmark", refuse)
    monkeypatch.setattr("tokenbench.runner.local_run.run_sweep", refuse)
    monkeypatch.setattr("tokenbench.runner.calibrate.calibrate", refuse)
    monkeypatch.setattr("tokenbench.mock.server.serve", refuse_to_serve)
    monkeypatch.setattr("tokenbench.cli._write", refuse)  # compare --output, plot: no file is written
    return folder


def assert_one_line(done, may_succeed: bool) -> None:
    assert "Traceback" not in done.stderr and "\x1b" not in done.stderr, done.stderr
    if done.returncode == 0 and may_succeed:
        return
    lines = done.stderr.strip().splitlines()
    assert done.returncode in (1, 2), (done.returncode, done.stderr)
    assert lines and lines[-1].startswith("tokenbench: error: "), done.stderr
    assert all(line.startswith("warning: ") for line in lines[:-1]), done.stderr


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_of_any_option_is_one_line_and_never_a_traceback(case, data, sandbox):
    options = drawn_options(case)
    drawn: list[str] = []
    for _ in range(2):
        drawn += [data.draw(st.sampled_from(options), label="option"), data.draw(NASTY, label="value")]
    done = tokenbench_in_process(*CASES[case].base, *drawn)
    assert_one_line(done, CASES[case].may_succeed)


@pytest.mark.parametrize("case", list(CASES))
def test_each_base_command_line_reaches_its_start(case, sandbox):
    """Without this the property test could pass on a base line that is itself refused."""
    done = tokenbench_in_process(*CASES[case].base)
    if CASES[case].may_succeed:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1, done.stderr
        assert done.stderr.strip().splitlines()[-1].split("error: ", 1)[1].startswith((REACHED, "cannot reach Redis"))


@pytest.mark.parametrize("line_break", ["\n", "\u2028", "\u2029", "\r\n"])
def test_a_file_name_with_a_line_break_is_still_a_one_line_error(line_break, sandbox):
    """What hypothesis found (a newline, then U+2028): the path is part of the message, which must stay one line."""
    done = tokenbench_in_process(*CASES["enqueue"].base, "--trace", f"no{line_break}such.csv")
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["tokenbench: error: Invalid value for '--trace': cannot read no\\nsuch.csv: "
                                        "No such file or directory"]


@pytest.mark.parametrize("case, arguments, message", [
    ("plot", ("--label", "\udc80"), "argument '\\\\udc80' is not valid UTF-8"),
    ("compare", ("--output", "a" * 5000), "Invalid value for '--output': cannot write " + "a" * 5000
     + ": File name too long"),
    ("mock-server", ("--host", "\x80"), "cannot listen on :0: not a host name"),  # \x80 is a control: not shown
])
def test_what_the_property_test_found_is_a_one_line_error(case, arguments, message, sandbox):
    """A byte that is not UTF-8 (argv holds it as a lone surrogate), a file name over the system's limit,
    a host name that cannot be encoded: each was a traceback."""
    done = tokenbench_in_process(*CASES[case].base, *arguments)
    assert done.returncode in (1, 2)
    assert done.stderr.splitlines()[0].startswith(f"tokenbench: error: {message}"), done.stderr


def toml_value(value: object) -> str:
    """``value`` as TOML (strings as JSON writes them: valid TOML basic strings)."""
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")) if not math.isfinite(value) \
            else repr(value)
    if isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(key)} = {toml_value(item)}" for key, item in value.items()) + "}"


TOML_SCALARS = st.one_of(st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1), st.floats(),
                         NASTY.filter(lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text)))
TOML_VALUES = st.recursive(TOML_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


@pytest.mark.parametrize("case", ["enqueue", "run", "sweep"])  # the commands that take --config
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_of_any_option_in_a_config_file_is_one_line(case, data, sandbox):
    """The same for `--config FILE.toml`, whose values are TOML's (booleans, numbers, lists, tables) before they
    are flags', and whose keys include the switches."""
    keys = sorted(param.opts[-1][2:] for param in cli.commands[CASES[case].base[0]].params
                  if isinstance(param, click.Option) and param.opts[-1].startswith("--")
                  and param.opts[-1] not in CASES[case].not_drawn | {"--config"})
    lines = [f"{data.draw(st.sampled_from(keys), label='key')} = {toml_value(data.draw(TOML_VALUES))}"
             for _ in range(2)]
    Path("config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = tokenbench_in_process(*CASES[case].base, "--config", "config.toml")
    assert_one_line(done, may_succeed=False)
