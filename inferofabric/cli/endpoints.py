"""`fabric endpoint ...`: deploy, list, status, explain, scale, update, delete, logs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from inferofabric.cli.common import AddressOpt, FileOpt, JsonOpt, console, fail, with_client

endpoint_app = typer.Typer(help="Inference endpoints: replicas on-prem first, burst under load, zero when idle.",
                           no_args_is_help=True)
NameArg = Annotated[str, typer.Argument(help="The endpoint's name.")]


def _load_spec(file: Any) -> Any:
    from inferofabric.config_file import load_documents, parse
    from inferofabric.models.endpoint import EndpointSpec

    documents = load_documents(file)
    if len(documents) != 1:
        fail(f"{file}: expected one endpoint document, found {len(documents)}", 2)
    return parse(EndpointSpec, documents[0], str(file))


def _table(statuses: list[Any]) -> Any:
    from rich.table import Table

    table = Table("NAME", "TEAM", "STATE", "READY", "DESIRED", "REPLICAS", "WHERE", "URL")
    for status in statuses:
        where = sorted({f"{r.pool} ({r.location.value})" for r in status.replicas if r.pool and r.location and r.live})
        table.add_row(status.name, status.team, status.state.value, str(status.ready), str(status.desired),
                      f"{status.min}..{status.max}", ", ".join(where) or "-", status.url)
    return table


def _replicas(status: Any) -> Any:
    from rich.table import Table

    table = Table("REPLICA", "VERSION", "STATE", "POOL", "LOCATION", "ADDRESS", "ROLE", "MESSAGE")
    for replica in status.replicas:
        table.add_row(replica.id, str(replica.version), replica.state, replica.pool or "-",
                      replica.location.value if replica.location else "-", replica.address or "-",
                      replica.role.value, replica.message[:60])
    return table


def _print(status: Any, json_out: bool) -> None:
    if json_out:
        print(json.dumps(status.model_dump(mode="json", exclude={"spec"}), indent=2))
        return
    console().print(_table([status]))
    if status.replicas:
        console().print(_replicas(status))
    if status.reason:
        console().print(f"autoscaler: {status.reason}")


@endpoint_app.command()
def deploy(file: FileOpt, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Deploy the endpoint in a YAML file and print its URL.

    Each replica is placed like any workload (on-prem first, burst when the policy says, compliance
    on every replica). Example: fabric endpoint deploy -f examples/endpoint.yaml
    """
    spec = _load_spec(file)

    async def go(client: Any) -> Any:
        handle = await client.deploy_endpoint(spec)
        return await handle.status()

    status = with_client(address, go)
    if json_out:
        _print(status, True)
        return
    console().print(f"endpoint [bold]{status.name}[/] deployed ({status.state.value}; replicas "
                    f"{status.min}..{status.max}): {status.url}")


@endpoint_app.command("list")
def list_endpoints(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Deployed endpoints with their state, ready replicas and where they run."""
    statuses = with_client(address, lambda client: client.endpoints())
    if json_out:
        print(json.dumps([s.model_dump(mode="json", exclude={"spec"}) for s in statuses], indent=2))
        return
    if not statuses:
        console().print("no endpoints (fabric endpoint deploy -f endpoint.yaml)")
        return
    console().print(_table(statuses))


@endpoint_app.command()
def status(name: NameArg, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """One endpoint: state, URL, desired and ready replicas, and every replica (where, state)."""
    _print(with_client(address, lambda client: client.endpoint(name).status()), json_out)


@endpoint_app.command()
def explain(name: NameArg, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Why the endpoint has the replicas it has, and why each replica runs where it runs."""
    async def go(client: Any) -> tuple[Any, dict[str, Any]]:
        endpoint = await client.endpoint(name).status()
        placements: dict[str, Any] = {}
        for replica in endpoint.replicas:
            if replica.live:
                try:
                    explanation = await client.get(replica.id).explain()
                except Exception as error:  # the replica's workload may be gone already
                    placements[replica.id] = str(error)
                    continue
                decision = explanation.decisions[-1] if explanation.decisions else None
                placements[replica.id] = (f"{decision.pool} ({decision.mode}): {decision.reason}" if decision
                                          else (explanation.queue.reason if explanation.queue else replica.message))
        return endpoint, placements

    endpoint, placements = with_client(address, go)
    if json_out:
        print(json.dumps({"endpoint": endpoint.model_dump(mode="json", exclude={"spec"}), "placements": placements},
                         indent=2))
        return
    _print(endpoint, False)
    console().print("\n[bold]where and why[/]")
    for replica_id, why in placements.items():
        console().print(f"  {replica_id}: {why}", highlight=False)
    console().print("\n[bold]events[/]")
    for event in endpoint.events:
        console().print(f"  {event}", highlight=False)


@endpoint_app.command()
def scale(name: NameArg,
          min_replicas: Annotated[int | None, typer.Option("--min", help="Fewest replicas.")] = None,
          max_replicas: Annotated[int | None, typer.Option("--max", help="Most replicas.")] = None,
          address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Change the replica range. Example: fabric endpoint scale sentiment --min 2 --max 8"""
    if min_replicas is None and max_replicas is None:
        fail("say --min, --max or both", 2)
    _print(with_client(address, lambda client: client.endpoint(name).scale(min_replicas, max_replicas)), json_out)


@endpoint_app.command()
def update(name: NameArg, file: FileOpt, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Roll out a new spec (new image, command, resources): new replicas first, an old one goes only once
    a new one is ready. Example: fabric endpoint update sentiment -f endpoint-v2.yaml"""
    spec = _load_spec(file)
    if spec.name != name:
        fail(f"{file} describes endpoint {spec.name!r}, not {name!r}", 2)
    status = with_client(address, lambda client: client.endpoint(name).update(spec))
    if json_out:
        _print(status, True)
        return
    console().print(f"endpoint {name}: rolling to version {status.version}")


@endpoint_app.command()
def delete(name: NameArg, address: AddressOpt = None) -> None:
    """Stop every replica and remove the endpoint."""
    status = with_client(address, lambda client: client.endpoint(name).delete())
    console().print(f"endpoint {name} deleted ({len([r for r in status.replicas if r.live])} replica(s) still "
                    "stopping)" if any(r.live for r in status.replicas) else f"endpoint {name} deleted")


@endpoint_app.command()
def logs(name: NameArg, tail: Annotated[int, typer.Option(help="Lines per replica.")] = 50,
         address: AddressOpt = None) -> None:
    """The last lines of every live replica's output, one block per replica."""
    async def go(client: Any) -> list[tuple[str, str]]:
        endpoint = await client.endpoint(name).status()
        blocks = []
        for replica in endpoint.replicas:
            if replica.live and replica.pool:
                blocks.append((f"{replica.id} on {replica.pool}", await client.get(replica.id).logs(tail)))
        return blocks

    blocks = with_client(address, go)
    if not blocks:
        console().print(f"endpoint {name} has no replica running")
    for title, text in blocks:
        console().print(f"[bold]== {title}[/]", highlight=False)
        print(text.rstrip() or "(no output yet)")
