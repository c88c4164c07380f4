"""Stage quantiles from histogram scrapes: interpolated within buckets, over the span."""

from __future__ import annotations

import math

from benchmarks.stages import quantile, stage_table


def test_a_quantile_is_interpolated_within_its_bucket() -> None:
    buckets = [(0.001, 0.0), (0.002, 50.0), (0.005, 100.0), (math.inf, 100.0)]
    assert quantile(buckets, 0.5) == 0.002
    assert math.isclose(quantile(buckets, 0.25), 0.0015)
    assert math.isclose(quantile(buckets, 0.99), 0.002 + 0.003 * 49 / 50)
    assert math.isnan(quantile([(math.inf, 0.0)], 0.5))


def test_only_what_was_observed_between_the_scrapes_counts() -> None:
    name = "optionsfeed_end_to_end_seconds"
    before = {name: [(0.001, 100.0), (0.01, 100.0), (math.inf, 100.0)]}
    after = {name: [(0.001, 100.0), (0.01, 200.0), (math.inf, 200.0)]}
    table = stage_table(before, after)
    assert table == {"written": [5.5, 9.91]}
