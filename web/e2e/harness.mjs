// What every browser test script shares: environment, a headless Debian chromium page that
// records console errors, screenshots, and the READY/DONE/FAIL protocol the Go tests read.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

export const env = (k, d) => process.env[k] ?? d;

export function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// run opens a page, calls body({ page, shot }), and reports DONE, or FAIL with a screenshot
// named failureShot; console errors other than expected HTTP refusals fail the run.
export async function run(failureShot, body) {
  const shots = env('ARTIFACTS', '.artifacts');
  mkdirSync(shots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: env('CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-dev-shm-usage'],
  });
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  const shot = (n) => page.screenshot({ path: `${shots}/${n}.png`, fullPage: true });
  try {
    await body({ page, shot });
    const bad = consoleErrors.filter((e) => !/status of 40[145]|status of 501/.test(e));
    check(bad.length === 0, `console errors: ${bad.join(' | ')}`);
    console.log('DONE');
  } catch (e) {
    await shot(failureShot).catch(() => {});
    console.error(`FAIL ${e.message}`);
    if (consoleErrors.length) console.error(`console: ${consoleErrors.join(' | ')}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
