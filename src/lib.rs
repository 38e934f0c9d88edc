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
//! ```text
//!  client ──► Envoy ──Check──► authz (extract) ──► decide ──► authz (respond) ──► Envoy
//!                                                  │  ├─ routes    (method+path → action, resource)
//!                                                  │  ├─ identity  (jwt_authn metadata → principal)
//!                                                  │  ├─ risk      (cache ─► risk API) → band
//!                                                  │  └─ policy    (Cedar)
//! ```
//!
//! The decision core ([`decide`]) takes a plain [`request::AccessRequest`] and returns a
//! plain [`decision::Decision`]; only [`authz`] knows Envoy's protobuf types.

pub mod audit;
pub mod authz;
pub mod canonical;
pub mod clock;
pub mod config;
pub mod decide;
pub mod decision;
pub mod identity;
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
