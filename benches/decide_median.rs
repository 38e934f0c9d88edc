//! The in-process cost of one Check, for `scripts/bench-side-by-side.sh`: the issue's CPU
//! target is "do-nothing server + `decide()` median + 3 µs", so the script needs the
//! `decide()` median of the very config and CheckRequest it sends, measured in the same run.
//!
//! ```text
//! decide_median CONFIG CHECK_FILE [BATCHES]   CHECK_FILE as `noop_authz --write-check` writes it
//! ```
//!
//! Prints one line: `decide_ns=… handler_ns=…`, medians over batches of 100 calls on one
//! thread (wall time of a CPU-bound loop on an otherwise idle core, so ≈ CPU time):
//! - `decide`: `AuthzService::decide` — the decision step, what riskgate's
//!   `riskgate_check_duration_seconds` times: the CheckRequest read into an access request,
//!   route, identity, facts, risk, Cedar.
//! - `handler`: the whole `Authorization::check` handler — `decide` plus the span, metrics,
//!   the answer and the audit hand-off (the audit writer task runs on the same thread here).
//!
//! Without arguments (as `cargo bench` runs every bench) it prints this usage and exits.

use prost::Message as _;
use riskgate::audit::AuditSink;
use riskgate::authz::AuthzService;
use riskgate::pb::envoy::service::auth::v3::authorization_server::Authorization as _;
use riskgate::pb::envoy::service::auth::v3::CheckRequest;
use std::hint::black_box;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

const PER_BATCH: u32 = 100;

/// The allocator the `riskgate` binary runs with (src/main.rs), so the median is the cost of
/// the same code the server runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ExitCode {
    eprintln!(
        "usage: decide_median CONFIG CHECK_FILE [BATCHES] (see scripts/bench-side-by-side.sh)"
    );
    ExitCode::SUCCESS
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn run(config: &Path, check_file: &Path, batches: usize) -> Result<(u64, u64), String> {
    let framed = std::fs::read(check_file).map_err(|e| format!("{}: {e}", check_file.display()))?;
    // gRPC framing: a flag byte and a big-endian u32 length before the message.
    let check = CheckRequest::decode(framed.get(5..).unwrap_or_default())
        .map_err(|e| format!("{}: not a framed CheckRequest: {e}", check_file.display()))?;
    // The audit log on, as in the side-by-side run (written to nowhere).
    let audit = AuditSink::spawn(tokio::io::sink(), 100_000);
    let app = riskgate::serve::server::App::from_file(config, audit.clone())
        .await
        .map_err(|e| format!("{}: {e}", config.display()))?;
    let service = AuthzService::new(app.decider.clone(), app.metrics.clone(), audit)
        .with_limits(app.config.limits)
        .with_client_address(app.config.client_address);
    let mut decide = Vec::with_capacity(batches);
    let mut handler = Vec::with_capacity(batches);
    for round in 0..=batches {
        let started = Instant::now();
        for _ in 0..PER_BATCH {
            black_box(service.decide(black_box(&check), None).await);
        }
        let decide_ns = started.elapsed().as_nanos() as f64 / f64::from(PER_BATCH);
        let started = Instant::now();
        for _ in 0..PER_BATCH {
            let answer = service.check(tonic::Request::new(check.clone())).await;
            black_box(answer.ok());
        }
        let handler_ns = started.elapsed().as_nanos() as f64 / f64::from(PER_BATCH);
        // Let the audit writer drain between batches, as it does between Checks in a server.
        tokio::task::yield_now().await;
        if round > 0 {
            decide.push(decide_ns);
            handler.push(handler_ns);
        }
    }
    Ok((median(decide) as u64, median(handler) as u64))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, check, batches) = match args.as_slice() {
        [config, check] => (config, check, 200),
        [config, check, n] => match n.parse() {
            Ok(n) => (config, check, n),
            Err(_) => return usage(),
        },
        _ => return usage(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("decide_median: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(Path::new(config), Path::new(check), batches)) {
        Ok((decide, handler)) => {
            println!("decide_ns={decide} handler_ns={handler}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("decide_median: {e}");
            ExitCode::FAILURE
        }
    }
}
