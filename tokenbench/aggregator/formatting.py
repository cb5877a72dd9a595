"""How a figure is written in the table and the HTML page: thousands separated, '-' when unknown."""

from __future__ import annotations


def figure(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
