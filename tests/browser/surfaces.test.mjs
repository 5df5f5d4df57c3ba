// Browser logins in headless Chromium, following the real redirects, against a real wxauth
// in dev mode (its mock stands in for WeChat's authorize and QR pages).
// tests/api/surfaces.rs starts the server and runs this file:
//   WXAUTH_URL      wxauth
//   CLIENT_PORT     the port of the web client this file serves (its /callback is the
//                   browser apps' redirect_uri)
//   MINI_APPID, OA_APPID, WEB_APPID, MOBILE_APPID   the four apps
//   CHROMIUM        the browser (default /usr/bin/chromium)
// The web client is the one docs/wechat-surfaces.md shows: PKCE in the page, the code
// traded by the client's own server.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import puppeteer from 'puppeteer-core';

const WXAUTH = process.env.WXAUTH_URL;
const PORT = Number(process.env.CLIENT_PORT);
const CLIENT = `http://127.0.0.1:${PORT}`;
const CALLBACK = `${CLIENT}/callback`;
const { MINI_APPID, OA_APPID, WEB_APPID, MOBILE_APPID } = process.env;

// The client's pages: a login page with one button per surface, and the callback page that
// checks the state and asks the client's server to trade the code.
const LOGIN_PAGE = `<!doctype html><meta charset="utf-8"><title>shop</title>
<button id="oa">公众号登录</button> <button id="web">网站扫码登录</button>
<script>
const b64url = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '');
async function start(appid, scope) {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier));
  const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
  sessionStorage.setItem('pkce', verifier);
  sessionStorage.setItem('state', state);
  location.href = '${WXAUTH}/v1/oauth/wechat/authorize?appid=' + appid
    + '&redirect_uri=' + encodeURIComponent('${CALLBACK}') + '&state=' + state
    + '&code_challenge=' + b64url(new Uint8Array(digest)) + '&code_challenge_method=S256&scope=' + scope;
}
document.getElementById('oa').onclick = () => start('${OA_APPID}', 'snsapi_userinfo');
document.getElementById('web').onclick = () => start('${WEB_APPID}', 'snsapi_login');
</script>`;

const CALLBACK_PAGE = `<!doctype html><meta charset="utf-8"><title>callback</title><pre id="out">…</pre>
<script>
(async () => {
  const params = new URLSearchParams(location.search);
  const out = document.getElementById('out');
  if (params.get('state') !== sessionStorage.getItem('state')) { out.textContent = 'state mismatch'; return; }
  if (params.get('error')) { out.textContent = 'error ' + params.get('error'); return; }
  const body = new URLSearchParams({ grant_type: 'authorization_code', code: params.get('code'),
    redirect_uri: '${CALLBACK}', code_verifier: sessionStorage.getItem('pkce') });
  const res = await fetch('/exchange', { method: 'POST', body });
  out.textContent = JSON.stringify({ status: res.status, body: await res.json() });
})();
</script>`;

let browser;
let server;
const seenUrls = [];

before(async () => {
  for (const [name, value] of Object.entries({ WXAUTH, PORT, OA_APPID, WEB_APPID, MOBILE_APPID, MINI_APPID })) {
    assert.ok(value, `${name} is not set`);
  }
  server = createServer(async (req, res) => {
    if (req.url === '/') return res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(LOGIN_PAGE);
    if (req.url.startsWith('/callback')) {
      return res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(CALLBACK_PAGE);
    }
    if (req.url === '/exchange' && req.method === 'POST') {
      let form = '';
      for await (const chunk of req) form += chunk;
      const answer = await fetch(`${WXAUTH}/v1/token`, {
        method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form,
      });
      return res.writeHead(answer.status, { 'content-type': 'application/json' }).end(await answer.text());
    }
    res.writeHead(404).end();
  });
  await new Promise((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

async function login(code, appid) {
  const res = await fetch(`${WXAUTH}/v1/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code, appid }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

// Clicks `button` on the client's login page (then `then`, on WeChat's page, if given)
// and answers what the callback page shows.
async function browserLogin(button, then) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  // Every hop of the redirect chains, not only where the page landed.
  page.on('request', (request) => { if (request.isNavigationRequest()) seenUrls.push(request.url()); });
  await page.goto(`${CLIENT}/`);
  await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(button)]);
  if (then) await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click(then)]);
  await page.waitForFunction(() => document.getElementById('out')?.textContent !== '…', { timeout: 10000 });
  const shown = await page.$eval('#out', (el) => el.textContent);
  await context.close();
  return shown.startsWith('{') ? JSON.parse(shown) : shown;
}

test('one person through the mini-program, official account, website and mobile app is one user', async () => {
  const mini = await login('union-dev', MINI_APPID);

  const oa = await browserLogin('#oa');
  assert.equal(oa.status, 200, JSON.stringify(oa));
  assert.equal(oa.body.user.id, mini.user.id);
  assert.ok(seenUrls.some((u) => u.startsWith(`${WXAUTH}/v1/oauth/wechat/authorize`)), seenUrls.join('\n'));

  const web = await browserLogin('#web', '#scanned');
  assert.equal(web.status, 200, JSON.stringify(web));
  assert.equal(web.body.user.id, mini.user.id);

  const mobile = await login('m1@union-dev', MOBILE_APPID);
  assert.equal(mobile.user.id, mini.user.id);

  const me = await (await fetch(`${WXAUTH}/v1/me`, { headers: { authorization: `Bearer ${web.body.access_token}` } })).json();
  const kinds = me.identities.map((i) => i.kind).sort();
  assert.deepEqual(kinds, ['miniprogram', 'mobile_app', 'official_account', 'website']);
  assert.ok(me.profile?.nickname, 'snsapi_userinfo kept no nickname');
});

test('the authorization code reaches the client only in its own redirect, never a token in a URL', () => {
  const toClient = seenUrls.filter((u) => u.startsWith(CALLBACK));
  assert.ok(toClient.length >= 2, seenUrls.join('\n'));
  for (const url of seenUrls) {
    assert.ok(!/access_token|refresh_token|rt_|eyJ/.test(url), `a token in a URL: ${url}`);
  }
  for (const url of toClient) assert.match(new URL(url).searchParams.get('code'), /^ac_/);
});

test('a browser that did not start the login is refused at the callback', async () => {
  // Start in one browser context, finish in another: the cookie is missing.
  const first = await browser.createBrowserContext();
  const page = await first.newPage();
  let callback;
  page.on('request', (r) => { if (r.url().startsWith(`${WXAUTH}/v1/oauth/wechat/callback`)) callback = r.url(); });
  await page.setRequestInterception(true);
  page.on('request', (r) => (r.url().startsWith(`${WXAUTH}/v1/oauth/wechat/callback`) ? r.abort() : r.continue()));
  await page.goto(`${CLIENT}/`);
  await page.click('#oa');
  for (let i = 0; i < 100 && !callback; i++) await new Promise((r) => setTimeout(r, 50));
  assert.ok(callback, 'the browser never reached the callback');
  await first.close();
  const second = await browser.createBrowserContext();
  const other = await second.newPage();
  const res = await other.goto(callback);
  assert.equal(res.status(), 400);
  const body = JSON.parse(await other.$eval('body', (el) => el.textContent));
  assert.equal(body.error, 'invalid_request');
  await second.close();
});
