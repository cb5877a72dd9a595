"""The README's commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "pip install -q -e '.[test]' && python -m pytest -q -n 2"


def test_ci_runs_the_readme_test_command():
    """The same whole line in both: a flag added to one only (a test runner's -n) shows here."""
    assert TEST_COMMAND in (ROOT / "README.md").read_text().splitlines()
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text().splitlines()
