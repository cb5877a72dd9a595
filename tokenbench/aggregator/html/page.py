"""The HTML report: one self-contained page (inline CSS and SVG, no script, nothing fetched)."""

from __future__ import annotations

from html import escape

from tokenbench import __version__
from tokenbench.aggregator.formatting import figure
from tokenbench.aggregator.headline import E2EL, FIGURES, ITL, MEAN_CONCURRENCY, THROUGHPUTS, TTFT
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
from tokenbench.aggregator.schema import Report, SweepDocument
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



def render_sweep_report(document: SweepDocument) -> str:
    """The page of a sweep: its throughput-latency curves, then every level's run as in ``render_report``."""
    curves = [sweep_curve_chart(document["levels"], latency) for latency in (TTFT, ITL, E2EL)]
    named = [(level_name(level), report) for level, report in zip(document["levels"], document["runs"])]
    return render_report(named, title="tokenbench sweep", lead_charts=[chart.render() for chart in curves])


def render_report(named_results: list[tuple[str, Report]], title: str = "tokenbench report",
                  lead_charts: list[str] | None = None) -> str:
    """The page for one or more result documents, each with the label it is shown under."""
    if not named_results:
        raise ValueError("no results to plot")
    named_records = [(label, request_records(result)) for label, result in named_results]  # parsed once
    any_success = any(result["successful_runs"] for _, result in named_results)
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


def _banners(named_results: list[tuple[str, Report]]) -> list[str]:
    """What a reader must know before any figure: a run that did not finish, or in which nothing succeeded."""
    banners = []
    for label, result in named_results:
        total, ok = result["num_prompts"], result["successful_runs"]
        if total and not ok:
            banners.append(f'<p class="banner failed"><b>{escape(label)}: no request succeeded</b> ({total} '
                           "failed or have no record): there are no latency figures to draw; the errors are "
                           "below.</p>")
        if not result["complete"]:
            why = result["interrupted_reason"] or ("interrupted" if result["interrupted"] else
                                                   "records missing when the report was made")
            missing = result["missing_runs"]
            banners.append(f'<p class="banner"><b>{escape(label)}: incomplete run</b>: {missing} of {total} requests '
                           f"have no record ({escape(str(why))}). Every figure covers only the requests that "
                           "finished.</p>")
    return banners


def _errors_table(named_results: list[tuple[str, Report]]) -> str:
    """Every kind of failure: how many, and one example (types defined in docs/failure-semantics.md)."""
    rows = []
    for label, result in named_results:
        for error_type, summary in sorted(result["errors"].items(), key=lambda item: -item[1]["count"]):
            rows.append(f"<tr><td>{escape(label)}</td><td>{escape(error_type)}</td>"
                        f'<td class="num">{summary["count"]:,}</td>'
                        f'<td class="text">{escape(summary["example"] or "")}</td></tr>')
    if not rows:
        return ""
    return ("<h2>Errors</h2>\n<table>\n<tr><th>result</th><th>type</th><th>count</th><th>example</th></tr>\n"
            + "\n".join(rows) + "\n</table>")


def _turns_table(named_results: list[tuple[str, Report]]) -> str:
    """Conversations: TTFT and the input (growing with the history, partly cached) by turn number."""
    rows = []
    for label, result in named_results:
        for entry in result["turns"] or []:
            ttft = entry["ttft_ms"]
            share = entry["cached_token_share"]
            cells = [f'{entry["successful"]}/{entry["requests"]}', figure(ttft["p50"]), figure(ttft["p99"]),
                     figure(entry["mean_input_tokens"]), figure(entry["mean_cached_tokens"]),
                     "-" if share is None else f"{100 * share:.1f} %"]
            rows.append(f"<tr><td>{escape(label)}</td><td>{entry['turn']}</td>"
                        + "".join(f'<td class="num">{cell}</td>' for cell in cells) + "</tr>")
    if not rows:
        return ""
    return ("<h2>By conversation turn</h2>\n<table>\n<tr><th>result</th><th>turn</th><th>ok/all</th>"
            "<th>TTFT p50 (ms)</th><th>TTFT p99 (ms)</th><th>input tokens (mean)</th><th>cached tokens (mean)</th>"
            "<th>cached share</th></tr>\n" + "\n".join(rows) + "\n</table>")



def _subtitle(named_results: list[tuple[str, Report]]) -> str:
    runs = "; ".join(f"{label}: {result['model']} at {result['base_url']}, run {result['run_id']}, "
                     f"started {result['started_at']}" for label, result in named_results)
    return f"{runs}. Drawn by tokenbench {__version__}; definitions in docs/metrics.md."


def _summary_table(named_results: list[tuple[str, Report]]) -> str:
    """Each result's headline figures (aggregator/headline.py), one row each."""
    heads = ["requests ok", "failed", *(f"{f.label} ms" for f in FIGURES), *(t.name for t in THROUGHPUTS),
             "concurrency"]
    rows = []
    for label, result in named_results:
        values = [figure(result["successful_runs"], 0), figure(result["failed_runs"], 0),
                  *(figure(result[f.latency.key][f.percentile], f.latency.decimals) for f in FIGURES),
                  *(figure(result[t.key], t.decimals) for t in (*THROUGHPUTS, MEAN_CONCURRENCY))]
        rows.append(f"<tr><td>{escape(label)}</td>" + "".join(f'<td class="num">{v}</td>' for v in values) + "</tr>")
    return ("<table>\n<tr><th>result</th>" + "".join(f"<th>{escape(head)}</th>" for head in heads) + "</tr>\n"
            + "\n".join(rows) + "\n</table>")
