"""How many replicas an endpoint wants (pure: no I/O, no temporalio), for issue 10's endpoint workflow.

The gateway measures, per endpoint, the requests in flight, the request rate and the p90 latency; the
endpoint workflow calls `recommend` with each sample and its state, and places or removes replicas
to reach `desired`. The rules, after Knative's stable window and SkyServe's delays:

- **need**: `in_flight` and `rps` targets are per ready replica, so need = ceil(total / target); for
  `p90_latency` the current count scales by p90 / target (latency above target adds replicas).
- **delays**: more replicas only once the need has stayed above the current count for
  `scale_up_delay`; fewer only once it has stayed below for `scale_down_delay` (then to the highest
  need seen in that window, so a brief dip does not remove what the next burst needs).
- **range**: desired stays within [min, max]; min may be 0 only through scale-to-zero.
- **zero**: no request for `scale_to_zero_after` -> 0 replicas; a request arriving while at 0 (the
  gateway holds it) -> at least 1 at once, without waiting for the delay (a cold start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from inferofabric.models.endpoint import EndpointSpec


@dataclass
class Sample:
    """What the gateway saw for one endpoint at `at` (epoch seconds)."""

    at: float
    in_flight: float = 0.0  # requests being served now (all replicas), plus those held for a cold start
    rps: float = 0.0  # requests per second over the last window
    p90_latency_s: float | None = None  # None: no request finished in the window
    held: int = 0  # requests the gateway holds because no replica is ready
    last_request_at: float | None = None


@dataclass
class ScaleState:
    """The autoscaler's memory between samples (kept in the endpoint workflow's state)."""

    desired: int = 0
    above_since: float | None = None  # the need has exceeded `desired` since then
    below_since: float | None = None  # ... has stayed under it since then
    highest_below: int = 0  # the highest need seen while below
    last_request_at: float | None = None
    reasons: list[str] = field(default_factory=list)


def need(spec: EndpointSpec, sample: Sample, current: int) -> int:
    """Replicas the load calls for, before delays and the range."""
    scale = spec.autoscale
    if scale.metric == "in_flight":
        return math.ceil((sample.in_flight + sample.held) / scale.target)
    if scale.metric == "rps":
        return math.ceil(sample.rps / scale.target)
    if sample.p90_latency_s is None:
        return current
    return max(1, math.ceil(max(current, 1) * sample.p90_latency_s / scale.target))


def recommend(spec: EndpointSpec, state: ScaleState, sample: Sample) -> tuple[ScaleState, str]:
    """The next state (its `desired`) and why, in words."""
    now = sample.at
    low, high = spec.replicas.min, spec.replicas.max
    last = max((t for t in (state.last_request_at, sample.last_request_at) if t is not None), default=None)
    busy = sample.in_flight > 0 or sample.held > 0 or sample.rps > 0
    if busy:
        last = now if last is None else max(last, now)
    current = state.desired
    wanted = min(high, max(low, need(spec, sample, current)))
    idle_after = spec.scale_to_zero_after_s
    if idle_after is not None and not busy and (last is None or now - last >= idle_after):
        return _to(state, 0, last, f"no request for {idle_after:.0f}s: scaled to zero"), "scale to zero"
    if current == 0 and (busy or low > 0):
        target = max(1, wanted)
        why = (f"{sample.held} request(s) held while at zero: cold start to {target}" if sample.held or busy
               else f"min {low}")
        return _to(state, target, last, why), why
    if wanted > current:
        since = state.above_since if state.above_since is not None else now
        if now - since >= spec.autoscale.scale_up_delay_s:
            why = f"{_load(spec, sample)}: {current} -> {wanted} (above target for {now - since:.0f}s)"
            return _to(state, wanted, last, why), why
        return ScaleState(current, since, None, 0, last, state.reasons), f"scale up to {wanted} in " \
            f"{spec.autoscale.scale_up_delay_s - (now - since):.0f}s if it lasts"
    if wanted < current:
        since = state.below_since if state.below_since is not None else now
        highest = max(state.highest_below if state.below_since is not None else 0, wanted)
        if now - since >= spec.autoscale.scale_down_delay_s:
            why = f"{_load(spec, sample)}: {current} -> {highest} (below target for {now - since:.0f}s)"
            return _to(state, highest, last, why), why
        return ScaleState(current, None, since, highest, last, state.reasons), f"scale down to {highest} in " \
            f"{spec.autoscale.scale_down_delay_s - (now - since):.0f}s if it lasts"
    return ScaleState(current, None, None, 0, last, state.reasons), f"steady at {current}"


def _to(state: ScaleState, desired: int, last: float | None, why: str) -> ScaleState:
    reasons = [*state.reasons, why][-20:]  # bounded: it lives in workflow state
    return ScaleState(desired, None, None, 0, last, reasons)


def _load(spec: EndpointSpec, sample: Sample) -> str:
    metric = spec.autoscale.metric
    if metric == "in_flight":
        return f"{sample.in_flight + sample.held:.0f} in flight (target {spec.autoscale.target:g} per replica)"
    if metric == "rps":
        return f"{sample.rps:.1f} req/s (target {spec.autoscale.target:g} per replica)"
    return f"p90 {sample.p90_latency_s or 0:.3f}s (target {spec.autoscale.target:g}s)"
