//! The client's address from a Check: the TCP peer, or an `x-forwarded-for` entry counted
//! as Envoy counts `xff_num_trusted_hops` (see [`crate::config::ClientAddressConfig`]).

use std::net::IpAddr;

/// Why no client address can be trusted for a Check (it is then denied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientIpError {
    /// `x-forwarded-for` has fewer entries than the trusted hops plus the proxy's own.
    #[error("x-forwarded-for has fewer entries than client_address.xff_trusted_hops requires")]
    TooFewHops,
    /// The entry at the trusted position is not an IP address.
    #[error("x-forwarded-for entry at the trusted position is not an ip address")]
    NotAnAddress,
}

/// The client address: `source` when `hops` is 0; else the `hops`-th entry from the right
/// of `xff` as the proxy received it, that is after skipping the rightmost entry, which
/// the proxy appended itself (`use_remote_address: true`).
///
/// Too few entries is an error, not a fallback to `source`: with `hops > 0` the peer is a
/// trusted proxy (the ingress gateway), so falling back would give every such request the
/// proxy's address — one that policies may trust and budgets would share among all clients.
/// It means the request did not come through the configured proxies.
pub fn client_ip(
    source: Option<IpAddr>,
    xff: Option<&str>,
    hops: u32,
) -> Result<Option<IpAddr>, ClientIpError> {
    if hops == 0 {
        return Ok(source);
    }
    let from_right = usize::try_from(hops).unwrap_or(usize::MAX);
    let entry = xff
        .into_iter()
        .flat_map(|h| h.rsplit(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .nth(from_right)
        .ok_or(ClientIpError::TooFewHops)?;
    entry
        .parse::<IpAddr>()
        .map(Some)
        .map_err(|_| ClientIpError::NotAnAddress)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    const PEER: &str = "10.0.0.9";

    #[test]
    fn zero_hops_is_the_tcp_peer_whatever_the_header_says() {
        let got = client_ip(ip(PEER), Some("6.6.6.6, 10.0.0.9"), 0);
        assert_eq!(got, Ok(ip(PEER)));
        assert_eq!(client_ip(None, None, 0), Ok(None));
    }

    #[test]
    fn hops_count_from_the_right_as_the_proxy_received_the_header() {
        // client 203.0.113.7 → CDN 198.51.100.2 → gateway (appends the CDN) → Envoy
        // (appends the gateway 10.0.0.9)
        let xff = "6.6.6.6, 203.0.113.7, 198.51.100.2, 10.0.0.9";
        assert_eq!(client_ip(ip(PEER), Some(xff), 1), Ok(ip("198.51.100.2")));
        assert_eq!(client_ip(ip(PEER), Some(xff), 2), Ok(ip("203.0.113.7")));
        // a forged left part never becomes the client unless every hop is trusted
        assert_eq!(client_ip(ip(PEER), Some(xff), 3), Ok(ip("6.6.6.6")));
    }

    #[test]
    fn too_few_entries_are_refused_not_replaced_by_the_peer() {
        assert_eq!(
            client_ip(ip(PEER), Some("10.0.0.9"), 1),
            Err(ClientIpError::TooFewHops)
        );
        assert_eq!(client_ip(ip(PEER), None, 1), Err(ClientIpError::TooFewHops));
        assert_eq!(
            client_ip(ip(PEER), Some(" , 10.0.0.9"), 1),
            Err(ClientIpError::TooFewHops)
        );
    }

    #[test]
    fn a_garbage_entry_is_refused_and_ipv6_is_read() {
        assert_eq!(
            client_ip(ip(PEER), Some("evil, 10.0.0.9"), 1),
            Err(ClientIpError::NotAnAddress)
        );
        assert_eq!(
            client_ip(ip(PEER), Some("2001:db8::1,10.0.0.9"), 1),
            Ok(ip("2001:db8::1"))
        );
    }
}
