//! The shared store on Redis (>= 7), standalone or Cluster, over the `redis` crate's
//! reconnecting connections (a dead server fails the operations in flight; the next ones
//! reconnect, so a restarted server is picked up without rebuilding the client).
//!
//! Consuming a use is one Lua script — read the count, refuse at `max_uses`, else `INCR`
//! and `PEXPIREAT` — so it is atomic across replicas and one round trip (`EVALSHA`; `EVAL`
//! once after a server restart). Every key is hash-tagged ([`Key`]), so a script's keys
//! always live in one Cluster slot.

use super::history::{self, HistoryTotals, HistoryUpdate, HistoryWindow};
use super::{BoxFuture, Key, StateStore, StoreError, UseOutcome};
use crate::config::RedisConfig;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{
    ClientTlsConfig, ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, Script,
    ServerErrorKind, TlsCertificates, Value,
};
use std::path::Path;
use std::time::Duration;

/// `KEYS[1]` use record; `ARGV[1]` max uses, `ARGV[2]` keep-until (epoch ms).
/// Returns 1 when the use is counted, 0 when used up.
const CONSUME_USE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
else
  redis.call('PEXPIREAT', KEYS[1], ARGV[2], 'GT')
end
return 1
";

/// `KEYS[1]` counter; `ARGV[1]` window (ms). Returns the new count.
const INCR_WINDOW: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
";

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// State in Redis, shared by every replica that points at the same server and prefix.
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    consume_use: Script,
    incr_window: Script,
    history: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.conn {
            Conn::Single(_) => "standalone",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("mode", &mode)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the configured server or Cluster (reading the password and TLS files);
    /// `op_timeout` bounds each answer. Fails when no connection can be made.
    pub async fn connect(
        config: &RedisConfig,
        op_timeout: Duration,
    ) -> Result<RedisStore, StoreError> {
        let password = match &config.password_file {
            Some(p) => Some(read_text(p)?.trim_end_matches(['\r', '\n']).to_owned()),
            None => None,
        };
        let certs = tls_certificates(config)?;
        let connect_timeout = config.connect_timeout;
        let conn = if config.is_cluster() {
            let mut b = ClusterClientBuilder::new(config.cluster.iter().map(String::as_str))
                .connection_timeout(connect_timeout)
                .response_timeout(op_timeout)
                .retries(2);
            if let Some(pw) = &password {
                b = b.password(pw);
            }
            if let Some(u) = &config.username {
                b = b.username(u);
            }
            if let Some(c) = certs {
                b = b.certs(c);
            }
            let client = b.build().map_err(connect_error)?;
            let conn = tokio::time::timeout(connect_timeout, client.get_async_connection())
                .await
                .map_err(|_| StoreError::Timeout)?
                .map_err(connect_error)?;
            Conn::Cluster(conn)
        } else {
            let url = config.url.as_deref().unwrap_or_default();
            let mut info = url.into_connection_info().map_err(|_| StoreError::Config {
                field: "state.redis.url",
                message: "is not a redis URL".into(),
            })?;
            let mut settings = info.redis_settings().clone();
            if let Some(pw) = &password {
                settings = settings.set_password(pw);
            }
            if let Some(u) = &config.username {
                settings = settings.set_username(u);
            }
            info = info.set_redis_settings(settings);
            let client = match certs {
                Some(c) => redis::Client::build_with_tls(info, c),
                None => redis::Client::open(info),
            }
            .map_err(connect_error)?;
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(op_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let conn = tokio::time::timeout(
                connect_timeout.saturating_mul(2),
                ConnectionManager::new_with_config(client, manager),
            )
            .await
            .map_err(|_| StoreError::Timeout)?
            .map_err(connect_error)?;
            Conn::Single(conn)
        };
        Ok(RedisStore {
            conn,
            prefix: config.key_prefix.clone(),
            consume_use: Script::new(CONSUME_USE),
            incr_window: Script::new(INCR_WINDOW),
            history: Script::new(history::REDIS_SCRIPT),
        })
    }

    /// Refuses a server that may evict keys (`maxmemory-policy` other than `noeviction` on
    /// any master), or whose policy cannot be read, unless `allow_eviction` (then warns).
    pub async fn check_eviction_policy(&self, allow_eviction: bool) -> Result<(), StoreError> {
        let problem = match self.eviction_policies().await {
            Ok(policies) => {
                let mut bad: Vec<String> =
                    policies.into_iter().filter(|p| p != "noeviction").collect();
                bad.sort();
                bad.dedup();
                if bad.is_empty() {
                    return Ok(());
                }
                StoreError::EvictionPolicy {
                    policy: bad.join("`, `"),
                }
            }
            Err(reason) => StoreError::EvictionUnknown { reason },
        };
        if allow_eviction {
            tracing::warn!(%problem, "starting anyway (state.redis.allow_eviction: true)");
            return Ok(());
        }
        Err(problem)
    }

    async fn eviction_policies(&self) -> Result<Vec<String>, String> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        let value: Value = match &self.conn {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                c.clone().route_command(cmd, all).await
            }
        }
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        collect_policies(&value, &mut out)?;
        if out.is_empty() {
            return Err("the server did not report it".into());
        }
        Ok(out)
    }

    async fn run<T: FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match &self.conn {
            Conn::Single(c) => invocation.invoke_async(&mut c.clone()).await,
            Conn::Cluster(c) => invocation.invoke_async(&mut c.clone()).await,
        }
        .map_err(op_error)
    }

    async fn query<T: FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        match &self.conn {
            Conn::Single(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
        .map_err(op_error)
    }
}

impl StateStore for RedisStore {
    fn consume_use<'a>(
        &'a self,
        key: &'a Key,
        max_uses: u32,
        keep_until_epoch_ms: i64,
    ) -> BoxFuture<'a, Result<UseOutcome, StoreError>> {
        Box::pin(async move {
            let mut inv = self.consume_use.key(key.render(&self.prefix));
            inv.arg(max_uses).arg(keep_until_epoch_ms);
            let counted: i64 = self.run(inv).await?;
            Ok(if counted == 1 {
                UseOutcome::Allowed
            } else {
                UseOutcome::UsedUp
            })
        })
    }

    fn incr_window<'a>(
        &'a self,
        key: &'a Key,
        window_ms: u64,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let mut inv = self.incr_window.key(key.render(&self.prefix));
            inv.arg(window_ms.max(1));
            self.run(inv).await
        })
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(key.render(&self.prefix));
            self.query(cmd).await
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a Key,
        value: &'a [u8],
        ttl_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut cmd = if ttl_ms == 0 {
                redis::cmd("DEL")
            } else {
                redis::cmd("SET")
            };
            cmd.arg(key.render(&self.prefix));
            if ttl_ms > 0 {
                cmd.arg(value).arg("PX").arg(ttl_ms);
            }
            self.query::<Value>(cmd).await.map(|_| ())
        })
    }

    fn history<'a>(
        &'a self,
        principal: &'a str,
        window: HistoryWindow,
        update: HistoryUpdate<'a>,
    ) -> BoxFuture<'a, Result<HistoryTotals, StoreError>> {
        Box::pin(async move {
            let now = window.bucket_of(update.at_ms);
            let first = Key::principal(principal, &history::bucket_field(now));
            let mut inv = self.history.key(first.render(&self.prefix));
            for back in 1..i64::from(window.buckets.max(1)) {
                let bucket = first.with_field(&history::bucket_field(now.saturating_sub(back)));
                inv.key(bucket.render(&self.prefix));
            }
            inv.arg(
                update
                    .currency
                    .map(history::amount_field)
                    .unwrap_or_default(),
            )
            .arg(update.amount)
            .arg(update.denies.max(0))
            .arg(update.challenges.max(0))
            .arg(window.ttl_ms());
            let values: Vec<String> = self.run(inv).await?;
            history::sum_redis_answer(&values)
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The `maxmemory-policy` values in a `CONFIG GET` answer: `[name, value]` (RESP2), a map
/// (RESP3), or, from a Cluster, a map of node → one of those (or the node's error).
fn collect_policies(value: &Value, out: &mut Vec<String>) -> Result<(), String> {
    let text = |v: &Value| match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    match value {
        Value::Array(items)
            if items.len() == 2 && text(&items[0]).as_deref() == Some("maxmemory-policy") =>
        {
            out.extend(text(&items[1]));
            Ok(())
        }
        Value::Array(items) if items.is_empty() => Err("the server did not report it".into()),
        Value::Array(items) => items.iter().try_for_each(|v| collect_policies(v, out)),
        Value::Map(pairs) => pairs.iter().try_for_each(|(k, v)| {
            if text(k).as_deref() == Some("maxmemory-policy") {
                out.extend(text(v));
                Ok(())
            } else {
                collect_policies(v, out)
            }
        }),
        Value::ServerError(e) => Err(format!("{e:?}")),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

fn tls_certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>, StoreError> {
    if config.ca_file.is_none() && config.cert_file.is_none() {
        return Ok(None);
    }
    let root_cert = config.ca_file.as_deref().map(read_bytes).transpose()?;
    let client_tls = match (&config.cert_file, &config.key_file) {
        (Some(c), Some(k)) => Some(ClientTlsConfig {
            client_cert: read_bytes(c)?,
            client_key: read_bytes(k)?,
        }),
        _ => None,
    };
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, StoreError> {
    std::fs::read_to_string(path).map_err(|source| StoreError::ReadFile {
        path: path.to_owned(),
        source,
    })
}

/// Whether the error means the store is not serving (vs. an unexpected answer).
fn is_unavailable(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            ) | ErrorKind::ClusterConnectionNotFound
        )
}

fn op_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if is_unavailable(&e) {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Protocol(e.to_string())
    }
}

/// At connection time every failure means no store (wrong password included).
fn connect_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::Unavailable(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn policies_are_read_from_every_answer_shape() {
        let resp2 = Value::Array(vec![bulk("maxmemory-policy"), bulk("noeviction")]);
        let resp3 = Value::Map(vec![(bulk("maxmemory-policy"), bulk("allkeys-lru"))]);
        let cluster = Value::Map(vec![
            (bulk("127.0.0.1:1"), resp2.clone()),
            (bulk("127.0.0.1:2"), resp3.clone()),
        ]);
        let mut out = Vec::new();
        assert_eq!(collect_policies(&cluster, &mut out), Ok(()));
        assert_eq!(out, ["noeviction", "allkeys-lru"]);
        let mut out = Vec::new();
        assert!(collect_policies(&Value::Array(vec![]), &mut out).is_err());
        assert!(collect_policies(&Value::Nil, &mut out).is_err());
    }
}
