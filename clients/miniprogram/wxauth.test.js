// Tests of wxauth.js against a real wxauth in dev mode, with a fake `wx` object: wx.login
// hands out codes from a list, wx.request is real HTTP, storage lives in memory.
// Run by `cargo test` (tests/api/clients.rs), which starts the servers and sets
// WXAUTH_URL (registration auto) and WXAUTH_BIND_URL (registration bind).
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient, WxauthError, STORAGE_KEYS } = require('./wxauth.js');

const BASE = process.env.WXAUTH_URL;
const BIND_BASE = process.env.WXAUTH_BIND_URL;
if (!BASE || !BIND_BASE) throw new Error('set WXAUTH_URL and WXAUTH_BIND_URL (cargo test does)');

let people = 0;

/** A fake `wx`: codes come from `codes`, then `<n>@<person>` (the dev mock's same person). */
function fakeWx(person, codes = []) {
  const storage = new Map();
  const calls = [];
  let n = 0;
  return {
    storage,
    calls,
    count: (path) => calls.filter((c) => c.url.endsWith(path)).length,
    login({ success }) {
      n += 1;
      const code = codes.length ? codes.shift() : `${n}@${person}`;
      setImmediate(() => success({ code, errMsg: 'login:ok' }));
    },
    request({ url, method = 'GET', data, header = {}, success, fail }) {
      calls.push({ url, method });
      const init = { method, headers: { 'content-type': 'application/json', ...header } };
      if (data !== undefined) init.body = JSON.stringify(data);
      fetch(url, init).then(async (res) => {
        const text = await res.text();
        let body = text;
        try { body = JSON.parse(text); } catch (_) { /* not JSON */ }
        success({ statusCode: res.status, data: body, header: Object.fromEntries(res.headers) });
      }, fail);
    },
    setStorageSync(key, value) { storage.set(key, value); },
    getStorageSync(key) { return storage.has(key) ? storage.get(key) : ''; },
    removeStorageSync(key) { storage.delete(key); },
  };
}

function person() {
  people += 1;
  return `js-${process.pid}-${people}`;
}

function me(auth) {
  return auth.request({ url: `${BASE}/v1/me` });
}

test('logs in with wx.login, stores both tokens and sends the bearer token', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: BASE, wx });
  const res = await me(auth);
  assert.equal(res.statusCode, 200);
  assert.ok(wx.storage.get(STORAGE_KEYS.access));
  assert.match(wx.storage.get(STORAGE_KEYS.refresh), /^rt_/);
  assert.equal(wx.count('/v1/login'), 1);
  assert.equal((await me(auth)).statusCode, 200);
  assert.equal(wx.count('/v1/login'), 1, 'logged in again although the token was good');
});

test('a 401 is answered by one refresh and one retry', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: BASE, wx });
  await auth.login();
  wx.storage.set(STORAGE_KEYS.access, 'not-a-valid-token');
  const res = await me(auth);
  assert.equal(res.statusCode, 200);
  assert.equal(wx.count('/v1/token/refresh'), 1);
  assert.equal(wx.count('/v1/login'), 1);
});

test('concurrent requests that all get a 401 cause one refresh', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: BASE, wx });
  await auth.login();
  wx.storage.set(STORAGE_KEYS.access, 'not-a-valid-token');
  const answers = await Promise.all(Array.from({ length: 8 }, () => me(auth)));
  assert.deepEqual(answers.map((r) => r.statusCode), Array(8).fill(200));
  assert.equal(wx.count('/v1/token/refresh'), 1);
});

test('an expired access token is refreshed before the request, not after a 401', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: BASE, wx });
  await auth.login();
  wx.storage.set(STORAGE_KEYS.accessExpiresAt, Date.now() - 1);
  assert.equal((await me(auth)).statusCode, 200);
  assert.equal(wx.count('/v1/token/refresh'), 1);
  assert.equal(wx.count('/v1/me'), 1, 'the request went out with the expired token first');
});

test('when the refresh token is revoked, the client logs in again silently', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: BASE, wx });
  const first = await auth.login();
  // Revoked elsewhere (logout-all on another device), while this device keeps its tokens.
  const revoked = await fetch(`${BASE}/v1/me/logout-all`, {
    method: 'POST', headers: { authorization: `Bearer ${first.access_token}` },
  });
  assert.equal(revoked.status, 204);
  wx.storage.set(STORAGE_KEYS.access, 'not-a-valid-token');
  const res = await me(auth);
  assert.equal(res.statusCode, 200);
  assert.equal(wx.count('/v1/token/refresh'), 1);
  assert.equal(wx.count('/v1/login'), 2);
  assert.notEqual(wx.storage.get(STORAGE_KEYS.refresh), first.refresh_token);
});

test('a code WeChat refuses is replaced by a new wx.login, once', async () => {
  const wx = fakeWx(person(), ['invalid']);
  const auth = createClient({ baseUrl: BASE, wx });
  await auth.login();
  assert.equal(wx.count('/v1/login'), 2);

  const stuck = fakeWx(person(), ['used', 'used', 'used']);
  const client = createClient({ baseUrl: BASE, wx: stuck });
  await assert.rejects(client.login(), (e) => e instanceof WxauthError && e.error === 'code_used');
  assert.equal(stuck.count('/v1/login'), 2, 'not exactly one retry');
});

test('not_bound is handed to the bind page with its ticket', async () => {
  const wx = fakeWx(person());
  let handed = null;
  const auth = createClient({ baseUrl: BIND_BASE, wx, onNotBound: (body) => { handed = body; } });
  await assert.rejects(auth.login(), (e) => e instanceof WxauthError && e.error === 'not_bound');
  assert.match(handed.bind_ticket, /^bt_/);
  assert.ok(!wx.storage.get(STORAGE_KEYS.access));
});

test('logout revokes the refresh token and forgets both tokens', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: BASE, wx });
  const body = await auth.login();
  await auth.logout();
  assert.equal(wx.storage.size, 0);
  const res = await fetch(`${BASE}/v1/token/refresh`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: body.refresh_token }),
  });
  assert.equal(res.status, 401);
});
