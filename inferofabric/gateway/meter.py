"""What the gateway measures per endpoint, for the autoscaler (pure: a clock is passed in).

- in flight: requests being served, averaged over time since the last sample (Knative's average
  concurrency: an instant's count would make a burst look like nothing between two samples), or
  the count now when that is higher (load that has just arrived counts at once);
- rate: requests finished per second over the last RATE_WINDOW seconds;
- p90 latency over the last LATENCY_WINDOW seconds;
- held: requests waiting for a ready replica (scale from zero, or every replica busy starting);
- idle: seconds since the last request arrived.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

RATE_WINDOW = 5.0
LATENCY_WINDOW = 10.0


@dataclass
class Reading:
    in_flight: float
    rps: float
    p90_latency_s: float | None
    held: int
    idle_s: float | None

    @property
    def busy(self) -> bool:
        return self.in_flight > 0 or self.rps > 0 or self.held > 0


class EndpointMeter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.in_flight = 0
        self.held = 0
        self._area = 0.0  # in-flight x seconds since the last sample
        self._since = clock()
        self._changed = self._since
        self._done: deque[tuple[float, float]] = deque()  # (finished at, latency)
        self._last_request: float | None = None

    def _accumulate(self, now: float) -> None:
        self._area += self.in_flight * (now - self._changed)
        self._changed = now

    def arrived(self) -> None:
        self._last_request = self.clock()

    def begin(self) -> None:
        now = self.clock()
        self._accumulate(now)
        self.in_flight += 1

    def end(self, latency_s: float) -> None:
        now = self.clock()
        self._accumulate(now)
        self.in_flight -= 1
        self._done.append((now, latency_s))
        while self._done and now - self._done[0][0] > LATENCY_WINDOW:
            self._done.popleft()

    def read(self) -> Reading:
        """The reading since the last one (the in-flight average restarts at each reading)."""
        now = self.clock()
        self._accumulate(now)
        span = now - self._since
        average = self._area / span if span > 0 else float(self.in_flight)
        self._area, self._since = 0.0, now
        while self._done and now - self._done[0][0] > LATENCY_WINDOW:
            self._done.popleft()
        recent = [latency for at, latency in self._done if now - at <= RATE_WINDOW]
        latencies = sorted(latency for _, latency in self._done)
        p90 = latencies[min(len(latencies) - 1, int(0.9 * len(latencies)))] if latencies else None
        idle = None if self._last_request is None else now - self._last_request
        return Reading(in_flight=max(average, float(self.in_flight)),
                       rps=len(recent) / RATE_WINDOW, p90_latency_s=p90, held=self.held, idle_s=idle)
