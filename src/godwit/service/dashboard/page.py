"""HTML of the dashboard, built with escaping at every insertion (no template engine needed).

Every value that comes from the state (server names, event messages, errors) goes through
``html.escape``; the live-update script writes with ``textContent`` only, never ``innerHTML``.
"""

from __future__ import annotations

import itertools
import time
from html import escape

from godwit.state.views import Event, ServerStatus

STYLE = """
body{font:16px/1.4 system-ui,sans-serif;margin:1.5rem;color:#111;background:#fff;max-width:80rem}
table{border-collapse:collapse;width:100%;margin-bottom:1.5rem}
th,td{border-bottom:1px solid #767676;padding:.35rem .6rem;text-align:left}
caption{text-align:left;font-weight:600;padding:.4rem 0}
.error{color:#a00000}.warning{color:#7a4a00}
progress{width:8rem}
label{display:block;margin:.5rem 0 .2rem}
input,button{font:inherit;padding:.3rem .5rem}
form.inline{display:inline;margin-right:.3rem}
"""

SCRIPT = """
const stream = new EventSource("/ui/stream");
function cell(row, key, text){ const c = row.querySelector('[data-key="'+key+'"]'); if (c) c.textContent = text; }
stream.addEventListener("status", (ev) => {
  const data = JSON.parse(ev.data);
  for (const s of data.servers) {
    const row = document.querySelector('tr[data-server="'+CSS.escape(s.server)+'"]');
    if (!row) { continue; }
    for (const [k, v] of Object.entries(s.cells)) cell(row, k, v);
    const bar = row.querySelector("progress");
    if (bar) { bar.value = s.progress; bar.textContent = Math.round(s.progress * 100) + "%"; }
    for (const [name, chart] of Object.entries(s.charts)) {
      const svg = row.querySelector('svg[data-chart="'+name+'"]');
      if (!svg) { continue; }
      svg.setAttribute("aria-label", chart.label);
      svg.querySelector("polyline").setAttribute("points", chart.points);
    }
  }
  const list = document.getElementById("events");
  list.replaceChildren(...data.events.map((e) => {
    const li = document.createElement("li"); li.className = e.level; li.textContent = e.text; return li;
  }));
  document.getElementById("updated").textContent = data.updated;
});
"""


CHART_W, CHART_H = 120, 28


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"


def cells(s: ServerStatus) -> dict[str, str]:
    """The live columns of one server's row, as text (the stream sends these)."""
    return {"state": s.state, "last_cycle": str(s.last_cycle or "-"), "rpo": _age(s.rpo_seconds),
            "throughput": f"{s.throughput_bps / 1e6:.1f} MB/s" if s.throughput_bps else "-",
            "point": str(s.latest_recovery_point or "-"), "error": s.error or ""}


def charts(s: ServerStatus) -> dict[str, dict[str, str]]:
    """Sparklines over the last ten cycles: throughput (MB/s read) and RPO (seconds between
    commits, what the recovery point objective was at each), as SVG points and a spoken summary."""
    stamps = [(c.committed, c) for c in s.cycles if c.committed is not None]
    mbps = [c.bytes_read / c.t_wall / 1e6 if c.t_wall else 0.0 for _t, c in stamps]
    gaps = [b - a for (a, _c), (b, _d) in itertools.pairwise(stamps)]
    return {"throughput": _chart(mbps, "throughput of the last cycles, MB/s", "{:.1f}"),
            "rpo": _chart(gaps, "seconds between the last commits", "{:.0f}")}


def _chart(values: list[float], what: str, fmt: str) -> dict[str, str]:
    if not values:
        return {"points": "", "label": f"{what}: none yet"}
    top = max(values) or 1.0
    step = CHART_W / max(1, len(values) - 1)
    points = " ".join(f"{i * step:.1f},{CHART_H - 2 - v / top * (CHART_H - 4):.1f}" for i, v in enumerate(values))
    return {"points": points, "label": f"{what}: " + ", ".join(fmt.format(v) for v in values)}


def _svg(name: str, chart: dict[str, str]) -> str:
    return (f'<svg data-chart="{name}" role="img" aria-label="{escape(chart["label"])}" width="{CHART_W}" '
            f'height="{CHART_H}" viewBox="0 0 {CHART_W} {CHART_H}"><polyline points="{chart["points"]}" '
            f'fill="none" stroke="#0b4f9c" stroke-width="2"/></svg>')


def event_text(e: Event) -> str:
    return f'{time.strftime("%H:%M:%S", time.localtime(e.ts))} {e.level} {e.server or ""}: {e.message}'


def progress(s: ServerStatus, running: float | None = None) -> float:
    """How far the initial replication is: 1 once any cycle is committed, else how far the
    running initial cycle is (``running``, when this service runs it)."""
    if s.last_cycle is not None:
        return 1.0
    return min(running, 0.99) if running is not None else 0.0  # all read is not yet committed


def page(title: str, body: str, *, live: bool = False) -> str:
    script = f"<script>{SCRIPT}</script>" if live else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><main>{body}</main>{script}</body></html>")


def login(project: str, failed: bool = False) -> str:
    note = '<p role="alert" class="error">That token was not accepted.</p>' if failed else ""
    return page(f"godwit {project}: sign in", f"""<h1>godwit — {escape(project)}</h1>{note}
<form method="post" action="/ui/login">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required size="50">
<button type="submit">Sign in</button></form>""")


def dashboard(project: str, servers: list[ServerStatus], events: list[Event], *, actions: bool = False,
              data_path: str = "", network_check: str = "") -> str:
    from godwit.service.dashboard.actions import buttons

    rows = []
    for s in servers:
        c = cells(s)
        p = progress(s)
        rows.append(
            f'<tr data-server="{escape(s.server)}"><th scope="row">{escape(s.server)}</th>'
            f'<td data-key="state">{escape(c["state"])}</td>'
            f'<td><progress max="1" value="{p}" aria-label="initial replication of {escape(s.server)}">'
            f"{round(p * 100)}%</progress></td>"
            f'<td data-key="last_cycle">{escape(c["last_cycle"])}</td><td data-key="rpo">{escape(c["rpo"])}</td>'
            f'<td data-key="throughput">{escape(c["throughput"])}</td><td data-key="point">{escape(c["point"])}</td>'
            + "".join(f"<td>{_svg(n, ch)}</td>" for n, ch in charts(s).items())
            + f'<td data-key="error" class="error">{escape(c["error"])}</td>'
            + (f"<td>{buttons(s.server)}</td>" if actions else "") + "</tr>")
    table = ("<table><caption>Servers</caption><thead><tr>"
             + "".join(f'<th scope="col">{h}</th>' for h in ("server", "state", "initial replication", "last cycle",
                                                          "RPO", "throughput", "recovery point",
                                                          "throughput over time", "RPO over time", "error")
                       + (("actions",) if actions else ()))
             + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    if not servers:
        table = "<p>No servers yet.</p>"
    items = "".join(f'<li class="{escape(e.level)}">{escape(event_text(e))}</li>' for e in events)
    return page(f"godwit {project}", f"""<h1>godwit — {escape(project)}</h1>
<p>Data plane to the cache store: <span id="data-path">{escape(data_path)}</span>;
last network check: <span id="network-check">{escape(network_check)}</span></p>
<p>Updated <span id="updated" aria-live="polite">{time.strftime("%H:%M:%S")}</span></p>
{table}<h2>Recent events</h2><ul id="events" aria-label="recent events">{items}</ul>""", live=True)
