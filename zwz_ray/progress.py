"""Concise progress lines for output that is not a terminal (``ray job submit`` logs, pipes, files).

In a terminal Ray Data draws its own progress bars. Elsewhere those bars become multi-line status dumps
every few seconds, so ``zwz_ray.runtime`` turns them off and each job loop reports through a
``Progress`` instead: one line every ``ZWZ_PROGRESS_INTERVAL_S`` seconds (default 60) and one at the
end, with counts in and out, drops, the rate and, when the total is known, an ETA.
"""

from __future__ import annotations

import os
import threading
import time

from zwz_ray.logs import get_logger, stdout_is_terminal

log = get_logger("zwz_ray.progress")

DEFAULT_INTERVAL_S = 60.0


def interactive() -> bool:
    """True when the driver's stdout is a terminal (Ray's progress bars render there)."""
    return stdout_is_terminal()


def interval_s() -> float:
    raw = os.environ.get("ZWZ_PROGRESS_INTERVAL_S", "")
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts for one loop (a stage, a model's pass); logs a line per interval and a final one.

    Use it as a context manager (or call ``finish`` / ``close``) so its heartbeat thread stops.

    ``done`` counts the loop's unit (images, answers) against ``total``; ``counts`` carries the other
    figures of the line (kept rows, drops, failures), reported as they stand. Silent in a terminal,
    where Ray's progress bars already show the same, unless ``always`` is set.
    """

    def __init__(self, what: str, unit: str, total: int | None = None, *, always: bool = False,
                 every_s: float | None = None, clock=time.monotonic):
        self.what, self.unit, self.total = what, unit, total
        self.enabled = always or not interactive()
        self.every_s = interval_s() if every_s is None else every_s
        self._clock = clock
        self.start = self._last = clock()
        self.done = 0
        self.counts: dict[str, int] = {}
        self.lines: list[str] = []  # what was logged, in order
        self._lock, self._stop = threading.Lock(), threading.Event()
        if self.enabled and self.every_s > 0:
            # A heartbeat: long steps (model start-up, a slow first image) still show the job is alive.
            threading.Thread(target=self._beat, name=f"progress-{what}", daemon=True).start()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s / 4):
            self.update()

    def update(self, n: int = 0, **counts: int) -> None:
        with self._lock:
            self.done += n
            self.counts.update(counts)
            now = self._clock()
            if self.enabled and not self._stop.is_set() and now - self._last >= self.every_s:
                self._last = now
                self._emit(self.line(now))

    def close(self) -> None:
        """Stop the heartbeat without a final line (the caller logs its own summary)."""
        self._stop.set()

    def finish(self) -> str:
        """Stop the heartbeat; log (and return) the final line."""
        self.close()
        with self._lock:
            line = self.line(self._clock(), final=True)
            if self.enabled:
                self._emit(line)
        return line

    def line(self, now: float, final: bool = False) -> str:
        elapsed = max(now - self.start, 1e-9)
        of = f"/{self.total}" if self.total is not None else ""
        parts = [f"{self.what}: {self.done}{of} {self.unit}"]
        parts += [f"{v} {k}" for k, v in self.counts.items()]
        parts.append(f"{self.done / elapsed:.2f} {self.unit}/s")
        if final:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and self.done:
            parts.append(f"ETA {_duration((self.total - self.done) * elapsed / self.done)}")
        else:
            parts.append(f"{_duration(elapsed)} so far")
        return ", ".join(parts)

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        log.info("%s", line)
