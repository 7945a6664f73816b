// Browser test of the Canaries page, run by web/canary_browser_test.go against a real hub.
// Environment: HUB_URL, HUB_API_KEY, CANARY (a canary that has one failing interval),
// ARTIFACTS (screenshot dir), CHROMIUM (default /usr/bin/chromium).
// Protocol on stdout: "READY" when the canary's page shows its first interval (the Go test
// then publishes the readings that close a second one), "LIVE_MS <n>" when the second interval
// is on the page, "DONE". Any failure exits non-zero with the reason on stderr.
import { env, check, run } from './harness.mjs';

const url = env('HUB_URL');
const key = env('HUB_API_KEY');
const name = env('CANARY');

await run('19-canary-failure', async ({ page, shot }) => {
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#api-key', { timeout: 10000 });
  await page.fill('#api-key', key);
  await page.click('button[type=submit]');
  await page.waitForSelector('nav a[href="#/canaries"]', { timeout: 10000 });
  await page.click('nav a[href="#/canaries"]');

  // The list: the canary with its failing verdict and score.
  const row = page.locator(`#canary-table tr[data-canary="${name}"]`);
  await row.waitFor({ timeout: 10000 });
  await page.waitForSelector(`#canary-table tr[data-canary="${name}"] .verdict-cell [data-verdict="fail"]`, { timeout: 10000 });
  const score = await row.locator('td.score').innerText();
  check(score === '0.5', `score reads ${JSON.stringify(score)}, want 0.5`);
  await shot('10-canaries');

  // The detail: latency classed high (and worse) in the interval table, a chart per metric.
  await row.locator('a').click();
  await page.waitForSelector('#interval-table td.cls[data-field="latency"]', { timeout: 10000 });
  const cls = await page.locator('#interval-table td.cls[data-field="latency"]').first().innerText();
  check(cls === 'high', `latency classed ${JSON.stringify(cls)}, want high`);
  check(await page.locator('#interval-table td.cls.worse[data-field="latency"]').count() === 1, 'latency not marked worse');
  await page.waitForSelector('.chart[data-field="latency"] canvas', { timeout: 10000 });
  const rows = await page.locator('#interval-table tbody tr').count();
  check(rows === 1, `${rows} intervals shown, want 1`);

  // Live: the next interval appears without a reload.
  await page.waitForSelector('body[data-live="live"]', { timeout: 10000 });
  const t0 = Date.now();
  console.log('READY');
  await page.waitForFunction(() => document.querySelectorAll('#interval-table tbody tr').length === 2, null, { timeout: 15000 });
  console.log(`LIVE_MS ${Date.now() - t0}`);
  await page.waitForTimeout(300);
  await shot('11-canary');
});
