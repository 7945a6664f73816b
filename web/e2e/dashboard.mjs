// Browser test of the dashboard, run by web/browser_test.go against a real hub.
// Environment: HUB_URL, HUB_API_KEY, DEVICE_ID, DEVICE_NAME, ARTIFACTS (screenshot dir),
// CHROMIUM (default /usr/bin/chromium).
// Protocol on stdout: "READY" when the device page's live stream is open (the Go test then
// publishes temperature=42.5 over MQTT), "CHART_MS <n>" when the value is on the chart, "DONE".
// Any failure exits non-zero with the reason on stderr.
import { env, check, run } from './harness.mjs';

const url = env('HUB_URL');
const key = env('HUB_API_KEY');
const id = env('DEVICE_ID');
const name = env('DEVICE_NAME', id);
const want = Number(env('WANT_VALUE', '42.5'));

await run('99-failure', async ({ page, shot }) => {
  // Sign in.
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('#api-key', { timeout: 10000 });
  await shot('01-login');
  await page.fill('#api-key', 'wrong-key');
  await page.click('button[type=submit]');
  await page.waitForSelector('.form-error:not(:empty)', { timeout: 5000 });
  await page.fill('#api-key', key);
  await page.click('button[type=submit]');

  // The device created over the API is in the list.
  const row = page.locator(`#device-table tr[data-device="${id}"]`);
  await row.waitFor({ timeout: 10000 });
  const text = await row.innerText();
  check(text.includes(name), `device row reads ${JSON.stringify(text)}, want the name ${name}`);

  // Search narrows the list.
  await page.fill('input.search', id);
  await page.waitForFunction((n) => document.querySelectorAll('#device-table tbody tr').length === n, 1, { timeout: 5000 });
  await page.fill('input.search', '');
  await page.waitForFunction(() => document.querySelectorAll('#device-table tbody tr').length > 1, null, { timeout: 5000 });

  // The map shows the device: a marker inside the visible map.
  const marker = page.locator(`#device-map path.device-marker[data-device="${id}"]`);
  await marker.waitFor({ timeout: 10000 });
  const mb = await marker.boundingBox();
  const map = await page.locator('#device-map').boundingBox();
  check(mb && map && mb.x >= map.x && mb.y >= map.y && mb.x + mb.width <= map.x + map.width && mb.y + mb.height <= map.y + map.height,
    `marker ${JSON.stringify(mb)} is not inside the map ${JSON.stringify(map)}`);
  await shot('02-devices-first');

  // The device page: the live stream opens, then a value published over MQTT reaches the chart.
  await row.click();
  await page.waitForSelector('body[data-live="live"]', { timeout: 10000 });
  await page.waitForSelector('.chart-card[data-field="temperature"]', { timeout: 10000 }); // backfilled history
  const t0 = Date.now();
  console.log('READY');
  await page.waitForFunction((v) => {
    const c = window.__charts && window.__charts.get('temperature');
    const el = document.querySelector('.latest[data-field="temperature"]');
    return c && c.values().includes(v) && el && Number(el.textContent) === v;
  }, want, { timeout: 10000, polling: 'raf' });
  console.log(`CHART_MS ${Date.now() - t0}`);
  await page.waitForTimeout(1200); // the flash and a redraw, for the screenshot
  await shot('03-device');

  // Back on the list, the map colours the device by its status: it has just sent data.
  await page.evaluate(() => { location.hash = '#/devices'; });
  await marker.waitFor({ timeout: 10000 });
  await page.waitForFunction((sel) => {
    const m = document.querySelector(sel);
    return m && /online|active/.test(m.getAttribute('data-status')) && m.getAttribute('fill') === '#16a34a';
  }, `#device-map path.device-marker[data-device="${id}"]`, { timeout: 10000 });
  await page.waitForTimeout(400); // let the map finish fitting, for the screenshot
  await shot('02-devices');

  // Other pages render (with a "not available" state where the hub lacks the endpoint).
  await page.goto(`${url}/#/rules`);
  await page.waitForSelector('.card .notice, .card table', { timeout: 10000 });
  await shot('04-rules');
  await page.goto(`${url}/#/simulations`);
  await page.waitForSelector('.card .notice, .card .jobs', { timeout: 10000 });
  await shot('05-simulations');
});
