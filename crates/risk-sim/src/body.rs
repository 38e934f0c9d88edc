//! The recommendation body, shaped like the documented `GET /risk/v1/recommendation` response.
//!
//! Every required field of the API reference is present with its documented JSON type, and most
//! optional `context` fields too, so a client written against the real API parses it unchanged.
//! Values that identify the action (`context.action_id`, device ids) are derived from the action
//! token or user with SHA-256, so they are stable across calls; `id` is fresh for every answer,
//! as each call issues a new recommendation.

use serde_json::{json, Map, Value};

use super::script::ScriptedAction;
use super::tokens::{random_hex, sha256_hex};

/// `context.client_id`, `application_id` and `tenant_id` of the simulated tenant (the reference's
/// example values).
const CLIENT_ID: &str = "d152ddd.ece93f4.c2a3d12.riskid.security";
const APPLICATION_ID: &str = "ece93f4";
const TENANT_ID: &str = "c2a3d12";

/// Device clock skew: `device_timestamp` is this much earlier than `action_performed_at`.
const DEVICE_SKEW_MS: u64 = 37;

/// Score from which generated signals, reasons and threats look suspicious.
const SUSPICIOUS_FROM: f64 = 80.0;

/// The answer body for `token` at `now_ms` (Unix epoch ms), before `omit` is applied.
///
/// A scripted `body` replaces the generated one entirely.
pub fn recommendation_body(token: &str, action: &ScriptedAction, now_ms: u64) -> Value {
    if let Some(body) = &action.body {
        return body.clone();
    }
    let kind = action.recommendation.to_ascii_uppercase();
    let suspicious = kind == "DENY"
        || action
            .risk_score
            .as_f64()
            .is_some_and(|score| score >= SUSPICIOUS_FROM);

    let mut recommendation = Map::new();
    recommendation.insert("type".into(), json!(action.recommendation));
    if let Some(result) = &action.result {
        recommendation.insert("result".into(), json!(result));
    }
    if let Some(challenge) = &action.challenge_type {
        recommendation.insert("challenge_type".into(), json!(challenge));
    }

    let mut body = Map::new();
    body.insert("id".into(), json!(random_hex::<32>()));
    body.insert("issued_at".into(), json!(now_ms));
    body.insert("recommendation".into(), Value::Object(recommendation));
    body.insert("risk_score".into(), action.risk_score.clone());
    body.insert(
        "context".into(),
        Value::Object(context(token, action, now_ms)),
    );
    body.insert(
        "risk_signals".into(),
        action
            .risk_signals
            .clone()
            .unwrap_or_else(|| risk_signals(suspicious)),
    );
    body.insert(
        "reasons".into(),
        json!(action
            .reasons
            .clone()
            .unwrap_or_else(|| default_reasons(&kind, suspicious))),
    );
    body.insert(
        "threats".into(),
        json!(action
            .threats
            .clone()
            .unwrap_or_else(|| default_threats(suspicious))),
    );
    if let Some(data) = &action.transaction_data {
        body.insert("transaction_data".into(), data.clone());
    }
    if let Some(rule) = &action.preview_rule {
        body.insert("preview_rule".into(), rule.clone());
    }
    Value::Object(body)
}

/// The `context` object: who, what, when and where the action was reported.
fn context(token: &str, action: &ScriptedAction, now_ms: u64) -> Map<String, Value> {
    let performed_at = now_ms.saturating_sub(action.age_ms);
    // The device belongs to the user when one is known, so a user's tokens share a device.
    let device_seed = action
        .user_id
        .as_deref()
        .or(action.claimed_user_id.as_deref())
        .unwrap_or(token);
    let device = sha256_hex(&format!("device:{device_seed}"));
    let correlation = sha256_hex(&format!("correlation:{token}"));

    let mut ctx = Map::new();
    let mut put = |key: &str, value: Value| {
        ctx.insert(key.to_owned(), value);
    };
    put("action_id", json!(sha256_hex(&format!("action:{token}"))));
    put("action_type", json!(action.action_type));
    put("action_performed_at", json!(performed_at));
    put(
        "device_timestamp",
        json!(performed_at.saturating_sub(DEVICE_SKEW_MS)),
    );
    put("client_id", json!(CLIENT_ID));
    put("application_id", json!(APPLICATION_ID));
    put("tenant_id", json!(TENANT_ID));
    put("device_id", json!(format!("sim-device-{}", &device[..32])));
    put(
        "correlation_id",
        json!(format!(
            "{}-{}-{}-{}-{}",
            &correlation[..8],
            &correlation[8..12],
            &correlation[12..16],
            &correlation[16..20],
            &correlation[20..32]
        )),
    );
    put(
        "device_fingerprint",
        json!(sha256_hex(&format!("fingerprint:{device_seed}"))),
    );
    put(
        "device_public_key",
        json!(sha256_hex(&format!("public-key:{device_seed}"))),
    );
    if let Some(user) = &action.user_id {
        put("user_id", json!(user));
    }
    if let Some(claimed) = &action.claimed_user_id {
        put("claimed_user_id", json!(claimed));
    }
    put(
        "location",
        json!(format!("https://app.example.com/{}", action.action_type)),
    );
    put("ip", json!("198.51.100.23"));
    put("ip_country", json!("US"));
    put("ip_region", json!("California"));
    put("ip_location_city", json!("Los Angeles"));
    // Typed `string` in the reference (its example shows a bare number); the declared type wins.
    put("ip_location_zip", json!("90012"));
    put("ip_location_longitude", json!("-118.2437"));
    put("ip_location_latitude", json!("34.0522"));
    put("ip_asn_name", json!("AS174 Cogent Communications"));
    put("ip_asn_id", json!("AS174"));
    put("ip_organization_name", json!("Cogent Communications"));
    put("ip_organization_type", json!("isp"));
    put("ip_location_timezone", json!("America/Los_Angeles"));
    put("device_timezone", json!("America/Los_Angeles"));
    put("device_languages", json!(["en-US", "en"]));
    put("device_platform", json!("desktop"));
    put("os_name", json!("macOS"));
    put("os_version", json!("14.1.0"));
    put("browser_name", json!("Chrome"));
    put("browser_version", json!("124"));
    put(
        "user_agent",
        json!("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"),
    );
    for (key, value) in &action.context {
        ctx.insert(key.clone(), value.clone());
    }
    ctx
}

/// `risk_signals` in the guide's shape: device, network, behavior and history groups.
fn risk_signals(suspicious: bool) -> Value {
    json!({
        "device": {
            "incognito": false,
            "tampered": false,
            "emulated": suspicious,
            "spoofed": false,
            "tz_mismatch": suspicious,
        },
        "network": {
            "vpn": false,
            "tor": suspicious,
            "hosting": false,
            "proxy": suspicious,
            "anonymizer": false,
        },
        "behavior": {
            "typing_velocity": if suspicious { 0.867 } else { 0.212 },
            "input_method": [if suspicious { "is_paste" } else { "is_typing" }],
            "no_user_interaction": suspicious,
        },
        "history": {},
    })
}

/// Reasons from the guide's list that fit the recommendation.
fn default_reasons(kind: &str, suspicious: bool) -> Vec<String> {
    let reasons: &[&str] = match kind {
        "TRUST" => &["PROFILE_TRUSTED", "USER_TRUSTED"],
        "CHALLENGE" => &["PROFILE_DEVICE_NEW", "PROFILE_LOCATION_NEW"],
        "DENY" => &["BEHAVIOR_BOT", "IP_RISKY_REPUTATION"],
        _ if suspicious => &["IP_RISKY_REPUTATION", "DEVICE_SUSPICIOUS_PLATFORM"],
        _ => &["ACTION_IS_LEGIT", "PROFILE_DEVICE_FAMILIAR"],
    };
    reasons.iter().map(|r| (*r).to_owned()).collect()
}

fn default_threats(suspicious: bool) -> Vec<String> {
    if suspicious {
        vec!["ACCOUNT_TAKEOVER".to_owned()]
    } else {
        Vec::new()
    }
}

/// Removes each dotted path (`risk_score`, `context.user_id`, `recommendation.type`) from `body`;
/// paths that do not exist are ignored.
pub fn omit_paths(body: &mut Value, paths: &[String]) {
    for path in paths {
        remove_path(body, path);
    }
}

fn remove_path(body: &mut Value, path: &str) {
    let (parent, leaf) = match path.rsplit_once('.') {
        Some((parent, leaf)) => (parent.split('.').try_fold(body, |v, k| v.get_mut(k)), leaf),
        None => (Some(body), path),
    };
    if let Some(Value::Object(map)) = parent {
        map.remove(leaf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_hex64(v: &Value) -> bool {
        v.as_str()
            .is_some_and(|s| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    #[test]
    fn default_body_has_every_required_field() {
        let body = recommendation_body("tok", &ScriptedAction::default(), 1_700_000_000_000);
        assert!(is_hex64(&body["id"]));
        assert_eq!(body["issued_at"], json!(1_700_000_000_000_u64));
        assert_eq!(body["recommendation"], json!({"type": "ALLOW"}));
        assert_eq!(body["risk_score"], json!(10));
        assert!(body["reasons"].is_array());
        assert!(body["threats"].is_array());
        for group in ["device", "network", "behavior", "history"] {
            assert!(body["risk_signals"][group].is_object(), "{group}");
        }
        let ctx = &body["context"];
        assert!(is_hex64(&ctx["action_id"]));
        assert_eq!(ctx["action_type"], json!("login"));
        assert_eq!(ctx["action_performed_at"], json!(1_700_000_000_000_u64));
        for key in ["application_id", "device_id", "device_fingerprint", "ip"] {
            assert!(ctx[key].is_string(), "{key}");
        }
        assert!(ctx.get("user_id").is_none());
        assert!(ctx.get("claimed_user_id").is_none());
        assert!(body.get("transaction_data").is_none());
        assert!(body.get("preview_rule").is_none());
    }

    #[test]
    fn action_id_is_stable_per_token_and_id_is_not() {
        let action = ScriptedAction::default();
        let a = recommendation_body("tok-1", &action, 1);
        let b = recommendation_body("tok-1", &action, 2);
        let c = recommendation_body("tok-2", &action, 1);
        assert_eq!(a["context"]["action_id"], b["context"]["action_id"]);
        assert_ne!(a["context"]["action_id"], c["context"]["action_id"]);
        assert_ne!(a["id"], b["id"]);
    }

    #[test]
    fn scripted_fields_are_reflected() {
        let action = ScriptedAction {
            risk_score: json!(73.2),
            recommendation: "CHALLENGE".into(),
            challenge_type: Some("email_otp".into()),
            result: Some("success".into()),
            reasons: Some(vec!["PROFILE_DEVICE_NEW".into()]),
            action_type: "withdraw".into(),
            user_id: Some("alice".into()),
            claimed_user_id: Some("alice@example.com".into()),
            age_ms: 5_000,
            threats: Some(vec!["NEW_FRAUD_ACCOUNT".into()]),
            transaction_data: Some(json!({"amount": 120, "currency": "USD"})),
            preview_rule: Some(json!({"rule_name": "r", "recommendation": "DENY"})),
            context: [("ip".to_owned(), json!("203.0.113.9"))]
                .into_iter()
                .collect(),
            ..ScriptedAction::default()
        };
        let body = recommendation_body("tok", &action, 10_000);
        assert_eq!(
            body["recommendation"],
            json!({"type": "CHALLENGE", "result": "success", "challenge_type": "email_otp"})
        );
        assert_eq!(body["risk_score"], json!(73.2));
        assert_eq!(body["reasons"], json!(["PROFILE_DEVICE_NEW"]));
        assert_eq!(body["threats"], json!(["NEW_FRAUD_ACCOUNT"]));
        assert_eq!(body["transaction_data"]["amount"], json!(120));
        assert_eq!(body["preview_rule"]["rule_name"], json!("r"));
        let ctx = &body["context"];
        assert_eq!(ctx["action_type"], json!("withdraw"));
        assert_eq!(ctx["user_id"], json!("alice"));
        assert_eq!(ctx["claimed_user_id"], json!("alice@example.com"));
        assert_eq!(ctx["action_performed_at"], json!(5_000));
        assert_eq!(ctx["ip"], json!("203.0.113.9"));
    }

    #[test]
    fn body_override_is_returned_verbatim() {
        let action = ScriptedAction {
            body: Some(json!({"anything": [1, 2]})),
            ..ScriptedAction::default()
        };
        assert_eq!(
            recommendation_body("tok", &action, 1),
            json!({"anything": [1, 2]})
        );
    }

    #[test]
    fn omit_removes_top_level_and_nested_fields() {
        let mut body = recommendation_body("tok", &ScriptedAction::default(), 1);
        omit_paths(
            &mut body,
            &[
                "risk_score".into(),
                "context.action_id".into(),
                "recommendation.type".into(),
                "context.nope.deeper".into(),
                "missing".into(),
            ],
        );
        assert!(body.get("risk_score").is_none());
        assert!(body["context"].get("action_id").is_none());
        assert!(body["context"].get("action_type").is_some());
        assert_eq!(body["recommendation"], json!({}));
    }
}
