//! Stage 3, principal: who is asking, from verified identity only (see [`crate::identity`]).
//! A verified source that is present but unusable denies: falling back to anonymous could
//! hide a misconfigured proxy.

use crate::config::IdentityConfig;
use crate::decision::DenyReason;
use crate::identity::{self, Principal};
use crate::request::AccessRequest;

/// The request's principal, or [`DenyReason::BadIdentity`].
pub fn identify(config: &IdentityConfig, req: &AccessRequest) -> Result<Principal, DenyReason> {
    identity::principal(config, req).map_err(|e| {
        tracing::debug!(error = %e, "identity rejected");
        DenyReason::BadIdentity
    })
}
