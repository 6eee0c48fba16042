"""Where the fabric keeps its state and how its parts find each other (environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TASK_QUEUE = "fabric"
DEFAULT_NAMESPACE = "default"


def fabric_home_path() -> Path:
    """`$FABRIC_HOME` (default ~/.inferofabric), not created."""
    return Path(os.environ.get("FABRIC_HOME", "~/.inferofabric")).expanduser()


def fabric_home() -> Path:
    """`$FABRIC_HOME` (default ~/.inferofabric): the SQLite files, logs and simulated/local job state.
    Made the owner's alone (0700) when created here: it holds the signing and secret keys, the store
    (sealed secrets, the audit log) and every job's output."""
    home = fabric_home_path()
    if not home.exists():
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        home.chmod(0o700)  # mkdir's mode is cut by the umask
    return home


def make_private(home: Path) -> None:
    """Close FABRIC_HOME to everyone but its owner: the folder and every folder under it 0700, every
    file the owner's only (0600: the Temporal server's database, the store, keys, tokens, logs, job
    state; a job's own executable keeps its owner's x). Files the fabric makes afterwards are made so
    by the umask `fabric up` and `fabric worker` set."""
    for folder, folders, files in os.walk(home):
        base = Path(folder)
        for path, is_dir in [(base, True), *((base / name, False) for name in files)]:
            try:
                if path.is_symlink():
                    continue
                mode = path.stat().st_mode & 0o777
                wanted = 0o700 if is_dir else mode & 0o700
                if mode != wanted:
                    path.chmod(wanted)
            except OSError:  # gone meanwhile (a job's temporary file), or not ours
                pass
        folders[:] = [name for name in folders if not (base / name).is_symlink()]


def database_url() -> str:
    """`$FABRIC_DATABASE_URL` selects PostgreSQL (postgresql+psycopg://...); SQLite under FABRIC_HOME otherwise."""
    url = os.environ.get("FABRIC_DATABASE_URL")
    if url:
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url
    return f"sqlite:///{fabric_home() / 'fabric.db'}"


def temporal_address() -> str:
    """Where users reach the fabric (its front door): $FABRIC_TEMPORAL_ADDRESS, else the door of the
    `fabric up` stack under FABRIC_HOME (stack.json), else the embedded default's port on this host."""
    if os.environ.get("FABRIC_TEMPORAL_ADDRESS"):
        return os.environ["FABRIC_TEMPORAL_ADDRESS"]
    found = (_stack_file() or {}).get("address")
    return found if isinstance(found, str) else "127.0.0.1:7233"


def engine_address() -> str | None:
    """Temporal itself (not the door), for the control plane's own processes on this host:
    $FABRIC_ENGINE_ADDRESS, else what the `fabric up` stack under FABRIC_HOME recorded."""
    if os.environ.get("FABRIC_ENGINE_ADDRESS"):
        return os.environ["FABRIC_ENGINE_ADDRESS"]
    found = (_stack_file() or {}).get("temporal_address")
    return found if isinstance(found, str) else None


def temporal_namespace() -> str:
    return os.environ.get("FABRIC_NAMESPACE", DEFAULT_NAMESPACE)


def task_queue() -> str:
    return os.environ.get("FABRIC_TASK_QUEUE", DEFAULT_TASK_QUEUE)


STACK_FILE = "stack.json"
DEFAULT_GATEWAY_PORT = 8235


def _stack_file() -> dict[str, object] | None:
    """What the `fabric up` stack under FABRIC_HOME wrote about itself (stack.json); None without one."""
    import json

    home = Path(os.environ.get("FABRIC_HOME", "~/.inferofabric")).expanduser()
    try:
        stack = json.loads((home / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return stack if isinstance(stack, dict) else None


def gateway_url() -> str:
    """Where endpoints are served: $FABRIC_GATEWAY_URL, else the `fabric up` stack's gateway under
    FABRIC_HOME (stack.json), else the embedded default's port on this host."""
    url = os.environ.get("FABRIC_GATEWAY_URL")
    if url:
        return url.rstrip("/")
    found = (_stack_file() or {}).get("gateway_url")
    return found.rstrip("/") if isinstance(found, str) and found else f"http://127.0.0.1:{DEFAULT_GATEWAY_PORT}"


def endpoint_url(name: str, base: str | None = None) -> str:
    return f"{base or gateway_url()}/e/{name}/"


def workflow_cache_size() -> int:
    """How many workflows the control plane's worker keeps in memory (FABRIC_WORKFLOW_CACHE).

    A workflow that is not cached replays its whole history for its next task. The SDK's default
    (1,000) is below the 2,000 running workloads one worker is built for: a failover of hundreds of
    them then replays most of them at once, on the worker that must also place and launch them."""
    return int(os.environ.get("FABRIC_WORKFLOW_CACHE", "4000"))


def read_store_url(address: str | None) -> str | None:
    """Where a client may read the store directly (reads without a workflow): FABRIC_DATABASE_URL when
    set, else the store of the `fabric up` stack under FABRIC_HOME when that stack serves this address,
    namespace and task queue (it writes stack.json). None: read through the control plane."""
    if os.environ.get("FABRIC_DATABASE_URL"):
        return database_url()
    stack = _stack_file()
    if stack is None:
        return None
    wanted = (address or temporal_address(), temporal_namespace(), task_queue())
    if (stack.get("address"), stack.get("namespace"), stack.get("task_queue")) != wanted:
        return None
    url = stack.get("store_url")
    return url if isinstance(url, str) else None
