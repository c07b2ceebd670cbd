// Drives the OHIF viewer in Debian's Chromium (playwright-core) for tests/e2e/test_ohif.py.
//
// Reads one JSON request on standard input:
//   { chromium, viewerUrl, archiveOrigin, artifacts, stepMs, budgetMs,
//     blank: { minStddev, minLevels }, probes: { name: [x, y] },
//     studies: [{ key, studyInstanceUID, shownName }],
//     login: { providerOrigin, username, password } }       (login: only for a viewer with sign-in)
// opens the study list, then each study in the viewer, and prints one JSON line with what it
// saw: the study list (names found, rows), per study the viewport's pixel statistics (with the
// brightness at each probe, a point of the image given in [-1, 1] from its centre) and corner
// texts, every response of the archive (status, type, CORS header, whether the request carried
// a bearer token), every archive request that got none, console errors and uncaught
// exceptions, each tagged with its step ("study-list" or a study key). With `login`, the
// viewer sends the browser to the OpenID Provider first: the driver signs in on its login page
// and reports where it went ("signIn"). Progress goes to standard error. This script only
// observes and takes the screenshots (into `artifacts`); the Python test asserts.
//
// Each step waits at most `stepMs`; once `budgetMs` is spent the remaining steps are skipped,
// so that a broken archive fails the test in minutes with a report rather than by a timeout.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const request = JSON.parse(await readStdin());
const { viewerUrl, archiveOrigin, artifacts, stepMs, blank, probes } = request;
const budgetEnd = Date.now() + request.budgetMs;
mkdirSync(artifacts, { recursive: true });
const log = (...parts) => console.error(new Date().toISOString(), ...parts);
const isArchive = (url) => url.startsWith(`${archiveOrigin}/`);

const result = {
  webgl: null, // the WebGL renderer the viewer gets (SwiftShader here), or null
  signIn: null, // with `login`: { loginPage, returnedTo } or { error }
  bearerClaims: [], // iss, sub, aud, scope, client_id of each distinct bearer token sent
  studyList: null,
  studies: {},
  // every archive response: { step, method, url, status, contentType, allowOrigin, bearer }
  responses: [],
  failedRequests: [], // archive requests without a response: { step, method, url, error }
  consoleErrors: [],
  pageErrors: [],
};
let step = 'start';
const tokensSeen = new Set(); // bearer tokens already in result.bearerClaims

const browser = await chromium.launch({
  executablePath: request.chromium,
  headless: true,
  args: [
    // Playwright passes --headless and --no-sandbox itself too, and gives every launch a fresh
    // temporary profile, removed on close; listed here so the flags are all in one place.
    '--headless',
    '--no-sandbox', // runs as root in containers, where Chromium refuses its sandbox
    '--disable-gpu', // there is no GPU; WebGL goes through SwiftShader instead (below)
    '--disable-background-networking', // no update, safe-browsing or metrics traffic
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
    '--disable-quic', // loopback HTTP/1.1 only
    // cornerstone3D draws with WebGL. Without a GPU, Chromium offers WebGL only through
    // SwiftShader (software), which recent versions require to be enabled explicitly.
    '--use-angle=swiftshader',
    '--enable-unsafe-swiftshader',
  ],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(stepMs);
  watch(page);
  await runStep(page, 'study-list', () => studyList(page), (value) => (result.studyList = value));
  for (const study of request.studies) {
    await runStep(
      page,
      study.key,
      () => openStudy(page, study),
      (value) => (result.studies[study.key] = value),
    );
  }
  result.webgl = await page.evaluate(webglRenderer).catch(() => null);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);

// A step's value, or { error } when it threw or the time budget is spent.
async function runStep(page, name, body, keep) {
  step = name;
  if (Date.now() > budgetEnd) {
    keep({ error: `skipped: the driver's time budget (${request.budgetMs} ms) is spent` });
    return;
  }
  try {
    keep(await body());
  } catch (error) {
    log(`${name}: ${error}`);
    await page.screenshot({ path: join(artifacts, `${name}-error.png`) }).catch(() => {});
    keep({ error: String(error) });
  }
}

// --- what the page does -----------------------------------------------------------------------

function watch(page) {
  page.on('requestfailed', (req) => {
    if (isArchive(req.url())) {
      const error = req.failure()?.errorText ?? 'failed';
      result.failedRequests.push({ step, method: req.method(), url: req.url(), error });
    }
  });
  page.on('response', async (res) => {
    if (!isArchive(res.url())) return;
    const seenIn = step;
    const headers = res.headers();
    // Whether a token was sent, never the token itself (the report is kept as an artifact).
    const authorization = await res.request().headerValue('authorization').catch(() => null);
    noteClaims(authorization);
    result.responses.push({
      step: seenIn,
      method: res.request().method(),
      url: res.url(),
      status: res.status(),
      contentType: headers['content-type'] ?? null,
      allowOrigin: headers['access-control-allow-origin'] ?? null,
      bearer: /^Bearer \S+$/.test(authorization ?? ''),
    });
  });
  page.on('console', (message) => {
    if (message.type() === 'error') {
      // For a resource that failed to load, location() names it.
      result.consoleErrors.push({ step, text: message.text(), url: message.location()?.url });
    }
  });
  page.on('pageerror', (error) => result.pageErrors.push({ step, text: String(error) }));
}

// Which token the viewer sent: the claims that say who issued it, to whom, for what.
function noteClaims(authorization) {
  const token = /^Bearer (\S+)$/.exec(authorization ?? '')?.[1];
  if (!token || tokensSeen.has(token)) return;
  tokensSeen.add(token);
  try {
    const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString('utf8'));
    const { iss, sub, aud, scope, client_id: clientId } = claims;
    result.bearerClaims.push({ iss, sub, aud, scope, clientId });
  } catch {
    result.bearerClaims.push({ error: 'not a JWT' });
  }
}

// Wait until no archive request has been in flight for `quietMs` (at most `maxMs`), so that
// what the viewer fetches after the first image (the rest of the series) is seen too.
async function archiveSettled(page, quietMs = 1500, maxMs = 20000) {
  const pending = new Set();
  let lastChange = Date.now();
  const start = (req) => isArchive(req.url()) && pending.add(req) && (lastChange = Date.now());
  const end = (req) => pending.delete(req) && (lastChange = Date.now());
  page.on('request', start);
  page.on('requestfinished', end);
  page.on('requestfailed', end);
  const deadline = Date.now() + maxMs;
  while (Date.now() < deadline && (pending.size > 0 || Date.now() - lastChange < quietMs)) {
    await page.waitForTimeout(250);
  }
  page.off('request', start);
  page.off('requestfinished', end);
  page.off('requestfailed', end);
}

async function studyList(page) {
  log('study list');
  await page.goto(`${viewerUrl}/`);
  if (request.login) {
    result.signIn = await signIn(page, request.login).catch((error) => ({ error: String(error) }));
  }
  const deadline = Date.now() + stepMs;
  const found = [];
  for (const { shownName } of request.studies) {
    const remaining = Math.max(deadline - Date.now(), 1);
    try {
      await page.getByText(shownName, { exact: true }).first().waitFor({ timeout: remaining });
      found.push(shownName);
    } catch {
      log(`study list: ${shownName} not shown`);
    }
  }
  await archiveSettled(page);
  await page.screenshot({ path: join(artifacts, 'study-list.png'), fullPage: true });
  // One row per study, as cell texts; the first body row holds the search fields.
  const rows = await page.locator('tbody tr:not([data-filter-row])').evaluateAll((trs) =>
    trs.map((tr) => [...tr.cells].map((td) => td.innerText.trim())),
  );
  return { found, rows };
}

// The viewer has sent the browser to the provider: fill in its login page and wait until the
// viewer has the code exchanged (its /callback) and is back on its own page.
async function signIn(page, { providerOrigin, username, password }) {
  log('sign-in');
  await page.waitForURL((url) => url.href.startsWith(`${providerOrigin}/interaction/`));
  const loginPage = page.url().split('?')[0];
  await page.screenshot({ path: join(artifacts, 'sign-in.png') });
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(
    (url) => url.href.startsWith(`${viewerUrl}/`) && !url.pathname.startsWith('/callback'),
  );
  return { loginPage, returnedTo: page.url() };
}

async function openStudy(page, study) {
  log(`viewer: ${study.key}`);
  const url = `${viewerUrl}/viewer?StudyInstanceUIDs=${encodeURIComponent(study.studyInstanceUID)}`;
  await page.goto(url);
  const deadline = Date.now() + stepMs;
  let stats = null;
  while (Date.now() < deadline) {
    stats = await page.evaluate(viewportStatistics, probes).catch((e) => ({ error: String(e) }));
    if (stats.stddev >= blank.minStddev && stats.levels >= blank.minLevels) break;
    await page.waitForTimeout(500);
  }
  await archiveSettled(page);
  // The first visit starts a guided tour whose bubble covers the viewport: Escape ends it.
  await page.keyboard.press('Escape');
  await page.waitForTimeout(300);
  // Once everything arrived: the final picture, read again and kept.
  stats = await page.evaluate(viewportStatistics, probes).catch((e) => ({ error: String(e) }));
  await page.screenshot({ path: join(artifacts, `viewer-${study.key}.png`) });
  const canvas = page.locator('.cornerstone-canvas').first();
  if ((await canvas.count()) > 0) {
    await canvas.screenshot({ path: join(artifacts, `viewport-${study.key}.png`) });
  }
  // The viewport's corner texts: series description, image number of count, window.
  const overlay = (await page.locator('.viewport-overlay').allInnerTexts()).join(' ');
  log(`viewer: ${study.key}: ${JSON.stringify(stats)}`);
  return { url, stats, overlay: overlay.replace(/\s+/g, ' ').trim() };
}

// In the page: luminance statistics of the first viewport's canvas. cornerstone3D renders with
// WebGL off screen and copies each viewport's picture into a 2D canvas of class
// cornerstone-canvas, whose pixels can be read back. A square image is shown fitted to the
// viewport and centred, so a probe [x, y] of the image is at the centre plus x and y times
// half the canvas' smaller side; its brightness is the mean over 5 x 5 pixels.
function viewportStatistics(probes) {
  const canvas = document.querySelector('.cornerstone-canvas');
  if (!canvas) return { error: 'no viewport canvas' };
  const { width, height } = canvas;
  if (!width || !height) return { error: 'empty viewport canvas', width, height };
  const data = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  const histogram = new Array(256).fill(0);
  let sum = 0;
  let sumSquares = 0;
  for (let i = 0; i < data.length; i += 4) {
    const luma = Math.round(0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2]);
    histogram[luma] += 1;
    sum += luma;
    sumSquares += luma * luma;
  }
  const n = width * height;
  const mean = sum / n;
  const lumaAt = (px, py) =>
    0.299 * data[(py * width + px) * 4] +
    0.587 * data[(py * width + px) * 4 + 1] +
    0.114 * data[(py * width + px) * 4 + 2];
  const half = Math.min(width, height) / 2;
  const brightness = {};
  for (const [name, [x, y]] of Object.entries(probes)) {
    const cx = Math.round(width / 2 + x * half);
    const cy = Math.round(height / 2 + y * half);
    let total = 0;
    for (let dy = -2; dy <= 2; dy += 1) {
      for (let dx = -2; dx <= 2; dx += 1) total += lumaAt(cx + dx, cy + dy);
    }
    brightness[name] = Math.round(total / 25);
  }
  return {
    width,
    height,
    mean,
    stddev: Math.sqrt(Math.max(sumSquares / n - mean * mean, 0)),
    levels: histogram.filter((count) => count > 0).length,
    nonBlack: 1 - histogram[0] / n,
    probes: brightness,
  };
}

// In the page: which WebGL the viewer gets (diagnostics: SwiftShader, or none at all).
function webglRenderer() {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return null;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  return info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}
