"""`fabric policy ...`: check, set, show and simulate the placement policy."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inferofabric.cli.common import AddressOpt, FileOpt, JsonOpt, console, fail, with_client

if TYPE_CHECKING:
    from inferofabric.models.policy import PlacementPolicy
    from inferofabric.models.pool import PoolSpec

policy_app = typer.Typer(help="Check, set and show the placement policy.", no_args_is_help=True,
                         epilog="Example: fabric policy check -f examples/policy.yaml && "
                                "fabric policy set -f examples/policy.yaml")


def load_policy(file: Path) -> PlacementPolicy:
    from inferofabric.config_file import FileError, load_documents, parse
    from inferofabric.models.policy import PlacementPolicy

    documents = load_documents(file)
    if len(documents) != 1:
        raise FileError(f"{file}: expected one policy document")
    return parse(PlacementPolicy, documents[0], str(file))  # type: ignore[no-any-return]


@policy_app.command("check")
def policy_check(
    file: FileOpt,
    pools: Annotated[Path | None, typer.Option(
        "--pools", help="Pool YAML: also check that every target and region names one of these pools.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate a policy file offline (expressions compiled, targets that look like a mistyped location);
    exit 2 with the reason when it is wrong. `fabric policy set` checks targets against the registered pools.
    """
    from inferofabric.cli import render
    from inferofabric.config_file import FileError, load_documents, parse
    from inferofabric.models.pool import PoolSpec
    from inferofabric.policies.feasibility import known_pools, target_problems

    policy = load_policy(file)
    specs = [parse(PoolSpec, d, str(pools)) for d in load_documents(pools)] if pools is not None else None
    problems = target_problems(policy, known_pools(specs) if specs is not None else None)
    if problems:
        raise FileError(f"{file}: " + "; ".join(problems))
    if json_out:
        render.print_json({"valid": True, "policy": policy.model_dump(mode="json", exclude_none=True)})
    else:
        rules = sum(r is not None for r in (policy.placement.burst, policy.placement.failover))
        console().print(f"{file}: valid ({rules} rule(s), {len(policy.constraints)} constraint(s))")


@policy_app.command("set")
def policy_set(
    file: FileOpt,
    force: Annotated[bool, typer.Option(
        "--force", help="Set it even if a target or region names no registered pool (pools to come).")] = False,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Make the policy in the file the active one (a new version; it stands across restarts).

    Refused (exit 2, nothing changed) when a placement target or region names no location, registered
    pool or region, unless --force.
    """
    from inferofabric.cli import render

    policy = load_policy(file)
    version = with_client(address, lambda c: c.set_policy(policy, force=force))
    if json_out:
        render.print_json({"version": version})
    else:
        console().print(f"policy version {version} is active")


@policy_app.command("show")
def policy_show(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """The active policy and its version."""
    import yaml

    from inferofabric.cli import render

    info = with_client(address, lambda c: c.policy())
    if json_out:
        render.print_json(info)
        return
    label = "built-in default (no policy set yet)" if info["default"] else f"version {info['version']}"
    console().print(f"# active policy: {label}")
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
    from inferofabric.cli import render
    from inferofabric.config_file import load_documents, parse
    from inferofabric.models.pool import PoolSpec
    from inferofabric.policies.simulation import simulate

    policy = load_policy(file)
    other = load_policy(compare) if compare else None
    jobs = _trace(trace)
    if pools is not None:
        specs = [parse(PoolSpec, d, str(pools)) for d in load_documents(pools)]
    else:
        specs = [_pool_spec(p) for p in with_client(address, lambda c: c.pools())]
    if not specs:
        fail("no pools to simulate on: pass --pools FILE or register pools first", 2)
    results = {str(file): simulate(policy, specs, jobs)}
    if other is not None and compare is not None:
        results[str(compare)] = simulate(other, specs, jobs)
    if json_out:
        payloads = {name: r.as_json() for name, r in results.items()}
        render.print_json(payloads[str(file)] if len(payloads) == 1 else payloads)
        return
    console().print(render.simulation_table(results, len(jobs), len(specs)))


def _trace(path: Path) -> Any:
    from inferofabric.config_file import FileError
    from inferofabric.policies.simulation import load_trace

    try:
        return load_trace(path)
    except ValueError as error:
        raise FileError(str(error)) from None


def _pool_spec(status: Any) -> PoolSpec:
    from inferofabric.models.pool import PoolSpec

    return PoolSpec(name=status.name, location=status.location, backend="simulated", region=status.region,
                    gpus=dict(status.gpus), price_per_gpu_hour=dict(status.price_per_gpu_hour),
                    labels=dict(status.labels))
