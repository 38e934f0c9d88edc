//! The runtime: everything `riskgate serve` runs around the decision itself.
//!
//! * [`server`] — builds the [`crate::decide::Decider`] and its observers from the config,
//!   binds the gRPC and admin listeners, serves, and stops in phases.
//! * [`reload`] — hot reload of policies and routes (file watch, `SIGHUP`).
//! * [`shutdown`] — process signals and the phases of a graceful stop.
//! * [`tls`] — TLS on the gRPC listener, with certificate reload.
//! * [`admin`] — the admin port: liveness, readiness, metrics.
//! * [`connections`] — limits on the gRPC port's connections (count, idle, first request).
//!
//! Imports among them form a DAG: `server` at the top, which nothing here imports; the
//! arrows point at what a module uses.
//!
//! ```text
//!  server ─┬─────────────► reload ──► policy (Snapshot, load_snapshot, LoadError)
//!          ├─► shutdown ──┘  (SIGHUP triggers a reload)
//!          ├─► tls ──────► telemetry::TlsMetrics
//!          │    └──────────┐
//!          ├─► connections ◄┘ ──► telemetry::ConnMetrics
//!          └─► admin ────► telemetry::Metrics
//! ```
//!
//! The policy snapshot and its loading live in [`crate::policy::snapshot`], shared with
//! the offline commands; telemetry imports nothing from here.

pub mod admin;
pub mod connections;
pub mod reload;
pub mod server;
pub mod shutdown;
pub mod tls;
