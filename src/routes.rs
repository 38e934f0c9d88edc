//! The route table: host + method + path template → Cedar action and resource, plus the
//! route's risk settings. Compiled once into radix trees (`matchit`), one per host and
//! method, so lookup cost does not grow with the number of routes and two hosts with the
//! same path never collide.
//!
//! Beside each tree sits a second one over the templates normalised (lower-cased, no
//! trailing slash): consulted only after a miss, it tells a near-miss path
//! (`/Accounts/a1/withdraw/`) from a path that is simply unknown.

use crate::canonical;
use crate::config::{
    BodyConfig, ConfigError, DefaultAnswer, FailMode, HostConfig, NearMiss, ResourceSpec, RiskMode,
    RouteConfig,
};
use std::collections::HashMap;

/// A compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Stable label for logs and metrics: `METHOD host/path-template`.
    pub name: String,
    /// Cedar action id.
    pub action: String,
    /// How to build the resource entity.
    pub resource: ResourceSpec,
    /// Whether risk is assessed.
    pub risk: RiskMode,
    /// Recommendation action types accepted here.
    pub action_types: Vec<String>,
    /// Explicit `max_uses`, if configured.
    pub max_uses: Option<u32>,
    /// Route-level fail mode override.
    pub fail_mode: Option<FailMode>,
    /// Route-level dry run.
    pub dry_run: bool,
    /// Body fields mapped into `context.transaction`, if any.
    pub body: Option<BodyConfig>,
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// A route matched.
    Matched {
        /// The route.
        route: &'a Route,
        /// The resource entity id, decoded from the path parameter or fixed.
        resource_id: String,
    },
    /// A CORS preflight on a host that allows them.
    CorsPreflight,
    /// No route matched as sent, but `route` would if case or a trailing slash were
    /// ignored, and the host denies near misses.
    NearMiss {
        /// The route the path nearly matched.
        route: &'a Route,
    },
    /// Nothing matched; the answer configured for this host (or globally).
    Unmatched(DefaultAnswer),
}

/// Why a matched path parameter could not become a resource id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("path parameter is not a valid id")]
pub struct BadParameter;

#[derive(Debug, Default)]
struct MethodTrees(HashMap<String, matchit::Router<usize>>);

impl MethodTrees {
    fn insert(&mut self, method: &str, path: &str, index: usize) -> Result<(), String> {
        self.0
            .entry(method.to_owned())
            .or_default()
            .insert(path, index)
            .map_err(|e| e.to_string())
    }

    fn at<'p>(&self, method: &str, path: &'p str) -> Option<matchit::Match<'_, 'p, &usize>> {
        self.0.get(method)?.at(path).ok()
    }
}

/// A path as the near-miss trees store it: ASCII lower-case, without a trailing slash
/// (the root stays `/`). Templates and request paths go through the same function.
fn near_miss_key(path: &str) -> String {
    let trimmed = match path.strip_suffix('/') {
        Some(rest) if !rest.is_empty() => rest,
        _ => path,
    };
    trimmed.to_ascii_lowercase()
}

/// All routes, compiled.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    by_host: HashMap<String, MethodTrees>,
    any_host: MethodTrees,
    /// The same templates under [`near_miss_key`], per host and for any host.
    near_by_host: HashMap<String, MethodTrees>,
    near_any_host: MethodTrees,
    hosts: HashMap<String, HostConfig>,
    default: DefaultAnswer,
}

impl RouteTable {
    /// Compiles and validates the table; conflicting templates name the route at fault.
    pub fn build(
        routes: &[RouteConfig],
        hosts: &[HostConfig],
        default: DefaultAnswer,
    ) -> Result<RouteTable, ConfigError> {
        let mut table = RouteTable {
            default,
            ..RouteTable::default()
        };
        for (i, rc) in routes.iter().enumerate() {
            let host = rc.host.as_deref().map(str::to_ascii_lowercase);
            let trees = match &host {
                Some(h) => table.by_host.entry(h.clone()).or_default(),
                None => &mut table.any_host,
            };
            trees.insert(&rc.method, &rc.path, i).map_err(|e| {
                ConfigError::field(format!("routes[{i}].path"), format!("`{}`: {e}", rc.path))
            })?;
            let near = match &host {
                Some(h) => table.near_by_host.entry(h.clone()).or_default(),
                None => &mut table.near_any_host,
            };
            // Two templates that differ only in case or a trailing slash normalise to one
            // (or to conflicting parameter names): the first one kept already answers
            // "near a route" for every path the other would, so the conflict is moot.
            let _ = near.insert(&rc.method, &near_miss_key(&rc.path), i);
            table.routes.push(Route {
                name: format!("{} {}{}", rc.method, host.as_deref().unwrap_or(""), rc.path),
                action: rc.action.clone(),
                resource: rc.resource.clone(),
                risk: rc.risk,
                action_types: rc.accepted_action_types(),
                max_uses: rc.max_uses,
                fail_mode: rc.fail_mode,
                dry_run: rc.dry_run,
                body: rc.body.clone(),
            });
        }
        for h in hosts {
            table.hosts.insert(h.host.to_ascii_lowercase(), h.clone());
        }
        Ok(table)
    }

    /// Every compiled route (for validation against the schema).
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Finds the route for a canonical path. `host` is lower-case without port.
    /// `preflight` is true for `OPTIONS` carrying `access-control-request-method`.
    pub fn lookup(
        &self,
        host: &str,
        method: &str,
        path: &str,
        preflight: bool,
    ) -> Result<Lookup<'_>, BadParameter> {
        let found = self
            .by_host
            .get(host)
            .and_then(|t| t.at(method, path))
            .or_else(|| self.any_host.at(method, path));
        let settings = self.hosts.get(host);
        let Some(m) = found else {
            if preflight && settings.is_some_and(|s| s.cors_preflight) {
                return Ok(Lookup::CorsPreflight);
            }
            let near_miss = settings.map_or(NearMiss::Deny, |s| s.near_miss);
            if near_miss == NearMiss::Deny {
                if let Some(route) = self.near_miss(host, method, path) {
                    return Ok(Lookup::NearMiss { route });
                }
            }
            let answer = settings.and_then(|s| s.default).unwrap_or(self.default);
            return Ok(Lookup::Unmatched(answer));
        };
        let Some(route) = self.routes.get(*m.value) else {
            return Ok(Lookup::Unmatched(DefaultAnswer::Deny));
        };
        let resource_id = match &route.resource {
            ResourceSpec {
                param: Some(param), ..
            } => {
                let raw = m.params.get(param).ok_or(BadParameter)?;
                let id = canonical::decode_segment(raw).map_err(|_| BadParameter)?;
                if id.is_empty() {
                    return Err(BadParameter);
                }
                id
            }
            ResourceSpec { id: Some(id), .. } => id.clone(),
            _ => return Err(BadParameter),
        };
        Ok(Lookup::Matched { route, resource_id })
    }

    /// The route `path` would match if case and a trailing slash were ignored (only asked
    /// after an exact miss, so the normal path pays nothing).
    fn near_miss(&self, host: &str, method: &str, path: &str) -> Option<&Route> {
        let key = near_miss_key(path);
        let found = self
            .near_by_host
            .get(host)
            .and_then(|t| t.at(method, &key))
            .or_else(|| self.near_any_host.at(method, &key))?;
        self.routes.get(*found.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let routes: Vec<RouteConfig> = match serde_yaml_ng::from_str(yaml) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let hosts = vec![HostConfig {
            host: "open.example".into(),
            default: Some(DefaultAnswer::Allow),
            cors_preflight: true,
            near_miss: NearMiss::Deny,
        }];
        match RouteTable::build(&routes, &hosts, DefaultAnswer::Deny) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    const ROUTES: &str = r#"
- { host: bank.example, method: POST, path: "/accounts/{account_id}/withdraw", action: withdraw,
    resource: { type: Account, param: account_id } }
- { host: shop.example, method: POST, path: "/accounts/{account_id}/withdraw", action: refund,
    resource: { type: Order, param: account_id } }
- { method: GET, path: "/accounts/{account_id}/balance", action: view_balance,
    resource: { type: Account, param: account_id } }
- { method: GET, path: "/accounts/summary", action: list_transactions,
    resource: { type: Application, id: bank } }
"#;

    fn action_of(l: Lookup<'_>) -> Option<(String, String)> {
        match l {
            Lookup::Matched { route, resource_id } => Some((route.action.clone(), resource_id)),
            _ => None,
        }
    }

    #[test]
    fn template_matches_and_extracts_resource() -> Result<(), BadParameter> {
        let t = table(ROUTES);
        let got = action_of(t.lookup("bank.example", "POST", "/accounts/a1/withdraw", false)?);
        assert_eq!(got, Some(("withdraw".into(), "a1".into())));
        Ok(())
    }

    #[test]
    fn same_path_on_two_hosts_does_not_collide() -> Result<(), BadParameter> {
        let t = table(ROUTES);
        let bank = action_of(t.lookup("bank.example", "POST", "/accounts/a1/withdraw", false)?);
        let shop = action_of(t.lookup("shop.example", "POST", "/accounts/a1/withdraw", false)?);
        assert_eq!(bank.map(|b| b.0).as_deref(), Some("withdraw"));
        assert_eq!(shop.map(|s| s.0).as_deref(), Some("refund"));
        let other = t.lookup("evil.example", "POST", "/accounts/a1/withdraw", false)?;
        assert!(matches!(other, Lookup::Unmatched(DefaultAnswer::Deny)));
        Ok(())
    }

    #[test]
    fn hostless_routes_serve_every_host() -> Result<(), BadParameter> {
        let t = table(ROUTES);
        let got = action_of(t.lookup("bank.example", "GET", "/accounts/a1/balance", false)?);
        assert_eq!(got.map(|g| g.0).as_deref(), Some("view_balance"));
        Ok(())
    }

    #[test]
    fn static_segment_wins_and_fixed_id_is_used() -> Result<(), BadParameter> {
        let t = table(ROUTES);
        let got = action_of(t.lookup("x", "GET", "/accounts/summary", false)?);
        assert_eq!(got, Some(("list_transactions".into(), "bank".into())));
        Ok(())
    }

    #[test]
    fn unmatched_method_gets_default_deny() -> Result<(), BadParameter> {
        let t = table(ROUTES);
        let got = t.lookup("bank.example", "DELETE", "/accounts/a1/withdraw", false)?;
        assert!(matches!(got, Lookup::Unmatched(DefaultAnswer::Deny)));
        Ok(())
    }

    #[test]
    fn host_default_and_preflight_apply_only_to_that_host() -> Result<(), BadParameter> {
        let t = table(ROUTES);
        assert!(matches!(
            t.lookup("open.example", "GET", "/anything", false)?,
            Lookup::Unmatched(DefaultAnswer::Allow)
        ));
        assert!(matches!(
            t.lookup("open.example", "OPTIONS", "/anything", true)?,
            Lookup::CorsPreflight
        ));
        assert!(matches!(
            t.lookup("bank.example", "OPTIONS", "/anything", true)?,
            Lookup::Unmatched(DefaultAnswer::Deny)
        ));
        Ok(())
    }

    #[test]
    fn encoded_quote_becomes_data_in_the_id() -> Result<(), BadParameter> {
        let t = table(ROUTES);
        let got = action_of(t.lookup("x", "GET", "/accounts/a1%22%29/balance", false)?);
        assert_eq!(got.map(|g| g.1).as_deref(), Some("a1\")"));
        Ok(())
    }

    fn near_table(near_miss: NearMiss) -> RouteTable {
        let routes: Vec<RouteConfig> = match serde_yaml_ng::from_str(ROUTES) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let hosts = vec![HostConfig {
            host: "bank.example".into(),
            default: Some(DefaultAnswer::Allow),
            cors_preflight: false,
            near_miss,
        }];
        match RouteTable::build(&routes, &hosts, DefaultAnswer::Allow) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    fn near_route(l: Lookup<'_>) -> Option<String> {
        match l {
            Lookup::NearMiss { route } => Some(route.action.clone()),
            _ => None,
        }
    }

    #[test]
    fn case_and_trailing_slash_variants_are_near_misses() -> Result<(), BadParameter> {
        let t = near_table(NearMiss::Deny);
        for path in [
            "/accounts/a1/withdraw/",
            "/Accounts/a1/withdraw",
            "/accounts/a1/Withdraw",
            "/ACCOUNTS/A1/WITHDRAW/",
        ] {
            let got = near_route(t.lookup("bank.example", "POST", path, false)?);
            assert_eq!(got.as_deref(), Some("withdraw"), "{path}");
        }
        // hostless routes are near too, on every host (here: the global default allow)
        let got = near_route(t.lookup("other.example", "GET", "/Accounts/a1/balance/", false)?);
        assert_eq!(got.as_deref(), Some("view_balance"));
        Ok(())
    }

    #[test]
    fn exact_matches_and_unrelated_paths_are_not_near_misses() -> Result<(), BadParameter> {
        let t = near_table(NearMiss::Deny);
        // the parameter keeps its case and matches exactly
        let got = action_of(t.lookup("bank.example", "POST", "/accounts/A1/withdraw", false)?);
        assert_eq!(got, Some(("withdraw".into(), "A1".into())));
        for (method, path) in [
            ("POST", "/accounts/a1/withdrawal"),
            ("GET", "/accounts/a1/withdraw"),
            ("POST", "/"),
            ("POST", "/accounts"),
        ] {
            let got = t.lookup("bank.example", method, path, false)?;
            assert!(
                matches!(got, Lookup::Unmatched(DefaultAnswer::Allow)),
                "{method} {path}: {got:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn a_host_may_let_near_misses_take_its_default() -> Result<(), BadParameter> {
        let t = near_table(NearMiss::Allow);
        let got = t.lookup("bank.example", "POST", "/Accounts/a1/withdraw/", false)?;
        assert!(matches!(got, Lookup::Unmatched(DefaultAnswer::Allow)));
        Ok(())
    }

    #[test]
    fn near_miss_key_lowercases_and_drops_one_trailing_slash() {
        assert_eq!(near_miss_key("/A/b/"), "/a/b");
        assert_eq!(near_miss_key("/"), "/");
        assert_eq!(near_miss_key("/a/{Id}/"), "/a/{id}");
    }

    #[test]
    fn conflicting_templates_name_the_route() {
        let routes: Vec<RouteConfig> = match serde_yaml_ng::from_str(
            r#"
- { method: GET, path: "/a/{x}", action: view_balance, resource: { type: A, param: x } }
- { method: GET, path: "/a/{y}", action: view_balance, resource: { type: A, param: y } }
"#,
        ) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let err = RouteTable::build(&routes, &[], DefaultAnswer::Deny);
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("routes[1].path"), "{msg}");
    }
}
