// The operator console in headless Chromium, against a real wxauth in dev mode.
// tests/api/console.rs starts the server, creates the admin tokens and runs this file:
//   WXAUTH_URL, WXAUTH_ADMIN_URL   the public and the admin listener
//   WXAUTH_WRITE_TOKEN, WXAUTH_READ_TOKEN
//   CHROMIUM                       the browser (default /usr/bin/chromium)
//   WXAUTH_SCREENSHOTS             a directory: save a screenshot of each page there
// Every page is checked with axe-core (no serious or critical violation), every request
// the browser makes is recorded (none may leave the admin origin), and so is every
// Content-Security-Policy violation (none may happen but the one provoked on purpose).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import puppeteer from 'puppeteer-core';

const PUBLIC = process.env.WXAUTH_URL;
const ADMIN = process.env.WXAUTH_ADMIN_URL;
const WRITE = process.env.WXAUTH_WRITE_TOKEN;
const READ = process.env.WXAUTH_READ_TOKEN;
const SHOTS = process.env.WXAUTH_SCREENSHOTS;
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const PERSON = `console-${Date.now().toString(36)}`;

let browser;
const requests = [];
const pageErrors = [];

before(async () => {
  for (const [name, value] of Object.entries({ PUBLIC, ADMIN, WRITE, READ })) assert.ok(value, `${name} is not set`);
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--lang=en-GB'],
  });
});

after(async () => {
  await browser?.close();
});

// A page in a fresh browser context (its own sessionStorage and localStorage), recording
// its requests and the CSP violations it sees.
async function newPage({ language = 'en-GB', width = 1280, height = 900, mobile = false } = {}) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  await page.setViewport({ width, height, isMobile: mobile, hasTouch: mobile });
  const cdp = await page.createCDPSession();
  const userAgent = await browser.userAgent();
  await cdp.send('Network.setUserAgentOverride', { userAgent, acceptLanguage: language });
  await page.evaluateOnNewDocument(() => {
    window.cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) => {
      window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  page.on('request', (request) => requests.push(request.url()));
  page.on('pageerror', (err) => pageErrors.push(err.message));
  return page;
}

// axe-core, evaluated through the DevTools protocol (which the page's CSP does not govern).
async function accessible(page, name) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  const serious = result.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const report = serious.map((v) => `${v.id} (${v.impact}): ${v.help}\n  ${v.nodes.map((n) => n.target.join(' ')).join('\n  ')}`);
  assert.deepEqual(report, [], `accessibility violations on ${name}`);
  const violations = await page.evaluate(() => window.cspViolations);
  assert.deepEqual(violations, [], `CSP violations on ${name}`);
}

async function screenshot(page, name) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function text(page, selector) {
  await page.waitForSelector(selector);
  return page.$eval(selector, (el) => el.textContent);
}

// Waits for the status line to say `expected` (after an action).
async function statusSays(page, expected) {
  await page.waitForFunction((want) => document.getElementById('status').textContent.includes(want), {}, expected);
}

// Waits until the page the address names is drawn (not the one before it, nor one still
// loading).
async function settled(page) {
  await page.waitForFunction(() => {
    const main = document.querySelector('main');
    return main.dataset.hash === location.hash && !main.hasAttribute('aria-busy');
  });
}

async function signIn(page, token) {
  await page.goto(`${ADMIN}/admin/`);
  await page.waitForSelector('#token');
  await page.type('#token', token);
  await page.click('button[type=submit]');
  await page.waitForSelector('#wechat-state');
}

async function call(method, path, body, bearer) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (bearer) headers.authorization = `Bearer ${bearer}`;
  const resp = await fetch(path.startsWith('http') ? path : `${PUBLIC}${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const raw = await resp.text();
  return { status: resp.status, body: raw ? JSON.parse(raw) : null };
}

function sid(accessToken) {
  return JSON.parse(Buffer.from(accessToken.split('.')[1], 'base64url').toString()).sid;
}

test('an operator finds a person by phone number, revokes a session, bans, unbans, reads the events, deletes and signs out', async () => {
  // The person: two logins (two sessions, as on two phones), then a verified phone number.
  const first = await call('POST', '/v1/login', { code: `1@${PERSON}` });
  assert.equal(first.status, 200, JSON.stringify(first.body));
  const second = await call('POST', '/v1/login', { code: `2@${PERSON}` });
  assert.equal(second.status, 200, JSON.stringify(second.body));
  const id = first.body.user.id;
  assert.equal(second.body.user.id, id);
  const phone = await call('POST', '/v1/me/phone', { code: 'console' }, first.body.access_token);
  assert.equal(phone.status, 200, JSON.stringify(phone.body));

  const page = await newPage();
  await page.goto(`${ADMIN}/admin/`);
  await page.waitForSelector('#token');
  await accessible(page, 'the sign-in page');
  await screenshot(page, 'sign-in');

  await page.type('#token', WRITE);
  await page.click('button[type=submit]');
  await page.waitForSelector('#wechat-state');
  assert.match(await text(page, '.who'), /write/);
  assert.equal(await text(page, '#wechat-state'), 'reachable');
  assert.ok(await page.$('svg.chart'), 'the overview has its charts');
  await accessible(page, 'the overview');
  await screenshot(page, 'overview');

  // Users: the phone number finds the person.
  await page.click('nav a[href="#/users"]');
  await settled(page);
  await page.waitForSelector('#q');
  await page.type('#q', phone.body.phone_number);
  await page.click('form[role=search] button[type=submit]');
  await page.waitForFunction(() => location.hash.includes('q='));
  await settled(page);
  const link = `a[href="#/users/${id}"]`;
  await page.waitForSelector(link);
  assert.equal(await page.$$eval('main tbody tr', (rows) => rows.length), 1, 'one user has that number');
  await accessible(page, 'the users page');
  await screenshot(page, 'users');

  // A user: both sessions; revoke the first, and its refresh token is refused.
  await page.click(link);
  await page.waitForFunction((want) => location.hash === want, {}, `#/users/${id}`);
  await settled(page);
  const [one, two] = [sid(first.body.access_token), sid(second.body.access_token)];
  await page.waitForSelector(`button[data-session="${one}"]`);
  assert.ok(await page.$(`button[data-session="${two}"]`), 'both sessions are listed');
  assert.match(await page.$eval('main', (m) => m.textContent), new RegExp(phone.body.phone_number.replace('+', '\\+')));
  await accessible(page, 'a user');
  await screenshot(page, 'user');
  await page.click(`button[data-session="${one}"]`);
  await statusSays(page, 'Session revoked.');
  await page.waitForFunction((s) => !document.querySelector(`button[data-session="${s}"]`), {}, one);
  const revoked = await call('POST', '/v1/token/refresh', { refresh_token: first.body.refresh_token });
  assert.equal(revoked.status, 401);
  assert.equal(revoked.body.error, 'invalid_grant');
  const kept = await call('POST', '/v1/token/refresh', { refresh_token: second.body.refresh_token });
  assert.equal(kept.status, 200, 'the other session still refreshes');

  // Ban: the next login is refused with user_banned; unban: it works again.
  await page.type('#ban-reason', 'browser test');
  await page.click('#ban');
  await statusSays(page, 'Banned; every session revoked.');
  assert.match(await text(page, '#ban-state'), /banned: browser test/);
  const banned = await call('POST', '/v1/login', { code: `3@${PERSON}` });
  assert.equal(banned.status, 403);
  assert.equal(banned.body.error, 'user_banned');
  assert.equal(await page.$('button[data-session]'), null, 'the ban revoked every session');
  await page.click('#unban');
  await statusSays(page, 'Unbanned.');
  assert.equal(await text(page, '#ban-state'), 'Not banned');
  const back = await call('POST', '/v1/login', { code: `4@${PERSON}` });
  assert.equal(back.status, 200, JSON.stringify(back.body));

  // Events: the user's, then only the bans.
  await page.click(`a[href="#/events?user=${id}"]`);
  await page.waitForFunction(() => location.hash.startsWith('#/events'));
  await settled(page);
  await page.waitForSelector('#kind');
  await page.waitForFunction(() => document.querySelectorAll('main tbody tr').length > 0);
  const kinds = await page.$$eval('main tbody tr td:nth-child(2)', (cells) => cells.map((c) => c.textContent));
  for (const kind of ['login', 'phone_verified', 'session_revoked', 'ban', 'unban']) {
    assert.ok(kinds.includes(kind), `a ${kind} event among ${kinds}`);
  }
  await accessible(page, 'the events page');
  await screenshot(page, 'events');
  await page.select('#kind', 'ban');
  await page.click('main form button[type=submit]');
  await page.waitForFunction(() => location.hash.includes('kind=ban'));
  await settled(page);
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll('main tbody tr td:nth-child(2)')];
    return cells.length > 0 && cells.every((c) => c.textContent === 'ban');
  });
  assert.equal(await page.$$eval('main tbody tr', (rows) => rows.length), 1);

  // Delete: the typed id must match; then the person is gone.
  await page.goto(`${ADMIN}/admin/#/users/${id}`);
  await page.waitForSelector('#confirm-id');
  await page.type('#confirm-id', 'not-the-id');
  await page.click('#delete');
  await statusSays(page, 'The user id typed does not match.');
  assert.equal((await call('GET', `${ADMIN}/admin/v1/users/${id}`, undefined, WRITE)).status, 200, 'a mismatch deletes nothing');
  await page.click('#confirm-id', { count: 3 });
  await page.type('#confirm-id', id);
  await page.click('#delete');
  await statusSays(page, `Deleted user ${id}`);
  await settled(page);
  await page.waitForSelector('#q');
  assert.equal((await call('GET', `${ADMIN}/admin/v1/users/${id}`, undefined, WRITE)).status, 404);
  await page.type('#q', phone.body.phone_number);
  await page.click('form[role=search] button[type=submit]');
  await page.waitForFunction(() => location.hash.includes('q='));
  await settled(page);
  assert.equal(await text(page, 'main p.muted'), 'No user matches.');
  const gone = await call('POST', '/v1/token/refresh', { refresh_token: back.body.refresh_token });
  assert.equal(gone.status, 401);

  // Sign out: the token leaves the tab.
  await page.click('#sign-out');
  await page.waitForSelector('#token');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.goto(`${ADMIN}/admin/#/users`);
  await page.reload();
  await page.waitForSelector('main[data-page="sign-in"]');
  assert.equal(await page.$('#q'), null, 'a signed-out tab shows a page');
  await page.close();
});

test('a read token sees everything and no write action, and the API refuses its writes', async () => {
  const login = await call('POST', '/v1/login', { code: `reader-${PERSON}` });
  assert.equal(login.status, 200);
  const id = login.body.user.id;
  const page = await newPage();
  await signIn(page, READ);
  assert.match(await text(page, '.who'), /read only/);
  await page.goto(`${ADMIN}/admin/#/users/${id}`);
  await page.waitForSelector(`main[data-page="/users/${id}"]:not([aria-busy])`);
  await page.waitForFunction((s) => document.querySelector('main').textContent.includes(s), {}, login.body.user.openid);
  for (const selector of ['#ban', '#unban', '#set-roles', '#delete', '#revoke-all', 'button[data-session]']) {
    assert.equal(await page.$(selector), null, `a read token sees ${selector}`);
  }
  await accessible(page, 'a user, read only');
  const refused = await page.evaluate(async (path) => {
    const token = sessionStorage.getItem('wxauth-admin-token');
    const resp = await fetch(path, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{"reason":"x"}' });
    return [resp.status, (await resp.json()).error];
  }, `/admin/v1/users/${id}/ban`);
  assert.deepEqual(refused, [403, 'insufficient_scope']);
  await page.close();
});

test('the console speaks Chinese to a Chinese browser, and switches', async () => {
  const page = await newPage({ language: 'zh-CN,zh;q=0.9' });
  await page.goto(`${ADMIN}/admin/`);
  assert.equal(await text(page, 'main h1'), '登录 wxauth 控制台');
  assert.equal(await page.evaluate(() => document.documentElement.lang), 'zh-CN');
  await accessible(page, 'the sign-in page in Chinese');
  await page.type('#token', READ);
  await page.click('button[type=submit]');
  await page.waitForSelector('#wechat-state');
  assert.equal(await text(page, 'main h1'), '概览');
  await page.select('#language', 'en');
  await page.waitForFunction(() => document.querySelector('main h1')?.textContent === 'Overview');
  await page.reload();
  await page.waitForFunction(() => document.querySelector('main h1')?.textContent === 'Overview');
  await page.close();
});

test('on a phone the pages fit the screen', async () => {
  const login = await call('POST', '/v1/login', { code: `phone-${PERSON}` });
  const page = await newPage({ width: 390, height: 844, mobile: true });
  await signIn(page, WRITE);
  for (const hash of ['#/users', `#/users/${login.body.user.id}`, '#/events', '#/']) {
    await page.goto(`${ADMIN}/admin/${hash}`);
    await page.waitForSelector(`main[data-page="${hash.slice(1)}"]:not([aria-busy])`);
    const [scroll, inner] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scroll <= inner, `${hash} is ${scroll}px wide on a ${inner}px screen`);
    if (hash.startsWith('#/users/')) await screenshot(page, 'user-phone');
  }
  await page.close();
});

test('users and events page forward and back, also from a link opened afresh', async () => {
  for (let i = 0; i < 21; i += 1) {
    assert.equal((await call('POST', '/v1/login', { code: `page-${i}-${PERSON}` })).status, 200);
  }
  const page = await newPage();
  await signIn(page, READ);
  const firstRow = () => page.$eval('main tbody tr td', (cell) => cell.textContent);
  await page.goto(`${ADMIN}/admin/#/users`);
  await page.waitForSelector('main[data-page="/users"]:not([aria-busy]) #next');
  assert.equal(await page.$('#previous'), null, 'the first page has no previous page');
  const first = await firstRow();
  await page.click('#next');
  await page.waitForFunction(() => location.hash.includes('cursor='));
  await settled(page);
  const second = await firstRow();
  assert.notEqual(second, first);
  // The second page's link, opened in a new tab: Previous still leads to the first page.
  const link = await page.evaluate(() => location.href);
  const fresh = await newPage();
  await signIn(fresh, READ);
  await fresh.goto(link);
  await settled(fresh);
  await fresh.waitForSelector('#previous');
  await fresh.waitForFunction((want) => document.querySelector('main tbody tr td')?.textContent === want, {}, second);
  await fresh.click('#previous');
  await fresh.waitForFunction(() => !location.hash.includes('cursor='));
  await settled(fresh);
  assert.equal(await fresh.$eval('main tbody tr td', (cell) => cell.textContent), first);
  await fresh.close();
  await page.close();
});

test('the page admits no script but its own, and nothing left the admin origin', async () => {
  const page = await newPage();
  await page.goto(`${ADMIN}/admin/`);
  await page.waitForSelector('#token');
  // An injected inline script must be refused by the CSP (which the other tests see none of).
  const ran = await page.evaluate(() => {
    const script = document.createElement('script');
    script.textContent = 'window.injected = true;';
    document.body.append(script);
    return window.injected === true;
  });
  assert.equal(ran, false, 'an inline script ran');
  await page.waitForFunction(() => window.cspViolations.length > 0);
  await page.close();
  const origin = new URL(ADMIN).origin;
  const elsewhere = requests.filter((url) => !url.startsWith('data:') && new URL(url, origin).origin !== origin);
  assert.deepEqual(elsewhere, [], 'requests that left the admin origin');
  assert.deepEqual(pageErrors, [], 'uncaught errors in the console');
  assert.ok(requests.length > 20, `only ${requests.length} requests were recorded`);
});
