//! The Redis state store against real servers (started here on free loopback ports): a use is
//! consumed exactly once across replicas, records expire when they should, a server that may
//! evict keys is refused, password + TLS, Cluster slot co-location, and what a dead or
//! restarted server means for each `on_failure`.
//!
//! Needs `redis-server` and `redis-cli` (`scripts/redis-env.sh` installs them); without them
//! each test prints a skip line — or fails under `RISKGATE_REQUIRE_ENVOY=1`.
//! Timing: `RISKGATE_TEST_STATE_TIMEOUT_MS` (500), the per-operation budget given to the store.

mod support;

use riskgate::clock::now_ms;
use riskgate::config::{OnFailure, RedisConfig, StateConfig, StoreKind};
use riskgate::state::{self, Key, NoObserver, StateObserver, StateStore, StoreError, UseOutcome};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::procs::TestDir;
use support::redis::{binaries, Cluster, Redis, TlsFiles};
use support::wait::{env_ms, ready_timeout};

fn config(redis: RedisConfig) -> StateConfig {
    StateConfig {
        store: StoreKind::Redis,
        timeout: env_ms("RISKGATE_TEST_STATE_TIMEOUT_MS", 500),
        redis: Some(redis),
        ..StateConfig::default()
    }
}

fn standalone(url: String) -> RedisConfig {
    RedisConfig {
        url: Some(url),
        ..RedisConfig::default()
    }
}

async fn build(c: &StateConfig) -> Arc<dyn StateStore> {
    match state::build(c, Arc::new(NoObserver)).await {
        Ok(s) => s,
        Err(e) => panic!("build the store: {e}"),
    }
}

/// Fires `per_store` concurrent consumers of one action at each store, for `trials` fresh
/// actions, and returns how many were allowed per trial.
async fn race(
    stores: &[Arc<dyn StateStore>],
    trials: u32,
    per_store: usize,
    max_uses: u32,
) -> Vec<usize> {
    let mut allowed = Vec::new();
    for trial in 0..trials {
        let key = Arc::new(Key::action_use(&format!("race-{trial}-{}", now_ms())));
        let until = now_ms() + 60_000;
        let mut tasks = Vec::new();
        for store in stores {
            for _ in 0..per_store {
                let (store, key) = (store.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    store.consume_use(&key, max_uses, until).await
                }));
            }
        }
        let mut n = 0;
        for t in tasks {
            match t.await {
                Ok(Ok(UseOutcome::Allowed)) => n += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("trial {trial}: {e}"),
                Err(e) => panic!("trial {trial}: {e}"),
            }
        }
        allowed.push(n);
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_consume_a_use_exactly_once() {
    let Some(bins) = binaries() else { return };
    let dir = TestDir::new("state-race");
    let server = Redis::start(&bins, &dir, "redis", &[]).await;
    let c = config(standalone(server.url()));
    let replicas = [build(&c).await, build(&c).await];
    let allowed = race(&replicas, 200, 4, 1).await;
    assert!(
        allowed.iter().all(|&n| n == 1),
        "allowed per trial: {allowed:?}"
    );
    let allowed = race(&replicas, 50, 4, 3).await;
    assert!(
        allowed.iter().all(|&n| n == 3),
        "max_uses 3, allowed per trial: {allowed:?}"
    );
}

#[tokio::test]
async fn records_expire_when_they_should() -> Result<(), StoreError> {
    let Some(bins) = binaries() else {
        return Ok(());
    };
    let dir = TestDir::new("state-expiry");
    let server = Redis::start(&bins, &dir, "redis", &[]).await;
    let store = build(&config(standalone(server.url()))).await;

    let k = Key::action_use("expiring");
    assert_eq!(
        store.consume_use(&k, 1, now_ms() + 300).await?,
        UseOutcome::Allowed
    );
    assert_eq!(
        store.consume_use(&k, 1, now_ms() + 300).await?,
        UseOutcome::UsedUp
    );
    let pttl = server.cli(&["pttl", &k.render("riskgate")]);
    let pttl: i64 = pttl.trim().parse().unwrap_or(-9);
    assert!(
        (1..=300).contains(&pttl),
        "the record lives until keep_until: pttl {pttl}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        store.consume_use(&k, 1, now_ms() + 300).await?,
        UseOutcome::Allowed,
        "expired: a new action"
    );

    let w = Key::principal("alice", "budget:transfer");
    assert_eq!(store.incr_window(&w, 300).await?, 1);
    assert_eq!(store.incr_window(&w, 300).await?, 2);
    let n = Key::negative("bad-token");
    store.put(&n, b"rejected", 300).await?;
    assert_eq!(store.get(&n).await?.as_deref(), Some(&b"rejected"[..]));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.incr_window(&w, 300).await?, 1, "a new window");
    assert_eq!(store.get(&n).await?, None);
    Ok(())
}

#[tokio::test]
async fn a_server_that_may_evict_is_refused_unless_overridden() {
    let Some(bins) = binaries() else { return };
    let dir = TestDir::new("state-eviction");
    let lru = Redis::start(&bins, &dir, "lru", &["--maxmemory-policy", "allkeys-lru"]).await;
    let mut c = config(standalone(lru.url()));
    let err = state::build(&c, Arc::new(NoObserver))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("allkeys-lru") && err.contains("state.redis.allow_eviction"),
        "{err}"
    );
    if let Some(r) = c.redis.as_mut() {
        r.allow_eviction = true;
    }
    assert!(state::build(&c, Arc::new(NoObserver)).await.is_ok());

    let managed = Redis::start(&bins, &dir, "noconfig", &["--rename-command", "CONFIG", ""]).await;
    let c = config(standalone(managed.url()));
    let err = state::build(&c, Arc::new(NoObserver))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("cannot read") && err.contains("state.redis.allow_eviction"),
        "{err}"
    );

    let good = Redis::start(&bins, &dir, "good", &["--maxmemory-policy", "noeviction"]).await;
    assert!(
        state::build(&config(standalone(good.url())), Arc::new(NoObserver))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn password_and_tls() -> Result<(), StoreError> {
    let Some(bins) = binaries() else {
        return Ok(());
    };
    let dir = TestDir::new("state-tls");
    let tls = TlsFiles::make(&dir);
    let server = Redis::start_tls(&bins, &dir, "tls", &tls, "s3cret-pw").await;
    let pw = dir.join("password");
    std::fs::write(&pw, "s3cret-pw\n").map_err(|e| StoreError::Protocol(e.to_string()))?;
    let full = RedisConfig {
        url: Some(server.url()),
        password_file: Some(pw),
        ca_file: Some(tls.ca.clone()),
        cert_file: Some(tls.client_cert.clone()),
        key_file: Some(tls.client_key.clone()),
        ..RedisConfig::default()
    };
    let store = build(&config(full.clone())).await;
    let k = Key::action_use("tls");
    assert_eq!(
        store.consume_use(&k, 1, now_ms() + 60_000).await?,
        UseOutcome::Allowed
    );
    assert_eq!(
        store.consume_use(&k, 1, now_ms() + 60_000).await?,
        UseOutcome::UsedUp
    );

    let no_password = RedisConfig {
        password_file: None,
        ..full.clone()
    };
    let err = state::build(&config(no_password), Arc::new(NoObserver))
        .await
        .err();
    assert!(err.is_some(), "no password: refused");
    let err = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(!err.contains("s3cret"), "{err}");
    let no_client_cert = RedisConfig {
        cert_file: None,
        key_file: None,
        ..full.clone()
    };
    assert!(
        state::build(&config(no_client_cert), Arc::new(NoObserver))
            .await
            .is_err(),
        "mTLS required"
    );
    let other_ca = TlsFiles::make(&TestDir::new("state-tls-other"));
    let wrong_ca = RedisConfig {
        ca_file: Some(other_ca.ca),
        ..full
    };
    assert!(
        state::build(&config(wrong_ca), Arc::new(NoObserver))
            .await
            .is_err(),
        "server cert checked"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_keeps_each_principal_in_one_slot() -> Result<(), StoreError> {
    let Some(bins) = binaries() else {
        return Ok(());
    };
    let dir = TestDir::new("state-cluster");
    let cluster = Cluster::start(&bins, &dir).await;
    let c = config(RedisConfig {
        cluster: cluster.urls(),
        ..RedisConfig::default()
    });
    let replicas = [build(&c).await, build(&c).await];
    let allowed = race(&replicas, 100, 3, 1).await;
    assert!(
        allowed.iter().all(|&n| n == 1),
        "allowed per trial: {allowed:?}"
    );
    // the use records really are spread over the three masters
    for node in &cluster.nodes {
        let keys: u64 = node.cli(&["dbsize"]).trim().parse().unwrap_or(0);
        assert!(keys > 5, "node {} holds {keys} keys", node.port);
    }
    // all of one principal's records share a slot: a two-key script over them is legal
    let a = Key::principal("alice", "budget:transfer").render("riskgate");
    let b = Key::principal("alice", "risk").render("riskgate");
    let other = Key::principal("bob", "risk").render("riskgate");
    let client = redis::cluster::ClusterClient::new(cluster.urls())
        .map_err(|e| StoreError::Protocol(e.to_string()))?;
    let mut conn = client
        .get_async_connection()
        .await
        .map_err(|e| StoreError::Protocol(e.to_string()))?;
    let two_keys =
        redis::Script::new("redis.call('SET', KEYS[1], 1) redis.call('SET', KEYS[2], 2) return 1");
    let same: redis::RedisResult<i64> = two_keys.key(&a).key(&b).invoke_async(&mut conn).await;
    assert_eq!(same.ok(), Some(1), "one principal, one slot");
    let cross: redis::RedisResult<i64> = two_keys.key(&a).key(&other).invoke_async(&mut conn).await;
    assert!(
        cross.is_err(),
        "two principals: CROSSSLOT (the check can fail)"
    );
    replicas[0]
        .put(&Key::principal("alice", "risk"), b"high", 60_000)
        .await?;
    assert_eq!(
        replicas[1]
            .get(&Key::principal("alice", "risk"))
            .await?
            .as_deref(),
        Some(&b"high"[..])
    );
    Ok(())
}

#[derive(Default)]
struct Count {
    fallbacks: AtomicU32,
}

impl StateObserver for Count {
    fn local_fallback(&self, _: &'static str) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

/// Polls `op` until it succeeds (the store recovered) or the ready timeout passes.
async fn until_ok(store: &dyn StateStore, key: &Key) -> UseOutcome {
    let started = Instant::now();
    loop {
        match store.consume_use(key, 1, now_ms() + 60_000).await {
            Ok(o) => return o,
            Err(e) if started.elapsed() < ready_timeout() => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no recovery after {:?}: {e}", ready_timeout()),
        }
    }
}

#[tokio::test]
async fn a_dead_store_is_an_error_when_closed_and_recovers_after_restart() -> Result<(), StoreError>
{
    let Some(bins) = binaries() else {
        return Ok(());
    };
    let dir = TestDir::new("state-closed");
    // persistence on, as in production: a restarted store remembers its use records
    let mut server = Redis::start(
        &bins,
        &dir,
        "redis",
        &["--appendonly", "yes", "--appendfsync", "always"],
    )
    .await;
    let mut c = config(standalone(server.url()));
    c.breaker.open = Duration::from_millis(200);
    let store = build(&c).await;
    let used = Key::action_use("before-the-outage");
    assert_eq!(
        store.consume_use(&used, 1, now_ms() + 60_000).await?,
        UseOutcome::Allowed
    );

    server.kill();
    let mut errors = Vec::new();
    for i in 0..6 {
        match store
            .consume_use(
                &Key::action_use(&format!("during-{i}")),
                1,
                now_ms() + 60_000,
            )
            .await
        {
            Err(e) => errors.push(e.label()),
            Ok(o) => panic!("store down, yet {o:?}"),
        }
    }
    assert!(
        errors
            .iter()
            .all(|l| ["unavailable", "timeout", "breaker_open"].contains(l)),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"breaker_open"),
        "the breaker opened: {errors:?}"
    );

    server.restart(&dir).await;
    assert_eq!(
        until_ok(store.as_ref(), &Key::action_use("after")).await,
        UseOutcome::Allowed,
        "same client, recovered"
    );
    assert_eq!(
        store.consume_use(&used, 1, now_ms() + 60_000).await?,
        UseOutcome::UsedUp,
        "no double use across the restart"
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_store_falls_back_to_this_replica_when_local() -> Result<(), StoreError> {
    let Some(bins) = binaries() else {
        return Ok(());
    };
    let dir = TestDir::new("state-local");
    let mut server = Redis::start(&bins, &dir, "redis", &[]).await;
    let mut c = config(standalone(server.url()));
    c.on_failure = OnFailure::Local;
    c.breaker.open = Duration::from_millis(200);
    let seen = Arc::new(Count::default());
    let store = match state::build(&c, seen.clone()).await {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    server.kill();
    let k = Key::action_use("during");
    assert_eq!(
        store.consume_use(&k, 1, now_ms() + 60_000).await?,
        UseOutcome::Allowed
    );
    assert_eq!(
        store.consume_use(&k, 1, now_ms() + 60_000).await?,
        UseOutcome::UsedUp,
        "counted locally"
    );
    assert_eq!(seen.fallbacks.load(Ordering::Relaxed), 2);

    server.restart(&dir).await;
    let started = Instant::now();
    loop {
        // back on the shared store: a fresh server knows nothing of the local count
        let k = Key::action_use(&format!("after-{}", now_ms()));
        store.consume_use(&k, 1, now_ms() + 60_000).await?;
        if server.cli(&["dbsize"]).trim() != "0" {
            break;
        }
        assert!(
            started.elapsed() < ready_timeout(),
            "never went back to the shared store"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
