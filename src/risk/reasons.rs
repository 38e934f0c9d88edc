//! The reason codes the Recommendations guide documents. Metrics label reasons with these
//! (a bounded set); any other code counts as `OTHER`, so a changing API or a hostile one
//! cannot blow up the metric's cardinality.

/// Documented reason codes, sorted (binary-searched).
pub const DOCUMENTED_REASONS: &[&str] = &[
    "ACTION_IS_LEGIT",
    "ACTION_IS_SUSPECTED_FRAUD",
    "BEHAVIOR_BOT",
    "BEHAVIOR_BOT_TYPING",
    "BEHAVIOR_INHUMAN_INPUT",
    "BEHAVIOR_SUSPICIOUS_INPUT",
    "BEHAVIOR_SUSPICIOUS_MOVEMENT",
    "DEVICE_BOT",
    "DEVICE_COOKIE_REUSED",
    "DEVICE_EMULATED_GPU",
    "DEVICE_EMULATOR",
    "DEVICE_HISTORY_SUSPICIOUS_FINGERPRINT",
    "DEVICE_IMPOSSIBLE_TRAVEL",
    "DEVICE_INCOGNITO_BROWSER",
    "DEVICE_OLD_VERSION",
    "DEVICE_ORIGIN_ANOMALY",
    "DEVICE_PAYEE_VELOCITY",
    "DEVICE_PAYER_VELOCITY",
    "DEVICE_PLATFORM_ANOMALY",
    "DEVICE_PLATFORM_AUTOMATION",
    "DEVICE_PRIVATE_BROWSER",
    "DEVICE_PROFILE_VELOCITY",
    "DEVICE_RISKY_REPUTATION",
    "DEVICE_ROOTED",
    "DEVICE_SPOOFED",
    "DEVICE_SUSPECTED_BOT",
    "DEVICE_SUSPICIOUS_CPU_CORE",
    "DEVICE_SUSPICIOUS_DISPLAY",
    "DEVICE_SUSPICIOUS_LANGUAGE",
    "DEVICE_SUSPICIOUS_NETWORK",
    "DEVICE_SUSPICIOUS_PLATFORM",
    "DEVICE_SUSPICIOUS_TIMEZONE",
    "DEVICE_SUSPICIOUS_USERAGENT",
    "DEVICE_SUSPICIOUS_VELOCITY",
    "DEVICE_TAKEOVER",
    "DEVICE_TAMPERED",
    "DEVICE_VM",
    "IP_ACTION_VELOCITY",
    "IP_COUNTRY_BLOCKED",
    "IP_IS_BIZ",
    "IP_IS_GOV",
    "IP_IS_MIL",
    "IP_IS_VPN",
    "IP_PAYER_VELOCITY",
    "IP_RISKY_ANONYMIZE",
    "IP_RISKY_REPUTATION",
    "IP_TRUSTED",
    "PROFILE_ACTION_VELOCITY",
    "PROFILE_ACTIVITY_ANOMALY",
    "PROFILE_DEVICE_ANOMALY",
    "PROFILE_DEVICE_FAMILIAR",
    "PROFILE_DEVICE_FAMILIAR_MODEL",
    "PROFILE_DEVICE_NEW",
    "PROFILE_DEVICE_VELOCITY",
    "PROFILE_FAMILIAR",
    "PROFILE_IMPOSSIBLE_TRAVEL",
    "PROFILE_IP_FAMILIAR",
    "PROFILE_LOCATION_ANOMALY",
    "PROFILE_LOCATION_NEW",
    "PROFILE_NETWORK_ANOMALY",
    "PROFILE_TRUSTED",
    "USER_PROFILE_ANOMALY",
    "USER_TRUSTED",
];

/// The metric label for a reason code: itself when documented, else `OTHER`.
pub fn reason_label(code: &str) -> &'static str {
    match DOCUMENTED_REASONS.binary_search(&code) {
        Ok(i) => DOCUMENTED_REASONS[i],
        Err(_) => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_for_binary_search() {
        assert!(DOCUMENTED_REASONS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn unknown_codes_are_other() {
        assert_eq!(reason_label("BEHAVIOR_BOT"), "BEHAVIOR_BOT");
        assert_eq!(reason_label("IP_IS_VPN"), "IP_IS_VPN");
        assert_eq!(reason_label("SOMETHING_NEW"), "OTHER");
        assert_eq!(reason_label("<script>"), "OTHER");
    }
}
