//! Unit tests of the parent module (kept apart so the module reads in one screen).

use super::*;

const MINIMAL: &str = "policies: { dir: p, schema: p/s.cedarschema }\n";

#[test]
fn minimal_config_gets_safe_defaults() -> Result<(), ConfigError> {
    let config = Config::from_yaml(MINIMAL)?;
    config.validate()?;
    assert_eq!(config.mode, Mode::Enforce);
    assert_eq!(config.default, DefaultAnswer::Deny);
    assert!(config
        .effective_strip_headers()
        .iter()
        .any(|h| h == "x-risk-*"));
    let strip = config.effective_strip_headers();
    for underscored in ["x_user_id", "x_jwt_payload", "x_risk_*", "x_riskgate-*"] {
        assert!(strip.iter().any(|h| h == underscored), "{underscored}");
    }
    assert!(config.risk.is_none());
    Ok(())
}

/// The defaults documented in README.md's configuration reference, read from the one
/// place that holds them.
#[test]
fn defaults_are_the_documented_values() -> Result<(), ConfigError> {
    let ms = std::time::Duration::from_millis;
    let c = Config::default();
    assert_eq!(c.listen.grpc, SocketAddr::from(([0, 0, 0, 0], 9001)));
    assert_eq!(c.listen.admin, SocketAddr::from(([0, 0, 0, 0], 9002)));
    assert_eq!(c.listen.tls, None);
    assert!(!c.listen.reflection, "reflection off unless configured");
    let l = &c.listen;
    assert_eq!(
        (l.max_connections, l.fd_reserve, l.max_concurrent_streams),
        (1024, 64, 1024)
    );
    assert_eq!(
        (
            l.http2_keepalive_interval,
            l.http2_keepalive_timeout,
            l.idle_timeout,
            l.header_read_timeout
        ),
        (ms(30_000), ms(10_000), ms(300_000), ms(10_000))
    );
    assert_eq!(c.state.max_uses_per_principal, 1_000);
    assert_eq!(c.mode, Mode::Enforce);
    assert_eq!(c.default, DefaultAnswer::Deny);
    assert_eq!(c.reload.poll, ms(1_000));
    assert_eq!(
        (c.shutdown.drain, c.shutdown.grace),
        (ms(5_000), ms(20_000))
    );
    let jwt = c
        .identity
        .jwt_metadata
        .clone()
        .unwrap_or_else(|| JwtMetadataSource {
            namespace: String::new(),
            key: String::new(),
        });
    assert_eq!(
        (jwt.namespace.as_str(), jwt.key.as_str()),
        ("envoy.filters.http.jwt_authn", "jwt_payload")
    );
    assert_eq!(c.identity.claim, "sub");
    assert!(c.identity.issuers.is_empty() && c.identity.claims_as_attributes.is_empty());
    assert!(c.identity.trusted_header.is_none() && c.identity.step_up.is_none());
    assert_eq!(c.strip_headers, None);
    assert!(c.risk.is_none() && c.routes.is_empty() && c.hosts.is_empty());

    let r = c.risk_or_default();
    assert_eq!(r.token_header, "x-action-token");
    assert_eq!((r.budget, r.deadline_reserve), (ms(250), ms(20)));
    assert_eq!(r.max_age, ms(300_000));
    assert_eq!(r.max_response_bytes, 262_144);
    assert_eq!((r.cache.ttl, r.cache.max_entries), (ms(300_000), 100_000));
    assert_eq!(r.fail_mode, FailMode::Closed);
    assert_eq!(r.retry_after, ms(5_000));
    assert_eq!((r.bands.medium_from, r.bands.high_from), (40.0, 80.0));
    assert_eq!(
        (r.breaker.failure_threshold, r.breaker.open),
        (5, ms(10_000))
    );
    let t = &r.token_refresh;
    assert_eq!(t.at_percent, 80);
    assert_eq!(
        (t.min_interval, t.retry, t.timeout),
        (ms(1_000), ms(1_000), ms(5_000))
    );
    assert_eq!(r.default_challenge, "step_up");
    assert_eq!(TlsConfig::DEFAULT_RELOAD_POLL, ms(1_000));

    // What the parser fills in for absent fields is that same `Default`.
    let parsed = Config::from_yaml(&format!("{MINIMAL}risk: {{}}\n"))?;
    assert_eq!(parsed.risk_or_default(), RiskConfig::default());
    let defaults = Config {
        policies: parsed.policies.clone(),
        risk: Some(RiskConfig::default()),
        ..Config::default()
    };
    assert_eq!(parsed, defaults);
    Ok(())
}

#[test]
fn policies_stay_required() {
    let msg = Config::from_yaml("mode: enforce\n")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("policies"), "{msg}");
}

#[test]
fn unknown_field_is_named() {
    let err = Config::from_yaml(&format!("{MINIMAL}modee: dry_run\n"));
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("modee"), "{msg}");
}

#[test]
fn nested_unknown_field_is_named() {
    let yaml = format!("{MINIMAL}risk: {{ region: us, client_id: x, budgett_ms: 5 }}\n");
    let msg = Config::from_yaml(&yaml)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("budgett_ms"), "{msg}");
}

#[test]
fn wrong_type_is_reported() {
    let yaml = format!("{MINIMAL}listen: {{ grpc: not-an-address }}\n");
    assert!(Config::from_yaml(&yaml).is_err());
}

#[test]
fn env_overrides_mode_and_listen() -> Result<(), ConfigError> {
    let mut config = Config::from_yaml(MINIMAL)?;
    config.apply_env(|name| match name {
        "RISKGATE_MODE" => Some("dry_run".into()),
        "RISKGATE_GRPC_LISTEN" => Some("127.0.0.1:1234".into()),
        _ => None,
    })?;
    assert_eq!(config.mode, Mode::DryRun);
    assert_eq!(config.listen.grpc.port(), 1234);
    Ok(())
}

#[test]
fn bad_env_value_names_the_variable() -> Result<(), ConfigError> {
    let mut config = Config::from_yaml(MINIMAL)?;
    let err = config.apply_env(|name| (name == "RISKGATE_MODE").then(|| "loud".into()));
    let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("RISKGATE_MODE"), "{msg}");
    Ok(())
}

#[test]
fn risk_route_without_risk_section_is_rejected() -> Result<(), ConfigError> {
    let yaml = format!(
        "{MINIMAL}routes: [{{ method: GET, path: /a, action: view_balance, risk: required, resource: {{ type: Application, id: bank }} }}]\n"
    );
    let msg = Config::from_yaml(&yaml)?
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("routes[0].risk"), "{msg}");
    Ok(())
}

#[test]
fn only_restart_fields_are_reported_as_restart_only() -> Result<(), ConfigError> {
    let running = Config::from_yaml(MINIMAL)?;
    let mut next = Config::from_yaml(&format!(
        "{MINIMAL}default: allow\nmode: dry_run\nshutdown: {{ drain: 1ms }}\n"
    ))?;
    assert_eq!(
        next.restart_only_changes(&running),
        vec!["mode", "shutdown"]
    );
    next.mode = Mode::Enforce;
    next.shutdown = ShutdownConfig::default();
    assert!(next.restart_only_changes(&running).is_empty());
    Ok(())
}

#[test]
fn shadow_dir_is_resolved_against_the_config_dir() -> Result<(), ConfigError> {
    let mut config =
        Config::from_yaml("policies: { dir: p, schema: p/s.cedarschema, shadow_dir: shadow }\n")?;
    config.resolve_paths(Path::new("/etc/riskgate"));
    assert_eq!(
        config.policies.shadow_dir.as_deref(),
        Some(Path::new("/etc/riskgate/shadow"))
    );
    Ok(())
}

#[test]
fn bad_strip_pattern_is_rejected() -> Result<(), ConfigError> {
    let yaml = format!("{MINIMAL}strip_headers: [\"x-*-id\"]\n");
    let msg = Config::from_yaml(&yaml)?
        .validate()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("strip_headers[0]"), "{msg}");
    for bad in ["x-é", "x y", "*", ""] {
        let yaml = format!("{MINIMAL}strip_headers: [\"{bad}\"]\n");
        let msg = Config::from_yaml(&yaml)?
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("strip_headers[0]"), "{bad}: {msg}");
    }
    Ok(())
}
