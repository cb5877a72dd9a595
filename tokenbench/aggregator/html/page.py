"""The HTML report: one self-contained page (inline CSS and SVG, no script, nothing fetched)."""

from __future__ import annotations

from html import escape
from typing import Any

from tokenbench import __version__
from tokenbench.aggregator.formatting import figure
from tokenbench.aggregator.html.charts import (
    cdf_chart,
    e2el_series,
    itl_series,
    request_records,
    server_gauges_chart,
    sweep_curve_chart,
    timeline_chart,
    token_rate_chart,
    ttft_series,
)
from tokenbench.aggregator.sweep import level_name

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.sub { color: #666; margin: 0 0 16px; }
table { border-collapse: collapse; margin: 8px 0 20px; }
th, td { padding: 3px 10px; border-bottom: 1px solid #ddd; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.num { font-variant-numeric: tabular-nums; }
svg.chart { display: block; margin: 8px 0 20px; }
svg .plot-area { fill: #fafafa; stroke: #ccc; }
svg .grid { stroke: #e4e4e4; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
svg text.title { font-size: 14px; font-weight: 600; fill: #222; }
svg text.note { fill: #888; }
p.banner { background: #fff3cd; border: 1px solid #e0c36c; padding: 8px 12px; margin: 0 0 12px; }
p.banner.failed { background: #f8d7da; border-color: #d98a92; }
td.text { text-align: left; max-width: 60em; overflow-wrap: anywhere; }
"""

# (column heading, key in the result, distribution key or None, decimals)
_SUMMARY_COLUMNS = (
    ("requests ok", "successful_runs", None, 0),
    ("failed", "failed_runs", None, 0),
    ("TTFT p50 ms", "ttft_ms", "p50", 1),
    ("TTFT p99 ms", "ttft_ms", "p99", 1),
    ("ITL p50 ms", "itl_ms", "p50", 2),
    ("ITL p99 ms", "itl_ms", "p99", 2),
    ("TPOT p50 ms", "tpot_ms", "p50", 2),
    ("E2EL p50 ms", "e2e_latency_ms", "p50", 0),
    ("output tok/s", "output_throughput_tokens_per_s", None, 1),
    ("req/s", "request_throughput_per_s", None, 2),
    ("concurrency", "mean_concurrency", None, 1),
)


def render_sweep_report(document: dict[str, Any]) -> str:
    """The page of a sweep: its throughput-latency curves, then every level's run as in ``render_report``."""
    curves = [sweep_curve_chart(document["levels"], metric, name)
              for metric, name in (("ttft", "TTFT"), ("itl", "ITL"), ("e2e_latency", "E2EL"))]
    named = [(level_name(level), report) for level, report in zip(document["levels"], document["runs"])]
    return render_report(named, title="tokenbench sweep", lead_charts=[chart.render() for chart in curves])


def render_report(named_results: list[tuple[str, dict[str, Any]]], title: str = "tokenbench report",
                  lead_charts: list[str] | None = None) -> str:
    """The page for one or more result documents, each with the label it is shown under."""
    if not named_results:
        raise ValueError("no results to plot")
    named_records = [(label, request_records(result)) for label, result in named_results]  # parsed once
    any_success = any(result.get("successful_runs") for _, result in named_results)
    distributions = [
        cdf_chart("TTFT distribution", "time to first token (ms)",
                  [ttft_series(label, records) for label, records in named_records]),
        cdf_chart("ITL distribution", "inter-token latency (ms)",
                  [itl_series(label, records) for label, records in named_records]),
        cdf_chart("End-to-end latency distribution", "E2EL (ms)",
                  [e2el_series(label, records) for label, records in named_records]),
        token_rate_chart(named_records),
    ] if any_success else []
    servers = [chart for (label, result), (_, records) in zip(named_results, named_records)
               if (chart := server_gauges_chart(label, result, records)) is not None]
    timelines = [timeline_chart(label, records) for label, records in named_records]
    body = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="sub">{escape(_subtitle(named_results))}</p>',
        *_banners(named_results),
        _summary_table(named_results),
        _turns_table(named_results),
        _errors_table(named_results),
        *(lead_charts or []),
        *(chart.render() for chart in distributions + servers + timelines),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _banners(named_results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """What a reader must know before any figure: a run that did not finish, or in which nothing succeeded."""
    banners = []
    for label, result in named_results:
        total, ok = result.get("num_prompts") or 0, result.get("successful_runs") or 0
        if total and not ok:
            banners.append(f'<p class="banner failed"><b>{escape(label)}: no request succeeded</b> ({total} '
                           "failed or have no record): there are no latency figures to draw; the errors are "
                           "below.</p>")
        if result.get("complete") is False:
            why = result.get("interrupted_reason") or ("interrupted" if result.get("interrupted") else
                                                       "records missing when the report was made")
            missing = result.get("missing_runs") or 0
            banners.append(f'<p class="banner"><b>{escape(label)}: incomplete run</b>: {missing} of {total} requests '
                           f"have no record ({escape(str(why))}). Every figure covers only the requests that "
                           "finished.</p>")
    return banners


def _errors_table(named_results: list[tuple[str, dict[str, Any]]]) -> str:
    """Every kind of failure: how many, and one example (types defined in docs/failure-semantics.md)."""
    rows = []
    for label, result in named_results:
        errors = result.get("errors") or {}
        for error_type, summary in sorted(errors.items(), key=lambda item: -(item[1].get("count") or 0)):
            rows.append(f"<tr><td>{escape(label)}</td><td>{escape(error_type)}</td>"
                        f'<td class="num">{summary.get("count", 0):,}</td>'
                        f'<td class="text">{escape(str(summary.get("example") or ""))}</td></tr>')
    if not rows:
        return ""
    return ("<h2>Errors</h2>\n<table>\n<tr><th>result</th><th>type</th><th>count</th><th>example</th></tr>\n"
            + "\n".join(rows) + "\n</table>")


def _turns_table(named_results: list[tuple[str, dict[str, Any]]]) -> str:
    """Conversations: TTFT and the input (growing with the history, partly cached) by turn number."""
    rows = []
    for label, result in named_results:
        for entry in result.get("turns") or []:
            ttft = entry.get("ttft_ms") or {}
            share = entry.get("cached_token_share")
            cells = [f'{entry.get("successful", 0)}/{entry.get("requests", 0)}', figure(ttft.get("p50")),
                     figure(ttft.get("p99")), figure(entry.get("mean_input_tokens")),
                     figure(entry.get("mean_cached_tokens")), "-" if share is None else f"{100 * share:.1f} %"]
            rows.append(f"<tr><td>{escape(label)}</td><td>{entry.get('turn')}</td>"
                        + "".join(f'<td class="num">{cell}</td>' for cell in cells) + "</tr>")
    if not rows:
        return ""
    return ("<h2>By conversation turn</h2>\n<table>\n<tr><th>result</th><th>turn</th><th>ok/all</th>"
            "<th>TTFT p50 (ms)</th><th>TTFT p99 (ms)</th><th>input tokens (mean)</th><th>cached tokens (mean)</th>"
            "<th>cached share</th></tr>\n" + "\n".join(rows) + "\n</table>")



def _subtitle(named_results: list[tuple[str, dict[str, Any]]]) -> str:
    runs = "; ".join(f"{label}: {result.get('model')} at {result.get('base_url')}, run {result.get('run_id')}, "
                     f"started {result.get('started_at')}" for label, result in named_results)
    return f"{runs}. Drawn by tokenbench {__version__}; definitions in docs/metrics.md."


def _summary_table(named_results: list[tuple[str, dict[str, Any]]]) -> str:
    head = "".join(f"<th>{escape(name)}</th>" for name, *_ in _SUMMARY_COLUMNS)
    rows = []
    for label, result in named_results:
        cells = "".join(f'<td class="num">{_cell(result, key, part, digits)}</td>'
                        for _, key, part, digits in _SUMMARY_COLUMNS)
        rows.append(f"<tr><td>{escape(label)}</td>{cells}</tr>")
    return f"<table>\n<tr><th>result</th>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def _cell(result: dict[str, Any], key: str, part: str | None, digits: int) -> str:
    value = result.get(key)
    if part is not None:
        value = (value or {}).get(part)
    return figure(value, digits)
