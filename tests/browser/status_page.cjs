// Browser test of homeostat's status page (run by tests/ui_status_page.rs): headless Chromium
// driven by playwright-core loads the page from a daemon over the simulator, sees every node,
// injects a fault through the simulator's admin API, and sees the node's state change and the
// event appear without a reload; then saves a screenshot and prints its path.
//
// Environment: HOMEOSTAT_PAGE (the page's URL), HOMEOSTAT_NODES (names, comma-separated),
// HOMEOSTAT_FAULT_NODE, HOMEOSTAT_FAULT_URL (the node's base URL: its admin API is under it),
// HOMEOSTAT_CHROMIUM, HOMEOSTAT_PLAYWRIGHT_DIR (node_modules holding playwright-core),
// HOMEOSTAT_SCREENSHOT (where to save it).
"use strict";

const path = require("node:path");
const assert = require("node:assert/strict");
const { chromium } = require(path.join(process.env.HOMEOSTAT_PLAYWRIGHT_DIR, "playwright-core"));

const LIMIT = 20000;

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.HOMEOSTAT_CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    const failures = [];
    page.on("pageerror", (e) => failures.push("page error: " + e.message));
    page.on("requestfailed", (r) => {
      if (!r.url().includes("/events/stream")) failures.push("request failed: " + r.url());
    });
    const external = [];
    page.on("request", (r) => { if (!r.url().startsWith(process.env.HOMEOSTAT_PAGE)) external.push(r.url()); });
    await page.goto(process.env.HOMEOSTAT_PAGE);

    // Every node is shown, healthy, with the live event stream connected.
    for (const name of process.env.HOMEOSTAT_NODES.split(",")) {
      await page.locator(`[data-node="${name}"][data-state="healthy"]`).first().waitFor({ timeout: LIMIT });
    }
    await page.locator("#live", { hasText: "live" }).waitFor({ timeout: LIMIT });
    await page.locator('#routes tr[data-category]').first().waitFor({ timeout: LIMIT });
    // A marker that a reload would lose.
    await page.evaluate(() => { window.__sameDocument = true; });

    const node = process.env.HOMEOSTAT_FAULT_NODE;
    const r = await fetch(process.env.HOMEOSTAT_FAULT_URL + "/_sim/fault", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ kind: "down" }),
    });
    assert.equal(r.status, 200, "the simulator took the fault");

    // The node's state changes and its event arrives, in the same document.
    await page.locator(`article[data-node="${node}"]:not([data-state="healthy"])`).waitFor({ timeout: LIMIT });
    await page.locator(`#events li.new[data-node="${node}"]`).first().waitFor({ timeout: LIMIT });
    const state = await page.locator(`article[data-node="${node}"]`).getAttribute("data-state");
    const kinds = await page.locator(`#events li.new[data-node="${node}"]`).evaluateAll((l) => l.map((e) => e.dataset.kind));
    assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");
    assert.deepEqual(failures, [], "no script error or failed request");
    assert.deepEqual(external, [], "no request leaves the daemon (no CDN)");

    // Accessibility basics: one h1, a lang, labelled regions, every button named.
    assert.equal(await page.locator("h1").count(), 1);
    assert.equal(await page.getAttribute("html", "lang"), "en");
    for (const b of await page.locator("button").all()) assert.ok((await b.innerText()).trim().length > 0);

    const shot = process.env.HOMEOSTAT_SCREENSHOT;
    await page.screenshot({ path: shot, fullPage: true });
    // A phone-sized view must not scroll sideways.
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, "no horizontal scrolling on a phone (" + overflow + " px)");
    console.log(JSON.stringify({ ok: true, node, state, kinds, screenshot: shot }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => { console.error(e.stack || String(e)); process.exit(1); });
