"""A fabric behind its front door, as `fabric up` runs it: Temporal (the session's dev server) is the
engine, a real worker serves the module's own task queue, and the door runs as its own process
(`python -m inferofabric.door`) with TLS. Attackers use the plain temporalio SDK against the door."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import TLSConfig
from temporalio.testing import WorkflowEnvironment

from inferofabric.auth.tokens import create_token, ensure_admin_token, signing_key
from inferofabric.door.tls import ensure_door_tls
from inferofabric.sdk.client import FabricClient
from inferofabric.store.db import Store, get_store
from inferofabric.worker.main import build_worker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Doorway:
    address: str  # the door
    engine: Client  # Temporal itself (the control plane's own view, for judging outcomes)
    home: Path
    queue: str
    store: Store
    store_url: str
    ca: bytes
    namespace: str

    def token(self, role: str, team: str | None = None, subject: str | None = None, pool: str | None = None) -> str:
        return create_token(signing_key(self.home), role, team=team, subject=subject, pool=pool, now=time.time())

    async def client(self, api_key: str | None) -> Client:
        """A plain temporalio client of the door, as any SDK user's."""
        return await Client.connect(self.address, namespace=self.namespace, api_key=api_key,
                                    tls=TLSConfig(server_root_ca_cert=self.ca),
                                    data_converter=pydantic_data_converter, lazy=True)

    async def fabric(self, token: str) -> FabricClient:
        return FabricClient(await self.client(token), task_queue=self.queue, token=token)

    async def audit(self, action: str, count: int = 1) -> list[dict[str, Any]]:
        from inferofabric.auth.audit import audit_entries

        deadline = time.monotonic() + 10
        while True:  # the door's audit writer flushes every 200 ms
            entries = [e for e in audit_entries(self.store, limit=1000) if e["action"] == action]
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            await asyncio.sleep(0.2)


POOL = {"name": "dc1", "location": "on-prem", "backend": "simulated", "region": "dc1", "gpus": {"A100": 8}}


@pytest_asyncio.fixture(scope="module")
async def admin(doorway: Doorway) -> FabricClient:
    """An admin's SDK client through the door, with the simulated pool `dc1` registered."""
    client = await doorway.fabric(doorway.token("admin", subject="root-admin"))
    if "dc1" not in {p.name for p in await client.pools()}:
        await client.register_pool(POOL)
    return client


@pytest_asyncio.fixture(scope="module")
async def pool(admin: FabricClient) -> str:
    return "dc1"


@pytest_asyncio.fixture(scope="module")
async def doorway(temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[Doorway]:
    home = tmp_path_factory.mktemp("door-home")
    store_url = f"sqlite:///{home / 'fabric.db'}"
    queue = f"fabric-door-{uuid.uuid4().hex[:8]}"
    engine = temporal_env.client
    namespace = engine.namespace
    ensure_admin_token(home, time.time())
    tls = ensure_door_tls(home)
    port = free_port()
    env = {**os.environ, "FABRIC_HOME": str(home), "FABRIC_DATABASE_URL": store_url, "FABRIC_TASK_QUEUE": queue,
           "FABRIC_NAMESPACE": namespace}
    process = subprocess.Popen(
        [sys.executable, "-m", "inferofabric.door", "--port", str(port),
         "--upstream", engine.service_client.config.target_host],
        env=env, stdout=(home / "door.log").open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    old_home = os.environ.get("FABRIC_HOME")
    os.environ["FABRIC_HOME"] = str(home)
    worker = build_worker(engine, queue=queue, home=home, store_url=store_url)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, (home / "door.log").read_text()
                await asyncio.sleep(0.1)
        async with worker:
            yield Doorway(address=f"127.0.0.1:{port}", engine=engine, home=home, queue=queue,
                          store=get_store(store_url), store_url=store_url, ca=tls.ca_pem, namespace=namespace)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if old_home is None:
            os.environ.pop("FABRIC_HOME", None)
        else:
            os.environ["FABRIC_HOME"] = old_home
