//! Typed configuration: one YAML file, overridable by `RISKGATE_*` environment variables
//! and CLI flags, fully validated before any listener binds.
//!
//! Unknown fields are rejected (`deny_unknown_fields`) so a typo fails start-up with a
//! message naming the field instead of silently falling back to a default.

mod client_address;
pub mod duration;
mod identity;
mod lifecycle;
mod limits;
pub mod proxy;
mod risk;
mod routes;
mod state;
mod strip;
mod tls;

pub use client_address::ClientAddressConfig;
pub use identity::{
    IdentityConfig, JwtMetadataSource, StepUpConfig, TrustedHeader, TrustedHeaderFormat,
};
pub use lifecycle::{ReloadConfig, ShutdownConfig};
pub use limits::LimitsConfig;
pub use risk::{
    BandThresholds, BreakerConfig, CacheConfig, FailMode, NegativeCacheConfig, Region, RiskConfig,
    TokenRefreshConfig,
};
pub use routes::{DefaultAnswer, HostConfig, NearMiss, ResourceSpec, RiskMode, RouteConfig};
pub use state::{OnFailure, RedisConfig, StateConfig, StoreKind};
pub use tls::TlsConfig;

use crate::source::SourceLocation;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A configuration problem, always naming the field or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The YAML did not parse into the typed config (unknown field, wrong type, ...).
    #[error("{at}: invalid config: {message}")]
    Parse {
        /// The file, and the line and column when the parser knows them.
        at: SourceLocation,
        /// The parser's message, which names the field.
        message: String,
    },
    /// A field parsed but its value is not acceptable.
    #[error("invalid config field `{field}`: {message}")]
    Field {
        /// Dotted path of the field, e.g. `risk.bands.high_from`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// Shorthand for a field error.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The whole riskgate configuration. Every field but `policies` may be left out; the
/// values it then takes are those of [`Config::default`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening addresses.
    #[serde(default)]
    pub listen: Listen,
    /// `enforce` answers what it decides; `dry_run` always answers 200 but logs and
    /// counts what it would have answered (for mesh roll-outs).
    #[serde(default)]
    pub mode: Mode,
    /// Where the Cedar schema, policies and entities live (required: there is no default).
    pub policies: PolicyPaths,
    /// How the principal is established from verified identity.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// Extra request headers removed before the request reaches the upstream on allow, in
    /// addition to the built-in list (`x-user-id`, `x-jwt-payload`, `x-risk-*`,
    /// `x-riskgate-*`, the action-token header and the trusted identity header), which a
    /// configuration cannot drop. A trailing `*` matches a prefix; names are case-insensitive.
    #[serde(default)]
    pub strip_headers: Option<Vec<String>>,
    /// The risk recommendation API; absent means no route may require risk. Code that
    /// needs the risk settings in force either way reads [`Config::risk_or_default`].
    #[serde(default)]
    pub risk: Option<RiskConfig>,
    /// Method + path (+ host) → Cedar action and resource.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Per-host settings: default answer, CORS preflight.
    #[serde(default)]
    pub hosts: Vec<HostConfig>,
    /// Answer when no route matches and the host has no default of its own.
    #[serde(default)]
    pub default: DefaultAnswer,
    /// Hot reload of policies, schema, entities and routes.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Graceful shutdown timing.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// riskgate's own maxima for one Check (headers, path, body, message size).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where state shared across replicas lives (use ledger, ...); default per replica.
    #[serde(default)]
    pub state: StateConfig,
    /// Which address is the client's (`x-forwarded-for` hops to trust).
    #[serde(default)]
    pub client_address: ClientAddressConfig,
}

/// gRPC and admin listening addresses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// ext_authz gRPC (Check, health; reflection when `reflection` is set).
    pub grpc: SocketAddr,
    /// Admin HTTP: `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
    /// TLS (and client certificates) on the gRPC listener; absent = plaintext.
    pub tls: Option<TlsConfig>,
    /// Serve gRPC server reflection on the gRPC port. Off by default: it lists riskgate's
    /// services to any caller, which only debugging tools (grpcurl) need.
    pub reflection: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            grpc: SocketAddr::from(([0, 0, 0, 0], 9001)),
            admin: SocketAddr::from(([0, 0, 0, 0], 9002)),
            tls: None,
            reflection: false,
        }
    }
}

/// Enforcement mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answer what is decided.
    #[default]
    Enforce,
    /// Answer 200 always; log and count the answer that enforcement would have given.
    DryRun,
}

/// Locations of the Cedar inputs. `dir` and `schema` are required in the file; the
/// `Default` (empty paths) only serves configs built in code.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyPaths {
    /// Directory holding `*.cedar` files.
    pub dir: PathBuf,
    /// The Cedar schema (`.cedarschema`).
    pub schema: PathBuf,
    /// Entities JSON (e.g. which user owns which account); optional.
    #[serde(default)]
    pub entities: Option<PathBuf>,
    /// A second directory of `*.cedar` files evaluated beside the live set on every Check
    /// (same schema and entities) without affecting the answer; disagreements are logged
    /// and counted, to preview a change on real traffic before promoting it.
    #[serde(default)]
    pub shadow_dir: Option<PathBuf>,
}

impl Config {
    /// The risk settings in force: the `risk` section, or its defaults when there is none
    /// (so callers never repeat a default such as the token header or `retry_after`).
    pub fn risk_or_default(&self) -> RiskConfig {
        self.risk.clone().unwrap_or_default()
    }

    /// Lower-cased strip patterns in force: the configured list, or the default list plus
    /// the action-token header (a credential for the risk API the upstream has no use for).
    pub fn effective_strip_headers(&self) -> Vec<String> {
        let mut list: Vec<String> = ["x-user-id", "x-jwt-payload", "x-risk-*", "x-riskgate-*"]
            .into_iter()
            .map(String::from)
            .collect();
        if let Some(risk) = &self.risk {
            list.push(risk.token_header.clone());
        }
        if let Some(h) = &self.identity.trusted_header {
            list.push(h.name.clone());
        }
        list.extend(self.strip_headers.iter().flatten().cloned());
        // every `-`/`_` spelling: `x_user_id` reaches many servers as `x-user-id`
        let mut list: Vec<String> = list
            .iter()
            .flat_map(|h| strip::spellings(&h.to_ascii_lowercase()))
            .collect();
        list.sort();
        list.dedup();
        list
    }
}

impl Config {
    /// Reads, parses, applies environment overrides and validates a config file.
    /// Relative policy paths are resolved against the config file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::load_text(path, &text)
    }

    /// Like [`Config::load`], over the file's text already read (so a caller can hash
    /// exactly the bytes it parsed).
    pub fn load_text(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let mut config = Config::from_yaml(text).map_err(|e| match e {
            ConfigError::Parse { at, message } => ConfigError::Parse {
                at: SourceLocation {
                    file: path.to_owned(),
                    ..at
                },
                message,
            },
            other => other,
        })?;
        config.apply_env(|name| std::env::var(name).ok())?;
        if let Some(base) = path.parent() {
            config.resolve_paths(base);
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses YAML text (no env overrides, no path resolution, no validation).
    pub fn from_yaml(text: &str) -> Result<Config, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let message = e.to_string();
            ConfigError::Parse {
                at: SourceLocation::of_yaml(Path::new("<inline>"), &e),
                message: duration::explain_duplicate(&message).unwrap_or(message),
            }
        })
    }

    /// Applies `RISKGATE_*` overrides read through `lookup` (injectable for tests).
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(v) = lookup("RISKGATE_GRPC_LISTEN") {
            self.listen.grpc = parse_addr("RISKGATE_GRPC_LISTEN", &v)?;
        }
        if let Some(v) = lookup("RISKGATE_ADMIN_LISTEN") {
            self.listen.admin = parse_addr("RISKGATE_ADMIN_LISTEN", &v)?;
        }
        if let Some(v) = lookup("RISKGATE_MODE") {
            self.mode = match v.as_str() {
                "enforce" => Mode::Enforce,
                "dry_run" => Mode::DryRun,
                _ => {
                    return Err(ConfigError::field(
                        "RISKGATE_MODE",
                        format!("expected `enforce` or `dry_run`, got `{v}`"),
                    ))
                }
            };
        }
        if let Some(risk) = self.risk.as_mut() {
            risk.apply_env(&lookup)?;
        }
        self.state.apply_env(&lookup)?;
        Ok(())
    }

    /// Makes relative file paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.policies.dir);
        fix(&mut self.policies.schema);
        if let Some(e) = self.policies.entities.as_mut() {
            fix(e);
        }
        if let Some(d) = self.policies.shadow_dir.as_mut() {
            fix(d);
        }
        if let Some(risk) = self.risk.as_mut() {
            if let Some(f) = risk.client_secret_file.as_mut() {
                fix(f);
            }
        }
        if let Some(tls) = self.listen.tls.as_mut() {
            tls.resolve_paths(base);
        }
        self.state.resolve_paths(base);
    }

    /// Checks values that parse but make no sense, naming the field at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, pattern) in self.strip_headers.iter().flatten().enumerate() {
            let name = pattern.strip_suffix('*').unwrap_or(pattern);
            let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(token_char) {
                return Err(ConfigError::field(
                    format!("strip_headers[{i}]"),
                    format!("`{pattern}` must be a header name, optionally ending in `*`"),
                ));
            }
        }
        self.identity.validate()?;
        self.shutdown.validate()?;
        self.limits.validate()?;
        if let Some(tls) = &self.listen.tls {
            tls.validate()?;
        }
        if let Some(risk) = &self.risk {
            risk.validate()?;
        }
        self.state.validate(&self.routes)?;
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(&format!("routes[{i}]"))?;
            if route.risk != RiskMode::Off && self.risk.is_none() {
                return Err(ConfigError::field(
                    format!("routes[{i}].risk"),
                    "route asks for risk but the config has no `risk` section (set `risk: off`)",
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, host) in self.hosts.iter().enumerate() {
            if !seen.insert(host.host.to_ascii_lowercase()) {
                return Err(ConfigError::field(
                    format!("hosts[{i}].host"),
                    format!("host `{}` is listed twice", host.host),
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Top-level fields that differ from `running` and only take effect after a restart:
    /// everything except `policies`, `routes`, `hosts` and `default`, which hot-reload.
    pub fn restart_only_changes(&self, running: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut check = |name: &'static str, same: bool| {
            if !same {
                changed.push(name);
            }
        };
        check("listen", self.listen == running.listen);
        check("mode", self.mode == running.mode);
        check("identity", self.identity == running.identity);
        check("strip_headers", self.strip_headers == running.strip_headers);
        check("risk", self.risk == running.risk);
        check("reload", self.reload == running.reload);
        check("shutdown", self.shutdown == running.shutdown);
        check("limits", self.limits == running.limits);
        check("state", self.state == running.state);
        check(
            "client_address",
            self.client_address == running.client_address,
        );
        changed
    }
}

fn parse_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::field(field, format!("`{value}` is not a socket address")))
}

#[cfg(test)]
mod tests {
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
        let mut config = Config::from_yaml(
            "policies: { dir: p, schema: p/s.cedarschema, shadow_dir: shadow }\n",
        )?;
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
}
