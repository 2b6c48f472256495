// One Greek over the window as SVG: the line breaks at every null point (a gap is never joined),
// gaps are shaded, ticks whose sums carried Greeks or left legs out are marked under the line.
// Written for this page; no library. The <svg> gets data-points (values drawn), data-last-t and
// data-last-value (the newest point) for whoever checks what is shown.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const W = 600, H = 200, L = 74, R = 10, T = 8, B = 22;

  function el(name, attrs, text) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function titled(node, text) {
    node.appendChild(el("title", {}, text));
    return node;
  }

  function clock(ms, spanMs) {
    const d = new Date(ms);
    const hm = d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    if (spanMs <= 2 * 86400000) return hm;
    return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + hm;
  }

  function extent(points) {
    let lo = Infinity, hi = -Infinity;
    for (const [, v] of points) {
      if (v === null || !Number.isFinite(v)) continue;
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    if (lo === Infinity) return null;
    if (lo === hi) {
      const pad = Math.abs(lo) * 0.05 || 1;
      return [lo - pad, hi + pad];
    }
    const pad = (hi - lo) * 0.08;
    return [lo - pad, hi + pad];
  }

  function drawLine(svg, points, x, y) {
    let d = "", run = [], count = 0, last = null;
    const close = () => {
      if (run.length === 1) {
        svg.appendChild(el("circle", { cx: run[0][0], cy: run[0][1], r: 2, class: "dot" }));
      }
      run = [];
    };
    for (const [t, v] of points) {
      if (v === null || !Number.isFinite(v)) {
        close();
        continue;
      }
      const px = x(t).toFixed(1), py = y(v).toFixed(1);
      d += (run.length ? "L" : "M") + px + "," + py;
      run.push([px, py]);
      count += 1;
      last = [t, v];
    }
    close();
    svg.appendChild(el("path", { d: d, class: "line" }));
    return { count: count, last: last };
  }

  function draw(svg, opts) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const span = Math.max(opts.to - opts.from, 1);
    const x = (t) => L + ((t - opts.from) / span) * (W - L - R);
    svg.appendChild(el("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }));
    for (const g of opts.gaps) {
      const a = Math.max(x(g.from), L), b = Math.min(x(g.to), W - R);
      if (b < L || a > W - R) continue;
      const rect = el("rect", { x: a, y: T, width: Math.max(b - a, 1), height: H - T - B, class: "gap" });
      svg.appendChild(titled(rect, "no rows for " + Math.round(g.seconds) + " s, from " +
        new Date(g.from).toLocaleString() + " to " + new Date(g.to).toLocaleString()));
    }
    const range = extent(opts.points);
    let shown = { count: 0, last: null };
    if (range) {
      const [lo, hi] = range;
      const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
      if (lo < 0 && hi > 0) {
        svg.appendChild(el("line", { x1: L, x2: W - R, y1: y(0), y2: y(0), class: "zero" }));
      }
      svg.appendChild(el("text", { x: L - 6, y: T + 10, class: "ylabel" }, opts.fmt(hi)));
      svg.appendChild(el("text", { x: L - 6, y: H - B, class: "ylabel" }, opts.fmt(lo)));
      shown = drawLine(svg, opts.points, x, y);
      if (shown.last) {
        svg.appendChild(el("circle", { cx: x(shown.last[0]), cy: y(shown.last[1]), r: 3, class: "newest" }));
      }
    } else {
      svg.appendChild(el("text", { x: W / 2, y: H / 2, class: "empty" }, "no rows in this window"));
    }
    for (const m of opts.marks) {
      const cx = x(m.t);
      if (cx < L || cx > W - R) continue;
      const what = m.kind === "excluded"
        ? m.legs_excluded + " leg(s) left out of the sums"
        : m.legs_carried + " leg(s) with Greeks carried forward";
      const count = m.ticks > 1 ? " (" + m.ticks + " ticks from here)" : "";
      const mark = el("rect", { x: cx - 1.5, y: H - B - 7, width: 3, height: 7, class: "mark mark-" + m.kind });
      svg.appendChild(titled(mark, new Date(m.t).toLocaleString() + ": " + what + count));
    }
    for (const [t, anchor] of [[opts.from, "start"], [(opts.from + opts.to) / 2, "middle"], [opts.to, "end"]]) {
      svg.appendChild(el("text", { x: x(t), y: H - 6, class: "xlabel", "text-anchor": anchor }, clock(t, span)));
    }
    svg.setAttribute("data-points", String(shown.count));
    svg.setAttribute("data-last-t", shown.last ? String(shown.last[0]) : "");
    svg.setAttribute("data-last-value", shown.last ? String(shown.last[1]) : "");
  }

  window.BridgeChart = { draw: draw };
})();
