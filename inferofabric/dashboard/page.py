"""The dashboard's one page. Served live (`fabric up`: it fetches /api/summary and redraws every
15 s) or written whole to a file (`fabric cost --html`: the summary, the figures and Plotly's
bundle inline, so it opens offline from a mail). Tables are filled by the page's script from the
summary's numbers; charts by Plotly from the figures built in charts.py."""

from __future__ import annotations

import html
import json
from typing import Any

from inferofabric.dashboard.charts import figures, plotly_js_path

_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.2em 0 .4em; }
.muted { color: #777; } .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .25em .5em; border-bottom: 1px solid #eee;
text-align: left; } td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
.healthy { color: #2f6f4f; } .degraded { color: #b9770e; } .unhealthy, .cordoned { color: #b03a2e; }
.totals { display: flex; gap: 2em; font-size: 1.1em; } .totals b { display: block; font-size: 1.4em; }
"""

_SCRIPT = """
const money = v => '$' + Number(v).toFixed(2);
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
function rows(id, items, cells) {
  document.getElementById(id).innerHTML = items.map(item => '<tr>' + cells(item).join('') + '</tr>').join('')
    || '<tr><td class="muted">none</td></tr>';
}
function draw(view) {
  const s = view.summary;
  document.getElementById('generated').textContent = s.generated_at;
  for (const key of ['cost_on_prem', 'cost_cloud', 'cost_total']) {
    document.getElementById('total-' + key).textContent = money(s.totals[key]);
  }
  rows('pools', s.pools, p => [`<td>${esc(p.name)}</td>`, `<td>${esc(p.location)}</td>`,
    `<td>${esc(p.region)}</td>`, `<td class="${esc(p.health)}">${esc(p.health)}</td>`,
    `<td class="n">${p.used} / ${p.total}</td>`]);
  rows('queue', s.queue.head, e => [`<td class="n">${e.position}</td>`, `<td>${esc(e.id)}</td>`,
    `<td>${esc(e.team)}</td>`, `<td>${esc(e.reason)}</td>`]);
  document.getElementById('waiting').textContent = s.queue.waiting;
  rows('teams', s.teams, t => [`<td>${esc(t.key)}</td>`,
    `<td class="n">${t.gpu_hours_on_prem.toFixed(3)}</td>`, `<td class="n">${t.gpu_hours_cloud.toFixed(3)}</td>`,
    `<td class="n" data-team="${esc(t.key)}" data-column="cost_on_prem">${money(t.cost_on_prem)}</td>`,
    `<td class="n" data-team="${esc(t.key)}" data-column="cost_cloud">${money(t.cost_cloud)}</td>`,
    `<td class="n" data-team="${esc(t.key)}" data-column="cost_total">${money(t.cost_total)}</td>`]);
  rows('top', s.top_workloads, w => [`<td>${esc(w.key)}</td>`, `<td>${esc(w.team)}</td>`, `<td>${esc(w.pool)}</td>`,
    `<td class="n">${money(w.cost_total)}</td>`]);
  rows('budgets', s.budgets, b => [`<td>${esc(b.kind)} ${esc(b.team || b.project)}</td>`, `<td>${esc(b.scope)}</td>`,
    `<td>${esc(b.period)}</td>`, `<td class="n">${money(b.limit)}</td>`, `<td class="n">${money(b.spent)}</td>`,
    `<td class="n">${money(b.reserved)}</td>`, `<td class="n">${money(b.remaining)}</td>`]);
  for (const [name, figure] of Object.entries(view.figures)) {
    Plotly.react('chart-' + name, figure.data, figure.layout, {displaylogo: false, responsive: true});
  }
}
async function refresh() {
  try {
    const answer = await fetch('api/view');
    if (!answer.ok) throw new Error(answer.status + ' ' + answer.statusText);
    draw(await answer.json());
    document.getElementById('error').textContent = '';
  } catch (error) {
    document.getElementById('error').textContent = 'could not refresh: ' + error.message;
  }
}
"""

_BODY = """
<h1>InferoFabric</h1>
<div class="muted">as of <span id="generated"></span> <span id="error"></span></div>
<h2>Cost to date</h2>
<div class="totals"><div>on-prem<b id="total-cost_on_prem"></b></div><div>burst (cloud)<b id="total-cost_cloud"></b>
</div><div>total<b id="total-cost_total"></b></div></div>
<div class="grid"><div id="chart-spend"></div><div id="chart-share"></div>
<div id="chart-teams"></div><div id="chart-budgets"></div></div>
<h2>By team</h2>
<table><thead><tr><th>team</th><th class="n">GPU-h on-prem</th><th class="n">GPU-h cloud</th>
<th class="n">on-prem</th><th class="n">burst</th><th class="n">total</th></tr></thead>
<tbody id="teams"></tbody></table>
<div class="grid"><div><h2>Top workloads by cost</h2><table><thead><tr><th>workload</th><th>team</th><th>pool</th>
<th class="n">cost</th></tr></thead><tbody id="top"></tbody></table></div>
<div><h2>Budgets</h2><table><thead><tr><th>owner</th><th>scope</th><th>period</th><th class="n">limit</th>
<th class="n">spent</th><th class="n">reserved</th><th class="n">remaining</th></tr></thead><tbody id="budgets"></tbody>
</table></div></div>
<div class="grid"><div><h2>Pools</h2><table><thead><tr><th>pool</th><th>location</th><th>region</th><th>health</th>
<th class="n">GPUs used</th></tr></thead><tbody id="pools"></tbody></table></div>
<div><h2>Queue (<span id="waiting"></span> waiting)</h2><table><thead><tr><th class="n">#</th><th>workload</th>
<th>team</th><th>why it waits</th></tr></thead><tbody id="queue"></tbody></table></div></div>
"""


def view(summary: dict[str, Any]) -> dict[str, Any]:
    """What the page draws: the summary and its figures."""
    return {"summary": summary, "figures": figures(summary)}


def live_page() -> str:
    """The page `fabric up` serves: Plotly from /static, the numbers from /api/view."""
    return _document('<script src="static/plotly.min.js"></script>',
                     "refresh(); setInterval(refresh, 15000);")


def report_page(summary: dict[str, Any]) -> str:
    """One file that opens offline: Plotly's bundle, the numbers and the figures inline."""
    bundle = plotly_js_path().read_text(encoding="utf-8")
    data = json.dumps(view(summary)).replace("</", "<\\/")
    return _document(f"<script>{bundle}</script>", f"draw({data});")


def _document(plotly_tag: str, start: str) -> str:
    title = html.escape("InferoFabric — pools, queue and cost")
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<link rel=\"icon\" href=\"data:,\"><style>{_STYLE}</style>{plotly_tag}</head>"
            f"<body>{_BODY}<script>{_SCRIPT}\n{start}</script></body></html>")
