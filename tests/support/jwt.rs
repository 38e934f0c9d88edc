//! User JWTs minted at test time with the committed TEST key (`tests/data/jwt/signing-key.pem`,
//! ES256). Envoy's `jwt_authn` in `deploy/envoy/envoy.yaml` trusts its public half (inline JWKS).
//!
//! ```ignore
//! let token = jwt::valid("u1");                                        // plain user
//! let mfa = jwt::mint(&jwt::claims("u1").with("amr", json!(["pwd", "mfa"])));
//! client.get(url).bearer_auth(&token)
//! ```

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

/// The issuer Envoy's provider expects.
pub const ISSUER: &str = "https://issuer.riskgate.test";
/// The audience Envoy's provider expects.
pub const AUDIENCE: &str = "bank-api";
/// The `kid` of the test key in `tests/data/jwt/jwks.json`.
pub const KID: &str = "riskgate-test-1";
/// Lifetime of a valid token, in seconds.
pub const LIFETIME_S: i64 = 600;

const SIGNING_KEY_PEM: &str = include_str!("../data/jwt/signing-key.pem");

/// Now in epoch seconds, from the wall clock riskgate reads.
fn now() -> i64 {
    riskgate::clock::now_ms() / 1000
}

/// A set of claims, built up with [`Claims::with`].
#[derive(Clone, Debug)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// Sets (or replaces) claim `name`.
    pub fn with(mut self, name: &str, value: Value) -> Claims {
        self.0.insert(name.to_owned(), value);
        self
    }

    /// Removes claim `name`.
    pub fn without(mut self, name: &str) -> Claims {
        self.0.remove(name);
        self
    }

    pub fn as_json(&self) -> Value {
        Value::Object(self.0.clone())
    }
}

/// The claims of a valid token for user `sub`: `iss`, `aud`, `sub`, `iat` = `auth_time` = now,
/// `exp` = now + [`LIFETIME_S`].
pub fn claims(sub: &str) -> Claims {
    let now = now();
    let mut map = Map::new();
    map.insert("iss".into(), json!(ISSUER));
    map.insert("aud".into(), json!(AUDIENCE));
    map.insert("sub".into(), json!(sub));
    map.insert("iat".into(), json!(now));
    // when the user authenticated: the shipped step-up config (identity.step_up.max_age_s)
    // counts an MFA only if this is recent
    map.insert("auth_time".into(), json!(now));
    map.insert("exp".into(), json!(now + LIFETIME_S));
    Claims(map)
}

/// Signs `claims` with the test key (ES256, `kid` set).
pub fn mint(claims: &Claims) -> String {
    let key = EncodingKey::from_ec_pem(SIGNING_KEY_PEM.as_bytes())
        .expect("tests/data/jwt/signing-key.pem is an EC P-256 PKCS#8 key");
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(KID.to_owned());
    jsonwebtoken::encode(&header, &claims.as_json(), &key).expect("sign a test JWT")
}

/// A valid token for `sub`.
pub fn valid(sub: &str) -> String {
    mint(&claims(sub))
}

/// A valid token for `sub` with extra claims, e.g. `json!({"amr": ["pwd","mfa"], "acr": "aal2"})`.
pub fn valid_with(sub: &str, extra: Value) -> String {
    let mut c = claims(sub);
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            c = c.with(&k, v);
        }
    } else {
        panic!("valid_with: extra claims must be a JSON object, got {extra}");
    }
    mint(&c)
}

/// A correctly signed token for `sub` that expired an hour ago (well past Envoy's 60 s clock skew).
pub fn expired(sub: &str) -> String {
    let now = now();
    mint(
        &claims(sub)
            .with("iat", json!(now - 7200))
            .with("exp", json!(now - 3600)),
    )
}

/// A correctly signed, unexpired token for `sub` from an issuer Envoy does not trust.
pub fn wrong_issuer(sub: &str) -> String {
    mint(&claims(sub).with("iss", json!("https://evil.example")))
}

/// A correctly signed, unexpired token for `sub` for another audience.
pub fn wrong_audience(sub: &str) -> String {
    mint(&claims(sub).with("aud", json!("other-api")))
}

/// A valid token for `sub` whose payload was then swapped for `forged_sub`'s: the signature
/// no longer matches.
pub fn tampered(sub: &str, forged_sub: &str) -> String {
    let good = valid(sub);
    let forged = valid(forged_sub);
    let good: Vec<&str> = good.split('.').collect();
    let forged: Vec<&str> = forged.split('.').collect();
    format!("{}.{}.{}", good[0], forged[1], good[2])
}
