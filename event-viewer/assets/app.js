// The page: loads the window once, then follows /api/stream (server-sent events).
// Everything from the wire is written with textContent, never parsed as HTML.
"use strict";

const SERVICES = ["orders", "products"];
const SHOWN_PER_COLUMN = 200;
const RATE_SECONDS = 60;

const state = {
  events: new Map(),            // event_id -> event, for de-duplication
  perSecond: { orders: new Map(), products: new Map() }, // unix second -> count
  sagaKey: null,
  sagaOrder: null,
  sagaTimer: null,
};

const $ = (selector) => document.querySelector(selector);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function time(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

// ---- events ----

function filter() {
  return { stream: $("#filter-stream").value.trim(), correlation: $("#filter-correlation").value.trim() };
}

function matches(e, f) {
  return (!f.stream || e.stream_id.includes(f.stream)) &&
    (!f.correlation || (e.correlation_id || "").includes(f.correlation));
}

function addEvent(e, fresh) {
  if (state.events.has(e.event_id)) return false;
  state.events.set(e.event_id, e);
  const second = Math.floor(e.time_ms / 1000);
  const counts = state.perSecond[e.service];
  if (counts) counts.set(second, (counts.get(second) || 0) + 1);
  if (state.events.size > 10000) {
    // Maps iterate in insertion order: forget the oldest arrivals.
    const first = state.events.keys().next().value;
    state.events.delete(first);
  }
  if (fresh && state.sagaOrder && e.order_id === state.sagaOrder) scheduleSaga();
  if (fresh && !state.sagaOrder && state.sagaKey && (e.order_id === state.sagaKey || e.correlation_id === state.sagaKey)) scheduleSaga();
  return true;
}

function row(e, fresh) {
  const tr = el("tr", (fresh ? "fresh " : "") + (e.malformed ? "malformed" : ""));
  tr.dataset.eventId = e.event_id;
  tr.append(
    el("td", "type", e.event_type + (e.republished ? " (repaired: " + e.republished + ")" : "")),
    el("td", "mono", e.stream_id + " v" + e.stream_version),
    el("td", "mono", e.correlation_id || "–"),
    el("td", "mono", time(e.time_ms)),
  );
  tr.title = e.malformed ? "malformed: " + e.malformed : JSON.stringify(e.payload);
  tr.addEventListener("click", () => showSaga(e.order_id || e.correlation_id || ""));
  return tr;
}

let renderPending = false;
function render() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => {
    renderPending = false;
    const f = filter();
    const sorted = [...state.events.values()].sort((a, b) => b.time_ms - a.time_ms || b.seq - a.seq);
    for (const service of SERVICES) {
      const body = $("#events-" + service);
      const rows = sorted.filter((e) => e.service === service && matches(e, f)).slice(0, SHOWN_PER_COLUMN);
      const newest = Date.now() - 3000;
      body.replaceChildren(...rows.map((e) => row(e, e.arrived > newest)));
    }
  });
}

async function loadWindow() {
  const response = await fetch("/api/events?limit=2000");
  const events = await response.json();
  for (const e of events) addEvent(e, false);
  render();
}

// ---- status, metrics and the rate charts ----

function lag(l) {
  return l ? `${l.events} events, ${l.seconds.toFixed(1)} s` : "–";
}

function showStatus(status) {
  const nats = $("#nats-status");
  nats.textContent = status.nats_connected ? "NATS: connected" : "NATS: down";
  $("#nats-error").textContent = status.nats_connected ? "" : (status.nats_error || "");
  nats.className = "badge " + (status.nats_connected ? "up" : "down");
  $("#window-len").textContent = `(${status.window_len} in the viewer's window)`;
  for (const service of SERVICES) {
    const s = status.services[service];
    const card = $("#svc-" + service);
    if (!s) continue;
    const badge = card.querySelector(".up-state");
    badge.textContent = s.up ? "up" : "down";
    badge.className = "badge up-state " + (s.up ? "up" : "down");
    badge.title = s.error || "";
    const m = s.metrics;
    card.querySelector(".head").textContent = m.head_position ?? "–";
    card.querySelector(".relay").textContent = lag(m.relay_lag);
    card.querySelector(".consumer").textContent = s.consumer_lag ?? "–";
    card.querySelector(".projections").textContent = m.projections.length
      ? m.projections.map((p) => `${p.name}: ${lag(p)}`).join("; ") : "none (read models are inline)";
    const dead = card.querySelector(".dead");
    const kinds = Object.entries(m.dead_letters_by_kind).map(([k, v]) => `${k} ${v}`).join(", ");
    dead.textContent = m.dead_letters + (kinds ? ` (${kinds})` : "");
    dead.dataset.count = m.dead_letters;
    dead.classList.toggle("some", m.dead_letters > 0);
  }
}

function drawRates() {
  const now = Math.floor(Date.now() / 1000);
  for (const service of SERVICES) {
    const counts = state.perSecond[service];
    for (const second of counts.keys()) if (second < now - RATE_SECONDS) counts.delete(second);
    const values = [];
    for (let s = now - RATE_SECONDS + 1; s <= now; s++) values.push(counts.get(s) || 0);
    const canvas = $("#svc-" + service + " canvas");
    const ctx = canvas.getContext("2d");
    const { width, height } = canvas;
    const max = Math.max(5, ...values);
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = "#999";
    ctx.font = "10px sans-serif";
    ctx.fillText(`${max}/s`, 2, 10);
    ctx.fillText(`now ${values[values.length - 1]}/s`, width - 60, 10);
    ctx.strokeStyle = service === "orders" ? "#2b6cb0" : "#2e8b57";
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = (i / (RATE_SECONDS - 1)) * (width - 4) + 2;
      const y = height - 2 - (v / max) * (height - 16);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function addDeadLetter(d) {
  const list = $("#dead-letters");
  if (list.querySelector(".hint")) list.replaceChildren();
  const text = `${time(d.time_ms)} ${d.consumer || "?"} [${d.kind || "?"}] ${d.subject}: ${d.error || ""}`;
  list.prepend(el("li", null, text));
  while (list.children.length > 50) list.lastChild.remove();
}

// ---- the NATS cluster: nodes up or down, each stream's leader and replicas ----

function showCluster(view) {
  if (!view.mode) return; // not observed yet
  const mode = $("#cluster-mode");
  mode.textContent = view.mode;
  $("#cluster-name").textContent = view.cluster_name ? `cluster ${view.cluster_name}, checked ${time(view.checked_ms)}`
    : `checked ${time(view.checked_ms)}`;
  const nodes = view.nodes.map((n) => {
    const li = el("li", n.connected ? "connected" : "");
    li.dataset.node = n.name;
    li.dataset.up = n.up;
    li.dataset.connected = n.connected;
    li.append(el("span", "badge " + (n.up ? "up" : "down"), n.up ? "up" : "down"), " ", el("span", "mono", n.name));
    if (n.connected) li.append(el("span", "hint", " (the viewer is connected here)"));
    if (n.leads.length) li.append(el("span", "hint", " leads " + n.leads.join(", ")));
    li.title = [n.url, n.error].filter(Boolean).join(": ");
    return li;
  });
  $("#cluster-nodes").replaceChildren(...(nodes.length ? nodes : [el("li", "hint", "no node answers")]));
  $("#cluster-streams").replaceChildren(...view.streams.map((s) => {
    const tr = el("tr");
    tr.dataset.stream = s.stream;
    const leader = el("td", "mono leader", s.leader || (s.error ? "? (" + s.error + ")" : "none (electing?)"));
    const replicas = el("td", "replicas");
    if (!s.replicas.length) replicas.textContent = s.error ? "" : (view.mode === "single node" ? "single node" : "none (R1)");
    s.replicas.forEach((r, i) => {
      if (i) replicas.append(", ");
      const span = el("span", "mono replica " + r.state, `${r.name} ${r.state}` + (r.lag ? ` (lag ${r.lag})` : ""));
      span.dataset.state = r.state;
      span.title = `last seen ${r.active_ms} ms ago`;
      replicas.append(span);
    });
    tr.append(el("td", "mono", `${s.stream} (${s.service})`), leader, replicas);
    return tr;
  }));
}

// ---- the saga ----

function showSaga(key) {
  if (!key) return;
  state.sagaKey = key;
  state.sagaOrder = null;
  $("#saga-key").value = key;
  loadSaga();
}

function scheduleSaga() {
  clearTimeout(state.sagaTimer);
  state.sagaTimer = setTimeout(loadSaga, 50);
}

async function loadSaga() {
  const box = $("#saga");
  const key = state.sagaKey;
  const response = await fetch("/api/saga/" + encodeURIComponent(key));
  if (key !== state.sagaKey) return;
  if (!response.ok) {
    box.replaceChildren(el("p", "hint", `No event of ${key} seen yet; waiting for it…`));
    return;
  }
  const saga = await response.json();
  state.sagaOrder = saga.order_id;
  const head = el("p");
  const badge = el("span", "badge " + saga.status, saga.status);
  badge.id = "saga-status";
  head.append("order ", el("span", "mono", saga.order_id), " ", badge,
    ` ${saga.steps.length} steps, ${saga.total_ms} ms from first to last`);
  const list = el("ol");
  saga.steps.forEach((step, i) => {
    const li = el("li", `saga-step ${step.service} ${step.kind}`);
    li.dataset.type = step.event_type;
    li.append(el("div", "type", step.event_type),
      el("div", "mono", `${step.service}: ${step.stream_id} v${step.stream_version}`),
      el("div", "took", (i === 0 ? "start" : `+${step.took_ms} ms`) + " at " + time(step.time_ms)));
    li.title = "correlation id " + (step.correlation_id || "–");
    list.append(li);
  });
  for (const missing of saga.waiting_for) list.append(el("li", "saga-missing", "waiting for " + missing));
  const parts = [head, list];
  if (saga.status === "pending" || saga.status === "confirmed") {
    // order-service's own POST /orders/{id}/cancel, forwarded by the viewer.
    const form = el("form");
    form.id = "cancel-form";
    const output = el("output");
    form.append(el("button", null, "Cancel this order"), output);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const order = await post(`/orders/${encodeURIComponent(saga.order_id)}/cancel`, {}, output);
      if (order) output.textContent = `order ${order.status}`;
    });
    parts.push(form);
  }
  box.replaceChildren(...parts);
}

// ---- the forms: POSTed to the viewer, which forwards them to the services unchanged ----

async function post(path, body, output) {
  output.className = "";
  output.textContent = "…";
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const json = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(`${response.status} ${json.error || ""}: ${json.message || ""}`);
    return json;
  } catch (error) {
    output.className = "error";
    output.textContent = String(error.message || error);
    return null;
  }
}

$("#product-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const output = $("#product-result");
  const product = await post("/products", {
    name: form.get("name"),
    price_cents: Number(form.get("price_cents")),
    stock: Number(form.get("stock")),
  }, output);
  if (!product) return;
  output.textContent = `created ${product.id}`;
  $("#order-product").value = product.id;
});

$("#order-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const output = $("#order-result");
  const order = await post("/orders", {
    customer_id: form.get("customer_id"),
    lines: [{ product_id: form.get("product_id"), quantity: Number(form.get("quantity")) }],
  }, output);
  if (!order) return;
  output.textContent = `placed ${order.id} (${order.status})`;
  showSaga(order.id);
});

$("#saga-form").addEventListener("submit", (event) => {
  event.preventDefault();
  showSaga($("#saga-key").value.trim());
});

$("#filter-form").addEventListener("input", render);
$("#filter-form").addEventListener("reset", () => setTimeout(render, 0));

// ---- the live stream ----

function connect() {
  const source = new EventSource("/api/stream");
  const viewer = $("#viewer-status");
  let lost = false;
  source.onopen = () => {
    viewer.textContent = "page: live";
    viewer.className = "badge up";
    // Back after a break (the viewer restarted?): fetch what came meanwhile.
    if (lost) loadWindow();
    lost = false;
  };
  source.onerror = () => {
    lost = true;
    viewer.textContent = "page: viewer unreachable, retrying";
    viewer.className = "badge down";
  };
  source.addEventListener("event", (message) => {
    const e = JSON.parse(message.data);
    e.arrived = Date.now();
    if (addEvent(e, true)) render();
  });
  source.addEventListener("status", (message) => showStatus(JSON.parse(message.data)));
  source.addEventListener("cluster", (message) => showCluster(JSON.parse(message.data)));
  source.addEventListener("deadletter", (message) => addDeadLetter(JSON.parse(message.data)));
  source.addEventListener("resync", () => loadWindow());
}

async function start() {
  const response = await fetch("/api/status");
  const { status, dead_letters } = await response.json();
  showStatus(status);
  dead_letters.reverse().forEach(addDeadLetter);
  showCluster(await (await fetch("/api/cluster")).json());
  // Live first, then the window: an event in both is kept once, none falls in between.
  connect();
  await loadWindow();
  setInterval(drawRates, 1000);
  drawRates();
}

start();
