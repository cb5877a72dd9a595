"""Percentiles and summaries against values computed by hand."""

from __future__ import annotations

import pytest

from tokenbench.aggregator.stats import percentile, summarize


@pytest.mark.parametrize(
    "values, q, expected",
    [
        ([1, 2, 3, 4], 50, 2.5),  # position 1.5 between 2 and 3
        ([1, 2, 3, 4], 90, 3.7),  # position 2.7: 3 + 0.7 * (4 - 3)
        ([10, 20, 30, 40, 50], 95, 48.0),  # position 3.8: 40 + 0.8 * 10
        ([10, 20, 30, 40, 50], 99, 49.6),  # position 3.96
        ([7], 99, 7),
        ([0, 100], 0, 0),
        ([0, 100], 100, 100),
    ],
)
def test_linear_interpolation_like_numpy(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_percentile_of_nothing_is_an_error():
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary_by_hand():
    summary = summarize([4, 1, 3, 2])  # unsorted on purpose
    # mean 2.5; population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25
    assert summary == {
        "mean": 2.5,
        "std": pytest.approx(1.118, abs=1e-3),
        "min": 1,
        "p50": 2.5,
        "p90": 3.7,
        "p95": 3.85,
        "p99": 3.97,
        "max": 4,
    }


def test_summary_of_nothing_is_all_none():
    assert set(summarize([]).values()) == {None}
