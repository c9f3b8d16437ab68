"""JWT bearer authentication of incoming CDS Hooks calls, as CDS Hooks 2.0 specifies it.

What the specification says, and what this package does about it. Source: CDS Hooks 2.0, "Security and
Safety › Trusting CDS Clients" (https://cds-hooks.hl7.org/2.0/#trusting-cds-clients; the same text is in
github.com/cds-hooks/docs, docs/specification/current.md):

- "Each time a CDS Client transmits a request to a CDS Service, the request MUST include an
  `Authorization` header presenting the JWT as a “Bearer” token: `Authorization: Bearer {{JWT}}`"
  → no header, another scheme, or a value that is not a compact JWS is refused.
- "The CDS Client MUST use its private key to digitally sign the JWT" → the signature is verified with the
  issuer's public key; the key comes from configuration, never from the token alone.
- Header fields: "alg REQUIRED", "kid REQUIRED ... MUST be unique within the CDS Client's JWK Set",
  "typ REQUIRED ... Fixed value: `JWT`", "jku OPTIONAL ... The URL to the JWK Set" → all three required
  fields are checked; `kid` selects the key in the JWK Set.
- Payload fields: "iss REQUIRED", "aud REQUIRED string or array of string", "exp REQUIRED",
  "iat REQUIRED", "jti REQUIRED ... A nonce string value that uniquely identifies this authentication
  JWT (used to protect against replay attacks)", "tenant OPTIONAL" → all five are required; `exp` and
  `iat` are checked against our clock with a small skew; a `jti` seen before from the same issuer is
  refused (see `ReplayCache`); `tenant` is returned in the claims, not interpreted.
- "CDS Services SHOULD maintain an allowlist of the `iss` and `jku` fields to only the CDS Clients they
  trust." → only issuers in the configured list are accepted, and a `jku` header is honoured only if it
  is on that issuer's list: a URL taken from a token is never fetched otherwise (the token is not
  trusted before its signature is checked, and fetching an attacker's URL would hand them the key).
- "For CDS Hooks, this value [aud] MUST be the URL of the CDS Service endpoint being invoked" → the
  caller passes the endpoint URL; a string `aud` must equal it, an array must contain it.
- "The CDS Client MUST make its public key, expressed as a JSON Web Key (JWK), available in a JWK Set"
  and "If the `jku` header field is ommitted, the CDS Client and CDS Service SHALL communicate the JWK
  Set out-of-band." → each trusted issuer is configured with its JWK Set URL or a pinned public key.
- "JWTs SHALL NOT be signed used the `none` algorithm" and "JWTs SHALL NOT be signed using any symmetric
  algorithm ... all HMAC based algorithms ... SHALL NOT be used" → `none` and HS* are refused before
  any key is looked up.
- "both ES384 and RS384 are RECOMMENDED" and "CDS Services SHOULD consider the algorithms they understand
  and trust" → the RSA (RS*, PS*) and EC (ES*) signature algorithms are accepted, optionally narrowed
  per issuer; an algorithm must also fit the key it is checked with (RSA key → RS*/PS*, P-384 key →
  ES384, ...), so a token cannot choose how our key is used.

One module, one job: `config` reads the allow-list (at start-up), `keys` says which algorithms a key may
verify, `jwks` fetches and caches JWK Sets, `replay` remembers used `jti`s, `verifier` checks a call's token
with all of them. Importers use the names re-exported here.
"""
from cds.service.auth.config import AuthConfig, TrustedIssuer, normalised_base_url
from cds.service.auth.errors import AuthError
from cds.service.auth.keys import ACCEPTED_ALGORITHMS, VerificationKey, verification_key
from cds.service.auth.replay import (
    InProcessReplayCache,
    RedisReplayCache,
    ReplayCache,
    SqliteReplayCache,
    replay_cache,
    replay_cache_from_env,
)
from cds.service.auth.verifier import MAX_AUTHORIZATION_HEADER, JwtVerifier

__all__ = [
    "ACCEPTED_ALGORITHMS", "MAX_AUTHORIZATION_HEADER", "AuthConfig", "AuthError", "InProcessReplayCache",
    "JwtVerifier", "RedisReplayCache", "ReplayCache", "SqliteReplayCache", "TrustedIssuer", "VerificationKey",
    "normalised_base_url", "replay_cache", "replay_cache_from_env", "verification_key",
]
