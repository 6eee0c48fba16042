"""A fresh, migrated Store per test on SQLite (a temporary file) and on PostgreSQL (its own schema).

PostgreSQL comes from FABRIC_TEST_POSTGRES_URL (default: the local server, trust auth, database
`test`). Each test gets a schema of its own through `search_path` in the connection options, and
the schema is dropped afterwards, so tests never see each other's rows and can run next to other
users of the same database. When PostgreSQL cannot be reached the PostgreSQL cases are skipped,
except when the CI environment variable is set: there they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from inferofabric.store.db import Store

POSTGRES_URL = os.environ.get("FABRIC_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _conninfo(url: str) -> str:
    """The libpq form of a SQLAlchemy URL (drop the +driver)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(_conninfo(POSTGRES_URL), connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except Exception as error:
        return f"PostgreSQL at {POSTGRES_URL} is not reachable: {error}"
    return None


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    return _postgres_problem()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_problem: str | None) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    if postgres_problem:
        if os.environ.get("CI"):
            pytest.fail(f"{postgres_problem} (CI is set: the PostgreSQL store tests must run)")
        pytest.skip(postgres_problem)
    import psycopg

    schema = f"store_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(POSTGRES_URL), autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(_conninfo(POSTGRES_URL), autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    store = Store(store_url)
    store.migrate()
    try:
        yield store
    finally:
        store.dispose()
