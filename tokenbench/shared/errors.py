"""The exceptions that reach the user as a one-line message. Plain exceptions: the CLI (cli.main)
prints them and exits with their code, so nothing below the CLI depends on Click."""

from __future__ import annotations


class TokenbenchError(Exception):
    """A problem the user can fix; the CLI prints its message on one line and exits with 1."""

    exit_code = 1

    def format_message(self) -> str:
        return str(self)


class UsageProblem(TokenbenchError):
    """Bad input found below the CLI (a URL, a missing option): exit 2, worded as Click words its own."""

    exit_code = 2

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option  # the flag it is about, e.g. "--base-url"

    def format_message(self) -> str:
        message = super().format_message()
        return f"Invalid value for '{self.option}': {message}" if self.option else message
