// wxauth client for WeChat mini-programs. Plain JavaScript (CommonJS), no build step:
// copy this file into your mini-program and `require` it.
//
//   const { createClient } = require('./wxauth.js');
//   const auth = createClient({
//     baseUrl: 'https://auth.example.com',
//     onNotBound: (body) => wx.navigateTo({ url: `/pages/bind/bind?ticket=${body.bind_ticket}` }),
//     onPhoneRequired: () => wx.navigateTo({ url: '/pages/phone/phone' }),
//   });
//   const res = await auth.request({ url: 'https://api.example.com/orders' });
//
// Phone-first login: a <button open-type="getPhoneNumber" bindgetphonenumber="onPhone">
// whose handler calls `auth.loginWithPhone(e)`: it logs in, binds the WeChat identity to
// the account with the number (or, in registration `phone`, makes one), in one request.
//
// It logs in with wx.login, keeps both tokens with wx.setStorageSync, sends the access
// token as `Authorization: Bearer`, refreshes it once on a 401 (one refresh however many
// requests failed at once), and logs in again silently when the refresh token is gone.
'use strict';

const STORAGE_KEYS = {
  access: 'wxauth.access_token',
  accessExpiresAt: 'wxauth.access_expires_at',
  refresh: 'wxauth.refresh_token',
};

/** The person declined to share the phone number (or WeChat gave no code): nothing was sent. */
class PhoneDeclinedError extends Error {
  constructor(errMsg) {
    super(`the phone number was not shared: ${errMsg || 'no code'}`);
    this.name = 'PhoneDeclinedError';
    this.errMsg = errMsg; // e.g. 'getPhoneNumber:fail user deny'
  }
}

/** An answer of wxauth that the client cannot turn into a token. */
class WxauthError extends Error {
  constructor(statusCode, body) {
    const data = body && typeof body === 'object' ? body : {};
    super(data.error_description || `wxauth answered HTTP ${statusCode}`);
    this.name = 'WxauthError';
    this.statusCode = statusCode;
    this.error = data.error; // e.g. 'not_bound', 'invalid_code', 'rate_limited'
    this.body = data;
  }
}

function call(wx, options) {
  return new Promise((resolve, reject) => wx.request({ ...options, success: resolve, fail: reject }));
}

function wxLogin(wx) {
  return new Promise((resolve, reject) => wx.login({ success: (res) => resolve(res.code), fail: reject }));
}

/**
 * @param {object} options
 * @param {string} options.baseUrl wxauth's HTTPS address, without a trailing slash.
 * @param {string} [options.appid] Your AppID; required when wxauth serves several apps.
 * @param {(body: object) => void} [options.onNotBound] Called with the 403 `not_bound` body
 *   (it holds `bind_ticket`): open your bind page there. The login then rejects.
 * @param {(body: object) => void} [options.onPhoneRequired] Called with the 403
 *   `phone_required` body (registration `phone`): show the getPhoneNumber button there, whose
 *   handler calls `loginWithPhone(e)`. The login then rejects.
 * @param {object} [options.wx] The `wx` object (tests pass a fake one).
 */
function createClient(options) {
  const { baseUrl, appid, onNotBound, onPhoneRequired } = options;
  const wx = options.wx || globalThis.wx;
  let loggingIn = null;
  let refreshing = null;

  function save(body) {
    wx.setStorageSync(STORAGE_KEYS.access, body.access_token);
    wx.setStorageSync(STORAGE_KEYS.refresh, body.refresh_token);
    // Renew after 90% of the lifetime rather than send a token that expires in flight.
    wx.setStorageSync(STORAGE_KEYS.accessExpiresAt, Date.now() + body.expires_in * 900);
    return body;
  }

  function clear() {
    Object.values(STORAGE_KEYS).forEach((key) => wx.removeStorageSync(key));
  }

  async function loginOnce(retried, phoneCode) {
    const code = await wxLogin(wx);
    const data = { code };
    if (appid) data.appid = appid;
    if (phoneCode) data.phone_code = phoneCode;
    const res = await call(wx, { url: `${baseUrl}/v1/login`, method: 'POST', data });
    if (res.statusCode === 200) return save(res.data);
    const error = res.data && res.data.error;
    // A code WeChat refused: wx.login gives a new one; once, not in a loop. Not with a phone
    // code, which is more likely the refused one (it expires too): the person taps again.
    if (res.statusCode === 400 && (error === 'invalid_code' || error === 'code_used') && !retried && !phoneCode) {
      return loginOnce(true);
    }
    if (res.statusCode === 403 && error === 'not_bound' && onNotBound) onNotBound(res.data);
    // Registration `bind`, a number no account has: the ticket binds by password instead.
    if (res.statusCode === 409 && error === 'no_account_for_phone' && res.data.bind_ticket && onNotBound) {
      onNotBound(res.data);
    }
    if (res.statusCode === 403 && error === 'phone_required' && onPhoneRequired) onPhoneRequired(res.data);
    throw new WxauthError(res.statusCode, res.data);
  }

  /** Logs in with a new wx.login code; concurrent calls share one login. */
  function login() {
    if (!loggingIn) {
      // Cleared only if still ours: a phone login may have queued behind it meanwhile.
      const mine = loginOnce(false).finally(() => { if (loggingIn === mine) loggingIn = null; });
      loggingIn = mine;
    }
    return loggingIn;
  }

  /**
   * Logs in with the event of a `getPhoneNumber` button: a new wx.login code and the
   * button's phone code in one request. An identity bound already just logs in (wxauth
   * does not verify, nor pay for, the number then); an unbound one is bound to the account
   * with the number, or gets one (registration `phone`). Rejects with PhoneDeclinedError
   * when the person declined (nothing is sent), and with WxauthError 409
   * `no_account_for_phone` when no account has the number (registration `bind`).
   */
  function loginWithPhone(e) {
    const detail = (e && e.detail) || {};
    if (!detail.code || !/:ok$/.test(detail.errMsg || '')) {
      return Promise.reject(new PhoneDeclinedError(detail.errMsg));
    }
    const run = () => loginOnce(false, detail.code);
    // After a login in flight, not beside it: they would race for one identity.
    const shared = (loggingIn ? loggingIn.catch(() => {}).then(run) : run())
      .finally(() => { if (loggingIn === shared) loggingIn = null; });
    loggingIn = shared;
    return shared;
  }

  async function refreshOnce() {
    const refreshToken = wx.getStorageSync(STORAGE_KEYS.refresh);
    if (refreshToken) {
      const res = await call(wx, {
        url: `${baseUrl}/v1/token/refresh`, method: 'POST', data: { refresh_token: refreshToken },
      });
      if (res.statusCode === 200) return save(res.data);
      // Anything but invalid_grant (a 5xx, a network problem) keeps the session for later.
      if (res.statusCode !== 401) throw new WxauthError(res.statusCode, res.data);
    }
    clear();
    return login();
  }

  /** Refreshes the tokens, or logs in again when that fails; one at a time. */
  function refresh() {
    if (!refreshing) refreshing = refreshOnce().finally(() => { refreshing = null; });
    return refreshing;
  }

  /** A usable access token: the stored one, a refreshed one, or a new login's. */
  async function token() {
    const saved = wx.getStorageSync(STORAGE_KEYS.access);
    if (saved && Date.now() < wx.getStorageSync(STORAGE_KEYS.accessExpiresAt)) return saved;
    const body = await (wx.getStorageSync(STORAGE_KEYS.refresh) ? refresh() : login());
    return body.access_token;
  }

  /** wx.request with the access token; on a 401, refreshes once and retries once. */
  async function request(req) {
    const send = (bearer) => call(wx, {
      ...req, header: { ...(req.header || {}), Authorization: `Bearer ${bearer}` },
    });
    const used = await token();
    const res = await send(used);
    if (res.statusCode !== 401) return res;
    // Requests that failed together share one refresh: whoever comes after it finds the
    // new token stored already.
    const stored = wx.getStorageSync(STORAGE_KEYS.access);
    const fresh = stored && stored !== used ? stored : (await refresh()).access_token;
    return send(fresh);
  }

  /** Revokes this device's refresh token at wxauth and forgets both tokens. */
  async function logout() {
    const refreshToken = wx.getStorageSync(STORAGE_KEYS.refresh);
    clear();
    if (refreshToken) {
      await call(wx, { url: `${baseUrl}/v1/logout`, method: 'POST', data: { refresh_token: refreshToken } });
    }
  }

  /**
   * PC login by scanning a mini-program code: on the page the code opens, confirms its
   * scene (`options.scene`, URL-encoded by WeChat) as the logged-in person, so the PC that
   * shows the code is logged in. Resolves once confirmed; rejects with a WxauthError
   * (`scan_session_not_found`: expired or used, show the PC a new code; `app_mismatch`).
   */
  async function confirmScan(scene) {
    const decoded = decodeURIComponent(String(scene || ''));
    if (!decoded) throw new WxauthError(400, { error: 'invalid_request', error_description: 'no scene to confirm' });
    const res = await request({
      url: `${baseUrl}/v1/scan-sessions/${encodeURIComponent(decoded)}/confirm`, method: 'POST', data: {},
    });
    if (res.statusCode !== 204) throw new WxauthError(res.statusCode, res.data);
  }

  return { login, loginWithPhone, refresh, token, request, logout, confirmScan };
}

module.exports = { createClient, WxauthError, PhoneDeclinedError, STORAGE_KEYS };
