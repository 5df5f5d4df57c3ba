// The wxauth operator console: a client of the admin API (/admin/v1/...), same origin.
// Plain JavaScript without a build step (docs/console.md). Everything a user sent is put
// in the page as text (textContent), never as HTML.
'use strict';

const KINDS = ['login', 'login_failed', 'bind', 'unbind', 'refresh', 'refresh_reuse', 'logout', 'logout_all',
  'phone_verified', 'profile_updated', 'ban', 'unban', 'session_revoked', 'deletion_requested',
  'deletion_cancelled', 'deletion_done', 'key_staged', 'key_activated', 'key_pruned', 'roles_set', 'claims_set',
  'account_added', 'account_removed', 'password_changed', 'admin_token_created', 'admin_token_revoked'];

const TEXT = {
  en: {
    title: 'wxauth console', overview: 'Overview', users: 'Users', events: 'Events', signOut: 'Sign out',
    signIn: 'Sign in', signInTitle: 'Sign in to the wxauth console', token: 'Admin token',
    tokenHelp: 'Create one on the server: wxauth admin-tokens create NAME --role read|write. It stays in this tab only.',
    badToken: 'This token is not a live admin token.', language: 'Language', readOnly: 'read only',
    last24h: 'Logins, last 24 hours (per hour)', last7d: 'Logins, last 7 days (per day)', app: 'App', kind: 'Surface', allApps: 'All apps',
    newUsers: 'New users', returning: 'Returning', failed: 'Refused', failuresByCode: 'Refused logins by error code, 7 days',
    code: 'Error code', count: 'Count', none: 'None', wechat: 'WeChat', reachable: 'reachable',
    breakerOpen: 'circuit breaker open: logins answer 503', keys: 'Signing keys', kid: 'Key id', alg: 'Algorithm',
    state: 'State', created: 'Created', activates: 'Activates', retired: 'Retired', incomplete: 'More than a million login events: the oldest hours are not counted.',
    search: 'Search', searchLabel: 'User id, openid, unionid, phone number or username', find: 'Find',
    id: 'User id', username: 'Username', identities: 'Identities', unionid: 'Unionid', lastLogin: 'Last login',
    ban: 'Ban', banned: 'banned', noUsers: 'No user matches.', next: 'Next page', previous: 'Previous page',
    user: 'User', account: 'Account', accountPhone: "Account's phone number", phone: 'Phone number', profile: 'Profile', roles: 'Roles', claims: 'Custom claims',
    sessions: 'Sessions', session: 'Session', ip: 'Address', userAgent: 'User agent', lastRefresh: 'Last refresh',
    revoke: 'Revoke', revokeAll: 'Revoke every session', recentEvents: 'Recent events', allEvents: 'All events of this user',
    actions: 'Actions', reason: 'Reason', until: 'Until (empty: until unbanned)', unban: 'Unban', notBanned: 'Not banned',
    bannedSince: 'Banned since', banEnds: 'Ends', setRoles: 'Set roles', rolesHelp: 'Comma-separated; empty clears them',
    remove: 'Delete the user', removeHelp: 'Erases the person at once (an account made by wxauth accounts add stays, unbound). Type the user id to confirm.',
    confirmId: 'User id, to confirm', deleteNow: 'Delete now', deleted: 'Deleted user', mismatch: 'The user id typed does not match.',
    didBan: 'Banned; every session revoked.', didUnban: 'Unbanned.', didRoles: 'Roles set.', didRevoke: 'Session revoked.',
    didRevokeAll: 'Every session revoked.', time: 'Time', kind: 'Kind', actor: 'Actor', details: 'Details',
    anyKind: 'Any kind', since: 'Since', filter: 'Filter', noEvents: 'No event matches.', loading: 'Loading…',
    notFound: 'No such user (deleted?).', signedOut: 'Signed out.', yes: 'yes', no: 'no',
    skip: 'Skip to content', banEnded: 'Ban ended',
  },
  zh: {
    title: 'wxauth 控制台', overview: '概览', users: '用户', events: '事件', signOut: '退出',
    signIn: '登录', signInTitle: '登录 wxauth 控制台', token: '管理令牌',
    tokenHelp: '在服务器上创建：wxauth admin-tokens create NAME --role read|write。令牌只保存在本标签页。',
    badToken: '该令牌不是有效的管理令牌。', language: '语言', readOnly: '只读',
    last24h: '登录次数，最近 24 小时（每小时）', last7d: '登录次数，最近 7 天（每天）', app: '应用', kind: '类型', allApps: '全部应用',
    newUsers: '新用户', returning: '老用户', failed: '被拒绝', failuresByCode: '按错误码统计的被拒绝登录，7 天',
    code: '错误码', count: '次数', none: '无', wechat: '微信', reachable: '可访问',
    breakerOpen: '熔断已打开：登录返回 503', keys: '签名密钥', kid: '密钥 ID', alg: '算法',
    state: '状态', created: '创建时间', activates: '启用时间', retired: '停用时间', incomplete: '登录事件超过一百万条：最早的小时未统计。',
    search: '搜索', searchLabel: '用户 ID、openid、unionid、手机号或用户名', find: '查找',
    id: '用户 ID', username: '用户名', identities: '身份', unionid: 'Unionid', lastLogin: '最近登录',
    ban: '封禁', banned: '已封禁', noUsers: '没有匹配的用户。', next: '下一页', previous: '上一页',
    user: '用户', account: '账号', accountPhone: '账号手机号', phone: '手机号', profile: '资料', roles: '角色', claims: '自定义声明',
    sessions: '会话', session: '会话', ip: '地址', userAgent: '用户代理', lastRefresh: '最近刷新',
    revoke: '撤销', revokeAll: '撤销全部会话', recentEvents: '最近事件', allEvents: '该用户的全部事件',
    actions: '操作', reason: '原因', until: '截止时间（留空：直到解封）', unban: '解封', notBanned: '未封禁',
    bannedSince: '封禁开始', banEnds: '结束', setRoles: '设置角色', rolesHelp: '用逗号分隔；留空则清除',
    remove: '删除用户', removeHelp: '立即抹除此人（用 wxauth accounts add 创建的账号保留，解除绑定）。输入用户 ID 以确认。',
    confirmId: '用户 ID（确认）', deleteNow: '立即删除', deleted: '已删除用户', mismatch: '输入的用户 ID 不一致。',
    didBan: '已封禁；全部会话已撤销。', didUnban: '已解封。', didRoles: '角色已设置。', didRevoke: '会话已撤销。',
    didRevokeAll: '全部会话已撤销。', time: '时间', kind: '类型', actor: '操作者', details: '详情',
    anyKind: '任意类型', since: '起始', filter: '筛选', noEvents: '没有匹配的事件。', loading: '加载中…',
    notFound: '没有该用户（已删除？）。', signedOut: '已退出。', yes: '是', no: '否',
    skip: '跳到内容', banEnded: '封禁已结束',
  },
};

const TOKEN_KEY = 'wxauth-admin-token';
const LANG_KEY = 'wxauth-console-language';
let lang = pickLanguage();
let me = null; // {name, role} of the token in use

function pickLanguage() {
  const chosen = localStorage.getItem(LANG_KEY);
  if (chosen === 'en' || chosen === 'zh') return chosen;
  const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  for (const tag of wanted) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (base === 'zh' || base === 'en') return base;
  }
  return 'en';
}

function t(key) {
  return TEXT[lang][key] ?? TEXT.en[key] ?? key;
}

// An element: h('a', {href: '#/'}, 'text', child, ...). Strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
  for (const child of children.flat(Infinity)) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return el;
}

function when(text) {
  if (!text) return '';
  return new Date(text).toLocaleString(lang === 'zh' ? 'zh-CN' : 'en-GB', { hour12: false });
}

function status(text, kind) {
  const el = document.getElementById('status');
  el.textContent = text || '';
  el.className = kind || '';
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error_description ? `${body.error}: ${body.error_description}` : `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (err) {
    // Not wxauth's answer (a proxy's error page): the status says enough.
    if (resp.ok) throw new ApiError(resp.status, null);
  }
  if (!resp.ok) {
    if (resp.status === 401 && me) expired();
    throw new ApiError(resp.status, json);
  }
  return json;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  go('#/', t('signedOut'), 'done');
}

// The token stopped working (revoked) while the page was open: sign in again, on the same
// page. Several requests in flight may each see the 401; the first one acts.
function expired() {
  if (!me) return;
  sessionStorage.removeItem(TOKEN_KEY);
  me = null;
  flash = [t('badToken'), 'error'];
  render().then(showFlash);
}

// Shows `hash` and then `message` in the status line: a message set before the page
// changes would be cleared by the change.
let flash = null;
function go(hash, message, kind) {
  flash = message ? [message, kind] : null;
  if (location.hash === hash) render().then(showFlash);
  else location.hash = hash;
}

function showFlash() {
  if (flash) status(...flash);
  flash = null;
}

function canWrite() {
  return me && me.role === 'write';
}

function header(active) {
  const top = document.getElementById('top');
  top.replaceChildren();
  const link = (href, key) => h('a', { href, 'aria-current': active === key ? 'page' : false }, t(key));
  const switcher = h('select', { id: 'language', 'aria-label': t('language'), onchange: (e) => {
    lang = e.target.value;
    localStorage.setItem(LANG_KEY, lang);
    render();
  } }, h('option', { value: 'en', selected: lang === 'en' }, 'English'), h('option', { value: 'zh', selected: lang === 'zh' }, '中文'));
  top.append(h('span', { class: 'brand' }, t('title')));
  if (me) {
    top.append(h('nav', { 'aria-label': t('title') }, link('#/', 'overview'), link('#/users', 'users'), link('#/events', 'events')));
    top.append(h('span', { class: 'who' }, `${me.name} · ${me.role === 'write' ? me.role : `${me.role} (${t('readOnly')})`}`));
    top.append(switcher, h('button', { type: 'button', id: 'sign-out', onclick: () => signOut() }, t('signOut')));
  } else {
    top.append(h('span', { class: 'who' }), switcher);
  }
}

function table(columns, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty || t('none'));
  return h('div', { class: 'table' }, h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows.map((cells) => h('tr', {}, cells.map((c) => (c instanceof Node && c.tagName === 'TD' ? c : h('td', {}, c))))))));
}

function mono(text) {
  return h('td', { class: 'mono' }, text || '');
}

function params() {
  const query = location.hash.split('?')[1] || '';
  return new URLSearchParams(query);
}

// Pages ------------------------------------------------------------------------------

function signInPage(main) {
  document.title = t('signInTitle');
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const form = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      me = await api('GET', '/admin/v1/token');
      status('');
      // Stays on the page asked for (a link to a user, shared by a colleague).
      await render();
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
      status(err.status === 401 ? t('badToken') : err.message, 'error');
    }
  } },
  h('label', { for: 'token' }, t('token')), input,
  h('p', { id: 'token-help', class: 'muted' }, t('tokenHelp')),
  h('button', { type: 'submit', class: 'primary' }, t('signIn')));
  main.append(h('section', { class: 'signin' }, h('h1', {}, t('signInTitle')), form));
}

function sumFailures(hour) {
  return Object.values(hour.failures || {}).reduce((a, b) => a + b, 0);
}

// Bars per bucket: new users, returning logins (stacked) and refused logins beside them.
function chart(label, buckets, tick) {
  const width = 720; const height = 200; const pad = 24;
  const max = Math.max(1, ...buckets.map((b) => Math.max(b.logins, b.failed)));
  const slot = (width - pad) / buckets.length;
  const bar = Math.max(1, slot / 2 - 1);
  const y = (v) => height - pad - ((height - 2 * pad) * v) / max;
  const marks = [];
  buckets.forEach((b, i) => {
    const x = pad + i * slot;
    const returning = b.logins - b.newUsers;
    marks.push(svg('g', {},
      svg('title', {}, `${b.label}: ${t('newUsers')} ${b.newUsers}, ${t('returning')} ${returning}, ${t('failed')} ${b.failed}`),
      svg('rect', { x, y: y(b.logins), width: bar, height: y(0) - y(b.logins), fill: '#7cc49a' }),
      svg('rect', { x, y: y(b.newUsers), width: bar, height: y(0) - y(b.newUsers), fill: '#0a5d2c' }),
      svg('rect', { x: x + bar + 1, y: y(b.failed), width: bar, height: y(0) - y(b.failed), fill: '#c2410c' })));
    if (tick(i)) marks.push(svg('text', { x, y: height - 8 }, b.label));
  });
  marks.push(svg('text', { x: 0, y: pad }, String(max)));
  marks.push(svg('line', { x1: pad, x2: width, y1: y(0), y2: y(0), stroke: '#8c959f' }));
  const summary = buckets.map((b) => `${b.label}: ${b.logins}/${b.failed}`).join(', ');
  return h('figure', {},
    svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `${label}. ${summary}` }, marks),
    h('figcaption', { class: 'legend' }, h('strong', {}, label), ' ',
      h('span', { class: 'new' }, t('newUsers')), h('span', { class: 'returning' }, t('returning')), h('span', { class: 'failed' }, t('failed'))));
}

// Buckets starting at `starts` (ascending times, the last one open-ended until now).
function buckets(hours, app, starts, label) {
  const out = starts.map((start) => ({ start, label: label(new Date(start)), logins: 0, newUsers: 0, failed: 0 }));
  for (const hour of hours) {
    if (app && hour.appid !== app) continue;
    const at = Date.parse(hour.hour);
    let index = -1;
    while (index + 1 < starts.length && starts[index + 1] <= at) index += 1;
    if (index < 0) continue;
    out[index].logins += hour.logins;
    out[index].newUsers += hour.new_users;
    out[index].failed += sumFailures(hour);
  }
  return out;
}

// The starts of the last 24 hours and of the last 7 local days (days begin at the
// browser's midnight, not UTC's).
function lastHours() {
  const now = new Date();
  now.setMinutes(0, 0, 0);
  return Array.from({ length: 24 }, (_, i) => now.getTime() - (23 - i) * 3600e3);
}

function lastDays() {
  return Array.from({ length: 7 }, (_, i) => {
    const day = new Date();
    day.setHours(0, 0, 0, 0);
    day.setDate(day.getDate() - (6 - i));
    return day.getTime();
  });
}

async function overviewPage(main) {
  document.title = `${t('overview')} · ${t('title')}`;
  const [stats, keys] = await Promise.all([api('GET', '/admin/v1/stats'), api('GET', '/admin/v1/keys')]);
  const apps = [...new Set(stats.hours.map((hour) => hour.appid).filter(Boolean))].sort();
  const app = params().get('app') || '';
  const picker = h('select', { id: 'app', onchange: (e) => { location.hash = e.target.value ? `#/?app=${encodeURIComponent(e.target.value)}` : '#/'; } },
    h('option', { value: '' }, t('allApps')), apps.map((a) => h('option', { value: a, selected: a === app }, a)));
  const hourLabel = (d) => `${String(d.getHours()).padStart(2, '0')}:00`;
  const dayLabel = (d) => `${d.getMonth() + 1}/${d.getDate()}`;
  const codes = {};
  for (const hour of stats.hours) {
    if (app && hour.appid !== app) continue;
    for (const [code, n] of Object.entries(hour.failures || {})) codes[code] = (codes[code] || 0) + n;
  }
  main.append(
    h('h1', {}, t('overview')),
    h('form', { class: 'row', onsubmit: (e) => e.preventDefault() }, h('label', { for: 'app' }, t('app'), picker)),
    h('p', {}, `${t('wechat')}: `, h('span', { class: stats.wechat_reachable ? 'badge good' : 'badge bad', id: 'wechat-state' },
      stats.wechat_reachable ? t('reachable') : t('breakerOpen'))),
    h('p', { class: 'muted', hidden: stats.complete }, t('incomplete')),
    chart(t('last24h'), buckets(stats.hours, app, lastHours(), hourLabel), (i) => i % 3 === 0),
    chart(t('last7d'), buckets(stats.hours, app, lastDays(), dayLabel), () => true),
    h('h2', {}, t('failuresByCode')),
    table([t('code'), t('count')], Object.entries(codes).sort((a, b) => b[1] - a[1]).map(([code, n]) => [mono(code), String(n)])),
    h('h2', {}, t('keys')),
    table([t('kid'), t('alg'), t('state'), t('created'), t('activates'), t('retired')],
      keys.keys.map((k) => [mono(k.kid), k.alg, k.state, when(k.created_at), when(k.activates_at), when(k.retired_at)])),
  );
}

// The user's ban if it holds now: a ban with an end stays on the user after it passed.
function currentBan(u) {
  return u.ban && !(u.ban.until && Date.parse(u.ban.until) <= Date.now()) ? u.ban : null;
}

function userRow(u) {
  return [
    h('td', { class: 'mono' }, h('a', { href: `#/users/${u.id}` }, u.id)),
    u.username || '',
    mono(u.identities.map((i) => `${i.appid}: ${i.openid}`).join('\n')),
    mono(u.unionid),
    when(u.last_login_at),
    currentBan(u) ? h('span', { class: 'badge bad' }, t('banned')) : '',
  ];
}

async function usersPage(main) {
  document.title = `${t('users')} · ${t('title')}`;
  const query = params();
  const q = query.get('q') || '';
  const cursor = query.get('cursor') || '';
  const input = h('input', { id: 'q', type: 'search', value: q, size: 40 });
  const form = h('form', { class: 'row', role: 'search', onsubmit: (e) => {
    e.preventDefault();
    location.hash = input.value.trim() ? `#/users?q=${encodeURIComponent(input.value.trim())}` : '#/users';
  } }, h('label', { for: 'q' }, t('searchLabel'), input), h('button', { type: 'submit', class: 'primary' }, t('find')));
  main.append(h('h1', {}, t('users')), form);
  const path = new URLSearchParams({ limit: '20' });
  if (q) path.set('q', q);
  if (cursor) path.set('cursor', cursor);
  const page = await api('GET', `/admin/v1/users?${path}`);
  main.append(table([t('id'), t('username'), t('identities'), t('unionid'), t('lastLogin'), t('ban')], page.users.map(userRow), t('noUsers')));
  main.append(pager('#/users', query, page.next_cursor));
}

// Next and Previous for a page of `route` shown with `query`. The hash carries the cursors
// of the pages before (`prev`, `-` for the first page), so Previous works on a link
// opened afresh, not only after clicking Next in this tab.
function pager(route, query, nextCursor) {
  const before = (query.get('prev') || '').split(',').filter(Boolean);
  const out = h('div', { class: 'pager' });
  const to = (cursor, prev) => {
    const params = new URLSearchParams(query);
    if (cursor && cursor !== '-') params.set('cursor', cursor);
    else params.delete('cursor');
    if (prev.length) params.set('prev', prev.join(','));
    else params.delete('prev');
    return `${route}?${params}`;
  };
  if (query.get('cursor')) {
    const previous = before.length ? before[before.length - 1] : '-';
    out.append(h('a', { class: 'button', id: 'previous', href: to(previous, before.slice(0, -1)) }, t('previous')));
  }
  if (nextCursor) {
    out.append(h('a', { class: 'button', id: 'next', href: to(nextCursor, [...before, query.get('cursor') || '-']) }, t('next')));
  }
  return out;
}

function card(pairs) {
  return h('dl', { class: 'card' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v || '—')]));
}

function eventRows(events) {
  return events.map((e) => [when(e.at), mono(e.kind), e.appid || '', e.actor || '', e.ip || '',
    mono(Object.keys(e.details || {}).length ? JSON.stringify(e.details) : '')]);
}

// Runs one change at a time (a double click sends one request), then redraws the page
// and says what happened.
let acting = false;
async function act(work, done) {
  if (acting) return;
  acting = true;
  try {
    await work();
    await render();
    status(done, 'done');
    document.getElementById('main').focus();
  } catch (err) {
    status(err.message, 'error');
  } finally {
    acting = false;
  }
}

async function userPage(main, id) {
  document.title = `${t('user')} ${id} · ${t('title')}`;
  let file;
  try {
    file = await api('GET', `/admin/v1/users/${encodeURIComponent(id)}`);
  } catch (err) {
    if (err.status === 404 || err.status === 400) {
      main.append(h('h1', {}, t('user')), h('p', { id: 'not-found' }, t('notFound')));
      return;
    }
    throw err;
  }
  const u = file.user;
  const banned = currentBan(u);
  const base = `/admin/v1/users/${encodeURIComponent(u.id)}`;
  main.append(h('h1', {}, `${t('user')} `, h('span', { class: 'mono' }, u.id)));
  main.append(h('div', { class: 'cards' },
    card([[t('account'), u.username], [t('accountPhone'), file.account_phone], [t('unionid'), u.unionid], [t('created'), when(u.created_at)], [t('lastLogin'), when(u.last_login_at)]]),
    card([[t('phone'), file.phone && file.phone.phone_number], [t('profile'), file.profile && file.profile.nickname]]),
    card([[t('roles'), u.roles.join(', ')], [t('claims'), Object.keys(u.claims || {}).length ? JSON.stringify(u.claims) : '']]),
    card([[t('ban'), banned ? h('span', { class: 'badge bad', id: 'ban-state' }, `${t('banned')}: ${banned.reason}`) : h('span', { id: 'ban-state' }, u.ban ? t('banEnded') : t('notBanned'))],
      [t('banEnds'), u.ban && u.ban.until ? when(u.ban.until) : ''], [t('bannedSince'), u.ban ? when(u.ban.at) : '']]),
  ));
  main.append(h('h2', {}, t('identities')), table([t('app'), t('kind'), 'openid'], u.identities.map((i) => [mono(i.appid), i.kind || '—', mono(i.openid)])));
  const revokeOne = (s) => h('button', { type: 'button', 'data-session': s.id, 'aria-label': `${t('revoke')}: ${s.app} ${when(s.created_at)} ${s.ip || ''}`, onclick: () => act(
    () => api('DELETE', `${base}/sessions/${encodeURIComponent(s.id)}`), t('didRevoke')) }, t('revoke'));
  main.append(h('h2', {}, t('sessions')), table(
    [t('app'), t('created'), t('lastRefresh'), t('ip'), t('userAgent'), canWrite() ? t('actions') : null].filter(Boolean),
    file.sessions.map((s) => [mono(s.app), when(s.created_at), when(s.last_refresh_at), s.ip || '', s.user_agent || '', canWrite() ? revokeOne(s) : null].filter((c) => c !== null)),
  ));
  if (canWrite() && file.sessions.length) {
    main.append(h('p', {}, h('button', { type: 'button', id: 'revoke-all', onclick: () => act(() => api('DELETE', `${base}/sessions`), t('didRevokeAll')) }, t('revokeAll'))));
  }
  main.append(h('h2', {}, t('recentEvents')), table([t('time'), t('kind'), t('app'), t('actor'), t('ip'), t('details')], eventRows(file.events)),
    h('p', {}, h('a', { href: `#/events?user=${encodeURIComponent(u.id)}` }, t('allEvents'))));
  if (!canWrite()) return;

  const reason = h('input', { id: 'ban-reason', required: true, maxlength: 200 });
  const until = h('input', { id: 'ban-until', type: 'datetime-local' });
  const banForm = h('form', { class: 'stack', onsubmit: (e) => {
    e.preventDefault();
    const body = { reason: reason.value };
    if (until.value) body.until = new Date(until.value).toISOString();
    act(() => api('PUT', `${base}/ban`, body), t('didBan'));
  } }, h('label', { for: 'ban-reason' }, t('reason')), reason, h('label', { for: 'ban-until' }, t('until')), until,
  h('button', { type: 'submit', class: 'danger', id: 'ban' }, t('ban')));
  const unban = h('button', { type: 'button', id: 'unban', disabled: !banned, onclick: () => act(() => api('DELETE', `${base}/ban`), t('didUnban')) }, t('unban'));
  const roles = h('input', { id: 'roles', value: u.roles.join(', '), 'aria-describedby': 'roles-help' });
  const rolesForm = h('form', { class: 'stack', onsubmit: (e) => {
    e.preventDefault();
    const list = roles.value.split(',').map((r) => r.trim()).filter(Boolean);
    act(() => api('PUT', `${base}/roles`, { roles: list }), t('didRoles'));
  } }, h('label', { for: 'roles' }, t('roles')), roles, h('p', { id: 'roles-help', class: 'muted' }, t('rolesHelp')),
  h('button', { type: 'submit', id: 'set-roles' }, t('setRoles')));
  const confirm = h('input', { id: 'confirm-id', autocomplete: 'off', 'aria-describedby': 'remove-help' });
  const removeForm = h('form', { class: 'stack', onsubmit: async (e) => {
    e.preventDefault();
    if (confirm.value.trim() !== u.id) {
      status(t('mismatch'), 'error');
      return;
    }
    try {
      await api('DELETE', base);
      go('#/users', `${t('deleted')} ${u.id}`, 'done');
    } catch (err) {
      status(err.message, 'error');
    }
  } }, h('p', { id: 'remove-help', class: 'muted' }, t('removeHelp')), h('label', { for: 'confirm-id' }, t('confirmId')), confirm,
  h('button', { type: 'submit', class: 'danger', id: 'delete' }, t('deleteNow')));
  main.append(h('h2', {}, t('actions')), h('div', { class: 'actions' },
    h('section', { 'aria-labelledby': 'ban-title' }, h('h3', { id: 'ban-title' }, t('ban')), banForm, h('p', {}, unban)),
    h('section', { 'aria-labelledby': 'roles-title' }, h('h3', { id: 'roles-title' }, t('setRoles')), rolesForm),
    h('section', { 'aria-labelledby': 'remove-title' }, h('h3', { id: 'remove-title' }, t('remove')), removeForm)));
}

function localInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

async function eventsPage(main) {
  document.title = `${t('events')} · ${t('title')}`;
  const query = params();
  const kind = h('select', { id: 'kind' }, h('option', { value: '' }, t('anyKind')),
    KINDS.map((k) => h('option', { value: k, selected: query.get('kind') === k }, k)));
  const user = h('input', { id: 'user', value: query.get('user') || '', size: 38 });
  const since = h('input', { id: 'since', type: 'datetime-local', value: localInput(query.get('since')) });
  const until = h('input', { id: 'until', type: 'datetime-local', value: localInput(query.get('until')) });
  const form = h('form', { class: 'row', onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    if (kind.value) next.set('kind', kind.value);
    if (user.value.trim()) next.set('user', user.value.trim());
    if (since.value) next.set('since', new Date(since.value).toISOString());
    if (until.value) next.set('until', new Date(until.value).toISOString());
    location.hash = `#/events?${next}`;
  } }, h('label', { for: 'kind' }, t('kind'), kind), h('label', { for: 'user' }, t('id'), user),
  h('label', { for: 'since' }, t('since'), since), h('label', { for: 'until' }, t('until').split(' (')[0].split('（')[0], until),
  h('button', { type: 'submit', class: 'primary' }, t('filter')));
  main.append(h('h1', {}, t('events')), form);
  const request = new URLSearchParams({ limit: '50' });
  for (const name of ['kind', 'user', 'since', 'until', 'cursor']) {
    if (query.get(name)) request.set(name, query.get(name));
  }
  const page = await api('GET', `/admin/v1/events?${request}`);
  const rows = page.events.map((e) => {
    const [at, k, app, actor, ip, details] = eventRows([e])[0];
    const who = e.user_id ? h('td', { class: 'mono' }, h('a', { href: `#/users/${e.user_id}` }, e.user_id)) : '';
    return [at, k, who, app, actor, ip, details];
  });
  main.append(table([t('time'), t('kind'), t('id'), t('app'), t('actor'), t('ip'), t('details')], rows, t('noEvents')));
  main.append(pager('#/events', query, page.next_cursor));
}

// Routing ----------------------------------------------------------------------------

let renders = 0;

// Draws the page the hash names. Each page is built off the document and swapped in at
// the end, and only by the latest render: a click while a page loads never mixes two.
async function render() {
  const generation = ++renders;
  const hash = location.hash;
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
  document.querySelector('.skip').textContent = t('skip');
  const shown = document.getElementById('main');
  const main = document.createElement('div');
  if (!me && sessionStorage.getItem(TOKEN_KEY)) {
    try {
      me = await api('GET', '/admin/v1/token');
    } catch (err) {
      sessionStorage.removeItem(TOKEN_KEY);
    }
  }
  const route = (location.hash.slice(1) || '/').split('?')[0];
  const active = route.startsWith('/users') ? 'users' : route.startsWith('/events') ? 'events' : 'overview';
  if (generation !== renders) return;
  header(me ? active : null);
  if (!me) {
    signInPage(main);
    shown.replaceChildren(...main.childNodes);
    shown.dataset.page = 'sign-in';
    shown.dataset.hash = hash;
    return;
  }
  shown.setAttribute('aria-busy', 'true');
  try {
    if (route === '/' || route === '') await overviewPage(main);
    else if (route === '/users') await usersPage(main);
    else if (route.startsWith('/users/')) await userPage(main, decodeURIComponent(route.slice('/users/'.length)));
    else if (route === '/events') await eventsPage(main);
    else await overviewPage(main);
  } catch (err) {
    if (generation === renders) status(err.message, 'error');
  } finally {
    if (generation === renders) {
      shown.replaceChildren(...main.childNodes);
      // Which page is drawn, for tests and styles: the hash's route.
      shown.dataset.page = route;
      shown.dataset.hash = hash;
      shown.removeAttribute('aria-busy');
    }
  }
}

window.addEventListener('hashchange', async () => {
  status('');
  await render();
  showFlash();
  // Screen readers and keyboards start at the new page, not at the link that led there.
  document.getElementById('main').focus();
});
document.addEventListener('DOMContentLoaded', () => {
  // The skip link moves focus without changing the hash (which names the page).
  document.querySelector('.skip').addEventListener('click', (e) => {
    e.preventDefault();
    document.getElementById('main').focus();
  });
  render();
});
