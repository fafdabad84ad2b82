// Line charts drawn as SVG: a few lines of our own instead of a charting library.
const NS = "http://www.w3.org/2000/svg";
const HEIGHT = 180;
const PAD = { left: 44, right: 8, top: 8, bottom: 18 };

function el(name, attrs, parent) {
  const node = document.createElementNS(NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function runs(points) {
  const out = [[]];
  for (const p of points) {
    if (Number.isFinite(p[1])) out[out.length - 1].push(p);
    else if (out[out.length - 1].length) out.push([]);
  }
  return out.filter((run) => run.length);
}

/**
 * Draw `series` ([{name, points: [[timeMs, value], ...]}]) over the last `spanMs`
 * milliseconds into `svg`, and their names into `legend`.
 */
export function drawLines(svg, legend, series, { spanMs, now, format = String, yMax }) {
  const width = Math.max(svg.clientWidth || 600, 200);
  svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
  svg.replaceChildren();
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const top = yMax ?? niceMax(Math.max(0, ...values));
  const x0 = PAD.left;
  const x1 = width - PAD.right;
  const y0 = HEIGHT - PAD.bottom;
  const y1 = PAD.top;
  const x = (t) => x0 + ((t - (now - spanMs)) / spanMs) * (x1 - x0);
  const y = (v) => y0 - (Math.min(v, top) / top) * (y0 - y1);
  for (let i = 0; i <= 4; i += 1) {
    const v = (top * i) / 4;
    el("line", { class: "grid", x1: x0, x2: x1, y1: y(v), y2: y(v) }, svg);
    const label = el("text", { class: "axis", x: x0 - 4, y: y(v) + 4, "text-anchor": "end" }, svg);
    label.textContent = format(v);
  }
  for (const [i, offset] of [[0, spanMs], [1, spanMs / 2], [2, 0]]) {
    const label = el("text", {
      class: "axis", x: x(now - offset), y: HEIGHT - 4,
      "text-anchor": ["start", "middle", "end"][i],
    }, svg);
    label.textContent = offset ? `-${Math.round(offset / 1000)} s` : "now";
  }
  series.forEach((s, i) => {
    // A value that is not a number (no data in that interval) breaks the line.
    for (const run of runs(s.points.filter((p) => p[0] >= now - spanMs))) {
      if (run.length === 1) {
        el("circle", { class: `series c${i % 8}`, cx: x(run[0][0]), cy: y(run[0][1]), r: 4 }, svg);
      } else {
        const d = run.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
        el("polyline", { class: `series c${i % 8}`, points: d }, svg);
      }
    }
  });
  legend.replaceChildren();
  series.forEach((s, i) => {
    const swatch = document.createElement("span");
    swatch.className = `swatch c${i % 8}`;
    legend.append(swatch, document.createTextNode(s.label ?? s.name));
  });
}
