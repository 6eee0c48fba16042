"""`fabric demo endpoints`: an inference endpoint's minute, on its own embedded stack.

Deployed with one replica on-prem; callers arrive and replicas scale out, on-prem first, then the
burst goes to the cloud; the callers leave and the cloud replicas go first; nobody calls and it
scales to zero; the next request wakes it. Pools are SIMULATED (a simulated replica answers through
the real gateway after its latency); every replica is a real durable workload.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from typing import Any

import aiohttp
from rich.table import Table

from inferofabric.auth.client import find_token
from inferofabric.cli import render
from inferofabric.cli.demo import _free_port
from inferofabric.settings import fabric_home

console = render.console
POLICY = """
placement:
  default: on-prem
  burst: {when: "on_prem_utilization > 0.85", target: cloud}
  failover: {when: "pool_health != healthy", target: cloud}
"""
ENDPOINT = {
    "name": "chat", "team": "nlp", "image": "ghcr.io/acme/chat:1.0", "port": 8080,
    "resources": {"gpu": {"type": "L4", "count": 1}}, "replicas": {"min": 1, "max": 6},
    "autoscale": {"metric": "in_flight", "target": 2, "scale_up_delay": "2s", "scale_down_delay": "5s"},
    "scale_to_zero_after": "12s", "annotations": {"sim.inferofabric.io/latency": "300ms"},
}


def _replicas(status: Any) -> Table:
    table = Table("replica", "state", "pool", "location", "role")
    for replica in status.replicas:
        if replica.live:
            style = "cyan" if replica.location and replica.location.value == "cloud" else "green"
            table.add_row(replica.id, replica.state, replica.pool or "-",
                          f"[{style}]{replica.location.value}[/]" if replica.location else "-", replica.role.value)
    return table


async def _until(handle: Any, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        status = await handle.status()
        if check(status) or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.3)


def _serving(status: Any) -> list[Any]:
    return [r for r in status.replicas if r.live and r.state != "stopping" and r.pool]


class Callers:
    def __init__(self, url: str, count: int, headers: dict[str, str]) -> None:
        self.url, self.count, self.headers = url, count, headers
        self.answers: dict[int, int] = {}
        self._stop = asyncio.Event()

    async def _call(self, session: aiohttp.ClientSession) -> None:
        while not self._stop.is_set():
            try:
                async with session.post(self.url + "generate", data=b"hello") as answer:
                    await answer.read()
                    code = answer.status
            except aiohttp.ClientError:
                code = 0
            self.answers[code] = self.answers.get(code, 0) + 1
            if code == 503:
                await asyncio.sleep(0.5)  # the caller's ordinary retry

    async def __aenter__(self) -> Callers:
        self._session = aiohttp.ClientSession(headers=self.headers)
        self._tasks = [asyncio.create_task(self._call(self._session)) for _ in range(self.count)]
        return self

    async def __aexit__(self, *_: Any) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self._session.close()


async def run_endpoint_demo(keep: bool) -> None:
    from inferofabric.embedded import embedded_stack

    started = time.monotonic()
    home = fabric_home() / "demo-endpoints"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    ports = [_free_port(p) for p in (7243, 8243, 8244, 8245)]
    console.rule("[bold]InferoFabric demo: an inference endpoint[/]")
    async with embedded_stack(home, ports[0], ports[1], None, log=lambda m: console.print(f"[dim]{m}[/]"),
                              look_here=False, dashboard_port=ports[2], gateway_port=ports[3]) as stack:
        fabric = stack.fabric
        await fabric.register_pool({"name": "dc-serve", "location": "on-prem", "backend": "simulated",
                                    "region": "dc1", "gpus": {"L4": 2}, "price_per_gpu_hour": {"L4": 0.4}})
        await fabric.register_pool({"name": "cloud-serve", "location": "cloud", "backend": "simulated",
                                    "region": "us-east-1", "gpus": {"L4": 8}, "price_per_gpu_hour": {"L4": 1.1}})
        await fabric.set_policy(POLICY)
        handle = await fabric.deploy_endpoint(ENDPOINT)
        # The endpoint serves callers with a fabric token or an endpoint key (access: token, the default):
        # the demo's callers send the stack's admin token.
        caller = {"Authorization": f"Bearer {find_token(home)}"}
        console.rule("1. fabric endpoint deploy -f chat.yaml")
        console.print(f"endpoint [bold]chat[/]: {handle.url}  (replicas 1..6, 2 requests in flight per replica; "
                      "on-prem pool dc-serve has 2 L4)", highlight=False)
        status = await _until(handle, lambda s: s.ready >= 1)
        console.print(_replicas(status))

        console.rule("2. Ten callers arrive: replicas scale out, on-prem first, then burst to the cloud")
        async with Callers(handle.url, 10, caller) as callers:
            status = await _until(handle, lambda s: s.ready >= 5, timeout=60)
            console.print(_replicas(status))
            console.print(f"autoscaler: {status.reason}", highlight=False)
            await asyncio.sleep(2)
        console.print(f"answers so far: {callers.answers}")

        console.rule("3. The callers leave: the cloud replicas go first, steady state returns on-prem")
        status = await _until(handle, lambda s: len(_serving(s)) == 1, timeout=60)
        console.print(_replicas(status))
        for event in [e for e in status.events if "stopping" in e][-4:]:
            console.print(f"  {event}", highlight=False)

        console.rule("4. Nobody calls for 12 s: scaled to zero; the next request wakes it")
        status = await _until(handle, lambda s: s.state.value == "suspended", timeout=60)
        console.print(f"state: [bold]{status.state.value}[/], {len(_serving(status))} replicas")
        async with aiohttp.ClientSession(headers=caller) as session:
            began = time.monotonic()
            async with session.post(handle.url + "generate", data=b"are you there?") as answer:
                body = await answer.json()
            console.print(f"first request after zero: HTTP {answer.status} in {time.monotonic() - began:.1f}s "
                          f"from {body.get('replica')} (the gateway held it while a replica started)", highlight=False)

        console.rule("Explore")
        console.print(f"fabric endpoint status chat   (FABRIC_TEMPORAL_ADDRESS={stack.address} "
                      f"FABRIC_HOME={home})\nWeb UI: {stack.ui_url}   gateway: {stack.gateway_url}/e/chat/\n"
                      f"story told in {time.monotonic() - started:.0f}s", highlight=False)
        if keep:
            console.print("\nThe demo stack keeps running; press Ctrl-C to stop it.")
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.Event().wait()
        else:
            await handle.delete()
            console.print("[dim]endpoint deleted; stack stopped[/]")
