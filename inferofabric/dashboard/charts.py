"""The dashboard's charts as Plotly figures (JSON the page hands to Plotly.newPlot): built here, from
the summary's numbers, so the page and the mailed report (`fabric cost --html`) draw the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ON_PREM, BURST = "#2f6f4f", "#d9822b"


def plotly_js_path() -> Path:
    """Plotly's own offline bundle, shipped inside the `plotly` package (no CDN)."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """name -> figure (data + layout, plain JSON)."""
    import plotly.graph_objects as go

    daily = summary["daily"]
    days = [d["day"] for d in daily]
    layout = {"margin": {"l": 50, "r": 10, "t": 40, "b": 40}, "height": 300, "legend": {"orientation": "h"}}

    per_day = {"type": "category", "title": "day (UTC)"}
    spend = go.Figure(layout={**layout, "title": f"Daily spend, last {summary['days']} days (USD)",
                              "barmode": "stack", "xaxis": per_day})
    spend.add_bar(x=days, y=[d["cost_on_prem"] for d in daily], name="on-prem", marker_color=ON_PREM)
    spend.add_bar(x=days, y=[d["cost_cloud"] for d in daily], name="burst (cloud)", marker_color=BURST)

    teams = summary["teams"]
    by_team = go.Figure(layout={**layout, "title": "Spend by team (USD)", "barmode": "stack"})
    by_team.add_bar(x=[t["key"] for t in teams], y=[t["cost_on_prem"] for t in teams], name="on-prem",
                    marker_color=ON_PREM)
    by_team.add_bar(x=[t["key"] for t in teams], y=[t["cost_cloud"] for t in teams], name="burst (cloud)",
                    marker_color=BURST)

    share = go.Figure(layout={**layout, "title": "Burst share of spend", "xaxis": per_day,
                              "yaxis": {"tickformat": ".0%", "range": [0, 1.05]}})
    share.add_scatter(x=days, y=[d["burst_share"] for d in daily], mode="lines+markers", name="burst share",
                      line_color=BURST)

    budgets = summary["budgets"]
    labels = [f"{b['kind']} {b.get('team') or b.get('project')} {b['scope']} {b['period']}" for b in budgets]
    burn = go.Figure(layout={**layout, "title": "Budgets: spent, reserved, remaining (USD)", "barmode": "stack"})
    burn.add_bar(y=labels, x=[b["spent"] for b in budgets], name="spent", orientation="h", marker_color="#b03a2e")
    burn.add_bar(y=labels, x=[b["reserved"] for b in budgets], name="reserved", orientation="h",
                 marker_color="#e6b0aa")
    burn.add_bar(y=labels, x=[max(b["remaining"], 0) for b in budgets], name="remaining", orientation="h",
                 marker_color="#d5dbdb")
    figs = {"spend": spend, "teams": by_team, "share": share, "budgets": burn}
    return {name: json.loads(fig.to_json()) for name, fig in figs.items()}
