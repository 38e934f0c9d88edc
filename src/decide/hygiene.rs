//! Stage 1, hygiene: a request riskgate cannot describe exactly is denied before any
//! lookup — no method or path, a method-override header, a non-canonical path.

use crate::canonical;
use crate::decision::DenyReason;
use crate::request::AccessRequest;

/// Headers that ask an origin to treat the request as another method. Denied: riskgate
/// authorizes the method Envoy saw, which must be the method the upstream runs.
pub const METHOD_OVERRIDE_HEADERS: [&str; 4] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

/// Query parameters that do the same as [`METHOD_OVERRIDE_HEADERS`] in common frameworks
/// (Rails, Laravel, Express `method-override`, Symfony): compared by lower-case,
/// percent-decoded name.
pub const METHOD_OVERRIDE_PARAMS: [&str; 5] = [
    "_method",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
];

/// Passes a well-formed request, denies anything else with its own reason.
pub fn check(req: &AccessRequest) -> Result<(), DenyReason> {
    if req.method.is_empty() {
        return Err(DenyReason::Malformed("missing method"));
    }
    if req.path.is_empty() {
        return Err(DenyReason::Malformed("missing path"));
    }
    if METHOD_OVERRIDE_HEADERS
        .iter()
        .any(|h| req.headers.contains_key(*h))
    {
        return Err(DenyReason::MethodOverride);
    }
    if req.query.as_deref().is_some_and(has_method_override_param) {
        return Err(DenyReason::MethodOverride);
    }
    canonical::check_path(&req.path).map_err(DenyReason::NonCanonicalPath)
}

/// Whether any `name[=value]` pair of `query` names a method override.
fn has_method_override_param(query: &str) -> bool {
    query.split(['&', ';']).any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let name = decoded.trim().to_ascii_lowercase();
        METHOD_OVERRIDE_PARAMS.contains(&name.as_str())
    })
}
