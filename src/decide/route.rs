//! Stage 2, route: method + host + path → the route (Cedar action and resource), a pass
//! (CORS preflight, a host's `default: allow`) or a deny (no route, near-miss path).

use crate::config::DefaultAnswer;
use crate::decision::{Decision, DenyReason};
use crate::request::AccessRequest;
use crate::routes::{Lookup, Route, RouteTable};

/// Where the request goes from here.
#[derive(Debug)]
pub enum Routed<'a> {
    /// A route matched: the rest of the stages decide.
    Matched {
        /// The route.
        route: &'a Route,
        /// The resource entity id.
        resource_id: String,
    },
    /// Allowed without further stages; the label names why (`cors-preflight`,
    /// `default-allow`).
    Passed(&'static str),
    /// The path nearly matched `route` (case, trailing slash): denied `near_miss_path`.
    NearMiss(&'a Route),
}

/// Looks the request up in the route table.
pub fn resolve<'a>(routes: &'a RouteTable, req: &AccessRequest) -> Result<Routed<'a>, DenyReason> {
    let preflight =
        req.method == "OPTIONS" && req.headers.contains_key("access-control-request-method");
    let lookup = routes
        .lookup(&req.host, &req.method, &req.path, preflight)
        .map_err(|_| DenyReason::Malformed("bad path parameter"))?;
    match lookup {
        Lookup::Matched { route, resource_id } => Ok(Routed::Matched { route, resource_id }),
        Lookup::CorsPreflight => Ok(Routed::Passed("cors-preflight")),
        Lookup::NearMiss { route } => Ok(Routed::NearMiss(route)),
        Lookup::Unmatched(DefaultAnswer::Allow) => Ok(Routed::Passed("default-allow")),
        Lookup::Unmatched(DefaultAnswer::Deny) => Err(DenyReason::NoRoute),
    }
}

/// Records a near miss of `route` and returns its deny: the audit line and metrics name
/// the route nearly matched, and a dry-run route's near misses are not enforced either.
pub fn near_miss(d: &mut Decision, route: &Route) -> DenyReason {
    d.route = Some(route.name.clone());
    if route.dry_run {
        d.enforced = false;
    }
    DenyReason::NearMissPath
}
