"""The linter and the type checker as tests, so that the README's test command runs them; CI (.ci/run)
runs the same commands first, on their own."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHECKS = {
    "ruff": "python -m ruff check tokenbench tests benchmarks",
    "mypy": "python -m mypy tokenbench",
    # the records, keys and report code everything else reads: strict
    "mypy strict": "python -m mypy --strict tokenbench/shared tokenbench/aggregator",
}


@pytest.mark.parametrize("name", CHECKS)
def test_the_check_finds_nothing(name):
    _python, *arguments = shlex.split(CHECKS[name])
    done = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ci_runs_each_check_before_the_tests():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    tests_at = next(i for i, line in enumerate(lines) if "pytest" in line)
    assert all(CHECKS[name] in lines[:tests_at] for name in CHECKS)
