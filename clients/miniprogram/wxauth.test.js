// Tests of wxauth.js against a real wxauth in dev mode, with a fake `wx` object: wx.login
// hands out codes from a list, wx.request is real HTTP, storage lives in memory.
// Run by `cargo test` (tests/api/clients.rs), which starts the servers and sets
// WXAUTH_URL (registration auto), WXAUTH_BIND_URL (registration bind) and WXAUTH_PHONE_URL
// (registration phone); on the bind and phone servers the account `js-phone` has the number
// WXAUTH_ACCOUNT_PHONE, its user WXAUTH_BIND_ACCOUNT_USER and WXAUTH_PHONE_ACCOUNT_USER.
// The dev mock verifies an 11-digit phone code as that number.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const { createClient, WxauthError, PhoneDeclinedError, STORAGE_KEYS } = require('./wxauth.js');

const BASE = process.env.WXAUTH_URL;
const BIND_BASE = process.env.WXAUTH_BIND_URL;
const PHONE_BASE = process.env.WXAUTH_PHONE_URL;
const ACCOUNT_PHONE = process.env.WXAUTH_ACCOUNT_PHONE;
if (!BASE || !BIND_BASE || !PHONE_BASE || !ACCOUNT_PHONE) {
  throw new Error('set WXAUTH_URL, WXAUTH_BIND_URL, WXAUTH_PHONE_URL and WXAUTH_ACCOUNT_PHONE (cargo test does)');
}

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

/** The event of a getPhoneNumber button the person accepted, with the dev mock's code for `number`. */
function phoneEvent(number) {
  return { type: 'getphonenumber', detail: { errMsg: 'getPhoneNumber:ok', code: number } };
}

let numbers = 0;

/** A number no account has (unique within this run). */
function freshNumber() {
  numbers += 1;
  return `1370${String(process.pid % 10000).padStart(4, '0')}${String(numbers).padStart(3, '0')}`;
}

async function userId(base, token) {
  const res = await fetch(`${base}/v1/me`, { headers: { authorization: `Bearer ${token}` } });
  return (await res.json()).id;
}

test('registration phone: phone_required goes to the phone page, and the button logs in as a new account', async () => {
  const wx = fakeWx(person());
  let handed = null;
  const auth = createClient({ baseUrl: PHONE_BASE, wx, onPhoneRequired: (body) => { handed = body; } });
  await assert.rejects(auth.login(), (e) => e instanceof WxauthError && e.error === 'phone_required');
  assert.match(handed.bind_ticket, /^bt_/);

  const body = await auth.loginWithPhone(phoneEvent(freshNumber()));
  assert.equal(body.user.created, true);
  assert.equal(wx.storage.get(STORAGE_KEYS.access), body.access_token);
  // Later logins are wx.login alone.
  const again = await auth.login();
  assert.equal(again.user.id, body.user.id);
  assert.equal(wx.calls.filter((c) => c.url.endsWith('/v1/login')).length, 3);
});

test('registration phone: the number of an existing account logs in as that account', async () => {
  const auth = createClient({ baseUrl: PHONE_BASE, wx: fakeWx(person()) });
  const body = await auth.loginWithPhone(phoneEvent(ACCOUNT_PHONE));
  assert.equal(body.user.id, process.env.WXAUTH_PHONE_ACCOUNT_USER);
  assert.equal(body.user.created, false);
});

test('registration bind: the button binds to the account with the number, or says none has it', async () => {
  const auth = createClient({ baseUrl: BIND_BASE, wx: fakeWx(person()) });
  const body = await auth.loginWithPhone(phoneEvent(ACCOUNT_PHONE));
  assert.equal(await userId(BIND_BASE, body.access_token), process.env.WXAUTH_BIND_ACCOUNT_USER);

  const wx = fakeWx(person());
  let handed = null;
  const stranger = createClient({ baseUrl: BIND_BASE, wx, onNotBound: (body) => { handed = body; } });
  await assert.rejects(
    stranger.loginWithPhone(phoneEvent(freshNumber())),
    (e) => e instanceof WxauthError && e.statusCode === 409 && e.error === 'no_account_for_phone',
  );
  assert.ok(!wx.storage.get(STORAGE_KEYS.access));
  assert.match(handed.bind_ticket, /^bt_/, 'no ticket for a bind by password');
});

test('registration auto: a number no account has is a plain new user', async () => {
  const auth = createClient({ baseUrl: BASE, wx: fakeWx(person()) });
  const body = await auth.loginWithPhone(phoneEvent(freshNumber()));
  assert.equal(body.user.created, true);
});

test('a declined getPhoneNumber sends nothing and rejects with PhoneDeclinedError', async () => {
  for (const detail of [
    { errMsg: 'getPhoneNumber:fail user deny' },
    { errMsg: 'getPhoneNumber:fail:user deny' },
    { errMsg: 'getPhoneNumber:ok' },
    {},
  ]) {
    const wx = fakeWx(person());
    const auth = createClient({ baseUrl: PHONE_BASE, wx });
    await assert.rejects(auth.loginWithPhone({ detail }), (e) => e instanceof PhoneDeclinedError);
    assert.equal(wx.calls.length, 0, JSON.stringify(detail));
  }
  await assert.rejects(createClient({ baseUrl: PHONE_BASE, wx: fakeWx(person()) }).loginWithPhone(undefined),
    (e) => e instanceof PhoneDeclinedError);
});

test('a refused phone code is not retried with a new wx.login: the person taps again', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: PHONE_BASE, wx });
  await assert.rejects(auth.loginWithPhone(phoneEvent('invalid')), (e) => e.error === 'invalid_code');
  assert.equal(wx.count('/v1/login'), 1);
});

test('a phone login queued behind a silent login is not forgotten when that one ends', async () => {
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: PHONE_BASE, wx });
  const silent = auth.login().catch((e) => e);
  const phone = auth.loginWithPhone(phoneEvent(freshNumber()));
  assert.equal((await silent).error, 'phone_required');
  // The silent login has ended; a caller now shares the phone login instead of starting one.
  const shared = auth.login();
  const [body, again] = await Promise.all([phone, shared]);
  assert.equal(again.access_token, body.access_token);
  assert.equal(wx.count('/v1/login'), 2);
});

test('confirmScan logs the PC in as the person once, and a used scene is refused', async () => {
  const pc = await (await fetch(`${BASE}/v1/scan-sessions`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
  })).json();
  const wx = fakeWx(person());
  const auth = createClient({ baseUrl: BASE, wx });
  // WeChat hands the page the scene URL-encoded.
  await auth.confirmScan(encodeURIComponent(pc.scene));
  const poll = await (await fetch(`${BASE}/v1/scan-sessions/${pc.id}`)).json();
  assert.equal(poll.status, 'confirmed');
  const mine = await me(auth);
  assert.equal(poll.login.user.id, mine.data.id);
  await assert.rejects(auth.confirmScan(pc.scene), (e) => e instanceof WxauthError && e.error === 'scan_session_not_found');
  await assert.rejects(auth.confirmScan(''), (e) => e instanceof WxauthError && e.error === 'invalid_request');
});
