"""`vowvault report --html FILE`: one self-contained page (inline SVG charts, a few lines of
inline script, no external resource) that shows at a glance which policies are healthy,
compliant and growing: daily success rate, storage per tier with a 90-day forecast, the
recovery time of every drill against its target, and a table per policy."""

from __future__ import annotations

import datetime as dt
import html
import json

import pandas as pd

from vowvault.engine import analytics
from vowvault.engine.context import Context

TIER_COLOURS = {"HOT": "#d9480f", "WARM": "#f08c00", "COLD": "#1c7ed6", "ARCHIVE": "#5f3dc4",
                "DEEP_ARCHIVE": "#212529"}
W, H, PAD = 720, 220, 64


def _gib(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _x(i: int, n: int) -> float:
    return PAD + (W - 2 * PAD) * (i / max(n - 1, 1))


def _y(v: float, top: float) -> float:
    return H - PAD - (H - 2 * PAD) * (v / top if top else 0)


def _axes(top_label: str, left: str, right: str) -> str:
    return (f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" class="axis"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" class="axis"/>'
            f'<text x="{PAD - 4}" y="{PAD + 4}" class="lbl" text-anchor="end">{top_label}</text>'
            f'<text x="{PAD}" y="{H - PAD + 16}" class="lbl">{left}</text>'
            f'<text x="{W - PAD}" y="{H - PAD + 16}" class="lbl" text-anchor="end">{right}</text>')


def success_chart(days: list[dt.date], rates: list[float | None]) -> str:
    points = [(i, r) for i, r in enumerate(rates) if r is not None]
    path = " ".join(f"{_x(i, len(days)):.1f},{_y(r, 100):.1f}" for i, r in points)
    dots = "".join(f'<circle cx="{_x(i, len(days)):.1f}" cy="{_y(r, 100):.1f}" r="3" '
                   f'class="pt" data-tip="{days[i]}: {r:.1f}% successful"/>' for i, r in points)
    return (f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="daily success rate">'
            f'{_axes("100%", str(days[0]), str(days[-1]))}'
            f'<line x1="{PAD}" y1="{_y(99.9, 100):.1f}" x2="{W - PAD}" y2="{_y(99.9, 100):.1f}" '
            f'class="target"/><polyline points="{path}" class="line"/>{dots}</svg>')


def storage_chart(history: pd.DataFrame, ahead: pd.DataFrame) -> str:
    if history.empty:
        return "<p>No data stored yet.</p>"
    both = pd.concat([history, ahead]).fillna(0)
    tiers = [t for t in TIER_COLOURS if t in both.columns]
    n = len(both)
    top = float(both[tiers].sum(axis=1).max()) or 1.0
    layers, base = [], [0.0] * n
    for tier in tiers:
        values = both[tier].astype(float).tolist()
        upper = [b + v for b, v in zip(base, values, strict=True)]
        pts = [f"{_x(i, n):.1f},{_y(u, top):.1f}" for i, u in enumerate(upper)] + \
            [f"{_x(i, n):.1f},{_y(b, top):.1f}" for i, b in reversed(list(enumerate(base)))]
        layers.append(f'<polygon points="{" ".join(pts)}" fill="{TIER_COLOURS[tier]}" '
                      f'fill-opacity="0.75" class="area" data-tip="{tier}: '
                      f'{_gib(values[len(history) - 1])} today, {_gib(values[-1])} in 90 days"/>')
        base = upper
    split = _x(len(history) - 1, n)
    legend = "".join(f'<tspan fill="{TIER_COLOURS[t]}"> ■ {t}</tspan>' for t in tiers)
    return (f'<svg viewBox="0 0 {W} {H + 20}" role="img" aria-label="storage per tier">'
            f'{_axes(_gib(top), str(both.index[0].date()), str(both.index[-1].date()))}'
            + "".join(layers) +
            f'<rect x="{split:.1f}" y="{PAD}" width="{W - PAD - split:.1f}" '
            f'height="{H - 2 * PAD}" class="future"/>'
            f'<text x="{split + 4:.1f}" y="{PAD + 12}" class="lbl">forecast (90 days)</text>'
            f'<text x="{PAD}" y="{H + 12}" class="lbl">{legend}</text></svg>')


def _rpo(seconds: object) -> str:
    try:
        value = float(seconds)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    if value != value:  # NaN: not recorded
        return "-"
    return f"{value:.0f} s" if value < 3600 else f"{value / 3600:.1f} h"


def drill_table(drills: pd.DataFrame) -> str:
    """The newest drills, RTO beside RPO (what losing the source when the drill started
    would have lost: the archive's lag for a point-in-time policy, the backup's age
    otherwise)."""
    if drills.empty:
        return ""
    rows = []
    for d in drills.sort_values("created_at", ascending=False).head(10).itertuples():
        ok = d.rto_seconds <= d.rto_target_seconds and d.status == "COMPLETED"
        rows.append(f'<tr class="{"good" if ok else "bad"}"><td>{html.escape(str(d.policy))}'
                    f'</td><td>{html.escape(d.when)}</td><td>{d.rto_seconds:.1f} s</td>'
                    f'<td>{d.rto_target_seconds} s</td><td>{_rpo(d.rpo_seconds)}</td>'
                    f'<td>{html.escape(d.status.lower())}</td></tr>')
    return ("<table><thead><tr><th>Policy</th><th>Drill</th><th>RTO</th><th>RTO target</th>"
            "<th>RPO</th><th>Status</th></tr></thead><tbody>" + "".join(rows) +
            "</tbody></table>")


def rto_chart(drills: pd.DataFrame) -> str:
    if drills.empty:
        return "<p>No drill yet: run <code>vowvault drill POLICY</code>.</p>"
    slowest = float(drills["rto_seconds"].max())
    target = float(drills["rto_target_seconds"].min())
    # Drawn to the slowest drill; the target shows when it is within view.
    top = max(slowest * 1.25, 1e-3) if target > slowest * 5 else max(slowest, target) * 1.1
    n = len(drills)
    width = (W - 2 * PAD) / n * 0.7
    bars = []
    for i, d in enumerate(drills.itertuples()):
        x = PAD + (W - 2 * PAD) * (i + 0.15) / n
        ok = d.rto_seconds <= d.rto_target_seconds and d.status == "COMPLETED"
        bars.append(f'<rect x="{x:.1f}" y="{_y(d.rto_seconds, top):.1f}" width="{width:.1f}" '
                    f'height="{H - PAD - _y(d.rto_seconds, top):.1f}" '
                    f'class="{"ok" if ok else "bad"}" data-tip="{html.escape(d.policy)} '
                    f'{d.when}: {d.rto_seconds:.1f} s (target {d.rto_target_seconds} s, '
                    f'{d.status.lower()}), RPO {_rpo(d.rpo_seconds)}"/>')
    line = (f'<line x1="{PAD}" y1="{_y(target, top):.1f}" x2="{W - PAD}" '
            f'y2="{_y(target, top):.1f}" class="target"/>') if target <= top else (
        f'<text x="{W - PAD}" y="{PAD - 8}" class="lbl" text-anchor="end">target {target:.0f} s'
        f' (far above: every drill well within it)</text>')
    return (f'<svg viewBox="0 0 {W} {H}" role="img" aria-label="recovery time per drill">'
            f'{_axes(f"{top:.2g} s", "oldest drill", "newest drill")}' + "".join(bars) +
            line + '</svg>')


def build(ctx: Context, days: int = 30) -> str:
    today = ctx.clock().date()
    dates = [today - dt.timedelta(days=i) for i in reversed(range(days))]
    frames = analytics.catalog_frames(ctx, analytics.day_window(today)[1])
    daily = [analytics.daily(ctx, d, frames) for d in dates]
    rates = []
    for table in daily:
        finished = 0 if table.empty else int(table[["successful_jobs", "failed_jobs",
                                                     "corrupted_jobs"]].sum().sum())
        ok = 0 if table.empty else int(table["successful_jobs"].sum())
        rates.append(ok * 100 / finished if finished else None)
    history = analytics.storage_history(ctx, days, today)
    ahead = analytics.forecast(history)
    drills = frames["drills"].copy()
    if not drills.empty:
        names = frames["policies"].set_index("policy_id")["policy"]
        drills = drills.dropna(subset=["rto_seconds"]).assign(
            policy=lambda f: f["policy_id"].map(names),
            rto_seconds=lambda f: f["rto_seconds"].astype(float),
            status=lambda f: f["status"].map(lambda s: getattr(s, "value", s)),
            when=lambda f: pd.to_datetime(f["created_at"], utc=True).dt.strftime("%Y-%m-%d"))
        drills = drills.sort_values("created_at").tail(40)
    week = analytics.compliance(ctx, 7)
    rows = _policy_rows(daily, week, frames)
    overall = [r for r in rates if r is not None]
    cards = [("Backups, last " + str(days) + " days", str(sum(int(t["total_jobs"].sum())
                                                             for t in daily if not t.empty))),
             ("Success rate", f"{sum(overall) / len(overall):.1f}%" if overall else "-"),
             ("Compliance, 7 days", f"{sum(week.values()) / len(week):.1f}%" if week else "-"),
             ("Stored now", _gib(float(history.iloc[-1].sum())) if not history.empty else "-"),
             ("Drills passed", f"{int((drills['status'] == 'COMPLETED').sum())}/{len(drills)}"
              if not drills.empty else "-")]
    return PAGE.format(
        generated=html.escape(ctx.clock().strftime("%Y-%m-%d %H:%M UTC")), days=days,
        cards="".join(f'<div class="card"><div class="v">{html.escape(v)}</div>'
                      f'<div class="k">{html.escape(k)}</div></div>' for k, v in cards),
        success=success_chart(dates, rates), storage=storage_chart(history, ahead),
        rto=rto_chart(drills) + drill_table(drills), rows=rows,
        # Inside <script> entities are not decoded: plain JSON, with "</" kept from closing it.
        data=json.dumps({"days": [str(d) for d in dates], "success": rates}).replace(
            "</", "<\\/"))


def _policy_rows(daily: list[pd.DataFrame], week: dict[str, float],
                 frames: dict[str, pd.DataFrame]) -> str:
    tables = [t for t in daily if not t.empty]
    combined = pd.concat(tables) if tables else pd.DataFrame(columns=["policy"])
    out = []
    for p in frames["policies"].itertuples():
        mine = combined[combined["policy"] == p.policy]
        jobs = int(mine["total_jobs"].sum()) if not mine.empty else 0
        ok = int(mine["successful_jobs"].sum()) if not mine.empty else 0
        last = mine.iloc[-1] if not mine.empty else None
        stored = _gib(sum((last.bytes_by_tier or {}).values())) if last is not None else "-"
        key_age = str(int(last.key_age_days)) if last is not None and \
            pd.notna(last.key_age_days) else "-"
        compliance = week.get(p.policy)
        health = "good" if compliance is not None and compliance >= 99.9 else \
            "warn" if compliance is not None and compliance >= 80 else "bad"
        cells = [p.organization, p.policy, str(jobs), f"{ok * 100 / jobs:.1f}%" if jobs else "-",
                 f"{compliance}%" if compliance is not None else "-", stored, key_age]
        out.append(f'<tr class="{health}">' + "".join(f"<td>{html.escape(c)}</td>"
                                                      for c in cells) + "</tr>")
    return "".join(out)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vowvault report</title>
<style>
body {{ font: 15px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px;
       color: #212529; padding: 0 1em; }}
h1 {{ margin-bottom: 0; }} .sub {{ color: #868e96; margin-top: .2em; }}
.cards {{ display: flex; gap: 1em; flex-wrap: wrap; margin: 1.5em 0; }}
.card {{ border: 1px solid #dee2e6; border-radius: 8px; padding: .8em 1.2em; min-width: 9em; }}
.card .v {{ font-size: 1.6em; font-weight: 600; }} .card .k {{ color: #868e96; }}
svg {{ width: 100%; height: auto; background: #f8f9fa; border-radius: 8px; }}
.axis {{ stroke: #adb5bd; }} .lbl {{ font-size: 11px; fill: #868e96; }}
.line {{ fill: none; stroke: #2f9e44; stroke-width: 2; }} .pt {{ fill: #2f9e44; }}
.target {{ stroke: #e03131; stroke-dasharray: 4 3; }}
.future {{ fill: #fff; fill-opacity: .45; stroke: #adb5bd; stroke-dasharray: 3 3; }}
.ok {{ fill: #2f9e44; }} .bad {{ fill: #e03131; }}
table {{ border-collapse: collapse; width: 100%; margin-top: 1em; }}
td, th {{ border-bottom: 1px solid #dee2e6; padding: .35em .6em; text-align: left; }}
tr.good td:first-child {{ border-left: 4px solid #2f9e44; }}
tr.warn td:first-child {{ border-left: 4px solid #f08c00; }}
tr.bad td:first-child {{ border-left: 4px solid #e03131; }}
#tip {{ position: fixed; pointer-events: none; background: #212529; color: #fff;
        padding: .3em .6em; border-radius: 4px; font-size: 13px; display: none; }}
</style></head><body>
<h1>vowvault</h1><p class="sub">Backups report, last {days} days, generated {generated}</p>
<div class="cards">{cards}</div>
<h2>Success rate per day</h2>{success}
<h2>Storage per tier, and the next 90 days</h2>{storage}
<h2>Recovery time (RTO) and recovery point (RPO) of each drill</h2>{rto}
<h2>Policies</h2>
<table><thead><tr><th>Organization</th><th>Policy</th><th>Backups</th><th>Success</th>
<th>Compliance (7 days)</th><th>Stored</th><th>Key age (days)</th></tr></thead>
<tbody>{rows}</tbody></table>
<div id="tip"></div>
<script id="report-data" type="application/json">{data}</script>
<script>
(function () {{
  "use strict";
  var tip = document.getElementById("tip");
  document.querySelectorAll("[data-tip]").forEach(function (el) {{
    el.addEventListener("mousemove", function (e) {{
      tip.textContent = el.getAttribute("data-tip");
      tip.style.display = "block";
      tip.style.left = (e.clientX + 12) + "px";
      tip.style.top = (e.clientY + 12) + "px";
    }});
    el.addEventListener("mouseleave", function () {{ tip.style.display = "none"; }});
  }});
  var data = JSON.parse(document.getElementById("report-data").textContent);
  document.title = "vowvault report (" + data.days.length + " days)";
}})();
</script>
</body></html>
"""
