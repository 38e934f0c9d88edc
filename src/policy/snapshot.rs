//! The policy snapshot — routes, live and shadow Cedar sets, swapped together — and its
//! loading from a config, with the one error every caller of a load gets.
//!
//! `riskgate serve` at start-up, every hot reload, and the offline `check` and `validate`
//! commands all build their snapshot with [`load_snapshot`], so they accept and reject the
//! same inputs with the same `file:line` messages.

use super::{PolicyError, PolicySnapshot};
use crate::config::{Config, ConfigError};
use crate::routes::RouteTable;

/// Routes and policies that are swapped together on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled route table.
    pub routes: RouteTable,
    /// The validated Cedar set.
    pub policies: PolicySnapshot,
    /// The shadow set (same schema and entities), evaluated beside the live one.
    pub shadow: Option<PolicySnapshot>,
}

/// Why a config or the snapshot it names did not load (at start-up, on reload, offline).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Bad configuration (unreadable or invalid config file, bad routes or hosts).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad policies, schema or entities.
    #[error("policy set rejected:\n{0}")]
    Policy(#[from] PolicyError),
}

/// Compiles routes and loads the policy set (and the shadow set, if any) the config names.
pub fn load_snapshot(config: &Config) -> Result<Snapshot, LoadError> {
    let routes = RouteTable::build(&config.routes, &config.hosts, config.default)?;
    let policies = PolicySnapshot::load(
        &config.policies.dir,
        &config.policies.schema,
        config.policies.entities.as_deref(),
        routes.routes(),
    )?;
    policies.check_context(&config.context, routes.routes(), &config.policies.schema)?;
    let shadow = config
        .policies
        .shadow_dir
        .as_deref()
        .map(|dir| policies.with_policies_from(dir))
        .transpose()?;
    Ok(Snapshot {
        routes,
        policies,
        shadow,
    })
}
