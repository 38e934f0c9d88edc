//! Cache-miss load generator of `scripts/bench-cache-miss.sh` (issue #15 item 4): every Check
//! carries an action token riskgate has never seen, so every Check costs one risk-API call.
//! Measures, in the same run, the simulator's own latency (plain GETs of recommendations with
//! a keep-alive client, as riskgate calls it) and the latency of the Checks, so the report can
//! subtract the one from the other. Not a criterion bench and not CI.
//!
//! ```text
//! miss_load --grpc http://127.0.0.1:9001 --sim http://127.0.0.1:8085 --secret S \
//!           --prefix T --checks N --concurrency C --probes M
//! ```
//!
//! Checks carry the action tokens `T-0` … `T-(N-1)`, probes `T-probe-0` … (both must be in the
//! simulator's script). Prints one `RESULT key=value …` line; exits 1 if any Check is not
//! allowed (gRPC status 0 with an OK answer) or any probe fails.
//! Without arguments (as `cargo bench` runs every bench) it prints this usage and exits.

use riskgate::pb::envoy::config::core::v3::{address, socket_address, Address, SocketAddress};
use riskgate::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use riskgate::pb::envoy::service::auth::v3::check_response::HttpResponse;
use riskgate::pb::envoy::service::auth::v3::{attribute_context, AttributeContext, CheckRequest};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Command-line settings.
struct Args {
    grpc: String,
    sim: String,
    secret: String,
    prefix: String,
    checks: usize,
    concurrency: usize,
    probes: usize,
}

fn parse_args() -> Option<Args> {
    let mut kv: HashMap<String, String> = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        kv.insert(k.trim_start_matches("--").to_owned(), it.next()?);
    }
    let num = |k: &str, d: usize| kv.get(k).map_or(Some(d), |v| v.parse().ok());
    Some(Args {
        grpc: kv.get("grpc")?.clone(),
        sim: kv.get("sim")?.clone(),
        secret: kv
            .get("secret")
            .cloned()
            .unwrap_or_else(|| "sim-secret".into()),
        prefix: kv.get("prefix")?.clone(),
        checks: num("checks", 2000)?,
        concurrency: num("concurrency", 16)?.max(1),
        probes: num("probes", 200)?,
    })
}

/// A Check as Envoy sends it for an anonymous `POST /login` from 127.0.0.1 with `token`.
fn check(token: &str) -> CheckRequest {
    let peer = Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(40000)),
            ..Default::default()
        })),
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(attribute_context::Peer {
                address: Some(peer),
                ..Default::default()
            }),
            request: Some(attribute_context::Request {
                time: None,
                http: Some(attribute_context::HttpRequest {
                    id: "1".into(),
                    method: "POST".into(),
                    path: "/login".into(),
                    host: "bench.local".into(),
                    scheme: "http".into(),
                    protocol: "HTTP/1.1".into(),
                    headers: [
                        (":authority".to_owned(), "bench.local".to_owned()),
                        (":method".to_owned(), "POST".to_owned()),
                        (":path".to_owned(), "/login".to_owned()),
                        ("x-action-token".to_owned(), token.to_owned()),
                    ]
                    .into(),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }),
    }
}

/// p50, p90, p99 and p99.9 of `xs` (µs), sorted in place.
fn percentiles(xs: &mut [u64]) -> [u64; 4] {
    xs.sort_unstable();
    let at = |p: f64| {
        let i = ((xs.len() as f64) * p / 100.0) as usize;
        xs.get(i.min(xs.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    [at(50.0), at(90.0), at(99.0), at(99.9)]
}

/// Median etc. of plain GETs of recommendations, with a keep-alive HTTP client.
async fn probe_sim(a: &Args) -> Result<[u64; 4], String> {
    let http = reqwest::Client::new();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "riskgate-test"),
        ("client_secret", a.secret.as_str()),
    ];
    let token: serde_json::Value = http
        .post(format!("{}/oidc/token", a.sim))
        .form(&form)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| format!("token: {e}"))?
        .json()
        .await
        .map_err(|e| format!("token: {e}"))?;
    let bearer = token
        .get("access_token")
        .and_then(serde_json::Value::as_str)
        .ok_or("token: no access_token")?
        .to_owned();
    let mut lat = Vec::with_capacity(a.probes);
    for i in 0..a.probes {
        let t0 = Instant::now();
        let body = http
            .get(format!("{}/risk/v1/recommendation", a.sim))
            .query(&[("action_token", format!("{}-probe-{i}", a.prefix))])
            .bearer_auth(&bearer)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("probe {i}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("probe {i}: {e}"))?;
        lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
        std::hint::black_box(body);
    }
    Ok(percentiles(&mut lat))
}

/// Sends the Checks from `concurrency` tasks over one HTTP/2 connection (as Envoy does).
async fn run_checks(a: &Args) -> Result<(f64, [u64; 4]), String> {
    let channel = tonic::transport::Endpoint::from_shared(a.grpc.clone())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let requests: Vec<CheckRequest> = (0..a.checks)
        .map(|i| check(&format!("{}-{i}", a.prefix)))
        .collect();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests = std::sync::Arc::new(requests);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (next, requests) = (next.clone(), requests.clone());
        let mut client = AuthorizationClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(req) = requests.get(i) else {
                    return Ok::<_, String>(lat);
                };
                let t0 = Instant::now();
                let answer = client
                    .check(req.clone())
                    .await
                    .map_err(|e| format!("check {i}: {e}"))?
                    .into_inner();
                lat.push(u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX));
                let code = answer.status.map_or(-1, |s| s.code);
                if code != 0 || !matches!(answer.http_response, Some(HttpResponse::OkResponse(_))) {
                    return Err(format!("check {i}: not allowed (grpc code {code})"));
                }
            }
        }));
    }
    let mut all = Vec::with_capacity(a.checks);
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    Ok((all.len() as f64 / secs, percentiles(&mut all)))
}

async fn run(a: Args) -> Result<(), String> {
    let sim = probe_sim(&a).await?;
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (rate, checks) = run_checks(&a).await?;
    println!(
        "RESULT checks={} concurrency={} rate={rate:.0} p50={} p90={} p99={} p999={} \
         sim_p50={} sim_p90={} sim_p99={} sim_p999={}",
        a.checks,
        a.concurrency,
        checks[0],
        checks[1],
        checks[2],
        checks[3],
        sim[0],
        sim[1],
        sim[2],
        sim[3]
    );
    Ok(())
}

fn main() -> ExitCode {
    let Some(args) = parse_args() else {
        eprintln!("usage: miss_load --grpc URL --sim URL --prefix T [--secret S] [--checks N] [--concurrency C] [--probes M] (see scripts/bench-cache-miss.sh)");
        return ExitCode::SUCCESS;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("miss_load: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("miss_load: {e}");
            ExitCode::FAILURE
        }
    }
}
