// Driver for tests/api/clients.rs: reads tokens on stdin, one per line, and prints
// `ok <sub>` or `invalid <reason>` for each.
import { createInterface } from 'node:readline';
import { wxauthVerifier } from './verify.mjs';

const verify = wxauthVerifier({
  issuer: process.env.WXAUTH_ISSUER,
  audience: process.env.WXAUTH_AUDIENCE,
  jwksOptions: { cooldownDuration: 0 },
});
for await (const token of createInterface({ input: process.stdin })) {
  try {
    console.log(`ok ${(await verify(token)).sub}`);
  } catch (e) {
    console.log(`invalid ${e.code || e.message}`);
  }
}
