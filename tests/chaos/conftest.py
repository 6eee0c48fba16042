"""Fixtures for the durability and chaos tests: a stack whose processes the test owns."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from inferofabric.sdk.client import FabricClient
from inferofabric.store.db import Store, get_store

from .harness import DevServer, WorkerProcess


@dataclass
class Stack:
    server: DevServer
    worker: WorkerProcess
    fabric: FabricClient
    home: Path
    store: Store
    queue: str


@pytest_asyncio.fixture
async def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """A dev server with its own SQLite file and a worker process, both restartable by the test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FABRIC_HOME", str(home))
    store_url = f"sqlite:///{tmp_path / 'fabric.db'}"
    store = get_store(store_url)
    server = DevServer(tmp_path)
    server.start()
    worker = None
    try:
        client = await server.wait_ready()
        queue = f"chaos-{uuid.uuid4().hex[:8]}"
        worker = WorkerProcess(server.address, queue, home, store_url, tmp_path / "worker.log")
        await worker.begin()
        yield Stack(server=server, worker=worker, fabric=FabricClient(client, task_queue=queue), home=home,
                    store=store, queue=queue)
    finally:
        if worker is not None:
            worker.stop(kill=True)
        server.stop(kill=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The big chaos run (@slow, minutes) runs only when asked: `-m slow` or FABRIC_SLOW_TESTS=1."""
    if "slow" in (config.getoption("markexpr") or "") or os.environ.get("FABRIC_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow or FABRIC_SLOW_TESTS=1")
    here = Path(__file__).parent
    for item in items:
        if "slow" in item.keywords and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)
