"""The HTML report: chart maths, a page that needs nothing from the network, and Chromium really drawing it."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from tests.builders import make_meta, make_record
from tests.helpers import load, tokenbench
from tokenbench.aggregator.html import render_report
from tokenbench.aggregator.html.charts import bin_width_s, cdf_points, token_arrivals, token_rate
from tokenbench.aggregator.html.svg import PALETTE, nice_ticks
from tokenbench.aggregator.report import build_report
from tokenbench.shared.records import RequestRecord, RunMeta


def record(index: int, start: float, offsets: list[float], tokens: int, chunk_tokens: list[int] | None = None,
           success: bool = True) -> RequestRecord:
    return make_record(index, offsets, worker=f"h:{index % 3}", started_at=start, success=success,
                       elapsed_ms=(offsets or [5.0])[-1] + 1, output_tokens=tokens, chunk_tokens=chunk_tokens,
                       output_tokens_source="chunks")


def report(records: list[RequestRecord], run_id: str = "r") -> dict:
    meta = make_meta(len(records), run_id=run_id, created_at=0.0, prompt_ids=[r.prompt_id for r in records])
    return build_report(meta, records)


@given(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6))
def test_ticks_are_round_and_cover_the_range(low, span):
    ticks = nice_ticks(low, low + span)
    assert ticks[0] <= low + 1e-6 * span and ticks[-1] >= low + span - 1e-6 * span
    step = ticks[1] - ticks[0]
    mantissa = step / 10 ** int(f"{step:e}".split("e")[1])
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-4  # float error of a step far from zero
    assert 2 <= len(ticks) <= 12


def test_cdf_is_exact_for_few_samples_and_capped_for_many():
    assert cdf_points([3.0, 1.0, 2.0, 4.0]) == [(1.0, 25.0), (2.0, 50.0), (3.0, 75.0), (4.0, 100.0)]
    many = cdf_points([float(v) for v in range(100_000)], max_points=400)
    assert len(many) == 400 and many[0] == (0.0, 0.0) and many[-1] == (99_999.0, 100.0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(many, many[1:]))


@given(st.lists(st.tuples(st.floats(0, 100), st.integers(1, 8)), min_size=1, max_size=200),
       st.sampled_from([0.1, 0.5, 1.0, 2.0]))
def test_token_rate_windows_keep_every_token(arrivals, width):
    times, tokens = np.array([t for t, _ in arrivals]), np.array([float(n) for _, n in arrivals])
    points = token_rate(times, tokens, 0.0, width)
    assert sum(rate * width for _, rate in points) == pytest.approx(sum(n for _, n in arrivals))
    assert len(points) == int(max(times) // width) + 1


def test_token_arrivals_use_per_chunk_counts_or_spread_the_total():
    with_counts = record(0, 100.0, [10.0, 20.0], 5, chunk_tokens=[2, 3])
    without = record(1, 200.0, [10.0, 20.0, 30.0, 40.0], 8)
    failed = record(2, 300.0, [10.0], 1, success=False)
    times, tokens = token_arrivals([with_counts, without, failed])
    assert times.tolist() == pytest.approx([100.01, 100.02, 200.01, 200.02, 200.03, 200.04])
    assert tokens.tolist() == [2, 3, 2, 2, 2, 2]


def test_bin_width_is_round_and_gives_about_sixty_windows():
    assert bin_width_s(60) == 1 and bin_width_s(9) == 0.2 and bin_width_s(600) == 10


def test_page_is_self_contained_and_escapes_what_it_shows():
    records = [record(i, 1000.0 + i * 0.05, [20.0 + i, 30.0 + i, 40.0 + i], 3) for i in range(12)]
    records.append(record(12, 1000.2, [], 0, success=False))
    records[0].prompt_id = "<script>alert(1)</script>"
    page = render_report([("base<line>", report(records)), ("other", report(records[:6], "r2"))])
    assert "<script" not in page.replace("&lt;script&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "base&lt;line&gt;" in page
    # Nothing is fetched: no external resource of any kind, and no script at all.
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)
    # TTFT, ITL and E2EL distributions, tokens/s over time, and a timeline per result.
    assert page.count("<svg ") == 6
    assert page.count('class="series"') == 2 * 4  # both results in each distribution and the tokens/s chart


def test_an_incomplete_run_has_a_banner_and_every_page_with_failures_lists_its_errors():
    records = [record(i, 1000.0 + i * 0.05, [20.0 + i, 30.0 + i], 2) for i in range(6)]
    records.append(record(6, 1000.4, [], 0, success=False))
    records[6].error = "HTTP 500: <b>boom</b>"
    meta = RunMeta(run_id="r", mode="mock", model="m", base_url="http://x/v1", max_tokens=16, num_prompts=10,
                   queue="q", created_at=0.0, prompt_ids=[f"p{i}" for i in range(10)], tokenbench_version="t")
    result = build_report(meta, records, missing=[7, 8, 9], interrupted=True, interrupted_reason="Ctrl-C or SIGTERM")
    page = render_report([("cut", result)])
    assert ('<p class="banner"><b>cut: incomplete run</b>: 3 of 10 requests have no record (Ctrl-C or SIGTERM). '
            "Every figure covers only the requests that finished.</p>") in page
    assert "<h2>Errors</h2>" in page
    assert ('<td>cut</td><td>http_error</td><td class="num">1</td>'
            '<td class="text">HTTP 500: &lt;b&gt;boom&lt;/b&gt;') in page
    assert page.count("<svg ") == 5  # the distributions and the timeline are still drawn
    complete = render_report([("whole", report(records[:6]))])
    assert 'class="banner' not in complete and "<h2>Errors</h2>" not in complete


def test_an_all_failed_run_shows_its_errors_instead_of_empty_charts():
    failed = [record(i, 1000.0 + i * 0.1, [], 0, success=False) for i in range(4)]
    page = render_report([("down", report(failed))])
    assert '<p class="banner failed"><b>down: no request succeeded</b> (4 failed or have no record)' in page
    assert '<td>down</td><td>http_error</td><td class="num">4</td>' in page
    assert page.count("<svg ") == 1  # only the timeline of the failed requests: no empty distributions


def test_plot_rejects_what_is_not_a_result(tmp_path):
    (tmp_path / "x.json").write_text("[1, 2]")
    outcome = tokenbench("plot", str(tmp_path / "x.json"), "-o", str(tmp_path / "x.html"))
    assert outcome.returncode == 2 and "not a tokenbench result" in outcome.stderr
    assert len(outcome.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.html").exists()


def color_share(image: Image.Image, hex_color: str) -> float:
    """Share of the screenshot's pixels within a small distance of ``hex_color``."""
    target = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    data = image.convert("RGB").tobytes()
    pixels = zip(data[0::3], data[1::3], data[2::3])
    close = sum(1 for pixel in pixels if sum(abs(a - b) for a, b in zip(pixel, target)) <= 30)
    return close / (len(data) // 3)


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_chromium_draws_every_chart_of_real_runs(redis_url, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is needed for this test (.ci/run installs it)"
    for name, fault_rate in (("first", "0.25"), ("second", "0")):
        run = tokenbench("run", "--mode", "mock", "--prompts", "16", "--concurrency", "4", "--max-tokens", "24",
                         "--mock-ttft-ms", "15", "--mock-itl-ms", "4", "--mock-fault", "error",
                         "--mock-fault-rate", fault_rate, "--redis-url", redis_url, "--max-error-rate", "0.5",
                         "--output", str(tmp_path / f"{name}.json"), "--html", str(tmp_path / f"{name}.html"))
        assert run.returncode == 0, run.stderr
    assert load(tmp_path / "first.json")["failed_runs"] > 0
    # TTFT, ITL, E2EL, tokens/s, the mock's own /metrics (queue, running) and the timeline.
    assert (tmp_path / "first.html").read_text().count("<svg ") == 6
    plotted = tokenbench("plot", str(tmp_path / "first.json"), str(tmp_path / "second.json"),
                         "-o", str(tmp_path / "both.html"))
    assert plotted.returncode == 0, plotted.stderr

    screenshot = tmp_path / "both.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=900,2900", f"--screenshot={screenshot}", (tmp_path / "both.html").as_uri()],
                   capture_output=True, timeout=60, check=True)
    image = Image.open(screenshot)
    assert image.size == (900, 2900)
    # Painted, not blank: each result's colour, the waiting-for-first-token bars and the failed ones show.
    assert color_share(image, PALETTE[0]) > 0.01  # first result's lines + every streaming bar
    assert color_share(image, PALETTE[1]) > 0.0008  # second result's lines (2 px wide)
    assert color_share(image, PALETTE[3]) > 0.0005  # failed requests' bars (the legend swatches alone: 0.0001)
    assert color_share(image, "#ffffff") < 0.95
