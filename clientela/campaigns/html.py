"""The campaign report as one standalone HTML page: tables and inline SVG charts, no scripts.

Charts: uplift with its 95% interval per arm and variant (a forest plot; a bar that crosses
zero did not show an effect), the funnel of each arm, and the cumulative response and
conversion rates of treated and control customers over the response window.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

TREATED, CONTROL, GRID, INK = "#2f6fb0", "#d08a2c", "#dddddd", "#333333"


def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("clientela.campaigns", "."),
        autoescape=select_autoescape(enabled_extensions=("html", "j2")),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda v: "-" if v is None else f"{v * 100:.2f}%"
    env.filters["money"] = lambda v: "-" if v is None else f"{v:,.2f}"
    env.filters["num"] = lambda v: "-" if v is None else f"{v:,}"
    env.filters["uplift"] = uplift_text
    return env


def uplift_text(u: dict[str, Any], unit: str = "pp") -> str:
    if "insufficient" in u:
        return f"not measurable: {u['insufficient']}"
    value = u.get("uplift_pp", u.get("diff"))
    low, high = u["ci95"]
    p = u["p_value"]
    return f"{value:+.2f}{unit} (95% CI {low:+.2f} to {high:+.2f}; p = {p:.3g})"


def render(data: dict[str, Any], back: str = "", back_label: str = "") -> str:
    """The page; ``back`` adds a link to where it was opened from (the console)."""
    return (
        _env()
        .get_template("report.html.j2")
        .render(
            data=data,
            forest=forest(data),
            funnels=[(arm["arm"], funnel(arm)) for arm in data["arms"]],
            qini={
                arm["arm"]: qini(arm["selection"]["model"])
                for arm in data["arms"]
                if (arm.get("selection") or {}).get("model", {}).get("curve")
            },
            timeline=timeline(data),
            back=back,
            back_label=back_label,
        )
    )


def forest(data: dict[str, Any], measure: str = "conversion") -> Markup:
    """Uplift in percentage points with its 95% interval, one row per arm and variant."""
    rows: list[tuple[str, dict[str, Any]]] = []
    for arm in data["arms"]:
        rows.append((f"arm {arm['arm']}", arm["uplift"][measure]))
        rows.extend((f"  variant {v['variant']}", v["uplift"][measure]) for v in arm["variants"])
    measured = [u for _, u in rows if "ci95" in u]
    lo = min([0.0, *(u["ci95"][0] for u in measured)])
    hi = max([0.0, *(u["ci95"][1] for u in measured)])
    span = (hi - lo) or 1.0
    lo, hi = lo - span * 0.1, hi + span * 0.1
    width, left, right, row_h = 760, 170, 150, 28
    height = row_h * len(rows) + 40

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (width - left - right)

    parts = [
        f'<line x1="{x(0):.1f}" y1="10" x2="{x(0):.1f}" y2="{height - 25}" '
        f'stroke="{INK}" stroke-dasharray="3,3"/>',
        f'<text x="{x(0):.1f}" y="{height - 8}" text-anchor="middle" font-size="11">0</text>',
        f'<text x="{left}" y="{height - 8}" font-size="11">{lo:+.2f}pp</text>'
        if x(0) - left > 45
        else "",
        f'<text x="{x(hi):.1f}" y="{height - 8}" text-anchor="end" font-size="11">'
        f"{hi:+.2f}pp</text>",
    ]
    for i, (label, u) in enumerate(rows):
        y = 20 + i * row_h
        parts.append(f'<text x="5" y="{y + 4}" font-size="12">{escape(label)}</text>')
        if "ci95" not in u:
            parts.append(
                f'<text x="{left}" y="{y + 4}" font-size="12" fill="#888">'
                f"<title>{escape(u.get('insufficient', ''))}</title>"
                "not measurable: too little data (see the arm's table)</text>"
            )
            continue
        a, b = u["ci95"]
        value = u.get("uplift_pp", 0.0)
        color = TREATED if (a > 0 or b < 0) else "#888888"
        parts.append(
            f'<line x1="{x(a):.1f}" y1="{y}" x2="{x(b):.1f}" y2="{y}" '
            f'stroke="{color}" stroke-width="3"/>'
        )
        parts.append(f'<circle cx="{x(value):.1f}" cy="{y}" r="5" fill="{color}"/>')
        parts.append(
            f'<text x="{x(b) + 6:.1f}" y="{y + 4}" font-size="11">{value:+.2f}pp, '
            f"p = {u['p_value']:.3g}</text>"
        )
    return _svg(width, height, parts, f"{measure} uplift with 95% interval")


def funnel(arm: dict[str, Any]) -> Markup:
    """Treated: customers, sent, responded, converted; control: customers, responded, converted."""
    t, c = arm["treated"], arm["control_group"]
    steps = [
        ("customers", t["targeted"], c["targeted"]),
        ("sent", t["sent"], None),
        ("delivered", t["delivered"], None),
        ("responded", t["responded"], c["responded"]),
        ("converted", t["conversions"], c["conversions"]),
    ]
    if not t["delivered"]:
        steps = [s for s in steps if s[0] != "delivered"]
    width, left, row_h = 720, 100, 34
    height = row_h * len(steps) + 10
    full = width - left - 130  # a bar's length is its share of its own group

    def bar(y: int, x: int, n: int, color: str) -> str:
        w = x / n * full if n else 0
        return (
            f'<rect x="{left}" y="{y}" width="{max(w, 1):.1f}" height="12" fill="{color}"/>'
            f'<text x="{left + w + 5:.1f}" y="{y + 10}" font-size="11">'
            f"{x:,} ({_share(x, n)})</text>"
        )

    parts = []
    for i, (label, treated, control) in enumerate(steps):
        y = 5 + i * row_h
        parts.append(f'<text x="5" y="{y + 14}" font-size="12">{label}</text>')
        parts.append(bar(y, treated, t["targeted"], TREATED))
        if control is not None:
            parts.append(bar(y + 14, control, c["targeted"], CONTROL))
    return _svg(width, height, parts, f"funnel of arm {arm['arm']}: treated and control")


def qini(model: dict[str, Any]) -> Markup:
    """The model's Qini curve on the customers it did not learn from: after targeting the
    share on the x axis (highest scores first), the responses contacting them added, per
    customer; the straight line is what choosing at random would add."""
    points = model["curve"]
    what = {"visit": "visits", "conversion": "conversions"}.get(
        model.get("outcome", ""), "responses"
    )
    width, height, left, bottom, top = 520, 240, 70, 40, 24
    span_x, span_y = width - left - 20, height - bottom - top
    ys = [y for _, y in points]
    low, high = min(0.0, *ys), max(0.0, *ys) or 1.0
    scale = span_y / (high - low) if high > low else 1.0

    def at(x: float, y: float) -> str:
        return f"{left + x * span_x:.1f},{top + (high - y) * scale:.1f}"

    line = " ".join(at(x, y) for x, y in points)
    end = points[-1][1]
    zero = top + high * scale
    parts = [
        f'<line x1="{left}" y1="{zero:.1f}" x2="{left + span_x}" y2="{zero:.1f}" stroke="{GRID}"/>',
        f'<polyline points="{at(0, 0)} {at(1, end)}" fill="none" stroke="{CONTROL}" '
        'stroke-dasharray="4 3"/>',
        f'<polyline points="{line}" fill="none" stroke="{TREATED}" stroke-width="2"/>',
        f'<text x="4" y="12" font-size="11">{what} added per customer</text>',
        f'<text x="{left - 6}" y="{top + 4}" font-size="11" text-anchor="end">{high:+.3f}</text>',
        f'<text x="{left - 6}" y="{zero + 4:.1f}" font-size="11" text-anchor="end">0</text>',
        f'<text x="{left}" y="{height - 22}" font-size="11">0%</text>',
        f'<text x="{left + span_x}" y="{height - 22}" font-size="11" text-anchor="end">100%</text>',
        f'<text x="{left + span_x / 2}" y="{height - 6}" font-size="11" text-anchor="middle">'
        "customers targeted, highest scores first</text>",
    ]
    title = f"Qini curve of model {model['name']} version {model['version']} (held out)"
    return _svg(width, height, parts, title)


def timeline(data: dict[str, Any]) -> Markup | None:
    """Cumulative responses per customer of treated and control, bucket by bucket."""
    points = (data.get("timeline") or {}).get("points") or []
    if not points:
        return None
    size = {
        "treated": sum(a["treated"]["targeted"] for a in data["arms"]),
        "control": sum(a["control_group"]["targeted"] for a in data["arms"]),
    }
    stamps = sorted({p["at"] for p in points})
    series: dict[str, list[float]] = {}
    for group in ("treated", "control"):
        per_bucket = {p["at"]: p["responses"] + p["conversions"] for p in points
                      if p["group"] == group}  # fmt: skip
        n = size[group] or 1
        series[group] = [0.0] + [
            v / n * 100 for v in accumulate(per_bucket.get(s, 0) for s in stamps)
        ]
    top = max([*series["treated"], *series["control"], 0.001])
    width, height, left, bottom = 720, 220, 60, 30
    step = (width - left - 20) / len(stamps)

    def xy(i: int, v: float) -> str:
        return f"{left + i * step:.1f},{height - bottom - v / top * (height - bottom - 15):.1f}"

    parts = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}" '
        f'stroke="{GRID}"/>',
        f'<text x="5" y="20" font-size="11">{top:.1f}%</text>',
        f'<text x="5" y="{height - bottom}" font-size="11">0%</text>',
        f'<text x="{left}" y="{height - 8}" font-size="11">{stamps[0][:16]}</text>',
        f'<text x="{width - 10}" y="{height - 8}" text-anchor="end" font-size="11">'
        f"{stamps[-1][:16]} (buckets of {data['timeline']['bucket']})</text>",
    ]
    for group, color in (("treated", TREATED), ("control", CONTROL)):
        coords = " ".join(xy(i, v) for i, v in enumerate(series[group]))
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        last = series[group][-1]
        parts.append(
            f'<text x="{width - 12}" y="{xy(len(stamps), last).split(",")[1]}" '
            f'text-anchor="end" font-size="11" fill="{color}">{group} {last:.1f}%</text>'
        )
    return _svg(width, height, parts, "cumulative responses per customer, treated and control")


def _share(x: int, n: int) -> str:
    return f"{x / n * 100:.1f}%" if n else "-"


def _svg(width: int, height: int, parts: list[str], title: str) -> Markup:
    body = "".join(parts)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" font-family="sans-serif" fill="{INK}">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )
