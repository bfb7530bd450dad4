// homeostat's status page: reads the daemon's JSON API and follows its event stream.
// No framework, no external asset; every change is made with DOM methods (never innerHTML), so
// names and messages from the cluster are shown as text.
"use strict";

const REFRESH_MS = 3000;
const EVENTS_SHOWN = 100;
const SVG = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function badge(value) {
  return el("span", { class: "badge s-" + value, "data-field": "state" }, value);
}

function gib(bytes) {
  return bytes === undefined || bytes === null ? "–" : (bytes / 2 ** 30).toFixed(1) + " GiB";
}

async function getJson(path) {
  const r = await fetch(path, { headers: { accept: "application/json" } });
  if (!r.ok) throw Object.assign(new Error(path + ": HTTP " + r.status), { status: r.status });
  return r.json();
}

function showError(message) {
  const e = document.getElementById("error");
  e.hidden = !message;
  e.textContent = message || "";
}

// ---- nodes, services, alerts ---------------------------------------------------------------

function nodeCard(name, n) {
  const o = n.observed || {};
  const dl = el("dl");
  const row = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  row("Breaker", badge(n.breaker));
  row("Cordoned", n.cordoned ? "yes (" + n.cordons.join(", ") + ")" : "no");
  row("Backend", n.backend);
  if (o.gpuTempC !== undefined) row("GPU", o.gpuTempC.toFixed(0) + " °C");
  if (o.vramTotal !== undefined) row("VRAM", gib(o.vramUsed) + " of " + gib(o.vramTotal));
  row("Models", (o.loaded && o.loaded.length) ? o.loaded.join(", ") : "none loaded");
  if (n.problem) row("Problem", n.problem);
  if (n.held && n.held.length) row("Held", n.held.map((h) => h.step + " (" + h.hold + ")").join("; "));
  row("Last check", n.lastCheck || "never");
  const button = el("button", { type: "button", "data-action": n.cordoned ? "uncordon" : "cordon" },
    n.cordoned ? "Uncordon" : "Cordon");
  button.addEventListener("click", () => cordon(name, n.cordoned ? "uncordon" : "cordon"));
  const h = el("h3", {}, el("span", {}, name), badge(n.lifecycle));
  return el("article", { class: "card", "data-node": name, "data-state": n.lifecycle,
    "aria-label": "node " + name + ": " + n.lifecycle }, h, dl, button);
}

function renderStatus(s) {
  const cards = document.getElementById("node-cards");
  const names = Object.keys(s.nodes);
  cards.replaceChildren(...names.map((n) => nodeCard(n, s.nodes[n])));
  const healthy = names.filter((n) => s.nodes[n].lifecycle === "healthy").length;
  document.getElementById("summary").textContent =
    healthy + " of " + names.length + " nodes healthy · " + s.alerts.length + " open alert(s) · manifests generation " +
    s.manifests.generation + (s.manifests.lastError ? " (the files on disk are invalid)" : "") +
    " · " + s.daemon.phase;
  const alerts = document.getElementById("alerts");
  alerts.replaceChildren(...(s.alerts.length ? s.alerts.map((a) =>
    el("li", {}, badge(a.severity), " ", a.node ? a.node + ": " : "", a.summary, el("span", { class: "muted" }, " since " + a.since)))
    : [el("li", { class: "muted" }, "None.")]));
  const services = document.querySelector("#services tbody");
  const sv = Object.entries(s.services);
  services.replaceChildren(...(sv.length ? sv.map(([name, x]) => el("tr", { "data-service": name },
    el("th", { scope: "row" }, name), el("td", {}, badge(x.lifecycle)), el("td", {}, badge(x.breaker)),
    el("td", {}, x.lastCheck || "never"), el("td", {}, x.problem || "–")))
    : [el("tr", {}, el("td", { colspan: "5", class: "muted" }, "None."))]));
  document.getElementById("footer").textContent =
    "homeostat " + s.daemon.version + " · pid " + s.daemon.pid + " · " + s.daemon.listen + " · updated " + s.at;
}

function renderRoutes(r) {
  const body = document.querySelector("#routes tbody");
  const cats = Object.entries(r.categories || {});
  body.replaceChildren(...(cats.length ? cats.map(([name, c]) => el("tr", { "data-category": name },
    el("th", { scope: "row" }, name + (c.fallback ? " (fallback)" : "")),
    el("td", {}, c.targets.map((t) => t.name + " (" + t.weight + ")").join(", ") || "–"),
    el("td", {}, (c.excluded || []).map((x) => x.node + ": " + x.why).join("; ") || "–")))
    : [el("tr", {}, el("td", { colspan: "3", class: "muted" }, "No categories."))]));
}

// ---- benchmark history: one inline SVG line chart per node and model -------------------------

function renderHistory(h) {
  const box = document.getElementById("history");
  const series = new Map();
  for (const r of h.runs) {
    const key = r.node + " · " + r.model;
    if (!series.has(key)) series.set(key, []);
    series.get(key).push(r);
  }
  if (!series.size) { box.replaceChildren(el("p", { class: "muted" }, "No benchmark runs yet.")); return; }
  const charts = [];
  for (const [key, runs] of series) {
    const W = 320, H = 120, P = 24;
    const t0 = runs[0].atMs, t1 = runs[runs.length - 1].atMs;
    const x = (t) => P + (t1 === t0 ? (W - 2 * P) / 2 : (t - t0) / (t1 - t0) * (W - 2 * P));
    const y = (v) => H - P - v / 10 * (H - 2 * P);
    const s = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "composite score of " + key + ": " + runs.map((r) => r.composite.toFixed(1)).join(", ") });
    s.append(svg("line", { class: "axis", x1: P, y1: H - P, x2: W - P, y2: H - P }),
      svg("line", { class: "axis", x1: P, y1: P, x2: P, y2: H - P }));
    for (const v of [0, 5, 10]) { const t = svg("text", { x: 2, y: y(v) + 3 }); t.textContent = String(v); s.append(t); }
    s.append(svg("polyline", { class: "line", points: runs.map((r) => x(r.atMs) + "," + y(r.composite)).join(" ") }));
    for (const r of runs) {
      const c = svg("circle", { class: "dot", cx: x(r.atMs), cy: y(r.composite), r: 3 });
      const title = svg("title", {}); title.textContent = r.at + ": " + r.composite.toFixed(2) + " (" + r.kind + ")";
      c.append(title); s.append(c);
    }
    charts.push(el("figure", { class: "chart" }, el("h3", {}, key), s,
      el("figcaption", { class: "muted" }, runs.length + " run(s), last score " + runs[runs.length - 1].composite.toFixed(2) + " / 10")));
  }
  box.replaceChildren(...charts);
}

// ---- events --------------------------------------------------------------------------------

function eventLine(e) {
  const detail = e.detail && Object.keys(e.detail).length ? " " + JSON.stringify(e.detail) : "";
  return e.at + "  " + (e.node || "-") + "  " + e.kind + detail;
}

function addEvent(e, fresh) {
  const list = document.getElementById("events");
  const li = el("li", { class: fresh ? "new" : "", "data-kind": e.kind, "data-node": e.node || "", "data-id": e.id }, eventLine(e));
  list.prepend(li);
  while (list.children.length > EVENTS_SHOWN) list.lastElementChild.remove();
}

async function loadEvents() {
  let since = 0, last = [];
  for (;;) {
    const page = await getJson("/api/v1/events?since=" + since + "&limit=1000");
    if (!page.events.length) break;
    last = last.concat(page.events).slice(-EVENTS_SHOWN);
    since = page.next;
    if (page.events.length < 1000) break;
  }
  for (const e of last) addEvent(e, false);
  return since;
}

function follow(since) {
  const live = document.getElementById("live");
  const source = new EventSource("/api/v1/events/stream?since=" + since);
  source.addEventListener("open", () => { live.textContent = "live"; live.className = "badge s-healthy"; });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.className = "badge s-warning"; });
  source.addEventListener("homeostat", (m) => {
    addEvent(JSON.parse(m.data), true);
    refresh();
  });
}

// ---- actions (need the API token) -----------------------------------------------------------

async function cordon(node, verb) {
  let token = sessionStorage.getItem("homeostat-token");
  if (!token) {
    token = window.prompt("The API token (cluster.api.tokenFrom) to " + verb + " " + node + ":");
    if (!token) return;
  }
  const r = await fetch("/api/v1/nodes/" + encodeURIComponent(node) + "/" + verb, {
    method: "POST", headers: { authorization: "Bearer " + token, "content-type": "application/json" },
    body: JSON.stringify({ reason: "status page" }),
  });
  if (r.ok) { sessionStorage.setItem("homeostat-token", token); showError(""); refresh(); return; }
  if (r.status === 401) sessionStorage.removeItem("homeostat-token");
  const body = await r.json().catch(() => ({}));
  showError(verb + " " + node + ": " + (body.error || "HTTP " + r.status));
}

// ---- the loop ------------------------------------------------------------------------------

let refreshing = null;
function refresh() {
  if (refreshing) return refreshing;
  refreshing = (async () => {
    try {
      renderStatus(await getJson("/api/v1/status?actions=0"));
      try { renderRoutes(await getJson("/api/v1/routes")); } catch (e) { if (e.status !== 503) throw e; }
      showError("");
    } catch (e) {
      showError("Cannot reach the daemon: " + e.message);
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function start() {
  await refresh();
  getJson("/api/v1/history").then(renderHistory).catch(() => {});
  try { follow(await loadEvents()); } catch (e) { showError("Cannot read the events: " + e.message); }
  setInterval(refresh, REFRESH_MS);
  setInterval(() => getJson("/api/v1/history").then(renderHistory).catch(() => {}), REFRESH_MS * 10);
}

document.addEventListener("DOMContentLoaded", start);
