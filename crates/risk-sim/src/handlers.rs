//! HTTP handlers: the two real API endpoints plus the `/_sim/` test controls.
//!
//! The real endpoints answer the way the Transmit API does (OAuth2 error bodies on the token
//! endpoint, JSON errors and `WWW-Authenticate` on the recommendation endpoint), so a client
//! written against the real service works unchanged. The `/_sim/` endpoints exist only here and
//! let an out-of-process test (the `risk-sim` binary) do what in-process tests do through
//! [`super::SimHandle`].

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::body::{omit_paths, recommendation_body};
use super::script::{self, Script, ScriptedAction};
use super::state::SimState;
use super::tokens::{expires_in_secs, BearerCheck};

/// The simulator's routes.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/oidc/token", post(token))
        .route("/risk/v1/recommendation", get(recommendation))
        .route("/_sim/stats", get(stats))
        .route("/_sim/script", put(put_script))
        .route("/_sim/revoke", post(revoke))
        .route("/_sim/fail", post(fail))
        .fallback(not_found)
        .with_state(state)
}

/// `POST /oidc/token` form fields; all optional so a missing one gets an OAuth2 error, not a
/// framework rejection. `resource` (the audience) and other extra fields are accepted and
/// ignored, as this simulator has a single audience.
#[derive(Deserialize)] // no `Debug`: it holds the client secret
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// OAuth2 client-credentials grant (RFC 6749 §4.4), form-encoded client authentication.
async fn token(
    State(state): State<Arc<SimState>>,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let outcome = {
        let mut inner = state.lock();
        inner.stats.token_requests += 1;
        let outcome = match form {
            Err(_) => Err((StatusCode::BAD_REQUEST, "invalid_request")),
            Ok(Form(form)) => match form.grant_type.as_deref() {
                None => Err((StatusCode::BAD_REQUEST, "invalid_request")),
                Some("client_credentials") => {
                    let id = form.client_id.as_deref().unwrap_or_default();
                    let secret = form.client_secret.as_deref().unwrap_or_default();
                    if state.credentials_match(id, secret) {
                        Ok(inner.tokens.issue(Instant::now(), state.token_lifetime))
                    } else {
                        Err((StatusCode::UNAUTHORIZED, "invalid_client"))
                    }
                }
                Some(_) => Err((StatusCode::BAD_REQUEST, "unsupported_grant_type")),
            },
        };
        if matches!(outcome, Err((StatusCode::UNAUTHORIZED, _))) {
            inner.stats.unauthorized += 1;
        }
        outcome
    };
    let no_store = [
        (header::CACHE_CONTROL, "no-store"),
        (header::PRAGMA, "no-cache"),
    ];
    match outcome {
        Ok(access_token) => (
            no_store,
            Json(json!({
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": expires_in_secs(state.token_lifetime_ms),
            })),
        )
            .into_response(),
        Err((status, error)) => {
            tracing::debug!(status = status.as_u16(), error, "token request rejected");
            (status, no_store, Json(json!({ "error": error }))).into_response()
        }
    }
}

/// `GET /risk/v1/recommendation` query; `user_id` is deprecated and ignored.
#[derive(Debug, Deserialize)]
struct RecommendationQuery {
    action_token: Option<String>,
}

/// What the locked part of a recommendation call decided.
enum Lookup {
    Reject(Response),
    Answer(String, Box<ScriptedAction>),
}

/// `GET /risk/v1/recommendation?action_token=…` with `Authorization: Bearer …`.
async fn recommendation(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    query: Result<Query<RecommendationQuery>, QueryRejection>,
) -> Response {
    let action_token = match query {
        Ok(Query(q)) => q.action_token.filter(|t| !t.is_empty()),
        Err(_) => None,
    };
    let lookup = {
        let mut inner = state.lock();
        inner.stats.recommendation_requests += 1;
        if let Some(token) = &action_token {
            *inner.stats.per_token.entry(token.clone()).or_default() += 1;
        }
        let bearer = bearer(&headers).map(|t| inner.tokens.check(t, Instant::now()));
        let lookup = if let Some(status) = inner.outage {
            Lookup::Reject(api_error(status_code(status), "service unavailable"))
        } else if bearer != Some(BearerCheck::Valid) {
            Lookup::Reject(unauthorized(bearer))
        } else if let Some(token) = action_token {
            match inner.script.get(&token) {
                Some(action) => Lookup::Answer(token, Box::new(action.clone())),
                None => Lookup::Reject(api_error(StatusCode::BAD_REQUEST, "invalid action token")),
            }
        } else {
            Lookup::Reject(api_error(
                StatusCode::BAD_REQUEST,
                "missing required query parameter `action_token`",
            ))
        };
        if let Lookup::Reject(response) = &lookup {
            if response.status() == StatusCode::UNAUTHORIZED {
                inner.stats.unauthorized += 1;
            }
        }
        lookup
    };
    let (token, action) = match lookup {
        Lookup::Reject(response) => return response,
        Lookup::Answer(token, action) => (token, action),
    };

    if action.delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(action.delay_ms)).await;
    }
    if let Some(status) = action.status {
        let response = api_error(status_code(status), "scripted failure");
        if response.status() == StatusCode::UNAUTHORIZED {
            state.lock().stats.unauthorized += 1;
        }
        return response;
    }
    if action.garbage {
        return (
            [(header::CONTENT_TYPE, "application/json")],
            "<html><body>502 upstream garbage</body></html>",
        )
            .into_response();
    }
    let mut body = recommendation_body(&token, &action, now_ms());
    omit_paths(&mut body, &action.omit);
    Json(body).into_response()
}

/// The bearer token from `Authorization`, if the header is there and well formed. The scheme is
/// case-insensitive (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A 401 with the RFC 6750 challenge: no error code when no token was sent, `invalid_token`
/// when the token is unknown, expired or revoked.
fn unauthorized(check: Option<BearerCheck>) -> Response {
    let (challenge, message) = match check {
        None => ("Bearer", "missing bearer token"),
        Some(BearerCheck::Expired) => (
            "Bearer error=\"invalid_token\", error_description=\"token expired\"",
            "access token expired",
        ),
        Some(_) => ("Bearer error=\"invalid_token\"", "invalid access token"),
    };
    let mut response = api_error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// A small JSON error body (`message`, `error_code`); 429 and 503 carry `retry-after`.
fn api_error(status: StatusCode, message: &str) -> Response {
    let mut response = (
        status,
        Json(json!({ "message": message, "error_code": status.as_u16() })),
    )
        .into_response();
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// A scripted status as a status code; values that are not one become 500.
fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[allow(
    clippy::disallowed_methods,
    reason = "the simulator is the risk API, a service of its own with its own clock; it cannot use riskgate's"
)]
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `GET /_sim/stats`.
async fn stats(State(state): State<Arc<SimState>>) -> Response {
    Json(state.lock().stats.clone()).into_response()
}

/// `PUT /_sim/script`: entries are merged into the script (same token → replaced).
async fn put_script(
    State(state): State<Arc<SimState>>,
    entries: Result<Json<Script>, JsonRejection>,
) -> Response {
    let entries = match entries {
        Ok(Json(entries)) => entries,
        Err(rejection) => return admin_error(&rejection.body_text()),
    };
    if let Err(err) = script::validate(&entries) {
        return admin_error(&err.to_string());
    }
    let count = entries.len();
    state.lock().script.extend(entries);
    Json(json!({ "scripted": count })).into_response()
}

/// `POST /_sim/revoke`: every issued bearer token stops working.
async fn revoke(State(state): State<Arc<SimState>>) -> StatusCode {
    state.lock().tokens.revoke_all();
    StatusCode::NO_CONTENT
}

/// `POST /_sim/fail` body.
#[derive(Debug, Deserialize)]
struct FailRequest {
    /// Status every recommendation call answers; `null` ends the outage.
    status: Option<u16>,
}

/// `POST /_sim/fail`: start (`{"status": 503}`) or end (`{"status": null}`) an outage.
async fn fail(
    State(state): State<Arc<SimState>>,
    request: Result<Json<FailRequest>, JsonRejection>,
) -> Response {
    let status = match request {
        Ok(Json(request)) => request.status,
        Err(rejection) => return admin_error(&rejection.body_text()),
    };
    if let Some(code) = status {
        if StatusCode::from_u16(code).is_err() {
            return admin_error(&format!("`{code}` is not an HTTP status"));
        }
    }
    state.lock().outage = status;
    StatusCode::NO_CONTENT.into_response()
}

fn admin_error(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "bad_request", "message": message })),
    )
        .into_response()
}

async fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND, "not found")
}

#[cfg(test)]
#[allow(clippy::expect_used, reason = "a failed expectation is a test failure")]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(auth).expect("valid header"),
        );
        map
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn outage_statuses_carry_retry_after() {
        let busy = api_error(StatusCode::SERVICE_UNAVAILABLE, "x");
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
        let bad = api_error(StatusCode::BAD_REQUEST, "x");
        assert!(bad.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn invalid_scripted_status_becomes_500() {
        assert_eq!(status_code(42), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_code(429), StatusCode::TOO_MANY_REQUESTS);
    }
}
