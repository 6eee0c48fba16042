"""The gateway's HTTP side, through real sockets: a real gateway server in front of a real replica
server, with the endpoint's routing answer given by a stand-in for Temporal (what is judged here is the
connection and the headers, not the control plane: test_endpoint_access.py covers that end to end).

- a client that sends its request head slowly, or its body slowly, is cut off after the timeout;
- HTTP/0.9 and anything not HTTP/1.x get no answer from a replica;
- hop-by-hop headers (and the ones `Connection` names) and a caller's X-Forwarded-For never reach
  the replica; Authorization neither, on an endpoint with `access: token`;
- `access: token` refuses no credential, a forged or expired token, another team's member, and a
  revoked endpoint key; it serves a valid token or key. `access: public` serves anyone.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from cli.util import free_port

from inferofabric.auth.tokens import create_token
from inferofabric.gateway.server import Gateway
from inferofabric.models.endpoint import Readiness
from inferofabric.models.endpoint_status import EndpointRoutes, EndpointState, RouteReplica
from inferofabric.store.db import get_store
from inferofabric.store.endpoint_keys import create_key, revoke_key

KEY = b"gateway-test-signing-key-0123456789abcdef"
OTHER_KEY = b"another-fabric-signing-key-0123456789abcd"


class Replica:
    """A model server stand-in that answers with the headers it received."""

    def __init__(self) -> None:
        self.seen: list[dict[str, list[str]]] = []

    async def start(self) -> str:
        async def answer(request: web.Request) -> web.Response:
            if request.path == "/healthz":
                return web.Response(text="ok")
            headers: dict[str, list[str]] = {}
            for name, value in request.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            self.seen.append(headers)
            return web.json_response({"headers": headers, "body": (await request.read()).decode()},
                                     headers={"Connection": "keep-alive, X-Internal", "X-Internal": "secret",
                                              "Keep-Alive": "timeout=5"})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"127.0.0.1:{port}"


@dataclass
class StandIn:
    """What the gateway asks Temporal: each endpoint's `routes` answer (and a sink for its samples)."""

    routes: dict[str, EndpointRoutes] = field(default_factory=dict)

    def get_workflow_handle(self, workflow_id: str) -> Any:
        stand_in = self

        class Handle:
            async def query(self, *_: Any, **__: Any) -> EndpointRoutes:
                return stand_in.routes[workflow_id.removeprefix("endpoint-")]

            async def signal(self, *_: Any) -> None:
                return None

        return Handle()

    async def list_workflows(self, *_: Any, **__: Any) -> AsyncIterator[Any]:
        for _ in ():
            yield _


@dataclass
class Fabric:
    temporal: StandIn
    store_url: str


@dataclass
class Served:
    url: str
    port: int
    replica: Replica
    store: Any


def routes(address: str, access: str, team: str = "nlp") -> EndpointRoutes:
    return EndpointRoutes(state=EndpointState.READY, team=team, access=access, desired=1, ready=1,
                          readiness=Readiness(path="/healthz", initial_delay_seconds=0, period_seconds=0.2),
                          replicas=[RouteReplica(id="r1", state="running", backend="local", address=address)])


@pytest_asyncio.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    replica = Replica()
    address = await replica.start()
    store_url = f"sqlite:///{tmp_path / 'fabric.db'}"
    stand_in = StandIn({"guarded": routes(address, "token"), "open": routes(address, "public"),
                        "vision-model": routes(address, "token", team="vision")})
    port = free_port()
    gateway = Gateway(Fabric(stand_in, store_url), header_timeout=1.0, body_timeout=1.0, key=KEY)
    await gateway.start(port)
    try:
        yield Served(f"http://127.0.0.1:{port}", port, replica, get_store(store_url))
    finally:
        await gateway.close()
        await replica.runner.cleanup()


def token(role: str = "admin", team: str | None = None, key: bytes = KEY, ttl: float = 3600) -> str:
    return create_token(key, role, team=team, subject=f"{role}-test", ttl=timedelta(seconds=ttl), now=time.time())


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def call(url: str, headers: dict[str, str] | None = None, retries: int = 40) -> tuple[int, Any]:
    """A request; while the replica is not ready yet (503), again shortly."""
    async with aiohttp.ClientSession() as session:
        for _ in range(retries):
            async with session.post(url, data=b"hello", headers=headers or {}) as answer:
                text = await answer.text()
                if answer.status != 503:
                    return answer.status, json.loads(text) if text.startswith("{") else text
            await asyncio.sleep(0.1)
    return 503, text


def raw(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Send bytes on a raw socket; what came back until the server closed (or `wait` passed), and when."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as conn:
        conn.sendall(data)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received, time.monotonic() - started


# -- the connection -----------------------------------------------------------------------------------------
async def test_a_slow_header_client_is_disconnected_after_the_timeout(served: Served) -> None:
    # The head never ends (no blank line): the gateway closes the connection after header_timeout (1 s).
    received, took = await asyncio.to_thread(raw, served.port, b"GET /e/open/x HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n")
    assert received == b"" and took < 4, (received, took)
    # A trickling client fares no better: a byte every 0.3 s does not keep the connection open.
    def trickle() -> tuple[bool, float]:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as conn:
            try:
                for byte in b"GET /e/open/x HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"a" * 100:
                    conn.sendall(bytes([byte]))
                    time.sleep(0.3)
                    if time.monotonic() - started > 6:
                        return False, time.monotonic() - started
            except OSError:  # reset or broken pipe: the gateway closed it
                return True, time.monotonic() - started
            return conn.recv(100) == b"", time.monotonic() - started

    closed, took = await asyncio.to_thread(trickle)
    assert closed and took < 4, took
    # An ordinary request on the same gateway is served.
    assert (await call(served.url + "/e/open/x"))[0] == 200


async def test_a_slow_body_is_cut_off_after_the_timeout(served: Served) -> None:
    head = b"POST /e/open/x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789"
    received, took = await asyncio.to_thread(raw, served.port, head)
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert took < 5 and not served.replica.seen


async def test_http_0_9_and_anything_but_http_1_get_no_answer_from_a_replica(served: Served) -> None:
    for request in (b"GET /e/open/x\r\n", b"GET /e/open/x\r\n\r\n", b"GET /e/open/x HTTP/2.0\r\nHost: a\r\n\r\n",
                    b"GET /e/open/x HTTP/3.0\r\nHost: a\r\n\r\n"):
        received, _ = await asyncio.to_thread(raw, served.port, request, 3.0)
        first = received.split(b"\r\n")[0]
        assert b" 200 " not in first, (request, received)
        assert b" 505 " in first or b" 400 " in first or received == b"", (request, received)
    assert not served.replica.seen
    status, _ = await call(served.url + "/e/open/x")
    assert status == 200


# -- what reaches the replica -------------------------------------------------------------------------------
async def test_hop_by_hop_headers_and_a_callers_forwarding_never_reach_the_replica(served: Served) -> None:
    headers = {"Connection": "keep-alive, X-Secret", "X-Secret": "1", "Keep-Alive": "timeout=99",
               "Proxy-Authorization": "Basic abc", "TE": "trailers", "Trailer": "X-Later",
               "X-Forwarded-For": "6.6.6.6", "Forwarded": "for=6.6.6.6", "X-Real-IP": "6.6.6.6",
               "X-Kept": "yes", **bearer(token())}
    async with aiohttp.ClientSession() as session:
        for _ in range(40):
            async with session.post(served.url + "/e/guarded/predict", data=b"hello", headers=headers) as answer:
                if answer.status == 200:
                    body = await answer.json()
                    answered = answer.headers
                    break
            await asyncio.sleep(0.1)
    seen = body["headers"]
    for name in ("x-secret", "keep-alive", "proxy-authorization", "te", "trailer", "forwarded", "x-real-ip",
                 "authorization"):
        assert name not in seen, (name, seen)
    assert seen.get("connection", ["keep-alive"]) != ["keep-alive, X-Secret"]
    assert seen["x-forwarded-for"] == ["127.0.0.1"], seen  # the peer, not the caller's claim
    assert seen["x-kept"] == ["yes"] and body["body"] == "hello"
    # The replica's hop-by-hop headers (and the one its Connection names) do not reach the caller.
    assert "X-Internal" not in answered and "Keep-Alive" not in answered
    assert answered["X-Fabric-Replica"] == "r1"


# -- who may call ----------------------------------------------------------------------------------------
async def test_access_token_refuses_without_a_valid_credential_and_serves_with_one(served: Served) -> None:
    url = served.url + "/e/guarded/predict"
    refused = [
        ({}, 401, "needs `Authorization: Bearer"),
        ({"Authorization": "Basic YTpi"}, 401, "needs `Authorization: Bearer"),
        (bearer("garbage"), 401, "not a fabric token"),
        (bearer(token(key=OTHER_KEY)), 401, "not one this fabric issued"),
        (bearer(token()[:-3] + "abc"), 401, "not one this fabric issued"),
        (bearer(token(ttl=-60)), 401, "expired"),
        (bearer(token("member", "vision")), 403, "may not call team 'nlp'"),
        (bearer("fek_not-a-real-key"), 401, "endpoint key is not valid"),
    ]
    async with aiohttp.ClientSession() as session:
        for headers, code, words in refused:
            async with session.get(url, headers=headers) as answer:
                text = await answer.text()
                assert answer.status == code and words in text, (headers, answer.status, text)
                assert "Traceback" not in text and len(text.splitlines()) == 1
                if code == 401:
                    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert not served.replica.seen  # none of them reached the replica
    for role, team in (("admin", None), ("operator", None), ("member", "nlp")):
        status, body = await call(url, bearer(token(role, team)))
        assert status == 200 and body["headers"]["x-forwarded-for"] == ["127.0.0.1"], (role, status, body)
    # A member of vision calls vision's endpoint.
    assert (await call(served.url + "/e/vision-model/x", bearer(token("member", "vision"))))[0] == 200


async def test_an_endpoint_key_serves_its_endpoint_until_revoked(served: Served) -> None:
    key, row = await asyncio.to_thread(create_key, served.store, "guarded", "nlp", "alice")
    url = served.url + "/e/guarded/predict"
    status, body = await call(url, bearer(key))  # made a moment ago: served at once
    assert status == 200 and "authorization" not in body["headers"], body
    # Not for another endpoint, nor for an endpoint of the same name deployed by another team.
    assert (await call(served.url + "/e/vision-model/x", bearer(key)))[0] == 403
    other, _ = await asyncio.to_thread(create_key, served.store, "vision-model", "nlp", "mallory")
    assert (await call(served.url + "/e/vision-model/x", bearer(other)))[0] == 403
    await asyncio.to_thread(revoke_key, served.store, "guarded", row.id, "alice")
    deadline = time.monotonic() + 5
    while (status := (await call(url, bearer(key)))[0]) == 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert status == 401


async def test_access_public_serves_anyone(served: Served) -> None:
    status, body = await call(served.url + "/e/open/predict")
    assert status == 200 and body["body"] == "hello"
    # A public endpoint's replica does its own auth, if any: the caller's Authorization reaches it.
    status, body = await call(served.url + "/e/open/predict", {"Authorization": "Bearer for-the-replica"})
    assert status == 200 and body["headers"]["authorization"] == ["Bearer for-the-replica"]


@pytest.mark.parametrize("path", ["/e/ghost/x"])
async def test_an_unknown_endpoint_is_404(served: Served, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(served.url + path) as answer:
        assert answer.status == 404
