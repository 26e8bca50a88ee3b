// The console end to end in headless Chromium (Debian's), driven by playwright-core, over the
// Salesforce example as `dreampipe dev` runs it. Run by example_salesforce.rs:
//   node console.cjs <query service URL> <the example's projections.yaml> <screenshot.png>
// Each step says what it checks; the first that fails ends the run with its reason.
"use strict";

const { chromium } = require("playwright-core");
const assert = require("node:assert/strict");
const fs = require("node:fs");

const [base, projectionsFile, screenshot] = process.argv.slice(2);
const TIMEOUT = 60_000;
const MAX_PAGE_BYTES = 300 * 1024;

function step(text) {
  console.log(`console: ${text}`);
}

async function api(path) {
  const response = await fetch(`${base}${path}`);
  assert.equal(response.status, 200, `GET ${path} answered ${response.status}`);
  return response.json();
}

/** Waits until `check` returns a truthy value, polling; fails with `what` after TIMEOUT. */
async function eventually(what, check) {
  const deadline = Date.now() + TIMEOUT;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${TIMEOUT / 1000} s${last ? `: ${last.message}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const node = (page, kind, name) => page.locator(`[data-kind="${kind}"][data-name="${name}"]`);
const figure = (page, kind, name, figureName) => node(page, kind, name).locator(`[data-figure="${figureName}"]`);

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 860 }, colorScheme: "light" });
    const page = await context.newPage();
    const failures = [];
    page.on("pageerror", (error) => failures.push(error.message));
    page.on("console", (message) => message.type() === "error" && failures.push(message.text()));
    let bytes = 0;
    page.on("response", async (response) => {
      try {
        bytes += (await response.body()).length;
      } catch {
        // a redirect has no body
      }
    });

    step("the graph shows the example's nodes, each with its figures");
    await page.goto(`${base}/console/`);
    for (const [kind, name] of [
      ["adapter", "salesforce-customers"], ["entity", "customer"], ["projection", "customers"],
      ["projection", "customers-by-city"], ["projection", "customer-changes"], ["view", "customers"],
      ["view", "customers_by_city"], ["view", "customer_changes"],
    ]) {
      await node(page, kind, name).waitFor({ timeout: TIMEOUT });
    }
    const stored = (await api("/v1/pipeline")).entities[0].report.events;
    assert.ok(stored > 0, "the receiver reports events");
    await eventually("the entity's event count", async () =>
      Number((await figure(page, "entity", "customer", "events").textContent()).replace(/,/g, "")) >= stored);
    assert.match(await figure(page, "adapter", "salesforce-customers", "records-read").textContent(), /^[\d,]+$/);
    await eventually("a records/s rate after two refreshes", async () =>
      /^\d+\.\d\/s$/.test(await figure(page, "adapter", "salesforce-customers", "records-per-second").textContent()));
    await eventually("the customers projection caught up", async () =>
      (await figure(page, "projection", "customers", "lag").textContent()) === "0 events");
    assert.match(await figure(page, "projection", "customers", "replicas").textContent(), /^1\/1 ready$/);
    assert.equal(await node(page, "projection", "customers").locator(".badge").textContent(), "Live");
    const edges = await page.locator("svg.edges path").count();
    assert.equal(edges, 1 + 3 + 3, "adapter→entity, entity→3 projections, each projection→its view");
    assert.ok(bytes < MAX_PAGE_BYTES, `the graph page weighs ${bytes} bytes`);
    step(`graph page: ${bytes} bytes (limit ${MAX_PAGE_BYTES}), ${edges} edges`);
    await page.screenshot({ path: screenshot, fullPage: true });
    step(`screenshot: ${screenshot}`);

    step("the keyboard reaches a node and opens it");
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
    let reached = false;
    for (let i = 0; i < 30 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate(() => document.activeElement.dataset.name === "customers"
        && document.activeElement.dataset.kind === "projection");
    }
    assert.ok(reached, "Tab reaches the customers projection");
    await page.keyboard.press("Enter");
    await page.waitForURL(/#\/ns\/default\/projections\/customers$/);
    const live = await page.locator("#generations tbody tr").first().getAttribute("data-generation");
    await eventually("the live generation's row", async () =>
      (await page.locator(`#generations tr[data-generation="${live}"] [data-field="state"]`).textContent()) === "live");
    assert.ok(await page.locator("#partitions tbody tr").count() > 0, "partitions are listed");
    assert.match(await page.locator("#partitions tbody tr").first().textContent(), /dev-customers/);

    step("a filter edit shows the new generation Building, then Live");
    const yaml = fs.readFileSync(projectionsFile, "utf8");
    const edited = yaml.replace(
      "spec:\n  entity: customer\n  sink:\n    postgres:\n      view: customers\n",
      "spec:\n  entity: customer\n  filters:\n    - where: state.name != \"\"\n  sink:\n    postgres:\n      view: customers\n",
    );
    assert.notEqual(edited, yaml, "the customers projection was found in projections.yaml");
    fs.writeFileSync(projectionsFile, edited);
    const changes = page.locator("#generation-timeline li");
    const next = await eventually("a new generation", async () => {
      for (const text of await changes.allTextContents()) {
        const [generation] = text.split(" ");
        if (generation !== live) return generation;
      }
      return null;
    });
    await eventually(`generation ${next} live`, async () =>
      (await changes.allTextContents()).some((t) => t.startsWith(`${next} live`)));
    const seen = (await changes.allTextContents()).filter((t) => t.startsWith(`${next} `)).map((t) => t.split(" ")[1]);
    assert.deepEqual(seen.slice(0, 1), ["building"], `generation ${next} went through ${seen}`);
    assert.ok(seen.indexOf("live") > seen.indexOf("building"), `Building before Live: ${seen}`);
    await eventually(`${live} retired`, async () =>
      (await changes.allTextContents()).some((t) => t.startsWith(`${live} retired`)));
    assert.match(await page.locator("#filters").textContent(), /where state\.name != ""/);
    step(`generation ${live} → ${next}: ${seen.join(" → ")}`);

    step("a key's history shows its changes, and its state as of a version");
    const rows = (await api("/v1/views/customers?limit=1000")).rows;
    let changed = null;
    for (const row of rows) {
      const history = await api(`/v1/entities/customer/${encodeURIComponent(row.dp_key)}/history`);
      if (history.events.length >= 2) {
        changed = { key: row.dp_key, events: history.events };
        break;
      }
    }
    assert.ok(changed, "a customer changed at least once");
    await page.goto(`${base}/console/#/ns/default/entities/customer`);
    await page.locator("#key-form input[name=key]").fill(changed.key);
    await page.locator("#key-form input[name=key]").press("Enter");
    await page.locator("#history > li").first().waitFor({ timeout: TIMEOUT });
    assert.equal(await page.locator("#history > li").count(), changed.events.length);
    const second = page.locator('#history > li[data-version="2"]');
    const changeLines = await second.locator(".changes li").allTextContents();
    const expected = changed.events[1].changes.map((c) => c.path);
    assert.ok(expected.length > 0, "version 2 changed fields");
    for (const path of expected) {
      assert.ok(changeLines.some((line) => line.startsWith(`${path}:`)), `the change of ${path} is shown: ${changeLines}`);
    }
    assert.ok(changeLines.some((line) => line.includes("→")), `from → to: ${changeLines}`);
    assert.match(await page.locator("#current pre").textContent(), new RegExp(changed.key));
    await page.locator('#history > li[data-version="1"] a').click();
    await page.locator("#as-of").waitFor({ timeout: TIMEOUT });
    assert.match(await page.locator("#as-of").textContent(), /version 1,/);
    step(`key ${changed.key}: ${changed.events.length} events, version 2 changed ${expected.join(", ")}`);

    step("the view browser pages through a view with the API's filters");
    await page.goto(`${base}/console/#/ns/default/views/customers?limit=20`);
    await page.locator("#rows tbody tr").first().waitFor({ timeout: TIMEOUT });
    assert.equal(await page.locator("#rows tbody tr").count(), Math.min(20, rows.length));
    const city = rows.find((r) => r.city).city;
    await page.locator('#view-filters input[name="city"]').fill(city);
    await page.locator('#view-filters button[type="submit"]').click();
    await page.waitForURL((url) => new URL(url).hash.includes("city="));
    await eventually("rows of that city only", async () => {
      const header = await page.locator("#rows thead th").allTextContents();
      const column = header.indexOf("city");
      const cities = await page.locator(`#rows tbody tr td:nth-child(${column + 1})`).allTextContents();
      return column >= 0 && cities.length > 0 && cities.every((c) => c === city);
    });
    const expectedCount = rows.filter((r) => r.city === city).length;
    assert.equal(await page.locator("#rows tbody tr").count(), Math.min(20, expectedCount));

    step("dark mode: light text on a dark page");
    const dark = await browser.newContext({ colorScheme: "dark" });
    const darkPage = await dark.newPage();
    await darkPage.goto(`${base}/console/`);
    await node(darkPage, "entity", "customer").waitFor({ timeout: TIMEOUT });
    const [background, text] = await darkPage.evaluate(() => {
      const style = getComputedStyle(document.body);
      return [style.backgroundColor, style.color];
    });
    const luminance = (rgb) => {
      const [r, g, b] = rgb.match(/\d+/g).map(Number);
      return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;
    };
    assert.ok(luminance(background) < 0.2 && luminance(text) > 0.7, `dark: ${background} / ${text}`);
    await dark.close();

    assert.deepEqual(failures, [], "no script error in the page");
    step("ok");
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(`console: FAILED: ${error.stack || error}`);
  process.exit(1);
});
