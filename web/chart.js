// A small inline-SVG bar chart of milliseconds per page that grows as pages finish. The x axis
// has a slot for every page the job extracts (so it fills from left to right); past a few
// hundred pages, neighbouring pages share a bar that shows the slowest of them. The y axis
// ends a little above the typical page, so that one slow page (often the first: fonts load)
// does not flatten all the others; the bars it cuts are drawn in a darker shade. All bars of
// a shade are one <path>, so a redraw is two attribute writes.

import { el, setAttr, setText, svg } from "./dom.js";
import { formatMs, formatNumber } from "./format.js";

const WIDTH = 600;
const HEIGHT = 100;
const MAX_BARS = 300;

export class MsChart {
  constructor() {
    this.pages = []; // [number, ms], in page order
    this.total = null;
    this.bars = svg("path", { class: "chart-bars" });
    this.over = svg("path", { class: "chart-bars-over" });
    this.median = svg("line", { class: "chart-median", x1: 0, x2: WIDTH, y1: HEIGHT, y2: HEIGHT });
    this.svg = svg("svg", {
      class: "chart-svg",
      viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": "Milliseconds per page: no pages yet",
    });
    this.svg.append(this.bars, this.over, this.median);
    this.max = el("span", { class: "chart-max" });
    this.first = el("span", { class: "chart-first" });
    this.last = el("span", { class: "chart-last" });
    this.stats = el("span", { class: "chart-stats" });
    this.root = el(
      "figure",
      { class: "chart" },
      el("figcaption", {}, el("span", { class: "chart-title" }, "Time per page"), this.stats),
      el("div", { class: "chart-plot" }, this.max, this.svg),
      el("div", { class: "chart-axis" }, this.first, this.last),
    );
  }

  setTotal(total) {
    this.total = total;
  }

  /** Add page `number`'s time (a page already there is not added again). */
  add(number, ms) {
    const pages = this.pages;
    if (pages.length === 0 || pages[pages.length - 1][0] < number) {
      pages.push([number, ms]);
      return;
    }
    let i = pages.length - 1;
    while (i >= 0 && pages[i][0] > number) i -= 1;
    if (i >= 0 && pages[i][0] === number) return;
    pages.splice(i + 1, 0, [number, ms]);
  }

  render() {
    const pages = this.pages;
    const slots = Math.max(this.total ?? 0, pages.length, 1);
    const perBar = Math.ceil(slots / MAX_BARS);
    const barCount = Math.ceil(slots / perBar);
    const values = new Array(Math.ceil(pages.length / perBar)).fill(0);
    let slowest = null;
    for (let i = 0; i < pages.length; i += 1) {
      const ms = pages[i][1];
      const bar = Math.floor(i / perBar);
      if (ms > values[bar]) values[bar] = ms;
      if (slowest === null || ms > slowest[1]) slowest = pages[i];
    }
    const sorted = pages.map((p) => p[1]).sort((a, b) => a - b);
    const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : 0;
    const p90 = sorted.length ? sorted[Math.floor(sorted.length * 0.9)] : 0;
    const top = slowest === null ? 1 : Math.max(Math.min(slowest[1], Math.max(p90 * 1.5, median * 4)), 0.001);
    const slot = WIDTH / barCount;
    const gap = barCount > 60 ? 0 : slot * 0.18;
    let d = "";
    let over = "";
    for (let i = 0; i < values.length; i += 1) {
      const cut = values[i] > top;
      const h = cut ? HEIGHT : Math.max(1.5, (values[i] / top) * (HEIGHT - 6));
      const x = i * slot + gap / 2;
      const bar = `M${x.toFixed(2)} ${HEIGHT}V${(HEIGHT - h).toFixed(2)}H${(x + slot - gap).toFixed(2)}V${HEIGHT}Z`;
      if (cut) over += bar;
      else d += bar;
    }
    setAttr(this.bars, "d", d || "M0 0");
    setAttr(this.over, "d", over || "M0 0");
    if (slowest === null) {
      setText(this.max, "");
      setText(this.stats, "");
      setText(this.first, "");
      setText(this.last, "");
      setAttr(this.median, "visibility", "hidden");
      return;
    }
    const y = (HEIGHT - (median / top) * (HEIGHT - 6)).toFixed(2);
    setAttr(this.median, "y1", y);
    setAttr(this.median, "y2", y);
    setAttr(this.median, "visibility", "visible");
    setText(this.max, slowest[1] > top ? `${formatMs(top)} (cut)` : formatMs(top));
    setText(this.stats, `median ${formatMs(median)} · slowest ${formatMs(slowest[1])} (page ${slowest[0]})`);
    setText(this.first, `page ${pages[0][0]}`);
    setText(
      this.last,
      this.total && this.total > pages.length
        ? `${formatNumber(this.total)} pages`
        : `page ${pages[pages.length - 1][0]}`,
    );
    setAttr(
      this.svg,
      "aria-label",
      `Milliseconds per page for ${pages.length} pages: median ${formatMs(median)}, slowest ${formatMs(slowest[1])} on page ${slowest[0]}`,
    );
  }
}
