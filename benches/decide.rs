//! Benchmarks of the decision path, each beside a baseline measured in the same run so the
//! README can report ratios rather than machine-dependent absolute times:
//!
//! * `cedar/*`: `decide()` on a risk-off route vs Cedar's own `is_authorized` on the same
//!   policy set (unsliced), with the example policies and with 1,000 and 10,000 generated
//!   principal-scoped policies added (riskgate evaluates only the slice that can apply);
//! * `risk/cache_hit`: a Check whose recommendation is cached vs the same decision on a
//!   route without risk (what the cache adds);
//! * `risk/cache_miss`: a Check that fetches from the API simulator on loopback vs a plain
//!   HTTP GET of the same recommendation (what riskgate adds to the API's own latency).

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request, Schema};
use criterion::{criterion_group, criterion_main, Criterion};
use risk_sim::{ScriptedAction, SimConfig};
use riskgate::audit::AuditSink;
use riskgate::request::AccessRequest;
use serde_json::{json, Map, Value};
mod fixtures;

use fixtures::{build_decider, check_request, config};
use std::hint::black_box;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn user_request(method: &str, path: &str, token: Option<&str>) -> AccessRequest {
    let mut req = AccessRequest::new(method, path);
    req.host = "bank.example".into();
    if let Some(t) = token {
        req.headers.insert("x-action-token".into(), t.into());
    }
    let mut ns = Map::new();
    ns.insert("jwt_payload".into(), json!({ "sub": "u1", "amr": ["pwd"] }));
    req.metadata
        .insert("envoy.filters.http.jwt_authn".into(), ns);
    req
}

/// Cedar alone: parse the same files, build the same request, call `is_authorized`.
struct RawCedar {
    request: Request,
    policies: PolicySet,
    entities: Entities,
}

fn raw_cedar(dir: &Path) -> RawCedar {
    let schema_text = std::fs::read_to_string(dir.join("schema.cedarschema")).unwrap_or_default();
    let schema = match Schema::from_cedarschema_str(&schema_text) {
        Ok((s, _)) => s,
        Err(e) => panic!("{e}"),
    };
    let mut policies = PolicySet::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    files.sort();
    let mut n = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let set: PolicySet = text.parse().unwrap_or_else(|e| panic!("{e}"));
        for p in set.policies() {
            n += 1;
            let _ = policies.add(p.new_id(cedar_policy::PolicyId::new(format!("p{n}"))));
        }
    }
    let entities_text = std::fs::read_to_string(dir.join("entities.json")).unwrap_or_default();
    let entities =
        Entities::from_json_str(&entities_text, Some(&schema)).unwrap_or_else(|e| panic!("{e}"));
    let uid = |t: &str, id: &str| -> EntityUid {
        EntityUid::from_type_name_and_id(
            cedar_policy::EntityTypeName::from_str(t).unwrap_or_else(|e| panic!("{e}")),
            cedar_policy::EntityId::new(id),
        )
    };
    let action = uid("Action", "view_balance");
    let context = Context::from_json_value(
        json!({
            "risk": { "present": false, "outage": false, "score": 0, "band": "unassessed", "recommendation": "NONE", "reasons": [] },
            "request": { "method": "GET", "path": "/core/a1/balance", "host": "bank.example" }
        }),
        Some((&schema, &action)),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let request = Request::new(
        uid("User", "u1"),
        action,
        uid("Account", "a1"),
        context,
        Some(&schema),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    RawCedar {
        request,
        policies,
        entities,
    }
}

fn benches(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    let sim = match rt.block_on(risk_sim::start(
        SimConfig::default(),
        ([127, 0, 0, 1], 0).into(),
    )) {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    let tmp = std::env::temp_dir().join(format!("riskgate-bench-{}", std::process::id()));

    let mut cedar = c.benchmark_group("cedar");
    for (label, extra) in [
        ("example", 0usize),
        ("1000_generated", 1000),
        ("10000_generated", 10_000),
    ] {
        let dir = tmp.join(label);
        let config = config(&sim.base_url(), extra, &dir);
        let decider = rt.block_on(build_decider(&config));
        let req = user_request("GET", "/core/a1/balance", None);
        let verdict = rt.block_on(decider.decide(&req)).verdict;
        assert_eq!(
            verdict,
            riskgate::decision::Verdict::Allow,
            "bench request must be allowed"
        );
        cedar.bench_function(format!("decide/{label}"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(decider.decide(black_box(&req)).await) })
        });
        let raw = raw_cedar(&dir);
        let authorizer = Authorizer::new();
        cedar.bench_function(format!("is_authorized/{label}"), |b| {
            b.iter(|| {
                black_box(authorizer.is_authorized(&raw.request, &raw.policies, &raw.entities))
            })
        });
    }
    cedar.finish();

    // The same decision with 100,000 more accounts in the entities file: the per-request
    // entity set must not grow with the file.
    let mut entities_group = c.benchmark_group("entities");
    for (label, accounts) in [("7", 0usize), ("100k", 100_000)] {
        let dir = tmp.join(format!("entities-{label}"));
        let mut config = config(&sim.base_url(), 0, &dir);
        if accounts > 0 {
            let mut list: Vec<Value> = serde_json::from_str(
                &std::fs::read_to_string(dir.join("entities.json")).unwrap_or_default(),
            )
            .unwrap_or_default();
            list.extend((0..accounts).map(|i| {
                json!({ "uid": { "type": "Account", "id": format!("bulk-{i}") },
                        "attrs": { "owner": { "__entity": { "type": "User", "id": format!("user-{}", i % 1000) } } },
                        "parents": [] })
            }));
            let _ = std::fs::write(dir.join("entities.json"), Value::Array(list).to_string());
            config.policies.entities = Some(dir.join("entities.json"));
        }
        let decider = rt.block_on(build_decider(&config));
        let req = user_request("GET", "/core/a1/balance", None);
        entities_group.bench_function(format!("decide/{label}_entities"), |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(decider.decide(black_box(&req)).await) })
        });
    }
    entities_group.finish();

    let config = config(&sim.base_url(), 0, &tmp.join("risk"));
    let decider = rt.block_on(build_decider(&config));
    let mut risk = c.benchmark_group("risk");
    sim.script(
        "cached",
        ScriptedAction {
            action_type: "login".into(),
            user_id: Some("u1".into()),
            ..ScriptedAction::default()
        },
    );
    let cached = user_request("GET", "/accounts/a1/balance", Some("cached"));
    let warm = rt.block_on(decider.decide(&cached));
    assert_eq!(
        warm.verdict,
        riskgate::decision::Verdict::Allow,
        "{:?}",
        warm.verdict
    );
    risk.bench_function("cache_hit_check", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(decider.decide(black_box(&cached)).await) })
    });
    let core = user_request("GET", "/core/a1/balance", None);
    risk.bench_function("core_decision_no_risk", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(decider.decide(black_box(&core)).await) })
    });

    // Cache misses: a fresh token each iteration, scripted up front.
    let counter = AtomicU64::new(0);
    for i in 0..200_000u64 {
        sim.script(
            &format!("m{i}"),
            ScriptedAction {
                action_type: "login".into(),
                user_id: Some("u1".into()),
                ..ScriptedAction::default()
            },
        );
    }
    risk.bench_function("cache_miss_check", |b| {
        b.to_async(&rt).iter(|| {
            let token = format!("m{}", counter.fetch_add(1, Ordering::Relaxed) % 200_000);
            let decider = decider.clone();
            async move {
                let req = user_request("GET", "/accounts/a1/balance", Some(&token));
                black_box(decider.decide(&req).await)
            }
        })
    });
    let http = reqwest::Client::new();
    let url = format!("{}/risk/v1/recommendation", sim.base_url());
    let bearer = rt.block_on(async {
        let r = http
            .post(format!("{}/oidc/token", sim.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "riskgate-test"),
                ("client_secret", "sim-secret"),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        v["access_token"].as_str().unwrap_or_default().to_owned()
    });
    risk.bench_function("simulator_get_alone", |b| {
        b.to_async(&rt).iter(|| async {
            let r = http
                .get(&url)
                .query(&[("action_token", "cached")])
                .bearer_auth(&bearer)
                .send()
                .await;
            black_box(r.map(|r| r.status()).ok())
        })
    });
    risk.finish();

    // Observability overhead: the full Check handler (metrics, audit line to a sink, a
    // tracing span with a subscriber installed, exporter off) vs the same work bare.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let mut obs = c.benchmark_group("observability");
    let audit = rt.block_on(async { AuditSink::spawn(tokio::io::sink(), 100_000) });
    let metrics = Arc::new(riskgate::telemetry::Metrics::with_sources(
        riskgate::telemetry::MetricSources {
            assessor: decider.assessor().cloned(),
            audit_dropped: Some(audit.dropped_counter()),
            ..Default::default()
        },
    ));
    let service = riskgate::authz::AuthzService::new(decider.clone(), metrics, audit);
    let request = check_request("GET", "/accounts/a1/balance", "cached");
    obs.bench_function("check_with_metrics_audit_tracing", |b| {
        b.to_async(&rt).iter(|| async {
            use riskgate::pb::envoy::service::auth::v3::authorization_server::Authorization as _;
            black_box(
                service
                    .check(tonic::Request::new(request.clone()))
                    .await
                    .ok(),
            )
        })
    });
    let answers = riskgate::authz::respond::AnswerSettings::default();
    obs.bench_function("check_bare", |b| {
        b.to_async(&rt).iter(|| async {
            // Same owned request as the full handler gets from tonic's decoder.
            let owned = request.clone();
            let access = riskgate::authz::extract::access_request(&owned, None).ok();
            let Some(access) = access else { return };
            let d = decider.decide(&access).await;
            black_box(riskgate::authz::respond::to_check_response(&d, &answers));
        })
    });
    obs.finish();
    let _ = std::fs::remove_dir_all(&tmp);
}

criterion_group!(decide_benches, benches);
criterion_main!(decide_benches);
