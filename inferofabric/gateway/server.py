"""The gateway: `/e/<endpoint>/<path>` goes to a ready replica of the endpoint.

Built on aiohttp (already the dashboard's server; its client keeps connections to replicas open):
what is ours is the routing and the measuring, not an HTTP stack. In `fabric up` it runs on the
stack's event loop on --gateway-port (default 8235); in production a cluster's Gateway API or a cloud
load balancer takes the request path and this process only measures (docs/endpoints.md).

- routing: the ready replica with the fewest requests in flight (least in-flight). A replica is
  ready once its readiness probe (`GET readiness.path`) answers 2xx; a replica on a simulated pool
  is ready when it runs and answers with a fixed body after `sim.inferofabric.io/latency`;
- a replica the endpoint is stopping gets no new request (it drains before it is stopped);
- scale from zero: with no ready replica a request is held (the endpoint hears at once), up to
  `hold_timeout` seconds, then answered 503 with Retry-After;
- a replica that refuses the connection is taken out and the request tried once on another;
- every second the endpoint's workflow gets a sample (signal `metrics`): load, latency, ready ids;
- access (gateway/access.py): an endpoint serves only callers with a fabric token or an endpoint key
  unless its spec says `access: public`; refused requests get 401/403 and a one-line reason, and do
  not count as load;
- the connection: a request's head must arrive within `header_timeout` of the connection's start
  (or of the last answer on it: aiohttp's keep-alive timer closes a connection that has not sent a
  whole request head by then), its body within `body_timeout` (else 408 and the connection closes);
  only HTTP/1.x is served (505 otherwise, HTTP/0.9 included);
- what reaches a replica: the caller's headers without the hop-by-hop ones (RFC 7230 6.1: Connection,
  Keep-Alive, Proxy-Authenticate, Proxy-Authorization, TE, Trailer, Transfer-Encoding, Upgrade, and
  every header the Connection header names), without Authorization (the gateway's own business on a
  `token` endpoint), and with X-Forwarded-For/-Proto/-Host set by the gateway (a caller's are dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from inferofabric.gateway.access import Access
from inferofabric.gateway.meter import EndpointMeter
from inferofabric.models.common import duration_seconds
from inferofabric.models.endpoint_status import EndpointRoutes, GatewaySample

log = logging.getLogger(__name__)
# RFC 7230 6.1 (and "trailers", an old spelling some clients send): never passed on by a proxy.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade"})
# aiohttp's client and server write these themselves (from the URL and the body).
FRAMING = frozenset({"host", "content-length"})
# Who the caller is, as the gateway saw it: the gateway sets these; a caller's are dropped.
FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip"})
HEADER_TIMEOUT = 10.0  # seconds for a request's head to arrive (from connect, or from the last answer)
BODY_TIMEOUT = 30.0  # seconds for its body
DEFAULT_SIM_LATENCY = "10ms"
QUERY_TIMEOUT = timedelta(seconds=5)
IDLE_SAMPLE_EVERY = 10.0  # an idle endpoint still hears from the gateway this often
SCALING_REFRESH = 0.25  # while an endpoint is scaling (or about to), look this often


@dataclass
class Target:
    id: str
    address: str | None
    simulated: bool
    ready: bool = False
    in_flight: int = 0
    running_since: float = 0.0
    probe: asyncio.Task[None] | None = None


@dataclass
class Route:
    name: str
    status: EndpointRoutes | None = None
    targets: dict[str, Target] = field(default_factory=dict)
    meter: EndpointMeter = field(default_factory=EndpointMeter)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    last_sample: float = 0.0
    last_ready: tuple[str, ...] = ()
    refreshed: float = 0.0
    gone: bool = False

    @property
    def scaling(self) -> bool:
        return self.status is not None and self.status.desired != self.status.ready

    @property
    def expecting_change(self) -> bool:
        """Replicas are coming or going, requests are held, or load is over the target (more replicas
        are about to be wanted): look at the endpoint often."""
        return self.scaling or self.meter.held > 0 or self.over_target()

    def over_target(self) -> bool:
        """More requests in flight now than the ready replicas are meant to carry (the autoscaler's target)."""
        target = self.status.in_flight_target if self.status else None
        if target is None:
            return False
        ready = sum(1 for t in self.targets.values() if t.ready)
        return self.meter.in_flight > target * max(ready, 1)

    def pick(self) -> Target | None:
        ready = [t for t in self.targets.values() if t.ready]
        return min(ready, key=lambda t: t.in_flight) if ready else None

    @property
    def sim_latency(self) -> float:
        return duration_seconds(self.status.sim_latency if self.status else DEFAULT_SIM_LATENCY)


def end_to_end(headers: CIMultiDictProxy[str] | CIMultiDict[str],
               drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
    """The headers a proxy passes on: without the hop-by-hop ones, the ones `Connection` names, the
    framing aiohttp writes itself, and `drop`."""
    named = {token.strip().lower() for value in headers.getall("Connection", []) for token in value.split(",")}
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in FRAMING or lower in named or lower in drop:
            continue
        out.add(name, value)
    return out


def fabric_key() -> bytes | None:
    """The fabric's signing key (FABRIC_AUTH_KEY, or FABRIC_HOME/auth.key of `fabric up`), or None where
    this gateway has none: it then refuses every fabric token (endpoint keys and public endpoints work)."""
    import os

    from inferofabric.auth.tokens import KEY_FILE, signing_key
    from inferofabric.settings import fabric_home

    home = fabric_home()
    if not os.environ.get("FABRIC_AUTH_KEY") and not (home / KEY_FILE).exists():
        log.warning("gateway: no signing key (FABRIC_AUTH_KEY or %s): fabric tokens are refused", home / KEY_FILE)
        return None
    return signing_key(home)


def refused(status: int, reason: str, **headers: str) -> web.Response:
    return web.json_response({"error": reason}, status=status, headers=headers)


@web.middleware
async def http1_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """HTTP/1.0 and 1.1 only: HTTP/0.9 (no headers, so nothing to check) and anything else get 505."""
    if request.version.major != 1:
        answer = refused(505, f"HTTP/{request.version.major}.{request.version.minor} is not served: use HTTP/1.1")
        answer.force_close()
        return answer
    response: web.StreamResponse = await handler(request)
    return response


class Gateway:
    def __init__(self, fabric: Any, name: str = "embedded", hold_timeout: float = 60.0, refresh: float = 1.0,
                 header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT,
                 key: bytes | None = None, store_url: str | None = None) -> None:
        self.fabric = fabric
        self.name = name
        self.hold_timeout = hold_timeout
        self.refresh = refresh
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._key = key
        # The store with the endpoint keys: given, else the client's (None: fabric tokens only).
        self._store_url = store_url or getattr(fabric, "store_url", None)
        self.access = Access(None, None)
        self.routes: dict[str, Route] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None

    # -- lifecycle ------------------------------------------------------------------------------------
    async def start(self, port: int, host: str = "127.0.0.1") -> None:
        from inferofabric.store.db import get_store

        store = await asyncio.to_thread(get_store, self._store_url) if self._store_url else None
        self.access = Access(self._key if self._key is not None else fabric_key(), store)
        await self.access.refresh_keys()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
                                              auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[http1_only])
        app.add_routes([web.get("/healthz", self._healthz), web.route("*", "/e/{name}", self._redirect),
                        web.route("*", "/e/{name}/{tail:.*}", self._handle)])
        # keepalive_timeout is also aiohttp's header timeout: a connection that has not sent a whole
        # request head that long after it opened (or after its last answer) is closed. lingering_time:
        # how long the unread rest of a refused or timed-out body is read and dropped before closing.
        self._runner = web.AppRunner(app, access_log=None, keepalive_timeout=self.header_timeout,
                                     lingering_time=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._tasks = [asyncio.create_task(self._refresh_loop()), asyncio.create_task(self._sample_loop()),
                       asyncio.create_task(self.access.refresh_loop())]

    async def close(self) -> None:
        for task in self._tasks + [t.probe for r in self.routes.values() for t in r.targets.values() if t.probe]:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- requests -------------------------------------------------------------------------------------
    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPPermanentRedirect(f"/e/{request.match_info['name']}/")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        route = self.routes.get(name)
        if route is None or route.status is None:
            route = await self._load(name)
            if route is None:
                return web.json_response({"error": f"no endpoint named {name!r}"}, status=404)
        status = route.status
        assert status is not None
        refusal = await self.access.check(name, status.team, status.access, request.headers.get("Authorization"))
        if refusal is not None:  # before anything counts: a refused caller is no load
            extra = {"WWW-Authenticate": 'Bearer realm="inferofabric"'} if refusal.status == 401 else {}
            return refused(refusal.status, refusal.reason, **extra)
        try:
            async with asyncio.timeout(self.body_timeout):
                body = await request.read()
        except TimeoutError:
            answer = refused(408, f"the request's body did not arrive within {self.body_timeout:g}s")
            answer.force_close()
            return answer
        route.meter.arrived()
        tried: set[str] = set()
        for _ in range(2):
            target = await self._target(route, tried)
            if target is None:
                retry = 2 if tried else 5
                message = (f"endpoint {name!r} has no ready replica after {self.hold_timeout:.0f}s" if not tried
                           else f"endpoint {name!r}: no other ready replica")
                return web.json_response({"error": message}, status=503, headers={"Retry-After": str(retry)})
            tried.add(target.id)
            started = time.perf_counter()
            target.in_flight += 1
            route.meter.begin()
            if route.over_target() and time.monotonic() - route.last_sample > 0.2:
                self._send_soon(route)  # load crossed the target: the endpoint hears now, not at the next tick
            try:
                return await self._forward(route, target, request, body)
            except (TimeoutError, aiohttp.ClientConnectionError) as error:
                log.info("gateway: replica %s of %s failed (%s): taken out", target.id, name, error)
                target.ready = False
            finally:
                target.in_flight -= 1
                route.meter.end(time.perf_counter() - started)
        return web.json_response({"error": f"endpoint {name!r}: its replicas did not answer"}, status=503,
                                 headers={"Retry-After": "2"})

    async def _target(self, route: Route, tried: set[str]) -> Target | None:
        """A ready replica now, or after holding the request while the endpoint scales (None: none came)."""
        target = route.pick()
        if target is not None and target.id not in tried:
            return target
        if tried:
            others = [t for t in route.targets.values() if t.ready and t.id not in tried]
            return min(others, key=lambda t: t.in_flight) if others else None
        route.meter.held += 1
        try:
            self._send_soon(route)  # the endpoint hears of the held request now, not at the next tick
            deadline = time.monotonic() + self.hold_timeout
            while (target := route.pick()) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                route.changed.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(route.changed.wait(), timeout=min(left, 0.25))
                if route.pick() is None:
                    await self._refresh_route(route)
            return target
        finally:
            route.meter.held -= 1

    async def _forward(self, route: Route, target: Target, request: web.Request, body: bytes) -> web.StreamResponse:
        tail = request.match_info.get("tail", "")
        if target.simulated:
            await asyncio.sleep(route.sim_latency)
            return web.json_response({"endpoint": route.name, "replica": target.id, "simulated": True,
                                      "path": "/" + tail})
        assert self._session is not None and target.address
        query = request.query_string
        url = f"http://{target.address}/{tail}" + (f"?{query}" if query else "")
        private = FORWARDING | ({"authorization"} if route.status is None or route.status.access != "public"
                                else frozenset())
        headers = end_to_end(request.headers, drop=frozenset(private))
        if request.remote:
            headers["X-Forwarded-For"] = request.remote
        headers["X-Forwarded-Proto"] = request.scheme
        if request.host:
            headers["X-Forwarded-Host"] = request.host
        async with self._session.request(request.method, url, headers=headers, data=body,
                                         allow_redirects=False) as answer:
            payload = await answer.read()
            out = end_to_end(answer.headers)
            out["X-Fabric-Replica"] = target.id
            return web.Response(status=answer.status, body=payload, headers=out)

    # -- what the endpoints look like now ---------------------------------------------------------------
    async def _load(self, name: str) -> Route | None:
        route = self.routes.get(name) or Route(name)
        await self._refresh_route(route)
        if route.status is None:
            return None
        self.routes[name] = route
        return route

    async def _refresh_loop(self) -> None:
        listed_at = 0.0
        while True:
            try:
                now = time.monotonic()
                if now - listed_at > 5:
                    listed_at = now
                    await self._list()
                due = [route for route in list(self.routes.values())
                       if now - route.refreshed >= (SCALING_REFRESH if route.expecting_change else self.refresh)]
                await asyncio.gather(*(self._refresh_route(route) for route in due))
                for name in [n for n, r in self.routes.items() if r.gone]:
                    self._drop(name)
            except Exception:  # keep serving with what is known; the log says why
                log.exception("gateway: refresh failed")
            await asyncio.sleep(SCALING_REFRESH)

    async def _list(self) -> None:
        from inferofabric.workflows.endpoint import RUNNING_ENDPOINTS, endpoint_id

        async for execution in self.fabric.temporal.list_workflows(RUNNING_ENDPOINTS, limit=1000):
            name = execution.id.removeprefix(endpoint_id(""))
            self.routes.setdefault(name, Route(name))

    async def _refresh_route(self, route: Route) -> None:
        from temporalio.service import RPCError, RPCStatusCode

        from inferofabric.workflows.endpoint import endpoint_id

        route.refreshed = time.monotonic()
        try:
            status: EndpointRoutes = await self.fabric.temporal.get_workflow_handle(endpoint_id(route.name)).query(
                "routes", result_type=EndpointRoutes, rpc_timeout=QUERY_TIMEOUT)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                route.gone = True
            return
        except Exception:  # a workflow that cannot answer (failed, refused): nothing to route to
            log.debug("gateway: endpoint %s did not answer", route.name, exc_info=True)
            return
        if status.state.value == "deleted":
            route.gone = True
        route.status = status
        self._apply(route, status)

    def _apply(self, route: Route, status: EndpointRoutes) -> None:
        """Follow the endpoint's replicas: new running ones get a readiness probe, stopping or gone ones
        get no more requests."""
        serving = {r.id: r for r in status.replicas if r.state in ("running", "ready") and not r.stopping}
        for replica_id in [i for i in route.targets if i not in serving]:
            gone = route.targets.pop(replica_id)
            if gone.probe is not None:
                gone.probe.cancel()
        for replica_id, replica in serving.items():
            target = route.targets.get(replica_id)
            simulated = replica.backend == "simulated"
            if target is None or target.address != replica.address:
                if target is not None and target.probe is not None:
                    target.probe.cancel()
                target = Target(replica_id, replica.address, simulated, running_since=time.monotonic())
                route.targets[replica_id] = target
                if simulated:
                    target.ready = True
                    self._send_soon(route)
                elif replica.address:
                    target.probe = asyncio.create_task(self._probe(route, target))
        route.changed.set()

    async def _probe(self, route: Route, target: Target) -> None:
        assert route.status is not None and self._session is not None
        readiness = route.status.readiness
        await asyncio.sleep(readiness.initial_delay_seconds)
        url = f"http://{target.address}{readiness.path}"
        while True:
            try:
                async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=readiness.timeout_seconds)) as r:
                    ok = 200 <= r.status < 300
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            if ok != target.ready:
                target.ready = ok
                route.changed.set()
                self._send_soon(route)
            # Until it first answers, look often: a replica's first ready moment is what a cold start waits for.
            await asyncio.sleep(readiness.period_seconds if target.ready else min(0.1, readiness.period_seconds))

    def _drop(self, name: str) -> None:
        route = self.routes.pop(name)
        for target in route.targets.values():
            if target.probe is not None:
                target.probe.cancel()

    # -- telling the endpoints ------------------------------------------------------------------------------
    async def _sample_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for route in list(self.routes.values()):
                with contextlib.suppress(Exception):
                    await self._send(route, force=False)

    def _send_soon(self, route: Route) -> None:
        task = asyncio.create_task(self._send(route, force=True))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _send(self, route: Route, force: bool) -> None:
        from inferofabric.workflows.endpoint import endpoint_id

        if route.status is None or route.gone:
            return
        ready = tuple(sorted(t.id for t in route.targets.values() if t.ready))
        now = time.monotonic()
        reading = route.meter.read()
        if not (force or reading.busy or ready != route.last_ready or now - route.last_sample >= IDLE_SAMPLE_EVERY):
            return
        route.last_sample, route.last_ready = now, ready
        sample = GatewaySample(gateway=self.name, in_flight=reading.in_flight, rps=reading.rps,
                               p90_latency_s=reading.p90_latency_s, held=reading.held, idle_s=reading.idle_s,
                               ready=list(ready))
        await self.fabric.temporal.get_workflow_handle(endpoint_id(route.name)).signal("metrics", sample)


async def start(fabric: Any, port: int, host: str = "127.0.0.1", hold_timeout: float = 60.0, *,
                header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT, key: bytes | None = None,
                store_url: str | None = None) -> Gateway:
    """Serve endpoints on `port`; `await gateway.close()` stops it. `key`: the fabric's signing key
    (default: FABRIC_AUTH_KEY or FABRIC_HOME's); `store_url`: where the endpoint keys are (default: the
    client's store)."""
    gateway = Gateway(fabric, hold_timeout=hold_timeout, header_timeout=header_timeout, body_timeout=body_timeout,
                      key=key, store_url=store_url)
    await gateway.start(port, host)
    return gateway
