"""Progress lines for logs that are not a terminal: interval, counts, rate, ETA, heartbeat."""

from __future__ import annotations

import time

from zwz_ray.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_interval_with_counts_rate_and_eta():
    clock = Clock()
    with Progress("synthesis", "images", total=10, always=True, every_s=30, clock=clock) as p:
        clock.now = 10
        p.update(1, **{"kept rows": 2, "drops": 1})  # inside the interval: silent
        clock.now = 40
        p.update(3, **{"kept rows": 5, "drops": 4})
        assert p.lines == ["synthesis: 4/10 images, 5 kept rows, 4 drops, 0.10 images/s, ETA 1m00s"]
        clock.now = 50
        final = p.finish()
    assert final == "synthesis: 4/10 images, 5 kept rows, 4 drops, 0.08 images/s, done in 50s"
    assert p.lines[-1] == final and len(p.lines) == 2


def test_heartbeat_reports_a_loop_that_has_not_advanced():
    with Progress("evaluating base", "answers", always=True, every_s=0.2) as p:
        deadline = time.monotonic() + 10
        while not p.lines and time.monotonic() < deadline:
            time.sleep(0.05)
    assert p.lines and p.lines[0].startswith("evaluating base: 0 answers, 0.00 answers/s,")
    count = len(p.lines)
    time.sleep(0.5)
    assert len(p.lines) == count  # closed: the heartbeat stopped


def test_silent_in_a_terminal_unless_asked(monkeypatch):
    monkeypatch.setattr("zwz_ray.progress.interactive", lambda: True)
    p = Progress("synthesis", "images", total=2, every_s=0)
    p.update(1)
    p.finish()
    assert p.lines == [] and not p.enabled
