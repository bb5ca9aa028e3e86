// The viewer's browser test. It starts a private nats-server (it stops it midway), both
// services on databases of their own and the viewer, as processes; then, in Debian's
// chromium: creates a product and places an order through the page's forms and sees the
// order's saga reach `confirmed` with every step within 3 s (after checking the cluster panel:
// one node, "single node", leading both streams), then cancels it from the page
// and sees the releases; publishes a poison message and sees the dead-letter count rise;
// stops order-service and sees it down, then up again; stops NATS and sees the page (and the
// cluster panel's node) say so;
// starts it again and sees events flow again. Screenshots go to target/browser-test/.
//
// Environment: BIN_DIR (the cargo-built binaries, default target/debug), NATS_SERVER_BIN
// (default nats-server), CHROMIUM (default /usr/bin/chromium), DATABASE_URL (a database on the
// server the run creates its own on, default postgres://postgres@127.0.0.1:5432/postgres, as
// the Rust tests read it), TEST_LOG
// (set: the processes' logs are shown; unset, a failed run shows the last lines of each).
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { randomUUID } from "node:crypto";
import { chromium } from "playwright-core";
import { publish } from "./nats-publish.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const binDir = process.env.BIN_DIR || path.join(root, "target/debug");
const shots = path.join(root, "target/browser-test");
const databaseUrl = process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
// The URL of database `name` on DATABASE_URL's server.
function database(name) {
  const url = new URL(databaseUrl);
  url.pathname = "/" + name;
  return url.toString();
}
const run = "viewer_bt_" + Date.now().toString(36) + Math.random().toString(36).slice(2, 6);
const children = [];
const temporaryDirs = [];
const timings = {};

function temporaryDir(prefix) {
  const dir = mkdtempSync(path.join(os.tmpdir(), prefix));
  temporaryDirs.push(dir);
  return dir;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

// Enough to hold an error and its backtrace (RUST_BACKTRACE=1).
const TAIL_LINES = 200;

function start(name, command, args, env = {}) {
  const child = spawn(command, args, {
    env: { ...process.env, ...env },
    stdio: process.env.TEST_LOG ? "inherit" : ["ignore", "pipe", "pipe"],
  });
  child.on("error", (e) => console.error(`cannot start ${name} (${command}): ${e.message}`));
  // The last lines of its output, shown when the run fails.
  child.label = name;
  child.tail = [];
  child.on("close", () => { child.closed = true; });
  for (const stream of [child.stdout, child.stderr]) {
    let partial = "";
    const keep = (lines) => {
      child.tail.push(...lines.filter((l) => l.trim()));
      child.tail.splice(0, Math.max(0, child.tail.length - TAIL_LINES));
    };
    stream?.on("data", (chunk) => {
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop();
      keep(lines);
    });
    stream?.on("end", () => keep([partial]));
  }
  children.push(child);
  return child;
}

const exited = (child) => child.exitCode !== null || child.signalCode !== null;

// Starts a server on a port found free and waits until `health` answers. Another process can
// take the port between the check and the server's bind (the kernel may hand it out as the
// local port of an outgoing connection); a server that exits before it answers is started
// again on another port, three times at most.
async function startServing(name, launch, health) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = launch(port);
    await until(`${name} on port ${port}`,
      async () => exited(child) || (await fetch(`http://127.0.0.1:${port}${health}`)).ok);
    if (!exited(child)) return { port, child };
    // Its output is read to the end once its pipes close, shortly after it exits.
    await until(`${name}'s last output`, async () => child.closed || !child.stdout, 2000).catch(() => {});
    const error = child.tail.findLast((l) => l.startsWith("Error:")) ?? child.tail.at(-1);
    const why = `${name} exited before it answered on port ${port} (${error})`;
    if (attempt === 3) throw new Error(why);
    console.error(`${why}; starting it again on another port`);
  }
}

function stop(child) {
  if (exited(child)) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", resolve);
    child.kill("SIGKILL");
  });
}

async function until(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try { if (await check()) return; } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function startNats(port, dir) {
  return start("nats-server", process.env.NATS_SERVER_BIN || "nats-server",
    ["-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir]);
}

function natsAccepts(port) {
  return until(`nats-server on ${port}`, () => new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => { socket.destroy(); resolve(true); });
    socket.on("error", () => resolve(false));
  }));
}

async function main() {
  for (const bin of ["product-service", "order-service", "event-viewer"]) {
    if (!existsSync(path.join(binDir, bin))) {
      throw new Error(`${binDir}/${bin} is missing: build it first (scripts/browser-test.sh does)`);
    }
  }
  const natsPort = await freePort();
  const natsDir = temporaryDir("viewer-bt-nats-");
  let nats = startNats(natsPort, natsDir);
  await natsAccepts(natsPort);
  const natsUrl = `nats://127.0.0.1:${natsPort}`;
  const namespace = run;
  const common = { NATS_URL: natsUrl, EVENTS_NAMESPACE: namespace, RUST_LOG: process.env.RUST_LOG || "warn" };
  const { port: productsPort } = await startServing("product-service", (port) =>
    start("product-service", path.join(binDir, "product-service"), ["serve"], {
      ...common, DATABASE_URL: database(`${run}_products`), HTTP_ADDR: `127.0.0.1:${port}`,
    }), "/health/ready");
  const launchOrders = (port) => start("order-service", path.join(binDir, "order-service"), ["serve"], {
    ...common, DATABASE_URL: database(`${run}_orders`), HTTP_ADDR: `127.0.0.1:${port}`,
  });
  const ordersStarted = await startServing("order-service", launchOrders, "/health/ready");
  const ordersPort = ordersStarted.port;
  let orderService = ordersStarted.child;
  const startOrders = () => launchOrders(ordersPort);
  const { port: viewerPort } = await startServing("event-viewer", (port) =>
    start("event-viewer", path.join(binDir, "event-viewer"), [], {
      ...common,
      ORDERS_URL: `http://127.0.0.1:${ordersPort}`,
      PRODUCTS_URL: `http://127.0.0.1:${productsPort}`,
      HTTP_ADDR: `127.0.0.1:${port}`,
    }), "/health");
  const viewer = `http://127.0.0.1:${viewerPort}`;
  const orders = `http://127.0.0.1:${ordersPort}`;

  mkdirSync(shots, { recursive: true });
  const profile = temporaryDir("viewer-bt-chromium-");
  // A fresh profile (playwright passes it as --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-quic"],
    viewport: { width: 1400, height: 1000 },
  });
  try {
    const page = await browser.newPage();
    const pageErrors = [];
    page.on("pageerror", (e) => pageErrors.push(e.message));
    await page.goto(viewer);
    await page.waitForFunction(() => document.querySelector("#nats-status").textContent === "NATS: connected");
    await page.waitForFunction(() => [...document.querySelectorAll(".up-state")].every((b) => b.textContent === "up"));

    // 0. The cluster panel: the one private nats-server, up, connected, leading both streams.
    let t = Date.now();
    await page.waitForFunction((ns) => {
      const nodes = [...document.querySelectorAll("#cluster-nodes li[data-node]")];
      const rows = [...document.querySelectorAll("#cluster-streams tr")];
      if (document.querySelector("#cluster-mode").textContent !== "single node" || nodes.length !== 1) return false;
      const node = nodes[0];
      return node.dataset.up === "true" && node.dataset.connected === "true" &&
        [`${ns}_order_events`, `${ns}_product_events`].every((s) => rows.some((r) =>
          r.dataset.stream === s && r.querySelector(".leader").textContent === node.dataset.node));
    }, namespace, { timeout: 10000 });
    timings.cluster_panel_shown_ms = Date.now() - t;

    // 1. Drive the saga from the page.
    const confirmedIn = await placeOrderThroughThePage(page, orders, "Teapot");
    timings.saga_confirmed_ms = confirmedIn;
    await page.screenshot({ path: path.join(shots, "saga.png"), fullPage: true });

    // ... and cancel it from the page: the saga goes on to the releases.
    t = Date.now();
    await page.click("#cancel-form button");
    await page.waitForFunction(() => {
      const steps = [...document.querySelectorAll("#saga .saga-step")].map((s) => s.dataset.type);
      return document.querySelector("#saga-status")?.textContent === "cancelled" &&
        ["OrderCancelled", "StockReleased", "ReservationReleased"].every((s) => steps.includes(s));
    }, null, { timeout: 3000 });
    timings.saga_cancelled_ms = Date.now() - t;

    // 2. A poison message on order-service's subjects: product-service dead-letters it.
    const deadBefore = await deadLetters(page, "products");
    t = Date.now();
    await publish({
      port: natsPort,
      subject: `${namespace}.order.events.order-${randomUUID()}.OrderPlaced`,
      headers: { "Nats-Msg-Id": randomUUID() },
      payload: "{this is not json",
    });
    await page.waitForFunction((before) => Number(document.querySelector("#dead-products").dataset.count) > before,
      deadBefore, { timeout: 10000 });
    timings.dead_letter_counted_ms = Date.now() - t;
    await page.waitForFunction(() => document.querySelector("#events-orders tr.malformed") !== null, null, { timeout: 5000 });
    await page.screenshot({ path: path.join(shots, "dead-letter.png"), fullPage: true });

    // 3. A service stops: the page shows it down, and up again when it returns.
    t = Date.now();
    await stop(orderService);
    await page.waitForFunction(() => document.querySelector("#svc-orders .up-state").textContent === "down", null, { timeout: 10000 });
    timings.service_down_shown_ms = Date.now() - t;
    t = Date.now();
    orderService = startOrders();
    await page.waitForFunction(() => document.querySelector("#svc-orders .up-state").textContent === "up", null, { timeout: 20000 });
    timings.service_up_shown_ms = Date.now() - t;

    // 4. NATS stops: the page says so.
    t = Date.now();
    await stop(nats);
    await page.waitForFunction(() => document.querySelector("#nats-status").textContent === "NATS: down", null, { timeout: 10000 });
    timings.nats_down_shown_ms = Date.now() - t;
    await page.waitForFunction(() => document.querySelector("#cluster-nodes li[data-node]")?.dataset.up === "false",
      null, { timeout: 10000 });
    timings.cluster_node_down_shown_ms = Date.now() - t;
    await page.screenshot({ path: path.join(shots, "nats-down.png"), fullPage: true });

    // 5. NATS returns (same port, same store): events flow again.
    t = Date.now();
    nats = startNats(natsPort, natsDir);
    await natsAccepts(natsPort);
    await page.waitForFunction(() => document.querySelector("#nats-status").textContent === "NATS: connected", null, { timeout: 15000 });
    timings.nats_up_shown_ms = Date.now() - t;
    await page.waitForFunction(() => document.querySelector("#cluster-nodes li[data-node]")?.dataset.up === "true",
      null, { timeout: 10000 });
    timings.saga_after_restart_ms = await placeOrderThroughThePage(page, orders, "Kettle", 15000);
    await page.screenshot({ path: path.join(shots, "after-restart.png"), fullPage: true });
    if (pageErrors.length) throw new Error(`the page threw: ${pageErrors.join("; ")}`);
    console.log("BROWSER-TEST " + Object.entries(timings).map(([k, v]) => `${k}=${v}`).join(" "));
  } finally {
    await browser.close();
  }
}

async function deadLetters(page, service) {
  await page.waitForFunction((s) => document.querySelector(`#dead-${s}`).dataset.count !== undefined, service);
  return Number(await page.locator(`#dead-${service}`).getAttribute("data-count"));
}

/// Creates a product and places an order with the page's forms; returns the milliseconds from
/// the order's click to its saga shown confirmed with all four steps.
async function placeOrderThroughThePage(page, ordersUrl, name, timeout = 3000) {
  await page.fill("#product-form [name=name]", name);
  await page.click("#product-form button");
  await page.waitForFunction(() => document.querySelector("#product-result").textContent.startsWith("created"));
  // order-service prices orders from its catalogue, which the product's event fills.
  const productId = await page.inputValue("#order-product");
  await until("the product in order-service's catalogue", async () =>
    (await fetch(`${ordersUrl}/catalog/products/${productId}`)).ok, 15000);
  const t = Date.now();
  await page.click("#order-form button");
  await page.waitForFunction(() => {
    const status = document.querySelector("#saga-status");
    const steps = [...document.querySelectorAll("#saga .saga-step")].map((s) => s.dataset.type);
    return status && status.textContent === "confirmed" &&
      ["OrderPlaced", "StockReserved", "ReservationConfirmed", "OrderConfirmed"].every((s) => steps.includes(s));
  }, null, { timeout });
  return Date.now() - t;
}

function dropDatabases() {
  for (const db of [`${run}_products`, `${run}_orders`]) {
    const r = spawnSync("psql", [database("postgres"), "-qc", `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`], { stdio: "ignore" });
    if (r.status !== 0) console.error(`could not drop database ${db} (psql missing?)`);
  }
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  console.error("BROWSER-TEST FAILED:", e.message, "timings so far:", JSON.stringify(timings));
  for (const child of children) {
    const status = exited(child) ? `exited (${child.exitCode ?? child.signalCode})` : "running";
    console.error(`--- ${child.label}, ${status}, its last lines:\n${child.tail.slice(-40).join("\n")}`);
  }
} finally {
  await Promise.all(children.map(stop));
  dropDatabases();
  for (const dir of temporaryDirs) rmSync(dir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
