//! Typed configuration: one YAML file, overridable by `RISKGATE_*` environment variables
//! and CLI flags, fully validated before any listener binds.
//!
//! Unknown fields are rejected (`deny_unknown_fields`) so a typo fails start-up with a
//! message naming the field instead of silently falling back to a default.

mod answer;
mod body;
mod client_address;
mod context;
pub mod duration;
mod history;
mod identity;
mod lifecycle;
mod limits;
mod listen;
pub mod proxy;
mod risk;
mod routes;
mod state;
mod strip;
mod tls;

pub use answer::AnswerConfig;
pub use body::{BodyConfig, TransactionBinding, DEFAULT_MAX_BYTES};
pub use client_address::ClientAddressConfig;
pub use context::{ContextConfig, ContextField, FieldType, WorkloadConfig};
pub use history::HistoryConfig;
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
use std::time::Duration;

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
    /// What answers carry besides the verdict (dynamic metadata, `x-risk-*` headers…):
    /// nothing unless asked.
    #[serde(default)]
    pub answer: AnswerConfig,
    /// Request headers, query parameters and the calling workload put into Cedar's context.
    #[serde(default)]
    pub context: ContextConfig,
    /// The per-principal window of recent outcomes behind `context.history`.
    #[serde(default)]
    pub history: HistoryConfig,
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
    /// Most open gRPC connections; beyond it a new connection is closed at once (and
    /// counted). Lowered at start to the open-files limit minus `fd_reserve`.
    pub max_connections: usize,
    /// File descriptors kept free of gRPC connections, for the admin port (`/readyz`), the
    /// state store, the risk API and files.
    pub fd_reserve: usize,
    /// Most concurrent Checks (HTTP/2 streams) on one connection.
    pub max_concurrent_streams: u32,
    /// How often an HTTP/2 PING checks that a connection's peer is still there.
    #[serde(deserialize_with = "duration::millis")]
    pub http2_keepalive_interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    #[serde(deserialize_with = "duration::millis")]
    pub http2_keepalive_timeout: Duration,
    /// A connection with no Check in flight for this long is closed.
    #[serde(deserialize_with = "duration::millis")]
    pub idle_timeout: Duration,
    /// How long a new connection has to deliver its first request (TLS handshake, HTTP/2
    /// preface and the first request's headers) before it is closed.
    #[serde(deserialize_with = "duration::millis")]
    pub header_read_timeout: Duration,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            grpc: SocketAddr::from(([0, 0, 0, 0], 9001)),
            admin: SocketAddr::from(([0, 0, 0, 0], 9002)),
            tls: None,
            reflection: false,
            max_connections: 1024,
            fd_reserve: 64,
            max_concurrent_streams: 1024,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            header_read_timeout: Duration::from_secs(10),
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
        self.context.validate()?;
        self.history.validate()?;
        self.shutdown.validate()?;
        self.limits.validate()?;
        self.listen.validate()?;
        if let Some(tls) = &self.listen.tls {
            tls.validate()?;
        }
        if let Some(risk) = &self.risk {
            risk.validate()?;
        }
        self.state.validate(&self.routes)?;
        for (i, route) in self.routes.iter().enumerate() {
            route.validate(&format!("routes[{i}]"))?;
            if let Some(body) = &route.body {
                body.validate(
                    &format!("routes[{i}].body"),
                    route.risk,
                    self.limits.max_body_bytes,
                )?;
            }
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
        check("answer", self.answer == running.answer);
        check("context", self.context == running.context);
        changed
    }
}

fn parse_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::field(field, format!("`{value}` is not a socket address")))
}

#[cfg(test)]
mod tests;
