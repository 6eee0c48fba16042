"""Tables and text for people; JSON for scripts (`--json`)."""

from __future__ import annotations

import json
import sys
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from inferofabric.models.status import Decision, Explanation, PoolStatus, QueueView, WorkloadStatus

# Piped output (CI logs, `| less`) gets a wide fixed width instead of rich's 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

STATE_STYLE = {"queued": "yellow", "launching": "cyan", "running": "green", "succeeded": "bold green",
               "failed": "bold red", "cancelled": "dim"}
HEALTH_STYLE = {"healthy": "green", "degraded": "yellow", "unhealthy": "bold red", "cordoned": "magenta"}


def print_json(value: Any) -> None:
    def encode(item: Any) -> Any:
        if isinstance(item, BaseModel):
            return item.model_dump(mode="json")
        if isinstance(item, list):
            return [encode(i) for i in item]
        if isinstance(item, dict):
            return {k: encode(v) for k, v in item.items()}
        return item

    print(json.dumps(encode(value), indent=2, default=str))


def _gpus(inventory: dict[str, int], used: dict[str, int] | None = None) -> str:
    if not inventory:
        return "-"
    if used is None:
        return ", ".join(f"{n} {t}" for t, n in inventory.items())
    return ", ".join(f"{used.get(t, 0)}/{n} {t}" for t, n in inventory.items())


def pools_table(pools: list[PoolStatus]) -> Table:
    table = Table(title="Pools", title_justify="left")
    for column in ("name", "location", "region", "backend", "health", "GPUs used/total", "$/GPU-h", "since"):
        table.add_column(column)
    for pool in pools:
        backend = f"{pool.backend} [bold magenta](SIMULATED)[/]" if pool.simulated else pool.backend
        style = HEALTH_STYLE.get(pool.health.value, "")
        health = f"[{style}]{pool.health.value}[/]" + (f"\n[dim]{pool.health_reason}[/]" if pool.health_reason else "")
        prices = ", ".join(f"{t} {p:.2f}" for t, p in pool.price_per_gpu_hour.items()) or "-"
        since = pool.health_since.strftime("%H:%M:%S") if pool.health_since else "-"
        table.add_row(pool.name, pool.location.value, pool.region, backend, health, _gpus(pool.gpus, pool.used),
                      prices, since)
    return table


def workloads_table(items: list[WorkloadStatus]) -> Table:
    table = Table(title="Workloads", title_justify="left")
    for column in ("id", "state", "pool", "location", "region", "GPUs", "attempts", "team"):
        table.add_column(column)
    for item in items:
        style = STATE_STYLE.get(item.state.value, "")
        gpus = f"{item.gpus} x {item.gpu_type}" if item.gpu_type else (str(item.gpus) if item.gpus else "-")
        table.add_row(item.id, f"[{style}]{item.state.value}[/]", item.pool or "-",
                      item.location.value if item.location else "-", item.region or "-", gpus,
                      str(item.attempts), item.team or "-")
    return table


def status_text(status: WorkloadStatus) -> str:
    style = STATE_STYLE.get(status.state.value, "")
    lines = [f"[bold]{status.id}[/]  [{style}]{status.state.value}[/]"]
    if status.pool:
        lines.append(f"  pool      {status.pool} ({status.location.value if status.location else '?'}, "
                     f"{status.region}, {status.backend})")
    if status.gpus:
        lines.append(f"  GPUs      {status.gpus} x {status.gpu_type}")
    lines.append(f"  attempts  {status.attempts}")
    if status.job_id:
        lines.append(f"  job       {status.job_id}")
    if status.priority_class:
        lines.append(f"  class     {status.priority_class}" + (" (borrowing cohort quota)" if status.borrowing else ""))
    if status.position is not None:
        lines.append(f"  position  {status.position} in the queue")
    if status.reason and status.reason != status.message:
        lines.append(f"  waiting   {status.reason}")
    if status.message:
        lines.append(f"  message   {status.message}")
    for record in status.history:
        lines.append(f"  attempt {record.attempt}: {record.pool} -> {record.outcome}")
    return "\n".join(lines)


def decision_text(decision: Decision) -> str:
    target = decision.pool or "nowhere yet (waiting)"
    lines = [f"[bold]attempt {decision.attempt}[/] -> [bold]{target}[/] ({decision.mode})",
             f"  why: {decision.reason}"]
    if decision.inputs:
        lines.append("  inputs: " + ", ".join(f"{k}={v}" for k, v in decision.inputs.items()))
    for rejection in decision.rejected:
        lines.append(f"  [dim]x {rejection.pool}: {rejection.reason}[/]")
    return "\n".join(lines)


def explanation_text(explanation: Explanation) -> str:
    style = STATE_STYLE.get(explanation.state.value, "")
    parts = [f"[bold]{explanation.id}[/]  [{style}]{explanation.state.value}[/]", ""]
    parts += [decision_text(d) for d in explanation.decisions]
    if explanation.queue is not None:
        entry = explanation.queue
        parts.append(f"[bold]waiting[/]: position {entry.position} (in team {entry.team}: {entry.team_position}), "
                     f"class {entry.priority_class}")
        parts.append(f"  why: {entry.reason}")
    if explanation.events:
        parts += ["", "[bold]timeline[/]"] + [f"  {e}" for e in explanation.events]
    return "\n".join(parts)


def queue_text(view: QueueView, limit: int) -> Table | str:
    if not view.entries:
        return "no waiting workloads"
    table = Table(title=f"Queue: {view.total} waiting (admission order)", title_justify="left",
                  caption=_shares_caption(view), caption_justify="left")
    for column in ("pos", "id", "team", "class", "GPUs", "team share", "quota used/nominal (borrowed)", "reason"):
        table.add_column(column)
    for entry in view.entries[:limit]:
        share = view.shares.get(entry.team, {})
        quota = "; ".join(f"{name} {q['used']}/{q['nominal']}" + (f" (+{q['borrowed']})" if q["borrowed"] else "")
                          for name, q in view.quotas.get(entry.team, {}).items()) or "-"
        gpus = f"{entry.gpus} x {'/'.join(entry.gpu_types)}" if entry.gpus else "-"
        table.add_row(str(entry.position or "next"), entry.id, f"{entry.team} #{entry.team_position}",
                      entry.priority_class, gpus, f"{share.get('share', 0):.3f}", quota, entry.reason)
    return table


def _shares_caption(view: QueueView) -> str:
    parts = [f"{team}: share {s['share']:.3f} = (in use {s['in_use']:.3f} + recent {s['recent_usage']:.3f}) "
             f"/ weight {s['weight']:g}" for team, s in view.shares.items()]
    return "fair share (lowest goes first): " + "; ".join(parts) if parts else ""


def simulation_table(results: dict[str, Any], jobs: int, pools: int) -> Table:
    table = Table(title=f"Simulation: {jobs} workloads on {pools} pools (SIMULATED, same admission core)",
                  title_justify="left")
    for column in ("policy", "team", "wait p50", "wait p90", "wait p99", "GPU-h on-prem", "GPU-h cloud",
                   "cloud $", "preemptions"):
        table.add_column(column)
    for name, result in results.items():
        rows = [*result.teams.items(), ("total", result.total)]
        for team, figures in rows:
            table.add_row(name, team, f"{figures['wait_p50_s']:.0f}s", f"{figures['wait_p90_s']:.0f}s",
                          f"{figures['wait_p99_s']:.0f}s", f"{figures['gpu_hours_on_prem']:.1f}",
                          f"{figures['gpu_hours_cloud']:.1f}", f"{figures['cloud_cost']:.2f}",
                          str(figures["preemptions"]))
    return table


def print_audit(entries: list[dict[str, Any]]) -> None:
    table = Table(title=f"Audit log: {len(entries)} entries (oldest first)", title_justify="left")
    for column in ("time", "identity", "role", "action", "target", "result", "detail"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        result = entry["result"]
        table.add_row(entry["time"][:19].replace("T", " "), entry["identity"], entry["role"], entry["action"],
                      entry["target"], f"[red]{result}[/]" if result != "ok" else result, entry.get("detail", ""))
    console.print(table)
