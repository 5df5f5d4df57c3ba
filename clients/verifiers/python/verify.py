"""Verifies wxauth access tokens offline with PyJWT: signature, issuer, audience, expiry and
type (at+jwt), with the JWKS fetched from wxauth and fetched again when a token names a key
id it does not know (after a key rotation). Needs `pip install "PyJWT[crypto]>=2.15"`."""

import jwt


class WxauthVerifier:
    def __init__(self, issuer: str, audience: str, **jwks_options):
        self.issuer = issuer
        self.audience = audience
        # Caches the JWKS; refetches it when a token's kid is not in the cache, at most
        # every 30 s (PyJWKClient's cooldown_duration).
        self.jwks = jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json", **jwks_options)

    def verify(self, token: str) -> dict:
        typ = (jwt.get_unverified_header(token).get("typ") or "").lower()
        if typ not in ("at+jwt", "application/at+jwt"):
            raise jwt.InvalidTokenError("not an access token (typ is not at+jwt)")
        key = self.jwks.get_signing_key_from_jwt(token)
        return jwt.decode(
            token,
            key,
            algorithms=["ES256", "EdDSA", "RS256"],
            issuer=self.issuer,
            audience=self.audience,
            leeway=30,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )  # claims["sub"]: the user id; claims["appid"], claims["openid"]
