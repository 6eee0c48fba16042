"""`fabric`: the command line, built on the SDK. Tables for people, `--json` for scripts.

Exit codes: 0 ok; 1 the operation failed (a workload failed, the server refused); 2 bad input
(file, spec, policy); 3 not found, or not allowed (no valid token, or a role that may not do it);
4 the fabric is unreachable; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from inferofabric.auth.tokens import AuthError
from inferofabric.cli import render
from inferofabric.config_file import FileError, load_documents, parse, validation_message
from inferofabric.connection import FabricUnreachable
from inferofabric.models.policy import PlacementPolicy
from inferofabric.models.pool import PoolSpec
from inferofabric.models.workload import WorkloadSpec
from inferofabric.sdk.errors import FabricError, FabricNotFound, InvalidInput, PermissionDenied, WorkloadExists
from inferofabric.store.db import NotFound

T = TypeVar("T")

app = typer.Typer(help="InferoFabric: one control plane and policy over on-prem and cloud GPU pools.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
pool_app = typer.Typer(help="Register and operate pools.", no_args_is_help=True)
policy_app = typer.Typer(help="Check, set and show the placement policy.", no_args_is_help=True)
secret_app = typer.Typer(help="Store secrets that workloads reference as {secret: NAME}.", no_args_is_help=True)
schedule_app = typer.Typer(help="Scheduled workloads (Temporal Schedules), e.g. nightly training.",
                           no_args_is_help=True)
app.add_typer(pool_app, name="pool")
app.add_typer(policy_app, name="policy")
app.add_typer(secret_app, name="secret")
app.add_typer(schedule_app, name="schedule")
token_app = typer.Typer(help="Tokens: who may do what (roles admin, operator, member).", no_args_is_help=True)
app.add_typer(token_app, name="token")

AddressOpt = Annotated[str | None, typer.Option("--address", envvar="FABRIC_TEMPORAL_ADDRESS",
                                                help="Temporal address of the fabric [default: 127.0.0.1:7233]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FileOpt = Annotated[Path, typer.Option("-f", "--file", help="YAML file ('-' for stdin).")]


def fail(message: str, code: int) -> None:
    render.err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(coroutine: Awaitable[T]) -> T:
    """Run an SDK call (user-facing failures become one line and an exit code in `main`)."""
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def exit_code_for(error: BaseException) -> int | None:
    """The exit code of a failure meant for people; None for a bug (which keeps its traceback)."""
    if isinstance(error, FabricUnreachable):
        return 4
    if isinstance(error, FabricNotFound | NotFound | PermissionDenied | AuthError):
        return 3
    if isinstance(error, WorkloadExists | InvalidInput | FileError | ValidationError):
        return 2
    if isinstance(error, FabricError):
        return 1
    return None


async def _client(address: str | None) -> Any:
    from inferofabric.sdk.client import FabricClient
    from inferofabric.settings import read_store_url

    return await FabricClient.connect(address, store_url=read_store_url(address))


def _with_client(address: str | None, action: Callable[[Any], Awaitable[T]]) -> T:
    async def go() -> T:
        return await action(await _client(address))

    return run(go())


# -- stack ---------------------------------------------------------------------------------------------
@app.command()
def up(
    port: Annotated[int, typer.Option(help="Temporal frontend port.")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal Web UI port.")] = 8233,
    config: Annotated[Path, typer.Option("--config", "-c", help="Pools and policy to apply.")] = Path("fabric.yaml"),
    home: Annotated[Path | None, typer.Option(envvar="FABRIC_HOME", help="State directory.")] = None,
) -> None:
    """Run the embedded fabric in the foreground: Temporal dev server + Web UI, store, worker, pools and policy.

    Reads ./fabric.yaml when present, else a documented default (a simulated on-prem pool and simulated
    cloud pools in two regions). Ctrl-C stops everything; state survives restarts under FABRIC_HOME.
    """
    from inferofabric.cli.stack import serve

    home_dir = (home or Path(os.environ.get("FABRIC_HOME", "~/.inferofabric"))).expanduser()
    home_dir.mkdir(parents=True, exist_ok=True)
    run(serve(home_dir, port, ui_port, config))


@app.command()
def worker(
    address: AddressOpt = None,
    task_queue: Annotated[str, typer.Option(envvar="FABRIC_TASK_QUEUE")] = "fabric",
) -> None:
    """Run a control-plane worker alone against FABRIC_TEMPORAL_ADDRESS (store from FABRIC_DATABASE_URL)."""
    from inferofabric.cli.stack import run_worker

    run(run_worker(address, task_queue))


@app.command()
def agent(
    pool: Annotated[str, typer.Option("--pool", envvar="FABRIC_POOL", help="The pool this agent serves.")],
    address: AddressOpt = None,
) -> None:
    """Run a pool agent (e.g. inside a Kubernetes cluster): polls task queue pool.<name>, dials out only."""
    from inferofabric.agent import run_agent

    render.console.print(f"agent for pool [bold]{pool}[/] polling task queue pool.{pool}")
    run(run_agent(pool, address))


@app.command()
def demo(
    address: AddressOpt = None,
    keep: Annotated[bool | None, typer.Option(
        "--keep/--no-keep", help="Keep the stack running after the story [default: on a TTY]")] = None,
) -> None:
    """A one-minute story: on-prem fills to the threshold, the rest bursts to the cloud, pii waits."""
    from inferofabric.cli.demo import run_demo

    run(run_demo(address, keep if keep is not None else sys.stdin.isatty()))


# -- tokens and audit -------------------------------------------------------------------------------------
@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin | operator | member (agents: system)")],
    team: Annotated[str | None, typer.Option("--team", help="The team of a member token.")] = None,
    ttl: Annotated[str, typer.Option("--ttl", help="How long it is valid: 30d, 12h, 90m.")] = "30d",
    name: Annotated[str | None, typer.Option("--name", help="Who holds it (shown in the audit log).")] = None,
    home: Annotated[Path | None, typer.Option(envvar="FABRIC_HOME", help="State directory (its auth.key).")] = None,
) -> None:
    """Print a new token. Runs where the fabric's key is (FABRIC_AUTH_KEY, or FABRIC_HOME/auth.key of
    `fabric up`): tokens are signed here and never travel through Temporal. Give it as FABRIC_TOKEN."""
    import time
    from datetime import timedelta

    from inferofabric.auth.tokens import KEY_FILE, ROLES, SYSTEM, create_token, signing_key
    from inferofabric.models.common import duration_seconds

    home_dir = (home or Path(os.environ.get("FABRIC_HOME", "~/.inferofabric"))).expanduser()
    if role not in (*ROLES, SYSTEM):
        fail(f"unknown role {role!r}: one of {', '.join(ROLES)}", 2)
    if role == "member" and not team:
        fail("a member token needs --team TEAM", 2)
    if not os.environ.get("FABRIC_AUTH_KEY") and not (home_dir / KEY_FILE).exists():
        fail(f"no signing key here: run on the control plane (FABRIC_AUTH_KEY, or {home_dir / KEY_FILE} "
             "that `fabric up` creates)", 2)
    try:
        seconds = duration_seconds(ttl)
    except ValueError as error:
        fail(f"--ttl {ttl!r}: {error}", 2)
    token = create_token(signing_key(home_dir), role, team=team, subject=name, ttl=timedelta(seconds=seconds),
                         now=time.time())
    print(token)


@app.command()
def audit(
    limit: Annotated[int, typer.Option("--limit", help="The newest N entries.")] = 50,
    identity: Annotated[str | None, typer.Option("--identity", help="Only this identity's requests.")] = None,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Who did what: every request that changed something (or tried to), with its result."""
    entries = _with_client(address, lambda c: c.audit(limit=limit, identity=identity))
    if json_out:
        render.print_json(entries)
        return
    render.print_audit(entries)


# -- pools ----------------------------------------------------------------------------------------------
@pool_app.command("add")
def pool_add(file: FileOpt, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Register (or update) the pools in a YAML file; starts each pool's health monitor."""
    specs = [parse(PoolSpec, d, str(file)) for d in load_documents(file)]
    for spec in specs:
        _check_backend_config(spec, str(file))

    async def go(client: Any) -> list[Any]:
        return [await client.register_pool(spec) for spec in specs]

    pools = _with_client(address, go)
    if json_out:
        render.print_json(pools)
    else:
        for pool in pools:
            label = " (SIMULATED)" if pool.simulated else ""
            render.console.print(f"registered pool [bold]{pool.name}[/]{label}: {pool.location.value}, "
                                 f"{pool.region}, {render._gpus(pool.gpus)}")


def _check_backend_config(spec: PoolSpec, source: str) -> None:
    from inferofabric.backends.registry import backend_class

    try:
        backend_class(spec.backend).parse_config(spec)
    except ValidationError as error:
        raise FileError(validation_message(error, f"{source}: pool {spec.name} ({spec.backend} settings)")) from None


@pool_app.command("list")
def pool_list(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Pools with health (and since when), GPUs in use, prices."""
    pools = _with_client(address, lambda c: c.pools())
    if json_out:
        render.print_json(pools)
    elif not pools:
        render.console.print("no pools registered: `fabric pool add -f pool.yaml`")
    else:
        render.console.print(render.pools_table(pools))


@pool_app.command("remove")
def pool_remove(name: str, address: AddressOpt = None) -> None:
    """Remove a pool (refused while workloads run on it: drain it first)."""
    _with_client(address, lambda c: c.remove_pool(name))
    render.console.print(f"removed pool {name}")


@pool_app.command("cordon")
def pool_cordon(name: str, address: AddressOpt = None) -> None:
    """Stop placing new work on a pool (running work stays; see `drain`)."""
    _with_client(address, lambda c: c.cordon(name))
    render.console.print(f"cordoned {name}")


@pool_app.command("uncordon")
def pool_uncordon(name: str, address: AddressOpt = None) -> None:
    """Place work on the pool again."""
    _with_client(address, lambda c: c.uncordon(name))
    render.console.print(f"uncordoned {name}")


@pool_app.command("drain")
def pool_drain(name: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Cordon the pool and move its running work elsewhere (maintenance)."""
    moved = _with_client(address, lambda c: c.drain(name))
    if json_out:
        render.print_json({"pool": name, "moved": moved})
    else:
        listed = f": {', '.join(moved)}" if moved else ""
        render.console.print(f"drained {name}: moving {len(moved)} workload(s){listed}")


@pool_app.command("fail")
def pool_fail(name: str, address: AddressOpt = None) -> None:
    """SIMULATED pools only: the pool stops answering, as a dead cluster would."""
    _with_client(address, lambda c: c.fail_pool(name))
    render.console.print(f"simulated outage on {name}: it no longer answers probes or job watches")


@pool_app.command("reclaim")
def pool_reclaim(name: str, address: AddressOpt = None) -> None:
    """SIMULATED pools only: reclaim every job running there now, as a cloud takes back spot capacity.

    The workloads move (the attempt is not charged) and their next attempt gets FABRIC_ATTEMPT and
    FABRIC_CHECKPOINT_DIR to resume from."""
    said = _with_client(address, lambda c: c.reclaim_pool(name))
    render.console.print(f"{name}: {said}")


@pool_app.command("reconcile")
def pool_reconcile(name: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Compare the store's reservations, the pool's jobs and the workflows now: release leaked
    reservations and remove orphan jobs (also done by the pool's monitor every 5 minutes)."""
    report = _with_client(address, lambda c: c.reconcile_pool(name))
    if json_out:
        render.print_json(report.model_dump(mode="json"))
        return
    render.console.print(report.summary())
    for line in report.released:
        render.console.print(f"  released {line}")
    for job_id in report.cancelled:
        render.console.print(f"  removed orphan job {job_id}")
    for line in report.errors:
        render.console.print(f"  [yellow]{line}[/]")


@pool_app.command("restore")
def pool_restore(name: str, address: AddressOpt = None) -> None:
    """SIMULATED pools only: end a simulated outage."""
    _with_client(address, lambda c: c.restore_pool(name))
    render.console.print(f"{name} answers again")


# -- policy ---------------------------------------------------------------------------------------------
def _load_policy(file: Path) -> PlacementPolicy:
    documents = load_documents(file)
    if len(documents) != 1:
        raise FileError(f"{file}: expected one policy document")
    return parse(PlacementPolicy, documents[0], str(file))  # type: ignore[no-any-return]


@policy_app.command("check")
def policy_check(file: FileOpt, json_out: JsonOpt = False) -> None:
    """Validate a policy file offline (expressions compiled); exit 2 with the reason when it is wrong."""
    policy = run(_async(lambda: _load_policy(file)))
    if json_out:
        render.print_json({"valid": True, "policy": policy.model_dump(mode="json", exclude_none=True)})
    else:
        rules = sum(r is not None for r in (policy.placement.burst, policy.placement.failover))
        render.console.print(f"{file}: valid ({rules} rule(s), {len(policy.constraints)} constraint(s))")


@policy_app.command("set")
def policy_set(file: FileOpt, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Make the policy in the file the active one (a new version)."""
    policy = run(_async(lambda: _load_policy(file)))
    version = _with_client(address, lambda c: c.set_policy(policy))
    if json_out:
        render.print_json({"version": version})
    else:
        render.console.print(f"policy version {version} is active")


@policy_app.command("show")
def policy_show(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """The active policy and its version."""
    import yaml

    info = _with_client(address, lambda c: c.policy())
    if json_out:
        render.print_json(info)
        return
    label = "built-in default (no policy set yet)" if info["default"] else f"version {info['version']}"
    render.console.print(f"# active policy: {label}")
    print(yaml.safe_dump(info["policy"], sort_keys=False).rstrip())


@policy_app.command("simulate")
def policy_simulate(
    file: FileOpt,
    trace: Annotated[Path, typer.Option("--trace", help="CSV: arrival_s,gpus,gpu_types,runtime_s,team,"
                                                         "priority_class,classification")],
    pools: Annotated[Path | None, typer.Option("--pools", help="Pool YAML (default: the running fabric's pools).")]
    = None,
    compare: Annotated[Path | None, typer.Option("--compare", help="A second policy file, side by side.")] = None,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Replay a workload trace through the admission core and the policy (what-if; nothing is submitted).

    Example: fabric policy simulate -f policy.yaml --trace examples/trace.csv --pools examples/pools.yaml
    """
    from inferofabric.policies.simulation import simulate

    policy = run(_async(lambda: _load_policy(file)))
    other = run(_async(lambda: _load_policy(compare))) if compare else None
    jobs = run(_async(lambda: _trace(trace)))
    if pools is not None:
        specs = [parse(PoolSpec, d, str(pools)) for d in load_documents(pools)]
    else:
        specs = [_pool_spec(p) for p in _with_client(address, lambda c: c.pools())]
    if not specs:
        fail("no pools to simulate on: pass --pools FILE or register pools first", 2)
    results = {str(file): simulate(policy, specs, jobs)}
    if other is not None and compare is not None:
        results[str(compare)] = simulate(other, specs, jobs)
    if json_out:
        payloads = {name: r.as_json() for name, r in results.items()}
        render.print_json(payloads[str(file)] if len(payloads) == 1 else payloads)
        return
    render.console.print(render.simulation_table(results, len(jobs), len(specs)))


def _trace(path: Path) -> Any:
    from inferofabric.policies.simulation import load_trace

    try:
        return load_trace(path)
    except ValueError as error:
        raise FileError(str(error)) from None


def _pool_spec(status: Any) -> PoolSpec:
    return PoolSpec(name=status.name, location=status.location, backend="simulated", region=status.region,
                    gpus=dict(status.gpus), price_per_gpu_hour=dict(status.price_per_gpu_hour),
                    labels=dict(status.labels))


# -- queue ----------------------------------------------------------------------------------------------
@app.command()
def queue(
    team: Annotated[str | None, typer.Option(help="Only this team's waiting work.")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown (all with --json).")] = 50,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Waiting work in admission order: position, team, class, fair share, quota and why it waits."""
    view = _with_client(address, lambda c: c.queue(team=team))
    if json_out:
        render.print_json(view.entries)
        return
    render.console.print(render.queue_text(view, limit), highlight=False)


@app.command()
def priority(workload_id: str, priority_class: str, address: AddressOpt = None,
             json_out: JsonOpt = False) -> None:
    """Change the priority class of a waiting workload (example: fabric priority train-7 production)."""
    result = _with_client(address, lambda c: c.set_priority(workload_id, priority_class))
    if json_out:
        render.print_json(result)
    else:
        render.console.print(f"{workload_id}: priority class {priority_class}")


# -- workloads ------------------------------------------------------------------------------------------
@app.command()
def submit(
    file: FileOpt,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow until the workload ends; exit 1 unless it succeeded.")] = False,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit the workload(s) in a YAML file; placement follows the active policy."""
    specs = [parse(WorkloadSpec, d, str(file)) for d in load_documents(file)]

    async def go(client: Any) -> list[Any]:
        handles = [await client.submit(spec) for spec in specs]
        if not wait:
            return [await h.status() for h in handles]
        return [await _follow(h, quiet=json_out) for h in handles]

    statuses = _with_client(address, go)
    if json_out:
        render.print_json(statuses if len(statuses) > 1 else statuses[0])
    elif not wait:
        for status in statuses:
            render.console.print(f"submitted [bold]{status.id}[/] ({status.state.value}); "
                                 f"follow with `fabric status {status.id}`")
    if wait and any(s.state.value != "succeeded" for s in statuses):
        raise typer.Exit(1)


async def _follow(handle: Any, quiet: bool) -> Any:
    """Show each state change until the workload ends."""
    from rich.status import Status

    last = None
    with Status(f"{handle.id}: submitted", console=render.err_console) as spinner:
        while True:
            status = await handle.status()
            line = f"{status.state.value}" + (f" on {status.pool}" if status.pool else "") + (
                f" - {status.message}" if status.message else "")
            if line != last and not quiet:
                render.err_console.print(f"{handle.id}: {line}", highlight=False)
                last = line
            spinner.update(f"{handle.id}: {status.state.value}")
            if status.state.terminal:
                return status
            await asyncio.sleep(0.5)


@app.command()
def status(workload_id: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """State, pool, location, region and attempts of a workload."""
    result = _with_client(address, lambda c: c.get(workload_id).status())
    if json_out:
        render.print_json(result)
    else:
        render.console.print(render.status_text(result))


@app.command("list")
def list_workloads(
    state: Annotated[str | None, typer.Option(help="queued, launching, running, succeeded, failed, cancelled")] = None,
    team: Annotated[str | None, typer.Option()] = None,
    pool: Annotated[str | None, typer.Option()] = None,
    location: Annotated[str | None, typer.Option(help="on-prem or cloud")] = None,
    limit: Annotated[int, typer.Option()] = 200,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Workloads, newest first (from Temporal visibility: the same filters work in the Web UI)."""
    items = _with_client(address, lambda c: c.list(state=state, team=team, pool=pool, location=location, limit=limit))
    if json_out:
        render.print_json(items)
    elif not items:
        render.console.print("no workloads")
    else:
        render.console.print(render.workloads_table(items))


@app.command()
def explain(workload_id: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Why the workload is where it is: every decision, its inputs, and why each other pool was rejected."""
    result = _with_client(address, lambda c: c.get(workload_id).explain())
    if json_out:
        render.print_json(result)
    else:
        render.console.print(render.explanation_text(result), highlight=False)


@app.command()
def cancel(workload_id: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Cancel a workload: its job is stopped and its GPUs released."""
    result = _with_client(address, lambda c: c.get(workload_id).cancel())
    if json_out:
        render.print_json(result)
    else:
        render.console.print(f"{workload_id}: {result.state.value}")


@app.command()
def logs(workload_id: str, tail: Annotated[int, typer.Option()] = 200, address: AddressOpt = None) -> None:
    """The last lines of the workload's output (or where to find them)."""
    text = _with_client(address, lambda c: c.get(workload_id).logs(tail))
    print(text or "(no output yet)")


# -- secrets ---------------------------------------------------------------------------------------------
@secret_app.command("set")
def secret_set(
    name: str,
    from_env: Annotated[str | None, typer.Option(help="Read the value from this environment variable.")] = None,
    pool: Annotated[str | None, typer.Option(help="Scope the secret to one pool.")] = None,
    address: AddressOpt = None,
) -> None:
    """Store a secret (value from --from-env or stdin); it is sealed here and never sent in clear text."""
    if from_env:
        value = os.environ.get(from_env)
        if value is None:
            fail(f"environment variable {from_env} is not set", 2)
    else:
        if sys.stdin.isatty():
            import getpass

            value = getpass.getpass(f"value for {name}: ")
        else:
            value = sys.stdin.read().rstrip("\n")
    assert value is not None
    _with_client(address, lambda c: c.set_secret(name, value, pool))
    render.console.print(f"stored secret {name}" + (f" (pool {pool})" if pool else ""))


@secret_app.command("list")
def secret_list(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Secret names (never values)."""
    names = _with_client(address, lambda c: c.secrets())
    if json_out:
        render.print_json(names)
    else:
        for item in names:
            render.console.print(item["name"] + (f"  (pool {item['pool']})" if item["pool"] else ""))


# -- schedules -------------------------------------------------------------------------------------------
@schedule_app.command("add")
def schedule_add(
    schedule_id: str,
    file: FileOpt,
    cron: Annotated[str, typer.Option(help="Cron expression, e.g. '0 2 * * *'.")],
    address: AddressOpt = None,
) -> None:
    """Run the workload in the file on a schedule (each run is a workload named <name>-<time>)."""
    documents = load_documents(file)
    if len(documents) != 1:
        fail(f"{file}: expected one workload", 2)
    spec = parse(WorkloadSpec, documents[0], str(file))
    _with_client(address, lambda c: c.schedule(schedule_id, spec, cron))
    render.console.print(f"schedule {schedule_id}: {cron}")


@schedule_app.command("list")
def schedule_list(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Schedules and their next run."""
    items = _with_client(address, lambda c: c.schedules())
    if json_out:
        render.print_json(items)
    else:
        for item in items:
            render.console.print(f"{item['id']}  next {item['next'] or '-'}")


@schedule_app.command("remove")
def schedule_remove(schedule_id: str, address: AddressOpt = None) -> None:
    """Delete a schedule (running workloads continue)."""
    _with_client(address, lambda c: c.unschedule(schedule_id))
    render.console.print(f"removed schedule {schedule_id}")


async def _async(fn: Callable[[], T]) -> T:
    return fn()


def main() -> None:
    code = _run()
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without interpreter finalization: the Temporal core's and gRPC's native threads can abort
    # the process while Python tears down (an occasional SIGABRT after a command that succeeded).
    # Every command has finished its own clean-up by now.
    os._exit(code)


def _run() -> int:
    try:
        app()
    except SystemExit as done:
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return fail_now("interrupted", 130)
    except Exception as error:
        code = exit_code_for(error)
        if code is None:
            import traceback

            traceback.print_exc()  # a bug, not a user mistake: keep the traceback for the report
            return 1
        message = validation_message(error) if isinstance(error, ValidationError) else str(error)
        return fail_now(message, code)
    return 0


def fail_now(message: str, code: int) -> int:
    render.err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return code


if __name__ == "__main__":
    main()
