"""The login throttle's memory: failures count within the window, then are forgotten."""

from __future__ import annotations

from mailroute.web.auth import Throttle


def test_failures_block_within_the_window_and_age_out() -> None:
    throttle = Throttle(attempts=3, window=60)
    keys = ("addr:10.0.0.1", "name:olga")
    for second in range(3):
        assert not throttle.blocked(keys, 100.0 + second)
        throttle.failed(keys, 100.0 + second)
    assert throttle.blocked(keys, 110.0)
    assert throttle.blocked(("name:olga",), 110.0)  # the name alone, from anywhere
    assert not throttle.blocked(keys, 163.0)  # all three aged out
    assert len(throttle) == 0  # and forgotten


def test_sprayed_names_cost_memory_for_one_window_only() -> None:
    throttle = Throttle(attempts=5, window=60)
    for n in range(Throttle.SWEEP_ABOVE + 500):
        throttle.failed((f"name:user{n}",), 0.0)
    assert len(throttle) == Throttle.SWEEP_ABOVE + 500
    throttle.failed(("name:late",), 1000.0)  # long after: the sweep forgets the rest
    assert len(throttle) == 1
