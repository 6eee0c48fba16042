"""Workload commands: submit, status, list, explain, cancel, logs, queue, priority."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import typer

from inferofabric.cli.common import AddressOpt, FileOpt, JsonOpt, console, fail, print_warning, with_client


def register(app: typer.Typer) -> None:
    for command in (submit, status, explain, cancel, logs, queue, priority):
        app.command()(command)
    app.command("list")(list_workloads)


def submit(
    file: FileOpt,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Follow until the workload ends, showing each state change; exit 1 unless it succeeded.")]
    = False,
    if_impossible: Annotated[str, typer.Option(
        "--if-impossible", help="Work no registered pool could ever run (unknown GPU type, more GPUs than "
                                "the largest pool): 'reject' it, or 'warn' and queue it anyway.")] = "reject",
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Submit the workload(s) in a YAML file; placement follows the active policy.

    Every document is checked before anything is submitted (its fields, and whether any registered
    pool could ever run it); if a submission is refused part way, the error names the documents that
    were submitted before it.

    Example: fabric submit -f examples/workload.yaml --wait
    """
    from inferofabric.cli import render
    from inferofabric.config_file import load_documents, parse
    from inferofabric.models.workload import WorkloadSpec
    from inferofabric.sdk.errors import FabricError, InvalidInput, NoAnswer

    documents = load_documents(file)
    specs = [parse(WorkloadSpec, d, f"{file}" + (f" (document {i + 1})" if len(documents) > 1 else ""))
             for i, d in enumerate(documents)]

    if if_impossible not in ("reject", "warn"):
        fail(f"--if-impossible {if_impossible!r}: one of reject, warn", 2)

    async def go(client: Any) -> list[Any]:
        if if_impossible == "reject":
            for spec in specs:
                problems = await client.problems_of(spec)
                if problems:
                    raise InvalidInput(f"{spec.name or 'the workload'}: {'; '.join(problems)} (nothing submitted; "
                                       "--if-impossible warn queues it anyway, to wait for a pool that fits)")
        handles = []
        for spec in specs:
            try:
                handles.append(await client.submit(spec, if_impossible=if_impossible))
                for problem in handles[-1].warnings:
                    print_warning(f"{handles[-1].id}: {problem}; it waits until a pool that fits is registered")
            except FabricError as error:
                if handles:
                    done = ", ".join(h.id for h in handles)
                    raise type(error)(f"{spec.name}: {error} (submitted before it: {done})") from None
                raise
        try:
            if not wait:
                return [await h.status() for h in handles]
            return [await follow(h, quiet=json_out) for h in handles]
        except NoAnswer as error:
            names = ", ".join(h.id for h in handles)
            if wait:
                raise NoAnswer(f"submitted {names}, but cannot follow: {error}") from None
            print_warning(f"submitted {names}; it starts once a fabric worker runs: {error}")
            raise typer.Exit(0) from None

    statuses = with_client(address, go)
    if json_out:
        render.print_json(statuses if len(statuses) > 1 else statuses[0])
    elif not wait:
        for item in statuses:
            console().print(f"submitted [bold]{item.id}[/] ({item.state.value}); "
                            f"follow with `fabric status {item.id}`")
    if wait and any(s.state.value != "succeeded" for s in statuses):
        raise typer.Exit(1)


async def follow(handle: Any, quiet: bool, every: float = 0.5, heartbeat: float = 60.0) -> Any:
    """Show each state change (where it runs, why it waits) until the workload ends; on a terminal a
    spinner shows the state and the time in it, elsewhere a line every `heartbeat` seconds says it is
    still going."""
    from rich.status import Status

    from inferofabric.cli import render

    last, since, said = None, time.monotonic(), time.monotonic()
    tty = render.err_console.is_terminal
    with Status(f"{handle.id}: submitted", console=render.err_console) as spinner:
        while True:
            current = await handle.status()
            where = f" on {current.pool}" if current.pool else ""
            why = current.reason or current.message
            line = f"{current.state.value}{where}" + (f" - {why}" if why else "")
            now = time.monotonic()
            if line != last:
                if not quiet:
                    render.err_console.print(f"{handle.id}: {line}", highlight=False)
                last, since, said = line, now, now
            elif not quiet and not tty and now - said >= heartbeat:
                render.err_console.print(f"{handle.id}: still {current.state.value}{where} "
                                         f"({now - since:.0f}s)", highlight=False)
                said = now
            spinner.update(f"{handle.id}: {current.state.value}{where} ({now - since:.0f}s)")
            if current.state.terminal:
                return current
            await asyncio.sleep(every)


def status(workload_id: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """State, pool, location, region and attempts of a workload."""
    from inferofabric.cli import render

    result = with_client(address, lambda c: c.get(workload_id).status())
    if json_out:
        render.print_json(result)
    else:
        console().print(render.status_text(result))


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
    from inferofabric.cli import render

    items = with_client(address, lambda c: c.list(state=state, team=team, pool=pool, location=location, limit=limit))
    if json_out:
        render.print_json(items)
    elif not items:
        console().print("no workloads")
    else:
        console().print(render.workloads_table(items))


def explain(workload_id: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Why the workload is where it is: every decision, its inputs, and why each other pool was rejected."""
    from inferofabric.cli import render

    result = with_client(address, lambda c: c.get(workload_id).explain())
    if json_out:
        render.print_json(result)
    else:
        console().print(render.explanation_text(result), highlight=False)


def cancel(workload_id: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Cancel a workload: its job is stopped and its GPUs released."""
    from inferofabric.cli import render

    result = with_client(address, lambda c: c.get(workload_id).cancel())
    if json_out:
        render.print_json(result)
    else:
        console().print(f"{workload_id}: {result.state.value}")


def logs(
    workload_id: str,
    tail: Annotated[int, typer.Option(help="Lines of each attempt shown.")] = 200,
    follow_: Annotated[bool, typer.Option("--follow", "-F", help="Keep printing new output until it ends.")] = False,
    all_attempts: Annotated[bool, typer.Option("--all", help="Every attempt's output, not only the last.")] = False,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The output of the workload's job (each attempt under its own header with --all or --follow).

    Read from the pool on the fabric's host, never through Temporal (whose history would keep it);
    a member reads its own team's workloads only.

    Example: fabric logs train-7 --follow
    """
    from inferofabric.cli import render

    async def go(client: Any) -> Any:
        handle = client.get(workload_id)
        if json_out:
            current = await handle.status()
            return [{"attempt": a.attempt, "pool": a.pool, "job_id": a.job_id, "outcome": a.outcome,
                     "lines": (await handle.attempt_logs(current, a.pool, a.job_id, tail)).splitlines()}
                    for a in current.history if a.pool and a.job_id]
        if not (follow_ or all_attempts):
            print(await handle.logs(tail) or "(no output yet)")
            return None
        await _print_attempts(handle, tail, follow_)
        return None

    result = with_client(address, go)
    if json_out:
        render.print_json(result)


async def _print_attempts(handle: Any, tail: int, keep_going: bool, every: float = 1.0) -> None:
    """Each attempt's output under a header; with `keep_going`, new lines as they come, new attempts as
    they start, until the workload ends."""
    printed: dict[str, int] = {}
    finished: set[str] = set()  # attempts whose output is complete and printed: not fetched again
    header_for: str | None = None
    while True:
        current = await handle.status()
        for record in current.history:
            if not (record.pool and record.job_id) or record.job_id in finished:
                continue
            if record.ended_at is not None:
                finished.add(record.job_id)
            text = await handle.attempt_logs(current, record.pool, record.job_id,
                                             max(tail, 10_000) if keep_going else tail)
            lines = text.splitlines()
            seen = printed.get(record.job_id, 0)
            if record.job_id not in printed or len(lines) > seen:
                if header_for != record.job_id:
                    print(f"==> attempt {record.attempt} on {record.pool} ({record.job_id}) <==", flush=True)
                    header_for = record.job_id
                for line in lines[seen:]:
                    print(line, flush=True)
                printed[record.job_id] = len(lines)
        if not keep_going or current.state.terminal:
            if not printed:
                print("(no output yet)")
            return
        await asyncio.sleep(every)


def queue(
    team: Annotated[str | None, typer.Option(help="Only this team's waiting work.")] = None,
    limit: Annotated[int, typer.Option(help="Rows shown (all with --json).")] = 50,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Waiting work in admission order: position, team, class, fair share, quota and why it waits."""
    from inferofabric.cli import render

    view = with_client(address, lambda c: c.queue(team=team))
    if json_out:
        render.print_json(view.entries)
        return
    console().print(render.queue_text(view, limit), highlight=False)


def priority(workload_id: str, priority_class: str, address: AddressOpt = None,
             json_out: JsonOpt = False) -> None:
    """Change the priority class of a waiting workload.

    Example: fabric priority train-7 production
    """
    from inferofabric.cli import render

    result = with_client(address, lambda c: c.set_priority(workload_id, priority_class))
    if json_out:
        render.print_json(result)
    else:
        console().print(f"{workload_id}: priority class {priority_class}")
