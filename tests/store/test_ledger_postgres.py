"""The live burst scenario of test_ledger_live.py on a PostgreSQL store: the worker, the admission
loop and the ledger on PostgreSQL, costed to the cent from the simulated back end's own records."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inferofabric.store import db

from .test_ledger_live import test_burst_lines_cost_duration_times_gpus_times_price  # noqa: F401 (runs here too)

pytestmark = pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)


@pytest.fixture
def database_url(store_url: str) -> Iterator[str]:
    """The fabric's store on a schema of its own; its connections closed before the schema is dropped."""
    yield store_url
    with db._stores_lock:
        store = db._stores.pop(store_url, None)
    if store is not None:
        store.dispose()
