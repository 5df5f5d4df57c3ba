// Verifies wxauth access tokens offline with jose: signature, issuer, audience, expiry and
// type (at+jwt), with the JWKS fetched from wxauth and fetched again when a token names a
// key id it does not know (after a key rotation).
import { createRemoteJWKSet, jwtVerify } from 'jose';

export function wxauthVerifier({ issuer, audience, jwksOptions }) {
  // Cached; refetched on an unknown kid, at most every 30 s (jose's cooldownDuration).
  const jwks = createRemoteJWKSet(new URL(`${issuer}/.well-known/jwks.json`), jwksOptions);
  return async function verify(token) {
    const { payload } = await jwtVerify(token, jwks, {
      issuer,
      audience,
      typ: 'at+jwt',
      algorithms: ['ES256', 'EdDSA', 'RS256'],
      clockTolerance: 30,
      requiredClaims: ['sub', 'exp'],
    });
    return payload; // payload.sub: the user id; payload.appid, payload.openid
  };
}
