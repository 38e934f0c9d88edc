//! State store configuration: where the state that must hold across replicas lives (the
//! use ledger now; budgets, negative entries and per-principal records next), and what a
//! store outage means.

use super::{duration, BreakerConfig, ConfigError, RiskMode, RouteConfig};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The `state:` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// `memory` (per replica: one replica, the demo, tests) or `redis` (shared).
    pub store: StoreKind,
    /// What a Check that needs the store gets while the store is unreachable.
    pub on_failure: OnFailure,
    /// With `on_failure: local`, routes with `max_uses` are accepted only when this is true:
    /// during an outage each replica counts uses alone, so a single-use token may be replayed
    /// once per replica.
    pub allow_local_uses: bool,
    /// Most time one store operation may take; beyond it the operation is a failure
    /// (legacy `timeout_ms`).
    #[serde(alias = "timeout_ms", deserialize_with = "duration::millis")]
    pub timeout: Duration,
    /// Capacity (entries) of the memory store, and of the per-replica fallback under `local`;
    /// when full of live entries a use is refused rather than an entry forgotten.
    pub max_entries: usize,
    /// Most uses one authenticated principal may count within the action age
    /// (`risk.max_age`), so one user cannot fill the ledger for everyone; beyond it that
    /// principal's writes get 503 + `retry-after`. Anonymous callers are not capped.
    pub max_uses_per_principal: u32,
    /// Breaker for the store: consecutive store faults that open it, and how long it stays open.
    pub breaker: BreakerConfig,
    /// The Redis store; required with `store: redis`.
    pub redis: Option<RedisConfig>,
    /// Share recommendations between replicas through the store (an L2 cache behind the
    /// per-replica one): a token assessed on one replica is not fetched again on another.
    pub share_recommendations: bool,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            store: StoreKind::Memory,
            on_failure: OnFailure::Closed,
            allow_local_uses: false,
            timeout: Duration::from_millis(50),
            max_entries: 100_000,
            max_uses_per_principal: 1_000,
            breaker: BreakerConfig::default(),
            redis: None,
            share_recommendations: false,
        }
    }
}

/// Which store holds the state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// In this process only.
    #[default]
    Memory,
    /// A Redis (>= 7) server or Cluster shared by all replicas.
    Redis,
}

/// Behaviour while the store is unreachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The operation fails: a Check that must consume a use answers 503 + `retry-after`.
    #[default]
    Closed,
    /// Each replica falls back to its own memory store until the store answers again.
    Local,
}

/// Connection to Redis. Exactly one of `url` (a standalone server) and `cluster` (seed nodes
/// of a Redis Cluster) is set; `rediss://` URLs use TLS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` or `rediss://…` (or `RISKGATE_STATE_REDIS_URL`).
    pub url: Option<String>,
    /// Seed nodes of a Cluster, each `redis://host:port` or `rediss://host:port`.
    pub cluster: Vec<String>,
    /// ACL user name; absent = the default user.
    pub username: Option<String>,
    /// File holding the password (a Kubernetes Secret mount), read at start-up.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for `rediss://`; absent = the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Prefix of every key riskgate writes, so several deployments can share one store.
    pub key_prefix: String,
    /// Start even though the server may evict keys (`maxmemory-policy` is not `noeviction`,
    /// or cannot be read): an evicted use record silently re-opens replay.
    pub allow_eviction: bool,
    /// Most time to establish a connection (legacy `connect_timeout_ms`).
    #[serde(alias = "connect_timeout_ms", deserialize_with = "duration::millis")]
    pub connect_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: None,
            cluster: Vec::new(),
            username: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_prefix: "riskgate".into(),
            allow_eviction: false,
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl StateConfig {
    /// Applies the environment, so a Kustomize component (or a Secret) can switch a deployment
    /// to Redis without editing the config file: `RISKGATE_STATE_STORE` (`memory` | `redis`),
    /// `RISKGATE_STATE_REDIS_URL` (a standalone server), `RISKGATE_STATE_REDIS_CLUSTER`
    /// (comma-separated seed nodes), `RISKGATE_STATE_REDIS_PASSWORD_FILE`,
    /// `RISKGATE_STATE_REDIS_CA_FILE`. Empty values are ignored.
    pub fn apply_env(
        &mut self,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("RISKGATE_STATE_STORE") {
            self.store = match v.trim() {
                "memory" => StoreKind::Memory,
                "redis" => StoreKind::Redis,
                _ => {
                    return Err(ConfigError::field(
                        "RISKGATE_STATE_STORE",
                        format!("expected `memory` or `redis`, got `{v}`"),
                    ))
                }
            };
        }
        if let Some(url) = get("RISKGATE_STATE_REDIS_URL") {
            let r = self.redis.get_or_insert_with(RedisConfig::default);
            r.url = Some(url.trim().to_owned());
            r.cluster.clear();
        }
        if let Some(nodes) = get("RISKGATE_STATE_REDIS_CLUSTER") {
            let r = self.redis.get_or_insert_with(RedisConfig::default);
            r.url = None;
            r.cluster = nodes
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect();
        }
        if let Some(f) = get("RISKGATE_STATE_REDIS_PASSWORD_FILE") {
            self.redis
                .get_or_insert_with(RedisConfig::default)
                .password_file = Some(PathBuf::from(f));
        }
        if let Some(f) = get("RISKGATE_STATE_REDIS_CA_FILE") {
            self.redis.get_or_insert_with(RedisConfig::default).ca_file = Some(PathBuf::from(f));
        }
        Ok(())
    }

    /// Makes the credential file paths relative to `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(r) = self.redis.as_mut() {
            for p in [
                &mut r.password_file,
                &mut r.ca_file,
                &mut r.cert_file,
                &mut r.key_file,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
    }

    /// Field checks, and the rule that per-replica fallback may not silently weaken
    /// single-use tokens: `on_failure: local` with a route that counts uses needs
    /// `allow_local_uses: true`. A route counts uses when it sets `max_uses`, or when it
    /// asks for risk (write actions get `max_uses: 1` by default).
    pub fn validate(&self, routes: &[RouteConfig]) -> Result<(), ConfigError> {
        if self.timeout.is_zero() {
            return Err(ConfigError::field("state.timeout", "must be positive"));
        }
        if self.max_entries == 0 {
            return Err(ConfigError::field("state.max_entries", "must be positive"));
        }
        if self.share_recommendations && self.store == StoreKind::Memory {
            return Err(ConfigError::field(
                "state.share_recommendations",
                "needs `store: redis`: with the per-replica memory store there is no other replica to share with, \
                 and shared recommendations would take the use ledger's capacity (`state.max_entries`)",
            ));
        }
        if self.max_uses_per_principal == 0 {
            return Err(ConfigError::field(
                "state.max_uses_per_principal",
                "must be positive",
            ));
        }
        if self.breaker.failure_threshold == 0 {
            return Err(ConfigError::field(
                "state.breaker.failure_threshold",
                "must be at least 1",
            ));
        }
        match (self.store, &self.redis) {
            (StoreKind::Redis, None) => {
                return Err(ConfigError::field(
                    "state.redis",
                    "required with `store: redis` (set `url` or `cluster`)",
                ))
            }
            (StoreKind::Redis, Some(r)) => r.validate()?,
            (StoreKind::Memory, _) => {}
        }
        if self.store == StoreKind::Redis
            && self.on_failure == OnFailure::Local
            && !self.allow_local_uses
        {
            let counting = routes
                .iter()
                .position(|r| r.max_uses.is_some() || r.risk != RiskMode::Off);
            if let Some(i) = counting {
                return Err(ConfigError::field(
                    "state.on_failure",
                    format!(
                        "`local` lets a single-use token be replayed once per replica during a store outage, \
                         and routes[{i}] counts uses; set `state.allow_local_uses: true` to accept that"
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl RedisConfig {
    /// The connection URLs: one for a standalone server, the seeds of a Cluster.
    pub fn urls(&self) -> Vec<&str> {
        match &self.url {
            Some(u) => vec![u.as_str()],
            None => self.cluster.iter().map(String::as_str).collect(),
        }
    }

    /// Whether this is a Cluster.
    pub fn is_cluster(&self) -> bool {
        self.url.is_none()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.url, self.cluster.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::field(
                    "state.redis.cluster",
                    "set either `url` (standalone) or `cluster` (seed nodes), not both",
                ))
            }
            (None, true) => {
                return Err(ConfigError::field(
                    "state.redis.url",
                    "required (or `cluster`, or RISKGATE_STATE_REDIS_URL)",
                ))
            }
            _ => {}
        }
        let field = if self.url.is_some() {
            "state.redis.url"
        } else {
            "state.redis.cluster"
        };
        let urls = self.urls();
        let tls = urls.iter().filter(|u| u.starts_with("rediss://")).count();
        for u in &urls {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                // The URL may carry a password: never echo it.
                return Err(ConfigError::field(
                    field,
                    "must start with `redis://` or `rediss://`",
                ));
            }
        }
        if tls != 0 && tls != urls.len() {
            return Err(ConfigError::field(
                field,
                "mixes `redis://` and `rediss://` nodes",
            ));
        }
        if tls == 0 && (self.ca_file.is_some() || self.cert_file.is_some()) {
            return Err(ConfigError::field(
                "state.redis.ca_file",
                "TLS files need `rediss://` URLs",
            ));
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(ConfigError::field(
                "state.redis.key_file",
                "`cert_file` and `key_file` go together",
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::field(
                "state.redis.key_prefix",
                format!(
                    "`{}` must be non-empty, without braces or spaces",
                    self.key_prefix
                ),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::field(
                "state.redis.connect_timeout",
                "must be positive",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<StateConfig, String> {
        serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())
    }

    fn route(yaml: &str) -> RouteConfig {
        match serde_yaml_ng::from_str(yaml) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn msg(r: Result<(), ConfigError>) -> String {
        r.err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn default_is_memory_and_fails_closed() -> Result<(), String> {
        let c = parse("{}")?;
        assert_eq!(c, StateConfig::default());
        assert_eq!(c.store, StoreKind::Memory);
        assert_eq!(c.on_failure, OnFailure::Closed);
        c.validate(&[]).map_err(|e| e.to_string())
    }

    /// Issue 14 item 3: the use ledger's capacity is its own — recommendations are never
    /// shared through the per-replica memory store that holds it.
    #[test]
    fn recommendations_are_not_shared_through_the_memory_ledger() -> Result<(), String> {
        let c = parse("share_recommendations: true")?;
        assert!(msg(c.validate(&[])).contains("state.share_recommendations"));
        let c = parse("{store: redis, redis: {url: redis://x}, share_recommendations: true}")?;
        c.validate(&[]).map_err(|e| e.to_string())
    }

    #[test]
    fn a_zero_principal_share_is_refused_by_name() -> Result<(), String> {
        let c = parse("max_uses_per_principal: 0")?;
        assert!(msg(c.validate(&[])).contains("state.max_uses_per_principal"));
        Ok(())
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse("redis: { url: redis://x, allow_evictions: true }").err();
        assert!(e.unwrap_or_default().contains("allow_evictions"));
        let e = parse("on_failur: local").err();
        assert!(e.unwrap_or_default().contains("on_failur"));
    }

    #[test]
    fn redis_needs_exactly_one_address() -> Result<(), String> {
        let c = parse("store: redis")?;
        assert!(msg(c.validate(&[])).contains("state.redis"));
        let c = parse("store: redis\nredis: { key_prefix: x }")?;
        assert!(msg(c.validate(&[])).contains("state.redis.url"));
        let c = parse("store: redis\nredis: { url: redis://a:1, cluster: [redis://b:2] }")?;
        assert!(msg(c.validate(&[])).contains("state.redis.cluster"));
        let c = parse("store: redis\nredis: { cluster: [redis://a:1, redis://b:2] }")?;
        c.validate(&[]).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_url_is_rejected_without_echoing_it() -> Result<(), String> {
        let c = parse("store: redis\nredis: { url: 'http://user:s3cret@x' }")?;
        let m = msg(c.validate(&[]));
        assert!(m.contains("state.redis.url"), "{m}");
        assert!(!m.contains("s3cret"), "{m}");
        Ok(())
    }

    #[test]
    fn tls_files_need_rediss() -> Result<(), String> {
        let c = parse("store: redis\nredis: { url: redis://x:1, ca_file: ca.pem }")?;
        assert!(msg(c.validate(&[])).contains("state.redis.ca_file"));
        let c = parse("store: redis\nredis: { url: rediss://x:1, cert_file: c.pem }")?;
        assert!(msg(c.validate(&[])).contains("state.redis.key_file"));
        Ok(())
    }

    #[test]
    fn local_fallback_with_counted_uses_needs_consent() -> Result<(), String> {
        let mut c = parse("store: redis\non_failure: local\nredis: { url: redis://x:1 }")?;
        let counted = route(
            "{ method: POST, path: /w, action: withdraw, risk: required, resource: { type: A, id: a } }",
        );
        let plain = route(
            "{ method: GET, path: /r, action: view, risk: off, resource: { type: A, id: a } }",
        );
        c.validate(std::slice::from_ref(&plain))
            .map_err(|e| e.to_string())?;
        let m = msg(c.validate(&[plain.clone(), counted.clone()]));
        assert!(
            m.contains("state.on_failure")
                && m.contains("allow_local_uses")
                && m.contains("routes[1]"),
            "{m}"
        );
        c.allow_local_uses = true;
        c.validate(&[plain, counted]).map_err(|e| e.to_string())
    }

    #[test]
    fn env_url_and_relative_files() -> Result<(), String> {
        let mut c = parse("store: redis\nredis: { password_file: pw, ca_file: /abs/ca.pem }")?;
        c.apply_env(&|n: &str| (n == "RISKGATE_STATE_REDIS_URL").then(|| "rediss://h:6380".into()))
            .map_err(|e| e.to_string())?;
        c.resolve_paths(Path::new("/etc/riskgate"));
        let r = c.redis.clone().unwrap_or_default();
        assert_eq!(r.url.as_deref(), Some("rediss://h:6380"));
        assert_eq!(
            r.password_file.as_deref(),
            Some(Path::new("/etc/riskgate/pw"))
        );
        assert_eq!(r.ca_file.as_deref(), Some(Path::new("/abs/ca.pem")));
        c.validate(&[]).map_err(|e| e.to_string())
    }

    #[test]
    fn env_switches_a_memory_config_to_a_redis_cluster() -> Result<(), String> {
        let mut c = StateConfig::default();
        let env = |n: &str| match n {
            "RISKGATE_STATE_STORE" => Some("redis".to_owned()),
            "RISKGATE_STATE_REDIS_CLUSTER" => Some("redis://a:1, redis://b:2,".to_owned()),
            "RISKGATE_STATE_REDIS_PASSWORD_FILE" => Some("/run/pw".to_owned()),
            _ => None,
        };
        c.apply_env(&env).map_err(|e| e.to_string())?;
        assert_eq!(c.store, StoreKind::Redis);
        let r = c.redis.clone().unwrap_or_default();
        assert_eq!(r.cluster, ["redis://a:1", "redis://b:2"]);
        assert_eq!(r.password_file.as_deref(), Some(Path::new("/run/pw")));
        c.validate(&[]).map_err(|e| e.to_string())?;
        let bad = c.apply_env(&|n: &str| (n == "RISKGATE_STATE_STORE").then(|| "disk".to_owned()));
        assert!(msg(bad).contains("RISKGATE_STATE_STORE"));
        Ok(())
    }
}
