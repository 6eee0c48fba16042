"""A time-skipping Temporal test server for the slow paths (hours of workflow time in seconds).

One server per test (it starts in ~0.1 s). Time is global to a test server, and it stops skipping
while any workflow or activity task is outstanding: a workflow an earlier test left running (an
admission loop, a monitor) whose timer fires once later tests skip hours ahead gets a task on a queue
nobody polls any more, and from then on every later test waits in real time (CI saw 300 s time-outs
and a server that stopped answering). A fresh server per test cannot inherit such a task."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from inferofabric.models.messages import SEARCH_ATTRIBUTES

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"
KINDS = {"Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
         "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT}


@pytest_asyncio.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter)
    try:
        # WorkloadWorkflow upserts the fabric's search attributes: unknown ones fail its workflow tasks.
        await env.client.operator_service.add_search_attributes(AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={name: KINDS[kind] for name, kind in SEARCH_ATTRIBUTES.items()}))  # type: ignore[misc]
        yield env
    finally:
        await env.shutdown()
