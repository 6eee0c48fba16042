"""Endpoints under load: the gateway's added latency, scale-up and cold-start times, requests lost.

    .venv/bin/python bench/endpoint.py [--seconds 10] [--rate 200]

Starts `fabric up` (its own FABRIC_HOME and ports) with a `local` pool (the example model server
as real processes) and simulated pools, and drives it from this process (the load generator never
shares the gateway's event loop). Prints each figure next to its target (issue 10):

- gateway latency: requests at --rate per second, alternately straight to a local replica and
  through the gateway, in the same run; the added p50/p99 (target p99 < 2 ms);
- scale-up: load crosses the target at t0; time until a new replica is ready (simulated pools;
  target: the scale-up delay + 1 s);
- cold start: from zero replicas to the first answer on a local replica (target < 3 s);
- requests lost: during scale-out (callers retry on 503), scale-in and a rolling update (no
  retry), and a replica killed under load (retry on 503): target 0 each.
The machine is shared and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCALE_UP_DELAY = 2.0
CONFIG = """
pools:
  - {name: here, location: on-prem, backend: local, gpus: {A100: 4},
     local: {discover_gpus: false, network: host, read_only: ["/", "%(root)s", "%(prefix)s"]}}
  - {name: sim-dc, location: on-prem, backend: simulated, region: dc1, gpus: {L4: 2}}
  - {name: sim-cloud, location: cloud, backend: simulated, region: us-east-1, gpus: {L4: 16}}
policy:
  placement:
    default: on-prem
    burst: {when: "on_prem_utilization > 0.85", target: cloud}
    failover: {when: "pool_health != healthy", target: cloud}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def local_endpoint(name: str, **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name, "team": "nlp", "image": "example/model-server", "port": 8080,
        "command": [sys.executable, str(ROOT / "examples" / "model_server.py")],
        "env": {"COMPUTE_MS": "0", "LOAD_MS": "50"},
        "resources": {"gpu": {"type": "A100", "count": 1}},
        "readiness": {"path": "/healthz", "initial_delay_seconds": 0, "period_seconds": 1},
        "replicas": {"min": 1, "max": 1}}
    spec.update(changes)
    return spec


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, fabric: Any, gateway: str) -> None:
        self.fabric = fabric
        self.gateway = gateway

    async def deploy(self, spec: dict[str, Any]) -> Any:
        return await self.fabric.deploy_endpoint(spec)

    async def until(self, handle: Any, check: Any, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            status = await handle.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise SystemExit(f"{handle.name}: timed out; last status {status.state} ready {status.ready} "
                                 f"desired {status.desired}: {status.reason}")
            await asyncio.sleep(0.05)

    async def latency(self, session: aiohttp.ClientSession, seconds: float, rate: float) -> dict[str, list[float]]:
        handle = await self.deploy(local_endpoint("latency"))
        status = await self.until(handle, lambda s: s.ready >= 1)
        address = next(r.address for r in status.replicas if r.address)
        targets = {"direct": f"http://{address}/predict", "gateway": handle.url + "predict"}
        times: dict[str, list[float]] = {"direct": [], "gateway": []}

        async def one(kind: str) -> None:
            started = time.perf_counter()
            async with session.post(targets[kind], data=b"a lovely day") as answer:
                await answer.read()
                if answer.status == 200:
                    times[kind].append(time.perf_counter() - started)

        for kind in targets:  # warm both paths (connections)
            for _ in range(20):
                await one(kind)
        times = {"direct": [], "gateway": []}
        tasks = []
        start = time.perf_counter()
        for index in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, start + index / rate - time.perf_counter()))
            tasks.append(asyncio.create_task(one("direct" if index % 2 else "gateway")))
        await asyncio.gather(*tasks)
        await handle.delete()
        return times

    async def scale_up(self, session: aiohttp.ClientSession) -> tuple[float, int, int]:
        handle = await self.deploy({
            "name": "burst", "team": "nlp", "image": "example/sim", "resources": {"gpu": {"type": "L4", "count": 1}},
            "replicas": {"min": 1, "max": 4},
            "autoscale": {"metric": "in_flight", "target": 2, "scale_up_delay": f"{SCALE_UP_DELAY:g}s",
                          "scale_down_delay": "3s"},
            "annotations": {"sim.inferofabric.io/latency": "500ms"}})
        await self.until(handle, lambda s: s.ready >= 1)
        load = Load(session, handle.url, 6, retry=True)
        t0 = time.monotonic()
        load.start()
        await self.until(handle, lambda s: s.ready >= 2)
        scale_up = time.monotonic() - t0
        await self.until(handle, lambda s: s.ready >= 3)
        await load.stop()
        lost_out = load.lost
        # Scale-in under a light load that never retries.
        light = Load(session, handle.url, 1, retry=False)
        light.start()
        await self.until(handle, lambda s: len([r for r in s.replicas if r.live and r.state != "stopping"]) == 1)
        await asyncio.sleep(4)
        await light.stop()
        await handle.delete()
        return scale_up, lost_out, light.lost

    async def cold_start(self, session: aiohttp.ClientSession) -> float:
        handle = await self.deploy(local_endpoint("cold", scale_to_zero_after="3s"))
        await self.until(handle, lambda s: s.ready >= 1)
        await self.until(handle, lambda s: s.state.value == "suspended" and not any(r.live for r in s.replicas))
        started = time.monotonic()
        async with session.post(handle.url + "predict", data=b"wake up") as answer:
            await answer.read()
            assert answer.status == 200, answer.status
        elapsed = time.monotonic() - started
        await handle.delete()
        return elapsed

    async def update_and_failure(self, session: aiohttp.ClientSession, home: Path) -> tuple[int, int]:
        spec = local_endpoint("rolling", replicas={"min": 2, "max": 2}, env={"COMPUTE_MS": "20", "LOAD_MS": "50"})
        handle = await self.deploy(spec)
        await self.until(handle, lambda s: s.ready >= 2)
        load = Load(session, handle.url, 3, retry=False)
        load.start()
        await handle.update({**spec, "env": {"COMPUTE_MS": "10", "LOAD_MS": "50"}})
        await self.until(handle, lambda s: s.ready >= 2 and all(
            r.version == 2 for r in s.replicas if r.live and r.state != "stopping"), timeout=90)
        await asyncio.sleep(4)
        await load.stop()
        lost_update = load.lost
        # A replica dies under load (its process killed): the gateway retries on the other one.
        status = await handle.status()
        victim = next(r for r in status.replicas if r.live and r.state == "ready")
        dying = Load(session, handle.url, 3, retry=True)
        dying.start()
        await asyncio.sleep(1)
        for process in (home / "local" / "here" / "jobs").glob(f"{victim.id}-a*/process.json"):
            os.killpg(json.loads(process.read_text())["pid"], signal.SIGKILL)
        await self.until(handle, lambda s: s.ready >= 2 and victim.id not in
                         {r.id for r in s.replicas if r.live}, timeout=60)
        await dying.stop()
        await handle.delete()
        return lost_update, dying.lost


class Load:
    """`concurrency` callers in a closed loop; a request is lost when it ends in neither 200 nor (with
    retry) a 503 that a retry turned into a 200."""

    def __init__(self, session: aiohttp.ClientSession, url: str, concurrency: int, retry: bool) -> None:
        self.session, self.url, self.concurrency, self.retry = session, url, concurrency, retry
        self.ok = 0
        self.lost = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._caller()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _caller(self) -> None:
        while not self._stop.is_set():
            for attempt in range(6):
                try:
                    async with self.session.post(self.url + "predict", data=b"hello") as answer:
                        await answer.read()
                        status = answer.status
                except aiohttp.ClientError:
                    status = 0
                if status == 200:
                    self.ok += 1
                    break
                if not (self.retry and status == 503 and attempt < 5):
                    self.lost += 1
                    break
                await asyncio.sleep(0.5)


async def run(options: argparse.Namespace) -> None:
    from inferofabric.sdk.client import FabricClient

    with tempfile.TemporaryDirectory(prefix="fabric-bench-endpoint-") as folder:
        home = Path(folder)
        (home / "fabric.yaml").write_text(CONFIG % {"root": ROOT, "prefix": sys.prefix})
        port, gateway_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FABRIC_")}
        env.update(FABRIC_HOME=folder)
        up = subprocess.Popen([str(BIN / "fabric"), "up", "--port", str(port), "--ui-port", str(free_port()),
                               "--dashboard-port", "0", "--gateway-port", str(gateway_port), "-c",
                               str(home / "fabric.yaml")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        try:
            assert up.stdout is not None
            for line in up.stdout:
                if "fabric is up" in line:
                    break
            else:
                raise SystemExit("fabric up ended before it was up")
            os.environ.update(FABRIC_HOME=folder, FABRIC_GATEWAY_URL=f"http://127.0.0.1:{gateway_port}")
            fabric = await FabricClient.connect(f"127.0.0.1:{port}")
            bench = Bench(fabric, f"http://127.0.0.1:{gateway_port}")
            connector = aiohttp.TCPConnector(limit=0)
            # Endpoints serve callers with a token by default (access: token): every request carries the
            # stack's admin token, so the figures include the gateway's check of it.
            from inferofabric.auth.client import find_token

            calls_with = {"Authorization": f"Bearer {find_token(home)}"}
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60),
                                             headers=calls_with) as session:
                times = await bench.latency(session, options.seconds, options.rate)
                scale_up, lost_out, lost_in = await bench.scale_up(session)
                cold = await bench.cold_start(session)
                lost_update, lost_failure = await bench.update_and_failure(session, home)
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(timeout=30)

    ms = {k: [t * 1000 for t in v] for k, v in times.items()}
    d50, d99 = percentile(ms["direct"], 0.5), percentile(ms["direct"], 0.99)
    g50, g99 = percentile(ms["gateway"], 0.5), percentile(ms["gateway"], 0.99)
    added50, added99 = g50 - d50, g99 - d99
    print(f"requests at {options.rate:g}/s for {options.seconds:g}s: {len(ms['direct'])} direct, "
          f"{len(ms['gateway'])} through the gateway (mean {statistics.mean(ms['gateway']):.2f} ms)")
    print(f"{'figure':<44}{'value':>12}  {'target':<14}verdict")
    rows = [
        ("direct to the replica p50 / p99", f"{d50:.2f}/{d99:.2f} ms", "-", None),
        ("through the gateway p50 / p99", f"{g50:.2f}/{g99:.2f} ms", "-", None),
        ("gateway added p50", f"{added50:.2f} ms", "-", None),
        ("gateway added p99", f"{added99:.2f} ms", "< 2 ms", added99 < 2),
        ("load over target -> new replica ready", f"{scale_up:.2f} s", f"< {SCALE_UP_DELAY + 1:g} s",
         scale_up < SCALE_UP_DELAY + 1),
        ("cold start: zero -> first answer (local)", f"{cold:.2f} s", "< 3 s", cold < 3),
        ("lost during scale-out (retry on 503)", str(lost_out), "0", lost_out == 0),
        ("lost during scale-in (no retry)", str(lost_in), "0", lost_in == 0),
        ("lost during a rolling update (no retry)", str(lost_update), "0", lost_update == 0),
        ("lost when a replica dies (retry on 503)", str(lost_failure), "0", lost_failure == 0),
    ]
    for name, value, target, ok in rows:
        verdict = "-" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<44}{value:>12}  {target:<14}{verdict}")
    if any(ok is False for *_, ok in rows):
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
