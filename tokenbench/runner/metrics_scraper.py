"""Scraping a server's Prometheus `/metrics` once a second while a run goes on (aggregator/server_metrics.py
reads them). It runs in a thread of the process that waits for the run (`run`, `sweep`, `report`),
never in a worker: the workers' import path stays as lean as what they measure.

Each scrape keeps when it was asked for and when it was answered: a server busy streaming may
answer late (vLLM serves `/metrics` on the loop that drains its engine), and its gauges then
describe the answer's moment, not the question's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from tokenbench.aggregator.schema import ServerMetrics
from tokenbench.aggregator.server_metrics import Scrape, parse_scrape, summarize

SCRAPE_INTERVAL_S = 1.0
SCRAPE_TIMEOUT_S = 2.0
MAX_METRICS_BYTES = 16 * 2**20
NO_METRICS_MODES = ("openrouter",)  # hosted APIs: no /metrics to ask


@dataclass(frozen=True)
class MetricsSource:
    """Where to scrape: a URL given with --server-metrics (explicit), or the endpoint's default."""

    url: str | None = None  # None: {origin of the base URL}/metrics
    explicit: bool = False

    def url_for(self, mode: str, base_url: str) -> str | None:
        if self.url is not None:
            return self.url
        if mode in NO_METRICS_MODES:
            return None
        parts = urlsplit(base_url)
        return f"{parts.scheme}://{parts.netloc}/metrics"


def start_scraper(source: MetricsSource | None, mode: str, base_url: str,
                  warn: Callable[[str], None]) -> MetricsScraper | None:
    """A running scraper, or None: metrics off, none to ask (quietly, unless the URL was given), or
    nothing there."""
    url = source.url_for(mode, base_url) if source is not None else None
    if url is None:
        return None
    scraper = MetricsScraper(url)
    problem = scraper.start()
    if problem is None:
        return scraper
    if source is not None and source.explicit:
        warn(f"warning: {problem}; the result has no server metrics")
    return None


def fetch_scrape(url: str, clock: Callable[[], float] = time.time) -> Scrape:
    """One scrape; an OSError or ValueError says why there is none."""
    import urllib.request  # here, not at import: every command's start-up would pay ~30 ms for it

    sent = clock()
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:  # noqa: S310 - the user's server
        text = response.read(MAX_METRICS_BYTES).decode("utf-8", errors="replace")
    scrape = parse_scrape(text, sent, clock())
    if scrape.server is None:
        raise ValueError("no vllm: or sglang: metrics in it")
    return scrape


class MetricsScraper:
    """``start()`` scrapes once (None: there is nothing to scrape there) and then every second in a
    thread; ``finish()`` scrapes a last time and summarises."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._scrapes: list[Scrape] = []
        self._failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tokenbench-metrics", daemon=True)

    def start(self) -> str | None:
        """Scrape now; on success go on every second and return None, else return why not."""
        try:
            self._scrapes.append(fetch_scrape(self.url))
        except (OSError, ValueError) as exc:
            return f"no server metrics at {self.url}: {_reason(exc)}"
        self._thread.start()
        return None

    def _loop(self) -> None:
        while not self._stop.wait(SCRAPE_INTERVAL_S):
            self._scrape()

    def _scrape(self) -> None:
        try:
            self._scrapes.append(fetch_scrape(self.url))
        except (OSError, ValueError):
            self._failed += 1

    def finish(self) -> ServerMetrics | None:
        """Stop, scrape once more (the run's last counts), and the summary for the result."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(SCRAPE_TIMEOUT_S + 1)
            self._scrape()
        return summarize(self.url, self._scrapes, self._failed)


def _reason(exc: Exception) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc)
