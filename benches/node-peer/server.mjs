// The Node peer: what a returning login costs in one Node.js process written the usual way
// (fastify + jose + better-sqlite3), doing what shared/tools/floor does: ask the fake
// WeChat, find or add the openid in SQLite, sign an ES256 access token. A yardstick for
// wxauth's returning login (docs/performance.md), not a product.
//
// PEER_WECHAT (default http://127.0.0.1:18190) and PEER_LISTEN (default 127.0.0.1:18500).
import { randomUUID } from 'node:crypto';
import Database from 'better-sqlite3';
import Fastify from 'fastify';
import { SignJWT, generateKeyPair } from 'jose';
import { Pool } from 'undici';

const base = process.env.PEER_WECHAT ?? 'http://127.0.0.1:18190';
const prefix = `${base}/sns/jscode2session?appid=wxperf000000000000&secret=perf-secret&grant_type=authorization_code&js_code=`;
const [host, port] = (process.env.PEER_LISTEN ?? '127.0.0.1:18500').split(':');
const TTL = 900;
// undici's Pool rather than fetch: about twice the rate here, so the peer is the faster of
// the two usual ways to call WeChat.
const wechat = new Pool(base, { connections: 128, pipelining: 1 });
const path = prefix.slice(base.length);

// WAL and synchronous=NORMAL: SQLite's usual server settings, no fsync per commit (as
// sled and the floor's map do not wait for the disk on a returning login either).
const db = new Database(':memory:' === process.env.PEER_DB ? ':memory:' : (process.env.PEER_DB ?? 'peer.sqlite'));
db.pragma('journal_mode = WAL');
db.pragma('synchronous = NORMAL');
db.exec('CREATE TABLE IF NOT EXISTS users (openid TEXT PRIMARY KEY, id TEXT NOT NULL, created_at INTEGER NOT NULL)');
const find = db.prepare('SELECT id FROM users WHERE openid = ?').pluck();
const add = db.prepare('INSERT INTO users (openid, id, created_at) VALUES (?, ?, ?) ON CONFLICT (openid) DO NOTHING');

const { privateKey } = await generateKeyPair('ES256');
const app = Fastify({ logger: false });

app.get('/healthz', async () => ({ status: 'ok' }));

app.post('/v1/login', async (req, reply) => {
  const code = req.body?.code;
  if (typeof code !== 'string' || code.length === 0 || code.length > 128 || !/^[\x20-\x7e]+$/.test(code)) {
    return reply.code(400).send({ error: 'invalid code' });
  }
  let wx;
  try {
    const res = await wechat.request({ method: 'GET', path: path + encodeURIComponent(code) });
    wx = JSON.parse(await res.body.text());
  } catch {
    return reply.code(502).send({ error: 'upstream' });
  }
  const openid = wx.openid;
  if (typeof openid !== 'string') return reply.code(502).send({ error: 'upstream json' });
  let id = find.get(openid);
  let created = false;
  if (id === undefined) {
    const fresh = randomUUID();
    created = add.run(openid, fresh, Date.now()).changes === 1;
    id = created ? fresh : find.get(openid);
  }
  const iat = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({ openid, jti: randomUUID() })
    .setProtectedHeader({ alg: 'ES256', kid: 'perf-key-1' })
    .setIssuer('https://auth.perf.local').setAudience('perf-app').setSubject(id)
    .setIssuedAt(iat).setNotBefore(iat).setExpirationTime(iat + TTL)
    .sign(privateKey);
  reply.header('cache-control', 'no-store');
  return { access_token: token, token_type: 'Bearer', expires_in: TTL, user: { id, openid, created } };
});

await app.listen({ host, port: Number(port) });
console.error(`node peer listening on ${host}:${port}`);
