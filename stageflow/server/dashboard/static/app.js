// The stageflow dashboard: plain JavaScript over /api/v1, no build step, no network at run time.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const view = $("#view");
let timer = null;
let socket = null;

function token() { return localStorage.getItem("stageflow.token") || ""; }

async function api(path, options = {}) {
  const response = await fetch(`/api/v1${path}`, {
    ...options,
    headers: { "Authorization": `Bearer ${token()}`, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401 || response.status === 403) {
    if (!options.method || options.method === "GET") { showLogin(); }
    const body = await response.json().catch(() => ({}));
    throw new Error(body.error || `not allowed (${response.status})`);
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) { throw new Error(body.error || `${response.status} ${response.statusText}`); }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const badge = (status) => el("span", { class: `status s-${status}`, "data-status": status }, status);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");

function stop() {
  if (timer) { clearInterval(timer); timer = null; }
  if (socket) { socket.close(); socket = null; }
}

function showLogin() {
  stop();
  $("#login").hidden = false;
  view.replaceChildren();
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("stageflow.token", $("#token").value.trim());
  $("#login").hidden = true;
  route();
});

// ---------------------------------------------------------------- runs list
async function runsPage() {
  const table = el("table", { id: "runs" },
    el("thead", {}, el("tr", {}, ["run", "pipeline", "status", "started", "finished"].map((h) => el("th", {}, h)))),
    el("tbody"));
  view.replaceChildren(el("h2", {}, "Runs"), table);
  async function refresh() {
    const body = await api("/runs?limit=50");
    $("tbody", table).replaceChildren(...(body.runs || []).map((run) => el("tr", {},
      el("td", {}, el("a", { href: `#/runs/${encodeURIComponent(run.run_id)}` }, run.run_id)),
      el("td", {}, run.pipeline || ""), el("td", {}, badge(run.status)),
      el("td", {}, when(run.started_at)), el("td", {}, when(run.finished_at)))));
  }
  await refresh();
  timer = setInterval(() => refresh().catch(() => {}), 2000);
}

// ---------------------------------------------------------------- one run
function layout(names, needs) {
  const level = {};
  const depth = (name, seen = new Set()) => {
    if (level[name] !== undefined) return level[name];
    if (seen.has(name)) return 0;
    seen.add(name);
    const ups = needs[name] || [];
    level[name] = ups.length ? 1 + Math.max(...ups.map((u) => depth(u, seen))) : 0;
    return level[name];
  };
  names.forEach((n) => depth(n));
  const columns = {};
  names.forEach((n) => { (columns[level[n]] = columns[level[n]] || []).push(n); });
  const pos = {};
  Object.entries(columns).forEach(([col, members]) => members.forEach((n, row) => {
    pos[n] = { x: 20 + Number(col) * 190, y: 20 + row * 60 };
  }));
  return pos;
}

function graph(run, onPick) {
  const names = Object.keys(run.stages);
  const needs = Object.fromEntries(names.map((n) => [n, run.stages[n].needs || []]));
  const pos = layout(names, needs);
  const width = Math.max(...names.map((n) => pos[n].x)) + 180;
  const height = Math.max(...names.map((n) => pos[n].y)) + 60;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", width); svg.setAttribute("height", height); svg.setAttribute("id", "graph");
  svg.innerHTML = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#999"/></marker></defs>';
  for (const n of names) for (const up of needs[n]) {
    if (!pos[up]) continue;
    const line = document.createElementNS(ns, "line");
    line.setAttribute("x1", pos[up].x + 150); line.setAttribute("y1", pos[up].y + 18);
    line.setAttribute("x2", pos[n].x); line.setAttribute("y2", pos[n].y + 18);
    svg.append(line);
  }
  const colors = { succeeded: "#2e8540", failed: "#c62828", upstream_failed: "#c62828", skipped: "#9e9e9e", running: "#1565c0",
    waiting_approval: "#ef8f00", cancelled: "#7b1fa2", pending: "#9e9e9e" };
  for (const n of names) {
    const stage = run.stages[n];
    const group = document.createElementNS(ns, "g");
    group.setAttribute("data-stage", n); group.setAttribute("data-status", stage.status);
    group.style.cursor = "pointer";
    group.addEventListener("click", () => onPick(n));
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", pos[n].x); rect.setAttribute("y", pos[n].y);
    rect.setAttribute("width", 150); rect.setAttribute("height", 36);
    rect.setAttribute("fill", colors[stage.status] || "#9e9e9e");
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", pos[n].x + 10); text.setAttribute("y", pos[n].y + 22);
    text.textContent = `${n} · ${stage.status}`;
    group.append(rect, text);
    svg.append(group);
  }
  return el("div", { class: "graph" }, svg);
}

function progressOf(stage) {
  if (stage.instances) return { done: stage.instances_done || 0, total: stage.instances, unit: "instances" };
  const p = stage.progress;
  if (p && p.total) return { done: p.done, total: p.total, unit: p.unit || "" };
  return null;
}

async function runPage(runId) {
  let picked = null;
  const head = el("div");
  const actions = el("div", { class: "actions" });
  const graphBox = el("div");
  const stages = el("table", { id: "stages" });
  const logs = el("div", { id: "logs" });
  const message = el("p", { class: "error", id: "message" });
  view.replaceChildren(head, actions, message, graphBox, el("h3", {}, "Stages"), stages, el("h3", {}, "Logs"), logs);

  async function act(path, body) {
    message.textContent = "";
    try { await api(`/runs/${encodeURIComponent(runId)}/${path}`, { method: "POST", body: JSON.stringify(body || {}) }); await refresh(); }
    catch (error) { message.textContent = error.message; }
  }

  async function refresh() {
    const run = await api(`/runs/${encodeURIComponent(runId)}`);
    head.replaceChildren(el("h2", {}, run.run_id, " ", badge(run.status)), el("p", { class: "muted" }, run.pipeline || ""));
    const live = ["running", "paused"].includes(run.status);
    const waiting = Object.entries(run.stages).filter(([, s]) => s.status === "waiting_approval").map(([n]) => n);
    actions.replaceChildren(
      ...waiting.map((n) => el("button", { id: `approve-${n}`, onclick: () => act("approve", { stage: n }) }, `Approve ${n}`)),
      el("button", { id: "pause", disabled: run.status !== "running" ? "" : null, onclick: () => act("pause") }, "Pause"),
      el("button", { id: "resume", disabled: run.status !== "paused" ? "" : null, onclick: () => act("resume") }, "Resume"),
      el("button", { id: "cancel", disabled: live ? null : "", onclick: () => act("cancel") }, "Cancel"),
      el("button", { id: "retry", disabled: ["failed", "cancelled", "terminated", "timed_out"].includes(run.status) ? null : "", onclick: () => act("retry") }, "Retry"));
    graphBox.replaceChildren(graph(run, (n) => { picked = picked === n ? null : n; followLogs(); }));
    stages.replaceChildren(
      el("tr", {}, ["stage", "status", "attempts", "progress", "time", "error"].map((h) => el("th", {}, h))),
      ...Object.entries(run.stages).map(([name, s]) => {
        const p = progressOf(s);
        return el("tr", { "data-stage": name },
          el("td", {}, name), el("td", {}, badge(s.status)), el("td", {}, s.attempts || ""),
          el("td", {}, p ? el("div", {}, el("div", { class: "bar" }, el("div", { style: `width:${Math.min(100, 100 * p.done / p.total)}%` })), `${p.done}/${p.total} ${p.unit}`) : ""),
          el("td", {}, s.started_at ? `${(((s.finished_at ? new Date(s.finished_at) : new Date()) - new Date(s.started_at)) / 1000).toFixed(1)}s` : ""),
          el("td", { class: "error" }, s.error || ""));
      }));
  }

  function followLogs() {
    if (socket) socket.close();
    logs.replaceChildren();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ token: token() });
    if (picked) query.set("stage", picked);
    socket = new WebSocket(`${scheme}://${location.host}/api/v1/runs/${encodeURIComponent(runId)}/logs/stream?${query}`);
    socket.onmessage = (event) => {
      const line = JSON.parse(event.data);
      const where = line.instance === null || line.instance === undefined ? line.stage : `${line.stage}[${line.instance}]`;
      const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
      logs.append(el("div", { class: "line" }, el("span", { class: "meta" }, `${where}#${line.attempt} `), line.message));
      if (atBottom) logs.scrollTop = logs.scrollHeight;
    };
  }

  await refresh();
  followLogs();
  timer = setInterval(() => refresh().catch((error) => { message.textContent = error.message; }), 1000);
}

// ---------------------------------------------------------------- workers
async function workersPage() {
  const table = el("table", { id: "workers" });
  view.replaceChildren(el("h2", {}, "Workers"), table);
  async function refresh() {
    const body = await api("/workers");
    table.replaceChildren(
      el("tr", {}, ["worker", "state", "host", "queues", "tags", "hardware", "load", "cost/h", "last heartbeat"].map((h) => el("th", {}, h))),
      ...(body.workers || []).map((w) => el("tr", { "data-worker": w.worker_id },
        el("td", {}, w.worker_id), el("td", {}, badge(w.state)), el("td", {}, w.host || ""),
        el("td", {}, (w.queues || []).join(", ")), el("td", {}, (w.tags || []).join(", ")),
        el("td", {}, `${w.cpus || "?"} CPU, ${((w.memory_bytes || 0) / 2 ** 30).toFixed(1)} GiB${(w.gpus || []).length ? `, ${w.gpus.length} GPU` : ""}`),
        el("td", {}, w.load ? `cpu ${w.load.cpu_percent ?? "?"}%, ${w.load.running_stages ?? 0} stages` : ""),
        el("td", {}, w.cost_per_hour ?? ""), el("td", {}, when(w.last_heartbeat)))));
  }
  await refresh();
  timer = setInterval(() => refresh().catch(() => {}), 2000);
}

async function route() {
  stop();
  if (!token()) { showLogin(); return; }
  const hash = location.hash || "#/runs";
  try {
    if (hash.startsWith("#/runs/")) await runPage(decodeURIComponent(hash.slice(7)));
    else if (hash.startsWith("#/workers")) await workersPage();
    else await runsPage();
  } catch (error) {
    view.append(el("p", { class: "error" }, error.message));
  }
}

window.addEventListener("hashchange", route);
route();
