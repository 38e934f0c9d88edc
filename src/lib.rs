//! riskgate — risk-based, fine-grained authorization for every request in a service mesh.
//!
//! Envoy (standalone, or Istio's sidecars and gateways) asks riskgate over gRPC ext_authz
//! whether a request may go through. riskgate joins two questions:
//!
//! * **Deterministic** — may this principal do this action on this resource? Local Cedar
//!   policies, with the request's method and path mapped to an action and a resource.
//! * **Dynamic** — is this interaction legitimate right now? A real-time recommendation
//!   from a Transmit-compatible risk API, looked up by the SDK's action token.
//!
//! # What happens to a Check
//!
//! ```text
//!  Envoy ──Check──► authz::extract ──► decide::Decider::decide ──► authz::respond ──► Envoy
//!                   (limits, one        hygiene ─► route ─► principal     │
//!                    action token)      ─► risk ─► gate ─► authorize      ├─► telemetry (metrics)
//!                                       ─► step-up ─► uses                └─► audit (one line)
//! ```
//!
//! 1. **Extract** — [`authz`] is the gRPC service, a thin adapter. [`authz::extract`] turns
//!    Envoy's `CheckRequest` into a plain [`request::AccessRequest`] and refuses at the
//!    edge what riskgate cannot read: a malformed Check, one over the configured limits,
//!    one with the action token twice.
//! 2. **Decide** — [`decide::Decider::decide`] runs the stages in order; each is a function
//!    returning `Result<_, DenyReason>`, and the first deny ends the decision:
//!    * [`decide::hygiene`] — no method or path, a method override, a non-canonical path
//!      ([`canonical`]);
//!    * [`decide::route`] — host + method + path → Cedar action and resource, from the
//!      compiled route table ([`routes`]), or a pass (CORS preflight, a host's
//!      `default: allow`), or no route;
//!    * [`decide::principal`] — who is asking, from verified identity only ([`identity`]);
//!    * [`decide::facts`] — the request facts the `context` config names (typed headers and
//!      query parameters, the caller's SPIFFE workload) for Cedar's context;
//!    * [`decide::risk`] — the recommendation for the action token and what it means here:
//!      [`binding`](decide::risk::binding) to this request, [`band`](decide::risk::band),
//!      [`fail mode`](decide::risk::fail_mode) on an outage, DENY and high band (the gate),
//!      and later whether a CHALLENGE is met (step-up);
//!    * [`decide::authorize`] — the Cedar question against the live policy set (and the
//!      shadow set beside it, which never decides), [`policy`];
//!    * [`decide::uses`] — an allowed request spends one use of its action.
//! 3. **Respond** — [`authz::respond`] turns the [`decision::Decision`] into Envoy's
//!    answer (200 with headers for the upstream, or 401/403/429/503 with a generic body); the
//!    same decision is counted in the metrics ([`telemetry`]) and written as one audit line
//!    ([`audit`]). [`decision::DenyReason`] is the one vocabulary of why, for answer, metrics
//!    and audit alike.
//!
//! The decision core ([`decide`]) takes a plain [`request::AccessRequest`] and returns a
//! plain [`decision::Decision`]; only [`authz`] knows Envoy's protobuf types ([`pb`]), and
//! only [`risk::client`] knows the risk API's HTTP.
//!
//! # Where the rest lives
//!
//! * [`risk`] only *gets* a recommendation: the API [`client`](risk::client) and its OAuth
//!   [`token`](risk::token), the per-action cache with single-flight fetch
//!   ([`assessor`](risk::assessor)), the [`breaker`](risk::breaker), behind the
//!   [`RiskSource`](risk::RiskSource) seam. What it means for a request is
//!   [`decide::risk`]'s business.
//! * [`state`] is the store for what must hold across replicas — the use ledger of
//!   single-use tokens, the per-source risk-API call budgets, the shared recommendation
//!   cache: in memory per replica, or Redis shared by all, behind one small trait with a
//!   guard (timeout, breaker, failure outcome).
//! * [`policy`] loads and validates the Cedar schema, policies and entities;
//!   [`policy::snapshot`] builds the immutable snapshot (routes, live and shadow sets) that
//!   start-up, hot reload and the offline commands all load the same way.
//! * [`serve`] is the runtime: [`server`](serve::server) (build, bind, serve),
//!   [`reload`](serve::reload), [`shutdown`](serve::shutdown), [`tls`](serve::tls) and the
//!   [`admin`](serve::admin) port (`/healthz`, `/readyz`, `/metrics`).
//! * [`config`] is the typed configuration (durations typed), validated before any listener
//!   binds; [`source`] locates a problem as `file:line`; [`clock::now_ms`] is the one wall
//!   clock every stage reads; [`offline`] holds `riskgate check`, `riskgate validate` and
//!   `riskgate replay`.
//!
//! # Never
//!
//! * **Never allow by default.** Every early exit is an explicit deny rule with its own
//!   reason: no route (an unknown method included), an unreadable request, an unusable
//!   identity, a policy that cannot be evaluated, a risk outage under `fail_mode: closed`.
//!   Nothing falls through to allow, and a policy directory without policies refuses to
//!   load rather than serve.
//! * **Never a reason to the client.** Deny bodies are generic (an error word and the
//!   decision id); the reason, policy ids and scores go to the audit log and metrics only.
//! * **Never a token in logs.** Action tokens, bearer tokens, cookies and the client secret
//!   appear in no log line, audit line, metric or error; caches and stores key on hashes.
#![warn(missing_docs)]

pub mod audit;
pub mod authz;
pub mod canonical;
pub mod clock;
pub mod config;
pub mod decide;
pub mod decision;
pub mod identity;
pub mod log_limit;
pub mod money;
pub mod offline;
pub mod policy;
pub mod request;
pub mod risk;
pub mod routes;
pub mod serve;
pub mod source;
pub mod state;
pub mod telemetry;

/// Generated Envoy ext_authz protobuf types (from the vendored protos in `proto/`).
pub mod pb {
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));

    /// Encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
}
