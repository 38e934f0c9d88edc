//! Route configuration: the table mapping host + method + path to a Cedar action and resource.

use super::{ConfigError, FailMode};
use serde::Deserialize;

/// One route. Paths are templates with `{name}` segments (e.g. `/accounts/{account_id}/withdraw`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Host the route applies to (no port); absent = any host without its own match.
    #[serde(default)]
    pub host: Option<String>,
    /// HTTP method, exact (`GET`, `POST`, ...). No implicit HEAD or override mapping.
    pub method: String,
    /// Path template.
    pub path: String,
    /// Cedar action id, e.g. `withdraw` for `Action::"withdraw"`.
    pub action: String,
    /// The Cedar resource this request acts on.
    pub resource: ResourceSpec,
    /// Whether a risk recommendation is needed.
    #[serde(default)]
    pub risk: RiskMode,
    /// Recommendation `context.action_type` values that may authorize this route;
    /// defaults to the route's action.
    #[serde(default)]
    pub action_types: Option<Vec<String>>,
    /// How many allowed requests one action token may authorize here (per replica).
    /// Default: 1 for write actions, unlimited for reads.
    #[serde(default)]
    pub max_uses: Option<u32>,
    /// Outage behaviour for this route (overrides `risk.fail_mode`).
    #[serde(default)]
    pub fail_mode: Option<FailMode>,
    /// Answer 200 on this route but log what would have been answered.
    #[serde(default)]
    pub dry_run: bool,
    /// JSON body fields mapped into `context.transaction` (only such routes read the body).
    #[serde(default)]
    pub body: Option<super::BodyConfig>,
}

/// How the resource entity is formed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// Cedar entity type, e.g. `Account`.
    #[serde(rename = "type")]
    pub entity_type: String,
    /// Path parameter giving the entity id.
    #[serde(default)]
    pub param: Option<String>,
    /// A fixed entity id (when the path has no parameter).
    #[serde(default)]
    pub id: Option<String>,
}

/// Per-route need for a risk recommendation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskMode {
    /// No action token → 401 asking the client to run the SDK.
    Required,
    /// Assessed when a token is present; otherwise the band is `unassessed`.
    Optional,
    /// Never assessed: band `unassessed`.
    #[default]
    Off,
}

/// Answer when no route matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAnswer {
    /// 403.
    #[default]
    Deny,
    /// Pass through unchecked (for hosts where only some paths are protected).
    Allow,
}

/// Settings for one host.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Host name (no port).
    pub host: String,
    /// Answer when none of this host's routes match.
    #[serde(default)]
    pub default: Option<DefaultAnswer>,
    /// Allow CORS preflights (`OPTIONS` with `access-control-request-method`) without a route.
    #[serde(default)]
    pub cors_preflight: bool,
    /// What a near-miss path gets: one that matches no route as sent, but would if case or
    /// a trailing slash were ignored (`/Accounts/a1/withdraw/`). Upstreams often route such
    /// paths to the protected handler, so the default denies them rather than let them
    /// reach this host's `default: allow`.
    #[serde(default)]
    pub near_miss: NearMiss,
}

/// The answer to a near-miss path (see [`HostConfig::near_miss`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NearMiss {
    /// 403 `near_miss_path`, whatever the host's default.
    #[default]
    Deny,
    /// Treated as any unmatched path: the host's default answer (for an upstream known to
    /// route case- and slash-exactly).
    Allow,
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl RouteConfig {
    /// Field-level checks; `at` is the route's position, e.g. `routes[3]`.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !METHODS.contains(&self.method.as_str()) {
            return Err(ConfigError::field(
                format!("{at}.method"),
                format!("`{}` is not one of {}", self.method, METHODS.join(", ")),
            ));
        }
        if !self.path.starts_with('/') {
            return Err(ConfigError::field(
                format!("{at}.path"),
                format!("`{}` must start with `/`", self.path),
            ));
        }
        if self.action.is_empty() {
            return Err(ConfigError::field(
                format!("{at}.action"),
                "must not be empty",
            ));
        }
        {
            let spec = &self.resource;
            match (&spec.param, &spec.id) {
                (Some(param), None) => {
                    if !self.path.contains(&format!("{{{param}}}")) {
                        return Err(ConfigError::field(
                            format!("{at}.resource.param"),
                            format!("path `{}` has no `{{{param}}}` segment", self.path),
                        ));
                    }
                }
                (None, Some(_)) => {}
                _ => {
                    return Err(ConfigError::field(
                        format!("{at}.resource"),
                        "give exactly one of `param` or `id`",
                    ))
                }
            }
        }
        if let Some(types) = &self.action_types {
            if types.is_empty() {
                return Err(ConfigError::field(
                    format!("{at}.action_types"),
                    "must not be empty (omit it to default to the action)",
                ));
            }
        }
        if self.max_uses == Some(0) {
            return Err(ConfigError::field(
                format!("{at}.max_uses"),
                "must be at least 1 (omit it for the default)",
            ));
        }
        Ok(())
    }

    /// Recommendation action types that fit this route.
    pub fn accepted_action_types(&self) -> Vec<String> {
        self.action_types
            .clone()
            .unwrap_or_else(|| vec![self.action.clone()])
    }
}
