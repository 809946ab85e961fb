"""Latency percentiles from a fixed-size histogram."""

import pytest

from streamflow.histogram import LatencyHistogram


def test_quantiles_are_within_five_percent():
    histogram = LatencyHistogram()
    for ms in range(1, 1001):
        histogram.add(ms / 1000)
    assert histogram.quantile(0.5) == pytest.approx(0.5, rel=0.05)
    assert histogram.quantile(0.99) == pytest.approx(0.99, rel=0.05)
    assert histogram.total == 1000


def test_merge_adds_counts_and_empty_histogram_has_zero_quantiles():
    a, b = LatencyHistogram(), LatencyHistogram()
    assert a.quantile(0.5) == 0.0
    a.add(0.1)
    b.add(10.0)
    a.merge(b)
    assert a.total == 2 and a.quantile(1.0) == pytest.approx(10.0, rel=0.05)
    assert a.cdf()[-1][1] == 1.0


def test_extreme_values_land_in_the_end_buckets():
    histogram = LatencyHistogram()
    histogram.add(0.0)
    histogram.add(10**9)
    assert histogram.quantile(0.0) <= 0.001 and histogram.quantile(1.0) > 86400
