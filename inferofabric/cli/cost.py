"""`fabric cost`: what ran where and what it cost, from the ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from inferofabric.cli.common import AddressOpt, JsonOpt, console, fail, with_client

COLUMNS = ("key", "gpu_hours_on_prem", "gpu_hours_cloud", "cost_on_prem", "cost_cloud", "cost_total")


budget_app = typer.Typer(help="Budgets: what each team and project may spend, and where they stand.",
                         no_args_is_help=True, epilog="Example: fabric budget list --json")
BUDGET_COLUMNS = ("owner", "scope", "period", "limit", "spent", "reserved", "remaining")


def register(app: typer.Typer) -> None:
    app.command()(cost)
    app.command()(approve)
    app.command()(deny)
    app.add_typer(budget_app, name="budget")


@budget_app.command("list")
def budget_list(address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Every budget the policy sets (teams.T.budget, projects.P.budget): limit, spent in the current
    period, reserved by running and launching work (its estimate not yet spent), remaining (USD).

    Example: fabric budget list
    """
    from rich.table import Table

    from inferofabric.cli import render

    rows = with_client(address, lambda c: c.budgets())
    if json_out:
        render.print_json(rows)
        return
    if not rows:
        console().print("no budgets: set them in the policy (teams: {T: {budget: {cloud: {monthly: 500}}}})")
        return
    table = Table(*BUDGET_COLUMNS)
    for row in rows:
        owner = f"{row['kind']} {row.get('team') or row.get('project')}"
        table.add_row(owner, row["scope"], row["period"],
                      *(f"${row[k]:,.2f}" for k in ("limit", "spent", "reserved", "remaining")))
    console().print(table)


def approve(workload_id: str, note: Annotated[str, typer.Option(help="Why (kept in the workload's events).")] = "",
            address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Approve the burst a waiting workload asks for (operator or admin; recorded in the audit log).

    Example: fabric approve train-7 --note "deadline on Friday"
    """
    _answer(workload_id, True, note, address, json_out)


def deny(workload_id: str, note: Annotated[str, typer.Option(help="Why (kept in the workload's events).")] = "",
         address: AddressOpt = None, json_out: JsonOpt = False) -> None:
    """Deny the burst a waiting workload asks for: it stays queued for the default target (on-prem).

    Example: fabric deny train-7
    """
    _answer(workload_id, False, note, address, json_out)


def _answer(workload_id: str, yes: bool, note: str, address: str | None, json_out: bool) -> None:
    from inferofabric.cli import render

    status = with_client(address, lambda c: (c.approve if yes else c.deny)(workload_id, note))
    if json_out:
        render.print_json(status)
    else:
        outcome = ("approved: it is admitted at the next cycle" if yes
                   else "denied: it stays queued for the default target")
        console().print(f"{workload_id}: {outcome}")


def cost(
    by: Annotated[str, typer.Option(help="team, project, pool, location, region or workload")] = "team",
    since: Annotated[str | None, typer.Option(help="The window's start as a duration back from now: 7d, 24h.")]
    = None,
    from_: Annotated[str | None, typer.Option("--from", help="The window's start (ISO date or time, UTC).")] = None,
    to: Annotated[str | None, typer.Option("--to", help="The window's end (ISO date or time, UTC) [default: now].")]
    = None,
    step: Annotated[str | None, typer.Option(help="Split by day or week (UTC).")] = None,
    explain: Annotated[str | None, typer.Option("--explain", help="One workload's attempts and cost lines.")]
    = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="CSV rows.")] = False,
    idle: Annotated[bool, typer.Option(
        "--idle", help="Idle on-prem cost per pool: owned GPUs that ran nothing, in GPU-hours and USD.")] = False,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Write the dashboard's cost charts and tables to this file (opens offline; mail it).")]
    = None,
    address: AddressOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """GPU-hours and cost (USD) per team (or --by ...), on-prem and cloud burst apart.

    Cost = the hours a job held its GPUs on its pool (from the back end's start to its end, or to
    now while it runs) x GPUs x the pool's price per GPU-hour when it was placed. Launch-pending time
    is not charged; a moved or preempted attempt keeps what it cost.

    Examples: fabric cost --since 7d · fabric cost --by pool --step day --csv · fabric cost --explain train-7
    · fabric cost --html report.html
    """
    from inferofabric.cli import render

    if html_out is not None:
        _write_html(html_out, address)
        return
    if since and from_:
        fail("give --since or --from, not both", 2)
    start = _start(since, from_)
    end = _time(to, "--to") if to else None
    if idle:
        found = with_client(address, lambda c: c.cost_idle(start=start, end=end, step=step))
        if json_out:
            render.print_json(found)
        else:
            _print_idle(found)
        return
    if explain:
        view = with_client(address, lambda c: c.cost_lines(explain))
        if json_out:
            render.print_json(view)
            return
        _print_lines(view)
        return
    rows = with_client(address, lambda c: c.cost(by=by, start=start, end=end, step=step))
    if json_out:
        render.print_json(rows)
    elif csv_out:
        _print_csv(rows, step is not None, by == "workload")
    elif not rows:
        console().print("no cost recorded in this window")
    else:
        console().print(_table(rows, by, step is not None))


def _print_idle(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not rows:
        console().print("no on-prem pools")
        return
    stepped = "period" in rows[0]
    table = Table(*(["period"] if stepped else []), "pool", "capacity GPU-h", "used GPU-h", "idle GPU-h",
                  "idle cost", "utilization")
    for row in rows:
        figures = (f"{row['capacity_gpu_hours']:,.2f}", f"{row['used_gpu_hours']:,.2f}",
                   f"{row['idle_gpu_hours']:,.2f}", f"${row['idle_cost']:,.2f}", f"{row['utilization']:.0%}")
        table.add_row(*([row["period"]] if stepped else []), row["pool"], *figures)
    console().print(table)


def _write_html(path: Path, address: str | None) -> None:
    from inferofabric.dashboard.data import summary
    from inferofabric.dashboard.page import report_page

    gathered = with_client(address, summary)
    try:
        path.write_text(report_page(gathered), encoding="utf-8")
    except OSError as error:
        fail(f"--html {path}: {error.strerror or error}", 2)
    console().print(f"wrote {path} ({path.stat().st_size // 1024} KiB): spend by day and team, burst share, "
                    f"top workloads, budgets; opens offline", soft_wrap=True)


def _start(since: str | None, from_: str | None) -> datetime | None:
    if since:
        from inferofabric.models.common import duration_seconds

        try:
            return datetime.now(UTC) - timedelta(seconds=duration_seconds(since))
        except ValueError as error:
            fail(f"--since {since!r}: {error}", 2)
    return _time(from_, "--from") if from_ else None


def _time(text: str, option: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option} {text!r}: not an ISO date or time (examples: 2026-11-01, 2026-11-01T08:00)", 2)
        raise
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _table(rows: list[dict[str, Any]], by: str, stepped: bool) -> Any:
    from rich.table import Table

    table = Table(title=f"Cost by {by} (USD; burst = cloud)", title_justify="left")
    if stepped:
        table.add_column("period")
    for name in (by, "GPU-h on-prem", "GPU-h cloud", "$ on-prem", "$ burst", "$ total", "burst share"):
        table.add_column(name, justify="left" if name in (by,) else "right")
    for row in rows:
        share = row["cost_cloud"] / row["cost_total"] if row["cost_total"] else 0.0
        cells = [row["key"], f"{row['gpu_hours_on_prem']:.2f}", f"{row['gpu_hours_cloud']:.2f}",
                 f"{row['cost_on_prem']:.2f}", f"{row['cost_cloud']:.2f}", f"{row['cost_total']:.2f}", f"{share:.0%}"]
        table.add_row(*([row["period"]] if stepped else []), *cells)
    if not stepped and len(rows) > 1:
        total = {name: sum(r[name] for r in rows) for name in COLUMNS[1:]}
        share = total["cost_cloud"] / total["cost_total"] if total["cost_total"] else 0.0
        table.add_row("[bold]all[/]", f"{total['gpu_hours_on_prem']:.2f}", f"{total['gpu_hours_cloud']:.2f}",
                      f"{total['cost_on_prem']:.2f}", f"{total['cost_cloud']:.2f}", f"{total['cost_total']:.2f}",
                      f"{share:.0%}")
    return table


def _print_csv(rows: list[dict[str, Any]], stepped: bool, per_workload: bool) -> None:
    import csv
    import sys

    fields = (["period"] if stepped else []) + list(COLUMNS) + (["pool", "team"] if per_workload else [])
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def _print_lines(view: dict[str, Any]) -> None:
    out = console()
    if not view["lines"]:
        out.print(f"{view['workload']}: no ledger lines (never placed, or placed before the ledger existed)")
        return
    attempts = len({line["attempt"] for line in view["lines"]})
    out.print(f"[bold]{view['workload']}[/]: ${view['cost_total']:.2f} over {attempts} attempt(s)")
    for line in view["lines"]:
        if line.get("segment", 1) > 1:
            out.print(f"  attempt {line['attempt']}, from the price change at {line['started_at']}: "
                      f"${line['price_per_gpu_hour']:.2f}/GPU-h, {line['gpu_hours']:.4f} GPU-h = ${line['cost']:.2f}",
                      highlight=False)
            continue
        until = line["ended_at"] or "now (running)"
        held = f"{line['started_at']} .. {until}" if line["started_at"] else "never started (not charged)"
        out.print(f"  attempt {line['attempt']} on {line['pool']} ({line['location']}, {line['region']}, "
                  f"{line['reason']}): {line['gpus']} x {line['gpu_type']} at ${line['price_per_gpu_hour']:.2f}/GPU-h, "
                  f"held {held}: {line['gpu_hours']:.4f} GPU-h = ${line['cost']:.2f} "
                  f"(launch pending {line['pending_seconds']:.0f}s, not charged)", highlight=False)
