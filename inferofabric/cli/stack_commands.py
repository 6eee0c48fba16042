"""`fabric up`, `worker`, `agent` and `demo`: the long-running commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from inferofabric.cli.common import AddressOpt, HomeOpt, console, fabric_home, fail, run

DebugOpt = Annotated[bool, typer.Option("--debug", help="Full tracebacks on the terminal too (always in the log).")]


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(worker)
    app.command()(agent)
    app.command()(demo)


def up(
    port: Annotated[int, typer.Option(
        help="The fabric's front door (TLS, API keys): the one port users, SDKs and agents dial.")] = 7233,
    temporal_port: Annotated[int | None, typer.Option(
        help="Temporal itself, on 127.0.0.1 for the control plane only [default: a free port].")] = None,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    dashboard_port: Annotated[int, typer.Option(
        help="The fabric's dashboard (pools, queue, cost) on 127.0.0.1; 0: none.")] = 8234,
    gateway_port: Annotated[int, typer.Option(
        help="The endpoints' gateway (http://127.0.0.1:PORT/e/NAME/) on 127.0.0.1; 0: none.")] = 8235,
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Pools and policy to apply on the first start [default: ./fabric.yaml, else "
                               "the built-in default]")] = None,
    apply_config: Annotated[bool, typer.Option(
        "--apply-config", help="Apply the configuration again now (its pools and policy replace the store's).")]
    = False,
    home: HomeOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run the embedded fabric in the foreground: the front door, Temporal dev server + Web UI, store, worker,
    pools and policy.

    Users, SDKs, the `temporal` CLI and agents dial the door (--port; TLS with the CA at
    FABRIC_HOME/tls/ca.pem, a fabric token as the API key); Temporal itself listens on a loopback
    port of its own (--temporal-port) that only the control plane dials.

    The first start applies ./fabric.yaml (or --config FILE), else a documented default (a simulated
    on-prem pool and simulated cloud pools in two regions). Later starts keep what the store holds —
    pools added and policies set since stand — and say so; --apply-config applies the file again.
    One stack per FABRIC_HOME and per port: a second one refuses instead of breaking the first.
    Ctrl-C stops everything; state survives restarts under FABRIC_HOME.

    Example: fabric up --port 7233 --ui-port 8233 --dashboard-port 8234 --gateway-port 8235
    """
    from inferofabric.cli.stack import serve
    from inferofabric.logs import setup_logging
    from inferofabric.settings import make_private

    os.umask(0o077)  # before anything is made: every file of the stack (the Temporal server's too) is 0600
    home_dir = fabric_home(home)
    home_dir.mkdir(parents=True, exist_ok=True)
    make_private(home_dir)  # what an older version left readable
    setup_logging(home_dir, debug)
    run(serve(home_dir, port, ui_port, config, apply_config, dashboard_port, gateway_port, temporal_port))


def worker(
    address: AddressOpt = None,
    task_queue: Annotated[str, typer.Option(envvar="FABRIC_TASK_QUEUE")] = "fabric",
    debug: DebugOpt = False,
) -> None:
    """Run a control-plane worker alone against FABRIC_TEMPORAL_ADDRESS (store from FABRIC_DATABASE_URL).

    Logs one line per event here and everything in FABRIC_HOME/logs/fabric.log."""
    from inferofabric.cli.stack import run_worker
    from inferofabric.logs import setup_logging

    os.umask(0o077)  # job state, job output and logs under FABRIC_HOME: the owner's only
    setup_logging(fabric_home(None), debug)
    run(run_worker(address, task_queue))


def agent(
    pool: Annotated[str, typer.Option("--pool", envvar="FABRIC_POOL", help="The pool this agent serves.")],
    address: AddressOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run a pool agent (e.g. inside a Kubernetes cluster): polls task queue pool.<name>, dials out only.

    Logs one line per event here and everything in FABRIC_HOME/logs/fabric.log.

    Example: FABRIC_TOKEN=... fabric agent --pool onprem-a --address fabric.example.com:7233
    """
    from inferofabric.agent import run_agent
    from inferofabric.logs import setup_logging

    os.umask(0o077)
    setup_logging(fabric_home(None), debug)
    console().print(f"agent for pool [bold]{pool}[/] polling task queue pool.{pool}")
    run(run_agent(pool, address))


def demo(
    story: Annotated[str, typer.Argument(help="workloads (the default) or endpoints")] = "workloads",
    keep: Annotated[bool | None, typer.Option(
        "--keep/--no-keep", help="Keep the stack running after the story [default: on a TTY]")] = None,
) -> None:
    """A one-minute story. `workloads`: on-prem fills to the threshold, the rest bursts to the cloud, pii
    waits. `endpoints`: an endpoint's replicas scale out on-prem, burst to the cloud, come home, and
    scale to zero.

    It starts its own embedded stack on free ports under FABRIC_HOME/demo (wiped first), so it never
    touches a stack you run with `fabric up`. Example: fabric demo endpoints
    """
    keep_stack = keep if keep is not None else sys.stdin.isatty()
    if story == "endpoints":
        from inferofabric.cli.demo_endpoints import run_endpoint_demo

        run(run_endpoint_demo(keep_stack))
        return
    if story != "workloads":
        fail(f"unknown story {story!r}: workloads or endpoints", 2)
    from inferofabric.cli.demo import run_demo

    run(run_demo(keep_stack))
