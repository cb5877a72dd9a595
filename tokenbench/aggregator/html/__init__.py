"""The self-contained HTML report of one or more results (`tokenbench plot`, `run --html`)."""

from tokenbench.aggregator.html.page import render_report, render_sweep_report

__all__ = ["render_report", "render_sweep_report"]
