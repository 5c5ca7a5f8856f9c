// Small live line charts in SVG for the mqttd dashboard (no library).
//
// A chart keeps the samples of the last `windowSeconds` and redraws on each push: a
// polyline scaled to the largest value shown and a faint grid; the latest value and the
// scale are HTML under the drawing (SVG text would stretch with the chart). Time runs
// left to right, the right edge is "now"; until the window has filled, the time axis
// spans what there is (at least a minute), so a new chart is not a sliver at the edge.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 400;
const HEIGHT = 120;
const PAD = { left: 2, right: 2, top: 6, bottom: 2 };
const MIN_SPAN = 60; // seconds shown at least

function el(name, attributes = {}) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  return node;
}

// 1, 2, 5, 10, 20, 50, ...: a round upper bound at least `value`.
function niceCeiling(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

function short(value) {
  if (value >= 1e6) return (value / 1e6).toFixed(1) + "M";
  if (value >= 1e4) return (value / 1e3).toFixed(0) + "k";
  if (value >= 100) return value.toFixed(0);
  return value < 10 && !Number.isInteger(value) ? value.toFixed(1) : String(Math.round(value));
}

export class LineChart {
  constructor(svg, { windowSeconds = 600 } = {}) {
    this.svg = svg;
    this.windowSeconds = windowSeconds;
    this.samples = []; // [seconds (performance clock), value]
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    svg.setAttribute("preserveAspectRatio", "none");
    this.grid = el("g", { class: "grid" });
    for (const y of [0.25, 0.5, 0.75]) {
      const top = PAD.top + (HEIGHT - PAD.top - PAD.bottom) * y;
      this.grid.append(el("line", { x1: 0, x2: WIDTH, y1: top, y2: top }));
    }
    this.area = el("polygon", { class: "area", points: "" });
    this.line = el("polyline", { class: "line", points: "" });
    svg.replaceChildren(this.grid, this.area, this.line);
    const legend = document.createElement("div");
    legend.className = "chart-legend";
    this.label = document.createElement("span");
    this.scale = document.createElement("span");
    legend.append(this.label, this.scale);
    svg.after(legend);
    this.label.textContent = "no data yet";
  }

  /** Add a sample (value at time `t` seconds; default now) and redraw. */
  push(value, t = performance.now() / 1000) {
    this.samples.push([t, value]);
    const oldest = t - this.windowSeconds;
    while (this.samples.length > 2 && this.samples[0][0] < oldest) this.samples.shift();
    this.draw(t);
  }

  clear() {
    this.samples = [];
    this.line.setAttribute("points", "");
    this.area.setAttribute("points", "");
    this.label.textContent = "no data yet";
    this.scale.textContent = "";
  }

  /** The drawn points, for tests: "x,y x,y ...". */
  get points() {
    return this.line.getAttribute("points");
  }

  draw(now) {
    const top = niceCeiling(Math.max(...this.samples.map(([, v]) => v)));
    const span = Math.min(this.windowSeconds, Math.max(MIN_SPAN, now - this.samples[0][0]));
    const plotWidth = WIDTH - PAD.left - PAD.right;
    const plotHeight = HEIGHT - PAD.top - PAD.bottom;
    const points = this.samples.map(([t, v]) => {
      const x = PAD.left + plotWidth * (1 - (now - t) / span);
      const y = PAD.top + plotHeight * (1 - v / top);
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    this.line.setAttribute("points", points.join(" "));
    if (points.length) {
      const first = points[0].split(",")[0];
      const last = points[points.length - 1].split(",")[0];
      const base = (PAD.top + plotHeight).toFixed(1);
      this.area.setAttribute("points", `${first},${base} ${points.join(" ")} ${last},${base}`);
    }
    const latest = this.samples[this.samples.length - 1][1];
    this.label.textContent = `now ${short(latest)}`;
    const minutes = span / 60;
    const last = minutes < 1.5 ? `${Math.round(span)} s` : `${Math.round(minutes)} min`;
    this.scale.textContent = `scale ${short(top)} · last ${last}`;
  }
}
