//! The Transmit-compatible recommendations client:
//! `GET {host}/risk/v1/recommendation?action_token=…` with `Authorization: Bearer …`.
//! A 401 forces one token refresh and one retry; the body is read up to a size bound and
//! parsed strictly.

use super::recommendation::Recommendation;
use super::source::{BoxFuture, FetchError, RiskSource};
use super::token::{transport_kind, Bearer, TokenManager};
use reqwest::StatusCode;
use std::sync::Arc;

/// Talks to the recommendations API.
#[derive(Debug)]
pub struct TransmitClient {
    http: reqwest::Client,
    url: String,
    tokens: Arc<TokenManager>,
    max_body: usize,
}

/// `{host_root}/risk/v1/recommendation`.
pub fn recommendation_url(host_root: &str) -> String {
    format!("{}/risk/v1/recommendation", host_root.trim_end_matches('/'))
}

impl TransmitClient {
    /// A client for the API at `host_root` (see `RiskConfig::host_root`).
    pub fn new(
        http: reqwest::Client,
        host_root: &str,
        tokens: Arc<TokenManager>,
        max_body: usize,
    ) -> TransmitClient {
        TransmitClient {
            http,
            url: recommendation_url(host_root),
            tokens,
            max_body,
        }
    }

    async fn get(
        &self,
        bearer: &Bearer,
        action_token: &str,
    ) -> Result<reqwest::Response, FetchError> {
        self.http
            .get(&self.url)
            .query(&[("action_token", action_token)])
            .bearer_auth(bearer.value.expose())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    FetchError::Timeout
                } else {
                    FetchError::Connect(transport_kind(&e))
                }
            })
    }

    async fn fetch_inner(&self, action_token: &str) -> Result<Recommendation, FetchError> {
        let bearer = self
            .tokens
            .bearer()
            .await
            .map_err(|e| FetchError::NoToken(e.to_string()))?;
        let mut response = self.get(&bearer, action_token).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let fresh = self
                .tokens
                .force_refresh(bearer.generation)
                .await
                .map_err(|e| FetchError::NoToken(e.to_string()))?;
            response = self.get(&fresh, action_token).await?;
        }
        let status = response.status();
        match status.as_u16() {
            200..=299 => {}
            401 => return Err(FetchError::Unauthorized),
            429 => {
                return Err(FetchError::Throttled {
                    retry_after_s: retry_after_s(response.headers()),
                })
            }
            code @ 400..=499 => return Err(FetchError::Rejected(code)),
            code => return Err(FetchError::Unavailable(code)),
        }
        let body = read_bounded(response, self.max_body).await?;
        Recommendation::from_json(&body).map_err(|e| FetchError::Garbage(e.to_string()))
    }
}

impl RiskSource for TransmitClient {
    fn fetch<'a>(
        &'a self,
        action_token: &'a str,
    ) -> BoxFuture<'a, Result<Recommendation, FetchError>> {
        Box::pin(self.fetch_inner(action_token))
    }
}

/// Longest `Retry-After` honoured from the API: a larger one (or a far HTTP date) must not
/// tell clients to stay away for hours.
pub const MAX_API_RETRY_AFTER_S: u32 = 60;

/// The API's `Retry-After` as whole seconds (delta-seconds form only), at least 1 and at
/// most [`MAX_API_RETRY_AFTER_S`]; `None` when absent or not a number.
fn retry_after_s(headers: &reqwest::header::HeaderMap) -> Option<u32> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = value.trim().parse().ok()?;
    let bounded = secs.clamp(1, u64::from(MAX_API_RETRY_AFTER_S));
    u32::try_from(bounded).ok()
}

/// Reads a body but gives up past `max` bytes (a hostile or broken API cannot make a
/// replica buffer without bound).
async fn read_bounded(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|len| len > max as u64)
    {
        return Err(FetchError::Garbage(format!("body larger than {max} bytes")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        if e.is_timeout() {
            FetchError::Timeout
        } else {
            FetchError::Garbage(transport_kind(&e))
        }
    })? {
        if body.len() + chunk.len() > max {
            return Err(FetchError::Garbage(format!("body larger than {max} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apis_retry_after_is_read_and_bounded() {
        use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_static(v));
            retry_after_s(&h)
        };
        assert_eq!(with("7"), Some(7));
        assert_eq!(with("0"), Some(1));
        assert_eq!(with("86400"), Some(MAX_API_RETRY_AFTER_S));
        assert_eq!(with("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(retry_after_s(&HeaderMap::new()), None);
    }

    #[test]
    fn recommendation_url_is_pinned_per_region() {
        use crate::config::Region;
        let cases = [
            (
                Region::Sandbox,
                "https://api.sbx.transmitsecurity.io/risk/v1/recommendation",
            ),
            (
                Region::Us,
                "https://api.transmitsecurity.io/risk/v1/recommendation",
            ),
            (
                Region::Eu,
                "https://api.eu.transmitsecurity.io/risk/v1/recommendation",
            ),
            (
                Region::Ca,
                "https://api.ca.transmitsecurity.io/risk/v1/recommendation",
            ),
            (
                Region::Au,
                "https://api.au.transmitsecurity.io/risk/v1/recommendation",
            ),
        ];
        for (region, url) in cases {
            assert_eq!(recommendation_url(region.host_root()), url);
        }
        assert_eq!(
            recommendation_url("http://127.0.0.1:8085/"),
            "http://127.0.0.1:8085/risk/v1/recommendation"
        );
    }
}
