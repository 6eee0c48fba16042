"""`fabric pool ...`: register and operate pools."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from inferofabric.cli.common import AddressOpt, FileOpt, JsonOpt, console, with_client

if TYPE_CHECKING:
    from inferofabric.models.pool import PoolSpec

pool_app = typer.Typer(help="Register and operate pools.", no_args_is_help=True,
                       epilog="Example: fabric pool add -f examples/pools.yaml && fabric pool list")


@pool_app.command("add")
def pool_add(
    file: FileOpt,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Update pools that are already registered (without it an existing name is refused).")]
    = False,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register the pools in a YAML file; starts each pool's health monitor.

    A name that is already registered is refused unless --replace is given (then its spec is updated).
    """
    from inferofabric.cli import render
    from inferofabric.config_file import load_documents, parse
    from inferofabric.models.pool import PoolSpec

    specs = [parse(PoolSpec, d, str(file)) for d in load_documents(file)]
    for spec in specs:
        _check_backend_config(spec, str(file))

    async def go(client: Any) -> list[tuple[Any, bool]]:
        known = {p.name for p in await client.pools()}
        clashes = sorted(s.name for s in specs if s.name in known)
        if clashes and not replace:
            from inferofabric.sdk.errors import AlreadyExists

            raise AlreadyExists(f"pool {', '.join(clashes)} is already registered: pass --replace to update it "
                                 "(`fabric pool list` shows what it is now)")
        return [(await client.register_pool(spec), spec.name in known) for spec in specs]

    pools = with_client(address, go)
    if json_out:
        render.print_json([p for p, _ in pools])
        return
    for pool, updated in pools:
        label = " (SIMULATED)" if pool.simulated else ""
        verb = "updated" if updated else "registered"
        console().print(f"{verb} pool [bold]{pool.name}[/]{label}: {pool.location.value}, "
                        f"{pool.region}, {render._gpus(pool.gpus)}")


def _check_backend_config(spec: PoolSpec, source: str) -> None:
    from pydantic import ValidationError

    from inferofabric.backends.registry import backend_class
    from inferofabric.config_file import FileError, validation_message

    try:
        backend_class(spec.backend).parse_config(spec)
    except ValidationError as error:
        raise FileError(validation_message(error, f"{source}: pool {spec.name} ({spec.backend} settings)")) from None


@pool_app.command("list")
def pool_list(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Pools with health (and since when), GPUs in use, prices."""
    from inferofabric.cli import render

    pools = with_client(address, lambda c: c.pools())
    if json_out:
        render.print_json(pools)
    elif not pools:
        console().print("no pools registered: `fabric pool add -f pool.yaml`")
    else:
        console().print(render.pools_table(pools))


@pool_app.command("remove")
def pool_remove(name: str, address: AddressOpt = None) -> None:
    """Remove a pool (refused while workloads run on it: drain it first)."""
    with_client(address, lambda c: c.remove_pool(name))
    console().print(f"removed pool {name}")


@pool_app.command("cordon")
def pool_cordon(name: str, address: AddressOpt = None) -> None:
    """Stop placing new work on a pool (running work stays; see `drain`)."""
    with_client(address, lambda c: c.cordon(name))
    console().print(f"cordoned {name}")


@pool_app.command("uncordon")
def pool_uncordon(name: str, address: AddressOpt = None) -> None:
    """Place work on the pool again."""
    with_client(address, lambda c: c.uncordon(name))
    console().print(f"uncordoned {name}")


@pool_app.command("drain")
def pool_drain(name: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Cordon the pool and move its running work elsewhere (maintenance)."""
    from inferofabric.cli import render

    moved = with_client(address, lambda c: c.drain(name))
    if json_out:
        render.print_json({"pool": name, "moved": moved})
    else:
        listed = f": {', '.join(moved)}" if moved else ""
        console().print(f"drained {name}: moving {len(moved)} workload(s){listed}")


@pool_app.command("fail")
def pool_fail(name: str, address: AddressOpt = None) -> None:
    """SIMULATED pools only: the pool stops answering, as a dead cluster would."""
    with_client(address, lambda c: c.fail_pool(name))
    console().print(f"simulated outage on {name}: it no longer answers probes or job watches")


@pool_app.command("reclaim")
def pool_reclaim(name: str, address: AddressOpt = None) -> None:
    """SIMULATED pools only: reclaim every job running there now, as a cloud takes back spot capacity.

    The workloads move (the attempt is not charged) and their next attempt gets FABRIC_ATTEMPT and
    FABRIC_CHECKPOINT_DIR to resume from."""
    said = with_client(address, lambda c: c.reclaim_pool(name))
    console().print(f"{name}: {said}")


@pool_app.command("reconcile")
def pool_reconcile(name: str, address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Compare the store's reservations, the pool's jobs and the workflows now: release leaked
    reservations and remove orphan jobs (also done by the pool's monitor every 5 minutes)."""
    from inferofabric.cli import render

    report = with_client(address, lambda c: c.reconcile_pool(name))
    if json_out:
        render.print_json(report.model_dump(mode="json"))
        return
    out = console()
    out.print(report.summary())
    for line in report.released:
        out.print(f"  released {line}")
    for job_id in report.cancelled:
        out.print(f"  removed orphan job {job_id}")
    for line in report.errors:
        out.print(f"  [yellow]{line}[/]")


@pool_app.command("restore")
def pool_restore(name: str, address: AddressOpt = None) -> None:
    """SIMULATED pools only: end a simulated outage."""
    with_client(address, lambda c: c.restore_pool(name))
    console().print(f"{name} answers again")
