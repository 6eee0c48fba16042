"""Where the fabric keeps its state and how its parts find each other (environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TASK_QUEUE = "fabric"
DEFAULT_NAMESPACE = "default"


def fabric_home() -> Path:
    """`$FABRIC_HOME` (default ~/.inferofabric): the SQLite files, logs and simulated/local job state."""
    home = Path(os.environ.get("FABRIC_HOME", "~/.inferofabric")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def database_url() -> str:
    """`$FABRIC_DATABASE_URL` selects PostgreSQL (postgresql+psycopg://...); SQLite under FABRIC_HOME otherwise."""
    url = os.environ.get("FABRIC_DATABASE_URL")
    if url:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url
    return f"sqlite:///{fabric_home() / 'fabric.db'}"


def temporal_address() -> str:
    return os.environ.get("FABRIC_TEMPORAL_ADDRESS", "127.0.0.1:7233")


def temporal_namespace() -> str:
    return os.environ.get("FABRIC_NAMESPACE", DEFAULT_NAMESPACE)


def task_queue() -> str:
    return os.environ.get("FABRIC_TASK_QUEUE", DEFAULT_TASK_QUEUE)
