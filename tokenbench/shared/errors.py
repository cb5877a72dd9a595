"""The one exception type that reaches the user as a one-line message."""

import click


class TokenbenchError(click.ClickException):
    """A problem the user can fix; the CLI prints its message on one line and exits with 1."""

    exit_code = 1
