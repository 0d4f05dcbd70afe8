"""The audit as one self-contained status page (pure: a string out).

Everything is inline (CSS, a small script, no fonts or images), and a Content-Security-Policy
forbids every fetch, so the page works from ``file://`` and from any static web server and can
make no network request. The cards are rendered here, in HTML, so the page is complete without
the script; the script only filters and sorts them. Every text from a host goes through
:func:`html.escape`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from provision import __version__
from provision.audit.checks import GIB, SEVERITY, CheckResult, Status
from provision.audit.report import AuditRun, HostReport, iso_time

if TYPE_CHECKING:  # the history (and sqlite3) is imported only by an audit that keeps one
    from provision.audit.history import Delta

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
ORDER = sorted(Status, key=lambda s: -SEVERITY[s])

CSS = """
:root{--ok:#2e9d4f;--warn:#d99a00;--fail:#d7263d;--unknown:#8a4fbf;--unreachable:#7a1020;
--skip:#888;--bg:#11151c;--card:#1b212b;--fg:#e8ecf1;--dim:#9aa5b4;--bar:#2c3442}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:clamp(14px,1.05vw,20px)/1.4 system-ui,-apple-system,"Segoe UI",sans-serif}
header{padding:.8em 1em;border-bottom:1px solid var(--bar)}
h1{margin:0 0 .2em;font-size:1.5em}
.meta{color:var(--dim)}
.counts span{display:inline-block;margin:.3em .4em 0 0;padding:.1em .6em;border-radius:1em;
font-weight:600}
form{display:flex;flex-wrap:wrap;gap:.5em;padding:.6em 1em}
form label{display:flex;flex-direction:column;font-size:.8em;color:var(--dim)}
select,input{font:inherit;font-size:1.1em;background:var(--card);color:var(--fg);
border:1px solid var(--bar);border-radius:.3em;padding:.2em .4em;min-width:8em}
#shown{align-self:flex-end;color:var(--dim)}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,24em),1fr));gap:1em;
align-items:start;padding:0 1em 1em}
.card{background:var(--card);border-radius:.5em;border-left:.5em solid var(--skip);
padding:.6em .8em;overflow-wrap:break-word;min-width:0}
.card[hidden]{display:none}
.card h2{margin:0;font-size:1.15em;display:flex;flex-wrap:wrap;justify-content:space-between;
align-items:flex-start;gap:.2em .5em}
.card h2 span:first-child{overflow-wrap:anywhere;min-width:0}
.badge{border-radius:.3em;padding:0 .4em;font-size:.85em;color:#fff;white-space:nowrap;
align-self:flex-start}
.st-OK{--c:var(--ok)}.st-WARN{--c:var(--warn)}.st-FAIL{--c:var(--fail)}
.st-UNKNOWN{--c:var(--unknown)}.st-UNREACHABLE{--c:var(--unreachable)}.st-SKIP{--c:var(--skip)}
.badge,.counts span,.timeline i{background:var(--c)}
.badge.st-WARN,.counts .st-WARN{color:#111}
.card{border-left-color:var(--c)}
.sub{color:var(--dim);font-size:.85em}
.gpu{margin-top:.5em;display:grid;grid-template-columns:auto 1fr;gap:.1em .6em;align-items:center;
font-size:.9em}
.gpu .name{grid-column:1/3;font-weight:600}
.bar{background:var(--bar);border-radius:.2em;height:1.1em;position:relative}
.bar i{display:block;height:100%;border-radius:.2em;background:#3d7be0}
.bar i.hot{background:var(--fail)}
.bar b{position:absolute;left:.4em;top:0;font-size:.8em;font-weight:500;line-height:1.4em}
table{border-collapse:collapse;width:100%;font-size:.85em;margin-top:.3em}
td,th{text-align:left;padding:.1em .3em;border-bottom:1px solid var(--bar)}
ul.problems{margin:.5em 0 0;padding:0;list-style:none}
ul.problems li{margin:.3em 0;padding-left:.5em;border-left:.25em solid var(--c)}
.fix{color:var(--dim)}
.history{margin-top:.5em;font-size:.85em}
.history ul{margin:.2em 0;padding-left:1.2em}
.timeline{display:flex;flex-wrap:wrap;gap:2px;margin-top:.3em}
.timeline i{display:block;width:.8em;height:.8em;border-radius:2px}
code{font-size:.95em}
"""

SCRIPT = """
(function(){
  var form=document.getElementById('filters'),main=document.querySelector('main');
  var cards=Array.prototype.slice.call(main.querySelectorAll('.card'));
  function val(id){return document.getElementById(id).value;}
  function has(list,v){return !v||(' '+list+' ').indexOf(' '+v+' ')>=0;}
  function apply(){
    var status=val('f-status'),group=val('f-group'),model=val('f-model'),
        driver=val('f-driver'),text=val('f-host').toLowerCase(),shown=0;
    cards.forEach(function(c){
      var d=c.dataset,ok=has(d.status,status)&&has(d.groups,group)&&has(d.models,model)&&
        has(d.driver,driver)&&(!text||d.host.toLowerCase().indexOf(text)>=0);
      c.hidden=!ok;if(ok){shown++;}
    });
    var key=val('f-sort');
    cards.slice().sort(function(a,b){
      var x=a.dataset[key]||'',y=b.dataset[key]||'';
      if(key==='severity'){return (+y)-(+x)||a.dataset.host.localeCompare(b.dataset.host);}
      return x.localeCompare(y)||a.dataset.host.localeCompare(b.dataset.host);
    }).forEach(function(c){main.appendChild(c);});
    document.getElementById('shown').textContent=shown+' of '+cards.length+' hosts shown';
  }
  form.addEventListener('input',apply);form.addEventListener('change',apply);
  form.addEventListener('submit',function(e){e.preventDefault();});
  apply();
})();
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _time(stamp: float | None) -> str:
    return iso_time(stamp) or "never"


def _gpus(facts: dict[str, Any] | None) -> list[dict[str, Any]]:
    return ((facts or {}).get("nvidia") or {}).get("gpus") or []


def _bar(label: str, share: float | None, text: str, hot: bool = False) -> str:
    if share is None:
        return f"<span>{esc(label)}</span><span class=sub>n/a</span>"
    pct = max(0.0, min(100.0, 100.0 * share))
    cls = " class=hot" if hot else ""
    return (
        f"<span>{esc(label)}</span><div class=bar role=meter aria-valuenow={pct:.0f} "
        f'aria-valuemin=0 aria-valuemax=100 aria-label="{esc(label)}">'
        f'<i{cls} style="width:{pct:.0f}%"></i><b>{esc(text)}</b></div>'
    )


def _gpu_block(gpu: dict[str, Any], max_power: float) -> str:
    index = gpu.get("index")
    if gpu.get("lost"):
        why = gpu.get("error") or "lost"
        return f"<div class=gpu><span class=name>GPU {esc(index)}: LOST ({esc(why)})</span></div>"
    used, total = gpu.get("memory_used"), gpu.get("memory_total")
    util, temp, power = gpu.get("utilization_gpu"), gpu.get("temperature_c"), gpu.get("power_w")
    mem = used / total if used is not None and total else None
    bars = [
        _bar("memory", mem, f"{(used or 0) / GIB:.1f} / {(total or 0) / GIB:.0f} GiB"),
        _bar("util", None if util is None else util / 100, f"{util} %"),
        _bar("temp", None if temp is None else temp / 100, f"{temp} °C", (temp or 0) >= 85),
        _bar("power", None if power is None else power / max_power, f"{power} W"),
    ]
    return (
        f"<div class=gpu><span class=name>GPU {esc(index)}: {esc(gpu.get('name'))}</span>"
        + "".join(bars)
        + "</div>"
    )


def _users(gpus: Sequence[dict[str, Any]]) -> str:
    rows = [
        f"<tr><td>{esc(g.get('index'))}</td><td>{esc(p.get('user'))}</td>"
        f"<td>{esc(p.get('pid'))}</td><td>{esc(p.get('name'))}</td>"
        f"<td>{(p.get('used_memory') or 0) / GIB:.1f} GiB</td></tr>"
        for g in gpus
        for p in g.get("processes") or []
    ]
    if not rows:
        return ""
    head = "<tr><th>GPU</th><th>user</th><th>pid</th><th>process</th><th>memory</th></tr>"
    return f"<table class=users>{head}{''.join(rows)}</table>"


def _problem(check: CheckResult) -> str:
    name = check.id + (f"[{check.gpu_index}]" if check.gpu_index is not None else "")
    fix = f"<div class=fix>fix: {esc(check.remediation)}</div>" if check.remediation else ""
    return (
        f"<li class=st-{check.status.value}><span class='badge st-{check.status.value}'>"
        f"{check.status.value}</span> <code>{esc(name)}</code> {esc(check.message)}{fix}</li>"
    )


def _problems(report: HostReport) -> str:
    bad = [c for c in report.checks if SEVERITY[c.status] > 0]
    bad.sort(key=lambda c: -SEVERITY[c.status])
    return f"<ul class=problems>{''.join(_problem(c) for c in bad)}</ul>" if bad else ""


def _models(report: HostReport) -> list[str]:
    return sorted({str(g.get("name")) for g in _gpus(report.facts) if g.get("name")})


def _token(text: str) -> str:
    """Filter values are space-separated lists in data attributes: no spaces inside."""
    return text.replace(" ", "_")


def _card(report: HostReport, max_power: float, extra: str = "") -> str:
    nv = (report.facts or {}).get("nvidia") or {}
    status = report.status.value
    groups = [g for g in report.groups if g != "all"]
    attrs = {
        "data-host": report.host,
        "data-status": status,
        "data-severity": str(SEVERITY[report.status]),
        "data-groups": " ".join(_token(g) for g in groups),
        "data-group": " ".join(groups),
        "data-models": " ".join(_token(m) for m in _models(report)),
        "data-driver": nv.get("driver_version") or "",
    }
    attr_text = " ".join(f'{k}="{esc(v)}"' for k, v in attrs.items())
    where = f" · {esc(report.address)}" if report.address and report.address != report.host else ""
    if report.facts is None:
        body = _problems(report)
    else:
        body = _problems(report) + _facts_line(report.facts) + _gpu_blocks(report.facts, max_power)
    return (
        f'<article class="card st-{status}" {attr_text}>'
        f"<h2><span>{esc(report.host)}</span><span class='badge st-{status}'>{status}</span></h2>"
        f"<div class=sub>{esc(', '.join(groups) or 'ungrouped')}{where}</div>"
        f"{body}{extra}</article>"
    )


def _facts_line(facts: dict[str, Any]) -> str:
    nv = facts.get("nvidia") or {}
    driver = nv.get("driver_version") or f"({nv.get('nvml') or 'no driver'})"
    count = len(_gpus(facts))
    pci = len(nv.get("pci_gpus") or [])
    gpus = f"{count} GPU(s)" if count or not pci else f"{pci} GPU(s) on PCI, none readable"
    return (
        f"<p class=sub>driver {esc(driver)} · CUDA {esc(nv.get('cuda_version') or '-')}"
        f" · {esc((facts.get('host') or {}).get('os_pretty') or '')} · {gpus}</p>"
    )


def _gpu_blocks(facts: dict[str, Any], max_power: float) -> str:
    gpus = _gpus(facts)
    return "".join(_gpu_block(g, max_power) for g in gpus) + _users(gpus)


def _options(element: str, label: str, values: Iterable[str], tokens: bool = True) -> str:
    opts = "".join(
        f'<option value="{esc(_token(v) if tokens else v)}">{esc(v)}</option>' for v in values
    )
    return (
        f"<label>{esc(label)}<select id=f-{element}><option value=''>all</option>{opts}"
        "</select></label>"
    )


def _filters(reports: Sequence[HostReport]) -> str:
    groups = sorted({g for r in reports for g in r.groups if g != "all"})
    models = sorted({m for r in reports for m in _models(r)})
    drivers = sorted(
        {((r.facts or {}).get("nvidia") or {}).get("driver_version") or "" for r in reports} - {""}
    )
    statuses = [s.value for s in ORDER if any(r.status is s for r in reports)]
    sort = (
        "<label>sort<select id=f-sort><option value=severity>worst first</option>"
        "<option value=host>host</option><option value=group>group</option>"
        "<option value=driver>driver</option></select></label>"
    )
    return (
        "<form id=filters>"
        + _options("status", "status", statuses, tokens=False)
        + "<label>host<input id=f-host type=search placeholder='name'></label>"
        + _options("group", "group", groups)
        + _options("model", "GPU model", models)
        + _options("driver", "driver", drivers, tokens=False)
        + sort
        + "<span id=shown></span></form>"
    )


def _counts(reports: Sequence[HostReport]) -> str:
    parts = []
    for s in ORDER:
        n = sum(1 for r in reports if r.status is s)
        if n:
            parts.append(f"<span class='st-{s.value}'>{n} {s.value}</span>")
    return f"<div class=counts>{''.join(parts)}</div>"


def render_html(
    reports: Sequence[HostReport], run: AuditRun, extras: dict[str, str] | None = None
) -> str:
    """The page. ``extras``: per-host HTML appended to its card (history's changes/timeline)."""
    powers = [g.get("power_w") or 0 for r in reports for g in _gpus(r.facts)]
    max_power = max([1.0, *powers])
    cards = "".join(_card(r, max_power, (extras or {}).get(r.host, "")) for r in reports)
    previous = f" · previous audit {_time(run.previous_at)}" if run.previous_at else ""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>Lab status {esc(_time(run.generated_at))}</title><style>{CSS}</style></head>"
        f"<body><header><h1>Lab status</h1><div class=meta>audit of "
        f"<time id=generated>{esc(_time(run.generated_at))}</time>{esc(previous)} · "
        f"{len(reports)} hosts · provision {esc(__version__)}</div>{_counts(reports)}</header>"
        f"{_filters(reports)}<main>{cards}</main><script>{SCRIPT}</script></body></html>\n"
    )


def _timeline(points: Sequence[tuple[float, str]]) -> str:
    marks = "".join(
        f'<i class="st-{esc(status)}" title="{esc(_time(at))} {esc(status)}"></i>'
        for at, status in points
    )
    return f"<div class=timeline aria-label=timeline>{marks}</div>"


def history_extras(delta: Delta) -> dict[str, str]:
    """Per host: what changed since the previous audit, its disk trends and its timeline."""
    hosts = set(delta.timeline) | {c.host for c in delta.changes}
    out = {}
    for host in hosts:
        items = [f"<li>{esc(c.text)}</li>" for c in delta.changes if c.host == host]
        items += [
            f"<li>disk {esc(t.path)}: full in about {t.days_to_full:.0f} days "
            f"({(-t.bytes_per_day) / GIB:.0f} GiB/day)</li>"
            for t in delta.trends
            if t.host == host and t.days_to_full is not None
        ]
        changed = f"<ul class=changes>{''.join(items)}</ul>" if items else ""
        out[host] = (
            f"<div class=history><b>since the previous audit</b>{changed or ' no change'}"
            f"{_timeline(delta.timeline.get(host, []))}</div>"
        )
    return out
