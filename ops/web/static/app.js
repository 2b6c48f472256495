// The page's updates: polls /api/series, /api/exposure, /api/status and /api/logs once per
// refresh period and redraws in place (no reload). Written for this page; no library.
"use strict";
(function () {
  const GREEKS = ["delta", "gamma", "vega", "theta"];
  const body = document.body;
  const state = {
    window: body.dataset.window || "1h",
    account: body.dataset.account || "",
    scope: body.dataset.scope || "PORTFOLIO",
    refreshMs: Number(body.dataset.refreshMs) || 5000,
    offsetMs: 0, // server clock minus this browser's
    newest: null,
    banners: {},
    timer: null,
  };
  const $ = (id) => document.getElementById(id);

  // the same rule as ops/web/page.py's fmt
  function fmt(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    const size = Math.abs(v);
    const digits = size >= 1000 ? 0 : size >= 1 ? 2 : 4;
    return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  function money(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    return v.toLocaleString("en-US", { maximumFractionDigits: 0 });
  }
  function age(s) {
    if (s === null || s === undefined) return "–";
    if (s < 120) return s.toFixed(1) + " s ago";
    if (s < 7200) return (s / 60).toFixed(1) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }
  function node(tag, text, cls) {
    const n = document.createElement(tag);
    if (text !== undefined) n.textContent = text;
    if (cls) n.className = cls;
    return n;
  }
  function row(cells, cls) {
    const tr = node("tr", undefined, cls);
    for (const c of cells) tr.appendChild(node("td", c));
    return tr;
  }
  function replace(parent, children) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    for (const c of children) parent.appendChild(c);
  }

  async function getJSON(path) {
    try {
      const r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
      const data = await r.json().catch(() => ({ error: "not JSON (HTTP " + r.status + ")" }));
      return { ok: r.ok, data: data };
    } catch (e) {
      return { ok: false, data: { error: "the console does not answer (" + e.message + ")" } };
    }
  }

  function banner(key, text) {
    if (text) state.banners[key] = text;
    else delete state.banners[key];
    replace($("banners"), Object.values(state.banners).map((t) => node("p", t, "banner")));
  }

  function showSeries(res) {
    if (!res.ok) {
      banner("series", res.data.error);
      return;
    }
    banner("series", null);
    const s = res.data;
    state.offsetMs = Date.parse(s.now) - Date.now();
    state.newest = s.newest;
    for (const g of GREEKS) {
      const v = $("v-" + g);
      const value = s.newest ? s.newest[g] : null;
      v.textContent = fmt(value);
      v.setAttribute("data-value", value === null ? "" : String(value));
      BridgeChart.draw($("chart-" + g), {
        points: s.series[g], from: Date.parse(s.from), to: Date.parse(s.to), fmt: fmt,
        gaps: s.gaps.map((x) => ({ from: Date.parse(x.from), to: Date.parse(x.to), seconds: x.seconds })),
        marks: s.marks,
      });
    }
    showAccounts(s.accounts, s.account);
    const parts = [s.rows + " rows"];
    if (s.downsampled) parts.push("first, last, low and high of every " + Math.round(s.bucket_s) + " s");
    if (s.truncated) parts.push("cut at the row limit");
    const gaps = s.gaps.length;
    parts.push(gaps ? gaps + " gap(s)" + (s.gaps_truncated ? " (more not marked)" : "") : "no gaps");
    parts.push(s.completeness === "portfolio_exposure" ? s.marks.length + " tick(s) marked" : "completeness " + s.completeness);
    $("chart-note").textContent = " · " + parts.join(" · ");
    showAge();
  }

  function showAge() {
    const n = state.newest;
    if (!n) {
      $("asof").textContent = "no PORTFOLIO row yet";
      $("asof").removeAttribute("data-t");
      return;
    }
    const seconds = (Date.now() + state.offsetMs - n.t) / 1000;
    $("asof").textContent = "as of " + new Date(n.t).toLocaleString() + " (" + age(seconds) + ")";
    $("asof").setAttribute("data-t", String(n.t));
  }

  function showAccounts(accounts, current) {
    const select = $("account");
    const have = Array.from(select.options).map((o) => o.value).join("\n");
    if (have !== accounts.join("\n")) {
      replace(select, accounts.map((a) => { const o = node("option", a); o.value = a; return o; }));
    }
    select.value = current;
    $("account-box").hidden = accounts.length < 2;
    $("account-label").textContent = current;
  }

  function showExposure(res) {
    if (!res.ok) return; // the series' banner says why
    const e = res.data;
    const rows = e.rows.map((r) => row([
      r.scope, money(r.delta_dollars), money(r.gamma_dollars), fmt(r.vega), fmt(r.theta), fmt(r.underlying_price),
      r.legs === undefined || r.legs === null ? "–" : r.legs_fresh + " / " + r.legs_carried + " / " + r.legs_excluded,
      r.market_data || "–",
    ], r.legs_excluded > 0 ? "excluded" : r.legs_carried > 0 ? "carried" : ""));
    const p = e.portfolio;
    if (p) {
      rows.unshift(row(["PORTFOLIO", money(p.delta_dollars), money(p.gamma_dollars), fmt(p.vega), fmt(p.theta),
        fmt(p.underlying_price), p.legs_fresh + " / " + p.legs_carried + " / " + p.legs_excluded, p.market_data || "–"], "total"));
    }
    replace($("book-rows"), rows);
    $("book-asof").textContent = e.timestamp ? "as of " + new Date(e.timestamp).toLocaleString() : "";
    let note = e.note;
    if (p && p.daily_pnl !== null && p.daily_pnl !== undefined) {
      note += " · P&L today " + money(p.daily_pnl) + ", unrealized " + money(p.unrealized_pnl) + ", realized " + money(p.realized_pnl);
    }
    $("book-note").textContent = note;
  }

  function lines(m) {
    if (!m || m.lines_in_use === undefined) return "–";
    let t = m.lines_in_use + "/" + (m.lines_working || "?") + " lines for " + (m.lines_wanted || "?") + " contracts";
    t += m.rotating === "1" ? ", rotating (about " + (m.rotation_s || "?") + " s)" : ", streaming";
    return t + (m.market_data ? "; data " + m.market_data : "");
  }

  function showStatus(res) {
    const s = res.data;
    if (!res.ok && !s.status) {
      banner("status", s.error);
      return;
    }
    banner("status", null);
    banner("redis", s.redis_error ? "Redis unreachable: " + s.redis_error + " (the live state is unknown)" : null);
    banner("db", s.db_error ? "PostgreSQL unreachable: " + s.db_error : null);
    const badge = $("state");
    badge.textContent = s.status.toUpperCase();
    badge.className = "state state-" + s.status;
    replace($("reasons"), s.reasons.map((r) => node("li", r)));
    const since = (what, when, why) => what + (when ? " since " + when : "") + (why ? " (" + why + ")" : "");
    const items = [
      ["link", since(s.link || "unknown", s.link_since, s.link_reason)],
      ["market data", lines(s.market_data)],
      ["last tick", age(s.last_tick_age_s)],
      ["collector heartbeat", age(s.heartbeat_age_s)],
      ["writer", s.writer_alive === null ? "?" : s.writer_alive ? "alive" : "NOT RUNNING"],
      ["breaker", since(s.breaker, s.breaker_since, s.breaker_reason)],
      ["buffer", (s.buffer_rows === null ? "?" : s.buffer_rows) + " rows"],
      ["backlog", s.backlog + " entries (" + s.pending + " pending)"],
      ["dead letters", s.dead_letters === null ? "?" : String(s.dead_letters)],
      ["newest row", s.last_row_ts ? s.last_row_ts + " (" + age(s.last_row_age_s) + ")" : "none"],
      ["watchdog", s.watchdog && s.watchdog.decision ? s.watchdog.decision + ": " + (s.watchdog.reason || "") : "–"],
    ];
    if (!s.supervisor_url) items.push(["processes", "supervisord not configured"]);
    else if (s.supervisor_error) items.push(["processes", "supervisord unreachable: " + s.supervisor_error]);
    else for (const [name, st] of Object.entries(s.processes)) items.push([name, st]);
    const out = [];
    for (const [k, v] of items) {
      out.push(node("dt", k));
      out.push(node("dd", v, /NOT|FATAL|STOPPED|BACKOFF|EXITED|open|disconnected/.test(v) ? "bad" : ""));
    }
    replace($("health-list"), out);
  }

  function showLogs(res) {
    if (!res.ok) return;
    replace($("log-rows"), res.data.rows.map((r) =>
      row([new Date(r.timestamp).toLocaleString(), r.status, r.message], r.status.toLowerCase())));
  }

  async function refresh() {
    clearTimeout(state.timer);
    const account = state.account ? { account: state.account } : {};
    const series = new URLSearchParams({ scope: state.scope, window: state.window, ...account });
    const [a, b, c, d] = await Promise.all([
      getJSON("/api/series?" + series), getJSON("/api/exposure?" + new URLSearchParams(account)),
      getJSON("/api/status"), getJSON("/api/logs?limit=12"),
    ]);
    showStatus(c);
    showSeries(a);
    showExposure(b);
    showLogs(d);
    $("updated").textContent = new Date().toLocaleTimeString();
    state.timer = setTimeout(refresh, state.refreshMs);
  }

  function choose(params) {
    Object.assign(state, params);
    history.replaceState(null, "", "/?" + new URLSearchParams({ window: state.window, account: state.account }));
    for (const a of document.querySelectorAll("a.window")) {
      a.classList.toggle("current", a.dataset.window === state.window);
    }
    refresh();
  }

  for (const a of document.querySelectorAll("a.window")) {
    a.addEventListener("click", (ev) => { ev.preventDefault(); choose({ window: a.dataset.window }); });
  }
  $("account").addEventListener("change", (ev) => choose({ account: ev.target.value }));
  $("go").hidden = true;
  setInterval(showAge, 1000);
  refresh();
})();
