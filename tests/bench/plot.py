"""SVG plots of a benchmark run, drawn by hand (no plotting library needed).

    python tests/bench/plot.py [tests/bench/out/results.json]

b2-latency.svg: B2 delivery latency p50/p99 against subscribers, pagestream and baseline,
and server CPU per delivered event beside it. b1-pages.svg: B1 pages per second.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

COLORS = {"pagestream": "#1f6feb", "baseline": "#d1242f", "raw": "#2da44e", "pdftotext": "#8250df"}


class Svg:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.parts: list[str] = []

    def line(self, x1: float, y1: float, x2: float, y2: float, color: str = "#444", width: float = 1,
             dash: str = "") -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                          f'stroke-width="{width}"{extra}/>')

    def polyline(self, points: list[tuple[float, float]], color: str, dash: str = "") -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        self.parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"{extra}/>')
        for x, y in points:
            self.parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>')

    def rect(self, x: float, y: float, w: float, h: float, color: str) -> None:
        self.parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{color}"/>')

    def text(self, x: float, y: float, s: str, size: int = 12, anchor: str = "start", color: str = "#222",
             weight: str = "normal") -> None:
        self.parts.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                          f'fill="{color}" font-weight="{weight}" font-family="sans-serif">{escape(s)}</text>')

    def render(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
                f'viewBox="0 0 {self.width} {self.height}"><rect width="100%" height="100%" fill="white"/>'
                + "".join(self.parts) + "</svg>\n")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def b2_plot(runs: list[dict[str, Any]], machine: str) -> str:
    svg = Svg(900, 400)
    subs = sorted({r["subscribers"] for r in runs})
    # left: latency (log scale), right: CPU per delivered event (bars)
    x0, x1, y0, y1 = 70, 480, 350, 50
    lats = [v for r in runs for v in (r["latency_p50_ms"], r["latency_p99_ms"]) if v]
    lo, hi = 10 ** math.floor(math.log10(max(min(lats), 0.1))), 10 ** math.ceil(math.log10(max(lats)))

    def ly(v: float) -> float:
        return y0 - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * (y0 - y1)

    def lx(i: int) -> float:
        return x0 + 30 + i * (x1 - x0 - 60) / max(1, len(subs) - 1)

    svg.text(x0, 28, "B2 delivery latency (receive − commit), ms, log scale", 14, weight="bold")
    for t in _log_ticks(lo, hi):
        svg.line(x0, ly(t), x1, ly(t), "#ddd")
        svg.text(x0 - 6, ly(t) + 4, f"{t:g}", 11, "end")
    svg.line(x0, y0, x1, y0)
    svg.line(x0, y0, x0, y1)
    for i, n in enumerate(subs):
        rate = next(r["rate"] for r in runs if r["subscribers"] == n)
        svg.text(lx(i), y0 + 18, f"{n:,} subs", 11, "middle")
        svg.text(lx(i), y0 + 32, f"{rate:g} ev/s", 10, "middle", "#666")
    for kind in ("pagestream", "baseline"):
        for key, dash in (("latency_p50_ms", "5,4"), ("latency_p99_ms", "")):
            pts = [(lx(i), ly(r[key])) for i, n in enumerate(subs) for r in runs
                   if r["kind"] == kind and r["subscribers"] == n and r[key]]
            if pts:
                svg.polyline(pts, COLORS[kind], dash)
    ly0 = 60
    for kind in ("pagestream", "baseline"):
        svg.line(x0 + 10, ly0, x0 + 40, ly0, COLORS[kind], 2)
        svg.text(x0 + 46, ly0 + 4, f"{kind} p99", 11)
        svg.line(x0 + 130, ly0, x0 + 160, ly0, COLORS[kind], 2, "5,4")
        svg.text(x0 + 166, ly0 + 4, "p50", 11)
        ly0 += 16
    # CPU bars
    bx0, bx1 = 560, 880
    cpus = [r["cpu_per_event_us"] or 0 for r in runs]
    top = _nice_max(max(cpus) * 1.1)

    def by(v: float) -> float:
        return y0 - v / top * (y0 - y1)

    svg.text(bx0, 28, "server CPU per delivered event, µs", 14, weight="bold")
    for k in range(6):
        v = top * k / 5
        svg.line(bx0, by(v), bx1, by(v), "#ddd")
        svg.text(bx0 - 6, by(v) + 4, f"{v:g}", 11, "end")
    svg.line(bx0, y0, bx1, y0)
    group = (bx1 - bx0) / len(subs)
    for i, n in enumerate(subs):
        for j, kind in enumerate(("pagestream", "baseline")):
            r = next((r for r in runs if r["kind"] == kind and r["subscribers"] == n), None)
            if r and r["cpu_per_event_us"]:
                x = bx0 + i * group + 12 + j * (group - 24) / 2
                w = (group - 24) / 2 - 4
                svg.rect(x, by(r["cpu_per_event_us"]), w, y0 - by(r["cpu_per_event_us"]), COLORS[kind])
                svg.text(x + w / 2, by(r["cpu_per_event_us"]) - 4, f"{r['cpu_per_event_us']:.0f}", 10, "middle")
        svg.text(bx0 + (i + 0.5) * group, y0 + 18, f"{n:,}", 11, "middle")
    svg.text(900 - 10, 395, machine, 10, "end", "#666")
    return svg.render()


def b1_plot(b1: dict[str, Any], machine: str) -> str:
    bars = [("pagestream (end to end)", b1["server"]["pages_per_s"], COLORS["pagestream"]),
            ("raw pypdfium2 loop", b1["raw_pages_per_s"], COLORS["raw"])]
    if b1.get("pdftotext"):
        bars.append(("pdftotext per file", b1["pdftotext"]["pages_per_s"], COLORS["pdftotext"]))
    svg = Svg(600, 60 + 40 * len(bars) + 30)
    svg.text(10, 24, f"B1 pages per second, {b1['pages']:,} pages in {b1['files']} PDFs", 14, weight="bold")
    top = max(v for _, v, _ in bars) * 1.15
    for i, (label, value, color) in enumerate(bars):
        y = 45 + i * 40
        w = value / top * 380
        svg.text(185, y + 19, label, 12, "end")
        svg.rect(195, y, w, 28, color)
        svg.text(195 + w + 6, y + 19, f"{value:,.0f}", 12)
    svg.text(590, 60 + 40 * len(bars) + 22, machine, 10, "end", "#666")
    return svg.render()


def write_plots(document: dict[str, Any], out: Path) -> list[Path]:
    m = document.get("machine", {})
    machine = f"{m.get('cpus')} CPUs, {m.get('cpu', '')}, {m.get('date', '')}".strip()
    written = []
    results = document["results"]
    if "B2" in results and results["B2"]["runs"]:
        path = out / "b2-latency.svg"
        path.write_text(b2_plot(results["B2"]["runs"], machine))
        written.append(path)
    if "B1" in results:
        path = out / "b1-pages.svg"
        path.write_text(b1_plot(results["B1"], machine))
        written.append(path)
    return written


if __name__ == "__main__":
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "out" / "results.json"
    doc = json.loads(source.read_text())
    for p in write_plots(doc, source.parent):
        print(p)
