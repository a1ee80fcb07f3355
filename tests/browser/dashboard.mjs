// The marketers' dashboard in a real browser (headless Debian Chromium driven by playwright-core):
// signed out it shows nothing, a wrong token is refused, the marketer's token shows counters, and
// events sent through the edge move those counters on the open page, without a reload.
//
// Run by edge/local/tests/dashboard.rs against a fresh `edgefront dev`; by hand:
//   dir=$(tests/browser/ensure.sh)
//   EDGEFRONT_BROWSER_DIR=$dir ORIGIN_URL=http://127.0.0.1:8788 EDGE_URL=http://127.0.0.1:8787 \
//   MARKETER_TOKEN=$(cargo run --release -- token --role marketer) SCREENSHOT=artifacts/dashboard.png \
//   node tests/browser/dashboard.mjs
//
// Environment: ORIGIN_URL, EDGE_URL, MARKETER_TOKEN, SCREENSHOT (png path, written on success and,
// for diagnosis, on failure), CHROMIUM (default /usr/bin/chromium), EDGEFRONT_BROWSER_DIR (the
// directory whose node_modules holds playwright-core, printed by tests/browser/ensure.sh; without
// it playwright-core is resolved from this directory as usual).
// Exits 0 when every expectation holds, 1 with a message naming the first that did not.

import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { randomUUID } from 'node:crypto';

class Expectation extends Error {}

function fail(message) {
  throw new Expectation(message);
}

function env(name, fallback) {
  const v = process.env[name];
  if (v !== undefined && v !== '') return v;
  if (fallback !== undefined) return fallback;
  console.error(`dashboard: ${name} is not set`);
  process.exit(2);
}

const ORIGIN_URL = env('ORIGIN_URL').replace(/\/+$/, '');
const EDGE_URL = env('EDGE_URL').replace(/\/+$/, '');
const MARKETER_TOKEN = env('MARKETER_TOKEN').trim();
const SCREENSHOT = resolve(env('SCREENSHOT'));
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');
const BROWSER_DIR = process.env.EDGEFRONT_BROWSER_DIR;

/** How many events go through the edge, and how long each wait may take. */
const SENT = 25;
const REFUSED_WITHIN_MS = 10_000;
const SIGNED_IN_WITHIN_MS = 15_000;
const COUNTERS_MOVE_WITHIN_MS = 45_000;
const WINDOW_CHANGE_WITHIN_MS = 15_000;
/** The whole run, so a hung browser fails the test instead of stalling it. */
const OVERALL_MS = 150_000;

// playwright-core is CommonJS: a require rooted in the cache directory finds it there (ES module
// resolution ignores NODE_PATH).
const require = createRequire(
  BROWSER_DIR ? join(resolve(BROWSER_DIR), 'package.json') : import.meta.url,
);
let chromium;
try {
  ({ chromium } = require('playwright-core'));
} catch (e) {
  console.error(
    `dashboard: cannot load playwright-core (${e.message}); run tests/browser/ensure.sh and set ` +
      'EDGEFRONT_BROWSER_DIR to the directory it prints',
  );
  process.exit(2);
}

const started = Date.now();
const secs = (ms) => `${(ms / 1000).toFixed(1)} s`;
const log = (msg) => console.log(`dashboard [${secs(Date.now() - started)}] ${msg}`);

/** The counter `name` on the page: its data-value as a number, or null when absent. */
async function metric(page, name) {
  const raw = await page
    .locator(`#panels [data-metric="${name}"]`)
    .first()
    .getAttribute('data-value', { timeout: 1_000 })
    .catch(() => null);
  if (raw === null) return null;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n)) {
    fail(`[data-metric="${name}"] has a data-value that is not a number: ${JSON.stringify(raw)}`);
  }
  return n;
}

/** Node's fetch, failing with the URL and the cause (e.g. ECONNREFUSED) rather than "fetch failed". */
async function request(url, init) {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
  } catch (e) {
    fail(`${init?.method ?? 'GET'} ${url}: ${e.cause?.message ?? e.message}`);
  }
}

async function metricCount(page) {
  return page.locator('[data-metric]').count();
}

async function statusText(page) {
  return (await page.locator('#status').first().textContent({ timeout: 1_000 }).catch(() => null)) ?? '';
}

/** Submits the sign-in form with `token` the way a person does: type it, press the button. */
async function signIn(page, token) {
  const input = page.locator('form#sign-in input#token');
  await input.fill('', { timeout: 5_000 });
  await input.pressSequentially(token, { delay: 0, timeout: 10_000 });
  const button = page
    .locator('form#sign-in :is(button:not([type]), button[type="submit"], input[type="submit"])')
    .first();
  if ((await button.count()) > 0) {
    await button.click({ timeout: 5_000 });
  } else {
    await input.press('Enter');
  }
}

/** Waits until the page's own refreshes show `events` ≥ minEvents and `product_views` ≥ minViews. */
async function waitForCounters(page, minEvents, minViews, timeout) {
  await page.waitForFunction(
    ([e, p]) => {
      const value = (name) => {
        const el = document.querySelector(`#panels [data-metric="${name}"]`);
        return el ? Number(el.getAttribute('data-value')) : NaN;
      };
      return value('events') >= e && value('product_views') >= p;
    },
    [minEvents, minViews],
    { timeout, polling: 200 },
  );
}

async function run(page, browserLog) {
  // a. The panels API refuses a request without a token, as a problem document.
  {
    const resp = await request(`${ORIGIN_URL}/v1/dashboard/panels?window=15m`);
    const type = resp.headers.get('content-type') ?? '';
    await resp.arrayBuffer();
    if (resp.status !== 401) fail(`GET /v1/dashboard/panels without a token answered ${resp.status}, not 401`);
    if (!type.toLowerCase().startsWith('application/problem+json')) {
      fail(`GET /v1/dashboard/panels without a token answered content-type ${JSON.stringify(type)}, not application/problem+json`);
    }
    log('panels API without a token: 401 application/problem+json');
  }

  // b. The page itself carries no data.
  {
    const resp = await page.goto(`${ORIGIN_URL}/dashboard`, { waitUntil: 'load', timeout: 15_000 });
    if (!resp) fail('GET /dashboard gave the browser no response');
    if (resp.status() !== 200) fail(`GET /dashboard answered ${resp.status()}, not 200`);
    const n = await metricCount(page);
    if (n !== 0) fail(`before sign-in the page has ${n} [data-metric] elements, expected none`);
    log(`GET /dashboard: 200, no [data-metric] before sign-in; #status ${JSON.stringify((await statusText(page)).trim())}`);
  }

  // c. A wrong token is refused and shows nothing.
  {
    const t0 = Date.now();
    await signIn(page, `${MARKETER_TOKEN}x`);
    await page
      .waitForFunction(
        () => /refused/i.test(document.querySelector('#status')?.textContent ?? ''),
        null,
        { timeout: REFUSED_WITHIN_MS, polling: 100 },
      )
      .catch(async () =>
        fail(`after a wrong token #status says ${JSON.stringify((await statusText(page)).trim())} ` +
          `within ${secs(REFUSED_WITHIN_MS)}, expected it to contain "refused"`),
      );
    const n = await metricCount(page);
    if (n !== 0) fail(`after a wrong token the page has ${n} [data-metric] elements, expected none`);
    log(`wrong token: #status ${JSON.stringify((await statusText(page)).trim())} after ${secs(Date.now() - t0)}, no [data-metric]`);
  }

  // d. The marketer's token shows the counters.
  let v0;
  let p0;
  {
    const t0 = Date.now();
    await signIn(page, MARKETER_TOKEN);
    await page
      .locator('#panels [data-metric="events"]')
      .first()
      .waitFor({ state: 'attached', timeout: SIGNED_IN_WITHIN_MS })
      .catch(async () =>
        fail(`no [data-metric="events"] in #panels within ${secs(SIGNED_IN_WITHIN_MS)} of signing in ` +
          `(#status ${JSON.stringify((await statusText(page)).trim())})`),
      );
    v0 = await metric(page, 'events');
    p0 = await metric(page, 'product_views');
    if (v0 === null) fail('[data-metric="events"] disappeared right after it appeared');
    if (p0 === null) fail('signed in, #panels shows events but no [data-metric="product_views"]');
    const names = await page
      .locator('#panels [data-metric]')
      .evaluateAll((els) => els.map((el) => `${el.getAttribute('data-metric')}=${el.getAttribute('data-value')}`));
    log(`signed in after ${secs(Date.now() - t0)}: #status ${JSON.stringify((await statusText(page)).trim())}; ${names.join(' ')}`);
  }

  // e. Shoppers' events, through the edge.
  let sentAt;
  {
    const listing = await request(`${EDGE_URL}/v1/products?limit=3`);
    if (!listing.ok) fail(`GET ${EDGE_URL}/v1/products?limit=3 answered ${listing.status}`);
    const items = (await listing.json()).items ?? [];
    const ids = items.map((p) => p.id).filter((id) => typeof id === 'string');
    if (ids.length === 0) fail(`the edge lists no products: ${JSON.stringify(items).slice(0, 200)}`);
    const run = randomUUID().slice(0, 8);
    // No timestamp: the edge stamps received time, so every event falls in the 15-minute window.
    const batch = Array.from({ length: SENT }, (_, i) => ({
      type: 'track',
      event: 'Product Viewed',
      anonymousId: `dashboard-${run}-${i}`,
      messageId: `dashboard-${run}-msg-${i}`,
      context: { userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/148.0 edgefront-dashboard-test' },
      properties: { product_id: ids[i % ids.length], currency: 'EUR', price: 19.99, quantity: 1 },
    }));
    const resp = await request(`${EDGE_URL}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ batch }),
    });
    const text = await resp.text();
    if (!resp.ok) fail(`POST ${EDGE_URL}/v1/events answered ${resp.status}: ${text.slice(0, 300)}`);
    let answer = {};
    try {
      answer = JSON.parse(text);
    } catch {
      // the status is the contract; the body is only reported
    }
    if (answer.accepted !== undefined && answer.accepted !== SENT) {
      fail(`the edge accepted ${answer.accepted} of ${SENT} events: ${text.slice(0, 300)}`);
    }
    sentAt = Date.now();
    log(`sent ${SENT} "Product Viewed" events for ${ids.join(', ')} through the edge: ${resp.status} ${text.slice(0, 120)}`);
  }

  // f. The open page's own refreshes show them (no reload).
  let moved;
  {
    await waitForCounters(page, v0 + SENT, p0 + SENT, COUNTERS_MOVE_WITHIN_MS).catch(async () =>
      fail(`the counters did not move within ${secs(COUNTERS_MOVE_WITHIN_MS)} of sending: events ` +
        `${await metric(page, 'events')} (want ≥ ${v0 + SENT}), product_views ` +
        `${await metric(page, 'product_views')} (want ≥ ${p0 + SENT}); #status ` +
        `${JSON.stringify((await statusText(page)).trim())}`),
    );
    moved = Date.now() - sentAt;
    log(`counters moved ${secs(moved)} after sending: events ${v0} → ${await metric(page, 'events')}, ` +
      `product_views ${p0} → ${await metric(page, 'product_views')}; #status ` +
      `${JSON.stringify((await statusText(page)).trim())}`);
  }

  // g. Another window: the page asks for it and shows it.
  let v1h;
  {
    const t0 = Date.now();
    // Mark what is shown now, so the wait below sees #panels replaced after the change.
    await page.evaluate(() =>
      document.querySelectorAll('#panels [data-metric]').forEach((el) => el.setAttribute('data-before-change', '')),
    );
    const asked = page.waitForResponse(
      (r) => {
        const u = new URL(r.url());
        return u.pathname.endsWith('/v1/dashboard/panels') && u.searchParams.get('window') === '1h';
      },
      { timeout: WINDOW_CHANGE_WITHIN_MS },
    );
    asked.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
    await page.locator('select#window').selectOption('1h', { timeout: 5_000 });
    const resp = await asked.catch(() =>
      fail(`no request for /v1/dashboard/panels?window=1h within ${secs(WINDOW_CHANGE_WITHIN_MS)} of choosing 1h`),
    );
    if (resp.status() !== 200) fail(`GET /v1/dashboard/panels?window=1h answered ${resp.status()}`);
    const auth = (await resp.request().allHeaders()).authorization ?? '';
    if (auth !== `Bearer ${MARKETER_TOKEN}`) fail('the page asked for the 1h panels without its bearer token');
    const fragment = await resp.text();
    const m = /data-metric="events"[^>]*?data-value="([^"]*)"|data-value="([^"]*)"[^>]*?data-metric="events"/.exec(fragment);
    const inFragment = m ? Number(m[1] ?? m[2]) : NaN;
    if (!(inFragment >= v0 + SENT)) {
      fail(`the 1h panels fragment shows events=${m ? m[1] ?? m[2] : '(none)'}, expected ≥ ${v0 + SENT}`);
    }
    await page
      .waitForFunction(
        (min) => {
          const el = document.querySelector('#panels [data-metric="events"]');
          return el && !el.hasAttribute('data-before-change') && Number(el.getAttribute('data-value')) >= min;
        },
        v0 + SENT,
        { timeout: WINDOW_CHANGE_WITHIN_MS, polling: 100 },
      )
      .catch(async () =>
        fail(`after choosing 1h #panels was not redrawn with events ≥ ${v0 + SENT} within ` +
          `${secs(WINDOW_CHANGE_WITHIN_MS)} (shows ${await metric(page, 'events')})`),
      );
    v1h = await metric(page, 'events');
    log(`window 1h: asked with the bearer token, redrawn after ${secs(Date.now() - t0)}, events ${v1h}`);
  }

  // h. Charts.
  {
    const charts = await page
      .locator('#panels svg[data-chart]')
      .evaluateAll((els) => els.map((el) => el.getAttribute('data-chart')));
    if (charts.length === 0) fail('no svg[data-chart] inside #panels');
    log(`charts: ${charts.join(', ')}`);
  }

  // i. The picture.
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 15_000 });
  log(`screenshot: ${SCREENSHOT}`);

  if (browserLog.length > 0) log(`in the browser (expected: the wrong token's 401):\n  ${browserLog.join('\n  ')}`);
  console.log(
    `dashboard: OK — events ${v0} → ≥ ${v0 + SENT} and product_views ${p0} → ≥ ${p0 + SENT} ` +
      `on the open page ${secs(moved)} after sending ${SENT} events through the edge; 1h window ` +
      `events ${v1h}; total ${secs(Date.now() - started)}`,
  );
}

async function main() {
  const watchdog = setTimeout(() => {
    console.error(`dashboard: FAIL: the run took longer than ${secs(OVERALL_MS)}`);
    process.exit(1);
  }, OVERALL_MS);
  watchdog.unref();

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    // playwright-core adds --headless, --no-sandbox (chromiumSandbox: false) and a fresh temporary
    // --user-data-dir of its own; without the background-networking switches Chromium can hang
    // on refused connections here.
    args: [
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  log(`${CHROMIUM} ${browser.version()} (playwright-core ${require('playwright-core/package.json').version})`);
  const browserLog = [];
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.on('pageerror', (e) => browserLog.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // Failed loads are reported with their URL below instead.
      if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
        browserLog.push(`console: ${m.text()}`);
      }
    });
    page.on('response', (r) => {
      if (r.status() >= 400) browserLog.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
    });
    page.on('requestfailed', (r) => browserLog.push(`failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));
    await run(page, browserLog);
  } catch (e) {
    const message = e instanceof Expectation ? e.message : e.stack ?? String(e);
    console.error(`dashboard: FAIL: ${message}`);
    if (browserLog.length > 0) console.error(`browser errors:\n  ${browserLog.join('\n  ')}`);
    if (page) {
      const panels = await page.locator('#panels').first().innerHTML({ timeout: 1_000 }).catch(() => '(no #panels)');
      console.error(`#status: ${JSON.stringify((await statusText(page)).trim())}; #panels: ${panels.slice(0, 600)}`);
      try {
        mkdirSync(dirname(SCREENSHOT), { recursive: true });
        await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: 10_000 });
        console.error(`screenshot of the failure: ${SCREENSHOT}`);
      } catch {
        // the failure above is what matters
      }
    }
    process.exitCode = 1;
  } finally {
    await browser.close().catch(() => {});
  }
}

await main();
