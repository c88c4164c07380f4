"""Flush pacing: the interval follows the load (pure, no clock)."""

from __future__ import annotations

import itertools

import pytest

from optionsfeed.gateway.pacing import MIN_INTERVAL_S, Pacer, PacingSettings

ON = PacingSettings(target=0.7, max_interval_s=0.1)


def test_off_by_default() -> None:
    """The default never delays a frame, however loaded the process."""
    pacer = Pacer()
    for _ in range(10):
        assert pacer.observe(cpu_s=0.05, wall_s=0.05, lag_s=0.02) == 0.0


def test_idle_writes_at_once() -> None:
    """Below the target, with the loop on time, frames go out on the next loop turn."""
    pacer = Pacer(ON)
    for _ in range(10):
        assert pacer.observe(cpu_s=0.01, wall_s=0.05, lag_s=0.0002) == 0.0


def test_load_lengthens_the_interval_up_to_the_bound_and_calm_brings_it_back() -> None:
    """Over the target the interval grows to max_interval_s; when calm, back to 0."""
    pacer = Pacer(PacingSettings(target=0.7, max_interval_s=0.1))
    seen = [pacer.observe(cpu_s=0.045, wall_s=0.05, lag_s=0.0) for _ in range(20)]
    assert seen[0] == MIN_INTERVAL_S
    assert all(b >= a for a, b in itertools.pairwise(seen))
    assert seen[-1] == 0.1
    calm = [pacer.observe(cpu_s=0.005, wall_s=0.05, lag_s=0.0) for _ in range(20)]
    assert all(b <= a for a, b in itertools.pairwise(calm))
    assert calm[-1] == 0.0


def test_a_late_loop_lengthens_the_interval_even_when_this_process_uses_little_cpu() -> None:
    """Another process holding the core shows as lag, not as our CPU time."""
    pacer = Pacer(ON)
    assert pacer.observe(cpu_s=0.01, wall_s=0.05, lag_s=0.02) == MIN_INTERVAL_S


def test_between_calm_and_target_the_interval_holds() -> None:
    """Hysteresis: at 60% of a core against a 70% target, nothing changes."""
    pacer = Pacer(ON)
    for _ in range(5):
        pacer.observe(cpu_s=0.05, wall_s=0.05, lag_s=0.0)
    held = pacer.interval_s
    for _ in range(5):
        assert pacer.observe(cpu_s=0.03, wall_s=0.05, lag_s=0.002) == held


@pytest.mark.parametrize("settings", [PacingSettings(target=0.0), PacingSettings(target=1.5),
                                      PacingSettings(max_interval_s=-1)])  # fmt: skip
def test_settings_out_of_range_are_refused(settings: PacingSettings) -> None:
    with pytest.raises(ValueError, match="must be"):
        Pacer(settings)
