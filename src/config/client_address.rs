//! Which address is the client's: the one definition every consumer (Cedar's
//! `context.request.ip`, budgets keyed by client) reads from `AccessRequest::source_ip`.

use serde::Deserialize;

/// `client_address` in the config.
///
/// `xff_trusted_hops: 0` (the default): the client is the Check's `source.address`, the TCP
/// peer of the proxy that asked riskgate. With `N > 0` the client is the address Envoy
/// itself picks with `use_remote_address: true` and `xff_num_trusted_hops: N`: the Nth
/// address from the right of `x-forwarded-for` as the proxy received it. riskgate sees the
/// header after the proxy appended its own peer, so it skips that rightmost entry and takes
/// the next N-th. Set N to the proxy's `xff_num_trusted_hops` (`riskgate validate
/// --envoy-config` checks it). Under Istio the sidecar's TCP peer is the ingress gateway,
/// not the client, so N must be set there (usually 1 per trusted hop before the gateway).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientAddressConfig {
    /// Trusted proxy hops in `x-forwarded-for` (Envoy's `xff_num_trusted_hops`).
    pub xff_trusted_hops: u32,
}
