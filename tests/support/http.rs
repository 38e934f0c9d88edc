//! The HTTP client tests send requests with: no proxy (whatever the environment says), no
//! redirects followed, and a per-request timeout from `RISKGATE_TEST_HTTP_TIMEOUT_MS`.

use std::time::Duration;

use super::wait::env_ms;

/// Per-request timeout for test requests (`RISKGATE_TEST_HTTP_TIMEOUT_MS`, default 5000 ms).
pub fn request_timeout() -> Duration {
    env_ms("RISKGATE_TEST_HTTP_TIMEOUT_MS", 5_000)
}

/// A fresh client: loopback only, so never through a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(request_timeout())
        .connect_timeout(request_timeout())
        .build()
        .expect("build the test HTTP client")
}
