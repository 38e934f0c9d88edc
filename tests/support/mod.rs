//! Shared support for riskgate's end-to-end tests (real Envoy, real processes, real ports).
//!
//! Each e2e test file includes it with `mod support;` (Cargo compiles `tests/support/mod.rs` as a
//! module of every test binary that names it, never as a test binary of its own). One job per file:
//!
//! | module      | job                                                                         |
//! |-------------|-----------------------------------------------------------------------------|
//! | `procs`     | per-test temp dir; child processes in their own process group, killed on drop, logs kept and their tails printed on failure |
//! | `ports`     | free loopback ports                                                         |
//! | `wait`      | wait for a TCP port / an HTTP URL; all test timings (ms) from env vars      |
//! | `http`      | the reqwest client tests send requests with                                 |
//! | `envoy`     | find the Envoy binary (or skip), render `deploy/envoy/envoy.yaml`, start it |
//! | `upstream`  | in-process recording upstream (`200 upstream ok`)                           |
//! | `jwt`       | mint ES256 JWTs with the committed test key                                 |
//! | `riskgate`  | riskgate as a real process, config rendered from `deploy/riskgate.yaml`      |
//! | `certs`     | a CA and the server and client certificates it signs, made at test time (rcgen) |
//! | `redis`     | redis-server on free ports (standalone, password + TLS, 3-master Cluster), or skip |
//!
//! Test timings (all in milliseconds, all optional):
//! `RISKGATE_TEST_READY_TIMEOUT_MS` (30000), `RISKGATE_TEST_HTTP_TIMEOUT_MS` (5000),
//! `RISKGATE_TEST_POLL_MS` (50), `RISKGATE_TEST_KILL_TIMEOUT_MS` (3000),
//! `RISKGATE_TEST_ENVOY_LOG_FLUSH_MS` (100, how often Envoy flushes its access log).
//! Other switches: `ENVOY_BIN`, `RISKGATE_REQUIRE_ENVOY=1` (a missing Envoy fails instead of
//! skipping), `RISKGATE_TEST_KEEP_DIRS=1` (keep every test dir, not only failed ones),
//! `RISKGATE_TEST_LOG_TAIL_LINES` (40), `RISKGATE_TEST_ENVOY_LOG_LEVEL` (warning).
#![allow(
    dead_code,
    reason = "every test binary compiles the whole support tree but uses only part of it"
)]
#![allow(
    clippy::expect_used,
    reason = "test support: a failed setup step panics with a message, which fails the test"
)]

pub mod certs;
pub mod envoy;
pub mod http;
pub mod jwt;
pub mod ports;
pub mod procs;
pub mod redis;
pub mod riskgate;
pub mod upstream;
pub mod wait;
