// satpulse dashboard: polls /dashboard/data every POLL_MS and renders it. The selection (period, dimension)
// lives in the URL's query string, so a reload or a shared link shows the same view. Every value from the
// server is written with textContent (dimension values come from customers' systems: never HTML).
"use strict";

const POLL_MS = 2000;
const TREND_FLAT_PP = 0.5; // a change smaller than this (percentage points) is shown as flat
const PERIOD_NAMES = { now: "Now", "15m": "15 min", "1h": "1 hour", "24h": "24 hours" };

const state = { period: null, dimension: null, chart: null, chartPeriod: null, timer: null };

function $(id) {
  return document.getElementById(id);
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

const number = new Intl.NumberFormat();

function percent(value) {
  return value === null ? "no ratings" : value.toFixed(1) + " %";
}

function duration(seconds) {
  if (seconds === null) return "–";
  if (seconds < 90) return Math.round(seconds) + " s";
  if (seconds < 90 * 60) return Math.round(seconds / 60) + " min";
  if (seconds < 48 * 3600) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function score(value) {
  return value === null ? "–" : value.toFixed(2);
}

// A trend element: arrow and change in points against the same period last week.
function trendNode(figures) {
  const node = el("span", null, "trend");
  if (figures.trend_pp === null) {
    node.textContent = figures.last_week_rated ? "" : "no ratings a week ago";
    node.classList.add("flat");
    return node;
  }
  const pp = figures.trend_pp;
  const dir = pp > TREND_FLAT_PP ? "up" : pp < -TREND_FLAT_PP ? "down" : "flat";
  const arrow = { up: "▲", down: "▼", flat: "▶" }[dir];
  node.classList.add(dir);
  node.textContent = `${arrow} ${pp >= 0 ? "+" : "−"}${Math.abs(pp).toFixed(1)} pts vs last week`;
  node.title = `same period last week: ${percent(figures.last_week_csat_percent)} of ${number.format(figures.last_week_rated)} ratings`;
  return node;
}

function csatClass(value) {
  if (value === null) return "none";
  return value >= 80 ? "good" : value >= 60 ? "fair" : "poor";
}

function renderHero(data) {
  const tile = data.headline.find((t) => t.period === data.period);
  $("hero-title").textContent = `CSAT · ${data.periods[data.period]}`;
  const value = $("hero-csat");
  value.textContent = percent(tile.csat_percent);
  value.className = "hero-value " + csatClass(tile.csat_percent);
  $("hero-trend").replaceChildren(trendNode(tile));
  $("hero-rated").textContent = `${number.format(tile.rated)} ratings, ${number.format(tile.satisfied)} satisfied`;
}

function renderTiles(data) {
  const tiles = data.headline.map((t) => {
    const card = el("article", null, "card tile" + (t.period === data.period ? " selected" : ""));
    card.dataset.period = t.period;
    const title = t.period === "now" && t.rated ? `Now · ${clock(t.from)}` : PERIOD_NAMES[t.period];
    card.append(el("h3", title), el("div", percent(t.csat_percent), "tile-value " + csatClass(t.csat_percent)),
                trendNode(t), el("div", `${number.format(t.rated)} ratings`, "muted"));
    return card;
  });
  $("tiles").replaceChildren(...tiles);
}

function chartOptions(width) {
  return {
    width, height: 260,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, pct: { range: [0, 100] }, n: { range: (u, min, max) => [0, Math.max(1, max) * 1.15] } },
    series: [
      {},
      { label: "Ratings", scale: "n", stroke: "#cbd5e1", fill: "#e2e8f0", paths: uPlot.paths.bars({ size: [0.7, 40] }),
        points: { show: false } },
      { label: "CSAT", scale: "pct", stroke: "#2563eb", width: 2.5, value: (u, v) => (v === null ? "–" : v.toFixed(1) + " %") },
      { label: "Same time last week", scale: "pct", stroke: "#94a3b8", width: 1.5, dash: [6, 5],
        value: (u, v) => (v === null ? "–" : v.toFixed(1) + " %") },
    ],
    axes: [
      {},
      { scale: "pct", values: (u, vals) => vals.map((v) => v + " %"), size: 60 },
      { scale: "n", side: 1, grid: { show: false }, size: 50 },
    ],
  };
}

function renderChart(data) {
  const s = data.series;
  $("chart-title").textContent = `CSAT, ${data.periods[data.period]}, against the same time last week`;
  const rows = [s.t, s.rated, s.csat, s.last_week_csat];
  const box = $("chart");
  if (typeof uPlot === "undefined") {
    box.textContent = "Chart unavailable: uPlot is not installed (scripts/bootstrap.sh runs npm ci in dashboard/).";
    return;
  }
  if (state.chart === null || state.chartPeriod !== data.period) {
    if (state.chart !== null) state.chart.destroy();
    state.chart = new uPlot(chartOptions(box.clientWidth), rows, box);
    state.chartPeriod = data.period;
  } else {
    state.chart.setData(rows);
  }
}

function renderFigures(data) {
  const tile = data.headline.find((t) => t.period === data.period);
  for (const cell of document.querySelectorAll("#times td[data-col]")) {
    const key = cell.dataset.col;
    cell.textContent = key.endsWith("_s") ? duration(tile[key]) : number.format(tile[key]);
  }
  for (const cell of document.querySelectorAll("#volume [data-col]")) {
    cell.textContent = number.format(tile[cell.dataset.col]);
  }
}

function valueRow(row) {
  const tr = el("tr");
  tr.dataset.value = row.value;
  const cells = [
    ["value", row.value, "left"],
    ["rated", number.format(row.rated)],
    ["csat", percent(row.csat_percent), csatClass(row.csat_percent)],
    ["trend", null],
    ["score", score(row.average_score)],
    ["frt", `${duration(row.frt_p50_s)} / ${duration(row.frt_p90_s)}`],
    ["rt", `${duration(row.rt_p50_s)} / ${duration(row.rt_p90_s)}`],
    ["breaches", number.format(row.frt_breaches + row.rt_breaches)],
    ["created", number.format(row.created)],
    ["resolved", number.format(row.resolved)],
  ];
  for (const [col, text, className] of cells) {
    const td = el("td", text, className);
    td.dataset.col = col;
    if (col === "trend") td.append(trendNode(row));
    tr.append(td);
  }
  return tr;
}

function emptyRow(text, columns) {
  const td = el("td", text, "empty");
  td.colSpan = columns;
  const tr = el("tr");
  tr.append(td);
  return tr;
}

function renderByValue(data) {
  $("by-title").textContent = `By ${data.dimension}`;
  $("by-head").textContent = data.dimension;
  const rows = data.by_value.map(valueRow);
  $("by-value").tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow("no data in this period", 10)]));
}

function renderDeadLetters(data) {
  const rows = data.dead_letters.by_reason.map((d) => {
    const tr = el("tr");
    tr.dataset.reason = d.reason;
    tr.append(el("td", d.reason, "left"), el("td", d.stage, "left"), el("td", number.format(d.count)),
              el("td", clock(d.latest)));
    return tr;
  });
  $("dead-letters").tBodies[0].replaceChildren(...(rows.length ? rows : [emptyRow("none in this period", 4)]));
}

function renderAlerts(data) {
  const a = data.alerts;
  let items;
  if (!a.configured) {
    items = [el("li", "Alertmanager not configured (SATPULSE_ALERTMANAGER_URL)", "muted")];
  } else if (a.error) {
    items = [el("li", a.error, "warn")];
  } else if (!a.firing.length) {
    items = [el("li", "No alerts firing", "ok")];
  } else {
    items = a.firing.map((f) => {
      const li = el("li", null, "alert " + (f.severity || "unknown"));
      li.append(el("strong", f.name), el("span", f.severity, "badge"), el("div", f.summary),
                el("div", `${f.where} · since ${f.since ? clock(Date.parse(f.since) / 1000) : "?"}`, "muted"));
      return li;
    });
  }
  $("alerts").replaceChildren(...items);
}

function renderControls(data) {
  const select = $("dimension");
  if (select.options.length !== data.dimensions.length) {
    select.replaceChildren(...data.dimensions.map((d) => el("option", d)));
  }
  select.value = data.dimension;
  for (const button of document.querySelectorAll("#period button")) {
    button.classList.toggle("active", button.dataset.period === data.period);
  }
  for (const label of document.querySelectorAll(".period-label")) label.textContent = data.periods[data.period];
}

function render(data) {
  renderControls(data);
  renderHero(data);
  renderTiles(data);
  renderChart(data);
  renderFigures(data);
  renderByValue(data);
  renderDeadLetters(data);
  renderAlerts(data);
}

function setStatus(text, ok) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("live", ok);
}

function notice(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

// The selection as a query string (what is not chosen yet is left to the server's defaults).
function selection() {
  const query = new URLSearchParams();
  if (state.period) query.set("period", state.period);
  if (state.dimension) query.set("dimension", state.dimension);
  return query;
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const response = await fetch("/dashboard/data?" + selection(), { cache: "no-store" });
    const data = await response.json();
    if (!response.ok) {
      notice(data.error);
      setStatus("waiting for data", false);
    } else {
      Object.assign(state, { period: data.period, dimension: data.dimension });
      render(data);
      notice(null);
      setStatus(`live · updated ${new Date().toLocaleTimeString()}`, true);
      document.body.dataset.updated = String(Date.now());
    }
  } catch (err) {
    setStatus("reconnecting…", false);
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

function select(changes) {
  Object.assign(state, changes);
  history.replaceState(null, "", "?" + selection());
  refresh();
}

function start() {
  const query = new URLSearchParams(location.search);
  state.period = query.get("period");
  state.dimension = query.get("dimension");
  for (const button of document.querySelectorAll("#period button")) {
    button.addEventListener("click", () => select({ period: button.dataset.period }));
  }
  $("dimension").addEventListener("change", (event) => select({ dimension: event.target.value }));
  window.addEventListener("resize", () => state.chart && state.chart.setSize({ width: $("chart").clientWidth, height: 260 }));
  refresh();
}

start();
