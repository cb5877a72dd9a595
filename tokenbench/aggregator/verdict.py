"""The one rule by which `run`, `report` and `sweep` pass or fail a run: its share of failed requests."""

from __future__ import annotations

from tokenbench.aggregator.schema import Report

DEFAULT_MAX_ERROR_RATE = 0.1


def requests_due(report: Report) -> int:
    """The requests a run was to send: all its prompts, but for a --duration run those sent before its
    end (and any left out by --measure-after)."""
    return report["num_prompts"] - report["not_sent"] - report["excluded_requests"]


def error_rate(report: Report) -> float | None:
    """Share of a run's requests without a successful record (failed or missing); None without requests."""
    total = requests_due(report)
    return (total - report["successful_runs"]) / total if total else None


def failure_reason(report: Report, max_error_rate: float) -> str | None:
    """Why the run counts as failed (none succeeded, or more failed than ``max_error_rate``), or None."""
    total = requests_due(report)
    if total and report["successful_runs"] == 0:
        return f"no request of {total} succeeded (see the errors above)"
    rate = error_rate(report)
    if rate is not None and rate > max_error_rate:
        return (f"{total - report['successful_runs']} of {total} requests failed or have no record ({rate:.1%}), "
                f"more than --max-error-rate {max_error_rate:.1%}")
    return None
